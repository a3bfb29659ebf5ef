"""onnxruntime sessions with explicit providers and threads, and feeds built from the graph's inputs."""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidGraph, InvalidProtobuf, NoSuchFile

from stages.core.errors import UserError
from stages.core.params import RuntimeParams

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
OPTIMIZATION_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
ONNX_DTYPES = {"tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(float)": np.float32}


def create_session(
    model: Path | bytes, runtime: RuntimeParams, *, profile_prefix: str | None = None
) -> ort.InferenceSession:
    """A session for a model file (or serialised model) on the first usable provider of `runtime.providers`.

    CUDA failing to load is an error when the user asked for CUDA only, and a loud fallback
    otherwise; a machine without an NVIDIA driver skips CUDA quietly (the provider that ran is recorded).
    `runtime.tf32` turns TensorFloat-32 on CUDA on or off, for `parity` and `infer` alike.
    `profile_prefix` turns on onnxruntime's profiler, writing its trace there (`end_profiling()`).
    """
    options = ort.SessionOptions()
    if profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    options.intra_op_num_threads = runtime.intra_op_num_threads
    options.graph_optimization_level = OPTIMIZATION_LEVELS[runtime.graph_optimization_level]
    options.enable_cpu_mem_arena = runtime.cpu_memory_arena
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if runtime.intra_op_spinning else "0")
    options.add_session_config_entry("session.force_spinning_stop", "1")  # no spinning between runs: the cores are the
    # tokenizer's and the output writer's then
    options.log_severity_level = 3  # onnxruntime's own warnings go through our logging, not stderr noise
    providers: list[str | tuple[str, dict[str, str]]] = []
    for name in runtime.providers:
        if name != CUDA:
            providers.append(name)
        elif has_nvidia_driver():
            ort.preload_dlls()
            providers.append((CUDA, {"use_tf32": "1" if runtime.tf32 else "0"}))
        else:
            log.info("no NVIDIA driver on this machine: %s skipped", CUDA)
    if not providers:
        raise UserError(
            f"runtime.providers = {list(runtime.providers)} but this machine has no NVIDIA driver; "
            "add CPUExecutionProvider to runtime.providers"
        )
    try:
        session = ort.InferenceSession(model if isinstance(model, bytes) else str(model), options, providers=providers)
    except (Fail, InvalidGraph, InvalidProtobuf, NoSuchFile) as error:
        where = "the serialised model" if isinstance(model, bytes) else model
        raise UserError(f"onnxruntime cannot load {where}: {str(error).splitlines()[0]}; export it again") from None
    actual = session.get_providers()
    if actual[0] != runtime.providers[0] and has_nvidia_driver():
        if CPU not in runtime.providers:
            raise UserError(
                f"runtime.providers asks for {list(runtime.providers)} but onnxruntime could only start {actual[0]}; "
                "install onnxruntime-gpu with CUDA 13 / cuDNN 9 libraries, or add CPUExecutionProvider"
            )
        log.warning("%s is not usable here; running on %s", runtime.providers[0], actual[0])
    log.info(
        "onnxruntime %s on %s, %s intra-op threads", ort.__version__, actual[0], runtime.intra_op_num_threads or "all"
    )
    return session


def has_nvidia_driver() -> bool:
    """Whether the CUDA driver library can be loaded (without it the CUDA provider cannot start)."""
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


def build_feed(session: ort.InferenceSession, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The session's inputs by their declared names and dtypes, whatever dtype the arrays have."""
    feed = {}
    for graph_input in session.get_inputs():
        if graph_input.name not in arrays:
            raise UserError(
                f"the ONNX model needs input {graph_input.name!r} but only {sorted(arrays)} can be built; "
                "export the model with this project's export stage"
            )
        feed[graph_input.name] = np.ascontiguousarray(arrays[graph_input.name], dtype=ONNX_DTYPES[graph_input.type])
    return feed


def provider_of(session: ort.InferenceSession) -> str:
    """The provider that actually runs the session's nodes first."""
    return session.get_providers()[0]


def onnx_logits(session: ort.InferenceSession, arrays: Mapping[str, np.ndarray]) -> np.ndarray:
    """Run one padded batch; returns float32 logits [batch, sequence, labels].

    On CUDA the inputs and the output go through IO binding: one copy in, the output allocated on
    the device and copied back once, instead of onnxruntime's per-run staging.
    """
    feed = build_feed(session, arrays)
    if provider_of(session) != CUDA:
        (logits,) = session.run(None, feed)
        return np.asarray(logits, dtype=np.float32)
    binding = session.io_binding()
    for name, array in feed.items():
        binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(array, "cuda", 0))
    for output in session.get_outputs():
        binding.bind_output(output.name, "cuda")
    session.run_with_iobinding(binding)
    return np.asarray(binding.copy_outputs_to_cpu()[0], dtype=np.float32)
