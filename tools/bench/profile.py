"""Where `infer`'s model time goes: onnxruntime's profiler (or OpenVINO's per-node counters) over the batches `infer`
would run, per op type and per batch shape, with the GEMMs' achieved GFLOP/s against the matmul peaks measured in
the same run.

    python -m tools.bench.profile --size base --rows 300            # mdeberta-v3-base shape, int8 and fp32
    python -m tools.bench.profile --size demo --precisions fp32     # the pipeline's own model
    python -m tools.bench.profile --size base --precisions fp32 --runtime openvino   # bf16 where the CPU has it

The rows are read, tokenised, windowed and batched exactly as `infer` does with params.yaml's `infer`
settings (blocks and batches cut where the content says for a model whose scores depend on their batch, budgets,
long-text policy), for the runtime that serves; each batch runs once in a profiled session with the `runtime`
settings. A GEMM's FLOPs come from the shapes onnxruntime's profiler records (2 x output elements x the
contracted dimension); the int8 weight GEMMs are set against the int8 matmul peak, the float ones (fp32 weights,
and the attention's activation x activation products, which stay fp32 in an int8 model) against the fp32 peak.
OpenVINO serves at the precision `runtime.openvino_precision` gives it; its counters carry no shapes, so its op
types and batch shapes come without GEMM FLOPs.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from stages.bench.peaks import matmul_peak_samples, summarise_peaks
from stages.core.cpu import describe_cpu
from stages.core.params import Params, load_params
from stages.core.runner import run_stage
from stages.graph.metadata import ONNX_FILE
from stages.graph.onnx_dir import write_onnx_dir
from stages.graph.runners import input_types, openvino_serving
from stages.graph.session import build_feed, create_session
from stages.scoring.batching import pad_batch
from stages.scoring.prepare import plan_block
from stages.scoring.reuse.plan import scoring_blocks
from stages.scoring.served import ServedModel
from tools.bench.end_to_end import first_rows_file
from tools.bench.settings import Subject
from tools.bench.subjects import normalised_model
from tools.cli import option, parse

INT8_GEMMS = ("MatMulInteger", "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "QGemm")  # int8 weights
FLOAT_GEMMS = ("MatMul", "FusedMatMul", "Gemm")  # fp32 weights, and the attention's activation x activation products
PEAK_OF_GEMM = {"int8": "onnxruntime_int8", "float": "onnxruntime_fp32"}


def infer_batches(params: Params, served: ServedModel, dataset: Path) -> list[dict[str, np.ndarray]]:
    """The padded batches `infer` runs on `dataset` (no score store), block by block, in its order."""
    infer = dataclasses.replace(params.infer, input=str(dataset), text_column="text", id_column="id")
    params = dataclasses.replace(params, infer=infer)
    batches = []
    for block in scoring_blocks(params):
        prepared = plan_block(served, block, params.infer, None)
        windows = prepared.windows
        batches += [
            pad_batch([windows[index].input_ids for index in batch], served.pad_id) for batch in prepared.batches
        ]
    return batches


def gemm_flops(args: dict) -> float:
    """2 x output elements x the contracted dimension, from the shapes onnxruntime's profiler records."""
    shapes = [next(iter(entry.values())) for entry in args.get("input_type_shape", [])]
    output = next(iter(args["output_type_shape"][0].values()))
    first = shapes[0]
    contracted = first[-1] if len(first) < 2 or first[-2] == output[-2] else first[-2]  # a transposed A is [K, M]
    return 2.0 * float(np.prod(output)) * contracted


