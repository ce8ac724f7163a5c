"""Unit-test fixtures of the service: its token and adapters (the app, the engines, the
clock and the client come from tests/unit/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.service import stub_adapters

TOKEN = "test-admin-token-0123456789"


@pytest.fixture
def adapter_root(tmp_path: Path) -> Path:
    return stub_adapters(tmp_path / "adapters", ["fingpt-llama@v1", "fingpt-deepseek@v1"])


@pytest.fixture
def token() -> str:
    return TOKEN
