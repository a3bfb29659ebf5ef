"""Tokenisation shared by `parity` and `infer`, so both see the same inputs.

Texts are tokenised whole (fast tokenizer, batch mode), without special tokens; `Framing` holds the
special tokens the tokenizer puts around a single sequence, which `windows` puts around each window.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from transformers import PreTrainedTokenizerBase


@dataclass(frozen=True)
class EncodedText:
    """A text's content tokens (no special tokens): ids and character offsets."""

    input_ids: np.ndarray  # int64 [n]
    offsets: np.ndarray  # int32 [n, 2]

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass(frozen=True)
class Framing:
    """The special tokens a tokenizer puts before and after a single sequence."""

    prefix: np.ndarray
    suffix: np.ndarray
    max_length: int
    truncation_side: str

    @property
    def capacity(self) -> int:
        """Content tokens that fit in one window."""
        return self.max_length - len(self.prefix) - len(self.suffix)

    @classmethod
    def of(cls, tokenizer: PreTrainedTokenizerBase, max_length: int) -> Framing:
        """Read the framing off the tokenizer's template by encoding a one-letter probe."""
        encoding = tokenizer("a", return_special_tokens_mask=True).encodings[0]
        ids, content = np.asarray(encoding.ids, dtype=np.int64), ~np.asarray(encoding.special_tokens_mask, dtype=bool)
        first, last = int(np.argmax(content)), len(content) - int(np.argmax(content[::-1]))
        return cls(ids[:first], ids[last:], max_length, tokenizer.truncation_side)


def encode_texts(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str]) -> list[EncodedText]:
    """Content tokens of each text, whole (no truncation), with character offsets."""
    batch = tokenizer(list(texts), add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    return [
        EncodedText(
            input_ids=np.asarray(encoding.ids, dtype=np.int64),
            offsets=np.asarray(encoding.offsets, dtype=np.int32).reshape(-1, 2),
        )
        for encoding in batch.encodings
    ]
