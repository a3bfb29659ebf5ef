"""Object-store URLs for `infer.input` and `infer.output`, against a real S3-compatible server.

The scenarios (`tests/s3_scenarios.py`) run in their own pytest process inside a private network
namespace: the moto server binds 127.0.0.1 there, and nothing the stages send can leave the machine.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

from tests.conftest import REPO, loopback_namespaces_usable, unavailable


@pytest.mark.slow  # starts an S3 server; the scenarios take minutes
def test_scoring_from_and_to_s3_on_a_real_server_in_a_private_network():
    for module, package in (("moto.server", "moto[server]"), ("boto3", "boto3"), ("ray", "ray[data]")):
        if importlib.util.find_spec(module.split(".")[0]) is None:
            unavailable(f"{module} is not installed (pip install -e '.[test,ray]' installs {package})")
    if reason := loopback_namespaces_usable():
        unavailable(reason)
    base = tempfile.mkdtemp(prefix="s3-")
    script = f"ip link set lo up && exec {sys.executable} -m pytest -q -p no:cacheprovider --basetemp={base} tests/s3_scenarios.py"
    try:
        result = subprocess.run(
            ["unshare", "--net", "--fork", "bash", "-c", script],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            capture_output=True,
            text=True,
            timeout=1800,
        )
    finally:
        shutil.rmtree(base, ignore_errors=True)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert " passed" in result.stdout and "skipped" not in result.stdout, result.stdout[-2000:]
