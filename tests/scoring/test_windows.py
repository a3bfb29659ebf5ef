"""Token windows: sliding windows cover every token, each taken from the window where it is most central."""

from __future__ import annotations

import numpy as np
import pytest

from stages.core.errors import UserError
from stages.scoring.tokens import EncodedText, Framing
from stages.scoring.windows import make_windows, most_central_window, window_spans

FRAMING = Framing(prefix=np.array([1]), suffix=np.array([2]), max_length=10, truncation_side="left")


@pytest.mark.parametrize("tokens", [0, 1, 8, 9, 20, 57])
@pytest.mark.parametrize("stride", [0, 3, 7])
def test_sliding_windows_cover_every_token_and_pick_the_most_central(tokens, stride):
    spans = window_spans(tokens, FRAMING, "sliding_window", stride)
    assert all(length <= FRAMING.capacity for _, length in spans)
    text = EncodedText(input_ids=np.arange(tokens), offsets=np.zeros((tokens, 2), dtype=np.int32))
    windows = make_windows([text], FRAMING, "sliding_window", stride)
    choice = most_central_window(tokens, windows)
    assert (choice >= 0).all()
    for position, index in enumerate(choice):
        window = windows[index]
        margin = min(position - window.start, window.start + window.length - 1 - position)
        others = [
            min(position - w.start, w.start + w.length - 1 - position)
            for w in windows
            if w.start <= position < w.start + w.length
        ]
        assert margin == max(others)
    for window in windows:
        assert window.input_ids[0] == 1 and window.input_ids[-1] == 2
        assert (window.input_ids[1:-1] == np.arange(window.start, window.start + window.length)).all()


def test_truncation_keeps_the_side_the_tokenizer_says():
    assert window_spans(20, FRAMING, "truncate", 0) == [(12, 8)]
    right = Framing(FRAMING.prefix, FRAMING.suffix, 10, "right")
    assert window_spans(20, right, "truncate", 0) == [(0, 8)]


def test_an_unset_stride_is_128_or_half_a_short_window():
    """A model served at a short model.max_length runs with the default params: the stride halves to fit."""
    long = Framing(FRAMING.prefix, FRAMING.suffix, 512, "right")
    assert window_spans(1000, long, "sliding_window", None) == window_spans(1000, long, "sliding_window", 128)
    assert window_spans(20, FRAMING, "sliding_window", None) == window_spans(20, FRAMING, "sliding_window", 4)
    with pytest.raises(UserError, match=r"infer\.stride = 8 must be smaller than the 8 content tokens"):
        make_windows([], FRAMING, "sliding_window", 8)
