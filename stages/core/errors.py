"""The project's exception family: what a stage's exit code says."""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix (bad params, missing file, key mismatch): exit 2, no traceback."""


class CheckFailed(Exception):
    """A verification that ran and did not pass (e.g. parity out of tolerance): exit 1."""
