"""Kill a scoring run mid-way: `python -m tests.interrupt PARTS COUNT -- COMMAND...`.

Starts COMMAND, waits until COUNT part files exist in the parts directory PARTS (a path or a URL),
then SIGKILLs it. Exits 0 if the kill landed mid-run, 1 if COMMAND finished or failed first.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from stages.scoring.parts import PART_PREFIX
from stages.scoring.storage import locate


def main(parts: str, count: int, command: list[str]) -> int:
    directory = locate(parts)
    process = subprocess.Popen(command)
    deadline = time.monotonic() + 600
    while process.poll() is None and time.monotonic() < deadline:
        if len([part for part in directory.files(PART_PREFIX) if part.suffix == ".parquet"]) >= count:
            process.send_signal(signal.SIGKILL)
            process.wait()
            print(f"killed {command} with {count} parts in {parts}")
            return 0
        time.sleep(0.02)
    print(f"{command} ended (exit {process.poll()}) before {count} parts existed in {parts}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    separator = sys.argv.index("--")
    sys.exit(main(sys.argv[1], int(sys.argv[2]), sys.argv[separator + 1 :]))
