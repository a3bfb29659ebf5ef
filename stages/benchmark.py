"""Stage `benchmark`: serving engines side by side on the same tokenised rows, in one process.

Engines: torch eager fp32, torch bf16 autocast (CPU), onnxruntime fp32 and dynamic int8 (CPU); with a
CUDA device also torch eager fp16, and onnxruntime fp16 and fp32 on the CUDA provider with IO binding.
The fp32 ONNX model is exported from the torch model into a temporary directory; the int8 and fp16
models are made from copies of it with `stages.precision.apply_precision`.

Each timed round is end to end: it tokenises its rows (fixed batches of `--batch` rows in dataset
order, truncated to `--length` tokens, right-padded) and runs the model. Engines alternate round by
round after a warm-up round each, so load from other processes falls on all of them alike.

Model FLOPs are counted analytically for a DeBERTa-v2-like encoder, per padded token slot at a batch's
padded length L (h hidden size, ff intermediate size, n layers, k labels):

    n * (2 * (4 * h^2 + 2 * h * ff)      Q, K, V, output projections and the feed-forward block
         + 2 * 2 * L * h                 attention scores QK^T and the weighted sum AV
         + d * 2 * L * h)                DeBERTa's disentangled c2p / p2c scores (d of them, 0 without)
    + 2 * h * k                          the token-classification head

Embedding lookups, softmax, normalisation and the projections of the relative-position embeddings
are not counted, so it is a slight under-count. Achieved GFLOP/s divides the FLOPs of every padded
slot computed by the model's own time (tokenisation excluded), and is set against a matmul peak
measured in the same run with the same threads: a [2048x768] x [768x3072] MatMul in onnxruntime
(the denominator for onnxruntime rows), in torch fp32 and in torch bf16.
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import psutil
import torch
import transformers
from onnx import TensorProto, helper, numpy_helper
from transformers import AutoTokenizer, DebertaV2Config, PreTrainedTokenizerBase

from stages.atomic import write_json
from stages.dataset import iter_chunks
from stages.encoding import Framing, encode_texts, make_windows, pad_batch
from stages.errors import UserError, run_stage
from stages.export import export_graph
from stages.load_checkpoint import load_backbone
from stages.model import CustomModel, load_model_dir, torch_logits
from stages.params import ExportParams, RuntimeParams, load_params
from stages.precision import apply_precision
from stages.runtime import CPU, CUDA, ONNX_FILE, build_feed, create_session, provider_of

log = logging.getLogger(__name__)

SIZES = ("demo", "base")
PEAK_SHAPE = (2048, 768, 3072)  # [m x k] x [k x n]: an FFN-sized product
PEAK_WARMUP, PEAK_REPEATS = 2, 5
PEAK_IR_VERSION = 8  # readable by every onnxruntime this project supports (onnx 1.23 writes 14 by default)
READ_CHUNK_ROWS = 1024
RSS_NOTE = "process RSS (psutil) sampled after each of the engine's rounds, max; it counts every engine loaded"
FLOPS_FORMULA = (
    "layers * (2*(4*h^2 + 2*h*ff) + 2*2*L*h + disentangled*2*L*h) + 2*h*labels per padded token slot, "
    "L = the batch's padded length"
)
BASE_NUM_LABELS, BASE_DROPOUT = 4, 0.2


def mdeberta_v3_base_config() -> DebertaV2Config:
    """microsoft/mdeberta-v3-base's exact architecture (random weights are built from it)."""
    return DebertaV2Config(
        vocab_size=251000,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        hidden_act="gelu",
        max_position_embeddings=512,
        type_vocab_size=0,
        relative_attention=True,
        position_buckets=256,
        max_relative_positions=-1,
        pos_att_type=["p2c", "c2p"],
        norm_rel_ebd="layer_norm",
        share_att_key=True,
        position_biased_input=False,
        layer_norm_eps=1e-7,
        pad_token_id=0,
    )


@dataclass(frozen=True)
class BenchmarkSettings:
    """What is measured: rows, batch shape, rounds and threads."""

    size: str
    rows: int
    batch: int
    length: int
    rounds: int
    warmup: int
    threads: int
    graph_optimization_level: str = "all"
    tmp_dir: str | None = None  # where the ONNX models are written (None: the system's temporary directory)


