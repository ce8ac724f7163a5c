"""The promoted version folded into the weights vs plain LoRA vs base, on the product's engine.

    python benchmarks/fold_overhead.py [--concurrency 16 64] [--rounds 2] [--max-tokens 32] [--max-prompt 128]

One product engine (``service.engine.VLLMEngine``, the tiny model on CPU) and the product's
adapter registry with folding on (``service.adapters``, ``service.fold``). Versions: ``v1`` is
promoted, ``v2`` is another loaded version, ``v3`` is promoted under load at the end. Modes, each
a closed batch of N requests (N = the concurrency) on the same prompts, greedy, fixed output
length (``ignore_eos``), prefix cache cleared before each batch:

- ``base``: no LoRA, weights pristine (v1 not folded);
- ``lora``: v1 through its plain LoRA, weights pristine (folding off);
- ``folded``: v1 folded into the weights, requests with no LoRA (the promoted path);
- ``difference``: v2 through its difference LoRA against folded v1 (a non-promoted version).

Rounds alternate the order of the two weight states. Ratios are medians over rounds of output
tokens/s, each pair measured in the same round. Then a promote of v3 under N-concurrent load
(the largest N): its wall time (until the alias serves v3, exactly, through its difference
LoRA), the time until the weights hold v3 (the fold task's prepare / differences / drain / fold
phases), the longest a request waited at the fold gate, failed requests, and the weights after
demote compared bit for bit with the pristine ones.

Writes benchmarks/results/fold_cpu.json (``benchmarks/gpu/fold_throughput.py`` runs the same
code on the 8B shape on a GPU).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.adapters import AdapterRegistry
from service.demo_adapters import manifest_for
from service.engine import LoraRef, VLLMEngine
from service.fold import LoraFactors, write_lora
from service.manifest import LoraShape
from service.settings import EngineSettings
from service.telemetry import Telemetry

NAME = "fingpt-llama"
ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]
ALL_LINEAR = [*ATTENTION, "gate_proj", "up_proj", "down_proj"]
MODES = ("base", "lora", "folded", "difference")


def module_shapes(config: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """(out, in) of each Llama linear module from a ``config.json``."""
    hidden, heads = config["hidden_size"], config["num_attention_heads"]
    head_dim = config.get("head_dim") or hidden // heads
    kv = config.get("num_key_value_heads", heads) * head_dim
    inter = config["intermediate_size"]
    return {"q_proj": (heads * head_dim, hidden), "k_proj": (kv, hidden), "v_proj": (kv, hidden),
            "o_proj": (hidden, heads * head_dim), "gate_proj": (inter, hidden), "up_proj": (inter, hidden),
            "down_proj": (hidden, inter)}


def write_random_adapter(root: Path, version: str, model_dir: Path, model_id: str, targets: list[str],
                         seed: int, rank: int = 8, std: float = 0.02) -> Path:
    """A random rank-``rank`` LoRA (alpha 2r) on ``targets`` of every layer, with its manifest."""
    import torch

    from forecast.manifest import write_manifest

    path = root / NAME / version
    if (path / "adapter.json").is_file():
        return path
    config = json.loads((model_dir / "config.json").read_text())
    shapes = module_shapes(config)
    g = torch.Generator().manual_seed(seed)
    modules = {}
    for layer in range(config["num_hidden_layers"]):
        for t in targets:
            part = "self_attn" if t in ATTENTION else "mlp"
            out, inp = shapes[t]
            modules[f"model.layers.{layer}.{part}.{t}"] = (
                torch.randn(rank, inp, generator=g) * std, torch.randn(out, rank, generator=g) * std
            )
    write_lora(LoraFactors(modules, 2.0, rank, model_id), path)
    shape = LoraShape(r=rank, alpha=2 * rank, dropout=0.0, target_modules=targets)
    write_manifest(path, manifest_for(NAME, version, "llama", base_model=model_id, lora=shape,
                                      note="random benchmark adapter"))
    return path


def random_prompts(n: int, length: int, vocab: int, seed: int = 0) -> list[list[int]]:
    r = random.Random(seed)
    return [[r.randrange(1000, vocab) for _ in range(length)] for _ in range(n)]


class Bench:
    """The engine, the registry and the request helper of one run."""

    def __init__(self, engine: VLLMEngine, registry: AdapterRegistry, max_tokens: int) -> None:
        self.engine, self.registry, self.max_tokens = engine, registry, max_tokens
        self._ids = 0

    async def one(self, ids: list[int], lora: LoraRef | None) -> int:
        from vllm.lora.request import LoRARequest
        from vllm.sampling_params import RequestOutputKind, SamplingParams

        params = SamplingParams(max_tokens=self.max_tokens, temperature=0.0, ignore_eos=True,
                                detokenize=False, output_kind=RequestOutputKind.FINAL_ONLY)
        request = LoRARequest(lora.name, lora.lora_id, str(lora.path)) if lora is not None else None
        self._ids += 1
        tokens = 0
        llm = self.engine._llm  # the product engine's AsyncLLM: token-id prompts, fixed lengths
        async for out in llm.generate({"prompt_token_ids": ids}, params, f"fold-bench-{self._ids}",
                                      lora_request=request):
            tokens = len(out.outputs[0].token_ids)
        return tokens

    async def batch(self, prompts: list[list[int]], lora: LoraRef | None) -> dict[str, float]:
        await self.engine._llm.reset_prefix_cache()
        started = time.perf_counter()
        counts = await asyncio.gather(*(self.one(p, lora) for p in prompts))
        wall = time.perf_counter() - started
        return {"wall_s": wall, "output_tokens": sum(counts), "output_tok_per_s": sum(counts) / wall}

    def lora_of(self, mode: str) -> LoraRef | None:
        v1, v2 = self.registry.resolve(f"{NAME}@v1"), self.registry.resolve(f"{NAME}@v2")
        return {"base": None, "lora": v1.engine_lora, "folded": v1.engine_lora, "difference": v2.engine_lora}[mode]

    async def set_state(self, folded: bool) -> float:
        started = time.perf_counter()
        if folded:
            await self.registry.promote(NAME, f"{NAME}@v1")
            await self.registry.settled()
        else:
            await self.registry.unfold("llama")
        v1 = self.registry.resolve(f"{NAME}@v1")
        assert (v1.engine_lora is None) == folded, "fold state not as asked"
        return time.perf_counter() - started


async def measure_modes(bench: Bench, prompts: dict[int, list[list[int]]], rounds: int,
                  log: Callable[[str], None]) -> dict[str, Any]:
    """Every mode at every concurrency, ``rounds`` times, weight states alternating."""
    runs: dict[str, dict[int, list[dict[str, float]]]] = {m: {c: [] for c in prompts} for m in MODES}
    switches = []
    for mode in MODES:  # warm-up: every mode's kernels and LoRA slots once, short
        await bench.set_state(mode in ("folded", "difference"))
        await bench.batch(prompts[min(prompts)][:4], bench.lora_of(mode))
    for r in range(rounds):
        states = [(False, ("base", "lora")), (True, ("folded", "difference"))]
        for folded, modes in states if r % 2 == 0 else states[::-1]:
            switches.append({"folded": folded, "seconds": await bench.set_state(folded)})
            for mode in modes if r % 2 == 0 else modes[::-1]:
                for c, ps in prompts.items():
                    res = await bench.batch(ps, bench.lora_of(mode))
                    runs[mode][c].append(res)
                    log(f"round {r} {mode:<10} c={c:<3} {res['output_tok_per_s']:8.1f} tok/s ({res['wall_s']:.1f} s)")

    def ratio(a: str, b: str, c: int) -> float:
        return statistics.median(x["output_tok_per_s"] / y["output_tok_per_s"]
                                 for x, y in zip(runs[a][c], runs[b][c], strict=True))

    summary = {}
    for c in prompts:
        summary[f"concurrency{c}"] = {
            "output_tok_per_s_median": {m: statistics.median(x["output_tok_per_s"] for x in runs[m][c]) for m in MODES},
            "folded_over_base": ratio("folded", "base", c),
            "lora_over_base": ratio("lora", "base", c),
            "folded_over_lora": ratio("folded", "lora", c),
            "difference_over_lora": ratio("difference", "lora", c),
        }
    return {"runs": {m: {str(c): v for c, v in by_c.items()} for m, by_c in runs.items()},
            "state_switch_s": switches, "summary": summary}


async def promote_under_load(bench: Bench, prompts: list[list[int]], version: str, warm_s: float,
                             after_s: float, log: Callable[[str], None]) -> dict[str, Any]:
    """N closed-loop clients on the alias; ``version`` loaded and promoted after ``warm_s``."""
    registry = bench.registry
    stop = asyncio.Event()
    done: list[dict[str, Any]] = []
    failures: list[str] = []
    t0 = time.perf_counter()

    async def client(i: int) -> None:
        k = 0
        while not stop.is_set():
            asked = time.perf_counter()
            try:
                async with registry.acquire(NAME) as adapter:
                    got = time.perf_counter()
                    tokens = await bench.one(prompts[(i + k) % len(prompts)], adapter.engine_lora)
                done.append({"version": adapter.version, "start_s": asked - t0, "gate_wait_s": got - asked,
                             "end_s": time.perf_counter() - t0, "tokens": tokens})
            except Exception as exc:  # counted, never raised: the benchmark reports failures
                failures.append(f"{type(exc).__name__}: {exc}"[:300])
            k += 1

    clients = [asyncio.create_task(client(i)) for i in range(len(prompts))]
    await asyncio.sleep(warm_s)
    asked = time.perf_counter()
    promote_error = None
    try:
        await registry.load(NAME, version)
    except Exception as exc:
        promote_error = f"{type(exc).__name__}: {exc}"[:500]
    promote_s = time.perf_counter() - asked
    await registry.settled()  # the fold task: prepare, differences, drain, fold
    folded_s = time.perf_counter() - asked
    fold = registry.fold_of("llama")
    log(f"promote of {NAME}@{version} under {len(prompts)}-concurrent load: {promote_s:.2f} s "
        f"({promote_error}); folded after {folded_s:.2f} s: {fold.phases}")
    await asyncio.sleep(after_s)
    stop.set()
    await asyncio.gather(*clients)
    await registry.wait_unloaded()
    started = asked - t0
    folded = registry.folded("llama")
    return {
        "concurrency": len(prompts), "promote_wall_s": promote_s, "promote_error": promote_error,
        "folded_after_s": folded_s, "fold_phases_s": dict(fold.phases),
        "fold_error": repr(fold.error) if fold.error is not None else None,
        "promote_started_s": started, "failed_requests": len(failures), "failures": failures[:5],
        "completed_requests": len(done),
        "max_gate_wait_s": max((d["gate_wait_s"] for d in done), default=0.0),
        "requests_served_by": {v: sum(d["version"] == v for d in done) for v in sorted({d["version"] for d in done})},
        "first_new_version_end_s_after_promote": min(
            (d["end_s"] - started for d in done if d["version"] == version), default=None),
        "folded_after": folded.ref if folded is not None else None,
    }


async def run(settings: EngineSettings, prompts: dict[int, list[list[int]]], *, model_dir: Path, work: Path,
              targets: list[str], rounds: int, max_tokens: int, load_warm_s: float, load_after_s: float,
              checksum: bool, log: Callable[[str], None], dump: Callable[[dict[str, Any]], None],
              adapter_std: float = 0.02, measure: bool = True) -> dict[str, Any]:
    """The whole benchmark; ``dump`` gets the partial result after each phase."""
    import shutil

    result: dict[str, Any] = {"max_tokens": max_tokens, "rounds": rounds, "targets": targets,
                              "prompt_tokens_mean": statistics.mean(len(p) for ps in prompts.values() for p in ps)}
    started = time.perf_counter()
    engine = VLLMEngine.start(settings)
    result["engine_start_s"] = time.perf_counter() - started
    log(f"engine up in {result['engine_start_s']:.0f} s")
    try:
        root = work / "adapters"
        shutil.rmtree(work / "folded", ignore_errors=True)
        for version, seed in (("v1", 1), ("v2", 2), ("v3", 3)):
            write_random_adapter(root, version, model_dir, engine.info.model_id, targets, seed, std=adapter_std)
        registry = AdapterRegistry(root, {"llama": engine}, Telemetry(), fold_dir=work / "folded")
        bench = Bench(engine, registry, max_tokens)
        pristine = await engine.weights_checksum() if checksum else None
        t = time.perf_counter()
        await registry.load(NAME, "v1")
        await registry.settled()
        result["first_fold_s"] = time.perf_counter() - t  # load + host copies + fold, nothing running
        await registry.load(NAME, "v2", promote=False)
        if measure:
            result["measure"] = await measure_modes(bench, prompts, rounds, log)
            dump(result)
        await registry.promote(NAME, f"{NAME}@v1")
        await registry.settled()
        result["promote_under_load"] = await promote_under_load(
            bench, prompts[max(prompts)], "v3", load_warm_s, load_after_s, log)
        dump(result)
        if checksum:
            await registry.unfold("llama")
            result["weights_restored_bit_exact"] = await engine.weights_checksum() == pristine
            log(f"weights after demote equal the pristine ones: {result['weights_restored_bit_exact']}")
        result["elapsed_s"] = time.perf_counter() - started
        dump(result)
        return result
    finally:
        await engine.aclose()


def fingpt_prompts(concurrency: list[int], max_prompt: int) -> dict[int, list[list[int]]]:
    """Real FinGPT prompts (1 week x 2 news), tokenized by the tiny model's tokenizer, for CPU."""
    import datetime as dt

    from transformers import AutoTokenizer

    from benchmarks.common import TICKERS, tiny_model
    from forecast.providers.snapshot import SnapshotMarketData
    from forecast.templates import ChatFormat, render_chat
    from forecast.windows import WindowConfig, build_prompt

    tok = AutoTokenizer.from_pretrained(str(tiny_model()))
    market, window = SnapshotMarketData(), WindowConfig(weeks=1, news_per_week=2, with_financials=False)
    days = [dt.date(2023, 12, 10) - dt.timedelta(weeks=w) for w in range(8)]
    texts = [render_chat(build_prompt(market, t, d, window).prompt, ChatFormat.LLAMA3) for d in days for t in TICKERS]
    ids = [tok(t, add_special_tokens=False).input_ids[:max_prompt] for t in texts]
    return {c: ids[:c] for c in concurrency}


