"""End to end on the tiny model: dataset → deepspeed fine-tune of both bases → per-checkpoint
evaluation → MSE-minimum adapter + manifest → report; then the adapter loads back with peft,
the service serves it on a real vLLM engine, and a killed run resumes from its checkpoint."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from forecast.basemodels import TINY_MODEL_DIR
from forecast.templates import ChatFormat
from training.config import CONFIG_DIR

pytestmark = pytest.mark.integration

MICRO = {  # the CPU preset, cut to two rows and two one-step checkpoints per base
    "data": {"cutoff": "2023-10-01", "max_length": 1024, "train_rows": 2, "eval_rows": 2},
    "train": {"epochs": 1, "learning_rate": 0.001, "grad_accum": 1, "save_steps": 1,
              "warmup_ratio": 0.0, "lr_scheduler": "constant", "deepspeed_config": "ds_zero2_adamw.json"},
    "eval": {"max_new_tokens": 8},
}


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from training.pipeline import run_bases

    root = tmp_path_factory.mktemp("pipeline")
    preset = json.loads((CONFIG_DIR / "cpu_tiny.json").read_text())
    config = root / "micro.json"
    config.write_text(json.dumps({**preset, **MICRO, "runs_dir": str(root / "runs")}))
    run_bases(config, adapter_root=root / "adapters", report_dir=root / "report")
    return {"root": root, "adapters": root / "adapters", "report": root / "report"}


def test_both_bases_trained_evaluated_and_shipped(pipeline: dict[str, Path]) -> None:
    for base, fmt in (("llama", "llama3"), ("deepseek", "deepseek-r1")):
        run_dir = pipeline["root"] / "runs" / base
        log = json.loads((run_dir / "train_log.json").read_text())
        assert log["checkpoints"] == ["checkpoint-1", "checkpoint-2"]
        assert any("eval_loss" in e for e in log["log_history"])
        ev = json.loads((run_dir / "eval.json").read_text())
        assert len(ev["checkpoints"]) == 2 and ev["eval_rows"] == 2
        kept = min(ev["checkpoints"], key=lambda c: (c["mse"], c["eval_loss"], c["step"]))
        assert ev["best_checkpoint"] == kept["checkpoint"]
        adapter = pipeline["adapters"] / f"fingpt-{base}" / "v1"
        manifest = json.loads((adapter / "adapter.json").read_text())
        assert manifest["chat_format"] == fmt and manifest["served_base"] == base
        assert manifest["metrics"]["mse"] == kept["mse"]
        assert manifest["metrics"]["checkpoint"] == kept["checkpoint"]
    report = (pipeline["report"] / "report.md").read_text()
    assert len(list(pipeline["report"].glob("*.png"))) >= 4
    assert "**(kept)**" in report


def test_a_shipped_adapter_loads_with_peft_and_generates(pipeline: dict[str, Path]) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from forecast.dataset import official_rows
    from forecast.templates import render_chat
    from training.data import to_predict

    adapter = pipeline["adapters"] / "fingpt-deepseek" / "v1"
    manifest = json.loads((adapter / "adapter.json").read_text())
    tokenizer: Any = AutoTokenizer.from_pretrained(str(TINY_MODEL_DIR))
    base = AutoModelForCausalLM.from_pretrained(str(TINY_MODEL_DIR), dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(adapter)).eval()
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b)  # trained, not the zero init
    prompt = render_chat(to_predict(official_rows()[0].prompt), ChatFormat(manifest["chat_format"]))
    ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert out.shape[1] > ids["input_ids"].shape[1]
    assert tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip()


async def test_a_trained_adapter_is_served_by_the_service(
    pipeline: dict[str, Path], tiny_model: Path, tmp_path: Path
) -> None:
    """The hand-off through files only: the service reads the manifest training wrote, loads
    the adapter into a real vLLM engine through its registry, and that adapter answers."""
    import httpx
    from support.engines import tiny_engines

    from forecast.providers.snapshot import SnapshotMarketData
    from service.bootstrap import running
    from service.settings import ServiceSettings

    trained = pipeline["adapters"] / "fingpt-llama" / "v1"
    manifest = json.loads((trained / "adapter.json").read_text())
    settings = ServiceSettings(
        _env_file=None,  # type: ignore[call-arg]
        admin_token="train-then-serve-token", adapter_root=pipeline["adapters"],
        db_url=f"sqlite:///{tmp_path / 'forecasts.sqlite3'}", preload=["fingpt-llama@v1"],
        max_new_tokens=8, weeks=1, news_per_week=1, with_financials=False,
        ready_probe_s=3600, ready_timeout_s=600,
    )
    admin = {"Authorization": "Bearer train-then-serve-token"}
    now = dt.datetime(2024, 1, 5, 12, 0, tzinfo=dt.UTC)
    async with (
        tiny_engines(tiny_model, ["llama"], max_loras=1) as engines,
        running(settings, SnapshotMarketData(), engines, now=lambda: now) as app,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc",
                          timeout=600) as client,
    ):
        listed = (await client.get("/v1/adapters", headers=admin)).json()
        r = await client.post("/v1/forecast", json={"ticker": "AAPL", "adapter": "fingpt-llama"})
        loras = await engines["llama"].list_loras()
        rows = app.state.service.forecast_log.count()
    [served] = [a for a in listed["adapters"] if a["name"] == "fingpt-llama"]
    assert (served["version"], served["base"], served["path"]) == ("v1", "llama", "fingpt-llama/v1")
    assert served["base_model"] == manifest["base_model"] == engines["llama"].info.model_id
    assert served["chat_format"] == manifest["chat_format"] and served["lora_rank"] == manifest["lora"]["r"]
    assert served["metrics"]["mse"] == manifest["metrics"]["mse"]
    assert served["lora_id"] in loras
    assert r.status_code == 200, r.text
    assert r.json()["adapter"] == "fingpt-llama@v1" and r.json()["base"] == "llama"
    assert r.json()["raw_text"] and rows == 1


def test_a_killed_run_resumes_from_its_last_checkpoint(pipeline: dict[str, Path]) -> None:
    """Checkpoint 2 is removed as if the run had been killed after the first save: the resumed
    run trains step 2 only (step 1 is restored, not re-run) and, with the optimizer state of
    checkpoint 1, writes the same step-2 weights as the uninterrupted run."""
    import shutil

    from safetensors.torch import load_file

    from training.finetune import launch

    run_dir = pipeline["root"] / "runs" / "llama"
    before = json.loads((run_dir / "train_log.json").read_text())
    assert [s["step"] for s in before["step_times"]] == [1, 2]
    weights = "adapter_model.safetensors"
    uninterrupted = load_file(str(run_dir / "checkpoint-2" / weights))
    shutil.rmtree(run_dir / "checkpoint-2")  # as if killed after the first save
    launch(pipeline["root"] / "micro.json", "llama", run_dir, resume=True)
    log = json.loads((run_dir / "train_log.json").read_text())
    assert log["checkpoints"] == ["checkpoint-1", "checkpoint-2"]
    assert [s["step"] for s in log["step_times"]] == [2]  # only step 2 ran in this process
    steps = [e["step"] for e in log["log_history"] if "loss" in e]
    assert steps == [1, 2]
    # Step 1's records come back from checkpoint 1 as they were (wall times included): a run
    # that trained step 1 again would have measured its own.
    assert [e for e in log["log_history"] if e["step"] == 1] == [
        e for e in before["log_history"] if e["step"] == 1
    ]
    resumed = load_file(str(run_dir / "checkpoint-2" / weights))
    assert resumed.keys() == uninterrupted.keys()
    for name, tensor in uninterrupted.items():
        assert torch_allclose(resumed[name], tensor), name


def torch_allclose(a: Any, b: Any) -> bool:
    import torch

    return bool(torch.allclose(a, b, rtol=1e-4, atol=1e-7))
