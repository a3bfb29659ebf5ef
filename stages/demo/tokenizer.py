"""The demo's SentencePiece-style Unigram tokenizer, trained on the demo texts deterministically."""

from __future__ import annotations

import math
import unicodedata
from collections import Counter
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, DebertaV2Config, PreTrainedTokenizerFast

from stages.core.errors import CheckFailed
from stages.model.backbone import mdeberta_v3_config

SPECIAL_TOKENS = ("[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]")
VOCAB_SIZE = 3500
SCORE_ROUNDS = 3
MAX_LENGTH = 512


def bare_tokenizer(model: models.Model) -> Tokenizer:
    """A SentencePiece-style pipeline around `model`: NFKC, Metaspace, special tokens."""
    tokenizer = Tokenizer(model)
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    tokenizer.add_special_tokens(list(SPECIAL_TOKENS))
    return tokenizer


def train_pieces(texts: list[str]) -> list[str]:
    """The pieces `UnigramTrainer` selects (special tokens excluded), with an alphabet covering the texts."""
    alphabet = sorted({char for text in texts for char in unicodedata.normalize("NFKC", text)} - {" "})
    trainer = trainers.UnigramTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=list(SPECIAL_TOKENS),
        unk_token="[UNK]",
        initial_alphabet=alphabet,
        show_progress=False,
    )
    tokenizer = bare_tokenizer(models.Unigram())
    tokenizer.train_from_iterator(texts, trainer)
    return sorted(set(tokenizer.get_vocab()) - set(SPECIAL_TOKENS))


def ordered_vocab(scores: dict[str, float]) -> list[tuple[str, float]]:
    """Special tokens first (ids 0-4), then pieces by descending score, ties by piece."""
    ranked = sorted(scores.items(), key=lambda item: (-item[1], item[0]))
    return [(token, 0.0) for token in SPECIAL_TOKENS] + ranked


def fit_scores(pieces: list[str], texts: list[str]) -> dict[str, float]:
    """Piece log-probabilities by a few rounds of Viterbi (hard) EM from equal scores.

    The trainer's own scores are not reproducible: its EM sums over a hash map (last-bit float
    differences reorder the ids) and the characters it appends for coverage get arbitrary scores.
    Its piece set is stable, so the scores are re-estimated here deterministically.
    """
    scores = dict.fromkeys(pieces, -1.0)
    for _ in range(SCORE_ROUNDS):
        model = models.Unigram(ordered_vocab(scores), SPECIAL_TOKENS.index("[UNK]"), False)
        encodings = bare_tokenizer(model).encode_batch(texts)
        counts = Counter(token for encoding in encodings for token in encoding.tokens)
        total = sum(counts[piece] + 0.5 for piece in pieces)
        scores = {piece: math.log((counts[piece] + 0.5) / total) for piece in pieces}
    return scores


def train_tokenizer(texts: list[str]) -> PreTrainedTokenizerFast:
    """Train the Unigram tokenizer and wrap it with `[CLS] $A [SEP]` templates, left truncation, 512 max."""
    vocab = ordered_vocab(fit_scores(train_pieces(texts), texts))
    tokenizer = bare_tokenizer(models.Unigram(vocab, SPECIAL_TOKENS.index("[UNK]"), False))
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=MAX_LENGTH,
        truncation_side="left",
    )


def tiny_deberta_config(tokenizer: PreTrainedTokenizerFast) -> DebertaV2Config:
    """A tiny DeBERTa-v2 config with mdeberta-v3-base's architecture choices."""
    return mdeberta_v3_config(
        vocab_size=len(tokenizer),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        pad_token_id=tokenizer.pad_token_id,
    )


def save_backbone(tokenizer: PreTrainedTokenizerFast, config: DebertaV2Config, directory: Path) -> None:
    """Save config and tokenizer, then check the tokenizer loads back and returns offsets."""
    directory.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    reloaded = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    probe = ["Élise visited 東京 on 2024-05-03 🎉", "", "Иван"]
    encoded = reloaded(probe, return_offsets_mapping=True)
    if encoded["input_ids"] != tokenizer(probe)["input_ids"] or len(encoded["offset_mapping"]) != len(probe):
        raise CheckFailed(f"the tokenizer saved in {directory} does not load back identically")
