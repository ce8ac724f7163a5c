"""Packed rows: no example split, dropped or attended across; the loss (and its gradient) of a
packed row is the token-weighted mean over its examples alone; answer-only logits give the
Trainer's own loss."""

from __future__ import annotations

import copy
import datetime as dt
import itertools
from collections import Counter
from typing import Any

import pytest
import torch

from forecast.templates import ChatFormat
from training.config import DataSettings
from training.data import IGNORE_INDEX, prepare_split
from training.packing import (
    answer_only_loss,
    first_fit_decreasing,
    flatten_batch,
    pack_records,
    packed_attn_implementation,
    varlen_kwargs,
)

# (prompt, answer) lengths: uneven, so rows hold one to three examples
SHAPES = [(40, 30), (25, 10), (60, 50), (12, 5), (70, 20), (9, 9), (33, 1)]


def records(shapes: list[tuple[int, int]] = SHAPES, vocab: int = 300, seed: int = 1) -> list[dict[str, list[int]]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for prompt, answer in shapes:
        ids = torch.randint(0, vocab, (prompt + answer,), generator=g).tolist()
        out.append({"input_ids": ids, "labels": [IGNORE_INDEX] * prompt + ids[prompt:]})
    return out


def segments(row: dict[str, list[int]]) -> list[tuple[int, int]]:
    starts = [i for i, p in enumerate(row["position_ids"]) if p == 0]
    return list(zip(starts, [*starts[1:], len(row["position_ids"])], strict=True))


def tiny_llama(attn: str, vocab: int = 300, seed: int = 0) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=vocab, max_position_embeddings=512, use_cache=False)
    return LlamaForCausalLM._from_config(copy.deepcopy(cfg), attn_implementation=attn, dtype=torch.float32)


# -- rows ------------------------------------------------------------------------------------------
def test_first_fit_decreasing_places_every_example_once_within_capacity() -> None:
    lengths = [70, 35, 110, 17, 90, 18, 34]
    rows = first_fit_decreasing(lengths, 120)
    assert sorted(i for r in rows for i in r) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in r) <= 120 for r in rows)
    assert rows == [[2], [4, 5], [0, 1], [3, 6]]  # longest first, each into the first row with room
    with pytest.raises(ValueError, match="a row holds"):
        first_fit_decreasing([121], 120)


def test_packed_rows_keep_every_example_whole_with_no_cross_example_target() -> None:
    recs = records()
    rows = pack_records(recs, 120)
    assert len(rows) < len(recs)
    found = []
    for row in rows:
        assert len(row["input_ids"]) == len(row["labels"]) == len(row["position_ids"]) <= 120
        for start, end in segments(row):
            assert row["position_ids"][start:end] == list(range(end - start))
            assert row["labels"][start] == IGNORE_INDEX  # the previous example's last token predicts nothing
            found.append((tuple(row["input_ids"][start:end]), tuple(row["labels"][start + 1:end])))
    expected = [(tuple(r["input_ids"]), tuple(r["labels"][1:])) for r in recs]
    assert Counter(found) == Counter(expected)  # none split, none dropped, none duplicated


def test_real_examples_pack_whole(tokenizer: Any) -> None:
    split = prepare_split(DataSettings(max_length=1024, cutoff=dt.date(2023, 10, 1)), tokenizer, ChatFormat.LLAMA3)
    recs = split.train.as_records()  # each up to 1,024 tokens: two share a 2,048-token row
    rows = pack_records(recs, 2048)
    assert sum(len(segments(r)) for r in rows) == len(recs) and len(rows) < len(recs)
    assert sum(len(r["input_ids"]) for r in rows) == sum(len(r["input_ids"]) for r in recs)


def test_flatten_batch_joins_rows_and_derives_varlen_kwargs() -> None:
    recs = records()
    rows = pack_records(recs, 120)[:2]
    batch = flatten_batch([rows[0], {**recs[3], "attention_mask": [1] * len(recs[3]["input_ids"])}])
    n = len(rows[0]["input_ids"]) + len(recs[3]["input_ids"])
    assert set(batch) == {"input_ids", "labels", "position_ids", "cu_seq_lens_q", "cu_seq_lens_k",
                          "max_length_q", "max_length_k"}
    assert batch["input_ids"].shape == batch["labels"].shape == batch["position_ids"].shape == (1, n)
    starts = [s for s, _ in segments(rows[0])] + [len(rows[0]["input_ids"])]
    assert batch["cu_seq_lens_q"].tolist() == [*starts, n] and batch["cu_seq_lens_q"].dtype == torch.int32
    cu = batch["cu_seq_lens_q"].tolist()
    assert batch["max_length_q"] == batch["max_length_k"] == max(b - a for a, b in itertools.pairwise(cu))
    assert (batch["labels"][batch["position_ids"] == 0] == IGNORE_INDEX).all()
    assert varlen_kwargs(batch["position_ids"])["cu_seq_lens_k"].tolist() == batch["cu_seq_lens_q"].tolist()


