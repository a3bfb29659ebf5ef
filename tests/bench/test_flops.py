"""The FLOP formula against torch's own count of each family's forward pass (`torch.utils.flop_counter`).

The formula counts the useful work per token; what it leaves out by design is computed here from the
architecture, independently: BERT-style poolers (one token per row), ELECTRA's embedding projection, and
DeBERTa's projections of the relative-position embeddings with its c2p/p2c scores over every position bucket
(eager torch scores all 2 x span buckets; the formula counts the L x L the sequence reaches).
"""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from stages.bench.flops import flops_per_slot
from stages.model.token_model import CustomModel
from tests.backbones import KINDS, tiny_config

LABELS = 4


def torch_flops(model: CustomModel, length: int) -> int:
    ids = torch.randint(5, model.config.vocab_size, (1, length), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(ids, torch.ones_like(ids))
    return counter.get_total_flops()


def left_out(config, length: int) -> int:
    """The FLOPs of one row of `length` tokens that the formula does not count, by the documented exclusions."""
    hidden = getattr(config, "hidden_size", None) or config.dim
    extra = 0
    if config.model_type in ("bert", "roberta"):  # the pooler's dense layer, on the first token
        extra += 2 * hidden * hidden
    if config.model_type == "electra":  # embeddings projected up to the hidden size
        extra += 2 * config.embedding_size * hidden * length
    if config.model_type == "deberta-v2":
        buckets = 2 * config.position_buckets
        projections = 2 * (2 * buckets * hidden * hidden)  # key and query projections of the relative embeddings
        scores = 2 * (2 * length * buckets * hidden - 2 * length * length * hidden)  # c2p and p2c over all buckets
        extra += config.num_hidden_layers * (projections + scores)
    return extra


@pytest.mark.parametrize("length", [1, 37, 100])
@pytest.mark.parametrize("kind", KINDS)
def test_the_formula_counts_what_torch_counts_but_the_documented_exclusions(kind, length):
    config = tiny_config(kind, 300, 0)
    config._attn_implementation = "eager"  # matmuls torch's counter sees one by one
    torch.manual_seed(0)
    model = CustomModel(config, LABELS, 0.1).eval()
    assert torch_flops(model, length) == flops_per_slot(config, LABELS, length) * length + left_out(config, length)
