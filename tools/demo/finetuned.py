"""A fine-tuned encoder as users hold them, for the int8 tests: a BERT model (the class of a fine-tuned MiniLM, a
cased WordPiece `vocab.txt` as bert-base-cased ships it) whose LayerNorms carry outlier channels, as pretrained
encoders have them (two hidden dimensions `--outlier-gain` times the rest in every block), fine-tuned on the demo
rule's spans (labels that depend on context: confident on text, unsure on random token ids) with its loss on the
logits divided by `--temperature`, so that its logits reach the size a fine-tuned model's do (10 and more).

    python -m tools.demo.finetuned --output tests/data/finetuned-bert

Writes `config.json`, `vocab.txt`, `tokenizer_config.json` and `model.ckpt` (`torch.save(model.state_dict())`, the
seed notes' way), and prints its held-out token accuracy and the size of its logits and margins. Seeded: two runs
on one machine write the same files.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
from transformers import BertConfig

from stages.core.runner import run_stage
from stages.model.token_model import CustomModel
from stages.model.tokenizer_layout import load_tokenizer
from tools.cli import option, parse
from tools.demo.__main__ import TRAINING_SEED, VALIDATION_SEED
from tools.demo.corpus import make_texts
from tools.demo.training import NUM_LABELS, TRAIN_LENGTH, encode, fit, padded, token_accuracy

log = logging.getLogger(__name__)

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]  # bert-base-cased's first ids
VOCAB_SIZE = 3000
SHAPE = {"hidden_size": 64, "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 256}
OUTLIER_CHANNELS = (7, 41)  # hidden dimensions every LayerNorm scales up


@dataclass(frozen=True)
class Finetuned:
    """The fine-tuned test model's settings."""

    output: Path = option(help="the backbone and checkpoint directory to write")
    outlier_gain: float = option(10.0, "the outlier channels' LayerNorm scale (1: none)")
    temperature: float = option(3.0, "the training loss reads the logits divided by this")
    steps: int = option(600, "training steps of 32 rows")
    learning_rate: float = option(2e-3, "AdamW's peak learning rate")


def texts(seed: int) -> list[str]:
    return [text for text in make_texts(seed) if isinstance(text, str) and text.strip()]


def write_backbone(directory: Path, training: list[str]) -> None:
    """A cased WordPiece vocabulary of the training texts, as bert-base-cased ships one, and its config."""
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=False)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.train_from_iterator(training, trainers.WordPieceTrainer(vocab_size=VOCAB_SIZE, special_tokens=SPECIALS))
    vocab = tokenizer.get_vocab()
    (directory / "vocab.txt").write_text("".join(token + "\n" for token in sorted(vocab, key=vocab.get)))
    (directory / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": False}) + "\n")
    config = BertConfig(vocab_size=len(vocab), max_position_embeddings=512, pad_token_id=0, **SHAPE)
    config.save_pretrained(directory)


def with_outliers(model: CustomModel, gain: float) -> CustomModel:
    """Every LayerNorm of the encoder scales `OUTLIER_CHANNELS` by `gain` before training, so the trained model
    carries them through its residual stream, as a pretrained encoder does."""
    with torch.no_grad():
        for module in model.model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight[list(OUTLIER_CHANNELS)] = gain
    return model


@torch.no_grad()
def logit_sizes(model: CustomModel, ids: list[list[int]], pad_id: int) -> dict[str, float]:
    """The median and largest |logit| and the 1st and 5th percentile top-1 margins over real tokens."""
    tokens, mask = padded(ids, pad_id)
    logits = model(tokens, mask)[mask.bool()]
    top = logits.topk(2, dim=-1).values
    margins = top[:, 0] - top[:, 1]
    return {
        "logit_p50": float(logits.abs().median()),
        "logit_max": float(logits.abs().max()),
        "margin_p1": float(margins.quantile(0.01)),
        "margin_p5": float(margins.quantile(0.05)),
    }


def main(argv: Sequence[str] | None = None) -> None:
    settings = parse(Finetuned, argv, __doc__)
    torch.set_num_threads(1)  # deterministic, and steady on a shared machine
    training = texts(TRAINING_SEED)
    write_backbone(settings.output, training)
    tokenizer = load_tokenizer(settings.output, "vocab.txt", model_max_length=512)
    config = BertConfig.from_pretrained(settings.output)
    torch.manual_seed(0)
    model = with_outliers(CustomModel(config, NUM_LABELS, classifier_dropout=0.1), settings.outlier_gain)
    rows = encode(tokenizer, training, TRAIN_LENGTH)
    fit(model, rows, tokenizer.pad_token_id, settings.steps, settings.learning_rate, settings.temperature)
    torch.save(model.state_dict(), settings.output / "model.ckpt")
    held_out = encode(tokenizer, texts(VALIDATION_SEED)[:400], TRAIN_LENGTH)
    accuracy = token_accuracy(model, held_out, tokenizer.pad_token_id)
    sizes = logit_sizes(model, held_out.ids[:200], tokenizer.pad_token_id)
    log.info(
        "wrote %s: held-out token accuracy %.4f, %s",
        settings.output,
        accuracy,
        ", ".join(f"{name} {value:.2f}" for name, value in sizes.items()),
    )


if __name__ == "__main__":
    run_stage(main)