@dataclass(frozen=True)
class Engine:
    """One way of serving the model: a function from a padded batch to float32 logits."""

    name: str
    precision: str
    provider: str
    run: Callable[[dict[str, np.ndarray]], np.ndarray]
    peak: str | None  # key into the matmul peaks used as this engine's denominator
    note: str = ""


@dataclass(frozen=True)
class Skipped:
    """An engine that cannot run here, and why."""

    engine: str
    reason: str


@dataclass(frozen=True)
class Workload:
    """The rows cut into fixed batches, with what one round computes."""

    batches: list[list[str]]
    padded_lengths: list[int]
    real_tokens: int  # per round, special tokens included
    token_slots: int  # per round, padding included
    flops: float  # per round, over padded slots


@dataclass
class EngineTimings:
    """What an engine's timed rounds measured."""

    batch_seconds: list[float] = field(default_factory=list)  # end to end, tokenisation included
    model_seconds: float = 0.0
    tokenize_seconds: float = 0.0
    rounds: int = 0
    peak_rss_bytes: int = 0
    labels: np.ndarray | None = None  # argmax over real tokens, from the last round


# ---------------------------------------------------------------- the model under test


def load_demo_model(model_dir: Path) -> tuple[CustomModel, PreTrainedTokenizerBase]:
    """The pipeline's normalised model and its tokenizer."""
    if not model_dir.is_dir():
        raise UserError(
            f"normalised model directory {model_dir} not found (model.output); run `dvc repro` first "
            "(or `python -m stages.load_checkpoint`)"
        )
    model, _ = load_model_dir(model_dir)
    return model, AutoTokenizer.from_pretrained(model_dir, local_files_only=True)


def build_base_model() -> CustomModel:
    """A random-weight model of mdeberta-v3-base's exact shape, seeded."""
    torch.manual_seed(0)
    return CustomModel(mdeberta_v3_base_config(), BASE_NUM_LABELS, BASE_DROPOUT).eval()


def flops_per_slot(config: Any, num_labels: int, padded_length: int) -> float:
    """Model FLOPs per padded token slot at `padded_length` (formula in the module docstring)."""
    hidden = config.hidden_size
    intermediate = getattr(config, "intermediate_size", None) or config.hidden_dim
    disentangled = (
        len(getattr(config, "pos_att_type", None) or ()) if getattr(config, "relative_attention", False) else 0
    )
    per_layer = 2 * (4 * hidden**2 + 2 * hidden * intermediate) + (2 + disentangled) * 2 * padded_length * hidden
    return float(config.num_hidden_layers * per_layer + 2 * hidden * num_labels)


# ---------------------------------------------------------------- rows and batches


def read_texts(path: Path, text_column: str, id_column: str, rows: int) -> list[str]:
    """The first `rows` non-empty texts of the dataset, in dataset order."""
    texts: list[str] = []
    for chunk in iter_chunks(path, text_column, id_column, READ_CHUNK_ROWS):
        texts.extend(text for text in chunk.texts if text.strip())
        if len(texts) >= rows:
            return texts[:rows]
    if not texts:
        raise UserError(f"dataset {path} has no non-empty texts to benchmark on (infer.input)")
    log.warning("dataset %s has only %d non-empty texts; benchmarking on those", path, len(texts))
    return texts


def tokenize_batch(tokenizer: PreTrainedTokenizerBase, framing: Framing, texts: Sequence[str]) -> dict[str, np.ndarray]:
    """Tokenise, truncate to one window and right-pad: what every engine's round does per batch."""
    windows = make_windows(encode_texts(tokenizer, texts), framing, "truncate", 0)
    return pad_batch(windows, tokenizer.pad_token_id)


def plan_workload(
    texts: list[str], tokenizer: PreTrainedTokenizerBase, framing: Framing, model: CustomModel, batch: int
) -> Workload:
    """Fixed batches of `batch` rows in dataset order, and their token and FLOP counts."""
    batches = [texts[start : start + batch] for start in range(0, len(texts), batch)]
    lengths, real, slots, flops, largest_id = [], 0, 0, 0.0, 0
    for rows in batches:
        arrays = tokenize_batch(tokenizer, framing, rows)
        mask = arrays["attention_mask"]
        lengths.append(mask.shape[1])
        real += int(mask.sum())
        slots += mask.size
        flops += mask.size * flops_per_slot(model.config, model.fc.out_features, mask.shape[1])
        largest_id = max(largest_id, int(arrays["input_ids"].max()))
    if largest_id >= model.config.vocab_size:
        raise UserError(
            f"the tokenizer produces token id {largest_id}, beyond the model's vocabulary of {model.config.vocab_size}; "
            "use the backbone's own tokenizer"
        )
    return Workload(batches, lengths, real, slots, flops)


