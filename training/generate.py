"""Greedy batched generation and lenient reading of (possibly cut-off) generated answers.

A small ``max_new_tokens`` (the CPU slice uses 64) ends most answers before their
``Prediction:`` line. With ``force_prediction`` such an answer gets the
``[Prediction & Analysis]:\\nPrediction:`` header appended to its own text and the bin is the
one of the twelve bin phrases the model scores highest there (constrained decoding), so it is
still the model's own; these rows are counted as ``probed``. Without it, a bin that cannot be
read falls back to ``U1`` and is counted as ``unreadable``.

Evaluation generates through a :class:`CheckpointGenerator`: vLLM with one LoRA per checkpoint
(``training.vllm_generate``, the default) or :class:`TransformersCheckpoints` here (each
checkpoint merged into the base, then ``generate``), kept as the cross-check of the first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from forecast.answer import ParsedAnswer, bin_phrase, partial_fields, probe_text, read_partial
from forecast.bins import Bin
from forecast.templates import SPECS, ChatFormat

FALLBACK_BIN = Bin.U1  # the "always up 0-1%" baseline's answer, for unreadable predictions


@dataclass(frozen=True)
class ReadAnswer:
    parsed: ParsedAnswer  # sections (empty when missing) and the bin used for the metrics
    how: Literal["parsed", "probed", "unreadable"]
    probe: str | None = None  # the continuation after the appended Prediction header, if any


def batch_generate(
    model: Any, tokenizer: Any, prompts: Sequence[list[int]], max_new_tokens: int,
    fmt: ChatFormat, batch_size: int = 8,
) -> list[str]:
    """Greedy continuations of token-id prompts, left-padded in batches, cut at the EOS text."""
    import torch

    eos_text = SPECS[fmt].eos
    pad = tokenizer.pad_token_id
    out: list[str] = []
    for i in range(0, len(prompts), batch_size):
        chunk = prompts[i : i + batch_size]
        width = max(len(p) for p in chunk)
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in chunk])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in chunk])
        with torch.no_grad():
            gen = model.generate(
                input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                do_sample=False, pad_token_id=pad, stop_strings=[eos_text], tokenizer=tokenizer,
            )
        for row in gen[:, width:]:
            text = tokenizer.decode(row, skip_special_tokens=True)
            out.append(text.split(eos_text, 1)[0])
    return out


def read_answer(text: str, probe: str | None = None) -> ReadAnswer:
    """A generated answer as a ParsedAnswer: fully parsed if it can be, else its sections and
    the bin from the probe continuation (or the fallback bin)."""
    read = read_partial(text, probe)
    if read is None:
        positive, concerns, pred_text, analysis = partial_fields(text)
        fallback = ParsedAnswer(
            positive=positive, concerns=concerns, prediction=FALLBACK_BIN,
            prediction_text=pred_text, analysis=analysis,
        )
        return ReadAnswer(fallback, "unreadable", probe)
    return ReadAnswer(read, "probed" if read.prediction_source == "probe" else "parsed", probe)


def most_likely_bin(model: Any, tokenizer: Any, context: list[int]) -> Bin:
    """The bin whose phrase the model finds most likely after ``context`` (constrained greedy
    decoding over the twelve valid continuations: one pass over the context, then the twelve
    phrases together on a copy of its KV cache)."""
    import torch

    bins = list(Bin)
    cands = [list(tokenizer(bin_phrase(b), add_special_tokens=False)["input_ids"]) for b in bins]
    width = max(len(c) for c in cands)
    with torch.no_grad():
        out = model(input_ids=torch.tensor([context]), use_cache=True)
        first = out.logits[0, -1].log_softmax(-1)
        cache = out.past_key_values
        cache.batch_repeat_interleave(len(cands))
        ids = torch.tensor([c + [c[-1]] * (width - len(c)) for c in cands])
        real = torch.tensor([[1] * len(c) + [0] * (width - len(c)) for c in cands])
        mask = torch.cat([torch.ones(len(cands), len(context), dtype=torch.long), real], dim=1)
        logp = model(input_ids=ids, attention_mask=mask, past_key_values=cache).logits.log_softmax(-1)
    scores = []
    for i, c in enumerate(cands):
        total = float(first[c[0]])
        total += sum(float(logp[i, j - 1, c[j]]) for j in range(1, len(c)))
        scores.append(total)
    return bins[max(range(len(bins)), key=scores.__getitem__)]


def generate_and_read(
    model: Any, tokenizer: Any, prompts: Sequence[list[int]], fmt: ChatFormat,
    max_new_tokens: int, force_prediction: bool = True, batch_size: int = 8,
) -> tuple[list[str], list[ReadAnswer]]:
    texts = batch_generate(model, tokenizer, prompts, max_new_tokens, fmt, batch_size)
    probes: list[str | None] = [None] * len(texts)
    if force_prediction:
        for i, text in enumerate(texts):
            if read_answer(text).how == "parsed":
                continue
            context = prompts[i] + list(tokenizer(probe_text(text), add_special_tokens=False)["input_ids"])
            probes[i] = bin_phrase(most_likely_bin(model, tokenizer, context))
    return texts, [read_answer(t, p) for t, p in zip(texts, probes, strict=True)]


class CheckpointGenerator(Protocol):
    def generate_and_read(
        self, checkpoint: Path, prompts: Sequence[list[int]],
    ) -> tuple[list[str], list[ReadAnswer]]:
        """Greedy answers of one checkpoint (a peft adapter directory) to token-id prompts,
        with the cut-off ones probed when the settings ask for it, and their reading."""
        ...


class TransformersCheckpoints:
    """Per checkpoint: the float32 base with the adapter merged in, then batched ``generate``."""

    def __init__(
        self, model_path: str, tokenizer: Any, fmt: ChatFormat, max_new_tokens: int,
        force_prediction: bool = True,
    ) -> None:
        self.model_path = model_path
        self.tokenizer = tokenizer
        self.fmt = fmt
        self.max_new_tokens = max_new_tokens
        self.force_prediction = force_prediction

    def generate_and_read(
        self, checkpoint: Path, prompts: Sequence[list[int]],
    ) -> tuple[list[str], list[ReadAnswer]]:
        import torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM

        base = AutoModelForCausalLM.from_pretrained(self.model_path, dtype=torch.float32)
        model = PeftModel.from_pretrained(base, str(checkpoint)).merge_and_unload().eval()
        return generate_and_read(
            model, self.tokenizer, prompts, self.fmt, self.max_new_tokens, self.force_prediction,
        )
