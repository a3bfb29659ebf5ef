"""Exact rewrites applied while exporting: the same function, less work for the graph that serves it.

DeBERTa-v2's disentangled attention projects all 2 x `position_buckets` relative-position embeddings
(512 for mdeberta-v3-base) and multiplies every query and key with each of them, whatever the
sequence length, then gathers the few columns the sequence's relative positions use. A sequence of
L tokens only reaches relative buckets within +-min(L - 1, span): every bucket of a distance d is at
most d, and exactly d below the bucket midpoint. `narrowed_relative_attention` slices the embeddings
to that reach before projecting, so a 64-token batch computes 127 columns instead of 512. The ONNX
graph keeps the slice symbolic in L (dynamo exporter); the parity stage checks the result against
the unmodified torch model at every length of its grid.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from transformers.models.deberta_v2 import modeling_deberta_v2 as deberta_v2


def narrowed_bias(self, query_layer, key_layer, relative_pos, rel_embeddings, scale_factor):
    """`DisentangledSelfAttention.disentangled_attention_bias`, computed on the relative positions in reach."""
    if relative_pos is None:
        relative_pos = deberta_v2.build_relative_position(
            query_layer, key_layer, bucket_size=self.position_buckets, max_position=self.max_relative_positions
        )
    if relative_pos.dim() == 2:
        relative_pos = relative_pos.unsqueeze(0).unsqueeze(0)
    elif relative_pos.dim() == 3:
        relative_pos = relative_pos.unsqueeze(1)
    span = self.pos_ebd_size
    reach = torch.sym_min(torch.sym_max(query_layer.size(-2), key_layer.size(-2)) - 1, span)
    first = span - reach
    relative_pos = relative_pos.to(device=query_layer.device, dtype=torch.long)
    rel_embeddings = rel_embeddings[first : span + reach + 1, :].unsqueeze(0)
    repeat = query_layer.size(0) // self.num_attention_heads
    query_proj = self.query_proj if self.share_att_key else getattr(self, "pos_query_proj", None)
    key_proj = self.key_proj if self.share_att_key else getattr(self, "pos_key_proj", None)
    score = 0
    if "c2p" in self.pos_att_type:
        pos_key_layer = self.transpose_for_scores(key_proj(rel_embeddings), self.num_attention_heads).repeat(
            repeat, 1, 1
        )
        scale = deberta_v2.scaled_size_sqrt(pos_key_layer, scale_factor)
        c2p_att = torch.bmm(query_layer, pos_key_layer.transpose(-1, -2))
        c2p_pos = torch.clamp(relative_pos + span, 0, span * 2 - 1) - first
        c2p_att = torch.gather(
            c2p_att,
            dim=-1,
            index=c2p_pos.squeeze(0).expand([query_layer.size(0), query_layer.size(1), relative_pos.size(-1)]),
        )
        score += c2p_att / scale.to(dtype=c2p_att.dtype)
    if "p2c" in self.pos_att_type:
        pos_query_layer = self.transpose_for_scores(query_proj(rel_embeddings), self.num_attention_heads).repeat(
            repeat, 1, 1
        )
        scale = deberta_v2.scaled_size_sqrt(pos_query_layer, scale_factor)
        r_pos = deberta_v2.build_rpos(
            query_layer, key_layer, relative_pos, self.max_relative_positions, self.position_buckets
        )
        p2c_pos = torch.clamp(-r_pos + span, 0, span * 2 - 1) - first
        p2c_att = torch.bmm(key_layer, pos_query_layer.transpose(-1, -2))
        p2c_att = torch.gather(
            p2c_att,
            dim=-1,
            index=p2c_pos.squeeze(0).expand([query_layer.size(0), key_layer.size(-2), key_layer.size(-2)]),
        ).transpose(-1, -2)
        score += p2c_att / scale.to(dtype=p2c_att.dtype)
    return score


@contextmanager
def narrowed_relative_attention() -> Iterator[None]:
    """Within the block, DeBERTa-v2 attention computes only the relative positions a sequence can reach."""
    attention = deberta_v2.DisentangledSelfAttention
    original = attention.disentangled_attention_bias
    attention.disentangled_attention_bias = narrowed_bias
    try:
        yield
    finally:
        attention.disentangled_attention_bias = original


def has_relative_attention(model: torch.nn.Module) -> bool:
    """Whether the model runs DeBERTa-v2's relative (disentangled) attention, which the rewrite narrows."""
    modules = (module for module in model.modules() if isinstance(module, deberta_v2.DisentangledSelfAttention))
    return any(module.relative_attention for module in modules)