# ---------------------------------------------------------------- engines


def torch_bf16_logits(model: CustomModel, arrays: dict[str, np.ndarray]) -> np.ndarray:
    """One batch under CPU bf16 autocast."""
    inputs = {name: torch.from_numpy(np.asarray(arrays[name], dtype=np.int64)) for name in model.input_names}
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        return model(**inputs).float().numpy()


def torch_cuda_runner(model: CustomModel) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
    """One batch on the GPU; inputs copied in and logits copied back (part of the timing)."""

    def run(arrays: dict[str, np.ndarray]) -> np.ndarray:
        inputs = {name: torch.from_numpy(np.asarray(arrays[name], dtype=np.int64)).cuda() for name in model.input_names}
        with torch.inference_mode():
            return model(**inputs).float().cpu().numpy()

    return run


def ort_cpu_runner(session: ort.InferenceSession) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
    """One batch through an onnxruntime session, fed by the graph's declared inputs."""

    def run(arrays: dict[str, np.ndarray]) -> np.ndarray:
        (logits,) = session.run(None, build_feed(session, arrays))
        return np.asarray(logits, dtype=np.float32)

    return run


def ort_cuda_runner(session: ort.InferenceSession) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
    """IO binding: inputs bound from host memory, the output left on the GPU until copied back."""
    output = session.get_outputs()[0].name

    def run(arrays: dict[str, np.ndarray]) -> np.ndarray:
        binding = session.io_binding()
        for name, array in build_feed(session, arrays).items():
            binding.bind_cpu_input(name, array)
        binding.bind_output(output, "cuda")
        session.run_with_iobinding(binding)
        return np.asarray(binding.copy_outputs_to_cpu()[0], dtype=np.float32)

    return run


def export_fp32(model: CustomModel, directory: Path) -> Path:
    """The fp32 ONNX model (dynamo exporter, opset 18, int64 inputs) in `directory`."""
    params = ExportParams(
        exporter="dynamo",
        opset=18,
        input_dtype="int64",
        precision="fp32",
        dummy_batch=2,
        dummy_length=6,
        output=str(directory),
    )
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / ONNX_FILE
    started = time.perf_counter()
    export_graph(model, params, path)
    log.info("exported the fp32 ONNX model in %.1f s", time.perf_counter() - started)
    return path


def converted_copy(source: Path, directory: Path, precision: str) -> Path:
    """A copy of the fp32 model (with any external data) converted to `precision`."""
    directory.mkdir(parents=True, exist_ok=True)
    for item in source.parent.iterdir():
        if item.is_file() and item.name.startswith(source.name):
            shutil.copy2(item, directory / item.name)
    started = time.perf_counter()
    conversion = apply_precision(directory / source.name, precision)
    log.info("made the %s ONNX model in %.1f s: %s", precision, time.perf_counter() - started, conversion)
    return directory / source.name


def cuda_unavailable_reason() -> str | None:
    """Why the CUDA engines cannot run here, or None when they can."""
    if not torch.cuda.is_available():
        return "no CUDA device (torch.cuda.is_available() is False)"
    return None


def ort_cuda_unavailable_reason() -> str | None:
    """Why onnxruntime cannot serve on CUDA here, or None when its CUDA provider is built in."""
    if CUDA not in ort.get_available_providers():
        return f"onnxruntime {ort.__version__} has no {CUDA} (install onnxruntime-gpu)"
    return None


