"""What a row's scores depend on, as keys: its text, and the model and params that score it.

A row key is the digest of the text as scored and of its text issue (the bad-row policy decides from it), so
that neither the row's id nor its place in the dataset enters. The model key is the digest of every file of
the exported model directory (the graph, its external data, the tokenizer, `model.json`) and of each param
that shapes the outputs; a change of any of them starts a new, empty part of the store.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow as pa

from stages.core.params import Params
from stages.scoring.datasets.blocks import Block

KEY_BYTES = 16
BATCH_CUT = 12  # a batch ends before a window whose key number is a multiple of this: ~12 windows per batch
STORE_LAYOUT = 3  # entries are Arrow IPC files, LZ4 (1: Parquet, 2: zstd); another layout's store is not read
GOLD_COUNTING = 2  # a stored block's tally counts a truncated row's cut gold spans as misses (1: left them out)
ROW_CONTEXT = bytes(KEY_BYTES)  # the context of a row scored by a batch-invariant model: its own text alone
# Params that do not change what is written: where it goes, and how the ray engine spreads the work.
NEUTRAL_INFER_PARAMS = (
    "input",
    "output",
    "metrics",
    "details",
    "plots",
    "store",
    "reuse",
    "engine",
    "ray_actors",
    "ray_cpus_per_actor",
    "ray_gpus_per_actor",
)


def row_keys(texts: Sequence[str], issues: Sequence[str | None]) -> list[bytes]:
    """Each row's key: the digest of its text issue and its text."""
    return [
        hashlib.blake2b(f"{issue or ''}\0{text}".encode("utf-8", "surrogatepass"), digest_size=KEY_BYTES).digest()
        for text, issue in zip(texts, issues, strict=True)
    ]


def string_keys(strings: pa.Array, issues: Sequence[str | None]) -> list[bytes]:
    """`row_keys` of texts read as Arrow strings, hashed from their UTF-8 bytes (a null is the empty text)."""
    offsets = np.frombuffer(
        strings.buffers()[1], dtype=np.int64 if pa.types.is_large_string(strings.type) else np.int32
    )
    bounds = offsets[strings.offset : strings.offset + len(strings) + 1].tolist()
    data = memoryview(strings.buffers()[2] or b"")
    plain = hashlib.blake2b(b"\0", digest_size=KEY_BYTES)  # a text without an issue
    keys = []
    for start, stop, issue in zip(bounds[:-1], bounds[1:], issues, strict=True):
        digest = plain.copy() if issue is None else hashlib.blake2b(f"{issue}\0".encode(), digest_size=KEY_BYTES)
        digest.update(data[start:stop])
        keys.append(digest.digest())
    return keys


def block_keys(block: Block) -> list[bytes]:
    """The row keys of a block's rows as they are read (before the bad-row policy), computed once."""
    if block.keys is not None:
        return block.keys
    return row_keys(block.texts, block.issues) if block.strings is None else string_keys(block.strings, block.issues)


def combined_key(parts: Sequence[bytes]) -> bytes:
    """One key for a sequence of keys (a batch's windows, a row's batches)."""
    digest = hashlib.blake2b(digest_size=KEY_BYTES)
    for part in parts:
        digest.update(part)
    return digest.digest()


def key_number(key: bytes) -> int:
    """A key as a number, for content-defined cuts."""
    return int.from_bytes(key[:8], "little")


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def scoring_params(params: Params) -> dict:
    """The params that shape the outputs (infer's, but where they go and how Ray spreads the work; the runtime's
    backend, OpenVINO precision, providers and graph optimisations)."""
    infer = {key: value for key, value in asdict(params.infer).items() if key not in NEUTRAL_INFER_PARAMS}
    runtime = {
        "backend": params.runtime.backend,
        "openvino_precision": params.runtime.openvino_precision,
        "providers": list(params.runtime.providers),
        "graph_optimization_level": params.runtime.graph_optimization_level,
    }
    return {"infer": infer, "runtime": runtime}


def model_key(params: Params) -> str:
    """The digest of the exported model directory's files, of the params that shape the outputs, of how batches are
    cut (rows' batches shape scores too), of the store's layout and of how its tallies count gold."""
    onnx_dir = Path(params.export.output)
    files = {
        path.relative_to(onnx_dir).as_posix(): file_digest(path)
        for path in sorted(onnx_dir.rglob("*"))
        if path.is_file()
    }
    identity = {
        "files": files,
        **scoring_params(params),
        "batch_cut": BATCH_CUT,
        "layout": STORE_LAYOUT,
        "gold_counting": GOLD_COUNTING,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()
