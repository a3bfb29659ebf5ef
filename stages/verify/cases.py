"""What parity compares: dataset rows tokenised exactly as `infer` does, and a grid of shapes away from the
export dummy; torch and onnxruntime run on each, and the plots are drawn from the compared batches."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort

from stages.core.errors import UserError
from stages.core.params import Params, ParityParams, Tolerance
from stages.graph.metadata import ONNX_FILE
from stages.graph.session import onnx_logits
from stages.model.directory import HeadSpec
from stages.model.token_model import CustomModel, torch_logits
from stages.scoring.batching import pad_batch, plan_batches
from stages.scoring.dataset import empty_dataset, iter_blocks
from stages.scoring.served import ServedModel
from stages.scoring.tokens import Framing, TextTokenizer
from stages.scoring.windows import make_windows
from stages.verify.compare import ROWS_CASE, CaseReport, compare_case

HISTOGRAM_FLOOR = 1e-10  # diffs below land in the lowest bin
SAMPLE_POOL_FACTOR = 10  # rows sampled from the first SAMPLE_POOL_FACTOR x parity.samples of the dataset
Pairs = list[tuple[np.ndarray, np.ndarray, np.ndarray]]


def run_pairs(
    model: CustomModel, session: ort.InferenceSession, batches: Iterator[dict[str, np.ndarray]]
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Torch and ONNX logits for each batch, with the batch's attention mask."""
    return [(torch_logits(model, arrays), onnx_logits(session, arrays), arrays["attention_mask"]) for arrays in batches]


def sample_texts(params: Params) -> list[str]:
    """`parity.samples` texts drawn with `parity.seed` from the start of the dataset."""
    pool_size = SAMPLE_POOL_FACTOR * params.parity.samples
    blocks = iter_blocks(params.infer.input, params.infer.text_column, params.infer.id_column, pool_size)
    pool = next(blocks, None)
    if pool is None:
        raise empty_dataset(params.infer.input)
    rng = np.random.default_rng(params.parity.seed)
    chosen = rng.choice(len(pool.texts), size=min(params.parity.samples, len(pool.texts)), replace=False)
    return [pool.texts[index] for index in sorted(chosen)]


def dataset_batches(
    texts: list[str], tokenizer: TextTokenizer, framing: Framing, params: Params
) -> Iterator[dict[str, np.ndarray]]:
    """Dataset rows tokenised and windowed as `infer` does, in length-sorted batches with real padding."""
    encoded = tokenizer.encode(texts)
    windows = make_windows(encoded, framing, params.infer.long_text, params.infer.stride)
    batch_size = params.parity.batch_size
    budget = batch_size * framing.max_length
    for indices in plan_batches([len(window) for window in windows], batch_size, budget):
        yield pad_batch([windows[index].input_ids for index in indices], tokenizer.pad_id)


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
    texts: list[str], tokenizer: TextTokenizer, framing: Framing, vocab_size: int, params: Params
) -> Iterator[tuple[str, list[dict[str, np.ndarray]]]]:
    """What the gate compares, case by case: the dataset rows' batches, then one random batch per grid shape."""
    yield ROWS_CASE, list(dataset_batches(texts, tokenizer, framing, params))
    for index, (batch, length) in enumerate(grid_shapes(params.parity, framing.max_length)):
        yield f"grid {batch}x{length}", [grid_batch(batch, length, vocab_size, params.parity.seed + index)]


def check_parity(
    model: CustomModel, served: ServedModel, params: Params, texts: list[str], tolerance: Tolerance
) -> tuple[list[CaseReport], Pairs]:
    """Every case (the dataset rows, then each grid shape), and all compared batches for the plots."""
    cases, compared = [], []
    inputs = gate_inputs(texts, served.tokenizer, served.framing, model.config.vocab_size, params)
    for name, batches in inputs:
        pairs = run_pairs(model, served.session, iter(batches))
        cases.append(compare_case(name, pairs, tolerance))
        compared.extend(pairs)
    return cases, compared


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


def check_compatible(spec: HeadSpec, session: ort.InferenceSession, onnx_dir: Path) -> None:
    """The ONNX model must take the torch model's inputs (it may also declare `token_type_ids` the model ignores;
    it is fed zeros, as infer feeds it) and give its label count, else one clear error."""
    graph_inputs = [(value.name, len(value.shape)) for value in session.get_inputs()]
    graph_outputs = [(value.name, value.shape) for value in session.get_outputs()]
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
