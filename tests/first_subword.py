"""Models trained the way the Hugging Face token-classification examples train them: words tagged in IOB2, only the
first sub-word of each word carrying its tag (the others -100), so the other sub-words' labels are untrained, as in
the checkpoints users hold. Built offline from the hub layouts' tokenizers (`tests.layouts`) and kept across test
sessions (`tests.built`).

The words are the text's runs of non-space characters; each takes the demo rule's type of its first character
(`tools.demo.rules`), `B-` where it starts its span and `I-` where a span of one type runs on from the word before.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from transformers import AutoConfig, PreTrainedTokenizerBase

from stages.model.token_model import CustomModel
from stages.scoring.batching import pad_batch
from tests.backbones import MAX_LENGTH
from tests.built import built_weights, copy_files
from tests.layouts import layout_files, layout_tokenizer
from tools.demo.corpus import make_texts
from tools.demo.rules import entity_spans

WORD_LABELS = ("O", "B-NUMBER", "I-NUMBER", "B-CAPITALIZED", "I-CAPITALIZED", "B-CJK", "I-CJK")
BACKBONES = {  # the three ways a tokenizer marks sub-words, each in the layout the hub ships it
    "sentencepiece": "spm.model",  # DeBERTa-v2: Unigram pieces, "▁" before a word
    "wordpiece": "vocab.txt",  # BERT: "##" before a continuing piece
    "byte-level-bpe": "vocab.json+merges.txt",  # RoBERTa: "Ġ" before a word, no continuing prefix
}
TRAIN_SEED = 41  # rows other than the demo's (its seed is tools.demo.corpus.SEED) and than tests/data's
TRAIN_ROWS, TRAIN_STEPS, TRAIN_BATCH = 3000, 400, 16
IGNORED = -100
WORD = re.compile(r"\S+")


def word_tags(text: str) -> list[tuple[int, int, str]]:
    """Each word's character range and IOB2 tag, by the demo rule's spans."""
    spans = [(span["start"], span["end"], span["label"]) for span in entity_spans(text)]
    tagged, previous = [], None
    for match in WORD.finditer(text):
        owner = next((span for span in spans if span[0] <= match.start() < span[1]), None)
        if owner is None:
            tagged.append((match.start(), match.end(), "O"))
        else:
            tagged.append((match.start(), match.end(), f"{'I' if owner == previous else 'B'}-{owner[2]}"))
        previous = owner
    return tagged


def first_subword_labels(tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> tuple[list, list]:
    """Token ids (special tokens around, truncated to `MAX_LENGTH`) and label ids: each word's tag on the first
    token that reaches into it, -100 on every other token."""
    encoding = tokenizer(texts, truncation=True, max_length=MAX_LENGTH, return_offsets_mapping=True)
    labels = []
    for text, offsets in zip(texts, encoding["offset_mapping"], strict=True):
        row = [IGNORED] * len(offsets)
        words = word_tags(text)
        tagged = 0
        for index, (start, end) in enumerate(offsets):
            while tagged < len(words) and words[tagged][1] <= start:
                tagged += 1  # words before this token (none of its tokens kept, or already tagged)
            if end > start and tagged < len(words) and words[tagged][0] < end:
                row[index] = WORD_LABELS.index(words[tagged][2])
                tagged += 1
        labels.append(row)
    return encoding["input_ids"], labels


def train_first_subword(model: CustomModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """Train on the first sub-word labels of rows the demo's corpus writes with `TRAIN_SEED`, in batches of rows of
    about one length (little padding: the steps take seconds, not minutes)."""
    texts = [text for text in make_texts(TRAIN_SEED) if text and text.strip()][:TRAIN_ROWS]
    ids, labels = first_subword_labels(tokenizer, texts)
    by_length = np.argsort([len(row) for row in ids], kind="stable")
    generator = np.random.default_rng(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(TRAIN_STEPS):
        start = generator.integers(0, len(ids) - TRAIN_BATCH + 1)
        picks = by_length[start : start + TRAIN_BATCH]
        arrays = pad_batch([ids[pick] for pick in picks], tokenizer.pad_token_id)
        width = arrays["input_ids"].shape[1]
        target = torch.tensor([labels[pick] + [IGNORED] * (width - len(labels[pick])) for pick in picks])
        logits = model(torch.from_numpy(arrays["input_ids"]), torch.from_numpy(arrays["attention_mask"]))
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, len(WORD_LABELS)), target.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()


def first_subword_weights(layout: str) -> dict[str, torch.Tensor]:
    """Weights of a model trained on first sub-word labels with the layout's tokenizer, built once."""

    def train(_: Path) -> dict[str, torch.Tensor]:
        files = layout_files(layout)
        torch.manual_seed(0)
        model = CustomModel(AutoConfig.from_pretrained(files), num_labels=len(WORD_LABELS), classifier_dropout=0.1)
        train_first_subword(model, layout_tokenizer(files, layout))
        return model.state_dict()

    return built_weights(f"first-subword-{layout}", train)


def write_first_subword(directory: Path, layout: str) -> CustomModel:
    """The layout's backbone files in `directory`, and the model trained on them on first sub-word labels."""
    copy_files(layout_files(layout), directory)
    model = CustomModel(AutoConfig.from_pretrained(directory), num_labels=len(WORD_LABELS), classifier_dropout=0.1)
    model.load_state_dict(first_subword_weights(layout))
    return model.eval()
