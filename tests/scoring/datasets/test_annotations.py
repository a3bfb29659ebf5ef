"""Gold annotations in the formats users hold give the same spans and the same scores; bad ones are one clear error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from stages import export, infer, load_checkpoint
from stages.core.errors import UserError
from stages.core.params import load_params
from stages.scoring.datasets.blocks import iter_blocks
from tests.conftest import REPO
from tools.demo.rules import character_labels
from tools.generate.real_text import REAL_TEXT

ROWS = 200
TAGS = ("O", "B-NUMBER", "I-NUMBER", "B-CAPITALIZED", "I-CAPITALIZED", "B-CJK", "I-CJK")


def labelled_rows() -> list[dict]:
    """Real rows as words, each word typed by the demo rule on its first character; a run of one type is one entity."""
    rows = []
    for index, text in enumerate(pd.read_parquet(REAL_TEXT).text[:ROWS]):
        words = text.split() or ["-"]
        kinds = [character_labels(word)[0] for word in words]
        tags = [
            "O" if kind is None else f"{'I' if position and kinds[position - 1] == kind else 'B'}-{kind}"
            for position, kind in enumerate(kinds)
        ]
        joined, spans, cursor = " ".join(words), [], 0
        for word, tag in zip(words, tags, strict=True):
            if tag.startswith("B-"):
                spans.append({"start": cursor, "end": cursor + len(word), "label": tag[2:]})
            elif tag.startswith("I-"):
                spans[-1]["end"] = cursor + len(word)
            cursor += len(word) + 1
        rows.append({"id": f"r{index}", "text": joined, "tokens": words, "ner_tags": tags, "entities": spans})
    return rows


def write_formats(rows: list[dict]) -> dict[str, dict]:
    """The same annotations in each format, and the annotations params that read each."""
    frame = pd.DataFrame(rows)
    frame[["id", "text", "entities"]].to_parquet("spans.parquet")
    frame[["id", "tokens", "ner_tags"]].to_parquet("tags.parquet")  # no text: the words joined by spaces
    frame.assign(ner_tags=[[TAGS.index(tag) for tag in tags] for tags in frame.ner_tags])[
        ["id", "tokens", "ner_tags"]
    ].to_parquet("tag-ids.parquet")
    frame.assign(entities=frame.entities.map(json.dumps))[["id", "text", "entities"]].to_csv("spans.csv", index=False)
    with (
        open("label-studio.jsonl", "w", encoding="utf-8") as studio,
        open("doccano.jsonl", "w", encoding="utf-8") as doccano,
    ):
        for row in rows:
            spans = row["entities"]
            studio.write(
                json.dumps(
                    {
                        "id": row["id"],
                        "text": row["text"],
                        "label": [
                            {"start": span["start"], "end": span["end"], "labels": [span["label"]]} for span in spans
                        ],
                    }
                )
                + "\n"
            )
            doccano.write(
                json.dumps(
                    {
                        "id": row["id"],
                        "text": row["text"],
                        "label": [[span["start"], span["end"], span["label"]] for span in spans],
                    }
                )
                + "\n"
            )
    Path("data.conll").write_text(
        "-DOCSTART- -X- O\n\n"
        + "\n\n".join(
            "\n".join(f"{word} X {tag}" for word, tag in zip(row["tokens"], row["ner_tags"], strict=True))
            for row in rows
        )
        + "\n",
        encoding="utf-8",
    )
    spans_column = {"format": "auto", "spans_column": "label"}
    return {
        "spans.parquet": {"format": "auto"},
        "spans.csv": {"format": "spans"},
        "label-studio.jsonl": spans_column,
        "doccano.jsonl": spans_column,
        "tags.parquet": {"format": "auto"},
        "tag-ids.parquet": {"format": "tags", "tag_names": list(TAGS)},
        "data.conll": {"format": "auto"},
    }


@pytest.fixture
def formats(make_workspace):
    workspace = make_workspace()
    rows = labelled_rows()
    return workspace, rows, write_formats(rows)


def test_every_format_reads_the_same_spans_and_gives_the_same_scores(formats):
    workspace, rows, files = formats
    defaults = dict(workspace.params["annotations"])
    expected = [[(span["start"], span["end"], span["label"]) for span in row["entities"]] for row in rows]
    assert sum(map(len, expected)) > 100
    load_checkpoint.main()
    export.main()
    scores = {}
    for name, reading in files.items():
        workspace.write_params(
            annotations={**defaults, **reading}, infer={"input": name, "output": f"out/{name}.parquet"}
        )
        params = load_params()
        blocks = iter_blocks(name, "text", "id", ROWS, params.annotations)
        (block,) = list(blocks)
        assert block.gold == expected, name
        assert block.texts == [row["text"] for row in rows], name
        infer.main()
        metrics = json.loads(Path("metrics/infer_details.json").read_text(encoding="utf-8"))
        scores[name] = {
            key: metrics[key] for key in ("entity_f1", "entities", "token_accuracy", "token_confusion", "gold_rows")
        }
    first = scores["spans.parquet"]
    assert first["gold_rows"] == ROWS and 0 < first["entity_f1"] < 1
    assert all(score == first for score in scores.values()), {
        name: score["entity_f1"] for name, score in scores.items()
    }


BAD = [
    (
        "outside.parquet",
        {"entities": [[{"start": 0, "end": 99, "label": "NUMBER"}]]},
        r"row 0 \(id 'x0'\): span 0-99 'NUMBER' lies outside its text of 11 characters",
    ),
    (
        "overlap.parquet",
        {"entities": [[{"start": 0, "end": 5, "label": "NUMBER"}, {"start": 3, "end": 8, "label": "CJK"}]]},
        r"row 0 \(id 'x0'\): spans 0-5 'NUMBER' and 3-8 'CJK' overlap",
    ),
    (
        "unknown.parquet",
        {"entities": [[{"start": 0, "end": 5, "label": "PERSON"}]]},
        r"id 'x0'\): label 'PERSON' is not one of the model's entities \(CAPITALIZED, CJK, NUMBER\)",
    ),
    (
        "broken-bio.parquet",
        {"tokens": [["Hello", "world", "2024"]], "ner_tags": [["O", "I-NUMBER", "O"]]},
        r"row 0 \(id 'x0'\): tag 'I-NUMBER' of word 1 \('world'\) follows 'O', which IOB2 \(BIO\) does not allow",
    ),
    (
        "lengths.parquet",
        {"tokens": [["Hello", "world"]], "ner_tags": [["O"]]},
        r"row 0 \(id 'x0'\): 2 words but 1 tags",
    ),
    (
        "ids.parquet",
        {"tokens": [["Hello", "world"]], "ner_tags": [[0, 3]]},
        r"tag 0 is not a tag name; set annotations.tag_names",
    ),
]


@pytest.mark.parametrize(("name", "columns", "message"), BAD, ids=[case[0] for case in BAD])
def test_a_bad_annotation_is_one_line_naming_the_row(make_workspace, name, columns, message):
    workspace = make_workspace()
    load_checkpoint.main()
    export.main()
    text = {"text": ["Hello world"]} if "entities" in columns else {}
    pd.DataFrame({"id": ["x0"], **text, **columns}).to_parquet(name)
    workspace.write_params(infer={"input": name})
    with pytest.raises(UserError, match=message):
        infer.main()
    assert not Path(workspace.params["infer"]["output"]).exists()


def test_the_stage_exits_2_with_that_line_and_no_traceback(make_workspace):
    workspace = make_workspace()
    load_checkpoint.main()
    export.main()
    pd.DataFrame(
        {"id": ["x0"], "text": ["Hello world"], "entities": [[{"start": 0, "end": 99, "label": "NUMBER"}]]}
    ).to_parquet("bad.parquet")
    workspace.write_params(infer={"input": "bad.parquet"})
    result = subprocess.run(
        [sys.executable, "-m", "stages.infer"], cwd=workspace.root, env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: dataset bad.parquet row 0 (id 'x0'): span 0-99")
