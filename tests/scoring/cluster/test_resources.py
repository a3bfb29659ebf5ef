"""Ray actors' onnxruntime settings follow what each actor holds; tested without Ray."""

from __future__ import annotations

import dataclasses

import pytest

from stages.core.errors import UserError
from stages.core.params import load_params
from stages.scoring.cluster.resources import actor_runtime
from tests.conftest import REPO

CPU, CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"


def params_with(providers: tuple[str, ...], cpus: float, gpus: float):
    params = load_params(REPO / "params.yaml")
    return dataclasses.replace(
        params,
        runtime=dataclasses.replace(params.runtime, providers=providers),
        infer=dataclasses.replace(params.infer, ray_cpus_per_actor=cpus, ray_gpus_per_actor=gpus),
    )


@pytest.mark.parametrize(
    ("cpus", "gpus", "threads", "providers"),
    [(0.5, 0, 1, (CPU,)), (3.7, 0, 3, (CPU,)), (1, 1, 1, (CUDA, CPU))],
)
def test_actor_sessions_get_one_thread_per_whole_cpu_and_cuda_only_with_a_gpu(cpus, gpus, threads, providers):
    runtime = actor_runtime(params_with((CUDA, CPU), cpus, gpus))
    assert (runtime.intra_op_num_threads, runtime.providers) == (threads, providers)


def test_cuda_only_actors_without_gpus_are_refused():
    with pytest.raises(UserError, match=r"infer\.ray_gpus_per_actor is 0"):
        actor_runtime(params_with((CUDA,), 1, 0))
