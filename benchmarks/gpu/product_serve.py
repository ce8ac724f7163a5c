#!/usr/bin/env python3
"""The product on one GPU: ``python -m service`` with both 8B-shaped bases, driven over HTTP,
against raw vLLM ``AsyncLLM`` with the same engine settings on the same prompt token ids.

Run on the GPU machine after ``product_train.py`` (adapters under ``--root``/adapters):

    python benchmarks/gpu/product_serve.py --root /tmp/product --out $OUT/serve.json

Phases, in one process tree and one call:
  1. ceilings: device-copy bandwidth (bytes read + written), the batch-1 bandwidth floor;
  2. the service: start (both engines, one GPU, each with its memory share), readiness;
     load generator at 1, 16 and 64 concurrent forecasts pinned to the Llama adapter;
     the Dow 30 for both bases through the batch route at once (60 forecasts);
     64-concurrent A/B load while a new adapter version is hot-swapped in and the A/B
     weights change; ``/metrics`` scraped;
  3. the peer: raw ``AsyncLLM`` from ``service.engine.engine_kwargs`` (the Llama engine's
     settings), the same LoRA adapter, the same prompts (rendered and tokenized as the
     service does) with the same output lengths, at the same concurrency.
Nothing here asserts on time: it measures and writes JSON (``plot_product.py`` draws it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

AS_OF = "2023-12-31"  # the snapshot's last week with news (the service's default there)
ADMIN = "gpu-run-admin"  # a throwaway token for this process tree only
PORT = 8000


def log(*a: Any) -> None:
    print(f"[{time.strftime('%H:%M:%S')}]", *a, flush=True)


# -- ceilings ------------------------------------------------------------------------------

def copy_bandwidth() -> dict[str, Any]:
    import torch

    n = 4 << 30  # 4 GiB: far past the 60 MB L2
    a = torch.empty(n, dtype=torch.uint8, device="cuda").random_()
    b = torch.empty_like(a)
    for _ in range(3):
        b.copy_(a)
    torch.cuda.synchronize()
    times = []
    for _ in range(10):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        b.copy_(a)
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e) / 1e3)
    times.sort()
    t = times[len(times) // 2]
    del a, b
    torch.cuda.empty_cache()
    return {"bytes_moved": 2 * n, "median_s": t, "bytes_per_s": 2 * n / t}


def weight_bytes(config: dict[str, Any]) -> int:
    """bf16 bytes of a Llama checkpoint's weights (what one decode step reads at batch 1)."""
    d, ff, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    heads, kv = config["num_attention_heads"], config["num_key_value_heads"]
    hd = d // heads
    attn = d * heads * hd + 2 * d * kv * hd + heads * hd * d
    per_layer = attn + 3 * d * ff + 2 * d
    params = layers * per_layer + 2 * config["vocab_size"] * d + d
    return 2 * params


# -- the service ---------------------------------------------------------------------------

def engine_specs(root: Path, share: float, max_num_seqs: int, smoke: bool = False) -> list[dict[str, Any]]:
    from forecast.basemodels import BASES

    if smoke:  # the CPU rehearsal: the tiny model for both bases, CPU defaults
        return [{"base": b, "model": str(root / "models" / "tiny"), "max_model_len": 8192,
                 "max_num_seqs": max_num_seqs, "max_loras": 2, "max_lora_rank": 8}
                for b in BASES]
    return [
        {
            "base": base, "model": str(root / "models" / base), "load_format": "dummy",
            "dtype": "bfloat16", "gpu_memory_utilization": share, "max_model_len": 8192,
            "max_num_seqs": max_num_seqs, "max_loras": 2, "max_cpu_loras": 4, "max_lora_rank": 8,
        }
        for base in BASES
    ]


