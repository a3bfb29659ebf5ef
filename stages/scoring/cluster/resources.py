"""What each Ray actor holds (CPUs, GPUs) and the onnxruntime settings that follow from it.

Kept apart from the Ray engine's modules, which import Ray, so that these rules are tested without it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

from stages.core.errors import UserError
from stages.core.params import InferParams, Params, RuntimeParams
from stages.graph.session import CUDA

SLACK = 1e-9  # Ray adds fractional resources in steps of 1e-4: below that is rounding


def actor_runtime(params: Params) -> RuntimeParams:
    """Each actor's onnxruntime settings: one intra-op thread per whole CPU it holds, CUDA only if it holds a GPU."""
    providers = params.runtime.providers
    if params.infer.ray_gpus_per_actor == 0:
        providers = tuple(provider for provider in providers if provider != CUDA)
        if not providers:
            raise UserError(
                "runtime.providers lists only CUDAExecutionProvider but infer.ray_gpus_per_actor is 0; "
                "give the actors GPUs or add CPUExecutionProvider"
            )
    threads = max(1, math.floor(params.infer.ray_cpus_per_actor))
    return dataclasses.replace(params.runtime, providers=providers, intra_op_num_threads=threads)


def check_room(infer: InferParams, nodes: list[Mapping[str, float]]) -> None:
    """The cluster's nodes (each alive node's resources) hold the scoring actors the pool starts with and the
    tokenising actors, each actor on one node: Ray Data would otherwise wait for them for ever."""
    asks = [  # (resource, actors, each actor's share, the params that say so)
        ("CPU", infer.ray_actors, infer.ray_cpus_per_actor, "infer.ray_actors x ray_cpus_per_actor"),
        ("CPU", infer.ray_tokenizers, infer.ray_cpus_per_tokenizer, "infer.ray_tokenizers x ray_cpus_per_tokenizer"),
        ("GPU", infer.ray_actors, infer.ray_gpus_per_actor, "infer.ray_actors x ray_gpus_per_actor"),
    ]
    for resource in ("CPU", "GPU"):
        mine = [(count, each, names) for kind, count, each, names in asks if kind == resource and each > 0]
        have = [node.get(resource, 0.0) for node in nodes] or [0.0]
        needed = sum(count * each for count, each, _ in mine)
        if needed > sum(have) + SLACK:
            said = " + ".join(f"{names} ({count} x {each:g})" for count, each, names in mine)
            raise UserError(
                f"the Ray cluster has {sum(have):g} {resource}s but {said} ask for {needed:g}; lower them or add "
                "nodes (Ray Data would wait for the actors for ever)"
            )
        for _, each, names in mine:
            if each > max(have) + SLACK:
                raise UserError(
                    f"{names}: each actor asks for {each:g} {resource}s but the largest Ray node has {max(have):g}; "
                    "lower it or add a larger node (Ray Data would wait for the actor for ever)"
                )
