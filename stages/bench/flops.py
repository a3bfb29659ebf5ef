"""Model FLOPs, counted analytically for a BERT- or DeBERTa-like encoder, per padded token slot.

At a batch's padded length L (h hidden size, ff intermediate size, n layers, k labels):

    n * (2 * (4 * h^2 + g * h * ff)      Q, K, V, output projections and the feed-forward block
                                         (g = 2, or 3 for a gated (GLU) feed-forward as ModernBERT's)
         + 2 * 2 * L * h                 attention scores QK^T and the weighted sum AV
         + d * 2 * L * h)                DeBERTa's disentangled c2p / p2c scores (d of them, 0 without)
    + 2 * h * k                          the token-classification head

Embedding lookups, softmax, normalisation and the projections of the relative-position embeddings
are not counted, so it is a slight under-count.
"""

from __future__ import annotations

from typing import Any

FLOPS_FORMULA = (
    "layers * (2*(4*h^2 + g*h*ff) + 2*2*L*h + disentangled*2*L*h) + 2*h*labels per padded token slot, "
    "L = the batch's padded length, g = 3 for a gated feed-forward (else 2)"
)
GATED_FEED_FORWARD = ("modernbert",)


def flops_per_slot(config: Any, num_labels: int, padded_length: int) -> float:
    """Model FLOPs per padded token slot at `padded_length` (formula in the module docstring)."""
    hidden = config.hidden_size
    intermediate = getattr(config, "intermediate_size", None) or config.hidden_dim
    disentangled = (
        len(getattr(config, "pos_att_type", None) or ()) if getattr(config, "relative_attention", False) else 0
    )
    gate = 3 if config.model_type in GATED_FEED_FORWARD else 2
    per_layer = 2 * (4 * hidden**2 + gate * hidden * intermediate) + (2 + disentangled) * 2 * padded_length * hidden
    return float(config.num_hidden_layers * per_layer + 2 * hidden * num_labels)
