"""What serves an exported model: onnxruntime or OpenVINO, behind one call from a padded batch to logits.

`runtime.backend` names the runtime, or `auto`: the one the export stage measured faster on this CPU, recorded
in `model.json` (`serving`) so that `parity` gates exactly what `infer` serves. OpenVINO serves an fp32 export at
bf16 where its CPU plugin reports BF16 (`runtime.openvino_precision: auto`); the served precision (fp32, int8,
fp16, bf16) picks the gate's tolerance.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stages.core.cpu import describe_cpu, kernel_class
from stages.core.errors import UserError
from stages.core.params import RuntimeParams
from stages.graph.compiled_cache import compile_cache
from stages.graph.session import CUDA, create_session, onnx_logits, provider_of

log = logging.getLogger(__name__)

Arrays = Mapping[str, np.ndarray]
OPENVINO_INSTALL = "pip install -e '.[openvino]'"


@dataclass(frozen=True)
class Serving:
    """Which runtime serves an exported model, and at which precision."""

    backend: str  # onnxruntime or openvino
    precision: str  # what the served model computes in: the export's precision, or bf16 (OpenVINO on an fp32 export)

    @property
    def openvino_hint(self) -> str:
        """OpenVINO's inference precision hint: bf16, or f32 (an int8 export keeps its own int8 ops)."""
        return "bf16" if self.precision == "bf16" else "f32"


@dataclass(frozen=True)
class Runner:
    """An exported model loaded by the runtime that serves it."""

    logits: Callable[[Arrays], np.ndarray]  # one padded batch -> float32 logits [batch, sequence, labels]
    provider: str  # what runs it, for reports: an onnxruntime provider, or "OpenVINO <version> CPU bf16"
    precision: str  # the served precision, which the parity gate's tolerance follows
    identity: dict[str, str]  # what decides its numbers, as it runs (`onnxruntime_identity`, `openvino_identity`)


def onnxruntime_identity(provider: str, precision: str, runtime: RuntimeParams) -> dict[str, str]:
    """What decides the numbers of a model onnxruntime serves: its version, the provider that started, the served
    precision, graph optimisations, and TF32 on CUDA or the CPU's kernel class on the CPU."""
    import onnxruntime as ort

    identity = {
        "runtime": f"onnxruntime {ort.__version__}",
        "provider": provider,
        "precision": precision,
        "graph_optimization_level": runtime.graph_optimization_level,
    }
    if provider == CUDA:
        return {**identity, "tf32": "on" if runtime.tf32 else "off"}
    return {**identity, "cpu_kernels": kernel_class(precision)}


def openvino_identity(version: str, precision: str, inference_precision: str) -> dict[str, str]:
    """What decides the numbers of a model OpenVINO's CPU plugin serves: its version, the served precision, the
    precision it compiled for, and the CPU's kernel class."""
    return {
        "runtime": f"openvino {version}",
        "provider": "CPU",
        "precision": precision,
        "inference_precision": inference_precision,
        "cpu_kernels": kernel_class(precision),
    }


def openvino_precisions() -> tuple[str, ...]:
    """The precisions OpenVINO's CPU plugin reports here (`FP32`, `BF16`, ...), or () without openvino."""
    try:
        import openvino as ov
    except ImportError:
        return ()
    return tuple(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def openvino_serving(export_precision: str, runtime: RuntimeParams) -> Serving:
    """OpenVINO's serving of an export: bf16 on an fp32 export where asked (or `auto` and the plugin reports BF16)."""
    wanted = runtime.openvino_precision
    bf16 = wanted == "bf16" or (wanted == "auto" and "BF16" in openvino_precisions())
    return Serving("openvino", "bf16" if bf16 and export_precision == "fp32" else export_precision)


def resolve_serving(metadata: Mapping[str, Any], runtime: RuntimeParams) -> Serving:
    """How `runtime` serves the export described by `metadata` (`auto`: as the export stage measured and chose)."""
    precision = metadata["precision"]
    if runtime.backend == "onnxruntime":
        return Serving("onnxruntime", precision)
    if runtime.backend == "openvino":
        return openvino_serving(precision, runtime)
    chosen = metadata.get("serving")
    if not chosen:
        raise UserError(
            "runtime.backend = auto but model.json holds no serving choice (an export made with another backend); "
            "run the export stage again, e.g. `dvc repro export`"
        )
    if chosen["cpu"] != describe_cpu():
        log.warning(
            "runtime.backend = auto: %s was measured faster on %s; this CPU is %s (run the export stage here to measure "
            "again)",
            chosen["backend"],
            chosen["cpu"],
            describe_cpu(),
        )
    return Serving(chosen["backend"], chosen["precision"])


def load_runner(path: Path, serving: Serving, runtime: RuntimeParams, *, cached: bool = False) -> Runner:
    """The model file at `path` served as `serving` says; `cached`: OpenVINO keeps what it compiles in
    `runtime.openvino_cache` (for an export's own directory, not a staging one)."""
    if serving.backend == "openvino":
        cache = Path(runtime.openvino_cache) if cached and runtime.openvino_cache else None
        return openvino_runner(path, runtime.intra_op_num_threads, serving.openvino_hint, serving.precision, cache)
    session = create_session(path, runtime)
    provider = provider_of(session)
    identity = onnxruntime_identity(provider, serving.precision, runtime)
    return Runner(lambda arrays: onnx_logits(session, arrays), provider, serving.precision, identity)


def openvino_runner(
    path: Path, threads: int, hint: str = "f32", precision: str | None = None, cache: Path | None = None
) -> Runner:
    """The model compiled by OpenVINO's CPU plugin at `hint` (`threads` 0: its default, every core), or loaded from
    `cache` where an earlier process compiled it; `precision` is the served precision reported (default: `hint`'s)."""
    try:
        import openvino as ov
    except ImportError:
        raise UserError(
            f"runtime.backend = openvino but openvino is not installed: {OPENVINO_INSTALL} "
            "(or set runtime.backend: onnxruntime)"
        ) from None
    config = {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    try:
        compiled = compile_openvino(ov.Core(), path, config, cache, ov.__version__)
    except RuntimeError as error:
        reason = (str(error).strip().splitlines() or ["it cannot be compiled"])[0][:300]
        raise UserError(f"OpenVINO cannot load {path}: {reason}; set runtime.backend: onnxruntime") from None
    request = compiled.create_infer_request()
    dtypes = input_types(compiled)
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

    actual = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()  # f32, bf16: what it compiled for
    served = precision or ("fp32" if hint == "f32" else hint)
    version = ov.__version__.split("-")[0]
    return Runner(logits, f"OpenVINO {version} CPU {actual}", served, openvino_identity(version, served, actual))


def input_types(compiled: Any) -> dict[str, np.dtype]:
    """An OpenVINO model's graph inputs and their types (a Parameter keeps its ONNX name; a port's other names may be
    its first consumer's output)."""
    return {port.get_node().get_friendly_name(): port.get_element_type().to_dtype() for port in compiled.inputs}


def compile_openvino(core: Any, path: Path, config: dict[str, Any], cache: Path | None, version: str) -> Any:
    """`core.compile_model` on the CPU, through the export's directory in `cache` when there is one."""
    if cache is None:
        return core.compile_model(str(path), "CPU", config)
    with compile_cache(path, cache, version) as directory:
        return core.compile_model(str(path), "CPU", {**config, "CACHE_DIR": str(directory)})