def cpu_engines(model: CustomModel, fp32_path: Path, int8_path: Path, settings: BenchmarkSettings) -> list[Engine]:
    """torch fp32 and bf16 autocast, onnxruntime fp32 and int8, all on the CPU with `settings.threads`."""
    runtime = RuntimeParams((CPU,), settings.threads, settings.graph_optimization_level)
    fp32_session, int8_session = create_session(fp32_path, runtime), create_session(int8_path, runtime)
    return [
        Engine("torch-fp32", "fp32", "torch cpu", lambda arrays: torch_logits(model, arrays), "torch_fp32"),
        Engine(
            "torch-bf16", "bf16 autocast", "torch cpu", lambda arrays: torch_bf16_logits(model, arrays), "torch_bf16"
        ),
        Engine("ort-fp32", "fp32", provider_of(fp32_session), ort_cpu_runner(fp32_session), "onnxruntime_fp32"),
        Engine(
            "ort-int8",
            "int8 dynamic",
            provider_of(int8_session),
            ort_cpu_runner(int8_session),
            "onnxruntime_fp32",
            note="denominator: the fp32 matmul peak",
        ),
    ]


def cuda_engines(
    model: CustomModel, fp32_path: Path, workdir: Path, settings: BenchmarkSettings
) -> tuple[list[Engine], list[Skipped]]:
    """The GPU engines, or why each one is skipped."""
    names = ("torch-fp16-cuda", "ort-fp16-cuda", "ort-fp32-cuda")
    reason = cuda_unavailable_reason()
    if reason is not None:
        return [], [Skipped(name, reason) for name in names]
    half = copy.deepcopy(model).half().cuda().eval()
    engines = [Engine(names[0], "fp16", f"torch cuda ({torch.cuda.get_device_name()})", torch_cuda_runner(half), None)]
    reason = ort_cuda_unavailable_reason()
    if reason is not None:
        return engines, [Skipped(name, reason) for name in names[1:]]
    skipped = []
    fp16_path = converted_copy(fp32_path, workdir / "fp16", "fp16")
    runtime = RuntimeParams((CUDA,), settings.threads, settings.graph_optimization_level)
    for name, path, precision in ((names[1], fp16_path, "fp16"), (names[2], fp32_path, "fp32")):
        try:
            session = create_session(path, runtime)
        except UserError as error:
            skipped.append(Skipped(name, str(error)))
            continue
        note = "io binding; TF32 on (the CUDA provider's default)" if precision == "fp32" else "io binding"
        engines.append(Engine(name, precision, provider_of(session), ort_cuda_runner(session), None, note))
    return engines, skipped


# ---------------------------------------------------------------- timing


def time_round(
    engine: Engine, workload: Workload, tokenizer: PreTrainedTokenizerBase, framing: Framing, timings: EngineTimings
) -> None:
    """One end-to-end round: tokenise and run every batch; adds to `timings`."""
    labels = []
    for rows in workload.batches:
        started = time.perf_counter()
        arrays = tokenize_batch(tokenizer, framing, rows)
        tokenized = time.perf_counter()
        logits = engine.run(arrays)
        finished = time.perf_counter()
        timings.batch_seconds.append(finished - started)
        timings.tokenize_seconds += tokenized - started
        timings.model_seconds += finished - tokenized
        labels.append(logits.argmax(axis=-1)[arrays["attention_mask"].astype(bool)])
    timings.rounds += 1
    timings.labels = np.concatenate(labels)
    timings.peak_rss_bytes = max(timings.peak_rss_bytes, psutil.Process().memory_info().rss)


def time_engines(
    engines: list[Engine],
    workload: Workload,
    tokenizer: PreTrainedTokenizerBase,
    framing: Framing,
    settings: BenchmarkSettings,
) -> dict[str, EngineTimings]:
    """Warm-up rounds, then timed rounds alternating between engines (each round starts one engine later)."""
    for engine in engines:
        for _ in range(settings.warmup):
            time_round(engine, workload, tokenizer, framing, EngineTimings())
    timings = {engine.name: EngineTimings() for engine in engines}
    for round_index in range(settings.rounds):
        shift = round_index % len(engines)
        for engine in engines[shift:] + engines[:shift]:
            time_round(engine, workload, tokenizer, framing, timings[engine.name])
        log.info("round %d/%d done", round_index + 1, settings.rounds)
    return timings