def http(method: str, path: str, body: Any = None, token: str | None = None,
         timeout: float = 600.0) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{PORT}{path}", data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
            ctype = r.headers.get("Content-Type", "")
            return r.status, json.loads(raw) if "json" in ctype else raw.decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def start_service(root: Path, specs: list[dict[str, Any]], out: Path,
                  extra_env: dict[str, str]) -> tuple[subprocess.Popen[bytes], float]:
    env = dict(os.environ, **extra_env)
    env.update({
        "FORECAST_SERVICE_ENGINES": json.dumps(specs),
        "FORECAST_SERVICE_ADAPTER_ROOT": str(root / "adapters"),
        "FORECAST_SERVICE_DB_URL": f"sqlite:///{root}/service/forecasts.sqlite3",
        "FORECAST_SERVICE_PRELOAD": json.dumps(["fingpt-llama@v1", "fingpt-deepseek@v1"]),
        "FORECAST_SERVICE_ROUTING": json.dumps({"fingpt-llama": 0.5, "fingpt-deepseek": 0.5}),
        "FORECAST_SERVICE_ADMIN_TOKEN": ADMIN,
        "FORECAST_SERVICE_PORT": str(PORT),
        # The engines hold 64 sequences each; the service admits both engines' worth.
        "FORECAST_SERVICE_MAX_INFLIGHT": "128",
        "FORECAST_SERVICE_MAX_BATCH": "64",
        # Random weights never write the FinGPT sections: the bin probe (a second, constrained
        # request per forecast) would double the work the peer does not do. Off for the run.
        "FORECAST_SERVICE_PROBE_UNPARSED": "false",
        "FORECAST_SERVICE_READY_TIMEOUT_S": "60",
    })  # fmt: skip
    (root / "service").mkdir(parents=True, exist_ok=True)
    logf = open(out / "service.log", "wb")  # noqa: SIM115 (the child writes it until stopped)
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "service"], cwd=REPO, env=env,
                            stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"service exited with {proc.returncode}; see service.log")
        try:
            status, _ = http("GET", "/readyz", timeout=5)
            if status == 200:
                return proc, time.perf_counter() - t0
        except OSError:
            pass
        time.sleep(1.0)


