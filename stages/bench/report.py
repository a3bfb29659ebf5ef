"""The benchmark's report: one row per variant, stamped with how and where it was measured, and a table."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from stages.bench.harness import BenchmarkSettings, VariantTimings, Workload
from stages.bench.peaks import PEAK_KINDS, PEAK_SHAPE
from stages.bench.variants import Variant
from stages.core.cpu import describe_cpu
from stages.graph.metadata import library_versions
from stages.model.custom_head import TokenModel

RSS_NOTE = "process RSS sampled after each of the variant's rounds, max; it counts every variant loaded"


def describe_machine() -> dict[str, Any]:
    """CPU model, the instruction sets that decide int8 and bf16 speed, cores (and the GPU, if any)."""
    machine: dict[str, Any] = {"cpu": describe_cpu(), "cores": os.cpu_count()}
    if torch.cuda.is_available():
        machine["gpu"] = torch.cuda.get_device_name()
    return machine


def percentile_ms(seconds: list[float], percent: float) -> float:
    return round(float(np.percentile(seconds, percent)) * 1000, 2)


def variant_row(
    variant: Variant,
    timings: VariantTimings,
    reference: VariantTimings,
    workload: Workload,
    peaks: dict[str, dict[str, float]],
    stamp: dict[str, Any],
) -> dict[str, Any]:
    """One variant's metrics, stamped with how and where they were measured."""
    seconds = sum(timings.batch_seconds)
    texts = sum(len(rows) for rows in workload.batches) * timings.rounds
    texts_per_s = texts / seconds
    reference_texts_per_s = texts / sum(reference.batch_seconds) if reference.rounds else float("nan")
    achieved = workload.flops * timings.rounds / timings.model_seconds / 1e9
    peak = peaks[variant.peak]["gflop_per_s"] if variant.peak else None
    agreement = float(np.mean(timings.labels == reference.labels)) if reference.labels is not None else None
    return {
        "variant": variant.name,
        "precision": variant.precision,
        "provider": variant.provider,
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
        "peak_rss_mb": timings.peak_rss_mb,
        "rounds": timings.rounds,
        "seconds": round(seconds, 3),
        "note": variant.note,
    }


def variant_rows(
    variants: list[Variant],
    timings: dict[str, VariantTimings],
    workload: Workload,
    peaks: dict[str, dict[str, float]],
    settings: BenchmarkSettings,
) -> list[dict[str, Any]]:
    """Every variant's row, each against torch fp32 (the reference variant)."""
    stamp = {
        "threads": settings.threads,
        "batch": settings.batch,
        "length": settings.length,
        "versions": library_versions(),
        "machine": describe_machine(),
    }
    reference = timings["torch-fp32"]
    return [variant_row(variant, timings[variant.name], reference, workload, peaks, stamp) for variant in variants]


def model_summary(model: TokenModel) -> dict[str, Any]:
    """The model's shape, for the report."""
    config = model.config
    return {
        "model_type": config.model_type,
        "hidden_size": config.hidden_size,
        "layers": config.num_hidden_layers,
        "vocab_size": config.vocab_size,
        "labels": model.num_labels,
        "parameters": sum(parameter.numel() for parameter in model.parameters()),
    }


def summary(report: dict[str, Any]) -> dict[str, Any]:
    """The metrics file `dvc exp show` lists: texts/s per serving variant (everything else is in the report)."""
    return {row["variant"]: row["texts_per_s"] for row in report["variants"]}


def plot_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """For `dvc plots`: texts per second by variant."""
    return [{"variant": row["variant"], "texts_per_s": row["texts_per_s"]} for row in report["variants"]]


COLUMNS = (  # header, key, format
    ("variant", "variant", "{}"),
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
        f"{peaks['onnxruntime_fp32']['samples']}, GFLOP/s, int8 fp32-equivalent): "
        + ", ".join(f"{kind.replace('_', ' ')} {peaks[kind]['gflop_per_s']}" for kind in PEAK_KINDS if kind in peaks),
        f"model: {flops_per_token:.1f} MFLOP per padded token slot ({settings['flops_formula']}); "
        "GFLOP/s over model time, tokenisation excluded",
        f"RSS MB: {RSS_NOTE}",
        "",
    ]
    cells = [[header for header, _, _ in COLUMNS]]
    for row in report["variants"]:
        cells.append(["-" if row[key] is None else form.format(row[key]) for _, key, form in COLUMNS])
    widths = [max(len(line[index]) for line in cells) for index in range(len(COLUMNS))]
    for line in cells:
        lines.append(
            "  ".join(
                cell.ljust(width) if index < 3 else cell.rjust(width)
                for index, (cell, width) in enumerate(zip(line, widths, strict=True))
            )
        )
    lines.extend(f"skipped {item['variant']}: {item['reason']}" for item in report["skipped"])
    return "\n".join(lines)
