"""`params.yaml` as typed, frozen, validated objects; each key's meaning is its field's string (docs/params.md). The
`benchmark` and `annotations` sections live in `stages.core.benchmark_params` and `stages.core.annotation_params`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from stages.core.annotation_params import AnnotationParams
from stages.core.benchmark_params import BenchmarkParams
from stages.core.errors import UserError
from stages.core.parsing import parse_file, setting
from stages.core.parsing import value_range as _range

PARAMS_FILE = Path("params.yaml")
Provider = Literal["CUDAExecutionProvider", "CPUExecutionProvider"]


@dataclass(frozen=True)
class ModelParams:
    """How to build the model and feed it (stage `load_checkpoint`)."""

    backbone: str
    """A local directory, or a Hugging Face id in the local cache (`HF_HOME`; offline: `HF_HUB_OFFLINE=1`), with
    `config.json` and a tokenizer in any hub layout (`tokenizer.json`, `spm.model`, `sentencepiece.bpe.model`,
    `vocab.txt`, `vocab.json` + `merges.txt`); only its config and tokenizer are read."""
    checkpoint: str
    """The fine-tuned weights: a `.ckpt`/`.pt`/`.bin` file (a `state_dict`, or a dict holding one: Lightning,
    `{"model_state_dict": ...}`), a `.safetensors` file, or a `save_pretrained` directory (a Trainer's output;
    sharded too). The encoder is found under any prefix, the head as the one `Linear(hidden -> labels)` (or as
    `head`'s tensors, by their names)."""
    num_labels: int = field(metadata=_range(1))
    """The head's label count; a checkpoint with another is an error that names the count it has."""
    labels: tuple[str, ...] | None = None
    """One name per label id, or `null` for `LABEL_<i>`; a Trainer directory's `id2label` must agree."""
    classifier_dropout: float = setting(0.2, 0.0, 1.0)
    """The head's dropout (inactive in eval; kept in the head spec)."""
    max_length: int = setting(512, 2)
    """Tokens per window, special tokens included; at most what the backbone's positions embed."""
    truncation_side: Literal["left", "right"] = "left"
    """Which end of a long text `truncate` keeps: `left` keeps the end, as the seed notes do."""
    trust_remote_code: bool = False
    """Run code shipped with the backbone (off; a warning when on)."""
    head: str | None = None
    """`null`: the seed's head, one `Linear(hidden -> labels)`; or your head's class, `module:Class`, imported from
    `head_code` and run (a warning says so): it takes every hidden state and the attention mask and returns per-token
    scores `[batch, sequence, labels]` (a CRF head: its emissions; docs/heads.md)."""
    head_args: dict[str, Any] | None = None
    """The keyword arguments `head`'s class is built with, e.g. `{hidden_size: 768, num_labels: 9}`; `null`: none."""
    head_code: str = "heads"
    """The directory `head` is imported from (first on the import path); a dep of `load_checkpoint`, so an edit reruns
    what it shapes. `heads/` ships heads of common shapes (docs/heads.md)."""
    seed: int = 0
    """Initialises the weights the checkpoint does not hold (an unused pooler); recorded in `head.json`."""
    output: str = "models/model"
    """The normalised model directory (a Hugging Face token-classification directory; with `head`, the project's
    weight names and `head.json` saying what the model is)."""

    def __post_init__(self) -> None:
        if self.labels is not None and len(self.labels) != self.num_labels:
            raise UserError(
                f"model.labels has {len(self.labels)} names but model.num_labels is {self.num_labels}; "
                "give one name per label or set model.labels: null"
            )

    @property
    def label_names(self) -> tuple[str, ...]:
        """The label names, `LABEL_<i>` where `model.labels` is null."""
        return self.labels or tuple(f"LABEL_{index}" for index in range(self.num_labels))


@dataclass(frozen=True)
class ExportParams:
    """How to export the ONNX model (stage `export`)."""

    exporter: Literal["dynamo", "torchscript"] = "dynamo"
    """`dynamo` (torch.export) or `torchscript`."""
    opset: int = setting(18, 13, 23)
    """The ONNX opset; the dynamo exporter writes >= 17 (asking for less is an error, not a silent 18)."""
    input_dtype: Literal["int64", "int32"] = "int64"
    """`int64`, or `int32` as in the seed notes; the graph casts internally."""
    precision: Literal["fp32", "int8", "fp16"] = "fp32"
    """The exported precision: `fp32`; `int8` (dynamic, per-channel weights, CPU; docs/int8.md); `fp16` (GPU)."""
    int8_target: Literal["auto", "vnni", "no_vnni"] = "auto"
    """The CPU that serves int8: `auto` (this one), `vnni` (AVX-512 VNNI, AVX-VNNI, AMX, ARM: 8-bit weights) or `no_vnni`
    (AVX2, AVX-512 without VNNI: 7-bit weights, as onnxruntime's u8s8 kernels saturate there). In `model.json`."""
    int8_max_float_share: float = setting(0.5, 0.0, 1.0)
    """int8: the share of the weight MatMuls' work that may stay float for a mix to pass the gate (docs/int8.md)."""
    dummy_batch: int = setting(2, 2)
    """The export dummy's batch size (>= 2, so the axis stays dynamic)."""
    dummy_length: int = setting(6, 2)
    """The export dummy's sequence length (>= 2; keep it away from `parity.grid_lengths`)."""
    onnx_file: str | None = None
    """An `.onnx` file exported earlier (the seed notes'), adopted instead of exporting (its own opset, dtypes); `null`."""
    output: str = "models/onnx"
    """The ONNX directory: `model.onnx`, tokenizer, `config.json`, `model.json`."""
    report: str = "metrics/export.json"
    """What the export measured (the int8 search's seconds, `auto`'s timings); `model.json` holds what it chose."""


@dataclass(frozen=True)
class RuntimeParams:
    """How the exported model is served: shared by `parity` and `infer` so parity checks what serves."""

    backend: Literal["onnxruntime", "openvino", "auto"] = "onnxruntime"
    """What serves the model in `parity` and `infer`: onnxruntime (`providers`), OpenVINO on the CPU, or `auto`: the
    one the export stage measured faster here on the parity rows (`model.json`'s `serving`, with the evidence)."""
    openvino_precision: Literal["auto", "f32", "bf16"] = "auto"
    """OpenVINO's inference precision on an fp32 export: `auto` (bf16 where its CPU plugin reports BF16, e.g. AVX-512
    BF16 or AMX, else f32), `f32` or `bf16`; bf16 is gated by `parity.bf16`. An int8 export runs as it is."""
    openvino_cache: str | None = "models/.openvino-cache"
    """Where OpenVINO keeps what `parity` compiled for `infer` to load (docs/serving.md): a local directory; `null`: none."""
    providers: tuple[Provider, ...] = ("CUDAExecutionProvider", "CPUExecutionProvider")
    """onnxruntime providers by preference, e.g. `[CUDAExecutionProvider, CPUExecutionProvider]`; CUDA alone fails loudly."""
    intra_op_num_threads: int = setting(0, 0)
    """onnxruntime's intra-op threads; 0 = all cores."""
    graph_optimization_level: Literal["disable", "basic", "extended", "all"] = "all"
    """onnxruntime's graph optimisations."""
    cpu_memory_arena: bool = False
    """onnxruntime's CPU memory arena (on: it keeps the largest batch's buffers, +1.4 GB RSS at base, no speed-up)."""
    intra_op_spinning: bool = True
    """Idle onnxruntime threads spin (on: lowest latency) or sleep (off: they yield the cores)."""
    tf32: bool = False
    """TensorFloat-32 on CUDA, in `parity` and `infer` alike (off: fp32 as torch computes it); the verdict records it."""

    def __post_init__(self) -> None:
        if not self.providers:
            raise UserError("runtime.providers is empty; list at least CPUExecutionProvider")

    def on_cpu(self, threads: int) -> RuntimeParams:
        """These settings on the CPU provider alone, with `threads` intra-op threads."""
        return dataclasses.replace(self, providers=("CPUExecutionProvider",), intra_op_num_threads=threads)


@dataclass(frozen=True)
class Tolerance:
    """When ONNX logits count as equal to torch's: `|onnx - torch| <= atol + rtol * |torch|`, and label agreement."""

    atol: float = field(metadata=_range(0.0))
    """Absolute tolerance on each non-pad logit."""
    rtol: float = field(metadata=_range(0.0))
    """Relative tolerance, times `|torch|`."""
    min_label_agreement: float = field(metadata=_range(0.0, 1.0))
    """The share of tokens whose label must be torch's: the rows' pooled; on the grid, those with margins over tolerance."""
    max_f1_drop: float = field(metadata=_range(0.0, 1.0))
    """How far the rows' span F1 may fall: the ONNX spans' against torch's, and with gold, below torch's entity F1."""
    outlier_share: float = field(default=0.0, metadata=_range(0.0, 1.0))
    """The share of a case's tokens whose logits may lie beyond `atol + rtol x |torch|` (fp32: none; docs/int8.md)."""


@dataclass(frozen=True)
class ParityParams:
    """How torch and onnxruntime outputs are compared (stage `parity`)."""

    input: str
    """The gate's (and the int8 search's) rows: a labelled validation file, read as `infer.input` is, with `annotations`;
    naming `infer.input` makes new data rerun the export and the gate."""
    samples: int = setting(256, 1)
    """Rows of `input` compared, drawn with `seed` from its first 10 x `samples` rows and tokenised as `infer` does;
    label agreement is pooled over their tokens (a few thousand measure 0.999)."""
    batch_size: int = setting(16, 1)
    """How the dataset rows are batched (length-sorted, padded)."""
    grid_batch_sizes: tuple[int, ...] = setting((1, 3, 8), 1)
    """The shape grid's batch sizes (rows padded to different lengths)."""
    grid_lengths: tuple[int, ...] = setting((1, 2, 7, 64, 512), 1)
    """The shape grid's sequence lengths, capped at `model.max_length`; keep one away from `export.dummy_length`."""
    atol: float = setting(1e-4, 0.0)
    """fp32: `|onnx - torch| <= atol + rtol * |torch|` on every non-pad logit."""
    rtol: float = setting(1e-3, 0.0)
    """fp32: the relative part of the criterion."""
    min_label_agreement: float = setting(0.999, 0.0, 1.0)
    """fp32: the share of tokens whose label must agree (rows pooled; grid tokens the tolerance protects)."""
    max_f1_drop: float = setting(0.001, 0.0, 1.0)
    """fp32: how far the rows' span F1 may fall (ONNX spans against torch's; entity F1 against gold)."""
    int8: Tolerance = Tolerance(atol=1.0, rtol=0.2, min_label_agreement=0.999, max_f1_drop=0.005, outlier_share=0.01)
    """The criterion for an int8 model (loose values, gated on label agreement)."""
    fp16: Tolerance = Tolerance(atol=0.05, rtol=0.02, min_label_agreement=0.999, max_f1_drop=0.002, outlier_share=0.001)
    """The criterion for an fp16 model."""
    bf16: Tolerance = Tolerance(atol=1.0, rtol=0.2, min_label_agreement=0.999, max_f1_drop=0.005, outlier_share=0.01)
    """The criterion for an fp32 model that OpenVINO serves at bf16 (`runtime.openvino_precision`)."""
    seed: int = 0
    """Which rows are sampled, and the grid's random tokens."""
    report: str = "metrics/parity.json"
    """The summary metrics file (`dvc exp show` lists it): verdict, agreement, largest difference, failures."""
    details: str = "metrics/parity_cases.json"
    """Every case's statistics (the rows, each grid shape): open it to see why a case failed."""
    plots: str = "metrics/parity_plots"
    """The directory of `dvc plots` data: max difference per sequence length, a difference histogram, error by layer."""
    layer_tokens: int = setting(4096, 0)
    """Each layer's output is compared with torch's on the first failed case, whole, or on about this many of the rows'
    tokens (batches spread over them) when every case passes; 0: only on a failure (docs/troubleshooting.md)."""
    verdict: str = "models/verdict.json"
    """What the gate verified: the served files' digests and how they serve (docs/serving.md); `infer` checks it."""

    def tolerance(self, precision: str) -> Tolerance:
        """The tolerance for the served precision: `atol`/`rtol`/`min_label_agreement` for fp32."""
        if precision == "fp32":
            return Tolerance(self.atol, self.rtol, self.min_label_agreement, self.max_f1_drop)
        return getattr(self, precision)


@dataclass(frozen=True)
class InferParams:
    """How the dataset is scored (stage `infer`)."""

    input: str
    """The dataset: a `.parquet`, `.csv`, `.jsonl` or `.conll` file, or a directory of such files (docs/reuse.md)."""
    text_column: str = "text"
    """The dataset's text column."""
    id_column: str = "id"
    """The dataset's id column (every row needs one)."""
    output: str = "data/predictions.parquet"
    """The predictions: a `.parquet` file, or a directory (no suffix) for a Parquet dataset of parts; a path or URL."""
    metrics: str = "metrics/infer.json"
    """The run's headline numbers (`dvc exp show` lists them): rows, seconds, texts/s, padding, peak memory, accuracy."""
    details: str = "metrics/infer_details.json"
    """Everything the run counted: blocks, resumes, text issues, rows per node, recoveries, labels, entity scores."""
    plots: str = "metrics/infer_plots"
    """`dvc plots` data against gold: the token confusion matrix, entity F1 per label (empty without gold)."""
    long_text: Literal["truncate", "sliding_window"] = "sliding_window"
    """`sliding_window` (every token scored) or `truncate` (one window, cut on `model.truncation_side`, as the seed
    notes do; gold spans in the cut text count as misses, and the metrics count the rows and spans cut)."""
    stride: int | None = setting(None, 0)
    """Tokens shared by consecutive sliding windows; a token's prediction is from the window where it is most central.
    Unset (null): 128, or half a window's content tokens when a short `model.max_length` leaves fewer."""
    batch_size: int = setting(64, 1)
    """At most this many windows per batch."""
    max_batch_tokens: int = setting(4096, 1)
    """At most this many padded token slots per batch (memory grows with it)."""
    max_batch_attention: int = setting(262144, 1)
    """At most rows x length^2 per batch: attention memory grows with the length squared (262,144: one 512 row)."""
    block_rows: int = setting(4096, 2)
    """Rows sorted by length and batched together, on average (a block ends after a row its text picks, so an edit
    changes only its block; half to twice this many): one block, one resumable part file."""
    bad_rows: Literal["score", "skip"] = "score"
    """`score` (null and non-string values scored as empty text) or `skip` (row kept, not scored, reason recorded)."""
    probabilities: bool = False
    """Also write each token's label probabilities."""
    span_ignore_labels: tuple[str, ...] = ("O",)
    """Labels that never form spans (e.g. `[O]`)."""
    aggregation: Literal["simple", "first", "average", "max"] = "simple"
    """How spans are built, as Hugging Face's pipeline `aggregation_strategy`: `simple` (adjacent tokens of one label),
    or, for models trained on first sub-word labels, each word one label: its first token's (`first`), its tokens' mean
    (`average`) or its most confident token's (`max`); these add word columns and count entity F1 on words."""
    reuse: bool = True
    """Take the rows scored before (same text, model and output-shaping params) from `store` (docs/reuse.md)."""
    store: str | None = None
    """The score store, a path or URL outside every DVC output; `null`: `.score-store` in `output`'s directory."""
    engine: Literal["local", "ray"] = "local"
    """`local` (this process) or `ray` (a Ray Data actor pool; see docs/ray.md). Both resume from finished parts."""
    ray_actors: int = setting(1, 1)
    """ray: scoring actors, spread over the nodes; each holds one onnxruntime session."""
    ray_max_actors: int | None = setting(None, 1)
    """ray: the most actors the pool grows to while blocks wait and the cluster has room (Ray Data's autoscaling pool,
    from `ray_actors`; idle actors are released); `null`: `ray_actors`, fixed."""
    ray_cpus_per_actor: float = setting(1.0, 0.0)
    """ray: CPUs each actor reserves (fractions allowed); its onnxruntime threads: that, rounded down, at least 1."""
    ray_gpus_per_actor: float = setting(0.0, 0.0)
    """ray: GPUs each actor reserves (fractions allowed); 0 removes `CUDAExecutionProvider` from the actors' providers."""
    ray_tokenizers: int = setting(1, 1)
    """ray: CPU actors that tokenise blocks ahead of the scoring actors (each holds the tokenizer, not the model)."""
    ray_cpus_per_tokenizer: float = setting(0.0, 0.0)
    """ray: CPUs each tokenising actor reserves (fractions allowed); 0: none, so that it always finds a place (a node
    lost mid-run can leave no free CPU once its scoring actors restart elsewhere)."""
    ray_queue_mb: int | None = setting(None, 1)
    """ray: object store memory (MB) the blocks waiting between the steps may take; beyond it Ray Data holds reading
    and tokenising back. `null`: Ray Data's own budget (half of the cluster's object store, shared among the steps)."""
    allow_unverified: bool = False
    """Score without a passing verdict for what serves (`parity.verdict`): warned, and recorded in the metrics."""

    def __post_init__(self) -> None:
        if self.ray_max_actors is not None and self.ray_max_actors < self.ray_actors:
            raise UserError(
                f"infer.ray_max_actors ({self.ray_max_actors}) is below infer.ray_actors ({self.ray_actors}), the "
                "pool's starting size; raise it, or set it to null for a pool of ray_actors"
            )


@dataclass(frozen=True)
class Params:
    """The whole `params.yaml`."""

    model: ModelParams
    export: ExportParams
    runtime: RuntimeParams
    parity: ParityParams
    infer: InferParams
    annotations: AnnotationParams
    benchmark: BenchmarkParams


def load_params(path: Path = PARAMS_FILE) -> Params:
    """Read and validate a params file; any problem is a `UserError` naming the key; a key it lacks, its default."""
    if not path.is_file():
        raise UserError(f"params file not found: {path} (run from the repository root)")
    return parse_file(Params, path)
