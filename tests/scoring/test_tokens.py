"""The torch-free tokenizer gives transformers' fast tokenizer's tokens, offsets, framing and pad id, token for token,
for every layout the hub ships a tokenizer in, and SentencePiece's own tokens where the backbone has an spm model."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
from transformers import AutoTokenizer

from stages.model.backbone import save_tokenizer
from stages.model.tokenizer_layout import load_tokenizer, read_sentencepiece, tokenizer_layout
from stages.scoring.tokens import TextTokenizer
from tests.backbones import CORPUS, KINDS, make_backbone
from tests.conftest import REPO
from tests.layouts import LAYOUTS, SENTENCEPIECE_LAYOUTS, real_texts, write_layout

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


def assert_same_tokens(directory, texts: list[str], ours: TextTokenizer | None = None) -> None:
    ours = ours or TextTokenizer.load(directory)
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


def saved(backbone, target):
    """The backbone's tokenizer as `load_checkpoint` writes it into the normalised model directory."""
    save_tokenizer(load_tokenizer(backbone, str(backbone), model_max_length=512, truncation_side="left"), target)
    return target


def sentencepiece_differences(directory, backbone, texts: list[str]) -> list[tuple[str, list[str], list[str]]]:
    """Texts whose tokens differ from the SentencePiece model's, but for Unigram ties: segmentations of equal score,
    as SentencePiece sums scores in float32 (so over a long text, within float32 rounding of the sum). Texts that
    spell a special token ("[CLS]") are left out: transformers' tokenizers match those in the text, as they did
    when the model was trained; SentencePiece alone does not."""
    import sentencepiece

    model_file = tokenizer_layout(backbone).file
    processor = sentencepiece.SentencePieceProcessor(model_file=str(model_file))
    proto = read_sentencepiece(model_file)
    scores = {piece.piece: piece.score for piece in proto.pieces}
    ours = TextTokenizer.load(directory)
    specials = AutoTokenizer.from_pretrained(directory).all_special_tokens
    texts = [text for text in texts if not any(special in text for special in specials)]
    differences = []
    for text, encoded in zip(texts, ours.encode(texts), strict=True):
        mine = [piece if piece in scores else proto.trainer_spec.unk_piece for piece in ours.pieces(encoded.input_ids)]
        theirs = [processor.id_to_piece(index) for index in processor.encode(text)]
        total = sum(scores[piece] for piece in theirs)
        if mine != theirs and abs(sum(scores[piece] for piece in mine) - total) >= 1e-4 + 1e-6 * abs(total):
            differences.append((text, mine, theirs))
    return differences


def test_the_demo_tokenizer(tmp_path):
    directory = saved(REPO / "models/demo/backbone", tmp_path)
    assert_same_tokens(directory, demo_texts())
    assert sentencepiece_differences(directory, REPO / "models/demo/backbone", demo_texts()) == []


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_every_hub_layout_on_real_multilingual_text(tmp_path, layout):
    backbone = tmp_path / "backbone"
    write_layout(backbone, layout, trained=False)  # the files alone
    directory = saved(backbone, tmp_path / "saved")
    texts = real_texts()
    assert_same_tokens(directory, texts)  # what infer uses == AutoTokenizer on the normalised directory
    if layout in SENTENCEPIECE_LAYOUTS:
        assert sentencepiece_differences(directory, backbone, texts) == []
        theirs = AutoTokenizer.from_pretrained(backbone, model_max_length=512)  # the class rebuilt from spm.model
        batch = theirs(texts, add_special_tokens=False)["input_ids"]
        differ = sum(
            ours.input_ids.tolist() != ids
            for ours, ids in zip(TextTokenizer.load(directory).encode(texts), batch, strict=True)
        )
        print(
            f"{layout}: transformers' {type(theirs).__name__} on the raw files differs from SentencePiece on {differ} of {len(texts)} rows"
        )
    else:
        assert_same_tokens(
            backbone, texts, ours=TextTokenizer.load(directory)
        )  # and on the files as the hub ships them


@pytest.mark.parametrize("kind", KINDS)
def test_every_test_backbone(tmp_path, kind):
    make_backbone(tmp_path, kind, trained=False)  # the files alone
    assert_same_tokens(tmp_path, [*CORPUS, *demo_texts()])