def timed_samples(call: Callable[[], object], warmup: int, repeats: int) -> list[float]:
    """Seconds of each of `repeats` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        call()
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return samples


def matmul_peak_samples(threads: int) -> dict[str, list[float]]:
    """Seconds of one [m x k] x [k x n] product in onnxruntime fp32, torch fp32 and torch bf16."""
    m, k, n = PEAK_SHAPE
    rng = np.random.default_rng(0)
    left = rng.standard_normal((m, k), dtype=np.float32)
    right = rng.standard_normal((k, n), dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["y"])],
        "matmul_peak",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [m, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])],
        [numpy_helper.from_array(right, "b")],
    )
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    session = ort.InferenceSession(
        helper.make_model(
            graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=PEAK_IR_VERSION
        ).SerializeToString(),
        options,
        providers=[CPU],
    )
    torch_left, torch_right = torch.from_numpy(left), torch.from_numpy(right)
    bf16_left, bf16_right = torch_left.bfloat16(), torch_right.bfloat16()
    with torch.inference_mode():
        return {
            "onnxruntime_fp32": timed_samples(lambda: session.run(None, {"a": left}), PEAK_WARMUP, PEAK_REPEATS),
            "torch_fp32": timed_samples(lambda: torch_left @ torch_right, PEAK_WARMUP, PEAK_REPEATS),
            "torch_bf16": timed_samples(lambda: bf16_left @ bf16_right, PEAK_WARMUP, PEAK_REPEATS),
        }


def summarise_peaks(samples: list[dict[str, list[float]]]) -> dict[str, dict[str, float]]:
    """GFLOP/s per kind: the median over every sample (the peak measured twice: before and after the rounds)."""
    m, k, n = PEAK_SHAPE
    flops = 2.0 * m * k * n
    peaks = {}
    for kind in samples[0]:
        seconds = np.concatenate([sample[kind] for sample in samples])
        peaks[kind] = {
            "gflop_per_s": round(flops / float(np.median(seconds)) / 1e9, 1),
            "best_gflop_per_s": round(flops / float(seconds.min()) / 1e9, 1),
            "samples": len(seconds),
        }
    return peaks


# ---------------------------------------------------------------- report


def library_versions() -> dict[str, str]:
    """Versions of the libraries the engines run on, as imported."""
    return {"torch": torch.__version__, "onnxruntime": ort.__version__, "transformers": transformers.__version__}


def describe_machine() -> dict[str, Any]:
    """CPU model and cores (and the GPU, if any) of this machine."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    machine: dict[str, Any] = {"cpu": cpu, "cores": os.cpu_count()}
    if torch.cuda.is_available():
        machine["gpu"] = torch.cuda.get_device_name()
    return machine


def percentile_ms(seconds: list[float], percent: float) -> float:
    return round(float(np.percentile(seconds, percent)) * 1000, 2)


def engine_row(
    engine: Engine,
    timings: EngineTimings,
    reference: EngineTimings,
    workload: Workload,
    peaks: dict[str, dict[str, float]],
    stamp: dict[str, Any],
) -> dict[str, Any]:
    """One engine's metrics, stamped with how and where they were measured."""
    seconds = sum(timings.batch_seconds)
    texts = sum(len(rows) for rows in workload.batches) * timings.rounds
    texts_per_s = texts / seconds
    reference_texts_per_s = texts / sum(reference.batch_seconds) if reference.rounds else float("nan")
    achieved = workload.flops * timings.rounds / timings.model_seconds / 1e9
    peak = peaks[engine.peak]["gflop_per_s"] if engine.peak else None
    agreement = float(np.mean(timings.labels == reference.labels)) if reference.labels is not None else None
    return {
        "engine": engine.name,
        "precision": engine.precision,
        "provider": engine.provider,
        **stamp,
        "texts_per_s": round(texts_per_s, 2),
        "tokens_per_s": round(workload.real_tokens * timings.rounds / seconds, 1),
        "latency_p50_ms": percentile_ms(timings.batch_seconds, 50),
        "latency_p90_ms": percentile_ms(timings.batch_seconds, 90),
        "latency_p99_ms": percentile_ms(timings.batch_seconds, 99),
        "vs_torch_fp32": round(texts_per_s / reference_texts_per_s, 3),
        "label_agreement": None if agreement is None else round(agreement, 5),
        "mflop_per_token": round(workload.flops / workload.token_slots / 1e6, 2),
        "achieved_gflop_per_s": round(achieved, 1),
        "peak_gflop_per_s": peak,
        "fraction_of_peak": None if peak is None else round(achieved / peak, 3),
        "tokenize_share": round(timings.tokenize_seconds / seconds, 4),
        "peak_rss_mb": round(timings.peak_rss_bytes / 2**20, 1),
        "rounds": timings.rounds,
        "seconds": round(seconds, 3),
        "note": engine.note,
    }