def profiled_run(onnx_path: Path, params: Params, batches: list[dict[str, np.ndarray]], scratch: Path) -> list[dict]:
    """Each batch run once in a profiled session: its shape, seconds, and per op type seconds and GEMM FLOPs."""
    session = create_session(
        onnx_path, params.runtime, profile_prefix=str(scratch / f"profile-{onnx_path.parent.name}")
    )
    for arrays in batches:
        session.run(None, build_feed(session, arrays))
    events = json.loads(Path(session.end_profiling()).read_text(encoding="utf-8"))
    runs = [event for event in events if event.get("cat") == "Session" and event["name"] == "model_run"]
    results = [{"shape": arrays["input_ids"].shape, "seconds": run["dur"] / 1e6, "ops": defaultdict(float),
                "gemm_flops": defaultdict(float), "gemm_seconds": defaultdict(float)}
               for arrays, run in zip(batches, runs, strict=True)]  # fmt: skip
    starts = np.array([run["ts"] for run in runs])
    for event in events:
        if event.get("cat") != "Node" or not event["name"].endswith("_kernel_time"):
            continue
        result = results[int(np.searchsorted(starts, event["ts"], side="right")) - 1]
        op = event["args"]["op_name"]
        result["ops"][op] += event["dur"] / 1e6
        kind = "int8" if op in INT8_GEMMS else "float" if op in FLOAT_GEMMS else None
        if kind is not None:
            result["gemm_flops"][kind] += gemm_flops(event["args"])
            result["gemm_seconds"][kind] += event["dur"] / 1e6
    return results


