"""An exported model ready to score: its runner (onnxruntime or OpenVINO), tokenizer, labels, window framing and, for a
CRF head, the CRF its labels are decoded with."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stages.core.params import RuntimeParams
from stages.graph.metadata import ONNX_FILE, read_sidecar
from stages.graph.runners import Runner, load_runner, resolve_serving
from stages.scoring.aggregation import Aggregation, WordRule
from stages.scoring.batching import pad_batch
from stages.scoring.decoding import Crf, check_aggregation, served_crf
from stages.scoring.tokens import Framing, TextTokenizer

PROBE_ROWS = 4  # windows run alone, then side by side


@dataclass(frozen=True)
class ServedModel:
    """What scoring needs from an exported model directory."""

    runner: Runner
    tokenizer: TextTokenizer
    labels: tuple[str, ...]
    framing: Framing
    word_rule: WordRule
    crf: Crf | None  # a CRF head's: the labels are its Viterbi decoding of the logits (the emissions)
    invariance: list[bool] = field(default_factory=list)  # `batch_invariant`'s measurement, once made

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_id

    def aggregation(self, strategy: str, ignore: frozenset[str]) -> Aggregation:
        """How this model's rows become spans under `strategy` (`infer.aggregation`), `ignore` forming none."""
        check_aggregation(strategy, self.crf)
        return Aggregation(strategy, self.labels, ignore, self.word_rule)

    def batch_invariant(self, texts: Sequence[str]) -> bool:
        """Whether a window's logits are the same bits in any batch (alone, and beside others padded to the longest),
        measured once, on windows of `texts` (the data it scores: a probe of other text could run into what the data
        never holds). Then a row's scores are its own wherever it ran; dynamic int8, which quantizes each batch with
        one scale, is not. Without two different windows to set side by side (texts all empty or alike) it cannot be
        measured, and the answer is no: keeping each row's batch context is exact for any model."""
        if not self.invariance:
            windows = self.probe_windows(texts)
            alone = [self.runner.logits(pad_batch([window], self.pad_id))[0] for window in windows]
            together = self.runner.logits(pad_batch(windows, self.pad_id)) if len(windows) > 1 else None
            self.invariance.append(
                together is not None
                and all(
                    np.array_equal(together[index, : len(window)], alone[index]) for index, window in enumerate(windows)
                )
            )
        return self.invariance[0]

    def probe_windows(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Different windows of the first distinct texts, and a shorter copy of the first so that the batch pads."""
        framing = self.framing
        distinct = list(dict.fromkeys(text for text in texts if text))[:PROBE_ROWS]
        contents = [row.input_ids[: framing.capacity] for row in self.tokenizer.encode(distinct)] if distinct else []
        if contents and len(contents[0]) > 1:
            contents.append(contents[0][: len(contents[0]) // 2])
        unique = list({tuple(int(token) for token in content): content for content in contents}.values())
        return [np.concatenate([framing.prefix, content, framing.suffix]) for content in unique]

    @classmethod
    def load(cls, onnx_dir: Path, runtime: RuntimeParams) -> ServedModel:
        """The model in `onnx_dir` served as `runtime` says (`auto`: as `model.json` records)."""
        metadata = read_sidecar(onnx_dir)
        tokenizer = TextTokenizer.load(onnx_dir)
        return cls(
            runner=load_runner(onnx_dir / ONNX_FILE, resolve_serving(metadata, runtime), runtime, cached=True),
            tokenizer=tokenizer,
            labels=tuple(metadata["labels"]),
            framing=tokenizer.framing(int(metadata["max_length"]), metadata["truncation_side"]),
            word_rule=WordRule.of(tokenizer),
            crf=served_crf(onnx_dir, metadata),
        )


def load_framing(onnx_dir: Path) -> Framing:
    """The exported model's window framing, without starting a session."""
    metadata = read_sidecar(onnx_dir)
    return TextTokenizer.load(onnx_dir).framing(int(metadata["max_length"]), metadata["truncation_side"])
