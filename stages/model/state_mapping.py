"""A checkpoint's tensors matched to the seed's model by what they hold, not by their names.

The encoder is the backbone's own parameter names and shapes under whatever prefix the checkpoint uses:
`model.` (the seed's CustomModel), `deberta.`, `bert.`, `roberta.` (a Trainer's `*ForTokenClassification`),
`backbone.`, `encoder.`, wrappers' `module.` and `_orig_mod.`, or none. The seed's head is the one remaining
Linear(hidden_size -> labels), whatever its name; your own head (`model.head`) is the remaining tensors, under the
one prefix (none, a wrapper's) that gives them its names. The result is renamed to the model's names, with anything
unmatched kept under its own name, so the strict key check that follows reports it: nothing is silently dropped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from stages.core.errors import UserError

log = logging.getLogger(__name__)

ENCODER, HEAD, CUSTOM_HEAD = "model.", "fc.", "head."  # the seed's encoder and head; your own head
UNUSED_ENCODER_PARTS = ("pooler.",)  # in the seed's encoder, never run for per-token outputs
REBUILT_BUFFER_SUFFIXES = ("embeddings.position_ids",)  # older transformers saved them; current ones rebuild them


@dataclass(frozen=True)
class StateMapping:
    """Where a checkpoint keeps the encoder and the head, and its tensors under the model's names."""

    prefix: str | None  # the encoder's prefix in the checkpoint ("" for none); None if no encoder was found
    head: str | None  # the seed's head's name in the checkpoint (`classifier`, `fc`, ...), your head's prefix ("" for
    # none); None if none was found
    state: dict[str, torch.Tensor]  # the model's names where matched, the checkpoint's own names elsewhere
    filled: tuple[str, ...]  # model tensors the checkpoint lacks and a token classifier never runs
    custom: bool = False  # the head is your own (`model.head`)

    def describe(self) -> str:
        encoder = "not found" if self.prefix is None else f"under {self.prefix or '(no prefix)'!r}"
        if self.custom:
            return f"encoder {encoder}, model.head's tensors " + (
                "not found" if self.head is None else f"under {self.head or '(no prefix)'!r}"
            )
        return f"encoder {encoder}, head {'not found' if self.head is None else repr(self.head)}"


def map_state(checkpoint: dict[str, torch.Tensor], model_state: dict[str, torch.Tensor]) -> StateMapping:
    """Rename `checkpoint`'s encoder and head to the names of `model_state` (the seed's model's state dict, or the
    encoder's and your head's under `head.`)."""
    encoder = {key[len(ENCODER) :]: tensor for key, tensor in model_state.items() if key.startswith(ENCODER)}
    prefix, complete = encoder_prefix(checkpoint, encoder)
    state = {key: tensor for key, tensor in checkpoint.items() if not is_rebuilt_buffer(key, prefix, encoder)}
    mapped: dict[str, torch.Tensor] = {}
    if prefix is not None:
        for name in encoder:
            if prefix + name in state:
                mapped[ENCODER + name] = state.pop(prefix + name)
    custom = HEAD + "weight" not in model_state
    if custom:
        own = {key[len(CUSTOM_HEAD) :] for key in model_state if key.startswith(CUSTOM_HEAD)}
        head = custom_head_prefix(state, own) if complete else None
        for key in [key for key in state if head is not None and key.startswith(head) and key[len(head) :] in own]:
            mapped[CUSTOM_HEAD + key[len(head) :]] = state.pop(key)
    else:
        head = head_name(state, model_state[HEAD + "weight"].shape[1]) if complete else None  # else: the key report
        for part in ("weight", "bias") if head is not None else ():
            if f"{head}.{part}" in state:
                mapped[HEAD + part] = state.pop(f"{head}.{part}")
    filled = tuple(
        key
        for key in model_state
        if key not in mapped and key.startswith(tuple(ENCODER + part for part in UNUSED_ENCODER_PARTS))
    )
    mapped.update({key: model_state[key] for key in filled})
    return StateMapping(prefix, head, {**mapped, **state}, filled, custom)


def custom_head_prefix(state: dict[str, torch.Tensor], own: set[str]) -> str:
    """The prefix under which the tensors left besides the encoder carry your head's own names (`lstm.weight_ih_l0`):
    none, or a wrapper's (`module.`, `head.`) that they all share; where none gives every name, the one giving most."""
    keys = sorted(state)
    candidates = [""] + [key[: end + 1] for key in keys[:1] for end, char in enumerate(key) if char == "."]
    shared = [prefix for prefix in candidates if all(key.startswith(prefix) for key in keys)]
    return max(shared, key=lambda prefix: sum(key[len(prefix) :] in own for key in keys))


def encoder_prefix(checkpoint: dict[str, torch.Tensor], encoder: dict[str, torch.Tensor]) -> tuple[str | None, bool]:
    """The prefix under which `checkpoint` holds the encoder's tensors (the one holding most of them), and whether
    it holds all that are run; a `UserError` if two prefixes hold all."""
    anchor = max(encoder, key=lambda name: encoder[name].numel())  # the word embeddings
    candidates = {key[: -len(anchor)] for key in checkpoint if key.endswith(anchor)}
    candidates = {prefix for prefix in candidates if prefix == "" or prefix.endswith(".")}
    required = [name for name in encoder if not name.startswith(UNUSED_ENCODER_PARTS)]
    coverage = {prefix: sum(prefix + name in checkpoint for name in required) for prefix in candidates}
    complete = sorted(prefix for prefix, count in coverage.items() if count == len(required))
    if len(complete) > 1:
        raise UserError(
            "the checkpoint holds the encoder twice, under "
            + " and ".join(repr(prefix) for prefix in complete)
            + "; save only the model to serve"
        )
    if complete:
        return complete[0], True
    return max(sorted(coverage), key=coverage.__getitem__, default=None), False


def is_rebuilt_buffer(key: str, prefix: str | None, encoder: dict[str, torch.Tensor]) -> bool:
    """A buffer older transformers releases saved and this one rebuilds (the encoder does not hold it)."""
    if not key.endswith(REBUILT_BUFFER_SUFFIXES) or prefix is None or not key.startswith(prefix):
        return False
    if key[len(prefix) :] in encoder:
        return False
    log.info("dropping %s: this transformers release rebuilds it", key)
    return True


def head_name(state: dict[str, torch.Tensor], hidden: int) -> str | None:
    """The one Linear(hidden -> labels) among `state`'s tensors, by name without `.weight`; a `UserError` if many."""
    candidates = sorted(
        key.removesuffix(".weight")
        for key, tensor in state.items()
        if key.endswith(".weight") and tensor.dim() == 2 and tensor.shape[1] == hidden
    )
    if len(candidates) > 1:
        shapes = ", ".join(f"{name}.weight {list(state[name + '.weight'].shape)}" for name in candidates)
        raise UserError(
            f"the checkpoint has {len(candidates)} Linear layers from the encoder's {hidden} features besides the "
            f"encoder ({shapes}); the seed's model has one head: save a checkpoint with only the encoder and that head"
        )
    return candidates[0] if candidates else None
