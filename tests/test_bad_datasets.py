"""Every bad dataset gets one clear line naming the file, the problem and the fix, or the documented bad-row policy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stages import benchmark, export, infer, load_checkpoint, parity
from stages.core.errors import UserError
from tests.conftest import REPO, build_workspace


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory):
    """One exported tiny model for every bad dataset; each test writes its dataset and points infer.input at it."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        root = tmp_path_factory.mktemp("bad-datasets")
        monkeypatch.chdir(root)
        built = build_workspace(root, rows=8)
        load_checkpoint.main()
        export.main()
        yield built


Content = bytes | pa.Table | dict | None  # a dict: a directory of files, by name


def write(path: Path, content: Content) -> None:
    """`content` at `path` (None: nothing)."""
    if isinstance(content, dict):
        path.mkdir()
        for name, file_content in content.items():
            write(path / name, file_content)
    elif isinstance(content, pa.Table):
        pq.write_table(content, path)
    elif content is not None:
        path.write_bytes(content)


def use(workspace, name: str, content: Content, **infer_params) -> str:
    """Write `content` to `name` and point infer.input at it; outputs go to a fresh path."""
    write(workspace.root / name, content)
    output = f"out/{name}.parquet"
    workspace.write_params(
        infer={"input": name, "output": output, "details": f"metrics/{name}.json", "bad_rows": "score", **infer_params}
    )
    return output


GOOD = pa.table({"id": ["a", "b", "c"], "text": ["Hello 42", "Привет", "東京"]})
CSV_GOOD = b"id,text\na,Hello 42\nb,Privet\n"


def parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


# name, content, the one line's pattern
FAILING = [
    ("missing.parquet", None, r"dataset not found: missing\.parquet \(infer\.input\)"),
    ("empty.parquet", b"", r"dataset empty\.parquet is empty \(0 bytes\); write it again"),
    ("empty.csv", b"", r"dataset empty\.csv is empty \(0 bytes\)"),
    ("empty.jsonl", b"", r"dataset empty\.jsonl is empty \(0 bytes\)"),
    ("header.csv", b"id,text\n", r"dataset header\.csv has no rows \(infer\.input\)"),
    ("blank.jsonl", b"\n\n", r"dataset blank\.jsonl has no rows"),
    ("norows.parquet", GOOD.slice(0, 0), r"dataset norows\.parquet has no rows"),
    ("truncated.parquet", parquet_bytes(GOOD)[:300], r"truncated\.parquet cannot be read: .*; write the file again"),
    ("not-parquet.parquet", CSV_GOOD, r"not-parquet\.parquet cannot be read: .*magic bytes"),
    (
        "broken-line.jsonl",
        b'{"id": 1, "text": "a"}\n{"id": 2, "text": "b"\n{"id": 3, "text": "c"}\n',
        r"dataset broken-line\.jsonl line 2 is not JSON .*; fix or remove that line",
    ),
    ("list.jsonl", b'["id", "text"]\n', r"dataset list\.jsonl line 1 is not a JSON object"),
    (
        "ragged.csv",
        b"id,text\n1,hello\n2,a,b\n3,c\n",
        # Arrow names the row where it reads on one thread (OMP_NUM_THREADS=1, a one-core machine), not on several
        r"ragged\.csv cannot be read: CSV parse error: (Row #3: )?Expected 2 columns",
    ),
    ("latin1-ids.csv", "id,text\ncafé,ok\n".encode("latin-1"), r"latin1-ids\.csv cannot be read: .*write it as UTF-8"),
    ("null-id.parquet", pa.table({"id": ["a", None], "text": ["x", "y"]}), r"null-id\.parquet row 1 has no id"),
    ("no-id.jsonl", b'{"id": "a", "text": "x"}\n{"text": "y"}\n', r"no-id\.jsonl row 1 has no id"),
    (
        "numbers.parquet",
        pa.table({"id": ["a", "b"], "text": [1, 2]}),
        r"numbers\.parquet column 'text' \(infer\.text_column\) holds int64 values, not text",
    ),
    ("mixed-ids.jsonl", b'{"id": 1, "text": "x"}\n{"id": "b", "text": "y"}\n', r"the id column mixes types"),
    (
        "other-columns.csv",
        b"key,body\n1,x\n",
        r"has no column 'text' \(infer\.text_column\); its columns are: key, body",
    ),
    # directory datasets: every data file under it, in path order
    ("empty-dir", {"_SUCCESS": b""}, r"dataset empty-dir is a directory without data files; put .*parquet"),
    ("mixed", {"a.parquet": GOOD, "b.csv": CSV_GOOD}, r"dataset mixed mixes formats \(\.csv, \.parquet\); keep one"),
    ("conll-dir", {"a.conll": b"Paris B-LOC\n"}, r"sentence ids restart in each file; concatenate them into one"),
    ("empty-part", {"a.parquet": GOOD, "b.parquet": b""}, r"dataset empty-part/b\.parquet is empty \(0 bytes\)"),
    ("notes", {"readme.txt": b"hi"}, r"dataset notes/readme\.txt has an unknown format; infer\.input must be one file"),
    (
        "id-types",
        {"a.parquet": GOOD, "b.parquet": pa.table({"id": [1], "text": ["x"]})},
        r"dataset id-types/b\.parquet has ids of type int64 where the files before it have string \('id'\); write",
    ),
]


