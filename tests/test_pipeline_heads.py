"""The real `dvc repro` with heads other than the seed's: the last four hidden states concatenated, a BiLSTM, and a
Linear whose emissions a CRF decodes, each a tiny model trained on the demo's rule and saved the seed's way.

Every stage runs on each; infer's labels on real rows are the torch module's (for the CRF head, pytorch-crf's
`CRF.decode` of its emissions). Its own file, so that a parallel run can run it beside the other pipeline tests."""

from __future__ import annotations

import json
import re
import sys

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from stages.scoring.tokens import TextTokenizer
from tests.custom_heads import HEADS, checkpoint_state, reference_labels, write_head_model
from tests.test_pipeline import REPO, copy_pipeline, run

ROWS = 300  # real rows of the demo's dataset, with gold spans
STAGES = ["load_checkpoint", "export", "parity", "infer", "benchmark"]

pytestmark = pytest.mark.slow


def test_custom_and_crf_heads_run_every_stage_and_predict_as_their_torch_modules(tmp_path):
    copy_pipeline(tmp_path)
    source = pd.read_parquet(REPO / "data/demo.parquet").head(ROWS)
    source.to_parquet(tmp_path / "data/rows.parquet")
    params_file = tmp_path / "params.yaml"
    params = yaml.safe_load(params_file.read_text(encoding="utf-8"))
    params["model"].update(max_length=128)
    params["export"].update(exporter="torchscript", opset=17)  # dynamo cannot export the BiLSTM's packed sequences
    params["parity"].update(samples=48, grid_batch_sizes=[1, 3], grid_lengths=[1, 7, 128])
    params["infer"].update(input="data/rows.parquet")
    params["benchmark"].update(rows=8, length=32, rounds=1, warmup=0)  # it runs; its numbers are not the point
    for kind, head in HEADS.items():
        stages = STAGES if kind == "crf" else STAGES[:-1]  # the benchmark stage once: it serves each head alike
        model = write_head_model(tmp_path / f"models/{kind}/backbone", kind)
        torch.save(checkpoint_state(model), tmp_path / f"models/{kind}/model.ckpt")
        params["model"].update(
            backbone=f"models/{kind}/backbone", checkpoint=f"models/{kind}/model.ckpt", head=head.name,
            head_args=head.arguments,
        )  # fmt: skip
        params_file.write_text(yaml.safe_dump(params, allow_unicode=True), encoding="utf-8")
        result = run([sys.executable, "-m", "dvc", "repro", *([] if stages == STAGES else ["infer"])], tmp_path)
        assert result.returncode == 0, f"{kind}: {result.stderr[-3000:]}"
        assert re.findall(r"Running stage '(\w+)'", result.stdout) == stages, result.stdout
        check_head_outputs(tmp_path, kind, model, source)


def check_head_outputs(root, kind: str, model, source: pd.DataFrame) -> None:
    described = json.loads((root / "models/onnx/model.json").read_text())
    assert described["head"]["class"] == HEADS[kind].name and described["head"]["args"] == HEADS[kind].arguments
    assert (described.get("decoding"), (root / "models/onnx/crf.json").is_file()) == (
        ("viterbi", True) if kind == "crf" else (None, False)
    )
    parity = json.loads((root / "metrics/parity.json").read_text())
    assert parity["passed"], parity
    assert ("rows_decoded_label_agreement" in parity) == (kind == "crf")
    details = json.loads((root / "metrics/infer_details.json").read_text())
    assert details["rows"] == ROWS and details["verified"] and details["entity_f1"] >= 0.9, (kind, details)
    predictions = pd.read_parquet(root / "data/predictions.parquet")
    tokenizer = TextTokenizer.load(root / "models/onnx")
    framing = tokenizer.framing(128, "left")
    differing = tokens = 0
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # rows one at a time: a second thread only waits on a busy machine
    try:
        for text, label_ids in zip(source["text"].fillna(""), predictions["label_ids"], strict=True):
            (encoded,) = tokenizer.encode([text])
            expected = reference_labels(model, encoded.input_ids, framing, None)
            assert len(label_ids) == len(expected), kind
            differing += int(np.sum(np.asarray(label_ids) != np.asarray(expected)))
            tokens += len(expected)
    finally:
        torch.set_num_threads(threads)
    assert tokens > 10_000 and differing == 0, (
        f"{kind}: {differing} of {tokens} tokens labelled otherwise than by torch"
    )