def main() -> None:
    from benchmarks.common import machine, tiny_model, write_result

    ap = argparse.ArgumentParser()
    ap.add_argument("--concurrency", type=int, nargs="+", default=[16, 64])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--max-prompt", type=int, default=128)
    ap.add_argument("--all-linear", action="store_true", help="adapters on all 7 linear modules (default q/k/v/o)")
    ap.add_argument("--out", type=Path, help="default: benchmarks/results/fold_cpu.json")
    args = ap.parse_args()
    model = tiny_model()
    settings = EngineSettings(base="llama", model=str(model), max_model_len=4096, max_num_seqs=max(args.concurrency),
                              max_loras=4, max_lora_rank=16, kv_cache_gib=3)
    prompts = fingpt_prompts(args.concurrency, args.max_prompt)
    payload: dict[str, Any] = {
        "benchmark": "fold_overhead", "command": "python benchmarks/fold_overhead.py " + " ".join(sys.argv[1:]),
        "machine": machine(), "model": "SmolLM2-135M-Instruct (stand-in for the 8B bases)",
        "goals": {"folded_over_base_min": 0.95, "difference_over_lora_min": 1.0},
    }

    def dump(result: dict[str, Any]) -> None:
        payload["result"] = result
        if args.out:
            args.out.write_text(json.dumps(payload, indent=2) + "\n")
        else:
            write_result("fold_cpu", payload)

    asyncio.run(run(settings, prompts, model_dir=model, work=Path("var/bench/fold"),
                    targets=ALL_LINEAR if args.all_linear else ATTENTION, rounds=args.rounds,
                    max_tokens=args.max_tokens, load_warm_s=20.0, load_after_s=20.0, checksum=True,
                    log=lambda s: print(s, flush=True), dump=dump))
    print(json.dumps(payload["result"].get("measure", {}).get("summary"), indent=2))
    print(json.dumps({k: v for k, v in payload["result"]["promote_under_load"].items() if k != "failures"}, indent=2))


if __name__ == "__main__":
    main()
