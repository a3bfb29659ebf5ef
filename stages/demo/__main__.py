"""Regenerate every demo artefact: the demo dataset, a tiny DeBERTa-v2 backbone and a trained checkpoint.

The pipeline needs a checkpoint, a backbone directory and a dataset to run end to end, and the real
ones (mdeberta-v3-base, production text) are neither small nor shareable. This builds stand-ins
offline and deterministically:

* `data/demo.parquet`: synthetic multilingual rows (`stages.demo.corpus`).
* `models/demo/backbone/`: a tiny DeBERTa-v2 with mdeberta-v3-base's architecture choices, in the
  files the hub ships mdeberta-v3-base with: `config.json`, a SentencePiece Unigram model
  `spm.model` trained on the demo texts, and `tokenizer_config.json`; no `tokenizer.json`
  (`stages.demo.tokenizer`).
* `models/demo/demo.ckpt`: `torch.save(model.state_dict())` of the seed's `CustomModel`, trained
  briefly to tag each token with `stages.demo.rules.rule_label`, so predictions are checkable
  (`stages.demo.training`).

Everything is seeded, so two runs write byte-identical files on the same machine. Run with
`python -m stages.demo` from the repository root; it takes a minute or two on two CPU cores.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoConfig

from stages.core.errors import CheckFailed
from stages.core.runner import run_stage
from stages.demo.corpus import make_texts, write_dataset
from stages.demo.tokenizer import MAX_LENGTH, save_backbone, train_sentencepiece
from stages.demo.training import (
    TARGET_ACCURACY,
    TRAIN_LENGTH,
    check_padding_invariance,
    encode,
    evaluate,
    label_table,
    split_rows,
    train_model,
)

log = logging.getLogger(__name__)

DATASET_PATH = Path("data/demo.parquet")
BACKBONE_DIR = Path("models/demo/backbone")
CHECKPOINT_PATH = Path("models/demo/demo.ckpt")


def length_percentiles(sequences: list[list[int]]) -> dict[str, int]:
    """p50/p90/p99/max of the sequences' token counts."""
    lengths = np.array([len(sequence) for sequence in sequences])
    return {
        "p50": int(np.percentile(lengths, 50)),
        "p90": int(np.percentile(lengths, 90)),
        "p99": int(np.percentile(lengths, 99)),
        "max": int(lengths.max()),
    }


def directory_size(path: Path) -> int:
    """Total bytes of the files under `path`."""
    return sum(file.stat().st_size for file in path.rglob("*") if file.is_file())


def main() -> None:
    """Regenerate dataset, backbone and checkpoint, and check the model's token accuracy."""
    started = time.perf_counter()
    torch.set_num_threads(2)
    texts = make_texts()
    write_dataset(texts, DATASET_PATH)
    present = [text for text in texts if text is not None]
    log.info("wrote %s: %d rows, %d bytes", DATASET_PATH, len(texts), DATASET_PATH.stat().st_size)

    tokenizer = save_backbone(train_sentencepiece(present), BACKBONE_DIR)
    config = AutoConfig.from_pretrained(BACKBONE_DIR)
    untruncated = [encoding.ids for encoding in tokenizer.backend_tokenizer.encode_batch(present)]
    unknown = sum(ids.count(tokenizer.unk_token_id) for ids in untruncated)
    log.info("vocab %d, [UNK] %d of %d tokens", len(tokenizer), unknown, sum(map(len, untruncated)))
    log.info("token lengths (untruncated, [CLS]/[SEP] included): %s", length_percentiles(untruncated))

    train_texts, held_out, long_held_out = split_rows(present, [len(ids) for ids in untruncated])
    table = label_table(tokenizer)
    model = train_model(config, encode(tokenizer, train_texts, TRAIN_LENGTH), table, tokenizer.pad_token_id)
    CHECKPOINT_PATH.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), CHECKPOINT_PATH)

    check_padding_invariance(model, encode(tokenizer, held_out, MAX_LENGTH), tokenizer.pad_token_id)
    accuracies = evaluate(model, tokenizer, table, held_out, long_held_out, present)
    for name, accuracy in accuracies.items():
        log.info("token accuracy %s: %.4f", name, accuracy)
    log.info(
        "models/demo: %d bytes (checkpoint %d); done in %.1f s",
        directory_size(CHECKPOINT_PATH.parent),
        CHECKPOINT_PATH.stat().st_size,
        time.perf_counter() - started,
    )
    if min(accuracies.values()) < TARGET_ACCURACY:
        raise CheckFailed(f"token accuracy {min(accuracies.values()):.4f} is below {TARGET_ACCURACY}")


if __name__ == "__main__":
    run_stage(main)
