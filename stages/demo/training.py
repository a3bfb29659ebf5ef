"""Training the demo model to tag each token with its rule label, and checking it learnt the rules."""

from __future__ import annotations

import logging

import numpy as np
import torch
from transformers import DebertaV2Config, PreTrainedTokenizerBase

from stages.core.errors import CheckFailed
from stages.demo.rules import DEMO_LABELS, rule_label
from stages.demo.tokenizer import MAX_LENGTH
from stages.model.token_model import CustomModel
from stages.scoring.batching import pad_batch

log = logging.getLogger(__name__)

SEED = 20240517
NUM_LABELS = len(DEMO_LABELS)
CLASSIFIER_DROPOUT = 0.2
TRAIN_LENGTH = 128
HELD_OUT_EVERY = 10  # every 10th row is held out,
LONG_HELD_OUT_EVERY = 4  # and every 4th row longer than MAX_LENGTH tokens
BATCH_SIZE = 32
TRAIN_STEPS = 400
LEARNING_RATE = 3e-3
WEIGHT_DECAY = 0.01
WARMUP_STEPS = 50
EVAL_BATCH_SIZE = 64
TARGET_ACCURACY = 0.97


def label_table(tokenizer: PreTrainedTokenizerBase) -> torch.Tensor:
    """Label id of every vocabulary id: `rule_label` of its piece, -100 for special tokens but [UNK].

    [UNK] stands for real text, so it is labelled like any other piece; the template's [CLS]/[SEP]
    and the padding carry no text and are ignored.
    """
    pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    labels = torch.tensor([DEMO_LABELS.index(rule_label(piece)) for piece in pieces])
    ignored = [index for index in tokenizer.all_special_ids if index != tokenizer.unk_token_id]
    labels[ignored] = -100
    return labels


def encode(tokenizer: PreTrainedTokenizerBase, texts: list[str], max_length: int) -> list[list[int]]:
    """Token ids of each text, left-truncated to `max_length` as the tokenizer is configured."""
    return tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]


def padded(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded input ids and attention mask, as torch tensors."""
    arrays = pad_batch(sequences, pad_id)
    return torch.from_numpy(arrays["input_ids"]), torch.from_numpy(arrays["attention_mask"])


def batch_labels(ids: torch.Tensor, mask: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Per-token labels from the vocabulary table; padding positions get -100."""
    return table[ids].masked_fill(mask == 0, -100)


def split_rows(texts: list[str], lengths: list[int]) -> tuple[list[str], list[str], list[str]]:
    """Training texts, held-out texts, and the held-out texts longer than `MAX_LENGTH` tokens.

    Long rows are held out more often than the others, so some are always tested at full length.
    """
    long_rows = [index for index, length in enumerate(lengths) if length > MAX_LENGTH]
    held = set(range(0, len(texts), HELD_OUT_EVERY)) | set(long_rows[::LONG_HELD_OUT_EVERY])
    train = [text for index, text in enumerate(texts) if index not in held]
    held_out = [texts[index] for index in sorted(held)]
    return train, held_out, [texts[index] for index in sorted(held.intersection(long_rows))]


def train_model(config: DebertaV2Config, sequences: list[list[int]], table: torch.Tensor, pad_id: int) -> CustomModel:
    """Train `CustomModel` to tag tokens with `rule_label`: AdamW, warmup then linear decay, padded batches."""
    torch.manual_seed(SEED)
    model = CustomModel(config, num_labels=NUM_LABELS, classifier_dropout=CLASSIFIER_DROPOUT)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min((step + 1) / WARMUP_STEPS, (TRAIN_STEPS - step) / (TRAIN_STEPS - WARMUP_STEPS))
    )
    loss_fn = torch.nn.CrossEntropyLoss(ignore_index=-100)
    sampler = np.random.default_rng(SEED)
    model.train()
    for step in range(TRAIN_STEPS):
        picks = sampler.choice(len(sequences), BATCH_SIZE, replace=False)
        ids, mask = padded([sequences[pick] for pick in picks], pad_id)
        logits = model(ids, mask)
        loss = loss_fn(logits.reshape(-1, NUM_LABELS), batch_labels(ids, mask, table).reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 100 == 0 or step == TRAIN_STEPS - 1:
            log.info("step %d/%d loss %.4f", step, TRAIN_STEPS, loss.item())
    return model.eval()


@torch.no_grad()
def token_accuracy(model: CustomModel, sequences: list[list[int]], table: torch.Tensor, pad_id: int) -> float:
    """Share of labelled tokens predicted right, in length-sorted padded batches."""
    correct = total = 0
    ordered = sorted(sequences, key=len)
    for start in range(0, len(ordered), EVAL_BATCH_SIZE):
        ids, mask = padded(ordered[start : start + EVAL_BATCH_SIZE], pad_id)
        labels = batch_labels(ids, mask, table)
        predictions = model(ids, mask).argmax(-1)
        counted = labels != -100
        correct += int((predictions[counted] == labels[counted]).sum())
        total += int(counted.sum())
    return correct / total


@torch.no_grad()
def check_padding_invariance(model: CustomModel, sequences: list[list[int]], pad_id: int) -> None:
    """The shortest sequence's logits must not change when it is padded in a batch with the longest."""
    shortest, longest = min(sequences, key=len), max(sequences, key=len)
    alone = model(*padded([shortest], pad_id))[0]
    beside_longest = model(*padded([shortest, longest], pad_id))[0, : len(shortest)]
    if not torch.allclose(alone, beside_longest, atol=1e-5):
        raise CheckFailed("padding changes the logits: the attention mask is not respected")


def evaluate(
    model: CustomModel,
    tokenizer: PreTrainedTokenizerBase,
    table: torch.Tensor,
    held_out: list[str],
    long_held_out: list[str],
    rows: list[str],
) -> dict[str, float]:
    """Token accuracy on held-out rows (at the training length and at 512), on the long held-out rows
    at 512, and on every row at 512 (left-truncated, as the pipeline scores them)."""
    cases = {
        f"held-out@{TRAIN_LENGTH}": (held_out, TRAIN_LENGTH),
        f"held-out@{MAX_LENGTH}": (held_out, MAX_LENGTH),
        f"held-out-long({len(long_held_out)} rows)@{MAX_LENGTH}": (long_held_out, MAX_LENGTH),
        f"all-rows@{MAX_LENGTH}": (rows, MAX_LENGTH),
    }
    return {
        name: token_accuracy(model, encode(tokenizer, texts, length), table, tokenizer.pad_token_id)
        for name, (texts, length) in cases.items()
    }
