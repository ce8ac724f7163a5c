"""Fixtures of the reliability unit tests: the service's own (tests/unit/conftest.py), with a
second llama version on disk and an optional engine-restart hook (``serve(restart=...)``).
Helpers: reliability_harness.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.service import stub_adapters

TOKEN = "reliability-admin-token-9f8e7d"


@pytest.fixture
def adapter_root(tmp_path: Path) -> Path:
    refs = ["fingpt-llama@v1", "fingpt-llama@v2", "fingpt-deepseek@v1"]
    return stub_adapters(tmp_path / "adapters", refs)


@pytest.fixture
def token() -> str:
    return TOKEN
