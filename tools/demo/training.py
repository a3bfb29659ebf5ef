"""Training the demo model on the demo rule's spans (a token takes the label of the span holding it), and checking
it learnt them on rows it never saw."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from transformers import DebertaV2Config, PreTrainedTokenizerBase

from stages.core.errors import CheckFailed
from stages.model.token_model import CustomModel
from stages.scoring.batching import pad_batch
from stages.scoring.quality import gold_token_types
from tools.demo.rules import DEMO_LABELS, entity_spans

log = logging.getLogger(__name__)

SEED = 20240517
NUM_LABELS = len(DEMO_LABELS)
CLASSIFIER_DROPOUT = 0.2
TRAIN_LENGTH = 128
BATCH_SIZE = 32
TRAIN_STEPS = 400
LEARNING_RATE = 3e-3
WEIGHT_DECAY = 0.01
WARMUP_STEPS = 50
EVAL_BATCH_SIZE = 64
TARGET_ACCURACY = 0.97


@dataclass(frozen=True)
class Encoded:
    """Texts as token ids and, per token, the label id of the demo rule's span holding it (-100: special tokens)."""

    ids: list[list[int]]
    labels: list[list[int]]


def encode(tokenizer: PreTrainedTokenizerBase, texts: list[str], max_length: int) -> Encoded:
    """Token ids of each text, truncated to `max_length` as the tokenizer is configured, and their rule labels."""
    encoding = tokenizer(
        texts, truncation=True, max_length=max_length, return_offsets_mapping=True, return_special_tokens_mask=True
    )
    labels = []
    for text, offsets, special in zip(texts, encoding["offset_mapping"], encoding["special_tokens_mask"], strict=True):
        gold = [(span["start"], span["end"], span["label"]) for span in entity_spans(text)]
        types = gold_token_types(text, offsets, gold)
        labels.append(
            [-100 if is_special else DEMO_LABELS.index(kind) for kind, is_special in zip(types, special, strict=True)]
        )
    return Encoded(encoding["input_ids"], labels)


def padded(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded input ids and attention mask, as torch tensors."""
    arrays = pad_batch(sequences, pad_id)
    return torch.from_numpy(arrays["input_ids"]), torch.from_numpy(arrays["attention_mask"])


def padded_labels(labels: list[list[int]], length: int) -> torch.Tensor:
    """Label ids padded with -100 to `length`."""
    return torch.tensor([row + [-100] * (length - len(row)) for row in labels])


def train_model(config: DebertaV2Config, rows: Encoded, pad_id: int) -> CustomModel:
    """Train `CustomModel` to tag tokens with the rule's spans: AdamW, warmup then linear decay, padded batches."""
    torch.manual_seed(SEED)
    model = CustomModel(config, num_labels=NUM_LABELS, classifier_dropout=CLASSIFIER_DROPOUT)
    return fit(model, rows, pad_id)


def fit(
    model: CustomModel,
    rows: Encoded,
    pad_id: int,
    steps: int = TRAIN_STEPS,
    learning_rate: float = LEARNING_RATE,
    temperature: float = 1.0,
) -> CustomModel:
    """Fit `model` to the rows' labels: AdamW, warmup then linear decay, padded batches, the loss on the logits
    divided by `temperature` (above 1, the model learns logits that much larger for the same confidence)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=WEIGHT_DECAY)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min((step + 1) / WARMUP_STEPS, (steps - step) / (steps - WARMUP_STEPS))
    )
    loss_fn = torch.nn.CrossEntropyLoss(ignore_index=-100)
    sampler = np.random.default_rng(SEED)
    model.train()
    for step in range(steps):
        picks = sampler.choice(len(rows.ids), BATCH_SIZE, replace=False)
        ids, mask = padded([rows.ids[pick] for pick in picks], pad_id)
        labels = padded_labels([rows.labels[pick] for pick in picks], ids.shape[1])
        loss = loss_fn(model(ids, mask).reshape(-1, NUM_LABELS) / temperature, labels.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 100 == 0 or step == steps - 1:
            log.info("step %d/%d loss %.4f", step, steps, loss.item())
    return model.eval()


@torch.no_grad()
def token_accuracy(model: CustomModel, rows: Encoded, pad_id: int) -> float:
    """Share of labelled tokens predicted right, in length-sorted padded batches."""
    correct = total = 0
    order = sorted(range(len(rows.ids)), key=lambda index: len(rows.ids[index]))
    for start in range(0, len(order), EVAL_BATCH_SIZE):
        picks = order[start : start + EVAL_BATCH_SIZE]
        ids, mask = padded([rows.ids[pick] for pick in picks], pad_id)
        labels = padded_labels([rows.labels[pick] for pick in picks], ids.shape[1])
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
    model: CustomModel, tokenizer: PreTrainedTokenizerBase, held_out: list[str], max_length: int
) -> dict[str, float]:
    """Token accuracy on rows the model never saw, at the training length and at `max_length` (left-truncated, as the
    pipeline scores them)."""
    return {
        f"held-out@{length}": token_accuracy(model, encode(tokenizer, held_out, length), tokenizer.pad_token_id)
        for length in (TRAIN_LENGTH, max_length)
    }