def stop_service(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def loadgen(out: Path, name: str, *args: str) -> dict[str, Any]:
    path = out / f"load_{name}.json"
    cmd = [sys.executable, "-m", "clients.loadgen", "--url", f"http://127.0.0.1:{PORT}",
           "--as-of", AS_OF, "--tickers", "dow30", "--samples", "--out", str(path), *args]
    env = dict(os.environ, DOW30_ADMIN_TOKEN=ADMIN)
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    log(f"loadgen {name}: rc={r.returncode} in {time.perf_counter() - t0:.1f}s")
    if not path.exists():
        raise RuntimeError(f"loadgen {name} wrote nothing: {r.stdout[-2000:]} {r.stderr[-2000:]}")
    return json.loads(path.read_text())


def dow30_batch_both(smoke: bool = False) -> dict[str, Any]:
    """The whole Dow 30 for both bases at once through the batch route (60 forecasts)."""
    extra = {"tickers": ["AAPL", "KO"]} if smoke else {}
    import concurrent.futures as cf

    def one(adapter: str) -> tuple[float, Any]:
        t0 = time.perf_counter()
        status, body = http("POST", "/v1/forecast/batch", {"as_of": AS_OF, "adapter": adapter, **extra})
        return time.perf_counter() - t0, (status, body)

    t0 = time.perf_counter()
    with cf.ThreadPoolExecutor(2) as pool:
        results = list(pool.map(one, ["fingpt-llama", "fingpt-deepseek"]))
    wall = time.perf_counter() - t0
    out: dict[str, Any] = {"wall_s": wall, "per_base": {}}
    total_tokens = 0
    for adapter, (secs, (status, body)) in zip(["fingpt-llama", "fingpt-deepseek"], results, strict=True):
        forecasts = body.get("forecasts", []) if isinstance(body, dict) else []
        tokens = [f["generated_tokens"] for f in forecasts]
        total_tokens += sum(tokens)
        out["per_base"][adapter] = {
            "status": status, "wall_s": secs, "forecasts": len(forecasts),
            "errors": body.get("errors") if isinstance(body, dict) else body,
            "tokens_min": min(tokens, default=None), "tokens_max": max(tokens, default=None),
            "tokens_sum": sum(tokens),
            "example": forecasts[0] if forecasts else None,
        }
    out["forecasts"] = sum(v["forecasts"] for v in out["per_base"].values())
    out["output_tokens_per_s"] = total_tokens / wall
    return out


def swap_probe(alias: str, name: str, version: str) -> dict[str, Any]:
    """Hot-swap ``alias`` to ``name@version`` through the admin route, then at once ask for one
    streamed forecast on that alias: how long after the admin call returned its first token
    came, and which version served it (an open-loop probe; the closed-loop load generator only
    sends a request when one of its own finishes)."""
    t0 = time.perf_counter()
    status, body = http("POST", "/v1/adapters", {"name": name, "version": version,
                                                  "promote": True, "alias": alias}, token=ADMIN)
    returned = time.perf_counter()
    req = urllib.request.Request(
        f"http://127.0.0.1:{PORT}/v1/forecast", method="POST",
        data=json.dumps({"ticker": "AAPL", "as_of": AS_OF, "adapter": alias, "stream": True}).encode(),
        headers={"Content-Type": "application/json"})
    first = None
    served = None
    with urllib.request.urlopen(req, timeout=300) as r:
        event = None
        for raw in r:
            line = raw.decode().strip()
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and event == "token" and first is None:
                first = time.perf_counter()
            elif line.startswith("data:") and event == "result":
                served = json.loads(line.split(":", 1)[1])["adapter"]
    done = time.perf_counter()
    return {
        "admin_status": status, "admin_call_s": returned - t0,
        "loaded": body.get("name") + "@" + body.get("version") if isinstance(body, dict) else body,
        "first_token_after_return_s": None if first is None else first - returned,
        "answer_after_return_s": done - returned, "served_by": served,
    }


# -- the peer: raw AsyncLLM ------------------------------------------------------------------

def smoke_setup(root: Path) -> None:
    """CPU rehearsal: the tiny model and untrained adapters v1/v2 per base."""
    import shutil

    from forecast.basemodels import BASES, TINY_MODEL_ID, materialize_tiny_model
    from service.demo_adapters import write_peft_adapter

    model = materialize_tiny_model(root / "models" / "tiny")
    for i, base in enumerate(BASES):
        for v in ("v1", "v2"):
            write_peft_adapter(model, root / "adapters", f"fingpt-{base}", v, base,
                               base_model=TINY_MODEL_ID, seed=i)
    shutil.copytree(model, root / "models" / "llama", dirs_exist_ok=True)


def prompt_ids(model_dir: Path, tickers: list[str]) -> dict[str, list[int]]:
    """The service's prompts for these tickers, rendered and tokenized as the service does."""
    import datetime as dt

    from transformers import AutoTokenizer

    from forecast.basemodels import BASES
    from forecast.settings import DataSettings, market_data_from_settings
    from forecast.templates import render_chat
    from forecast.universe import require_member
    from forecast.windows import WindowConfig, build_prompt

    market = market_data_from_settings(DataSettings())
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    day = dt.date.fromisoformat(AS_OF)
    window = WindowConfig(weeks=4, news_per_week=5, with_financials=True)
    fmt = BASES["llama"].chat_format
    ids = {}
    for t in sorted(set(tickers)):
        built = build_prompt(market, require_member(t, day), day, window)
        ids[t] = tok(render_chat(built.prompt, fmt), add_special_tokens=False)["input_ids"]
    return ids


async def raw_phases(spec: dict[str, Any], lora_path: Path, phases: dict[str, dict[str, Any]],
                     ids: dict[str, list[int]], gpu: bool,
                     warmup: list[tuple[str, int]]) -> dict[str, Any]:
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.lora.request import LoRARequest
    from vllm.sampling_params import RequestOutputKind, SamplingParams
    from vllm.v1.engine.async_llm import AsyncLLM

    from forecast.templates import SPECS
    from service.engine_args import engine_kwargs
    from service.settings import EngineSettings

    settings = EngineSettings(**spec)
    kwargs = engine_kwargs(settings, gpu=gpu)
    t0 = time.perf_counter()
    llm = AsyncLLM.from_engine_args(AsyncEngineArgs(**kwargs))
    start_s = time.perf_counter() - t0
    log(f"raw AsyncLLM up in {start_s:.1f}s")
    lora = LoRARequest("fingpt-llama@v1", 1, str(lora_path))
    stop = [SPECS[settings.format].eos]
    n = 0

    async def one(ticker: str, tokens: int) -> dict[str, Any]:
        nonlocal n
        n += 1
        sp = SamplingParams(max_tokens=tokens, min_tokens=tokens, ignore_eos=True, temperature=0.0,
                            stop=stop, output_kind=RequestOutputKind.DELTA)
        t = time.perf_counter()
        first = None
        out_tokens = 0
        async for o in llm.generate({"prompt_token_ids": ids[ticker]}, sp, f"raw-{n}", lora_request=lora):
            if first is None and o.outputs[0].token_ids:
                first = time.perf_counter()
            out_tokens += len(o.outputs[0].token_ids)
        end = time.perf_counter()
        return {"ticker": ticker, "latency_s": end - t, "ttft_s": (first or end) - t, "tokens": out_tokens}

    async def closed_loop(requests: list[tuple[str, int]], concurrency: int) -> dict[str, Any]:
        queue = list(reversed(requests))
        results: list[dict[str, Any]] = []

        async def worker() -> None:
            while queue:
                ticker, tokens = queue.pop()
                results.append(await one(ticker, tokens))

        t = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return summarize_raw(results, time.perf_counter() - t)

    out: dict[str, Any] = {"engine_start_s": start_s, "engine_kwargs": _jsonable(kwargs)}
    try:
        # the service's warm-up, as its Llama engine saw it: same kernels, same prefix cache
        out["warmup"] = await closed_loop(warmup, 16)
        for name, phase in phases.items():
            out[name] = await closed_loop(phase["requests"], phase["concurrency"])
            log(f"raw {name}: {out[name]['output_tokens_per_s']:.1f} tok/s")
    finally:
        llm.shutdown()
    return out


def summarize_raw(results: list[dict[str, Any]], wall: float) -> dict[str, Any]:
    lat = sorted(r["latency_s"] for r in results)
    ttft = sorted(r["ttft_s"] for r in results)
    tokens = sum(r["tokens"] for r in results)
    decode = sorted((r["tokens"] - 1) / (r["latency_s"] - r["ttft_s"])
                    for r in results if r["tokens"] > 1 and r["latency_s"] > r["ttft_s"])
    return {
        "requests": len(results), "wall_s": wall, "output_tokens": tokens,
        "output_tokens_per_s": tokens / wall, "samples_per_s": len(results) / wall,
        "latency_p50_s": _median(lat), "ttft_p50_s": _median(ttft),
        "decode_tokens_per_s_p50": _median(decode),
    }


def _median(xs: list[float]) -> float | None:
    return xs[len(xs) // 2] if xs else None


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v if isinstance(v, (str, int, float, bool, type(None), list, dict)) else str(v)
            for k, v in d.items()}


def service_phase_stats(summary: dict[str, Any]) -> dict[str, Any]:
    samples = [s for s in summary.get("samples", []) if s["ok"]]
    decode = sorted((s["tokens"] - 1) / (s["latency_s"] - s["ttft_s"]) for s in samples
                    if s.get("tokens") and s["tokens"] > 1 and s.get("ttft_s") is not None
                    and s["latency_s"] > s["ttft_s"])
    tokens = sum(s.get("tokens") or 0 for s in samples)
    return {
        "requests": summary["totals"]["requests"], "ok": summary["totals"]["ok"],
        "errors": summary["totals"]["errors"], "wall_s": summary["elapsed_s"],
        "output_tokens": tokens, "output_tokens_per_s": tokens / summary["elapsed_s"],
        "samples_per_s": summary["totals"]["samples_per_s"],
        "latency_p50_s": summary["totals"]["latency_s"]["p50"],
        "ttft_p50_s": summary["totals"]["ttft_s"]["p50"],
        "decode_tokens_per_s_p50": _median(decode),
    }


def requests_of(summary: dict[str, Any], with_adapter: bool = False) -> list[Any]:
    """The (ticker, output tokens) the service answered, in start order: the peer's workload."""
    ok = sorted((s for s in summary["samples"] if s["ok"]), key=lambda s: s["start_s"])
    if with_adapter:
        return [(s["ticker"], int(s["tokens"]), s["adapter"] or "") for s in ok]
    return [(s["ticker"], int(s["tokens"])) for s in ok]


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for name in ("torch", "vllm", "transformers", "peft", "deepspeed", "fastapi", "uvicorn"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "absent"
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", type=Path, default=Path("/tmp/product"))
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--share", type=float, default=0.42, help="each engine's GPU memory share")
    p.add_argument("--max-num-seqs", type=int, default=64)
    p.add_argument("--phases", default="service,raw")
    p.add_argument("--smoke", action="store_true", help="CPU rehearsal: tiny model, few requests")
    args = p.parse_args()
    out_dir = args.root / "work"  # logs and load JSONs; the device script bundles them
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.smoke:
        smoke_setup(args.root)
    else:
        import torch

    earlier = out_dir / "serve.json"
    result: dict[str, Any] = json.loads(earlier.read_text()) if "service" not in args.phases and earlier.exists() else {}
    result |= {
        "card": "cpu (smoke)" if args.smoke else torch.cuda.get_device_name(0), "versions": versions(),
        "date": time.strftime("%Y-%m-%d"), "as_of": AS_OF,
        "command": " ".join(sys.argv),
    }
    model_cfg = json.loads((args.root / "models" / "llama" / "config.json").read_text())
    bw = {"bytes_per_s": 1.0} if args.smoke else copy_bandwidth()
    wb = weight_bytes(model_cfg)
    result["ceilings"] = {"copy": bw, "weight_bytes": wb,
                          "batch1_floor_tokens_per_s": bw["bytes_per_s"] / wb}
    log(f"copy {bw['bytes_per_s'] / 1e12:.2f} TB/s; weights {wb / 1e9:.2f} GB; "
        f"floor {bw['bytes_per_s'] / wb:.1f} tok/s")
    specs = engine_specs(args.root, args.share, args.max_num_seqs, args.smoke)
    counts = ((1, 2), (2, 4), (4, 8)) if args.smoke else ((1, 5), (16, 48), (64, 192))
    conc = [c for c, _ in counts]
    extra_env = {"FORECAST_SERVICE_MAX_NEW_TOKENS": "8"} if args.smoke else {}
    result["engines"] = specs
    phases = args.phases.split(",")

    def save() -> None:
        text = json.dumps(result, indent=2, default=str)
        args.out.write_text(text)
        earlier.write_text(text)

    if "service" in phases:
        proc, ready_s = start_service(args.root, specs, out_dir, extra_env)
        result["service_ready_s"] = ready_s
        log(f"service ready in {ready_s:.1f}s")
        try:
            svc: dict[str, Any] = {}
            status, body = http("GET", "/readyz")
            svc["readyz"] = {"status": status, "body": body}
            warm = loadgen(out_dir, "warmup", "--concurrency", str(conc[1]),
                           "--requests", str(2 * conc[1]), "--duration", "600")
            # The peer replays the warm-up requests the Llama engine served, so both engines
            # enter the measured phases with the same prefix cache.
            svc["_warmup_llama"] = [(t, n) for t, n, a in requests_of(warm, with_adapter=True)
                                    if a.startswith("fingpt-llama@")]
            for c, n in counts:
                summary = loadgen(out_dir, f"c{c}", "--concurrency", str(c), "--requests", str(n),
                                  "--duration", "600", "--adapter", "fingpt-llama")
                svc[f"c{c}"] = service_phase_stats(summary)
                svc[f"c{c}"]["_requests"] = requests_of(summary)
                log(f"service c{c}: {svc[f'c{c}']['output_tokens_per_s']:.1f} tok/s")
                save()
            svc["dow30_both_bases"] = dow30_batch_both(smoke=args.smoke)
            log(f"dow30 x2: {svc['dow30_both_bases']['wall_s']:.2f}s")
            d, sw, rw = (12, 3, 6) if args.smoke else (30, 10, 18)
            # Under 64-concurrent A/B load: the load generator swaps the Llama alias to v2 and
            # re-weights; this process swaps the DeepSeek alias to v2 and probes it at once.
            import threading

            probe: dict[str, Any] = {}

            def probe_later() -> None:
                time.sleep(sw + 4)
                try:
                    probe.update(swap_probe("fingpt-deepseek", "fingpt-deepseek", "v2"))
                except Exception as exc:  # recorded, never fatal to the run
                    probe["error"] = repr(exc)

            prober = threading.Thread(target=probe_later)
            prober.start()
            swap = loadgen(out_dir, "swap", "--concurrency", str(conc[-1]), "--duration", str(d),
                           "--stream", "--swap-at", f"{sw}:fingpt-llama@v2",
                           "--reweight-at", f"{rw}:fingpt-llama=0.8,fingpt-deepseek=0.2")
            prober.join()
            svc["swap_probe"] = probe
            log(f"swap probe: {probe}")
            svc["swap"] = {k: swap[k] for k in ("totals", "per_adapter", "events", "swap_effects",
                                                 "stickiness", "timeline")}
            status, metrics = http("GET", "/metrics")
            (out_dir / "metrics.txt").write_text(metrics if isinstance(metrics, str) else str(metrics))
            svc["metrics_excerpt"] = [line for line in str(metrics).splitlines()
                                      if line.startswith(("forecast_routing_weight", "forecast_alias",
                                                          "forecast_swaps_total",
                                                          "forecast_engine_start"))]
            status, body = http("GET", "/readyz")
            svc["readyz_after"] = {"status": status, "body": body}
            result["service"] = svc
            save()
        finally:
            stop_service(proc)

    if "raw" in phases and "service" in result:
        svc = result["service"]
        warmup = [(t, n) for t, n in svc.get("_warmup_llama", [])]
        tickers = sorted({t for c in conc for t, _ in svc[f"c{c}"]["_requests"]} | {t for t, _ in warmup})
        ids = prompt_ids(args.root / "models" / "llama", tickers)
        result["prompt_tokens"] = {t: len(v) for t, v in ids.items()}
        phase_reqs = {f"c{c}": {"concurrency": c, "requests": svc[f"c{c}"]["_requests"]}
                      for c in conc}
        lora = sorted((args.root / "adapters" / "fingpt-llama" / "v1").glob("**/adapter_config.json"))
        result["raw"] = asyncio.run(raw_phases(specs[0], lora[0].parent, phase_reqs, ids, not args.smoke,
                                              warmup))
        ratios = {}
        for c in conc:
            s, r = svc[f"c{c}"], result["raw"][f"c{c}"]
            ratios[f"c{c}_tokens_per_s"] = s["output_tokens_per_s"] / r["output_tokens_per_s"]
            ratios[f"c{c}_latency_p50"] = s["latency_p50_s"] / r["latency_p50_s"]
        floor = result["ceilings"]["batch1_floor_tokens_per_s"]
        svc["c1"] = svc.get("c1") or svc[f"c{conc[0]}"]
        result["raw"]["c1"] = result["raw"].get("c1") or result["raw"][f"c{conc[0]}"]
        ratios["batch1_decode_vs_floor_service"] = (svc["c1"]["decode_tokens_per_s_p50"] or 0) / floor
        ratios["batch1_decode_vs_floor_raw"] = (result["raw"]["c1"]["decode_tokens_per_s_p50"] or 0) / floor
        result["ratios"] = ratios
        log("ratios", json.dumps(ratios, indent=1))
    save()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
