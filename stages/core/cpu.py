"""What the CPU at hand can do, read from /proc/cpuinfo: the instruction sets that decide int8 and bf16 speed."""

from __future__ import annotations

import functools
import platform
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})  # int8 dot products without u8s8 saturation
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})  # native bf16 (x86), bf16 (aarch64 Features)
SHOWN_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16")


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The first CPU's flags (x86 `flags`, aarch64 `Features`); empty where /proc/cpuinfo is not readable."""
    try:
        lines = CPUINFO.read_text(encoding="utf-8").splitlines()
    except OSError:
        return frozenset()
    for line in lines:
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def cpu_model() -> str:
    """The CPU's model name with its family and model numbers (e.g. `AMD EPYC, family 23 model 1`: Zen 1),
    which tell CPU generations apart where a VM hides the name; the machine type where nothing is reported."""
    fields: dict[str, str] = {}
    try:
        for line in CPUINFO.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                break  # the first processor's block ends
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
    except OSError:
        pass
    name = fields.get("model name") or platform.processor() or platform.machine()
    if "cpu family" in fields and "model" in fields:
        return f"{name}, family {fields['cpu family']} model {fields['model']}"
    return name


def is_x86() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")


def has_vnni() -> bool:
    """Whether onnxruntime's u8s8 int8 kernels run without saturating here: VNNI on x86, always elsewhere."""
    return not is_x86() or bool(cpu_flags() & VNNI_FLAGS)


def has_native_bf16() -> bool:
    """Whether bf16 matmuls run in hardware here (else torch emulates them, several times slower than fp32)."""
    return bool(cpu_flags() & BF16_FLAGS)


def describe_cpu() -> str:
    """Model name, family/model and the instruction sets that matter here, e.g.
    `AMD EPYC 7B13, family 25 model 1 (avx2 fma)`."""
    present = [flag for flag in SHOWN_FLAGS if flag in cpu_flags()]
    return f"{cpu_model()} ({' '.join(present) or 'no x86 SIMD flags read'})"


def kernel_class(precision: str) -> str:
    """Which of this CPU's kernels serve `precision`, where kernels of different ISAs give different numbers: int8
    dot products exact (VNNI, AMX, ARM) or through u8s8 pairs that saturate (x86 without VNNI); bf16 on AMX tiles or
    AVX-512 BF16; `any` for fp32 and fp16, which round alike on every CPU to within fp32's tolerance."""
    if precision == "int8":
        return "int8 exact (vnni)" if has_vnni() else "int8 u8s8 (no vnni: saturates)"
    if precision == "bf16":
        return "bf16 amx" if "amx_bf16" in cpu_flags() else "bf16 avx512" if has_native_bf16() else "bf16 emulated"
    return "any"
