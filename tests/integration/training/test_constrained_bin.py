"""The constrained bin probe on the real tiny model: the KV-cache scoring equals scoring each
bin phrase with a full forward pass."""

from __future__ import annotations

from typing import Any

import pytest

from forecast.answer import PROBE_HEADER, bin_phrase
from forecast.basemodels import TINY_MODEL_DIR
from forecast.bins import Bin
from training.generate import most_likely_bin

pytestmark = pytest.mark.integration


def brute_force(model: Any, tokenizer: Any, context: list[int]) -> tuple[Bin, list[float]]:
    import torch

    scores = []
    for b in Bin:
        cand = list(tokenizer(bin_phrase(b), add_special_tokens=False)["input_ids"])
        ids = torch.tensor([context + cand])
        with torch.no_grad():
            logp = model(input_ids=ids).logits[0].log_softmax(-1)
        scores.append(sum(float(logp[len(context) + j - 1, t]) for j, t in enumerate(cand)))
    return list(Bin)[max(range(len(scores)), key=scores.__getitem__)], scores


def test_cached_scoring_matches_full_passes() -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from forecast.basemodels import materialize_tiny_model

    path = str(materialize_tiny_model(TINY_MODEL_DIR))
    tokenizer: Any = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    for text in (
        "[Positive Developments]:\n1. Record sales.\n\n[Potential Concerns]:\n1. Debt." + PROBE_HEADER,
        "AXP fell 6% on weak guidance." + PROBE_HEADER,
    ):
        context = list(tokenizer(text, add_special_tokens=False)["input_ids"])
        expected, scores = brute_force(model, tokenizer, context)
        assert len(set(scores)) > 1
        assert most_likely_bin(model, tokenizer, context) is expected
    assert bin_phrase(Bin.D5_PLUS) == " Down by more than 5%"
