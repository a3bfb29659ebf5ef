"""A head's CRF, found by its parameters as `pytorch-crf` (and AllenNLP) name them: `transitions` [labels, labels],
`start_transitions` and `end_transitions` [labels]. The exported graph computes the emissions; the CRF's scores
travel beside it, and `infer` decodes with them."""

from __future__ import annotations

from torch import nn

from stages.core.errors import UserError

CRF_PARTS = ("transitions", "start_transitions", "end_transitions")


def find_crf(model: nn.Module, num_labels: int) -> str | None:
    """The name of the module holding the model's CRF, or None if it has none; a `UserError` for two, for a CRF of
    another label count, or for transitions without the start and end scores."""
    found = []
    for name, module in model.named_modules():
        own = dict(module.named_parameters(recurse=False)) | dict(module.named_buffers(recurse=False))
        if CRF_PARTS[0] not in own:
            continue
        if missing := [part for part in CRF_PARTS if part not in own]:
            raise UserError(
                f"the CRF in {name} has transitions but no {' or '.join(missing)}: infer decodes a CRF of the "
                f"parameters pytorch-crf names ({', '.join(CRF_PARTS)})"
            )
        shapes = {part: list(own[part].shape) for part in CRF_PARTS}
        if list(shapes.values()) != [[num_labels, num_labels], [num_labels], [num_labels]]:
            described = ", ".join(f"{part} {shape}" for part, shape in shapes.items())
            raise UserError(f"the CRF {name} has {described}: not a CRF over model.num_labels = {num_labels} labels")
        found.append(name)
    if len(found) > 1:
        raise UserError(f"the head has {len(found)} CRFs ({', '.join(found)}); infer decodes with one")
    return found[0] if found else None


def crf_scores(model: nn.Module, name: str) -> dict[str, list]:
    """The CRF's scores by parameter name, as float32 values in lists (JSON keeps them exactly)."""
    module = model.get_submodule(name)
    return {part: getattr(module, part).detach().float().cpu().tolist() for part in CRF_PARTS}
