"""What parity compares: dataset rows tokenised and windowed exactly as `infer` does (their spans built as `infer`
builds them), and a grid of shapes away from the export dummy; the same inputs judge every int8 mix."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from stages.core.errors import UserError
from stages.core.params import Params, ParityParams, Tolerance
from stages.graph.metadata import ONNX_FILE
from stages.model.custom_head import TokenModel
from stages.model.directory import HeadSpec
from stages.model.token_model import torch_logits
from stages.scoring.aggregation import Aggregation, WordRule, softmax, word_ranges
from stages.scoring.batching import pad_batch, plan_batches
from stages.scoring.datasets.annotations import gold_for_model
from stages.scoring.datasets.blocks import empty_dataset, iter_blocks
from stages.scoring.decoding import Crf, check_aggregation, decoded_labels
from stages.scoring.quality import Span, Word, on_words, predicted_spans, span_agreement
from stages.scoring.tokens import EncodedText, Framing, TextTokenizer
from stages.scoring.windows import Window, WindowOutputs, make_windows, merge_windows
from stages.verify.compare import ROWS_CASE, CaseReport, Pairs, SpanQuality, agreement, compare_case, pooled_grid_values
from stages.verify.foreign_rows import check_gold_labels

HISTOGRAM_FLOOR = 1e-10  # diffs below land in the lowest bin
SAMPLE_POOL_FACTOR = 10  # rows sampled from the first SAMPLE_POOL_FACTOR x parity.samples of the dataset
Logits = Callable[[dict[str, np.ndarray]], np.ndarray]  # one padded batch -> [batch, sequence, labels]


@dataclass(frozen=True)
class SampledRows:
    """The gate's rows of `parity.input`: their texts, and their gold spans (and words, where the annotations tag
    words) where the file has annotations."""

    texts: list[str]
    gold: list[list[Span]] | None
    words: list[list[Word]] | None = None


@dataclass(frozen=True)
class GateRows:
    """The sampled rows tokenised and windowed as `infer` does, in length-sorted batches, with what their spans need."""

    texts: list[str]
    encoded: list[EncodedText]
    windows: list[Window]
    batches: list[np.ndarray]  # window indices of each batch
    arrays: list[dict[str, np.ndarray]]
    gold: list[list[Span]] | None  # as the model can predict them (`gold_for_model`)
    words: list[list[Word]] | None  # the gold's words, where its annotations tag words
    aggregation: Aggregation  # how `infer` reads spans (`infer.aggregation`)
    prefix: int  # special tokens before a window's content
    crf: Crf | None  # a CRF head's: both models' labels are its decoding of their logits, as `infer` decodes them

    def spans(self, logits: list[np.ndarray]) -> tuple[list[list[Span]], list[list[Word]], np.ndarray]:
        """Each row's spans from one model's logits on the batches, merged across windows and read as `infer` reads
        them, the words entities are counted on under a word-level aggregation (the gold's where it names them,
        else the model's; none under `simple`), and every row's token labels in order."""
        outputs = WindowOutputs.empty(len(self.windows), len(self.aggregation.labels), self.crf is not None)
        for indices, batch, arrays in zip(self.batches, logits, self.arrays, strict=True):
            outputs.take(
                indices, self.windows, self.prefix, batch, decoded_labels(self.crf, batch, arrays["attention_mask"])
            )
        spans, words, labels = [], [], []
        merged = merge_windows(dict(enumerate(map(len, self.encoded))), self.windows, outputs)
        for index, (text, tokens, row) in enumerate(zip(self.texts, self.encoded, merged, strict=True)):
            offsets, decoded = tokens.offsets[row.positions], None if self.crf is None else row.label_ids
            reading = self.aggregation.read(
                text, tokens.input_ids[row.positions], offsets, softmax(row.probabilities), decoded
            )
            spans.append(predicted_spans(text, reading.spans))
            labels.append(row.label_ids)
            if self.aggregation.word_level:
                words.append(
                    word_ranges(reading.word_starts, reading.word_ends) if self.words is None else self.words[index]
                )
        return spans, words, np.concatenate([np.zeros(0, np.int16), *labels])

    def quality(self, reference: list[np.ndarray], candidate: list[np.ndarray]) -> SpanQuality:
        """The candidate's spans against the reference's and, with gold, each one's entity F1 (a truncated row's
        gold spans in its cut text count as misses, as in `infer`); a CRF head's decoded labels compared too."""
        (expected, words, reference_labels), (found, _, labels) = self.spans(reference), self.spans(candidate)
        gold = self.gold
        return SpanQuality(
            span_f1=span_agreement(expected, found),
            entity_f1_reference=None if gold is None else self.entity_f1(gold, expected, words),
            entity_f1_candidate=None if gold is None else self.entity_f1(gold, found, words),
            decoded_label_agreement=None if self.crf is None else agreement(reference_labels, labels),
        )

    def entity_f1(self, gold: list[list[Span]], predicted: list[list[Span]], words: list[list[Word]]) -> float:
        """Micro entity F1 of one model's spans against gold; on `words` under a word-level aggregation."""
        if self.aggregation.word_level:
            gold, predicted = (
                [on_words(row, words[index], self.texts[index]) for index, row in enumerate(spans)]
                for spans in (gold, predicted)
            )
        return span_agreement(gold, predicted)