def openvino_profiled_run(
    onnx_path: Path, params: Params, batches: list[dict[str, np.ndarray]], hint: str
) -> list[dict]:
    """Each batch run once by OpenVINO's CPU plugin at `hint` with its per-node counters: its shape, per node type
    seconds, and their sum as its seconds (the counters can add up to more than the wall time, so shares are of the
    time they count)."""
    import openvino as ov

    config = {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY", "PERF_COUNT": True}
    if params.runtime.intra_op_num_threads:
        config["INFERENCE_NUM_THREADS"] = params.runtime.intra_op_num_threads
    compiled = ov.Core().compile_model(str(onnx_path), "CPU", config)
    request = compiled.create_infer_request()
    dtypes, results = input_types(compiled), []
    for arrays in batches:
        request.infer([np.ascontiguousarray(arrays[name], dtype=dtype) for name, dtype in dtypes.items()])
        ops: dict[str, float] = defaultdict(float)
        for node in request.profiling_info:
            ops[node.node_type] += node.real_time.total_seconds()
        results.append({"shape": arrays["input_ids"].shape, "seconds": sum(ops.values()), "ops": ops,
                        "gemm_flops": {}, "gemm_seconds": {}})  # fmt: skip
    return results


def summarise(results: list[dict], peaks: dict[str, float]) -> dict:
    """Per op type: seconds and share of model time. Per batch shape: batches, seconds, and for the int8 and the
    float GEMMs their share of the time, achieved GFLOP/s and fraction of the matmul peak of their kind."""
    total = sum(result["seconds"] for result in results)
    ops: dict[str, float] = defaultdict(float)
    shapes: dict[str, dict] = {}
    for result in sorted(results, key=lambda result: -result["seconds"]):
        for op, seconds in result["ops"].items():
            ops[op] += seconds
        rows, length = result["shape"]
        entry = shapes.setdefault(
            f"{rows}x{length}",
            {"batches": 0, "seconds": 0.0, "flops": defaultdict(float), "gemm_seconds": defaultdict(float)},
        )
        entry["batches"] += 1
        entry["seconds"] += result["seconds"]
        for kind in result["gemm_flops"]:
            entry["flops"][kind] += result["gemm_flops"][kind]
            entry["gemm_seconds"][kind] += result["gemm_seconds"][kind]
    by_shape = {}
    for shape, entry in shapes.items():
        gemms = {kind: {"share": entry["gemm_seconds"][kind] / entry["seconds"],
                        "gflop_per_s": entry["flops"][kind] / entry["gemm_seconds"][kind] / 1e9,
                        "of_peak": entry["flops"][kind] / entry["gemm_seconds"][kind] / 1e9 / peaks[kind]}
                 for kind in entry["flops"] if entry["gemm_seconds"][kind] > 0}  # fmt: skip
        by_shape[shape] = {"batches": entry["batches"], "seconds": entry["seconds"], "gemms": gemms}
    return {
        "model_seconds": total,
        "ops": {
            op: {"seconds": seconds, "share": seconds / total}
            for op, seconds in sorted(ops.items(), key=lambda item: -item[1])
        },
        "shapes": by_shape,
        "peaks": peaks,
    }


def format_profile(precision: str, summary: dict, top: int) -> str:
    peaks = ", ".join(f"{kind} {value}" for kind, value in summary["peaks"].items())
    lines = [f"{precision}: model time {summary['model_seconds']:.2f} s; matmul peaks (GFLOP/s) {peaks}"]
    lines += ["  op type                    seconds   share"]
    lines += [
        f"  {op:<24} {entry['seconds']:>9.3f} {entry['share']:>7.1%}"
        for op, entry in list(summary["ops"].items())[:top]
    ]
    lines += ["  batch shape  batches  seconds   GEMMs: share of time, GFLOP/s, of their peak"]
    for shape, entry in list(summary["shapes"].items())[:top]:
        gemms = "   ".join(
            f"{kind} {g['share']:.0%} {g['gflop_per_s']:.0f} {g['of_peak']:.0%}" for kind, g in entry["gemms"].items()
        )
        lines.append(f"  {shape:<12} {entry['batches']:>7} {entry['seconds']:>8.3f}   {gemms}")
    return "\n".join(lines)


@dataclass(frozen=True)
class Profile(Subject):
    """The profiler's settings."""

    rows: int = option(300, "the dataset's first rows")
    precisions: tuple[Literal["int8", "fp32", "fp16"], ...] = option(("int8", "fp32"), "served precisions to profile")
    runtime: Literal["onnxruntime", "openvino"] = option("onnxruntime", "what serves the exports, profiled")
    top: int = option(12, "op types and batch shapes shown")
    metrics: Path | None = option(None, "also write the profile as JSON here")


def main(argv: Sequence[str] | None = None) -> None:
    args = parse(Profile, argv, __doc__)
    params = load_params()
    runtime = dataclasses.replace(params.runtime.on_cpu(args.threads), backend=args.runtime, openvino_cache=None)
    params = dataclasses.replace(params, runtime=runtime)
    peaks = summarise_peaks([matmul_peak_samples(runtime)])
    report = {"cpu": describe_cpu(), "threads": runtime.intra_op_num_threads, "rows": args.rows, "size": args.size}
    with tempfile.TemporaryDirectory(prefix="profile-") as scratch:
        work = Path(scratch)
        dataset = first_rows_file(args.dataset or params.infer.input, params.infer.text_column, params.infer.id_column,
                              args.rows, work / "rows.parquet")  # fmt: skip
        model_dir, _ = normalised_model(args.size, params, work / "model")
        for precision in args.precisions:
            onnx_dir = work / precision
            write_onnx_dir(
                model_dir, dataclasses.replace(params.export, precision=precision, output=str(onnx_dir)), onnx_dir
            )
            served = ServedModel.load(onnx_dir, runtime)  # plans the batches as `infer` with this runtime does
            batches = infer_batches(params, served, dataset)
            if args.runtime == "openvino":
                hint = openvino_serving(precision, runtime).openvino_hint
                name, results = (
                    f"{precision} on OpenVINO {hint}",
                    openvino_profiled_run(onnx_dir / ONNX_FILE, params, batches, hint),
                )
            else:
                name, results = precision, profiled_run(onnx_dir / ONNX_FILE, params, batches, work)
            report[name] = summarise(results, {kind: peaks[key]["gflop_per_s"] for kind, key in PEAK_OF_GEMM.items()})
            print(format_profile(name, report[name], args.top))
    print(f"{args.rows} rows, {report['threads'] or 'all'} threads on {report['cpu']}")
    if args.metrics:
        args.metrics.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    run_stage(main)
