"""A tool or extra the suite needs is missing: a skip on a developer's machine, a failure in CI.

``.ci/run`` exports ``DOW30_CI=1``; with it, every test that would have been skipped for want
of a tool (promtool, prometheus, hadolint, PostgreSQL) or an extra (ray, vllm) fails instead,
so a CI image that lost one cannot pass by running less."""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import NoReturn

import pytest

CI_FLAG = "DOW30_CI"


def in_ci() -> bool:
    return os.environ.get(CI_FLAG, "") not in ("", "0")


def missing(what: str, *, allow_module_level: bool = False) -> NoReturn:
    if in_ci():
        pytest.fail(f"MISSING IN CI ({CI_FLAG}=1): {what}", pytrace=False)
    pytest.skip(f"MISSING: {what}", allow_module_level=allow_module_level)


def require_module(name: str, hint: str) -> ModuleType:
    """``pytest.importorskip`` that fails in CI."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        missing(f"{name} ({hint}): {exc}", allow_module_level=True)
