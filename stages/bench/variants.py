"""The serving variants: each a function from a padded batch to float32 logits, or the reason it cannot run here."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from stages.bench.subject import converted_copy
from stages.core.cpu import describe_cpu, has_native_bf16
from stages.core.errors import UserError
from stages.core.params import RuntimeParams
from stages.graph.precision import resolve_int8_target
from stages.graph.session import CUDA, create_session, onnx_logits, provider_of
from stages.model.custom_head import TokenModel
from stages.model.token_model import torch_inputs, torch_logits


@dataclass(frozen=True)
class Variant:
    """One way of serving the model: a function from a padded batch to float32 logits."""

    name: str
    precision: str
    provider: str
    run: Callable[[dict[str, np.ndarray]], np.ndarray]
    peak: str | None  # key into the matmul peaks used as this variant's denominator
    note: str = ""


@dataclass(frozen=True)
class Skipped:
    """A variant that cannot run here, and why."""

    variant: str
    reason: str


def torch_bf16_logits(model: TokenModel, arrays: dict[str, np.ndarray]) -> np.ndarray:
    """One batch under CPU bf16 autocast."""
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        return model(**torch_inputs(model, arrays)).float().numpy()


def torch_cuda_runner(model: TokenModel) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
    """One batch on the GPU; inputs copied in and logits copied back (part of the timing)."""

    def run(arrays: dict[str, np.ndarray]) -> np.ndarray:
        inputs = {name: tensor.cuda() for name, tensor in torch_inputs(model, arrays).items()}
        with torch.inference_mode():
            return model(**inputs).float().cpu().numpy()

    return run


def ort_runner(session: ort.InferenceSession) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
    """One batch through an onnxruntime session (IO binding on CUDA)."""
    return lambda arrays: onnx_logits(session, arrays)


def cuda_unavailable_reason() -> str | None:
    """Why the CUDA variants cannot run here, or None when they can."""
    if not torch.cuda.is_available():
        return "no CUDA device (torch.cuda.is_available() is False)"
    return None


def ort_cuda_unavailable_reason() -> str | None:
    """Why onnxruntime cannot serve on CUDA here, or None when its CUDA provider is built in."""
    if CUDA not in ort.get_available_providers():
        return f"onnxruntime {ort.__version__} has no {CUDA} (install onnxruntime-gpu)"
    return None


def cpu_variants(
    model: TokenModel, fp32_path: Path, int8_paths: dict[str, Path], runtime: RuntimeParams
) -> tuple[list[Variant], list[Skipped]]:
    """torch fp32 (and bf16 autocast where the CPU has native bf16), onnxruntime fp32, and onnxruntime int8
    for each int8 target in `int8_paths`, all on the CPU with `runtime`'s threads."""
    variants = [Variant("torch-fp32", "fp32", "torch cpu", lambda arrays: torch_logits(model, arrays), "torch_fp32")]
    skipped = []
    if has_native_bf16():
        bf16 = Variant(
            "torch-bf16", "bf16 autocast", "torch cpu", lambda arrays: torch_bf16_logits(model, arrays), "torch_bf16"
        )
        variants.append(bf16)
    else:
        skipped.append(Skipped("torch-bf16", f"no native bf16 on this CPU ({describe_cpu()}): torch would emulate it"))
    fp32_session = create_session(fp32_path, runtime)
    variants.append(
        Variant("ort-fp32", "fp32", provider_of(fp32_session), ort_runner(fp32_session), "onnxruntime_fp32")
    )
    chosen = resolve_int8_target("auto")
    for target, path in int8_paths.items():
        session = create_session(path, runtime)
        weights = "7-bit weights (reduce_range)" if target == "no_vnni" else "8-bit weights"
        note = "what export.int8_target: auto makes here" if target == chosen else "made for other CPUs"
        name = "ort-int8" if target == chosen else f"ort-int8-{target.replace('_', '-')}"
        variants.append(
            Variant(
                name, f"int8 dynamic, {weights}", provider_of(session), ort_runner(session), "onnxruntime_int8", note
            )
        )
    return variants, skipped


def cuda_variants(
    model: TokenModel, fp32_path: Path, workdir: Path, runtime: RuntimeParams
) -> tuple[list[Variant], list[Skipped]]:
    """The GPU variants, or why each one is skipped."""
    names = ("torch-fp16-cuda", "ort-fp16-cuda", "ort-fp32-cuda")
    reason = cuda_unavailable_reason()
    if reason is not None:
        return [], [Skipped(name, reason) for name in names]
    half = copy.deepcopy(model).half().cuda().eval()
    variants = [
        Variant(names[0], "fp16", f"torch cuda ({torch.cuda.get_device_name()})", torch_cuda_runner(half), None)
    ]
    reason = ort_cuda_unavailable_reason()
    if reason is not None:
        return variants, [Skipped(name, reason) for name in names[1:]]
    skipped = []
    fp16_path = converted_copy(fp32_path, workdir / "fp16", "fp16")
    runtime = dataclasses.replace(runtime, providers=(CUDA,))
    for name, path, precision in ((names[1], fp16_path, "fp16"), (names[2], fp32_path, "fp32")):
        try:
            session = create_session(path, runtime)
        except UserError as error:
            skipped.append(Skipped(name, str(error)))
            continue
        note = "io binding; TF32 on (the CUDA provider's default)" if precision == "fp32" else "io binding"
        variants.append(Variant(name, precision, provider_of(session), ort_runner(session), None, note))
    return variants, skipped
