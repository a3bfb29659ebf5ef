"""Engine `ray`'s tokenising step (`BlockTokenizer`, a CPU actor holding the tokenizer alone) leaves the scoring
actors no text to tokenise, and what they then score is the local engine's output; called without a cluster."""

from __future__ import annotations

import importlib.util
import pickle
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from stages import infer
from stages.core.params import load_params
from stages.graph.verdict import model_digests
from stages.scoring.datasets.blocks import Block, dataset_files
from stages.scoring.prepare import TokenisedBlock
from stages.scoring.reuse.keys import block_keys
from stages.scoring.reuse.store import open_store
from stages.scoring.score import block_part
from stages.scoring.served import ServedModel
from stages.scoring.storage.locations import locate
from stages.scoring.storage.parts import PartFiles, decode_part
from stages.scoring.tokens import TextTokenizer
from tests.conftest import unavailable
from tests.scoring.reuse.test_reuse import exported_at


def tokenised_rows(params, store) -> list[dict]:
    """`infer.input` read by the read step and passed through the tokenising step, as Ray Data would."""
    from stages.scoring.cluster.actor import BlockTokenizer, read_files

    files = [source for source, _ in dataset_files(params.infer.input)]
    parts = PartFiles.for_run(locate("out/predictions.parquet.parts"), "a run", {"verified": True})
    step = BlockTokenizer(str(Path(params.export.output).resolve()), params.infer, (store.root, store.model))
    read = read_files(pa.table({"file": [0]}), params, files, parts.directory)
    return [row for table in read for row in step(table).to_pylist()]


def test_the_scoring_actor_tokenises_nothing_and_scores_the_local_engines_bytes(make_workspace, monkeypatch):
    """A store holding the first rows; the tokenising step tokenises exactly the rows it lacks (a block stored whole
    passes as it is); the scoring actor's work, with tokenising broken, then gives the local engine's rows."""
    if importlib.util.find_spec("ray") is None:
        unavailable("Ray is not installed (pip install -e '.[ray]')")
    workspace = exported_at(make_workspace, "fp32")  # batch-invariant: no stored row is a batch companion
    dataset = pd.read_parquet("data.parquet")
    dataset.iloc[:100].to_parquet("data.parquet")
    workspace.write_params(infer={"reuse": True, "store": "store", "output": "out/predictions.parquet"})
    infer.main()  # stores the first 100 rows
    dataset.to_parquet("data.parquet")
    params = load_params()
    served = ServedModel.load(Path(params.export.output), params.runtime)
    store = open_store(params, served.runner.identity, model_digests(Path(params.export.output)))
    rows = tokenised_rows(params, store)
    carried = [pickle.loads(row["block"]) for row in rows]
    whole = [ready for ready in carried if isinstance(ready, Block)]
    tokenised = [ready for ready in carried if isinstance(ready, TokenisedBlock)]
    assert whole and all(store.holds(block) for block in whole)
    held = {key.tobytes() for key in store.stored_rows().keys}
    for ready in tokenised:
        lacking = [row for row, key in enumerate(block_keys(ready.block)) if key not in held]
        assert sorted(ready.encoded) == lacking, "the step tokenises exactly the rows the store lacks"

    def no_tokenising(self, texts):
        raise AssertionError(f"the scoring actor tokenised {len(texts)} texts")

    assert served.batch_invariant(tokenised[0].texts)  # the probe each actor runs once (it tokenises 4 texts)
    with monkeypatch.context() as patched:
        patched.setattr(TextTokenizer, "encode", no_tokenising)
        parts = [
            block_part(served, ready, params.infer, store) if isinstance(ready, Block)
            else block_part(served, ready.block, params.infer, store, ready)
            for ready in carried
        ]  # fmt: skip
    workspace.write_params(infer={"store": "scratch.store", "output": "out/scratch.parquet"})
    infer.main()
    expected = pq.read_table("out/scratch.parquet")
    assert pa.concat_tables(decode_part(part.data) for part in parts).equals(expected)
