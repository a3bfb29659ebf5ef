"""Running a stage or tool: logging set up once, user errors and failed checks turned into exit codes."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from stages.core.errors import CheckFailed, UserError

QUIET_LOGGERS = ("onnx_ir", "onnxscript", "torch.onnx", "httpx")


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage's `main`, mapping user errors to exit 2 and failed checks to exit 1."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for chatty in QUIET_LOGGERS:
        logging.getLogger(chatty).setLevel(logging.WARNING)
    try:
        main()
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except CheckFailed as error:
        print(f"check failed: {error}", file=sys.stderr)
        sys.exit(1)
