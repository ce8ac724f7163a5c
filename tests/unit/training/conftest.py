from __future__ import annotations

from typing import Any

import pytest

from forecast.basemodels import TINY_MODEL_DIR


@pytest.fixture(scope="session")
def tokenizer() -> Any:
    """The tiny model's real tokenizer (the model is materialized once if missing)."""
    from transformers import AutoTokenizer

    from forecast.basemodels import materialize_tiny_model

    return AutoTokenizer.from_pretrained(str(materialize_tiny_model(TINY_MODEL_DIR)))
