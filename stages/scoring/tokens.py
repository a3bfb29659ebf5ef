"""Tokenisation shared by `parity` and `infer`, with the `tokenizers` library alone (no torch, no transformers).

The tokenizer is the `tokenizer.json` saved beside the model, run as transformers' fast tokenizer runs
it. Texts are tokenised whole, without special tokens; `Framing` holds the special tokens the
tokenizer's template puts around a single sequence, which `windows` puts around each window.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from stages.core.errors import UserError

TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_FILE = "special_tokens_map.json"


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


@dataclass(frozen=True)
class TextTokenizer:
    """A fast tokenizer's backend, with the pad token it pads batches with and its unknown token (None: none named)."""

    backend: Tokenizer
    pad_id: int
    unk_id: int | None = None

    @classmethod
    def load(cls, directory: Path) -> TextTokenizer:
        """The tokenizer saved in `directory` (`tokenizer.json`, and the pad token from its config files)."""
        path = directory / TOKENIZER_FILE
        if not path.is_file():
            raise UserError(f"{path} not found: the model directory needs a fast tokenizer's tokenizer.json")
        backend = Tokenizer.from_file(str(path))
        backend.no_truncation()  # windows decide the length; batches are padded here
        backend.no_padding()
        pad_token = special_token(directory, "pad_token")
        pad_id = backend.token_to_id(pad_token) if pad_token else None
        if pad_id is None:
            raise UserError(f"the tokenizer in {directory} has no pad token in its vocabulary ({pad_token!r})")
        unk_token = special_token(directory, "unk_token")
        return cls(backend, pad_id, backend.token_to_id(unk_token) if unk_token else None)

    def framing(self, max_length: int, truncation_side: str) -> Framing:
        """Read the framing off the tokenizer's template by encoding a one-letter probe."""
        encoding = self.backend.encode("a")
        ids = np.asarray(encoding.ids, dtype=np.int64)
        content = ~np.asarray(encoding.special_tokens_mask, dtype=bool)
        first, last = int(np.argmax(content)), len(content) - int(np.argmax(content[::-1]))
        return Framing(ids[:first], ids[last:], max_length, truncation_side)

    def encode(self, texts: Sequence[str]) -> list[EncodedText]:
        """Content tokens of each text, whole (no truncation), with character offsets."""
        return [
            EncodedText(
                input_ids=np.asarray(encoding.ids, dtype=np.int64),
                offsets=np.asarray(encoding.offsets, dtype=np.int32).reshape(-1, 2),
            )
            for encoding in self.backend.encode_batch(list(texts), add_special_tokens=False)
        ]

    def pieces(self, ids: Sequence[int]) -> list[str]:
        """The tokens' pieces as the vocabulary spells them."""
        return [self.backend.id_to_token(int(token)) for token in ids]


def special_token(directory: Path, name: str) -> str | None:
    """A special token's text from tokenizer_config.json, or special_tokens_map.json (older saves)."""
    for file in (TOKENIZER_CONFIG_FILE, SPECIAL_TOKENS_FILE):
        path = directory / file
        if path.is_file():
            value = json.loads(path.read_text(encoding="utf-8")).get(name)
            if isinstance(value, dict):  # {"content": "[PAD]", ...}
                value = value.get("content")
            if value:
                return value
    return None
