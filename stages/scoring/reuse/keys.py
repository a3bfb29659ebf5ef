"""What a row's scores depend on, as keys: its text, and the model and params that score it.

A row key is the digest of the text as scored and of its text issue (the bad-row policy decides from it), so
that neither the row's id nor its place in the dataset enters. The model key is the digest of every file of
the exported model directory (the graph, its external data, the tokenizer, `model.json`), of each param
that shapes the outputs and of the served identity (what actually ran: runtime, provider, precision, numeric
options, CPU kernel class); a change of any of them starts a new, empty part of the store.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict

import numpy as np
import pyarrow as pa

from stages.core.params import Params
from stages.graph.verdict import Identity
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
    "ray_max_actors",
    "ray_cpus_per_actor",
    "ray_gpus_per_actor",
    "ray_tokenizers",
    "ray_cpus_per_tokenizer",
    "ray_queue_mb",
    "allow_unverified",  # what served is in the key; whether a verdict covered it does not change the scores
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


def scoring_params(params: Params, served: Identity) -> dict:
    """What shapes the outputs: infer's params (but where they go and how Ray spreads the work, `NEUTRAL_INFER_PARAMS`)
    and the served identity as the runner reports it (runtime, the provider that runs, precision, numeric options,
    CPU kernel class), not the configured provider list: rows scored on CUDA and on the CPU never share a key."""
    infer = {key: value for key, value in asdict(params.infer).items() if key not in NEUTRAL_INFER_PARAMS}
    return {"infer": infer, "served": dict(served)}


def model_key(params: Params, served: Identity, digests: Mapping[str, str]) -> str:
    """The digest of the exported model directory's files (`digests`), of what shapes the outputs, of how batches are
    cut (rows' batches shape scores too), of the store's layout and of how its tallies count gold."""
    identity = {
        "files": dict(digests),
        **scoring_params(params, served),
        "batch_cut": BATCH_CUT,
        "layout": STORE_LAYOUT,
        "gold_counting": GOLD_COUNTING,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()
