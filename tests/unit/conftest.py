"""Fixtures shared by the unit tests of more than one layer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def llama3_shapes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Both bases' 8B-shaped checkpoints (config + the real Llama-3 tokenizer, no weights)."""
    from forecast.basemodels import BASES, materialize_8b_shape

    root = tmp_path_factory.mktemp("shapes")
    return {base: materialize_8b_shape(root / base, base) for base in BASES}


@pytest.fixture(scope="session")
def llama3_tokenizers(llama3_shapes: dict[str, Path]) -> dict[str, Any]:
    from transformers import AutoTokenizer

    return {base: AutoTokenizer.from_pretrained(str(path)) for base, path in llama3_shapes.items()}