# -- attention and loss ----------------------------------------------------------------------------
def individual_losses(model: Any, recs: list[dict[str, list[int]]]) -> tuple[Any, int]:
    """Sum of every example's token losses alone, and the number of answer targets."""
    total, count = torch.zeros(()), 0
    for r in recs:
        out = model(input_ids=torch.tensor([r["input_ids"]]), labels=torch.tensor([r["labels"]]))
        n = sum(1 for x in r["labels"][1:] if x != IGNORE_INDEX)
        total, count = total + out.loss * n, count + n
    return total, count


def test_packed_loss_is_the_token_weighted_mean_of_the_examples_alone() -> None:
    recs = records()
    packed = tiny_llama(packed_attn_implementation(None)).eval()
    alone = tiny_llama("sdpa").eval()
    alone.load_state_dict(packed.state_dict())
    batch = flatten_batch(pack_records(recs, 120))
    with torch.no_grad():
        total, count = individual_losses(alone, recs)
        loss = packed(**batch).loss
        # control: the same row under plain causal attention sees across examples
        crossed = alone(input_ids=batch["input_ids"], attention_mask=torch.ones_like(batch["input_ids"]),
                        labels=batch["labels"]).loss
    assert loss.item() == pytest.approx((total / count).item(), abs=1e-4)
    assert abs(crossed.item() - (total / count).item()) > abs(loss.item() - (total / count).item())


def test_packed_gradients_match_the_examples_alone() -> None:
    recs = records(SHAPES[:4])
    packed = tiny_llama(packed_attn_implementation(None))
    alone = tiny_llama("sdpa")
    alone.load_state_dict(packed.state_dict())
    total, count = individual_losses(alone, recs)
    (total / count).backward()
    packed(**flatten_batch(pack_records(recs, 120))).loss.backward()
    for (name, a), (_, b) in zip(alone.named_parameters(), packed.named_parameters(), strict=True):
        assert torch.allclose(a.grad, b.grad, atol=1e-5), name


def trainer_for(model: Any, tmp_path: Any, answer_only: bool) -> Any:
    from transformers import TrainingArguments

    from training.finetune import StepLog, trainer_types

    recipe_trainer, _ = trainer_types()
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True)
    return recipe_trainer(model=model, args=args, answer_only_logits=answer_only, step_log=StepLog())


@pytest.mark.parametrize("packed", [True, False], ids=["packed", "padded"])
@pytest.mark.parametrize("num_items", [None, 57], ids=["micro-batch-mean", "accumulated-count"])
def test_answer_only_loss_equals_the_trainers_default(tmp_path: Any, packed: bool, num_items: int | None) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import Trainer

    from training.data import pad_batch

    recs = records(SHAPES[:3])
    if packed:
        model = tiny_llama(packed_attn_implementation(None))
        inputs = flatten_batch(pack_records(recs, 120))
    else:
        model = tiny_llama("sdpa")
        inputs = pad_batch([{**r, "attention_mask": [1] * len(r["input_ids"])} for r in recs], 0)
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                             task_type="CAUSAL_LM")).eval()
    trainer = trainer_for(model, tmp_path, answer_only=True)
    with torch.no_grad():
        ours = trainer.compute_loss(model, dict(inputs), num_items_in_batch=num_items)
        default = Trainer.compute_loss(trainer, model, dict(inputs), num_items_in_batch=num_items)
    assert ours.item() == pytest.approx(default.item(), abs=1e-5)
    # the logits it computed: one per answer target (any row's), not one per token
    _, outputs = answer_only_loss(model, dict(inputs))
    targets = inputs["labels"][:, 1:] != IGNORE_INDEX
    assert outputs.logits.shape[1] == int(targets.any(0).sum()) < inputs["input_ids"].shape[1]
