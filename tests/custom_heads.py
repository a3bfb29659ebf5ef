"""Models with heads other than the seed's, as users hold them: the heads of `heads/` (the last four hidden states
concatenated, a BiLSTM, a Linear whose scores a CRF decodes) on a four-layer encoder of the demo's backbone, trained on
the demo's context-dependent rule and saved the seed's way (`torch.save(model.state_dict())`: the encoder under
`model.`, the head's tensors under its own attribute names). Built offline, kept across test sessions (`tests.built`).

The encoder's embeddings and first two layers are the demo checkpoint's (fine-tuned on the rule), its other two as
initialised; it is frozen while the head learns the rule from its hidden states (computed once), a few seconds.
The CRF head learns with pytorch-crf's `CRF` (its log-likelihood), whose parameters are the head's `crf`'s.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchcrf
from torch import nn
from transformers import AutoConfig

from stages.core.params import ModelParams
from stages.model.backbone import load_backbone
from stages.model.custom_head import HeadModel, import_head
from stages.scoring.batching import pad_batch
from stages.scoring.tokens import Framing
from stages.scoring.windows import Window, merged_prediction, window_spans
from tests.built import built_weights, copy_files
from tests.conftest import REPO
from tools.demo.corpus import make_texts
from tools.demo.rules import DEMO_LABELS
from tools.demo.training import Encoded, encode

HEAD_CODE = REPO / "heads"
DEMO_BACKBONE, DEMO_CHECKPOINT = REPO / "models/demo/backbone", REPO / "models/demo/demo.ckpt"
LAYERS = 4  # the demo's two, and two more as initialised: four hidden states for the concatenating head
TRAIN_SEED, TRAIN_ROWS, TRAIN_LENGTH, TRAIN_BATCH, TRAIN_STEPS = 41, 600, 128, 32, 300
TRAIN_THREADS = 1  # on two busy cores, two threads made the LSTM's steps 80x slower (1.4 s vs 117 s for 20)
SOURCES = (  # what the trained heads are built by, beside `tests.built.SOURCES`
    "tests/custom_heads.py", "heads/concat_last_four.py", "heads/bilstm.py", "heads/linear_crf.py",
    "stages/model/custom_head.py", "tools/demo/training.py", "models/demo/demo.ckpt",
)  # fmt: skip


@dataclass(frozen=True)
class Head:
    """One of `heads/`: its class as `model.head` names it and the arguments `model.head_args` gives."""

    name: str
    arguments: dict


HIDDEN = 64  # the demo backbone's
HEADS = {
    "concat-last-four": Head("concat_last_four:ConcatLastFourHead", {"hidden_size": HIDDEN, "num_labels": 4}),
    "bilstm": Head("bilstm:BiLstmHead", {"hidden_size": HIDDEN, "lstm_size": 32, "num_labels": 4}),
    "crf": Head("linear_crf:LinearCrfHead", {"hidden_size": HIDDEN, "num_labels": 4}),
}


def write_backbone(directory: Path) -> None:
    """The demo's backbone files, its config four layers deep."""
    copy_files(DEMO_BACKBONE, directory)
    config = json.loads((DEMO_BACKBONE / "config.json").read_text(encoding="utf-8"))
    (directory / "config.json").write_text(json.dumps({**config, "num_hidden_layers": LAYERS}), encoding="utf-8")


def untrained_model(backbone: Path, head: Head) -> HeadModel:
    """The encoder (the demo checkpoint's layers, then two as initialised) with the head as initialised."""
    torch.manual_seed(0)
    model = HeadModel(AutoConfig.from_pretrained(backbone), import_head(head.name, HEAD_CODE)(**head.arguments), 4)
    demo = torch.load(DEMO_CHECKPOINT, weights_only=True)
    encoder = {key.removeprefix("model."): value for key, value in demo.items() if key.startswith("model.")}
    missing, unexpected = model.model.load_state_dict(encoder, strict=False)
    assert not unexpected and all(".layer.2." in key or ".layer.3." in key for key in missing), missing
    return model.eval()


def hidden_batches(model: HeadModel, rows: Encoded, pad_id: int) -> list[tuple]:
    """The frozen encoder's hidden states on length-sorted batches of the rows, with their masks and labels."""
    order = np.argsort([len(ids) for ids in rows.ids], kind="stable")
    batches = []
    with torch.no_grad():
        for start in range(0, len(order), TRAIN_BATCH):
            picks = order[start : start + TRAIN_BATCH]
            arrays = pad_batch([rows.ids[pick] for pick in picks], pad_id)
            ids, mask = torch.from_numpy(arrays["input_ids"]), torch.from_numpy(arrays["attention_mask"])
            hidden = model.model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
            width = ids.shape[1]
            labels = torch.tensor([rows.labels[pick] + [-100] * (width - len(rows.labels[pick])) for pick in picks])
            batches.append((tuple(hidden), mask, labels))
    return batches


