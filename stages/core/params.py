"""`params.yaml`, parsed once into typed, frozen objects and validated on load.

Every key is typed; unknown keys fail with a did-you-mean suggestion; enum values list their
choices; numbers are range-checked. Errors name the key by its full dotted path.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from stages.core.errors import UserError

log = logging.getLogger(__name__)

PARAMS_FILE = Path("params.yaml")
# Renamed keys, accepted for one release with a warning: (section, old key) -> new key, or None if dropped.
RENAMED_KEYS: dict[tuple[str, str], str | None] = {
    ("infer", "window_rows"): "block_rows",
    ("infer", "ray_batch_rows"): None,  # the ray engine scores blocks of infer.block_rows rows, as the local one
}
# Renamed values, accepted for one release with a warning: (key, old value) -> new value.
RENAMED_VALUES = {("infer.reference", "demo_rules"): "stages.demo.rules:rule_label"}


def _range(low: float | None = None, high: float | None = None) -> dict[str, float | None]:
    return {"min": low, "max": high}


@dataclass(frozen=True)
class ModelParams:
    """How to build the model and feed it (stage `load_checkpoint`)."""

    backbone: str
    checkpoint: str
    num_labels: int = field(metadata=_range(1))
    labels: tuple[str, ...] | None
    classifier_dropout: float = field(metadata=_range(0.0, 1.0))
    max_length: int = field(metadata=_range(2))
    truncation_side: Literal["left", "right"]
    trust_remote_code: bool
    output: str

    def __post_init__(self) -> None:
        if self.labels is not None and len(self.labels) != self.num_labels:
            raise UserError(
                f"model.labels has {len(self.labels)} names but model.num_labels is {self.num_labels}; "
                "give one name per label or set model.labels: null"
            )

    @property
    def label_names(self) -> tuple[str, ...]:
        """The label names, `LABEL_<i>` where `model.labels` is null."""
        return self.labels or tuple(f"LABEL_{index}" for index in range(self.num_labels))


@dataclass(frozen=True)
class ExportParams:
    """How to export the ONNX model (stage `export`)."""

    exporter: Literal["dynamo", "torchscript"]
    opset: int = field(metadata=_range(13, 23))
    input_dtype: Literal["int64", "int32"]
    precision: Literal["fp32", "int8", "fp16"]
    int8_target: Literal["auto", "vnni", "no_vnni"]
    int8_max_float_share: float = field(metadata=_range(0.0, 1.0))
    dummy_batch: int = field(metadata=_range(2))
    dummy_length: int = field(metadata=_range(2))
    output: str


@dataclass(frozen=True)
class RuntimeParams:
    """How onnxruntime runs the model: shared by `parity` and `infer` so parity checks what serves."""

    providers: tuple[Literal["CUDAExecutionProvider", "CPUExecutionProvider"], ...]
    intra_op_num_threads: int = field(metadata=_range(0))
    graph_optimization_level: Literal["disable", "basic", "extended", "all"]
    cpu_memory_arena: bool
    intra_op_spinning: bool

    def __post_init__(self) -> None:
        if not self.providers:
            raise UserError("runtime.providers is empty; list at least CPUExecutionProvider")

    def on_cpu(self, threads: int) -> RuntimeParams:
        """These settings on the CPU provider alone, with `threads` intra-op threads."""
        return dataclasses.replace(self, providers=("CPUExecutionProvider",), intra_op_num_threads=threads)


@dataclass(frozen=True)
class Tolerance:
    """When ONNX logits count as equal to torch's: `|onnx - torch| <= atol + rtol * |torch|`, and label agreement."""

    atol: float = field(metadata=_range(0.0))
    rtol: float = field(metadata=_range(0.0))
    min_label_agreement: float = field(metadata=_range(0.0, 1.0))


@dataclass(frozen=True)
class ParityParams:
    """How torch and onnxruntime outputs are compared (stage `parity`)."""

    samples: int = field(metadata=_range(1))
    batch_size: int = field(metadata=_range(1))
    grid_batch_sizes: tuple[int, ...] = field(metadata=_range(1))
    grid_lengths: tuple[int, ...] = field(metadata=_range(1))
    atol: float = field(metadata=_range(0.0))
    rtol: float = field(metadata=_range(0.0))
    min_label_agreement: float = field(metadata=_range(0.0, 1.0))
    int8: Tolerance
    fp16: Tolerance
    seed: int
    report: str
    details: str
    plots: str

    def tolerance(self, precision: str) -> Tolerance:
        """The tolerance for the served precision: `atol`/`rtol`/`min_label_agreement` for fp32."""
        if precision == "fp32":
            return Tolerance(self.atol, self.rtol, self.min_label_agreement)
        return getattr(self, precision)


