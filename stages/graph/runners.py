"""What serves an exported model: onnxruntime or OpenVINO, behind one call from a padded batch to logits."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from stages.core.errors import UserError
from stages.core.params import RuntimeParams
from stages.graph.session import create_session, onnx_logits, provider_of

Arrays = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class Runner:
    """An exported model loaded by the runtime that serves it."""

    logits: Callable[[Arrays], np.ndarray]  # one padded batch -> float32 logits [batch, sequence, labels]
    provider: str  # what runs it, for reports: an onnxruntime provider, or "OpenVINO <version> CPU f32"


def load_runner(path: Path, runtime: RuntimeParams, *, tf32: bool = True) -> Runner:
    """The model file at `path` on `runtime.backend` (`tf32=False` for an fp32 check on CUDA)."""
    if runtime.backend == "openvino":
        return openvino_runner(path, runtime.intra_op_num_threads)
    session = create_session(path, runtime, tf32=tf32)
    return Runner(lambda arrays: onnx_logits(session, arrays), provider_of(session))


def openvino_runner(path: Path, threads: int, precision: str = "f32") -> Runner:
    """The model compiled by OpenVINO's CPU plugin at `precision` (`threads` 0: its default, every core)."""
    try:
        import openvino as ov
    except ImportError:
        raise UserError(
            "runtime.backend = openvino but openvino is not installed: pip install -e '.[openvino]' "
            "(or set runtime.backend: onnxruntime)"
        ) from None
    config = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    try:
        compiled = ov.Core().compile_model(str(path), "CPU", config)
    except RuntimeError as error:
        reason = (str(error).strip().splitlines() or ["it cannot be compiled"])[0][:300]
        raise UserError(f"OpenVINO cannot load {path}: {reason}; set runtime.backend: onnxruntime") from None
    request = compiled.create_infer_request()
    graph_inputs = onnx.load(path, load_external_data=False).graph.input
    dtypes = {value.name: helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type) for value in graph_inputs}
    output = compiled.output(0)

    def logits(arrays: Arrays) -> np.ndarray:
        missing = [name for name in dtypes if name not in arrays]
        if missing:
            raise UserError(
                f"the ONNX model needs inputs {missing} but only {sorted(arrays)} can be built; "
                "export the model with this project's export stage"
            )
        outputs = request.infer([np.ascontiguousarray(arrays[name], dtype=dtype) for name, dtype in dtypes.items()])
        return np.array(outputs[output], dtype=np.float32)  # a copy: the request reuses its buffers

    return Runner(logits, f"OpenVINO {ov.__version__.split('-')[0]} CPU {precision}")
