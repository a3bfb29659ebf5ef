"""The parity gate's verdict, bound to what it verified: the digest of every file of the exported model directory and
the served identity (runtime and its version, the provider actually running, the served precision, the options that
change numbers, the CPU's kernel class where kernels differ by ISA). `parity` writes it whether it passed or not;
`infer` checks it before the first row, in its own process and on every Ray actor, so that nothing is scored by a
model, runtime or kind of machine other than the one verified."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stages.core.atomic import write_json
from stages.core.errors import UserError

log = logging.getLogger(__name__)

Identity = Mapping[str, str]  # what decides a served model's numbers, as the runner reports it
RERUN = "run `dvc repro parity` (or `python -m stages.parity`) on this kind of machine"


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def model_digests(onnx_dir: Path) -> dict[str, str]:
    """The sha256 of every file of the exported model directory, by its path in it."""
    return {
        path.relative_to(onnx_dir).as_posix(): file_digest(path)
        for path in sorted(onnx_dir.rglob("*"))
        if path.is_file()
    }


def write_verdict(path: Path, digests: Mapping[str, str], identity: Identity, report: Mapping[str, Any]) -> None:
    """The verdict file: the gate's result and criteria, for exactly these model files served this way."""
    keys = ("passed", "precision", "atol", "rtol", "outlier_share", "min_label_agreement", "max_f1_drop", "failures")
    verdict = {
        "passed": report["passed"],
        "served": dict(identity),
        "model_files": dict(digests),
        "criteria": {key: report[key] for key in keys[1:-1] if key in report},
        "failures": report["failures"],
    }
    write_json(path, verdict)


def verdict_message(path: Path, digests: Mapping[str, str], identity: Identity) -> str | None:
    """Why the verdict at `path` does not cover serving these model files this way, or None if it does."""
    if not path.is_file():
        return f"no parity verdict at {path} (parity.verdict)"
    try:
        verdict = json.loads(path.read_text(encoding="utf-8"))
        passed, served, files = verdict["passed"], verdict["served"], verdict["model_files"]
    except (ValueError, KeyError, TypeError) as error:
        return f"the parity verdict {path} cannot be read ({type(error).__name__}: {error})"
    if not passed:
        return f"the parity verdict {path} failed ({'; '.join(verdict.get('failures', [])[:3])})"
    changed = sorted(name for name in {*files, *digests} if files.get(name) != digests.get(name))
    if changed:
        return f"the parity verdict {path} was made for other model files ({', '.join(changed[:4])} differ)"
    if differences := identity_differences(served, identity):
        return f"the parity verdict {path} verified another serving: {differences}"
    return None


def identity_differences(expected: Identity, actual: Identity) -> str:
    """Where two served identities differ, as `key 'expected' verified, 'actual' serving; ...` ('' if nowhere)."""
    return "; ".join(
        f"{key} {expected.get(key, 'unset')!r} verified, {actual.get(key, 'unset')!r} serving"
        for key in sorted({*expected, *actual})
        if expected.get(key) != actual.get(key)
    )


def verified_identity(path: Path, digests: Mapping[str, str]) -> Identity | None:
    """The served identity a passing verdict at `path` verified for these model files; None if there is none."""
    try:
        verdict = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(verdict, dict) or verdict.get("passed") is not True or verdict.get("model_files") != digests:
        return None
    return verdict.get("served")


def check_run_member(
    path: Path, digests: Mapping[str, str], identity: Identity, expected: Identity, allow_unverified: bool
) -> dict:
    """`check_verdict` in one of a run's several processes (a Ray actor on its node), which must also serve exactly
    what the run's rows are keyed for (`expected`: what the verdict verified)."""
    verification = check_verdict(path, digests, identity, allow_unverified)
    if differences := identity_differences(expected, identity):
        raise UserError(
            f"this node serves otherwise than the run's rows are keyed for ({differences}); score on nodes of one "
            "kind (runtime, provider, CPU kernel class), or run parity on this kind of node"
        )
    return verification


def check_verdict(path: Path, digests: Mapping[str, str], identity: Identity, allow_unverified: bool) -> dict:
    """What `infer` records of the verdict; a `UserError` naming the difference and the fix where it does not cover
    what is about to serve, unless `allow_unverified` (then a warning, and the reason recorded)."""
    problem = verdict_message(path, digests, identity)
    if problem is None:
        return {"verified": True, "verdict": str(path), "served": dict(identity)}
    if not allow_unverified:
        raise UserError(f"{problem}: {RERUN}, or set infer.allow_unverified: true to score without a verdict")
    log.warning("scoring UNVERIFIED (infer.allow_unverified): %s", problem)
    return {"verified": False, "reason": problem, "served": dict(identity)}
