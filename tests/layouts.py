"""Backbone directories in the layouts the Hugging Face hub ships, built offline, with models trained on them.

    spm.model                 DeBERTa-v2/v3, mDeBERTa: config.json, spm.model, tokenizer_config.json
    sentencepiece.bpe.model   XLM-R: config.json, sentencepiece.bpe.model
    vocab.txt                 BERT: config.json, vocab.txt
    vocab.json+merges.txt     RoBERTa: config.json, vocab.json, merges.txt
    tokenizer.json            any family: config.json, tokenizer.json, tokenizer_config.json

Tokenizers are trained on the real multilingual rows of `tests/data/real_text.parquet`, so they cover the
scripts the tests score; each model is trained on the demo's rule labels (`tests.backbones.train_on_rules`).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow.parquet as pq
import sentencepiece
import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
from tokenizers.implementations import ByteLevelBPETokenizer
from transformers import AutoConfig, PreTrainedTokenizerBase

from stages.model.token_model import CustomModel
from stages.model.tokenizer_layout import load_tokenizer
from tests.backbones import (
    MAX_LENGTH,
    SPECIALS,
    make_backbone,
    rule_label_table,
    tiny_config,
    train_on_rules,
    trained_weights,
)  # fmt: skip
from tests.built import built, built_weights, copy_files
from tools.generate.real_text import REAL_TEXT

LAYOUTS = {  # layout -> model family
    "spm.model": "deberta-v2",
    "sentencepiece.bpe.model": "xlm-roberta",
    "vocab.txt": "bert",
    "vocab.json+merges.txt": "roberta",
    "tokenizer.json": "deberta-v2",
}
SENTENCEPIECE_LAYOUTS = ("spm.model", "sentencepiece.bpe.model")
VOCAB_SIZE = 3000  # about what 118 languages' characters need at 99.5% coverage
ROBERTA_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


def real_texts() -> list[str]:
    return pq.read_table(REAL_TEXT, columns=["text"]).column("text").to_pylist()


def train_sentencepiece(**settings: object) -> bytes:
    """A Unigram SentencePiece model of the real rows, deterministically."""
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(real_texts()), model_writer=model, model_type="unigram", vocab_size=VOCAB_SIZE,
        character_coverage=0.995, num_threads=1, shuffle_input_sentence=False, input_sentence_size=0,
        hard_vocab_limit=False, minloglevel=2, **settings,
    )  # fmt: skip
    return model.getvalue()


def write_tokenizer_files(directory: Path, layout: str) -> None:
    """The layout's tokenizer files (no config.json)."""
    if layout == "spm.model":  # mdeberta-v3-base's special pieces and tokenizer_config.json
        pieces = {"pad_id": 0, "pad_piece": "[PAD]", "bos_id": 1, "bos_piece": "[CLS]", "eos_id": 2,
                  "eos_piece": "[SEP]", "unk_id": 3, "unk_piece": "[UNK]"}  # fmt: skip
        (directory / layout).write_bytes(train_sentencepiece(**pieces))
        (directory / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": False, "vocab_type": "spm"}))
    elif layout == "sentencepiece.bpe.model":  # SentencePiece's default specials, as XLM-R's
        (directory / layout).write_bytes(train_sentencepiece())
    elif layout == "vocab.txt":
        tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tokenizer.normalizer = normalizers.BertNormalizer(lowercase=False)
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tokenizer.train_from_iterator(
            real_texts(), trainers.WordPieceTrainer(vocab_size=VOCAB_SIZE, special_tokens=SPECIALS)
        )
        vocab = tokenizer.get_vocab()
        (directory / layout).write_text("".join(token + "\n" for token in sorted(vocab, key=vocab.get)))
    elif layout == "vocab.json+merges.txt":
        tokenizer = ByteLevelBPETokenizer()
        tokenizer.train_from_iterator(real_texts(), vocab_size=VOCAB_SIZE, special_tokens=ROBERTA_SPECIALS,
                                      show_progress=False)  # fmt: skip
        tokenizer.save_model(str(directory))
    else:
        raise ValueError(layout)


def layout_files(layout: str) -> Path:
    """The layout's backbone files: its tokenizer files and config.json (no weights), built once."""

    def build(directory: Path) -> None:
        if layout == "tokenizer.json":
            make_backbone(directory, LAYOUTS[layout], trained=False)
            return
        write_tokenizer_files(directory, layout)
        tiny_config(LAYOUTS[layout], 10 * VOCAB_SIZE, 0).save_pretrained(directory)  # the family names the class
        tokenizer = load_tokenizer(directory, layout, model_max_length=MAX_LENGTH)
        tiny_config(LAYOUTS[layout], len(tokenizer), tokenizer.pad_token_id).save_pretrained(directory)

    return built(f"layout-{layout}", build)


def layout_weights(layout: str) -> dict[str, torch.Tensor]:
    """Weights of a model trained on the demo's rule labels with the layout's tokenizer, built once."""
    if layout == "tokenizer.json":
        return trained_weights(LAYOUTS[layout])

    def train(_: Path) -> dict[str, torch.Tensor]:
        files = layout_files(layout)
        torch.manual_seed(0)
        model = CustomModel(AutoConfig.from_pretrained(files), num_labels=4, classifier_dropout=0.1)
        train_on_rules(model, rule_label_table(layout_tokenizer(files, layout)), MAX_LENGTH)
        return model.state_dict()

    return built_weights(f"layout-weights-{layout}", train)


def write_layout(directory: Path, layout: str, trained: bool = True) -> CustomModel:
    """Copy the layout's backbone files into `directory`; the model trained on them (or as initialised)."""
    copy_files(layout_files(layout), directory)
    torch.manual_seed(0)
    model = CustomModel(AutoConfig.from_pretrained(directory), num_labels=4, classifier_dropout=0.1)
    if trained:
        model.load_state_dict(layout_weights(layout))
    return model.eval()


def layout_tokenizer(directory: Path, layout: str) -> PreTrainedTokenizerBase:
    return load_tokenizer(directory, layout, model_max_length=MAX_LENGTH)
