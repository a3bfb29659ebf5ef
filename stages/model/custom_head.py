"""Your own head on the encoder (`model.head`): its class imported from `model.head_code` and built with
`model.head_args`, run on every hidden state of the encoder (`output_hidden_states`: the embeddings' output, then each
layer's) and the attention mask, returning per-token scores `[batch, sequence, labels]`. Importing it runs your code,
so it happens only where `model.head` names a class, and every import is logged, as `trust_remote_code` is.

The encoder is the seed's (`model.`, built from the backbone's config); the head is the module under `head.`, so the
checkpoint's own head tensors load into it strictly, under whatever prefix the checkpoint holds them.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import re
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoModel, PretrainedConfig

from stages.core.errors import UserError
from stages.model.token_model import CustomModel, backbone_input_names, backbone_inputs

log = logging.getLogger(__name__)

HEAD_NAME = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")  # module:Class
PROBE_SHAPE = (2, 7)  # the batch the head's output is checked on; its second row is padded


class HeadModel(nn.Module):
    """The encoder and your head: the head takes every hidden state and the attention mask."""

    def __init__(self, config: PretrainedConfig, head: nn.Module, num_labels: int) -> None:
        super().__init__()
        self.config = config
        self.model = AutoModel.from_config(config)
        self.head = head
        self.num_labels = num_labels
        self.input_names = backbone_input_names(self.model, config)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        inputs = backbone_inputs(self.input_names, input_ids, attention_mask, token_type_ids)
        hidden_states = self.model(**inputs, output_hidden_states=True).hidden_states
        return self.head(tuple(hidden_states), attention_mask)


TokenModel = CustomModel | HeadModel  # what the stages build, export and compare


def code_digest(directory: Path) -> str:
    """SHA-256 of the Python files under `directory` (their paths in it and their bytes): what `model.head` runs."""
    digest = hashlib.sha256()
    for path in sorted(directory.rglob("*.py")):
        if "__pycache__" not in path.parts:
            digest.update(path.relative_to(directory).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def import_head(name: str, directory: Path) -> type[nn.Module]:
    """The class `name` (`module:Class`) names, imported from `directory` (put first on the import path): the import
    runs your code, and is logged."""
    if not HEAD_NAME.match(name):
        raise UserError(f"model.head = {name!r} is not a class name: write it as module:Class, e.g. bilstm:BiLstmHead")
    if not directory.is_dir():
        raise UserError(f"model.head_code = {str(directory)!r} is not a directory: name the directory {name} is in")
    module_name, class_name = name.split(":")
    log.warning("model.head = %s: importing and running your code from %s", name, directory)
    if str(directory.resolve()) not in sys.path:
        sys.path.insert(0, str(directory.resolve()))
    sys.modules.pop(module_name, None)  # a module of this name imported from elsewhere would shadow it
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name == module_name or module_name.startswith(f"{error.name}."):
            raise UserError(f"model.head = {name}: no module {module_name} in model.head_code {directory}") from None
        raise UserError(
            f"model.head = {name}: its code imports {error.name}, which is not installed here; install it"
        ) from None
    head_class = getattr(module, class_name, None)
    if not (isinstance(head_class, type) and issubclass(head_class, nn.Module)):
        raise UserError(f"model.head = {name}: {module.__file__} has no torch.nn.Module class {class_name}")
    return head_class


def build_head_model(
    config: PretrainedConfig, num_labels: int, name: str, arguments: dict[str, Any] | None, directory: Path
) -> HeadModel:
    """The encoder with your head, built from `model.head_args`."""
    head_class = import_head(name, directory)
    try:
        head = head_class(**(arguments or {}))
    except TypeError as error:
        raise UserError(f"model.head_args {arguments or {}} do not fit {name}: {error}") from None
    return HeadModel(config, head, num_labels)


def check_output(model: HeadModel, name: str) -> None:
    """The head must give per-token scores [batch, sequence, labels], in floats, on a padded batch."""
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(0, model.config.vocab_size, PROBE_SHAPE, generator=generator)
    attention_mask = torch.ones(PROBE_SHAPE, dtype=torch.int64)
    attention_mask[1, PROBE_SHAPE[1] // 2 :] = 0
    with torch.inference_mode():
        output = model(input_ids, attention_mask, torch.zeros_like(input_ids))
    expected = (*PROBE_SHAPE, model.num_labels)
    if isinstance(output, torch.Tensor) and output.is_floating_point() and tuple(output.shape) == expected:
        return
    got = f"a {output.dtype} tensor {list(output.shape)}" if isinstance(output, torch.Tensor) else type(output).__name__
    raise UserError(
        f"model.head = {name} returns {got} for a batch of {PROBE_SHAPE[0]} x {PROBE_SHAPE[1]} tokens; it must return "
        f"per-token scores [batch, sequence, labels] = {list(expected)} (a CRF head: its emissions, which infer decodes)"
    )