@pytest.mark.parametrize(("name", "content", "message"), FAILING, ids=[case[0] for case in FAILING])
def test_a_bad_dataset_is_one_clear_error_and_writes_nothing(workspace, name, content, message):
    output = use(workspace, name, content)
    with pytest.raises(UserError, match=message) as error:
        infer.main()
    assert "\n" not in str(error.value)
    assert not Path(output).exists()


@pytest.mark.parametrize("stage", [parity, benchmark])
@pytest.mark.parametrize(
    ("name", "content", "message"), [FAILING[0], FAILING[7], FAILING[4]], ids=lambda x: str(x)[:20]
)
def test_the_other_stages_that_read_the_dataset_say_the_same(workspace, stage, name, content, message):
    use(workspace, name, content)
    workspace.write_params(benchmark={"metrics": "out/benchmark.json"}, parity={"input": name})  # parity's own rows
    message = message.replace(r"has no rows", r"has no (non-empty texts to benchmark on|rows)")
    with pytest.raises(UserError, match=message.replace(r"infer\.input", r"(infer|parity)\.input")):
        stage.main(["--rows", "4"]) if stage is benchmark else stage.main()


def test_text_in_another_encoding_is_scored_per_the_bad_row_policy(workspace, caplog):
    content = "id,text\n1,café crème 12\n2,naïve\n3,plain\n".encode("latin-1")
    output = use(workspace, "latin1.csv", content)
    infer.main()
    metrics = json.loads(Path("metrics/latin1.csv.json").read_text())
    assert metrics["rows"] == 3 and metrics["text_issues"] == {"invalid_utf8": 2}
    assert "2 texts are not valid UTF-8" in caplog.text
    use(workspace, "latin1.csv", None, bad_rows="skip")
    infer.main()
    assert pq.read_table(output).column("skipped_reason").to_pylist() == ["invalid_utf8", "invalid_utf8", None]


def test_duplicate_ids_are_kept_in_order_counted_and_warned_about(workspace, caplog):
    output = use(
        workspace, "duplicates.parquet", pa.table({"id": ["a", "b", "a", "a"], "text": ["x 1", "y", "z", "w"]})
    )
    infer.main()
    assert pd.read_parquet(output)["id"].tolist() == ["a", "b", "a", "a"]
    assert json.loads(Path("metrics/duplicates.parquet.json").read_text())["duplicate_ids"] == 2
    assert "2 rows share their id with an earlier row" in caplog.text


def test_numbers_among_jsonl_texts_follow_the_bad_row_policy(workspace):
    output = use(
        workspace, "numbers.jsonl", b'{"id": "a", "text": 7}\n{"id": "b", "text": "Hello 7"}\n', bad_rows="skip"
    )
    infer.main()
    assert pq.read_table(output).column("skipped_reason").to_pylist() == ["not_string", None]


def test_a_bad_dataset_exits_2_with_one_line_and_no_traceback(workspace):
    use(workspace, "truncated.parquet", parquet_bytes(GOOD)[:300])
    result = subprocess.run(
        [sys.executable, "-m", "stages.infer"],
        cwd=workspace.root,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: dataset truncated.parquet cannot be read")


def damaged(data: bytes, cuts: st.DataObject) -> bytes:
    """`data` truncated, with bytes flipped, or with bytes inserted: what a bad copy or disk does to a file."""
    kind = cuts.draw(st.sampled_from(["truncate", "flip", "insert"]))
    position = cuts.draw(st.integers(0, len(data) - 1))
    if kind == "truncate":
        return data[:position]
    if kind == "flip":
        count = cuts.draw(st.integers(1, 8))
        flipped = bytearray(data)
        for offset in range(count):
            flipped[(position + offset * 37) % len(data)] ^= cuts.draw(st.integers(1, 255))
        return bytes(flipped)
    return data[:position] + cuts.draw(st.binary(min_size=1, max_size=16)) + data[position:]


def dataset_files() -> dict[str, bytes]:
    texts = ["Hello world 123", "Привет, Москва", "東京と北京", "", "مرحبا 7", "Émile à Paris"]
    frame = pd.DataFrame({"id": [f"r{index}" for index in range(len(texts))], "text": texts})
    lines = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in frame.to_dict(orient="records"))
    return {
        ".parquet": parquet_bytes(pa.Table.from_pandas(frame, preserve_index=False)),
        ".csv": frame.to_csv(index=False).encode(),
        ".jsonl": lines.encode(),
    }


FILES = dataset_files()


@pytest.mark.slow  # Hypothesis: 30 damaged files
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(suffix=st.sampled_from(sorted(FILES)), cuts=st.data())
def test_damaged_datasets_are_scored_or_refused_in_one_line(workspace, suffix, cuts):
    name = f"damaged{suffix}"
    output = use(workspace, name, damaged(FILES[suffix], cuts))
    Path(output).unlink(missing_ok=True)
    try:
        infer.main()
    except UserError as error:  # exit 2 with one line; anything else is a traceback, and fails the test
        assert "\n" not in str(error) and name in str(error)
        assert not Path(output).exists()
        return
    assert pq.read_table(output).num_rows == json.loads(Path(f"metrics/{name}.json").read_text())["rows"]
