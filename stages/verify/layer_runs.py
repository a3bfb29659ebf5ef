"""Running one gate case with every mapped layer output exposed: torch's module outputs by forward hooks, and a copy
of the served graph that also outputs the mapped tensors (the served graph is untouched; the copy lives in a
directory beside it while the case runs), on the runtime that serves it. OpenVINO compiles the copy as it compiles
the served graph; where it cannot, onnxruntime runs the copy at the graph's own precision, and the picture says so."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch

from stages.core.params import RuntimeParams
from stages.graph.metadata import WEIGHTS_DATA
from stages.graph.runners import Serving
from stages.graph.session import build_feed, create_session, provider_of
from stages.model.token_model import CustomModel, torch_inputs

EXPOSED_FILE = "exposed.onnx"
Outputs = Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]  # one padded batch -> tensor name -> values
ModuleOutput = Callable[[str, "np.ndarray | None"], None]  # a torch module's name and its output on the batch


@dataclass(frozen=True)
class ExposedRun:
    """The served graph's copy loaded to give the mapped tensors: what runs it, and how that differs from serving."""

    outputs: Outputs
    runtime: str  # e.g. "onnxruntime CPUExecutionProvider", "OpenVINO 2026.4 CPU bf16"
    note: str  # "" where the copy runs as the served graph does, else how it does not


def exposed_copy(served: Path, tensors: list[str], directory: Path) -> Path:
    """The graph at `served` with `tensors` also as outputs, written into `directory` beside its weights: a hard link
    to them (onnxruntime refuses weights outside the model's directory, symbolic links resolved), a copy where the
    filesystem has no hard links."""
    model = onnx.load(str(served), load_external_data=False)
    known = {value.name for value in model.graph.output}
    model.graph.output.extend(onnx.helper.make_empty_tensor_value_info(name) for name in tensors if name not in known)
    weights = served.parent / WEIGHTS_DATA
    if weights.is_file():
        try:
            os.link(weights, directory / WEIGHTS_DATA)
        except OSError:
            shutil.copyfile(weights, directory / WEIGHTS_DATA)
    onnx.save(model, str(directory / EXPOSED_FILE))
    return directory / EXPOSED_FILE


def onnxruntime_outputs(path: Path, runtime: RuntimeParams, names: list[str]) -> tuple[Outputs, str]:
    """The copy in an onnxruntime session made as the gate's is (`runtime.tf32` alike), and the provider that runs it."""
    session = create_session(path, runtime)

    def outputs(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = session.run(names, build_feed(session, arrays))
        return {name: np.asarray(value, dtype=np.float32) for name, value in zip(names, values, strict=True)}

    return outputs, f"onnxruntime {provider_of(session)}"


def openvino_outputs(path: Path, runtime: RuntimeParams, serving: Serving, names: list[str]) -> tuple[Outputs, str]:
    """The copy compiled by OpenVINO's CPU plugin at the served precision hint, and what runs it."""
    import openvino as ov

    config = {"INFERENCE_PRECISION_HINT": serving.openvino_hint, "PERFORMANCE_HINT": "LATENCY"}
    if runtime.intra_op_num_threads:
        config["INFERENCE_NUM_THREADS"] = runtime.intra_op_num_threads
    compiled = ov.Core().compile_model(str(path), "CPU", config)
    ports = {name: port for port in compiled.outputs for name in port.get_names() if name in names}
    missing = [name for name in names if name not in ports]
    if missing:
        raise RuntimeError(f"OpenVINO exposes no output named {missing[0]}")
    inputs = {port.get_node().get_friendly_name(): port.get_element_type().to_dtype() for port in compiled.inputs}
    request = compiled.create_infer_request()

    def outputs(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = request.infer([np.ascontiguousarray(arrays[name], dtype=dtype) for name, dtype in inputs.items()])
        return {name: np.array(results[ports[name]], dtype=np.float32) for name in names}

    actual = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
    return outputs, f"OpenVINO {ov.__version__.split('-')[0]} CPU {actual}"


def exposed_run(path: Path, runtime: RuntimeParams, serving: Serving, names: list[str]) -> ExposedRun:
    """The copy on the serving runtime; onnxruntime where OpenVINO cannot give the layer outputs."""
    if serving.backend != "openvino":
        return ExposedRun(*onnxruntime_outputs(path, runtime, names), "")
    try:
        return ExposedRun(*openvino_outputs(path, runtime, serving, names), "")
    except (ImportError, RuntimeError) as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
    outputs, runner = onnxruntime_outputs(path, runtime.on_cpu(runtime.intra_op_num_threads), names)
    return ExposedRun(
        outputs,
        runner,
        f"OpenVINO serves this model at {serving.precision}, but its layer outputs were not reachable ({reason}): the "
        f"layers were run by onnxruntime on the same graph, at the graph's own precision",
    )


def first_tensor(output: object) -> torch.Tensor | None:
    """A module's output tensor: the output itself, or the first tensor of the tuple it returns."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, tuple | list):
        return next((item for item in output if isinstance(item, torch.Tensor)), None)
    return getattr(output, "last_hidden_state", None)


@contextmanager
def module_outputs(model: CustomModel, modules: list[str], take: ModuleOutput) -> Iterator[None]:
    """Within the block, each forward pass of `model` hands each of `modules`' outputs to `take` as it is computed
    (a float32 array, or None for an output holding no tensor), so no batch keeps every layer's output at once."""
    named = dict(model.named_modules())

    def hook(name: str) -> Callable[..., None]:
        def handle(_module: torch.nn.Module, _inputs: object, output: object) -> None:
            tensor = first_tensor(output)
            take(name, None if tensor is None else tensor.float().numpy())

        return handle

    handles = [named[name].register_forward_hook(hook(name)) for name in modules]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def torch_layer_outputs(
    model: CustomModel, modules: list[str], arrays: Mapping[str, np.ndarray], take: ModuleOutput
) -> None:
    """Run one padded batch in torch eager, handing `modules`' outputs to `take` (a module that does not run, none)."""
    with module_outputs(model, modules, take), torch.inference_mode():
        model(**torch_inputs(model, dict(arrays)))