@dataclass(frozen=True)
class GateInputs:
    """Everything the gate runs a model on: the rows' batches, then one random batch per grid shape."""

    rows: GateRows
    grid: list[tuple[str, dict[str, np.ndarray]]]

    def run(self, logits: Logits) -> list[list[np.ndarray]]:
        """One model's logits: the rows' batches, then each grid case's batch."""
        return [[logits(arrays) for arrays in self.rows.arrays], *([logits(arrays)] for _, arrays in self.grid)]

    def judge(
        self, reference: list[list[np.ndarray]], candidate: list[list[np.ndarray]], tolerance: Tolerance
    ) -> list[CaseReport]:
        """Every case's verdict for the candidate's logits against the reference's."""
        rows = compare_case(
            ROWS_CASE, self.pairs(0, reference, candidate), tolerance,
            self.rows.quality(reference[0], candidate[0]), pooled=True,
        )  # fmt: skip
        grid = [
            compare_case(name, self.pairs(index, reference, candidate), tolerance)
            for index, (name, _) in enumerate(self.grid, start=1)
        ]
        return [rows, *pooled_grid_values(grid, tolerance)]

    def pairs(self, case: int, reference: list[list[np.ndarray]], candidate: list[list[np.ndarray]]) -> Pairs:
        masks = (
            [arrays["attention_mask"] for arrays in self.rows.arrays]
            if case == 0
            else [self.grid[case - 1][1]["attention_mask"]]
        )
        return list(zip(reference[case], candidate[case], masks, strict=True))


def sample_rows(params: Params) -> SampledRows:
    """`parity.samples` rows drawn with `parity.seed` from the start of `parity.input`, with their gold spans."""
    pool_size = SAMPLE_POOL_FACTOR * params.parity.samples
    infer = params.infer
    blocks = iter_blocks(
        params.parity.input, infer.text_column, infer.id_column, pool_size, params.annotations, "parity.input"
    )
    pool = next(blocks, None)
    if pool is None:
        raise empty_dataset(params.parity.input, "parity.input")
    rng = np.random.default_rng(params.parity.seed)
    chosen = sorted(rng.choice(len(pool.texts), size=min(params.parity.samples, len(pool.texts)), replace=False))
    return SampledRows(
        texts=[pool.texts[index] for index in chosen],
        gold=None if pool.gold is None else [pool.gold[index] for index in chosen],
        words=None if pool.words is None else [pool.words[index] for index in chosen],
    )


def gate_rows(
    sampled: SampledRows,
    tokenizer: TextTokenizer,
    framing: Framing,
    labels: tuple[str, ...],
    params: Params,
    crf: Crf | None = None,
) -> GateRows:
    """The rows tokenised and windowed as `infer` does, in length-sorted batches with real padding (a CRF head's
    labels decoded as `infer` decodes them)."""
    check_aggregation(params.infer.aggregation, crf)
    encoded = tokenizer.encode(sampled.texts)
    windows = make_windows(encoded, framing, params.infer.long_text, params.infer.stride)
    batch_size = params.parity.batch_size
    batches = list(plan_batches([len(window) for window in windows], batch_size, batch_size * framing.max_length))
    ignore = frozenset(params.infer.span_ignore_labels)
    gold = None
    if sampled.gold is not None:
        check_gold_labels(sampled.gold, labels, ignore, params.parity.input)
        gold = [
            gold_for_model(spans, text, labels, ignore, f"{params.parity.input} row {index} of the sample")
            for index, (spans, text) in enumerate(zip(sampled.gold, sampled.texts, strict=True))
        ]
    return GateRows(
        texts=sampled.texts,
        encoded=encoded,
        windows=windows,
        batches=batches,
        arrays=[pad_batch([windows[index].input_ids for index in indices], tokenizer.pad_id) for indices in batches],
        gold=gold,
        words=sampled.words,
        aggregation=Aggregation(params.infer.aggregation, labels, ignore, WordRule.of(tokenizer)),
        prefix=len(framing.prefix),
        crf=crf,
    )


