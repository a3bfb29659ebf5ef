"""Kill a scoring run, or a Ray node or actor under it, mid-way.

`python -m tests.interrupt PARTS COUNT [--lose-node | --kill-actor] -- COMMAND...` starts COMMAND, waits
until COUNT part files exist in the parts directory PARTS (a path or a URL), then SIGKILLs it; exits 0
if the kill landed mid-run, 1 if COMMAND finished or failed first.

With `--lose-node`, it SIGKILLs a Ray node instead: the newest raylet on this machine (in a test's
private PID namespace, the node that joined the head last) and every process under it (its workers,
the actors among them, and its agents), as if that machine had gone. With `--kill-actor`, it SIGKILLs
one scoring actor's process. Either way it then waits for COMMAND and exits with COMMAND's exit code
(1 if nothing was killed).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import psutil

from stages.scoring.storage.locations import locate
from stages.scoring.storage.parts import PART_PREFIX, PART_SUFFIX


def lose_newest_node() -> list[int]:
    """SIGKILL the newest raylet and its process tree at once; their pids."""
    raylets = [process for process in psutil.process_iter(["name", "create_time"]) if process.info["name"] == "raylet"]
    raylet = max(raylets, key=lambda process: process.info["create_time"])
    victims = [raylet, *raylet.children(recursive=True)]
    for victim in victims:
        victim.send_signal(signal.SIGKILL)
    return [victim.pid for victim in victims]


def kill_an_actor() -> list[int]:
    """SIGKILL the oldest scoring actor process (Ray titles it after the actor's class); its pid."""
    actors = [
        process
        for process in psutil.process_iter(["cmdline"])
        if "BlockScorer" in " ".join(process.info["cmdline"] or [])
    ]
    actor = min(actors, key=lambda process: process.pid)
    actor.send_signal(signal.SIGKILL)
    return [actor.pid]


def main(parts: str, count: int, command: list[str], victims: str = "") -> int:
    directory = locate(parts)
    process = subprocess.Popen(command)
    deadline = time.monotonic() + 600
    while process.poll() is None and time.monotonic() < deadline:
        if len([part for part in directory.files(PART_PREFIX) if part.suffix == PART_SUFFIX]) >= count:
            if victims:
                killed = lose_newest_node() if victims == "--lose-node" else kill_an_actor()
                print(f"{victims}: SIGKILL to pids {killed} with {count} parts in {parts}")
                return process.wait()
            process.send_signal(signal.SIGKILL)
            process.wait()
            print(f"killed {command} with {count} parts in {parts}")
            return 0
        time.sleep(0.02)
    print(f"{command} ended (exit {process.poll()}) before {count} parts existed in {parts}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    separator = sys.argv.index("--")
    options = sys.argv[1:separator]
    sys.exit(main(options[0], int(options[1]), sys.argv[separator + 1 :], victims="".join(options[2:])))
