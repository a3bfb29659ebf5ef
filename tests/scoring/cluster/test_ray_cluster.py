"""Engine `ray`: on a real two-node Ray cluster, the local engine's predictions file and metrics keys.

The cluster (`ray start --head`, and a second node joining it with `ray start --address`, each with its
own CPU count) and the driver run in private network and PID namespaces: the only network there is
loopback, so no Ray traffic leaves the machine (Ray binds to the machine's interface even with
--node-ip-address=127.0.0.1), and `ray stop` sees only this cluster's processes.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from stages import export, infer, load_checkpoint
from stages.core.errors import UserError
from stages.core.params import load_params
from stages.scoring.storage.locations import locate
from stages.scoring.storage.parts import PART_SUFFIX, PartFiles
from stages.scoring.tokens import TextTokenizer
from tests.backbones import CORPUS
from tests.conftest import REPO, loopback_namespaces_usable, unavailable
from tests.faulty_graph import fail_on_token_ids

# Each scenario is scored by the local engine, then by the ray engine on one cluster.
SCENARIOS = {
    # Bad rows (non-string, invalid UTF-8, null, control characters) skipped; long texts in windows.
    "jsonl_windows_skip": {
        "input": "data.jsonl",
        "long_text": "sliding_window",
        "stride": 16,
        "bad_rows": "skip",
        "probabilities": True,
    },
    # CSV, on a pool that starts with one actor and may grow to two while blocks wait (Ray Data's autoscaling pool).
    "csv": {"input": "data.csv", "span_ignore_labels": [], "ray_max_actors": 2, "block_rows": 2},
    # A directory of three Parquet files, each read by its own task and cut into blocks of its own; two actors
    # tokenise them, with at most 64 MB of blocks waiting between the steps; two scoring actors sharing one CPU:
    # blocks come back from different actors and must keep input order.
    "directory": {
        "input": "data-files",
        "block_rows": 4,
        "ray_actors": 2,
        "ray_cpus_per_actor": 0.5,
        "ray_tokenizers": 2,
        "ray_cpus_per_tokenizer": 0.5,
        "ray_queue_mb": 64,
    },
    # The driver is SIGKILLed once 2 blocks are finished and one finished part is then truncated: the rerun takes
    # the dead driver's lease over, scores the damaged block again and the unfinished ones.
    "driver_killed": {"block_rows": 2},
    # A broken graph fails on the last block (only row 60 is Cyrillic, and it fails on Cyrillic tokens): the run stops
    # naming that block and its first row, and the parts of the other blocks stay. Scored by the ray engine only.
    "block_raises": {"input": "poisoned.parquet", "block_rows": 8},
    # One actor per node; one actor's process is SIGKILLed once 4 parts are finished: Ray restarts it.
    "actor_killed": {"ray_actors": 2, "ray_cpus_per_actor": 1, "block_rows": 2},
    # Last, as it breaks the cluster: one actor per node (the head has one CPU; the tokenising actor reserves none),
    # and the second node is lost (SIGKILL to its raylet and every process under it) once 6 parts are finished; the
    # run goes on with the head's actor: rows are scored on both nodes.
    "node_lost": {"ray_actors": 2, "ray_cpus_per_actor": 1, "block_rows": 2},
}
INTERRUPTED = "driver_killed"
REUSED = "csv"  # scored on Ray a second time, from the local engine's store
FAILING = "block_raises"
TRUNCATE_FIRST_PART = (
    f'-c \'import pathlib, sys; part = sorted(pathlib.Path(sys.argv[1]).glob("part-*{PART_SUFFIX}"))[0]; '
    "part.write_bytes(part.read_bytes()[:100])'"
)
SAME_METRICS = (
    "rows",
    "skipped",
    "text_issues",
    "tokens",
    "windows",
    "truncated_rows",
    "padding_ratio",
    "label_counts",
    "entity_f1",
    "entities",
    "token_confusion",
)
MODEL_WORK = ("windows", "padding_ratio")  # of the windows the model ran, fewer where rows were reused
FAULTY_MODEL = "models/onnx-faulty"


# The GCS marks a node dead after this many missed health checks, this often: ~5 s after it is lost (Ray's
# defaults take ~15 s), and still tolerant of a loaded 2-core machine.
FAST_NODE_DEATH = {"health_check_period_ms": 1000, "health_check_failure_threshold": 5}


def run_on_loopback_cluster(root: Path, commands: list[str], timeout: float = 900) -> subprocess.CompletedProcess:
    """Start a Ray head (1 CPU) and a second node (2 CPUs) on 127.0.0.1 in private namespaces, run `commands`
    against the cluster, stop it."""
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    script = "\n".join(
        [
            "set -u",
            "ip link set lo up",
            "ray start --head --port=6380 --node-ip-address=127.0.0.1 --num-cpus=1 --num-gpus=0 "
            f"--disable-usage-stats --include-dashboard=false --temp-dir={temp_dir} "
            f"--system-config={shlex.quote(json.dumps(FAST_NODE_DEATH))} >ray-start.log 2>&1 "
            "|| { cat ray-start.log; exit 3; }",
            "ray start --address=127.0.0.1:6380 --node-ip-address=127.0.0.1 --num-cpus=2 --num-gpus=0 "
            ">ray-worker.log 2>&1 || { cat ray-worker.log; exit 3; }",
            "export RAY_ADDRESS=127.0.0.1:6380",
            "rc=0",
            *[f"{command} || {{ rc=$?; echo 'failed: '{shlex.quote(command)}; }}" for command in commands],
            "ray stop --force >/dev/null 2>&1",
            "exit $rc",
        ]
    )
    # The cluster's own auth token, so that a token in the user's ~/.ray cannot lock the driver out.
    token = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"  # this environment's `ray`
    env = {**os.environ, "PYTHONPATH": str(REPO), "PATH": path, **token}
    env.pop("RAY_ADDRESS", None)
    try:
        return subprocess.run(
            ["unshare", "--net", "--pid", "--fork", "--mount-proc", "bash", "-c", script],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)


def write_text_files(root: Path) -> None:
    """The parquet dataset as CSV, as JSON Lines with rows Arrow's JSON reader would reject, and as a directory
    of three Parquet files."""
    (root / "data-files").mkdir()
    whole = pd.read_parquet(root / "data.parquet")
    for number, start in enumerate((0, 15, 29)):
        whole.iloc[start : start + 15].to_parquet(root / f"data-files/{number}.parquet")
    source = whole[["id", "text"]]  # text files without gold
    source.to_csv(root / "data.csv", index=False)
    lines = [json.dumps(record, ensure_ascii=False) for record in source.to_dict(orient="records")]
    lines += ['{"id": "number", "text": 42}', "", '{"id": "list", "text": ["a", "b"]}']
    with (root / "data.jsonl").open("wb") as stream:
        stream.write("\n".join(lines).encode() + b'\n{"id": "bad-utf8", "text": "caf\xe9 \xff"}\n')


def write_poisoned_dataset(root: Path) -> None:
    """64 Latin texts but one Cyrillic (row 60, in the last block of 8), and a copy of the model that fails on the
    Cyrillic text's tokens (`tests.faulty_graph`)."""
    texts = [CORPUS[0]] * 64
    texts[60] = CORPUS[1]
    pd.DataFrame({"id": [f"row-{index}" for index in range(64)], "text": texts}).to_parquet(root / "poisoned.parquet")
    shutil.copytree(root / "models/onnx", root / FAULTY_MODEL)
    tokenizer = TextTokenizer.load(root / FAULTY_MODEL)
    latin, cyrillic = (set(tokens.input_ids.tolist()) for tokens in tokenizer.encode(CORPUS[:2]))
    fail_on_token_ids(root / FAULTY_MODEL / "model.onnx", cyrillic - latin, tokenizer.backend.get_vocab_size())