def grid_batch(batch_size: int, length: int, vocab_size: int, seed: int) -> dict[str, np.ndarray]:
    """Random tokens of one grid shape; row i keeps its first length - i*length/batch tokens (row 0 full)."""
    rng = np.random.default_rng(seed)
    attention_mask = np.zeros((batch_size, length), dtype=np.int64)
    for row in range(batch_size):
        attention_mask[row, : max(1, length - row * length // batch_size)] = 1
    return {
        "input_ids": rng.integers(0, vocab_size, (batch_size, length)),
        "attention_mask": attention_mask,
        "token_type_ids": rng.integers(0, 2, (batch_size, length)) * attention_mask,
    }


def grid_shapes(parity: ParityParams, max_length: int) -> list[tuple[int, int]]:
    """The batch x length grid, lengths capped at the model's max_length."""
    lengths = sorted({min(length, max_length) for length in parity.grid_lengths})
    return [(batch, length) for batch in parity.grid_batch_sizes for length in lengths]


def gate_inputs(
    sampled: SampledRows,
    tokenizer: TextTokenizer,
    framing: Framing,
    spec: HeadSpec,
    vocab_size: int,
    params: Params,
    crf: Crf | None = None,
) -> GateInputs:
    """What the gate compares: the sampled rows' batches (a CRF head's labels decoded with `crf`), then one random
    batch per grid shape."""
    grid = [
        (f"grid {batch}x{length}", grid_batch(batch, length, vocab_size, params.parity.seed + index))
        for index, (batch, length) in enumerate(grid_shapes(params.parity, framing.max_length))
    ]
    return GateInputs(gate_rows(sampled, tokenizer, framing, spec.labels, params, crf), grid)


def check_parity(
    model: TokenModel, served: Callable[[dict[str, np.ndarray]], np.ndarray], inputs: GateInputs, tolerance: Tolerance
) -> tuple[list[CaseReport], Pairs]:
    """Every case (the dataset rows, then each grid shape) through torch and `served` (the runner's logits), and all
    compared batches for the plots."""
    reference = inputs.run(lambda arrays: torch_logits(model, arrays))
    candidate = inputs.run(served)
    compared = [pair for case in range(len(reference)) for pair in inputs.pairs(case, reference, candidate)]
    return inputs.judge(reference, candidate, tolerance), compared


def plot_data(compared: Pairs) -> dict[str, list[dict]]:
    """For `dvc plots`: max abs diff per padded sequence length, and a log10 histogram of token diffs."""
    by_length: dict[int, float] = {}
    diffs = []
    for reference, candidate, mask in compared:
        real = mask.astype(bool)
        diff = np.abs(candidate[real] - reference[real]).max(axis=-1)
        diff = diff[np.isfinite(diff)]
        diffs.append(diff)
        length = reference.shape[1]
        by_length[length] = max(by_length.get(length, 0.0), float(diff.max(initial=0.0)))
    exponents = np.floor(np.log10(np.maximum(np.concatenate(diffs), HISTOGRAM_FLOOR))).astype(int)
    values, counts = np.unique(exponents, return_counts=True)
    return {
        "max_diff_by_length.json": [
            {"length": length, "max_abs_diff": by_length[length]} for length in sorted(by_length)
        ],
        "diff_histogram.json": [
            {"log10_abs_diff": int(value), "tokens": int(count)} for value, count in zip(values, counts, strict=True)
        ],
    }


def graph_shape(value: onnx.ValueInfoProto) -> list[str | int | None]:
    """A graph input's or output's shape as onnxruntime reports it: a named dimension, a size, or None."""
    return [
        dim.dim_param or (dim.dim_value if dim.HasField("dim_value") else None)
        for dim in value.type.tensor_type.shape.dim
    ]


def check_compatible(spec: HeadSpec, onnx_dir: Path) -> None:
    """The ONNX model must take the torch model's inputs (it may also declare `token_type_ids` the model ignores;
    it is fed zeros, as infer feeds it) and give its label count, else one clear error."""
    graph = onnx.load(onnx_dir / ONNX_FILE, load_external_data=False).graph
    graph_inputs = [(value.name, len(value.type.tensor_type.shape.dim)) for value in graph.input]
    graph_outputs = [(value.name, graph_shape(value)) for value in graph.output]
    names = {name for name, _ in graph_inputs}
    problems = []
    if not set(spec.input_names) <= names <= {*spec.input_names, "token_type_ids"} or any(
        rank != 2 for _, rank in graph_inputs
    ):
        problems.append(f"inputs: onnx {graph_inputs} vs torch {[(name, 2) for name in spec.input_names]}")
    labels = graph_outputs[0][1][2] if len(graph_outputs) == 1 and len(graph_outputs[0][1]) == 3 else None
    if labels is None or (isinstance(labels, int) and labels != spec.num_labels):
        problems.append(
            f"outputs: onnx {graph_outputs} vs torch [('logits', ['batch', 'sequence', {spec.num_labels}])]"
        )
    if problems:
        raise UserError(
            f"{onnx_dir / ONNX_FILE} does not match the torch model in the normalised model directory:\n  "
            + "\n  ".join(problems)
            + "\nRun the export stage again."
        )
