"""Tiny backbones built from configs, with tokenizers trained in-process: no hub, seconds to build."""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import BertConfig, DebertaV2Config, DistilBertConfig, PreTrainedTokenizerFast, RobertaConfig

from stages.model.token_model import CustomModel

CORPUS = [
    "Hello world 123, the quick brown Fox jumps over 42 lazy dogs.",
    "Привет мир, Москва 2024 года. Съешь ещё этих мягких французских булок.",
    "你好世界，东京和北京在 2023 年。日本語のテキストです。한국어 문장입니다.",
    "مرحبا بالعالم، هذه جملة عربية قصيرة 7.",
    "Émile Zola écrivit à Paris; Straße, Größe, Ärger — ¿Qué tal, Señor?",
]
SPECIALS = ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"]
KINDS = ("deberta-v2", "bert", "distilbert", "roberta")


def train_tokenizer(kind: str) -> PreTrainedTokenizerFast:
    """A Unigram (SentencePiece-style) tokenizer for DeBERTa, WordPiece for the BERT family."""
    if kind == "deberta-v2":
        tokenizer = Tokenizer(models.Unigram())
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
        tokenizer.decoder = decoders.Metaspace()
        trainer = trainers.UnigramTrainer(vocab_size=300, special_tokens=SPECIALS, unk_token="[UNK]")
    else:
        tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tokenizer.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(vocab_size=300, special_tokens=SPECIALS)
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.train_from_iterator(CORPUS * 20, trainer)
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=128,
    )


def tiny_config(kind: str, vocab_size: int, pad_id: int):
    """A 2-layer, 32-wide config of the given family."""
    shared = {"vocab_size": vocab_size, "pad_token_id": pad_id}
    if kind == "deberta-v2":
        return DebertaV2Config(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            type_vocab_size=0, relative_attention=True, pos_att_type=["p2c", "c2p"], position_biased_input=False,
            max_relative_positions=-1, position_buckets=64, norm_rel_ebd="layer_norm", share_att_key=True,
            max_position_embeddings=128, **shared,
        )  # fmt: skip
    if kind == "bert":
        return BertConfig(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=128,
            **shared,
        )
    if kind == "distilbert":
        return DistilBertConfig(dim=32, n_layers=2, n_heads=2, hidden_dim=64, max_position_embeddings=128, **shared)
    if kind == "roberta":
        return RobertaConfig(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=130,
            type_vocab_size=1,
            **shared,
        )
    raise ValueError(kind)


def make_backbone(directory: Path, kind: str) -> CustomModel:
    """Write a backbone directory (config + tokenizer) and return a random-weight model built from it."""
    tokenizer = train_tokenizer(kind)
    config = tiny_config(kind, len(tokenizer), tokenizer.pad_token_id)
    directory.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    torch.manual_seed(0)
    return CustomModel(config, num_labels=4, classifier_dropout=0.1).eval()