@dataclass(frozen=True)
class InferParams:
    """How the dataset is scored (stage `infer`)."""

    input: str
    text_column: str
    id_column: str
    output: str
    metrics: str
    long_text: Literal["truncate", "sliding_window"]
    stride: int = field(metadata=_range(0))
    batch_size: int = field(metadata=_range(1))
    max_batch_tokens: int = field(metadata=_range(1))
    max_batch_attention: int = field(metadata=_range(1))
    block_rows: int = field(metadata=_range(1))
    bad_rows: Literal["score", "skip"]
    probabilities: bool
    span_ignore_labels: tuple[str, ...]
    reference: str  # none, or module:function naming each token piece's reference label (see stages.scoring.reference)
    engine: Literal["local", "ray"]
    ray_actors: int = field(metadata=_range(1))
    ray_cpus_per_actor: float = field(metadata=_range(0.0))
    ray_gpus_per_actor: float = field(metadata=_range(0.0))

    def __post_init__(self) -> None:
        if self.reference != "none" and self.reference.count(":") != 1:
            raise UserError(
                f"infer.reference = {self.reference!r} must be none or module:function, "
                "e.g. stages.demo.rules:rule_label"
            )


@dataclass(frozen=True)
class Params:
    """The whole `params.yaml`."""

    model: ModelParams
    export: ExportParams
    runtime: RuntimeParams
    parity: ParityParams
    infer: InferParams


def load_params(path: Path = PARAMS_FILE) -> Params:
    """Read and validate a params file; any problem is a `UserError` naming the key."""
    if not path.is_file():
        raise UserError(f"params file not found: {path} (run from the repository root)")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise UserError(f"{path} is not valid YAML: {error}") from None
    return parse_section(Params, raw, prefix="")


def parse_section(cls: type, raw: Any, prefix: str) -> Any:
    """Build dataclass `cls` from a mapping, checking keys, types and ranges."""
    where = prefix.rstrip(".") or "params.yaml"
    if not isinstance(raw, dict):
        raise UserError(f"{where} must be a mapping of keys to values, got {type(raw).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    raw = _renamed(raw, prefix)
    for key in raw:
        if key not in fields:
            hint = difflib.get_close_matches(str(key), list(fields), n=1)
            suggestion = f"; did you mean {prefix}{hint[0]}?" if hint else f"; known keys: {', '.join(fields)}"
            raise UserError(f"unknown key {prefix}{key}{suggestion}")
    hints = typing.get_type_hints(cls)
    values = {}
    for name, spec in fields.items():
        key = prefix + name
        if name not in raw:
            raise UserError(f"missing key {key} in params.yaml")
        value = RENAMED_VALUES.get((key, raw[name]), raw[name]) if isinstance(raw[name], str) else raw[name]
        if value is not raw[name]:
            log.warning(
                "%s: %r is deprecated; use %r (the old value works for one more release)", key, raw[name], value
            )
        values[name] = _parse_value(hints[name], value, key)
        _check_range(spec, values[name], key)
    return cls(**values)


def _renamed(raw: dict, prefix: str) -> dict:
    """`raw` with deprecated keys of this section renamed (or dropped), each with a warning naming the new key."""
    section = prefix.rstrip(".")
    renamed = dict(raw)
    for (where, old), new in RENAMED_KEYS.items():
        if where != section or old not in raw:
            continue
        value = renamed.pop(old)
        if new is None:
            log.warning("%s%s is no longer used; remove it from params.yaml", prefix, old)
        elif new in raw:
            raise UserError(f"params.yaml sets both {prefix}{old} and {prefix}{new}; keep only {prefix}{new}")
        else:
            log.warning("%s%s is renamed %s%s; the old name works for one more release", prefix, old, prefix, new)
            renamed[new] = value
    return renamed


def _parse_value(kind: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(kind)
    arguments = typing.get_args(kind)
    if dataclasses.is_dataclass(kind):
        return parse_section(kind, value, prefix=key + ".")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in arguments:
            return None
        (inner,) = [argument for argument in arguments if argument is not type(None)]
        return _parse_value(inner, value, key)
    if origin is Literal:
        if value not in arguments:
            choices = ", ".join(str(argument) for argument in arguments)
            raise UserError(f"{key} = {value!r} is not allowed; choose one of: {choices}")
        return value
    if origin is tuple:
        if not isinstance(value, list):
            raise UserError(f"{key} must be a list, got {value!r}")
        return tuple(_parse_value(arguments[0], item, f"{key}[{index}]") for index, item in enumerate(value))
    if kind is bool:
        if not isinstance(value, bool):
            raise UserError(f"{key} must be true or false, got {value!r}")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{key} must be an integer, got {value!r}")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise UserError(f"{key} must be a number, got {value!r}")
        return float(value)
    if kind is str:
        if not isinstance(value, str) or not value:
            raise UserError(f"{key} must be a non-empty string, got {value!r}")
        return value
    raise TypeError(f"unsupported params type {kind!r} for {key}")


def _check_range(spec: dataclasses.Field, value: Any, key: str) -> None:
    low, high = spec.metadata.get("min"), spec.metadata.get("max")
    for item in value if isinstance(value, tuple) else (value,):
        if (low is not None and item < low) or (high is not None and item > high):
            bounds = f">= {low}" if high is None else f"between {low} and {high}"
            raise UserError(f"{key} = {value!r} is out of range; it must be {bounds}")
