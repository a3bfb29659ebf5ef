"""Regenerate every demo artefact: the demo datasets, a tiny DeBERTa-v2 backbone and a trained checkpoint.

The pipeline needs a checkpoint, a backbone directory and datasets to run end to end, and the real
ones (mdeberta-v3-base, production text) are neither small nor shareable. This builds stand-ins
offline and deterministically:

* `data/demo.parquet`: synthetic multilingual rows (`tools.demo.corpus`) to score, and
  `data/validation.parquet`, a labelled validation split of other rows for the parity gate; both carry
  gold spans (`entities`) from the demo rule (`tools.demo.rules`), so `infer` and `parity` report
  entity F1.
* `models/demo/backbone/`: a tiny DeBERTa-v2 with mdeberta-v3-base's architecture choices, in the
  files the hub ships mdeberta-v3-base with: `config.json`, a SentencePiece Unigram model
  `spm.model` trained on the demo texts, and `tokenizer_config.json`; no `tokenizer.json`
  (`tools.demo.tokenizer`).
* `models/demo/demo.ckpt`: `torch.save(model.state_dict())` of the seed's `CustomModel`, trained
  briefly on the demo rule's spans over a third set of rows, written nowhere (`tools.demo.training`).

Everything is seeded, so two runs write byte-identical files on the same machine. Run with
`python -m tools.demo` from the repository root; it takes a minute or two on two CPU cores.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from transformers import AutoConfig

from stages.core.errors import CheckFailed
from stages.core.runner import run_stage
from tools.cli import NoSettings, parse
from tools.demo.corpus import SEED, make_texts, write_dataset
from tools.demo.tokenizer import MAX_LENGTH, save_backbone, train_sentencepiece
from tools.demo.training import TARGET_ACCURACY, TRAIN_LENGTH, check_padding_invariance, encode, evaluate, train_model

log = logging.getLogger(__name__)

DATASET_PATH = Path("data/demo.parquet")
VALIDATION_PATH = Path("data/validation.parquet")
BACKBONE_DIR = Path("models/demo/backbone")
CHECKPOINT_PATH = Path("models/demo/demo.ckpt")
VALIDATION_SEED, TRAINING_SEED = SEED + 1, SEED + 2  # other rows of the same distribution
VALIDATION_ROWS = 1000


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


def main(argv: Sequence[str] | None = None) -> None:
    """Regenerate datasets, backbone and checkpoint, and check the model's token accuracy on unseen rows."""
    parse(NoSettings, argv, __doc__)
    started = time.perf_counter()
    torch.set_num_threads(2)
    texts = make_texts()
    write_dataset(texts, DATASET_PATH)
    validation = make_texts(VALIDATION_SEED)[:VALIDATION_ROWS]
    write_dataset(validation, VALIDATION_PATH)
    present = [text for text in texts if text is not None]
    for path, rows in ((DATASET_PATH, texts), (VALIDATION_PATH, validation)):
        log.info("wrote %s: %d rows, %d bytes", path, len(rows), path.stat().st_size)

    tokenizer = save_backbone(train_sentencepiece(present), BACKBONE_DIR)
    config = AutoConfig.from_pretrained(BACKBONE_DIR)
    untruncated = [encoding.ids for encoding in tokenizer.backend_tokenizer.encode_batch(present)]
    unknown = sum(ids.count(tokenizer.unk_token_id) for ids in untruncated)
    log.info("vocab %d, [UNK] %d of %d tokens", len(tokenizer), unknown, sum(map(len, untruncated)))
    log.info("token lengths (untruncated, [CLS]/[SEP] included): %s", length_percentiles(untruncated))

    training = [text for text in make_texts(TRAINING_SEED) if text and text.strip()]
    held_out = [text for text in validation if text and text.strip()]
    model = train_model(config, encode(tokenizer, training, TRAIN_LENGTH), tokenizer.pad_token_id)
    CHECKPOINT_PATH.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), CHECKPOINT_PATH)

    check_padding_invariance(model, encode(tokenizer, held_out, MAX_LENGTH).ids, tokenizer.pad_token_id)
    accuracies = evaluate(model, tokenizer, held_out, MAX_LENGTH)
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
