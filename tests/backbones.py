"""Tiny backbones built from configs, with tokenizers trained in-process and weights trained on the demo's rule
labels: no hub, seconds to build, and kept across test sessions (`tests.built`)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (
    AutoConfig,
    AutoTokenizer,
    BertConfig,
    DistilBertConfig,
    ElectraConfig,
    ModernBertConfig,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
    RobertaConfig,
    XLMRobertaConfig,
)

from stages.model.backbone import mdeberta_v3_config
from stages.model.token_model import CustomModel
from stages.scoring.tokens import TextTokenizer
from tests.built import built, built_weights, copy_files
from tools.demo.rules import CJK_RUN, DEMO_LABELS
from tools.outliers import add_outliers

CORPUS = [
    "Hello world 123, the quick brown Fox jumps over 42 lazy dogs.",
    "Привет мир, Москва 2024 года. Съешь ещё этих мягких французских булок.",
    "你好世界，东京和北京在 2023 年。日本語のテキストです。한국어 문장입니다.",
    "مرحبا بالعالم، هذه جملة عربية قصيرة 7.",
    "Émile Zola écrivit à Paris; Straße, Größe, Ärger — ¿Qué tal, Señor?",
]
SPECIALS = ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"]
MAX_LENGTH = 128  # the tiny configs' position limit
TRAIN_STEPS, TRAIN_BATCH = 150, 16
KINDS = ("deberta-v2", "bert", "distilbert", "roberta", "electra", "modernbert")
# Outlier channels this many times their size (tools.outliers): the trained tiny models decide every label
# by >= 5 logits, so it takes outliers far larger than real encoders' (5-50x) to cost them labels under int8.
OUTLIER_FACTOR = 1000.0


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
        model_max_length=MAX_LENGTH,
    )


def tiny_config(kind: str, vocab_size: int, pad_id: int):
    """A 2-layer, 32-wide config of the given family."""
    shared = {"vocab_size": vocab_size, "pad_token_id": pad_id}
    if kind == "deberta-v2":
        return mdeberta_v3_config(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, position_buckets=64,
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
    if kind in ("roberta", "xlm-roberta"):
        config_class = XLMRobertaConfig if kind == "xlm-roberta" else RobertaConfig
        return config_class(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=130,
            type_vocab_size=1,
            **shared,
        )
    if kind == "electra":  # a narrower embedding projected up to the encoder, as ELECTRA's discriminators do
        return ElectraConfig(
            embedding_size=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            max_position_embeddings=128, **shared,
        )  # fmt: skip
    if kind == "modernbert":  # rotary positions, alternating local (sliding) and global attention, GLU MLP
        cls, sep = SPECIALS.index("[CLS]"), SPECIALS.index("[SEP]")  # the trainers put special tokens first
        return ModernBertConfig(
            hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64,
            max_position_embeddings=128, global_attn_every_n_layers=2, local_attention=16,
            bos_token_id=cls, eos_token_id=sep, cls_token_id=cls, sep_token_id=sep, **shared,
        )  # fmt: skip
    raise ValueError(kind)


def rule_label(piece: str) -> str:
    """A label planted on each token piece by its own characters: digits NUMBER, CJK characters CJK, an uppercase
    first letter CAPITALIZED, else O. A model taught it is confident on any token, random ids too: these models test
    the mechanics (layouts, exporters, precisions), not the gate's judgement (tests.context_model does that)."""
    text = piece.replace("\u2581", "")
    if any(char.isdigit() for char in text):
        return "NUMBER"
    if CJK_RUN.search(text):
        return "CJK"
    letters = [char for char in text if char.isalpha()]
    return "CAPITALIZED" if letters and letters[0].isupper() else "O"


def rule_label_table(tokenizer: PreTrainedTokenizerBase) -> torch.Tensor:
    """Each vocabulary id's demo rule label (of its piece: NUMBER, CJK, CAPITALIZED or O), as the demo labels them;
    O for the special tokens that carry no text ([UNK] stands for text, so it keeps its piece's label)."""
    pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    table = torch.tensor([DEMO_LABELS.index(rule_label(piece)) for piece in pieces])
    textless = [index for index in tokenizer.all_special_ids if index != tokenizer.unk_token_id]
    table[textless] = DEMO_LABELS.index("O")
    return table


def train_on_rules(model: CustomModel, table: torch.Tensor, max_length: int) -> None:
    """Teach the model each token's rule label on random token sequences of every length up to `max_length`.

    A few seconds for these tiny configs, and it leaves every label decided by a wide margin (>= 4 logits
    on held-out sequences), so int8 and fp16 agreement with torch never hinges on random near-ties.
    """
    generator = torch.Generator().manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(TRAIN_STEPS):
        length = int(torch.randint(4, max_length + 1, (1,), generator=generator))
        ids = torch.randint(0, len(table), (TRAIN_BATCH, length), generator=generator)
        logits = model(ids, torch.ones_like(ids))
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), table[ids].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()


def backbone_files(kind: str) -> Path:
    """A backbone directory of one family: config.json and its trained tokenizer (no weights), built once."""

    def build(directory: Path) -> None:
        tokenizer = train_tokenizer(kind)
        tiny_config(kind, len(tokenizer), tokenizer.pad_token_id).save_pretrained(directory)
        tokenizer.save_pretrained(directory)

    return built(f"backbone-{kind}", build)


def trained_weights(kind: str) -> dict[str, torch.Tensor]:
    """Weights of one family's model trained on the demo's rule labels, built once per version of this code."""

    def train(_: Path) -> dict[str, torch.Tensor]:
        tokenizer = AutoTokenizer.from_pretrained(backbone_files(kind))
        torch.manual_seed(0)
        model = CustomModel(
            AutoConfig.from_pretrained(backbone_files(kind)), num_labels=len(DEMO_LABELS), classifier_dropout=0.1
        )
        train_on_rules(model, rule_label_table(tokenizer), MAX_LENGTH)
        return model.state_dict()

    return built_weights(f"weights-{kind}", train)


def make_backbone(directory: Path, kind: str, trained: bool = True, outliers: bool = False) -> CustomModel:
    """Write a backbone directory (config + tokenizer) and return a model of it, trained on the demo's rules
    (or, with `trained=False`, as initialised: for tests of the files alone); with `outliers`, given outlier
    channels of OUTLIER_FACTOR times their size, computing the same function."""
    copy_files(backbone_files(kind), directory)
    torch.manual_seed(0)
    model = CustomModel(AutoConfig.from_pretrained(directory), num_labels=len(DEMO_LABELS), classifier_dropout=0.1)
    if trained:
        model.load_state_dict(trained_weights(kind))
    if outliers:
        add_outliers(model, OUTLIER_FACTOR)
    return model.eval()


def piece_rule_accuracy(source: pd.DataFrame, predictions: pd.DataFrame) -> float:
    """The share of scored tokens labelled as the models were taught (`tests.backbones.rule_label` of each token's
    piece), the row's tokens read again from its own text: high only where every row got its own predictions."""
    tokenizer = TextTokenizer.load(Path("models/onnx"))
    correct = total = 0
    for text, row in zip(source["text"].fillna(""), predictions.itertuples(), strict=True):
        (tokens,) = tokenizer.encode([text])
        pieces = tokenizer.pieces(tokens.input_ids[len(tokens) - row.n_tokens :])
        correct += sum(rule_label(piece) == label for piece, label in zip(pieces, row.labels, strict=True))
        total += row.n_tokens
    return correct / total