def train_head(model: HeadModel, batches: list[tuple]) -> None:
    """The head learns the rule: cross-entropy on the labelled tokens, or for a CRF head its negative
    log-likelihood over every token (special tokens `O`), as pytorch-crf computes it."""
    head = model.head
    crf = getattr(head, "crf", None)
    likelihood = None
    if crf is not None:
        likelihood = torchcrf.CRF(len(DEMO_LABELS), batch_first=True)
        for part in ("transitions", "start_transitions", "end_transitions"):
            setattr(likelihood, part, getattr(crf, part))  # one set of parameters: the head's
    optimizer = torch.optim.AdamW(head.parameters(), lr=3e-3)
    generator = np.random.default_rng(0)
    head.train()
    for _ in range(TRAIN_STEPS):
        hidden, mask, labels = batches[generator.integers(len(batches))]
        scores = head(hidden, mask)
        if likelihood is None:
            loss = nn.functional.cross_entropy(scores.reshape(-1, scores.shape[-1]), labels.reshape(-1))
        else:
            loss = -likelihood(scores, labels.clamp(min=0), mask.bool(), reduction="mean")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    head.eval()


def head_weights(kind: str) -> dict[str, torch.Tensor]:
    """The trained head's own tensors (by its attribute names), built once per version of this code."""

    def train(directory: Path) -> dict[str, torch.Tensor]:
        threads = torch.get_num_threads()
        torch.set_num_threads(TRAIN_THREADS)
        try:
            backbone = directory / "backbone"
            write_backbone(backbone)
            model = untrained_model(backbone, HEADS[kind])
            _, tokenizer = load_backbone(ModelParams(backbone=str(backbone), checkpoint="-", num_labels=4))
            texts = [text for text in make_texts(TRAIN_SEED) if text and text.strip()][:TRAIN_ROWS]
            train_head(model, hidden_batches(model, encode(tokenizer, texts, TRAIN_LENGTH), tokenizer.pad_token_id))
            return model.head.state_dict()
        finally:
            torch.set_num_threads(threads)

    return built_weights(f"custom-head-{kind}", train, SOURCES)


def write_head_model(directory: Path, kind: str) -> HeadModel:
    """The backbone files in `directory` and the trained model of head `kind` (torch.save its state_dict's
    `checkpoint_state` to have the checkpoint a user holds)."""
    write_backbone(directory)
    model = untrained_model(directory, HEADS[kind])
    model.head.load_state_dict(head_weights(kind))
    return model


def checkpoint_state(model: HeadModel) -> dict[str, torch.Tensor]:
    """The state_dict of the user's model this is: the encoder under `model.`, the head's tensors at the top."""
    return {key.removeprefix("head."): value for key, value in model.state_dict().items()}


def reference_labels(model: HeadModel, content: np.ndarray, framing: Framing, stride: int) -> list[int]:
    """A row's labels as the torch module gives them for its `content` token ids, each of its windows (as infer cuts
    them, `framing`'s special tokens around) run alone, unpadded: the emissions' best label, or for a CRF head
    pytorch-crf's `CRF.decode` of them over the window's tokens; each token's label from the window where it is most
    central, as infer merges windows."""
    decode = None
    if (crf := getattr(model.head, "crf", None)) is not None:
        decode = torchcrf.CRF(model.num_labels, batch_first=True)
        decode.load_state_dict(crf.state_dict())
    windows, labels = [], []
    with torch.no_grad():
        for start, length in window_spans(len(content), framing, "sliding_window", stride):
            input_ids = np.concatenate([framing.prefix, content[start : start + length], framing.suffix])
            ids = torch.from_numpy(input_ids.astype(np.int64))[None]
            emissions = model(ids, torch.ones_like(ids))
            decoded = emissions[0].argmax(-1).tolist() if decode is None else decode.decode(emissions)[0]
            labels.append(np.asarray(decoded[len(framing.prefix) :][:length], dtype=np.int64))
            windows.append(Window(0, start, length, input_ids))
    scores = [np.zeros((len(row), model.num_labels), np.float32) for row in labels]
    return merged_prediction(len(content), windows, scores, labels).label_ids.tolist()
