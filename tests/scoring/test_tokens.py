"""The torch-free tokenizer gives transformers' fast tokenizer's tokens, offsets, framing and pad id, token for token."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
from transformers import AutoTokenizer

from stages.scoring.tokens import TextTokenizer
from tests.backbones import CORPUS, KINDS, make_backbone
from tests.conftest import REPO

ODD = [
    "",
    " ",
    "a",
    "\u00e9\u0301",
    "👩\u200d👩\u200d👧 🎉",
    "\t\n\r",
    "\x00\x1b",
    "\u202eRTL",
    "x" * 3000,
    "[CLS] [SEP] [PAD]",
]


def demo_texts() -> list[str]:
    texts = pq.read_table(REPO / "data/demo.parquet", columns=["text"]).column("text").to_pylist()
    return [text or "" for text in texts[:800]] + ODD


def assert_same_tokens(directory, texts: list[str]) -> None:
    ours = TextTokenizer.load(directory)
    theirs = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    batch = theirs(texts, add_special_tokens=False, return_offsets_mapping=True)
    encoded = ours.encode(texts)
    for text, mine, ids, offsets in zip(texts, encoded, batch["input_ids"], batch["offset_mapping"], strict=True):
        assert mine.input_ids.tolist() == ids, text
        assert mine.offsets.tolist() == [list(pair) for pair in offsets], text
    probe = theirs("a", return_special_tokens_mask=True)
    framing = ours.framing(theirs.model_max_length, theirs.truncation_side)
    content = np.flatnonzero(~np.asarray(probe["special_tokens_mask"], dtype=bool))
    assert framing.prefix.tolist() == probe["input_ids"][: content[0]]
    assert framing.suffix.tolist() == probe["input_ids"][content[-1] + 1 :]
    assert ours.pad_id == theirs.pad_token_id
    ids = np.concatenate([text.input_ids for text in encoded])[:500]
    assert ours.pieces(ids) == theirs.convert_ids_to_tokens(ids.tolist())


def test_the_demo_tokenizer():
    assert_same_tokens(REPO / "models/demo/backbone", demo_texts())


@pytest.mark.parametrize("kind", KINDS)
def test_every_test_backbone(tmp_path, kind):
    make_backbone(tmp_path, kind)
    assert_same_tokens(tmp_path, [*CORPUS, *demo_texts()])
