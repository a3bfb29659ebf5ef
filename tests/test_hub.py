"""The normalised model and the ONNX directory open in the tools users already have, and agree with `infer`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from transformers import AutoModelForTokenClassification, AutoTokenizer, pipeline

from stages import export, infer, load_checkpoint
from stages.scoring.tokens import TextTokenizer
from tools.demo.rules import DEMO_LABELS

TEXTS = [
    "Alice paid 42 euros in London on 2024-05-03.",  # Latin
    "東京と北京で2023年に会議があります。",  # CJK
    "Иван met 李 in Paris, room 7 and 東京 tower 12b.",  # mixed scripts
    "no entities here at all",
    "Émile Zola écrivit 3 romans à Paris",
]
BIO_LABELS = ("O", "B-NUM", "I-NUM", "CJK")  # the trained classes renamed: NUMBER starts, CAPITALIZED continues


def scored_spans(make_workspace, kind: str, labels: tuple[str, ...]) -> list[list[tuple]]:
    workspace = make_workspace(kind)
    pd.DataFrame({"id": [f"t{index}" for index in range(len(TEXTS))], "text": TEXTS}).to_parquet("texts.parquet")
    workspace.write_params(
        model={"labels": list(labels)}, infer={"input": "texts.parquet", "span_ignore_labels": ["O"]}
    )
    load_checkpoint.main()
    export.main()
    infer.main()
    spans = pd.read_parquet(workspace.params["infer"]["output"])["spans"]
    return [[(span["label"], span["start"], span["end"], span["text"], span["score"]) for span in row] for row in spans]


@pytest.mark.parametrize("labels", [DEMO_LABELS, BIO_LABELS], ids=["plain", "B-I"])
@pytest.mark.parametrize("kind", ["deberta-v2", "bert"])
def test_spans_equal_the_transformers_pipeline_on_the_normalised_model(make_workspace, kind, labels):
    ours = scored_spans(make_workspace, kind, labels)
    reference = pipeline("token-classification", model="models/model", aggregation_strategy="simple", device="cpu")
    found = 0
    for text, mine in zip(TEXTS, ours, strict=True):
        theirs = [(e["entity_group"], e["start"], e["end"], text[e["start"] : e["end"]]) for e in reference(text)]
        assert [span[:4] for span in mine] == theirs, text
        scores = [float(e["score"]) for e in reference(text)]
        np.testing.assert_allclose([span[4] for span in mine], scores, atol=1e-4)
        found += len(theirs)
    assert found >= 10, "the texts should hold spans of every kind"


def test_the_onnx_directory_describes_the_model_as_transformers_expects(make_workspace):
    make_workspace("bert")
    load_checkpoint.main()
    export.main()
    config = json.loads(Path("models/onnx/config.json").read_text(encoding="utf-8"))
    assert config["architectures"] == ["BertForTokenClassification"]
    assert config["id2label"] == {str(index): label for index, label in enumerate(DEMO_LABELS)}
    theirs = AutoTokenizer.from_pretrained("models/onnx")
    ours = TextTokenizer.load(Path("models/onnx")).encode(TEXTS)
    assert [text.input_ids.tolist() for text in ours] == theirs(TEXTS, add_special_tokens=False)["input_ids"]
    model = AutoModelForTokenClassification.from_pretrained("models/model")
    assert model.config.id2label == dict(enumerate(DEMO_LABELS))