def run_benchmark(
    model: CustomModel, tokenizer: PreTrainedTokenizerBase, texts: list[str], settings: BenchmarkSettings
) -> dict[str, Any]:
    """Export, build every engine, time them in alternating rounds; returns the metrics."""
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(settings.threads)
    try:
        model.eval()
        framing = Framing.of(tokenizer, settings.length)
        workload = plan_workload(texts, tokenizer, framing, model, settings.batch)
        with tempfile.TemporaryDirectory(prefix="benchmark-", dir=settings.tmp_dir) as scratch:
            workdir = Path(scratch)
            fp32_path = export_fp32(model, workdir / "fp32")
            int8_path = converted_copy(fp32_path, workdir / "int8", "int8")
            engines = cpu_engines(model, fp32_path, int8_path, settings)
            gpu, skipped = cuda_engines(model, fp32_path, workdir, settings)
            engines += gpu
            for item in skipped:
                log.warning("%s skipped: %s", item.engine, item.reason)
            peak_samples = [matmul_peak_samples(settings.threads)]
            timings = time_engines(engines, workload, tokenizer, framing, settings)
            peak_samples.append(matmul_peak_samples(settings.threads))
    finally:
        torch.set_num_threads(previous_threads)
    peaks = summarise_peaks(peak_samples)
    machine = describe_machine()
    stamp = {
        "threads": settings.threads,
        "batch": settings.batch,
        "length": settings.length,
        "versions": library_versions(),
        "machine": machine,
    }
    reference = timings["torch-fp32"]
    return {
        "engines": [engine_row(engine, timings[engine.name], reference, workload, peaks, stamp) for engine in engines],
        "skipped": [asdict(item) for item in skipped],
        "peaks": {"shape": list(PEAK_SHAPE), "threads": settings.threads, **peaks},
        "machine": machine,
        "settings": {
            **asdict(settings),
            "texts": len(texts),
            "batches": len(workload.batches),
            "padded_lengths": workload.padded_lengths,
            "real_tokens_per_round": workload.real_tokens,
            "token_slots_per_round": workload.token_slots,
            "flops_per_round": workload.flops,
            "flops_formula": FLOPS_FORMULA,
            "model": model_summary(model),
            "versions": library_versions(),
            "rss": RSS_NOTE,
        },
    }


def model_summary(model: CustomModel) -> dict[str, Any]:
    """The model's shape, for the report."""
    config = model.config
    return {
        "model_type": config.model_type,
        "hidden_size": config.hidden_size,
        "layers": config.num_hidden_layers,
        "vocab_size": config.vocab_size,
        "labels": model.fc.out_features,
        "parameters": sum(parameter.numel() for parameter in model.parameters()),
    }


def plot_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """For `dvc plots`: texts per second by engine."""
    return [{"engine": row["engine"], "texts_per_s": row["texts_per_s"]} for row in report["engines"]]


COLUMNS = (  # header, key, format
    ("engine", "engine", "{}"),
    ("precision", "precision", "{}"),
    ("provider", "provider", "{}"),
    ("texts/s", "texts_per_s", "{:.2f}"),
    ("tokens/s", "tokens_per_s", "{:.0f}"),
    ("p50 ms", "latency_p50_ms", "{:.1f}"),
    ("p90 ms", "latency_p90_ms", "{:.1f}"),
    ("p99 ms", "latency_p99_ms", "{:.1f}"),
    ("vs fp32", "vs_torch_fp32", "{:.2f}x"),
    ("agree", "label_agreement", "{:.2%}"),
    ("GFLOP/s", "achieved_gflop_per_s", "{:.1f}"),
    ("of peak", "fraction_of_peak", "{:.0%}"),
    ("RSS MB", "peak_rss_mb", "{:.0f}"),
)


