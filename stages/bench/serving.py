"""The serving benchmark: export the model under test, build every variant, time them, and report."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from stages.bench.flops import FLOPS_FORMULA
from stages.bench.harness import BenchmarkSettings, plan_workload, time_engines
from stages.bench.openvino import openvino_variants
from stages.bench.peaks import PEAK_SHAPE, matmul_peak_samples, summarise_peaks
from stages.bench.report import RSS_NOTE, describe_machine, model_summary, variant_rows
from stages.bench.subject import converted_copy, export_fp32
from stages.bench.variants import Skipped, Variant, cpu_variants, cuda_variants
from stages.graph.metadata import library_versions
from stages.graph.precision import resolve_int8_target
from stages.model.custom_head import TokenModel
from stages.scoring.tokens import TextTokenizer

log = logging.getLogger(__name__)

INT8_TARGETS = ("vnni", "no_vnni")  # both, to show what 7-bit weights cost and save on this CPU


def build_engines(model: TokenModel, workdir: Path, settings: BenchmarkSettings) -> tuple[list[Variant], list[Skipped]]:
    """Export the fp32 model into `workdir`, make its int8 (and on a GPU fp16) variants, and load every variant."""
    runtime = settings.runtime
    fp32_path = export_fp32(model, workdir / "fp32", settings.export)
    int8_paths = {target: converted_copy(fp32_path, workdir / target, "int8", target) for target in INT8_TARGETS}
    variants, skipped = cpu_variants(model, fp32_path, int8_paths, runtime)
    peers, peers_skipped = openvino_variants(fp32_path, int8_paths[resolve_int8_target("auto")], settings.threads)
    variants, skipped = variants + peers, skipped + peers_skipped
    gpu, gpu_skipped = cuda_variants(model, fp32_path, workdir, runtime)
    for item in skipped + gpu_skipped:
        log.warning("%s skipped: %s", item.variant, item.reason)
    return variants + gpu, skipped + gpu_skipped


def run_benchmark(
    model: TokenModel, tokenizer: TextTokenizer, texts: list[str], settings: BenchmarkSettings
) -> dict[str, Any]:
    """Export, build every variant, time them in alternating rounds between two peak measurements; the report."""
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(settings.threads)
    try:
        model.eval()
        framing = tokenizer.framing(settings.length, settings.truncation_side)
        workload = plan_workload(texts, tokenizer, framing, model, settings.batch)
        with tempfile.TemporaryDirectory(prefix="benchmark-", dir=settings.tmp_dir) as scratch:
            variants, skipped = build_engines(model, Path(scratch), settings)
            peak_samples = [matmul_peak_samples(settings.runtime)]
            timings = time_engines(variants, workload, tokenizer, framing, settings)
            peak_samples.append(matmul_peak_samples(settings.runtime))
    finally:
        torch.set_num_threads(previous_threads)
    peaks = summarise_peaks(peak_samples)
    rows = variant_rows(variants, timings, workload, peaks, settings)
    return {
        "variants": rows,
        "skipped": [asdict(item) for item in skipped],
        "peaks": {"shape": list(PEAK_SHAPE), "threads": settings.threads, **peaks},
        "machine": describe_machine(),
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