def ray_command(name: str) -> str:
    """The shell command that scores scenario `name` with the ray engine (its params already in place)."""
    python = shlex.quote(sys.executable)
    score, parts = f"{python} -m stages.infer", f"out/ray-{name}.parquet.parts"
    if name == INTERRUPTED:
        killed = f"{python} -m tests.interrupt {parts} 2 -- {score} && test ! -e out/ray-{name}.parquet"
        killed += f" && ls -l {parts} > {name}.listing"  # what the driver and actors wrote before the kill
        return f"{killed} && {python} {TRUNCATE_FIRST_PART} {parts} && {score} 2> {name}.log"
    if name == FAILING:
        return f"{{ {score} 2> {name}.log; echo $? > {name}.rc; }}"
    if name == "actor_killed":
        return f"{python} -m tests.interrupt {parts} 4 --kill-actor -- {score} 2> {name}.log"
    if name == "node_lost":
        return f"{python} -m tests.interrupt {parts} 6 --lose-node -- {score} 2> {name}.log"
    return score


def require_ray_cluster() -> None:
    """Ray installed, and namespaces to keep its cluster on loopback: else a CI failure, a local skip."""
    if importlib.util.find_spec("ray") is None:
        unavailable("Ray is not installed (pip install -e '.[ray]')")
    if reason := loopback_namespaces_usable():
        unavailable(reason)


