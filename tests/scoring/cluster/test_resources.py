"""Ray actors' onnxruntime settings follow what each actor holds, and a pool the cluster cannot hold is refused;
tested without Ray."""

from __future__ import annotations

import dataclasses

import pytest

from stages.core.errors import UserError
from stages.core.params import load_params
from stages.scoring.cluster.resources import actor_runtime, check_room
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


def infer_with(**chosen):
    return dataclasses.replace(load_params(REPO / "params.yaml").infer, **chosen)


@pytest.mark.parametrize(
    ("chosen", "nodes", "error"),
    [
        (  # every CPU taken by the scoring actors: none left for the tokenising actor
            {"ray_actors": 2, "ray_cpus_per_actor": 1, "ray_tokenizers": 1, "ray_cpus_per_tokenizer": 1},
            [{"CPU": 1}, {"CPU": 1}],
            r"the Ray cluster has 2 CPUs but infer\.ray_actors x ray_cpus_per_actor \(2 x 1\) \+ "
            r"infer\.ray_tokenizers x ray_cpus_per_tokenizer \(1 x 1\) ask for 3; lower them or add nodes",
        ),
        (  # enough CPUs in all, but no node holds one actor's
            {"ray_actors": 1, "ray_cpus_per_actor": 3, "ray_cpus_per_tokenizer": 0.5},
            [{"CPU": 2}, {"CPU": 2}],
            r"infer\.ray_actors x ray_cpus_per_actor: each actor asks for 3 CPUs but the largest Ray node has 2",
        ),
        (  # GPU actors on a cluster without GPUs
            {"ray_actors": 1, "ray_gpus_per_actor": 0.5},
            [{"CPU": 8}],
            r"the Ray cluster has 0 GPUs but infer\.ray_actors x ray_gpus_per_actor \(1 x 0\.5\) ask for 0\.5",
        ),
    ],
)
def test_a_pool_the_cluster_cannot_hold_is_refused_naming_the_params(chosen, nodes, error):
    with pytest.raises(UserError, match=error):
        check_room(infer_with(**chosen), nodes)


@pytest.mark.parametrize(
    ("chosen", "nodes"),
    [
        ({"ray_actors": 2, "ray_cpus_per_actor": 1, "ray_tokenizers": 1, "ray_cpus_per_tokenizer": 1}, [{"CPU": 3}]),
        (
            {"ray_actors": 2, "ray_cpus_per_actor": 0.5, "ray_tokenizers": 2, "ray_cpus_per_tokenizer": 0.5},
            [{"CPU": 2}],
        ),
        ({"ray_actors": 2, "ray_gpus_per_actor": 1, "ray_cpus_per_tokenizer": 0}, [{"CPU": 1, "GPU": 1}] * 2),
    ],
)
def test_a_pool_the_cluster_holds_passes(chosen, nodes):
    check_room(infer_with(**chosen), nodes)
