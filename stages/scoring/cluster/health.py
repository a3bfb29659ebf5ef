"""What the Ray engine survived: nodes lost mid-run, actors Ray restarted, blocks scored more than once.

Ray keeps a run going when a node dies: Ray Data's actor pool recreates a lost actor wherever a node
has room (its default `max_restarts=-1`) and resubmits the blocks that were in flight on it (its default
`max_task_retries=-1`).
The run then goes on with fewer actors until the lost one is placed again, which on a cluster without
spare room is never. This module makes that visible: a warning as soon as the driver sees a node go,
and the counts for `metrics/infer.json`.
"""

from __future__ import annotations

import logging
import time
from collections import Counter

import ray
from ray._private import state as ray_state

from stages.scoring.cluster.actor import SCORED_MARK, BlockScorer
from stages.scoring.metrics import Recovery
from stages.scoring.storage.locations import Location

log = logging.getLogger(__name__)

LOOK_EVERY_S = 5.0  # how often the driver asks the cluster which nodes are alive (at most: once per report)


def alive_nodes() -> set[str]:
    """The ids of the cluster's live nodes, shortened as `rows_per_node` shows them."""
    return {node["NodeID"][:12] for node in ray.nodes() if node["Alive"]}


class NodeWatch:
    """The nodes alive when scoring started; warns as soon as one of them is seen dead."""

    def __init__(self) -> None:
        self.started_with = alive_nodes()
        self.lost: list[str] = []
        self.looked = time.monotonic()

    def look(self, now: bool = False) -> None:
        """Check the nodes (at most every LOOK_EVERY_S unless `now`), warning about each newly lost one."""
        if not now and time.monotonic() - self.looked < LOOK_EVERY_S:
            return
        self.looked = time.monotonic()
        for node in sorted(self.started_with - alive_nodes() - set(self.lost)):
            self.lost.append(node)
            log.warning(
                "Ray lost node %s mid-run; scoring goes on with the actors on the %d node(s) left, so with fewer "
                "actors and more slowly: the blocks that were in flight there are scored again (max_task_retries=-1) "
                "and its actor is recreated when a node has room for it (max_restarts=-1)",
                node,
                len(self.started_with) - len(self.lost),
            )


def actor_restarts() -> int:
    """How many times Ray restarted this job's scoring actors (each lost with its process or node).

    From the GCS actor table through `ray._private.state`, the call behind the public
    `RuntimeContext.was_current_actor_reconstructed`: Ray's public listing (`ray.util.state`) needs the
    dashboard, which clusters may run without.
    """
    job = ray.JobID.from_hex(ray.get_runtime_context().get_job_id())
    actors = ray_state.actors(job_id=job).values()
    return sum(actor["NumRestarts"] for actor in actors if BlockScorer.__name__ in actor["ActorClassName"])


def blocks_scored_more_than_once(parts: Location, run_id: str) -> int:
    """Blocks that run `run_id` scored, and whose part it wrote, more than once (from the actors' marks)."""
    marks = Counter(mark.base_name.split("-")[2] for mark in parts.files(f"{SCORED_MARK}{run_id}-"))
    return sum(count > 1 for count in marks.values())


def recovery_of(watch: NodeWatch, parts: Location, run_id: str, rescored_blocks: int) -> Recovery:
    """What the run recovered from; warns once more, at the end, about what it lost and what was redone."""
    recovery = Recovery(
        rescored_blocks=rescored_blocks,
        lost_nodes=tuple(watch.lost),
        actor_restarts=actor_restarts(),
        blocks_scored_more_than_once=blocks_scored_more_than_once(parts, run_id),
    )
    if recovery.lost_nodes:
        log.warning(
            "the run went on with fewer actors after losing %d node(s): %s",
            len(recovery.lost_nodes),
            ", ".join(recovery.lost_nodes),
        )
    if recovery.actor_restarts or recovery.blocks_scored_more_than_once:
        log.warning(
            "Ray restarted the scoring actors %d time(s) and %d block(s) were scored more than once; each part is "
            "written whole, so no row is lost or duplicated",
            recovery.actor_restarts,
            recovery.blocks_scored_more_than_once,
        )
    return recovery