@pytest.mark.slow
def test_ray_engine_writes_the_local_engines_predictions_and_survives_faults(make_workspace):
    require_ray_cluster()
    workspace = make_workspace("deberta-v2", rows=40)
    load_checkpoint.main()
    export.main()
    write_text_files(workspace.root)
    write_poisoned_dataset(workspace.root)
    defaults = dict(workspace.params["infer"])

    commands = []
    for name, overrides in SCENARIOS.items():
        scenario = {
            **defaults,
            **overrides,
            "output": f"out/local-{name}.parquet",
            "details": f"metrics/local-{name}.json",
            "store": f"out/store-local-{name}",  # each run scores its rows: no store shared between runs
        }
        model = {"output": FAULTY_MODEL if name == FAILING else "models/onnx"}
        workspace.write_params(infer=scenario, export=model)
        if name != FAILING:
            infer.main()
        scenario.update(engine="ray", output=f"out/ray-{name}.parquet", store=f"out/store-ray-{name}")
        workspace.write_params(infer={**scenario, "details": f"metrics/ray-{name}.json"}, export=model)
        shutil.copy("params.yaml", f"params-{name}.yaml")
        commands.append(f"cp params-{name}.yaml params.yaml && {ray_command(name)}")
        if name == REUSED:
            scenario.update(output=f"out/ray-{name}-reused.parquet", store=f"out/store-local-{name}")
            workspace.write_params(infer={**scenario, "details": f"metrics/ray-{name}-reused.json"}, export=model)
            shutil.copy("params.yaml", f"params-{name}-reused.yaml")
            commands.append(f"cp params-{name}-reused.yaml params.yaml && {ray_command(name)}")

    result = run_on_loopback_cluster(workspace.root, commands)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]

    for name in SCENARIOS.keys() - {FAILING}:
        local = pq.read_table(f"out/local-{name}.parquet")
        ray_table = pq.read_table(f"out/ray-{name}.parquet")
        assert ray_table.schema.equals(local.schema), name
        assert ray_table.equals(local), name  # ids in input order, labels, offsets, spans, probabilities
        local_metrics = json.loads(Path(f"metrics/local-{name}.json").read_text())
        ray_metrics = json.loads(Path(f"metrics/ray-{name}.json").read_text())
        assert set(ray_metrics) == set(local_metrics), name
        # The actors of one run share its store: a block scored by an actor that died before its part was
        # written, or rows whose text (and batch) another actor stored first, are taken from it, so the model
        # may do less work than the local engine's did.
        same = [key for key in SAME_METRICS if ray_metrics["reused_rows"] == 0 or key not in MODEL_WORK]
        assert {key: ray_metrics.get(key) for key in same} == {key: local_metrics.get(key) for key in same}, name
        assert (local_metrics["engine"], ray_metrics["engine"]) == ("local", "ray")
        assert ray_metrics["provider"] == "CPUExecutionProvider"
    jsonl = pd.read_parquet("out/ray-jsonl_windows_skip.parquet").set_index("id")["skipped_reason"]
    assert jsonl[["number", "list"]].tolist() == ["not_string", "not_string"]
    assert pd.isna(jsonl["bad-utf8"])  # JSON Lines are decoded with U+FFFD as they are read, as locally
    assert json.loads(Path("metrics/ray-directory.json").read_text())["threads"] == 2
    assert json.loads(Path("metrics/ray-csv.json").read_text())["threads"] in (1, 2)  # the actors that ran
    check_reused_from_the_local_store()
    check_driver_killed()
    check_block_raises()
    check_actor_killed(result.stdout)
    check_node_lost(result.stdout)


