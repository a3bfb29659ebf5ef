"""The CRF the gate decodes both models' labels with: the torch model's, which must be the one the exported model
directory serves beside its graph (`crf.json`), else the export is stale."""

from __future__ import annotations

from pathlib import Path

from stages.core.errors import UserError
from stages.model.crf import crf_scores, find_crf
from stages.model.custom_head import TokenModel
from stages.scoring.decoding import Crf


def torch_crf(model: TokenModel) -> Crf | None:
    """The model's CRF, or None if its head has none."""
    name = find_crf(model, model.num_labels)
    return None if name is None else Crf.of(crf_scores(model, name))


def gate_crf(model: TokenModel, served: Crf | None, onnx_dir: Path) -> Crf | None:
    """The torch model's CRF, checked to be the one `onnx_dir` serves."""
    crf = torch_crf(model)
    if crf is None and served is None:
        return None
    if crf is None or served is None or not crf.equals(served):
        what = "no CRF" if served is None else "a CRF" if crf is None else "another CRF"
        raise UserError(
            f"{onnx_dir} decodes with {what} than the torch model in the normalised model directory; run the export "
            "stage again"
        )
    return crf
