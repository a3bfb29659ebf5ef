"""The demo backbone in the hub's layout of microsoft/mdeberta-v3-base: `config.json`, a SentencePiece Unigram
model `spm.model` trained on the demo texts, and `tokenizer_config.json`; no `tokenizer.json`."""

from __future__ import annotations

import io
import json
from pathlib import Path

import sentencepiece
from transformers import DebertaV2Config, PreTrainedTokenizerBase

from stages.core.errors import CheckFailed
from stages.model.backbone import mdeberta_v3_config
from stages.model.tokenizer_layout import load_tokenizer

SENTENCEPIECE_FILE = "spm.model"
MDEBERTA_TOKENIZER_CONFIG = {
    "do_lower_case": False,
    "vocab_type": "spm",
}  # microsoft/mdeberta-v3-base's, as the hub has it
VOCAB_SIZE = 3500  # SentencePiece pieces; the tokenizer class adds [MASK] after them, as mdeberta-v3-base's does
MAX_LENGTH = 512
PAD_ID = 0  # [PAD] 0, [CLS] 1, [SEP] 2, [UNK] 3, as in mdeberta-v3-base's spm.model


def train_sentencepiece(texts: list[str]) -> bytes:
    """A Unigram SentencePiece model of the texts (NFKC normalisation, every character covered), deterministically:
    one thread, the texts in order, none sampled."""
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_writer=model,
        model_type="unigram",
        vocab_size=VOCAB_SIZE,
        character_coverage=1.0,
        normalization_rule_name="nmt_nfkc",
        num_threads=1,
        input_sentence_size=0,
        shuffle_input_sentence=False,
        max_sentence_length=1 << 16,
        minloglevel=2,
        pad_id=PAD_ID,
        pad_piece="[PAD]",
        bos_id=1,
        bos_piece="[CLS]",
        eos_id=2,
        eos_piece="[SEP]",
        unk_id=3,
        unk_piece="[UNK]",
    )
    return model.getvalue()


def tiny_deberta_config(vocab_size: int, pad_token_id: int) -> DebertaV2Config:
    """A tiny DeBERTa-v2 config with mdeberta-v3-base's architecture choices."""
    return mdeberta_v3_config(
        vocab_size=vocab_size,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        pad_token_id=pad_token_id,
    )


def save_backbone(sentencepiece_model: bytes, directory: Path) -> PreTrainedTokenizerBase:
    """Write the backbone as the hub ships mdeberta-v3-base, then load its tokenizer as `load_checkpoint` does."""
    directory.mkdir(parents=True, exist_ok=True)
    for stale in ("tokenizer.json", "special_tokens_map.json"):
        (directory / stale).unlink(missing_ok=True)
    (directory / SENTENCEPIECE_FILE).write_bytes(sentencepiece_model)
    (directory / "tokenizer_config.json").write_text(json.dumps(MDEBERTA_TOKENIZER_CONFIG) + "\n", encoding="utf-8")
    config = tiny_deberta_config(VOCAB_SIZE + 1, PAD_ID)
    config.save_pretrained(directory)
    tokenizer = load_tokenizer(directory, str(directory), model_max_length=MAX_LENGTH, truncation_side="left")
    if len(tokenizer) != config.vocab_size or tokenizer.pad_token_id != config.pad_token_id:
        raise CheckFailed(
            f"the tokenizer in {directory} has {len(tokenizer)} tokens and pad id {tokenizer.pad_token_id}; "
            f"the config says {config.vocab_size} and {config.pad_token_id}"
        )
    return tokenizer
