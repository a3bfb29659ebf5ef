"""DeBERTa's attention rewritten at export (`stages.graph.rewrites`) computes what the unmodified torch model
computes, for every config variant, exporter, length and padding pattern, without index tensors or masks the
size of the attention."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from stages.core.params import ExportParams
from stages.graph.exporter import export_graph
from stages.graph.rewrites import lean_attention, lean_forward
from stages.model.backbone import mdeberta_v3_config
from stages.model.token_model import CustomModel

SMALL = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
# Weights 10x the usual init, so positions move the logits by far more than the tolerance: a wrong distance fails
INIT_RANGE = 0.2
VARIANTS = {  # mdeberta-v3's config with the settings DeBERTa-v2/v3 checkpoints differ in
    "v3: log buckets, shared keys": {"position_buckets": 16, "max_relative_positions": 64},
    "v2: no buckets, own position projections": {"position_buckets": -1, "share_att_key": False},
    "positions clamped at a short span": {"position_buckets": -1, "max_relative_positions": 8},
    "c2p only": {"pos_att_type": ["c2p"], "position_buckets": 16},
    "p2c only": {"pos_att_type": ["p2c"], "share_att_key": False},
    "no relative attention": {"relative_attention": False},
}
CASES = [  # (row lengths of one batch): padding patterns from none to a one-token row beside a long one
    (1,),
    (2,),
    (7, 3, 7),
    (40, 1, 25),
    (130, 64),
]
PARITY = {"rtol": 1e-3, "atol": 1e-4}  # the fp32 gate's tolerance (parity.atol, parity.rtol)


def tiny_model(overrides: dict) -> CustomModel:
    torch.manual_seed(0)
    config = mdeberta_v3_config(
        **SMALL, vocab_size=100, pad_token_id=0, max_position_embeddings=256, initializer_range=INIT_RANGE, **overrides
    )
    return CustomModel(config, num_labels=4, classifier_dropout=0.1).eval()


def batch(lengths: tuple[int, ...]) -> dict[str, np.ndarray]:
    generator = np.random.default_rng(len(lengths) * 1000 + sum(lengths))
    width = max(lengths)
    ids = generator.integers(1, 100, (len(lengths), width))
    mask = (np.arange(width)[None, :] < np.asarray(lengths)[:, None]).astype(np.int64)
    return {"input_ids": ids * mask, "attention_mask": mask}


def torch_logits(model: CustomModel, arrays: dict[str, np.ndarray]) -> np.ndarray:
    with torch.no_grad():
        return model(**{name: torch.from_numpy(value) for name, value in arrays.items()}).numpy()


def exported(model: CustomModel, exporter: str, path: Path) -> ort.InferenceSession:
    params = ExportParams(
        exporter, 18 if exporter == "dynamo" else 17, "int64", "fp32", "auto", 0.5, 2, 6, None, str(path.parent)
    )
    export_graph(model, params, path)
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


FAST = ("v3: log buckets, shared keys", "v2: no buckets, own position projections")  # the rest: marked slow


@pytest.mark.parametrize(
    ("variant", "exporter"),
    [
        *(pytest.param(variant, "dynamo", marks=() if variant in FAST else pytest.mark.slow) for variant in VARIANTS),
        *(pytest.param(variant, "torchscript", marks=pytest.mark.slow) for variant in FAST),
    ],
)
def test_rewritten_attention_equals_torch_on_every_length_and_padding(tmp_path, variant, exporter):
    model = tiny_model(VARIANTS[variant])
    session = exported(model, exporter, tmp_path / "model.onnx")
    for lengths in CASES:
        arrays = batch(lengths)
        real = arrays["attention_mask"].astype(bool)
        onnx_logits = session.run(None, {item.name: arrays[item.name] for item in session.get_inputs()})[0]
        np.testing.assert_allclose(onnx_logits[real], torch_logits(model, arrays)[real], **PARITY, err_msg=str(lengths))


def test_the_rewrite_is_exact_in_torch_and_the_graph_has_no_attention_sized_index_or_mask(tmp_path):
    model = tiny_model(VARIANTS["v3: log buckets, shared keys"])
    for lengths in CASES:
        arrays = batch(lengths)
        real = arrays["attention_mask"].astype(bool)
        expected = torch_logits(model, arrays)
        with lean_attention():
            rewritten = torch_logits(model, arrays)
        np.testing.assert_allclose(rewritten[real], expected[real], rtol=1e-5, atol=1e-5)
    exported(model, "dynamo", tmp_path / "model.onnx")
    ops = Counter(node.op_type for node in onnx.load(str(tmp_path / "model.onnx")).graph.node)
    assert ops["GatherElements"] == ops["Tile"] == ops["Expand"] == 0, ops
    assert ops["Where"] <= 2 * SMALL["num_hidden_layers"] * 2, ops  # the buckets of 2L distances, not B x H x L x L


def test_in_fp16_arithmetic_a_padded_query_whose_keys_are_all_masked_stays_finite():
    """An fp16 export adds the mask bias in fp16. The attention run in torch half on the CPU, with scores made
    strongly negative (queries opposite to keys, as a padded position's may be): every output finite."""
    torch.manual_seed(0)
    model = tiny_model({}).half()
    encoder = model.model.encoder
    attention = encoder.layer[0].attention.self
    with torch.no_grad():
        attention.query_proj.weight.copy_(-attention.key_proj.weight)
        attention.query_proj.bias.copy_(-attention.key_proj.bias)
    hidden = torch.full((2, 10, SMALL["hidden_size"]), 3.0, dtype=torch.float16)
    mask = encoder.get_attention_mask(torch.tensor([[1] * 6 + [0] * 4, [1] * 10]))  # [2, 1, 10, 10]: query x key
    with torch.no_grad():
        context, _ = lean_forward(
            attention,
            hidden,
            mask,
            relative_pos=encoder.get_rel_pos(hidden),
            rel_embeddings=encoder.get_rel_embedding(),
        )
    assert context.dtype == torch.float16 and torch.isfinite(context).all(), torch.isfinite(context).all(dim=-1)
