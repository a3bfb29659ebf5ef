"""An exported model ready to score: its onnxruntime session, tokenizer, labels and window framing."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from stages.core.params import RuntimeParams
from stages.graph.metadata import ONNX_FILE, read_sidecar
from stages.graph.session import create_session
from stages.scoring.tokens import Framing


@dataclass(frozen=True)
class ServedModel:
    """What scoring needs from an exported model directory."""

    session: ort.InferenceSession
    tokenizer: PreTrainedTokenizerBase
    labels: tuple[str, ...]
    framing: Framing

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id

    @classmethod
    def load(cls, onnx_dir: Path, runtime: RuntimeParams, *, tf32: bool = True) -> ServedModel:
        """The model in `onnx_dir` on `runtime`'s provider; `tf32=False` for an fp32 check on CUDA."""
        metadata = read_sidecar(onnx_dir)
        tokenizer = load_tokenizer(onnx_dir)
        return cls(
            session=create_session(onnx_dir / ONNX_FILE, runtime, tf32=tf32),
            tokenizer=tokenizer,
            labels=tuple(metadata["labels"]),
            framing=Framing.of(tokenizer, int(metadata["max_length"])),
        )


def load_tokenizer(onnx_dir: Path) -> PreTrainedTokenizerBase:
    """The tokenizer saved beside the exported model."""
    return AutoTokenizer.from_pretrained(onnx_dir, local_files_only=True)


def load_framing(onnx_dir: Path) -> Framing:
    """The exported model's window framing, without starting a session."""
    return Framing.of(load_tokenizer(onnx_dir), int(read_sidecar(onnx_dir)["max_length"]))
