"""The exported model directory: the ONNX graph in the served precision, stamped with its metadata, beside the
tokenizer and config it is fed and read with, and a CRF head's scores (`crf.json`: the graph gives the emissions, infer
decodes them). The graph is exported from the normalised model, or adopted from `export.onnx_file`. The export stage
and the benchmarks both write it here."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import onnx

from stages.core.atomic import atomic_directory
from stages.core.params import ExportParams
from stages.graph.adopt import adopt_onnx
from stages.graph.exporter import export_graph
from stages.graph.layer_map import compared_modules, layer_map
from stages.graph.metadata import CRF_FILE, ONNX_FILE, SIDECAR_FILE, VITERBI, stamp_metadata
from stages.graph.precision import Int8Mixer, apply_precision, full_int8
from stages.graph.rewrites import LEAN_ATTENTION, has_disentangled_attention
from stages.model.crf import crf_scores, find_crf
from stages.model.directory import HEAD_FILE, WEIGHTS_FILE, HeadSpec, load_model_dir

ServingChooser = Callable[[Path, dict[str, Any]], dict[str, Any]]  # model file, metadata -> choice
NOT_COPIED = (HEAD_FILE, WEIGHTS_FILE)  # the torch side's files; everything else (tokenizer, config) travels
SERVING_CHOICE = ("backend", "precision", "cpu")  # what `auto` chose, which parity and infer serve: in model.json
TIMINGS = ("search_seconds",)  # the precision conversion's: in the export's report (and the returned metadata)


def write_onnx_dir(
    model_dir: Path,
    params: ExportParams,
    target: Path,
    int8_mixer: Int8Mixer = full_int8,
    choose_serving: ServingChooser | None = None,
) -> dict[str, Any]:
    """Export the normalised model in `model_dir` into `target` (atomically); returns the metadata written.

    An int8 model is mixed by `int8_mixer`: every weight MatMul quantized by default (the benchmarks'
    full int8); the export stage passes the mixer that keeps float what the parity gate needs. With
    `choose_serving` (`runtime.backend: auto`), the finished model's measured serving choice is `serving`."""
    model, spec = load_model_dir(model_dir)
    with atomic_directory(target) as staging:
        if params.onnx_file is None:
            rewrites = export_graph(model, params, staging / ONNX_FILE)
            if has_disentangled_attention(model):
                rewrites.insert(0, LEAN_ATTENTION)
            origin = {"exporter": params.exporter}
        else:
            rewrites = []  # a file is served as it was exported
            origin = {
                "exporter": "onnx_file",
                **adopt_onnx(Path(params.onnx_file), staging / ONNX_FILE, spec, params.precision),
            }
        layers = layer_map(onnx.load(str(staging / ONNX_FILE), load_external_data=False), compared_modules(model))
        if (crf := find_crf(model, spec.num_labels)) is not None:  # beside the graph, for the int8 search to decode
            (staging / CRF_FILE).write_text(json.dumps(crf_scores(model, crf)) + "\n", encoding="utf-8")
        served_as_given = origin.get("source_precision", "fp32") == params.precision
        conversion = (
            {}
            if served_as_given
            else apply_precision(staging / ONNX_FILE, params.precision, params.int8_target, int8_mixer)
        )
        timings = {key: conversion.pop(key) for key in TIMINGS if key in conversion}  # not in the model's bytes
        facts = {
            **origin,
            "model_type": model.config.model_type,
            "labels": list(spec.labels),
            "max_length": spec.max_length,
            "truncation_side": spec.truncation_side,
            "source_checkpoint": spec.source_checkpoint,
            "source_sha256": spec.source_sha256,
            "precision_conversion": conversion,
            "rewrites": rewrites,
            "layer_map": [entry.to_json() for entry in layers],  # made before a precision conversion renames tensors
            **head_facts(spec, crf),
        }
        metadata = stamp_metadata(staging / ONNX_FILE, params, spec.input_names, facts)
        for item in model_dir.iterdir():
            if item.is_file() and item.name not in NOT_COPIED:
                shutil.copy2(item, staging / item.name)
        if choose_serving is not None:
            metadata["serving"] = choose_serving(staging / ONNX_FILE, metadata)
        sidecar = json.dumps(self_description(metadata), indent=2, ensure_ascii=False)
        (staging / SIDECAR_FILE).write_text(sidecar + "\n", encoding="utf-8")
    return {**metadata, "timings": timings}


def head_facts(spec: HeadSpec, crf: str | None) -> dict[str, Any]:
    """What `model.json` says of your own head (`model.head`: its class, arguments and code's digest) and of a CRF's
    decoding; nothing for the seed's head, whose labels are each token's best score."""
    facts: dict[str, Any] = {}
    if spec.head is not None:
        facts["head"] = {"class": spec.head, "args": spec.head_args, "code_sha256": spec.head_code_sha256}
    if crf is not None:
        facts.update(decoding=VITERBI, crf=crf)
    return facts


def self_description(metadata: dict[str, Any]) -> dict[str, Any]:
    """What `model.json` holds: the metadata but what was measured while exporting (`measured`), which differs from
    run to run, so that the same inputs export the same bytes (and the score store's key, which hashes every file
    of the directory, stays)."""
    described = {key: value for key, value in metadata.items() if key != "timings"}
    if "serving" in described:
        described["serving"] = {key: described["serving"][key] for key in SERVING_CHOICE}
    return described


def measured(metadata: dict[str, Any]) -> dict[str, Any]:
    """What the export measured (the int8 search's seconds, `runtime.backend: auto`'s timings and reasons): the
    export stage's report, not the model's files."""
    return {"serving": metadata.get("serving"), **metadata.get("timings", {})}
