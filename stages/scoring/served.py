"""An exported model ready to score: its runner (onnxruntime or OpenVINO), tokenizer, labels and window framing."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from stages.core.params import RuntimeParams
from stages.graph.metadata import ONNX_FILE, read_sidecar
from stages.graph.runners import Runner, load_runner, resolve_serving
from stages.scoring.tokens import Framing, TextTokenizer


@dataclass(frozen=True)
class ServedModel:
    """What scoring needs from an exported model directory."""

    runner: Runner
    tokenizer: TextTokenizer
    labels: tuple[str, ...]
    framing: Framing

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_id

    @classmethod
    def load(cls, onnx_dir: Path, runtime: RuntimeParams, *, tf32: bool = True) -> ServedModel:
        """The model in `onnx_dir` served as `runtime` says (`auto`: as `model.json` records); `tf32=False` for an
        fp32 check on CUDA."""
        metadata = read_sidecar(onnx_dir)
        tokenizer = TextTokenizer.load(onnx_dir)
        return cls(
            runner=load_runner(onnx_dir / ONNX_FILE, resolve_serving(metadata, runtime), runtime, tf32=tf32),
            tokenizer=tokenizer,
            labels=tuple(metadata["labels"]),
            framing=tokenizer.framing(int(metadata["max_length"]), metadata["truncation_side"]),
        )


def load_framing(onnx_dir: Path) -> Framing:
    """The exported model's window framing, without starting a session."""
    metadata = read_sidecar(onnx_dir)
    return TextTokenizer.load(onnx_dir).framing(int(metadata["max_length"]), metadata["truncation_side"])