def sha256(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def check_reused_from_the_local_store() -> None:
    """A scenario scored again on Ray with the local engine's store: every row reused, the same bytes."""
    assert sha256(f"out/ray-{REUSED}-reused.parquet") == sha256(f"out/local-{REUSED}.parquet")
    metrics = json.loads(Path(f"metrics/ray-{REUSED}-reused.json").read_text())
    assert (metrics["scored_rows"], metrics["reused_rows"]) == (0, metrics["rows"]), metrics
    print(f"reused on Ray: {metrics['reused_rows']} rows from the local engine's store, none scored")


def check_driver_killed() -> None:
    """The rerun after the driver's SIGKILL: same bytes as the local engine, the truncated part scored again."""
    assert Path(f"out/ray-{INTERRUPTED}.parquet").read_bytes() == Path(f"out/local-{INTERRUPTED}.parquet").read_bytes()
    resumed = json.loads(Path(f"metrics/ray-{INTERRUPTED}.json").read_text())
    assert resumed["rescored_blocks"] == 1 and 1 <= resumed["resumed_blocks"] < resumed["blocks"] == 44, resumed
    written = [line.split()[-1] for line in Path(f"{INTERRUPTED}.listing").read_text().splitlines()[1:]]
    allowed = rf"manifest\.json|part-\d{{6,}}(\{PART_SUFFIX}|\.json)|scored-.*|\.lease.*"
    assert written and all(re.fullmatch(allowed, name) for name in written), written  # no copy of the dataset
    log = Path(f"{INTERRUPTED}.log").read_text()
    assert "taking over the lease on out/ray-driver_killed.parquet from run " in log, log[-3000:]
    assert re.search(rf"part-\d{{6}}\{PART_SUFFIX} \(block \d+\) is not what was written \(100 bytes", log), log[-3000:]
    print(
        f"driver killed: resumed {resumed['resumed_blocks']} blocks, rescored {resumed['rescored_blocks']} "
        f"truncated part, sha256 {sha256(f'out/ray-{INTERRUPTED}.parquet')}"
    )


def check_block_raises() -> None:
    """A block whose scoring raises stops the run, naming the block and its first row; the other parts stay."""
    log = Path(f"{FAILING}.log").read_text()
    last = log.strip().splitlines()[-1]
    assert Path(f"{FAILING}.rc").read_text().strip() == "1", log[-3000:]  # not the user's to fix: traceback kept
    failed = re.match(
        r"stages\.scoring\.score\.BlockFailed: scoring block (\d+) \(first row id 'row-(\d+)'\) failed:", last
    )
    assert failed and 52 < int(failed[2]) <= 60, last  # the block of row 60 (blocks of about 8 rows)
    assert "indices element out of data bounds" in last, last
    parts = PartFiles(locate(f"out/ray-{FAILING}.parquet.parts"))
    assert int(failed[1]) not in parts.indices() and parts.indices(), parts.indices()
    assert all(parts.finished(index) is not None for index in parts.indices()), "the other parts are whole"
    assert not Path(f"out/ray-{FAILING}.parquet").exists()
    print(f"block raises: {last}; parts kept for blocks {parts.indices()}")


def check_actor_killed(stdout: str) -> None:
    """An actor SIGKILLed mid-run: Ray restarts it, and the run ends with the local engine's bytes."""
    assert "--kill-actor: SIGKILL to pids" in stdout, stdout[-3000:]
    assert sha256("out/ray-actor_killed.parquet") == sha256("out/local-actor_killed.parquet")
    metrics = json.loads(Path("metrics/ray-actor_killed.json").read_text())
    assert metrics["actor_restarts"] >= 1 and metrics["lost_nodes"] == [], metrics
    assert "Ray restarted" in Path("actor_killed.log").read_text()
    print(
        f"actor killed: actor restarts {metrics['actor_restarts']}, blocks scored more than once "
        f"{metrics['blocks_scored_more_than_once']}, rows per node {metrics['rows_per_node']}"
    )


def check_node_lost(stdout: str) -> None:
    """Losing the second node mid-run: the run ends with the local engine's bytes, and says what it lost."""
    assert "--lose-node: SIGKILL to pids" in stdout, stdout[-3000:]
    assert sha256("out/ray-node_lost.parquet") == sha256("out/local-node_lost.parquet")
    metrics = json.loads(Path("metrics/ray-node_lost.json").read_text())
    assert len(metrics["lost_nodes"]) == 1 and metrics["actor_restarts"] >= 1, metrics
    per_node = metrics["rows_per_node"]  # the lost node's rows, and the head's
    assert len(per_node) == 2 and all(per_node.values()) and sum(per_node.values()) == 44, per_node
    assert metrics["lost_nodes"][0] in per_node
    log = Path("node_lost.log").read_text()
    assert f"Ray lost node {metrics['lost_nodes'][0]} mid-run; scoring goes on with the actors on the 1 node(s)" in log
    assert "the run went on with fewer actors after losing 1 node(s)" in log, log[-3000:]
    print(
        f"node lost: rows per node {metrics['rows_per_node']}, lost {metrics['lost_nodes']}, actor restarts "
        f"{metrics['actor_restarts']}, blocks scored more than once {metrics['blocks_scored_more_than_once']}, "
        f"sha256 {sha256('out/ray-node_lost.parquet')} (local engine: {sha256('out/local-node_lost.parquet')})"
    )


def test_the_read_step_cuts_each_file_as_the_local_engine_and_carries_its_gold_words(make_workspace):
    """`read_files` on one file of a directory dataset: the local engine's blocks of that file (numbers, rows, gold
    words), a block finished by an earlier run passed on as its tally, and nothing written."""
    if importlib.util.find_spec("ray") is None:
        unavailable("Ray is not installed (pip install -e '.[ray]')")
    import pickle

    import pyarrow as pa

    from stages.scoring.cluster.actor import read_files
    from stages.scoring.datasets.blocks import dataset_files
    from stages.scoring.metrics import Tally
    from stages.scoring.reuse.plan import FILE_BLOCKS, numbered_blocks
    from stages.scoring.storage.parts import Part, encode_part

    workspace = make_workspace()
    words = [["Anna", "paid", "1,234", "rubles"], ["東京", "ok"], [], *[["row", str(index)] for index in range(40)]]
    tags = [["B-CAPITALIZED", "O", "B-NUMBER", "O"], ["B-CJK", "O"], [], *[["O", "B-NUMBER"]] * 40]
    Path("tagged").mkdir()
    for number, rows in enumerate((slice(0, 20), slice(20, 43))):
        ids = [f"{number}-{index}" for index in range(len(words[rows]))]
        pd.DataFrame({"id": ids, "tokens": words[rows], "ner_tags": tags[rows]}).to_parquet(f"tagged/{number}.parquet")
    workspace.write_params(infer={"input": "tagged", "block_rows": 4})
    params = load_params()
    local = list(numbered_blocks(params))
    parts = PartFiles.for_run(locate("out/predictions.parquet.parts"), "a run", {"verified": True})
    finished = dict(local)[FILE_BLOCKS]  # the second file's first block, as an earlier run left it
    parts.save(FILE_BLOCKS, Part(encode_part(pa.table({"id": finished.ids})), Tally(rows=len(finished.ids))))
    files = [source for source, _ in dataset_files("tagged")]
    read = [
        row
        for table in read_files(pa.table({"file": [1, 0]}), params, files, parts.directory)
        for row in table.to_pylist()
    ]
    by_number = {row["number"]: row for row in read}
    assert sorted(by_number) == [number for number, _ in local] and min(by_number) == 0 < FILE_BLOCKS < max(by_number)
    for number, block in local:
        row = by_number[number]
        if number == FILE_BLOCKS:
            assert row["block"] is None and json.loads(row["finished"])["rows"] == len(block.ids), row
            continue
        assert row["finished"] is None and row["file"] == f"tagged/{number // FILE_BLOCKS}.parquet", row
        carried = pickle.loads(row["block"])
        assert (carried.ids, carried.texts, carried.gold, carried.words) == (
            block.ids,
            block.texts,
            block.gold,
            block.words,
        )
    first = pickle.loads(by_number[0]["block"])
    assert first.texts[:3] == ["Anna paid 1,234 rubles", "東京 ok", ""]
    assert first.words[:2] == [[(0, 4), (5, 9), (10, 15), (16, 22)], [(0, 2), (3, 5)]]
    assert first.gold[:2] == [[(0, 4, "CAPITALIZED"), (10, 15, "NUMBER")], [(0, 2, "CJK")]]
    written = sorted(path.name for path in Path("out/predictions.parquet.parts").iterdir())
    assert written == ["manifest.json", f"part-{FILE_BLOCKS}.arrow", f"part-{FILE_BLOCKS}.json"], written


def test_ray_engine_without_ray_installed_says_how_to_install_it(make_workspace, monkeypatch):
    workspace = make_workspace()
    workspace.write_params(infer={"engine": "ray"})
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as if it were not installed
    monkeypatch.delitem(sys.modules, "stages.scoring.cluster.engine", raising=False)
    with pytest.raises(UserError, match=r"pip install -e '\.\[ray\]'"):
        infer.main()
