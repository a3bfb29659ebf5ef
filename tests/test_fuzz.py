"""Arbitrary Unicode through tokenisation and inference: no crash, rows aligned, offsets inside the text."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stages import export, load_checkpoint
from stages.core.params import load_params
from stages.scoring.datasets.blocks import make_block, string_block
from stages.scoring.reuse.keys import block_keys, row_keys
from stages.scoring.score import score_rows
from stages.scoring.served import ServedModel
from tests.conftest import build_workspace

SCRIPTS = "Hello Привет 你好 مرحبا שלום नमस्ते 👩‍👩‍👧 é\u0301 \u202e\u200d\u0000\x1b\t\n\r\ufeff\ud7ff"
texts = st.one_of(
    st.text(max_size=200),
    st.text(alphabet=SCRIPTS, max_size=300),
    st.builds(
        lambda piece, count: piece * count, st.text(alphabet=SCRIPTS, min_size=1, max_size=5), st.integers(100, 400)
    ),
    st.none(),
    st.integers(),
)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    """A tiny exported DeBERTa-v2 ready to score, and the workspace's infer params."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        root = tmp_path_factory.mktemp("fuzz")
        monkeypatch.chdir(root)
        build_workspace(root, rows=4)
        load_checkpoint.main()
        export.main()
        params = load_params()
        yield ServedModel.load(Path(params.export.output), params.runtime), params.infer


@pytest.mark.slow  # Hypothesis: many examples
@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(
    values=st.lists(texts, min_size=1, max_size=6),
    long_text=st.sampled_from(["truncate", "sliding_window"]),
    skip=st.booleans(),
)
def test_any_text_is_scored_in_place(served, values, long_text, skip):
    model, params = served
    params = dataclasses.replace(params, long_text=long_text, stride=8, bad_rows="skip" if skip else "score")
    block = make_block(pa.array([f"id-{index}" for index in range(len(values))]), values, "fuzz")
    table, tally = score_rows(model, block, params)
    assert table.num_rows == len(values) == tally.rows
    assert table.column("id").to_pylist() == [f"id-{index}" for index in range(len(values))]
    for text, row in zip(block.texts, table.to_pylist(), strict=True):
        assert row["n_tokens"] == len(row["labels"]) == len(row["starts"]) == len(row["ends"])
        assert all(0 <= start <= end <= len(text) for start, end in zip(row["starts"], row["ends"], strict=True))
        assert all(span["text"] == text[span["start"] : span["end"]] for span in row["spans"])
        if long_text == "sliding_window":
            assert not row["truncated"]


SPACES = "".join(chr(code) for code in range(0x3001) if chr(code).isspace())


@settings(max_examples=300, deadline=None)
@given(
    values=st.lists(
        st.one_of(
            st.text(max_size=40),
            st.text(alphabet=SCRIPTS + SPACES + "\x7f\x85\x9f\xa0", max_size=20),
            st.text(alphabet=SPACES, max_size=4),
            st.none(),
        ),
        min_size=1,
        max_size=12,
    ),
    kind=st.sampled_from([pa.string(), pa.large_string()]),
)
def test_a_string_column_is_read_as_the_row_by_row_rules_read_it(values, kind):
    """The column checks (`string_block`) give each row the text, the issue and the key `make_block`'s rules give it,
    on a column sliced from a longer one (as blocks are)."""
    ids = pa.array([f"id-{index}" for index in range(len(values))])
    expected = make_block(ids, values, "fuzz")
    block = string_block(ids, pa.array(["before", *values, "after"], kind).slice(1, len(values)), "fuzz")
    assert (block.texts, block.issues) == (expected.texts, expected.issues)
    assert block_keys(block) == row_keys(expected.texts, expected.issues), "keys hashed from the UTF-8 bytes"
