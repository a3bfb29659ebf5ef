"""What each Ray actor holds (CPUs, GPUs) and the onnxruntime settings that follow from it.

Kept apart from the Ray engine's modules, which import Ray, so that these rules are tested without it.
"""

from __future__ import annotations

import dataclasses
import math

from stages.core.errors import UserError
from stages.core.params import Params, RuntimeParams
from stages.graph.session import CUDA


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
