"""Exact rewrites applied while exporting: the same function, less work for the graph that serves it.

DeBERTa-v2/v3's disentangled attention, as transformers writes it, gathers its relative-position scores
with an index expanded to batch x heads x L x L (int64), masks with `Where` over the same shape, repeats
the position tables over the batch (`Tile`) and divides each score matrix by the scale. `lean_attention`
computes the same function without any of those:

- the scale is folded into the position tables (constants) and the query-key product;
- the position tables are the whole relative-embedding table projected once (a constant the runtime
  folds), their rows then picked per relative distance of the sequence: `[H, 2L, d]`, no batch;
- content-to-position scores: `q_i . t(i - j)` is a product with the table whose column k holds distance
  `L-1-k`, followed by the "skew" of Transformer-XL: flattened, shifted by `L-1` and cut to rows of
  `2L-1`, column `L-1-i+j` of row i lands at `[i, j]` (two slices, no index tensor);
- position-to-content scores the same way from the keys, transposed once;
- the mask is an additive bias (0 or `MASK_BIAS`), as exact as `masked_fill` for every row that has a token
  (a masked score's exponential underflows to 0), and finite in fp16 too: the dtype's minimum, which an fp16
  export would clamp to -65504, overflows to -inf with any score below -16, and a padded query, whose keys
  are all masked (DeBERTa masks query x key), would turn NaN and reach real tokens through the next layer's
  attention (0 x NaN).

Relative distances are bucketed by transformers' own `make_log_bucket_position`, so every length and every
`position_buckets` setting gives the model's own positions. The graph keeps the sequence length symbolic
under both exporters; the parity stage checks the result against the unmodified torch model on its grid.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from transformers.models.deberta_v2 import modeling_deberta_v2 as deberta_v2

LEAN_ATTENTION = "lean_disentangled_attention"  # the rewrite's name in model.json's `rewrites`
MASK_BIAS = -3.0e4  # added to a masked score: exp(score + bias) is 0 in fp32 and fp16, and the sum stays finite in fp16
Attention = deberta_v2.DisentangledSelfAttention


def split_heads(states: torch.Tensor, heads: int) -> torch.Tensor:
    """[B, L, H*d] -> [B, H, L, d]."""
    return states.view(states.size(0), states.size(1), heads, -1).transpose(1, 2)


def lean_forward(
    self: Attention,
    hidden_states: torch.Tensor,
    attention_mask: torch.Tensor,
    output_attentions: bool = False,
    query_states: torch.Tensor | None = None,
    relative_pos: torch.Tensor | None = None,
    rel_embeddings: torch.Tensor | None = None,
) -> tuple[torch.Tensor, None]:
    """`DisentangledSelfAttention.forward` for self-attention without attention weights (what the export runs)."""
    if output_attentions or query_states is not None:
        return ORIGINAL_FORWARD(
            self, hidden_states, attention_mask, output_attentions, query_states, relative_pos, rel_embeddings
        )
    heads, length = self.num_attention_heads, hidden_states.size(1)
    query = split_heads(self.query_proj(hidden_states), heads)
    key = split_heads(self.key_proj(hidden_states), heads)
    value = split_heads(self.value_proj(hidden_states), heads)
    factor = 1 + ("c2p" in self.pos_att_type) + ("p2c" in self.pos_att_type)
    scale = math.sqrt(query.size(-1) * factor)
    scores = torch.matmul(query, (key / scale).transpose(-1, -2))
    if self.relative_attention:
        scores = scores + relative_scores(self, query, key, rel_embeddings, scale, length)
    blocked = 1.0 - attention_mask.to(scores.dtype)  # [B, 1, L, L]: 1 where a query may not see a key
    probabilities = torch.softmax(scores + blocked * MASK_BIAS, dim=-1)
    context = torch.matmul(probabilities, value).transpose(1, 2)
    return context.reshape(context.size(0), length, -1), None


def relative_scores(
    self: Attention, query: torch.Tensor, key: torch.Tensor, rel_embeddings: torch.Tensor, scale: float, length
) -> torch.Tensor | float:
    """The content-to-position and position-to-content scores, [B, H, L, L], already divided by `scale`."""
    columns = torch.arange(2 * length, dtype=torch.long, device=query.device)
    query_proj = self.query_proj if self.share_att_key else getattr(self, "pos_query_proj", None)
    key_proj = self.key_proj if self.share_att_key else getattr(self, "pos_key_proj", None)
    score: torch.Tensor | float = 0.0
    if "c2p" in self.pos_att_type:  # [i, j] = q_i . t(i - j): column k of the table holds distance L-1-k
        table = position_table(self, key_proj, rel_embeddings, length - 1 - columns, scale)
        score = score + skew(torch.matmul(query, table.transpose(-1, -2)), length)
    if "p2c" in self.pos_att_type:  # [i, j] = k_j . t(i - j): skewed with keys as rows, then transposed
        table = position_table(self, query_proj, rel_embeddings, columns - (length - 1), scale)
        score = score + skew(torch.matmul(key, table.transpose(-1, -2)), length).transpose(-1, -2)
    return score


def position_table(
    self: Attention, projection: torch.nn.Module, rel_embeddings: torch.Tensor, distances: torch.Tensor, scale: float
) -> torch.Tensor:
    """The projected relative embedding of each distance (bucketed as the model buckets them), per head:
    [H, len(distances), d], divided by `scale`. The whole table is projected (a constant), then its rows picked."""
    span = self.pos_ebd_size
    if self.position_buckets > 0:
        distances = deberta_v2.make_log_bucket_position(distances, self.position_buckets, self.max_relative_positions)
    rows = torch.clamp(distances.to(torch.long) + span, 0, 2 * span - 1)
    table = projection(rel_embeddings[: 2 * span]) / scale
    return torch.index_select(table, 0, rows).view(rows.size(0), self.num_attention_heads, -1).transpose(0, 1)


def skew(scores: torch.Tensor, length) -> torch.Tensor:
    """[B, H, L, 2L] -> [B, H, L, L] whose [i, j] is [i, L-1-i+j]: flattened, row i of the input starts at
    2L i, so the band starting at L-1 and cut into rows of 2L-1 holds it at i (2L-1) + j."""
    band = scores.flatten(2).narrow(2, length - 1, length * (2 * length - 1))
    return band.unflatten(2, (length, 2 * length - 1)).narrow(3, 0, length)


ORIGINAL_FORWARD = Attention.forward


@contextmanager
def lean_attention() -> Iterator[None]:
    """Within the block, DeBERTa-v2/v3 attention runs `lean_forward`."""
    Attention.forward = lean_forward
    try:
        yield
    finally:
        Attention.forward = ORIGINAL_FORWARD


def has_disentangled_attention(model: torch.nn.Module) -> bool:
    """Whether the model runs DeBERTa-v2's disentangled attention, which `lean_attention` rewrites."""
    return any(isinstance(module, Attention) for module in model.modules())
