"""Shared fixtures of the integration tests: the tiny real model and a Prometheus binary.

Every test under this directory is marked ``integration`` (run them with ``-m integration``;
the default ``pytest tests`` runs them too).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from support.ci import missing

REPO = Path(__file__).resolve().parents[2]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).resolve().parent
    for item in items:
        if here in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    """The tiny real model (SmolLM2-135M-Instruct, float32 HF checkpoint) under var/models."""
    from forecast.basemodels import materialize_tiny_model

    return materialize_tiny_model(REPO / "var" / "models" / "smollm2-135m-instruct")


@pytest.fixture(scope="session")
def prometheus_bin() -> str:
    """The ``prometheus`` binary; installed from Debian's package when missing and possible."""
    found = shutil.which("prometheus")
    if found:
        return found
    apt = shutil.which("apt-get")
    if apt is None or os.geteuid() != 0:
        missing("prometheus, and cannot install it here (need root + apt-get): "
                "run `make system-deps` or `apt-get install -y prometheus`")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in ([apt, "update", "-qq"], [apt, "install", "-y", "-qq", "prometheus"]):
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            missing(f"prometheus: `{' '.join(cmd)}` failed: {done.stderr[-500:]}")
    found = shutil.which("prometheus")
    if not found:
        missing("prometheus: apt-get install prometheus left no binary on PATH")
    return found
