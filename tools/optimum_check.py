"""Optimum opens the exported directory as it is: run in an environment with Optimum, not the project's.

Optimum pins transformers < 4.58 and this project needs transformers 5, so this check runs in its own venv
against directories the project wrote (after `dvc repro`), and imports nothing from the project:

    python3 -m venv /tmp/optimum && /tmp/optimum/bin/pip install torch==2.13.0 "optimum-onnx[onnxruntime]" "transformers<4.58"
    /tmp/optimum/bin/python tools/optimum_check.py models/onnx models/model

It loads `models/onnx` with `ORTModelForTokenClassification` and `models/model` with transformers' own
`AutoModelForTokenClassification`, runs both through transformers' token-classification pipeline
(`aggregation_strategy="simple"`) on multilingual texts, and exits 1 unless the spans are the same.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from optimum.onnxruntime import ORTModelForTokenClassification
from transformers import AutoModelForTokenClassification, AutoTokenizer, pipeline

TEXTS = [
    "Alice paid 42 euros in London on 2024-05-03.",
    "東京と北京で2023年に会議があります。",
    "Иван met 李 in Paris, room 7 and 東京 tower 12b.",
    "Émile Zola écrivit 3 romans à Paris",
]
SCORE_TOLERANCE = 1e-4


@dataclass(frozen=True)
class Directories:
    """What the check compares: the exported ONNX directory and the normalised model directory."""

    onnx_dir: str
    model_dir: str


def directories_from(argv: Sequence[str] | None = None) -> Directories:
    """The two directories from the command line (argparse alone: this runs outside the project's environment)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("onnx_dir", help="the export stage's output (models/onnx)")
    parser.add_argument("model_dir", help="load_checkpoint's output (models/model)")
    return Directories(**vars(parser.parse_args(argv)))


def spans(tagger, text: str) -> list[tuple]:
    return [(span["entity_group"], span["start"], span["end"], float(span["score"])) for span in tagger(text)]


def main(onnx_dir: str, model_dir: str) -> int:
    tokenizer = AutoTokenizer.from_pretrained(onnx_dir)
    served = pipeline("token-classification", model=ORTModelForTokenClassification.from_pretrained(onnx_dir),
                      tokenizer=tokenizer, aggregation_strategy="simple")  # fmt: skip
    reference = pipeline("token-classification", model=AutoModelForTokenClassification.from_pretrained(model_dir),
                         tokenizer=AutoTokenizer.from_pretrained(model_dir), aggregation_strategy="simple")  # fmt: skip
    failures = 0
    for text in TEXTS:
        ours, theirs = spans(served, text), spans(reference, text)
        same = [span[:3] for span in ours] == [span[:3] for span in theirs] and all(
            abs(a[3] - b[3]) <= SCORE_TOLERANCE for a, b in zip(ours, theirs, strict=True)
        )
        failures += not same
        print(f"{'same' if same else 'DIFFERENT'}: {text!r}: {[span[:3] for span in ours]}")
    print(f"Optimum ORTModelForTokenClassification on {onnx_dir} vs transformers on {model_dir}: "
          f"{len(TEXTS) - failures} of {len(TEXTS)} texts give the same spans")  # fmt: skip
    return 1 if failures else 0


if __name__ == "__main__":
    directories = directories_from()
    sys.exit(main(directories.onnx_dir, directories.model_dir))
