"""The project's exception family: what a stage's exit code says."""

from __future__ import annotations

from pathlib import Path

PROJECT_CODE = Path(__file__).resolve().parents[1]  # stages/


class UserError(Exception):
    """A problem the user can fix (bad params, missing file, key mismatch): exit 2, no traceback."""


class CheckFailed(Exception):
    """A verification that ran and did not pass (e.g. parity out of tolerance): exit 1."""


def raised_in_project(error: BaseException) -> bool:
    """Whether the innermost cause of `error` was raised in this project's own code (`stages/`): a bug to show with
    its traceback, not a library refusing an input or an unsupported combination."""
    seen = {id(error)}
    while (cause := error.__cause__ or error.__context__) is not None and id(cause) not in seen:
        seen.add(id(cause))
        error = cause
    frame, traceback = None, error.__traceback__
    while traceback is not None:
        frame, traceback = traceback.tb_frame, traceback.tb_next
    return frame is not None and Path(frame.f_code.co_filename).resolve().is_relative_to(PROJECT_CODE)
