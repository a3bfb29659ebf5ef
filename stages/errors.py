"""The project's exception family and the wrapper that turns them into exit codes."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable


class UserError(Exception):
    """A problem the user can fix (bad params, missing file, key mismatch): exit 2, no traceback."""


class CheckFailed(Exception):
    """A verification that ran and did not pass (e.g. parity out of tolerance): exit 1."""


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage's `main`, mapping user errors to exit 2 and failed checks to exit 1."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for chatty in ("onnx_ir", "onnxscript", "torch.onnx", "httpx"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    try:
        main()
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except CheckFailed as error:
        print(f"check failed: {error}", file=sys.stderr)
        sys.exit(1)
