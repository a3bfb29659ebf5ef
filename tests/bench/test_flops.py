"""FLOP counting follows its documented formula."""

from __future__ import annotations

from stages.bench.flops import flops_per_slot
from stages.model.backbone import mdeberta_v3_config


def test_flops_per_token_of_the_base_shape_follow_the_documented_formula():
    config = mdeberta_v3_config()
    hidden, intermediate, length = 768, 3072, 128
    per_layer = 2 * (4 * hidden**2 + 2 * hidden * intermediate) + 2 * 2 * length * hidden + 2 * 2 * length * hidden
    assert flops_per_slot(config, 4, length) == 12 * per_layer + 2 * hidden * 4
