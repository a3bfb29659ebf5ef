"""The served precisions that `tools.bench.end_to_end` measures, each exported into its own `infer` directory.

fp32, full int8 (every weight MatMul and the word embedding quantized) and fp16 are exported in this
process; accuracy-aware int8 by the real `python -m stages.export`, whose search reads the parity rows
from `parity.input` (set to the benchmark's sampled rows) exactly as in the pipeline, so its time is the stage's.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

import stages
from stages.core.params import Params, load_params
from stages.graph.metadata import SIDECAR_FILE
from stages.graph.onnx_dir import write_onnx_dir
from stages.graph.runners import openvino_serving

PROJECT_ROOT = Path(stages.__file__).resolve().parents[1]
ACCURACY_AWARE = "int8 accuracy-aware"
OPENVINO = "fp32 export, OpenVINO"  # the fp32 export served by OpenVINO at its precision for this CPU
PEAK_OF_EXPORT = {  # served precision -> the matmul peak its limit is computed at
    "torch fp32": "torch_fp32",
    "torch bf16": "torch_bf16",
    "fp32": "onnxruntime_fp32",
    "int8 full": "onnxruntime_int8",
    ACCURACY_AWARE: "onnxruntime_int8",
    "fp16": None,
    f"{OPENVINO} f32": "onnxruntime_fp32",
    f"{OPENVINO} bf16": "torch_bf16",  # bf16 matmuls: torch's bf16 peak is the one measured here
}


@dataclasses.dataclass
class Run:
    """One engine's runs: seconds per run (reading to last output), what its last run reported, how long its
    export took, and the one line an export that refused gave (then it is not run)."""

    name: str
    precision: str
    workdir: Path | None = None
    seconds: list[float] = dataclasses.field(default_factory=list)
    report: dict = dataclasses.field(default_factory=dict)
    export_seconds: float | None = None
    conversion: dict = dataclasses.field(default_factory=dict)
    refused: str | None = None

    @property
    def median_seconds(self) -> float:
        return statistics.median(self.seconds)


def subprocess_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}


def infer_workdir(raw_params: dict, onnx_dir: Path, dataset: Path, workdir: Path, threads: int) -> Path:
    """A directory with the user's params, pointed at one export, the sampled rows and local outputs; no score
    store (a benchmark times scoring: a second round must not read the first one's scores back), and no parity
    verdict (it times a model it exported itself: scoring is unverified, as its metrics say). A long text is
    truncated, as the hand-written loop does, so that every run scores the same tokens."""
    params = json.loads(json.dumps(raw_params))
    params["export"]["output"] = str(onnx_dir)
    params["runtime"]["intra_op_num_threads"] = threads
    params["infer"].update(
        input=str(dataset), output="predictions.parquet", metrics="infer.json", engine="local", reuse=False,
        allow_unverified=True, long_text="truncate",
    )  # fmt: skip
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True), encoding="utf-8")
    return workdir


def export_served(
    served: str, params: Params, raw_params: dict, model_dir: Path, dataset: Path, work: Path, threads: int
) -> Run:
    """Export the model in `model_dir` at served precision `served` into its own infer directory under `work`, timed."""
    run = Run("infer", served, workdir=work / served.replace(" ", "-"))
    onnx_dir = run.workdir / "onnx"
    started = time.perf_counter()
    if served == ACCURACY_AWARE:
        stage_params = json.loads(json.dumps(raw_params))
        stage_params["model"]["output"] = str(model_dir.resolve())
        stage_params["export"]["precision"] = "int8"
        stage_params["parity"]["input"] = str(dataset)  # the search judges mixes on the benchmark's own rows
        infer_workdir(stage_params, onnx_dir, dataset, run.workdir, threads)
        command = [sys.executable, "-m", "stages.export"]
        result = subprocess.run(command, cwd=run.workdir, env=subprocess_env(), capture_output=True, text=True)
        if result.returncode == 1:  # a failed check: no mix passes the gate
            run.refused = result.stderr.strip().splitlines()[-1]
        elif result.returncode:
            sys.stderr.write(result.stderr)
            result.check_returncode()
    else:
        export = dataclasses.replace(params.export, precision=served.split()[0], output=str(onnx_dir))
        write_onnx_dir(model_dir, export, onnx_dir)
        infer_workdir(raw_params, onnx_dir, dataset, run.workdir, threads)
    run.export_seconds = time.perf_counter() - started
    if run.refused is None:
        run.conversion = json.loads((onnx_dir / SIDECAR_FILE).read_text(encoding="utf-8"))["precision_conversion"]
    return run


def openvino_served(fp32: Run, raw_params: dict, dataset: Path, work: Path, threads: int) -> Run:
    """The fp32 export's infer directory again, served by OpenVINO (bf16 where its CPU plugin reports BF16)."""
    hint = openvino_serving("fp32", load_params().runtime).openvino_hint
    run = Run("infer", f"{OPENVINO} {hint}", workdir=work / f"openvino-{hint}", export_seconds=fp32.export_seconds)
    served = json.loads(json.dumps(raw_params))
    served["runtime"].update(backend="openvino", openvino_precision=hint)
    infer_workdir(served, fp32.workdir / "onnx", dataset, run.workdir, threads)
    return run


def run_infer(run: Run) -> None:
    """`python -m stages.infer` in the run's directory, whose params.yaml points at its model and outputs."""
    (run.workdir / "predictions.parquet").unlink(missing_ok=True)
    subprocess.run([sys.executable, "-m", "stages.infer"], cwd=run.workdir, env=subprocess_env(), check=True)
    run.report = json.loads((run.workdir / "infer.json").read_text(encoding="utf-8"))
    run.seconds.append(run.report["seconds"])


def mix_summary(conversion: dict) -> str:
    """What an int8 export quantized (smoothing, weight MatMuls left float) and, if it searched, how many trials."""
    if not conversion:
        return "-"
    smoothing = "smoothed, " if conversion.get("smoothing") else ""
    summary = f"{smoothing}{conversion['float_weight_matmuls']} of {conversion['weight_matmuls']} MatMuls float"
    if "trials" in conversion:
        summary += f"; search: {len(conversion['trials'])} trials"
    return summary
