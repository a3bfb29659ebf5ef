"""The normalised model directory: the model built from a checkpoint, written self-contained, and read back.

The directory holds safetensors weights, the backbone config, the tokenizer (with `max_length` and
truncation side set) and `head.json` (labels, head and feeding spec; for your own head, its class, arguments and
the digest of its code, which must still be the code that is imported). Nothing downstream unpickles.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, PretrainedConfig, PreTrainedTokenizerBase

from stages.core.atomic import atomic_directory
from stages.core.errors import UserError
from stages.core.params import ModelParams
from stages.model.backbone import save_tokenizer
from stages.model.checkpoint import compare_keys, describe_mismatch, read_checkpoint
from stages.model.custom_head import HeadModel, TokenModel, build_head_model, check_output, code_digest
from stages.model.hub import HubLayout, from_hub_state, hub_config, hub_layout, to_hub_state, unused_keys
from stages.model.state_mapping import map_state
from stages.model.token_model import CustomModel

log = logging.getLogger(__name__)

HEAD_FILE = "head.json"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
HEAD_FORMAT = "token-linear/3"  # /2: init_seed; /3: your own head (head, head_args, head_code, head_code_sha256)


@dataclass(frozen=True)
class HeadSpec:
    """What a normalised model directory says about the head and how the model is fed."""

    num_labels: int
    labels: tuple[str, ...]
    classifier_dropout: float
    input_names: tuple[str, ...]
    max_length: int
    truncation_side: str
    source_checkpoint: str
    source_sha256: str
    init_seed: int  # initialised what the checkpoint did not hold (model.seed)
    format: str = HEAD_FORMAT
    hub_prefix: str | None = None  # the encoder's name in the weights file: a Hugging Face layout; None: the seed's
    backbone: str | None = None  # model.backbone: a directory, or a Hugging Face id
    backbone_revision: str | None = None  # the Hugging Face cache snapshot it was read from; None: another directory
    head: str | None = None  # model.head: your head's class (module:Class); None: the seed's Linear
    head_args: dict[str, Any] | None = None  # model.head_args
    head_code: str | None = None  # model.head_code, where `head` is imported from
    head_code_sha256: str | None = None  # `code_digest` of head_code when the model was built

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def from_file(cls, path: Path) -> HeadSpec:
        """The spec in `path`; one written in another format is a `UserError` saying to write it again."""
        fields = json.loads(path.read_text(encoding="utf-8"))
        if fields.get("format") != HEAD_FORMAT:
            raise UserError(
                f"{path} is in format {fields.get('format')!r}, not {HEAD_FORMAT!r}: it was written by another release; "
                "run the load_checkpoint stage again (`dvc repro -f -s load_checkpoint`)"
            )
        fields["labels"] = tuple(fields["labels"])
        fields["input_names"] = tuple(fields["input_names"])
        return cls(**fields)


def build_model(config: PretrainedConfig, params: ModelParams, checkpoint: Path) -> TokenModel:
    """The model class (the seed's, or the encoder with `model.head`) with the checkpoint's weights, matched by
    content (`map_state`), after a strict key check; your head's output is checked to be per-token scores."""
    if params.head is None:
        model: TokenModel = CustomModel(config, params.num_labels, params.classifier_dropout)
    else:
        model = build_head_model(config, params.num_labels, params.head, params.head_args, Path(params.head_code))
    model_state = model.state_dict()
    mapping = map_state(read_checkpoint(checkpoint), model_state)
    report = compare_keys(mapping.state, model_state)
    if not report.ok:
        raise UserError(describe_mismatch(report, checkpoint) + f"\n  (matched so far: {mapping.describe()})")
    log.info("checkpoint %s: %s (%d labels)", checkpoint, mapping.describe(), params.num_labels)
    if mapping.filled:
        log.info("not in the checkpoint, left as initialised (a token classifier never runs them): %s", mapping.filled)
    model.load_state_dict(mapping.state, strict=True)
    if isinstance(model, HeadModel):
        check_output(model.eval(), params.head)
    return model.eval()


def write_model_dir(
    model: TokenModel, tokenizer: PreTrainedTokenizerBase, spec: HeadSpec, target: Path
) -> HubLayout | str:
    """Write the normalised model directory atomically: a standard Hugging Face token-classification directory
    where the family's class is the seed's model; returns that layout, or why the project's names were kept."""
    layout = (
        hub_layout(model) if isinstance(model, CustomModel) else f"model.head {spec.head} is not a transformers class"
    )
    weights = {key: tensor.contiguous() for key, tensor in model.state_dict().items()}
    architecture = None
    if isinstance(layout, HubLayout):
        weights, architecture = to_hub_state(weights, layout), layout.architecture
        spec = replace(spec, hub_prefix=layout.prefix)
    with atomic_directory(target) as staging:
        save_file(weights, staging / WEIGHTS_FILE, metadata={"format": "pt"})
        hub_config(model.config, spec.labels, architecture).save_pretrained(staging)
        save_tokenizer(tokenizer, staging)
        (staging / HEAD_FILE).write_text(spec.to_json(), encoding="utf-8")
    return layout


def load_model_dir(directory: Path) -> tuple[TokenModel, HeadSpec]:
    """Load a normalised model directory (written by stage `load_checkpoint`) in eval mode; your own head is imported
    again, from the code it was built with."""
    if not (directory / HEAD_FILE).is_file():
        raise UserError(
            f"normalised model directory {directory} not found (model.output); "
            "run stage load_checkpoint first (`dvc repro` runs it)"
        )
    spec = HeadSpec.from_file(directory / HEAD_FILE)
    config = AutoConfig.from_pretrained(directory, local_files_only=True)
    torch.manual_seed(spec.init_seed)  # weights the file does not hold (an unused pooler), as load_checkpoint made them
    model = model_of(spec, config, directory)
    state = load_file(directory / WEIGHTS_FILE)
    if spec.hub_prefix is not None:
        state = from_hub_state(state, spec.hub_prefix)
        state.update({key: model.state_dict()[key] for key in unused_keys(model)})
    model.load_state_dict(state, strict=True)
    return model.eval(), spec


def model_of(spec: HeadSpec, config: PretrainedConfig, directory: Path) -> TokenModel:
    """The model class `spec` describes, as initialised; your head's code must be the code it was built with."""
    if spec.head is None:
        return CustomModel(config, spec.num_labels, spec.classifier_dropout)
    code = Path(spec.head_code)
    if not code.is_dir() or code_digest(code) != spec.head_code_sha256:
        raise UserError(
            f"model.head_code {code} is not the code {directory} was built with (its Python files differ): "
            "run the load_checkpoint stage again (`dvc repro`)"
        )
    return build_head_model(config, spec.num_labels, spec.head, spec.head_args, code)