def format_report(report: dict[str, Any]) -> str:
    """A readable table with the settings, machine and peaks above it."""
    settings, peaks, machine = report["settings"], report["peaks"], report["machine"]
    versions = ", ".join(f"{name} {value}" for name, value in settings["versions"].items())
    model = settings["model"]
    flops_per_token = settings["flops_per_round"] / settings["token_slots_per_round"] / 1e6
    gpu = f", GPU {machine['gpu']}" if "gpu" in machine else ""
    lines = [
        f"benchmark --size {settings['size']}: {model['model_type']} {model['parameters'] / 1e6:.1f}M parameters, "
        f"{settings['texts']} texts in {settings['batches']} batches of {settings['batch']} (dataset order, "
        f"truncated to {settings['length']} tokens; {settings['real_tokens_per_round']} real tokens in "
        f"{settings['token_slots_per_round']} padded slots per round), {settings['rounds']} timed rounds after "
        f"{settings['warmup']} warm-up, alternating; {settings['threads']} threads",
        f"machine: {machine['cpu']}, {machine['cores']} cores{gpu}; {versions}",
        f"matmul peak {PEAK_SHAPE[0]}x{PEAK_SHAPE[1]} x {PEAK_SHAPE[1]}x{PEAK_SHAPE[2]} (median of "
        f"{peaks['onnxruntime_fp32']['samples']}): onnxruntime fp32 {peaks['onnxruntime_fp32']['gflop_per_s']} "
        f"GFLOP/s, torch fp32 {peaks['torch_fp32']['gflop_per_s']}, torch bf16 {peaks['torch_bf16']['gflop_per_s']}",
        f"model: {flops_per_token:.1f} MFLOP per padded token slot ({settings['flops_formula']}); "
        "GFLOP/s over model time, tokenisation excluded",
        f"RSS MB: {RSS_NOTE}",
        "",
    ]
    cells = [[header for header, _, _ in COLUMNS]]
    for row in report["engines"]:
        cells.append(["-" if row[key] is None else form.format(row[key]) for _, key, form in COLUMNS])
    widths = [max(len(line[index]) for line in cells) for index in range(len(COLUMNS))]
    for line in cells:
        lines.append(
            "  ".join(
                cell.ljust(width) if index < 3 else cell.rjust(width)
                for index, (cell, width) in enumerate(zip(line, widths, strict=True))
            )
        )
    lines.extend(f"skipped {item['engine']}: {item['reason']}" for item in report["skipped"])
    return "\n".join(lines)


# ---------------------------------------------------------------- CLI


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m stages.benchmark", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--size",
        choices=SIZES,
        default="demo",
        help="demo: models/model (model.output); base: random mdeberta-v3-base shape",
    )
    parser.add_argument("--rows", type=positive, default=64, help="non-empty dataset rows, in dataset order")
    parser.add_argument("--batch", type=positive, default=8, help="rows per batch")
    parser.add_argument("--length", type=positive, default=128, help="tokens per row at most, special tokens included")
    parser.add_argument("--rounds", type=positive, default=3, help="timed rounds per engine")
    parser.add_argument("--warmup", type=non_negative, default=1, help="untimed rounds per engine first")
    parser.add_argument(
        "--threads", type=positive, default=len(os.sched_getaffinity(0)), help="torch and onnxruntime intra-op threads"
    )
    parser.add_argument("--graph-optimization-level", choices=("disable", "basic", "extended", "all"), default="all")
    parser.add_argument("--tmp-dir", default=None, help="where the ONNX models are exported (default: the system's)")
    parser.add_argument("--metrics", type=Path, default=Path("metrics/benchmark.json"))
    parser.add_argument("--plots", type=Path, default=Path("metrics/benchmark_plots.json"))
    return parser.parse_args(argv)


def positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value} must be >= 1")
    return number


def non_negative(value: str) -> int:
    number = int(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"{value} must be >= 0")
    return number


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    params = load_params()
    settings = BenchmarkSettings(
        size=args.size,
        rows=args.rows,
        batch=args.batch,
        length=args.length,
        rounds=args.rounds,
        warmup=args.warmup,
        threads=args.threads,
        graph_optimization_level=args.graph_optimization_level,
        tmp_dir=args.tmp_dir,
    )
    if settings.size == "demo":
        model, tokenizer = load_demo_model(Path(params.model.output))
    else:
        model, (_, tokenizer) = build_base_model(), load_backbone(params.model)
    texts = read_texts(Path(params.infer.input), params.infer.text_column, params.infer.id_column, settings.rows)
    report = run_benchmark(model, tokenizer, texts, settings)
    print(format_report(report))
    write_json(args.metrics, report)
    write_json(args.plots, plot_rows(report))


if __name__ == "__main__":
    run_stage(main)
