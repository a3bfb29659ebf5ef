"""An exported model ready to score: its runner (onnxruntime or OpenVINO), tokenizer, labels and window framing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stages.core.params import RuntimeParams
from stages.graph.metadata import ONNX_FILE, read_sidecar
from stages.graph.runners import Runner, load_runner, resolve_serving
from stages.scoring.batching import pad_batch
from stages.scoring.tokens import Framing, TextTokenizer

PROBE_ROWS = 4  # windows run alone, then side by side


@dataclass(frozen=True)
class ServedModel:
    """What scoring needs from an exported model directory."""

    runner: Runner
    tokenizer: TextTokenizer
    labels: tuple[str, ...]
    framing: Framing
    invariance: list[bool] = field(default_factory=list)  # `batch_invariant`'s measurement, once made

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_id

    def batch_invariant(self, texts: Sequence[str]) -> bool:
        """Whether a window's logits are the same bits in any batch (alone, and beside others padded to the longest),
        measured once, on the first windows of `texts` (the data it scores: a probe of other text could run into
        what the data never holds). Then a row's scores are its own wherever it ran; dynamic int8, which quantizes
        each batch with one scale, is not."""
        if self.invariance:
            return self.invariance[0]
        framing = self.framing
        encoded = self.tokenizer.encode(list(texts[:PROBE_ROWS]) or [""])
        windows = [
            np.concatenate([framing.prefix, row.input_ids[: framing.capacity], framing.suffix]) for row in encoded
        ]
        windows = (windows * PROBE_ROWS)[: max(PROBE_ROWS, len(windows))]  # a one-row block probes beside itself
        alone = [self.runner.logits(pad_batch([window], self.pad_id))[0] for window in windows]
        together = self.runner.logits(pad_batch(windows, self.pad_id))
        same = all(np.array_equal(together[index, : len(window)], alone[index]) for index, window in enumerate(windows))
        self.invariance.append(same)
        return same

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
