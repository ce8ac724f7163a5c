"""What one decode step's token masks cost under the answer expression, on the CPU that fills
them (the engine-core process, also on a GPU machine): xgrammar with Llama 3's real tokenizer
(128,256 tokens), the expression the service sends for a 1,024-token budget.

    python benchmarks/answer_mask.py [--n 16] [--threads 8] [--out PATH]

1. One matcher walked along an answer (a random allowed token each step, as a random-weight
   model writes), the mask fill timed each step: the product's expression (counted repeats
   bound every item and the analysis) and the same expression with uncounted repeats.
2. ``--n`` matchers at different points of their answers, all filled as one step's batch:
   one after another (vLLM below 128 requests), spread over ``--threads`` Python threads in
   batches of two (``service.mask_fill``), and by xgrammar's own ``BatchGrammarMatcher``.

Writes benchmarks/results/answer_mask.json (``--out`` for another path).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine, write_result
from benchmarks.structured_output import uncounted
from forecast.answer_format import LIMITS, answer_regex
from forecast.basemodels import materialize_8b_shape
from forecast.templates import ChatFormat
from service.mask_fill import BATCH


def allowed(bitmask: Any, row: int, vocab: int) -> list[int]:
    import numpy as np

    bits = np.unpackbits(bitmask[row].numpy().view(np.uint8), bitorder="little")[:vocab]
    return [int(t) for t in bits.nonzero()[0]]


def walk(xgr: Any, compiled: Any, vocab: int, steps: int, seed: int) -> dict[str, Any]:
    """Fill, pick a random allowed token, accept; the fill times of each step."""
    rnd = random.Random(seed)
    matcher = xgr.GrammarMatcher(compiled)
    bitmask = xgr.allocate_token_bitmask(1, vocab)
    times = []
    while not matcher.is_terminated() and len(times) < steps:
        t = time.perf_counter()
        matcher.fill_next_token_bitmask(bitmask, 0)
        times.append(time.perf_counter() - t)
        options = allowed(bitmask, 0, vocab)
        if not options or not matcher.accept_token(rnd.choice(options)):
            break
    times.sort()
    return {"steps": len(times), "fill_ms_mean": round(1e3 * statistics.fmean(times), 3),
            "fill_ms_p50": round(1e3 * times[len(times) // 2], 3),
            "fill_ms_p90": round(1e3 * times[int(len(times) * 0.9)], 3)}


def batch_fill(xgr: Any, compiled: Any, vocab: int, n: int, threads: int, repeats: int = 30) -> dict[str, Any]:
    """``n`` matchers advanced 5-60 random steps each; one step's fill, serial vs threaded."""
    rnd = random.Random(1)
    matchers = [xgr.GrammarMatcher(compiled) for _ in range(n)]
    bitmask = xgr.allocate_token_bitmask(n, vocab)
    for i, m in enumerate(matchers):
        for _ in range(rnd.randrange(5, 60)):
            m.fill_next_token_bitmask(bitmask, i)
            options = allowed(bitmask, i, vocab)
            if not options or m.is_terminated() or not m.accept_token(rnd.choice(options)):
                break

    def fill(lo: int, hi: int) -> None:
        for i in range(lo, hi):
            matchers[i].fill_next_token_bitmask(bitmask, i)

    pool = ThreadPoolExecutor(max_workers=threads)

    def threaded() -> None:
        list(pool.map(lambda lo: fill(lo, min(n, lo + BATCH)), range(0, n, BATCH)))

    batcher = xgr.BatchGrammarMatcher(threads)

    def batched() -> None:  # xgrammar's own C++ pool
        batcher.batch_fill_next_token_bitmask(matchers, bitmask)

    out = {}
    for name, run in (("serial", lambda: fill(0, n)), (f"threads{threads}", threaded),
                      (f"xgrammar_batch{threads}", batched)) * 2:
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            run()
            times.append(time.perf_counter() - t)
        out[name] = round(1e3 * statistics.median(times), 3)  # the later (warm) pass wins
    pool.shutdown()
    return {"requests": n, "threads": threads, "step_fill_ms": out,
            "threaded_speedup": round(out["serial"] / out[f"threads{threads}"], 2),
            "xgrammar_batch_speedup": round(out["serial"] / out[f"xgrammar_batch{threads}"], 2)}


def main() -> None:
    import xgrammar as xgr
    from transformers import AutoTokenizer

    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--budget", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--work", type=Path, default=Path("var/bench/answer_mask"))
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    shape = materialize_8b_shape(args.work / "llama", "llama")
    tokenizer = AutoTokenizer.from_pretrained(str(shape))
    info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=128256)
    compiler = xgr.GrammarCompiler(info, max_threads=max(1, args.threads))
    limits = LIMITS.fitting(args.budget, ChatFormat.LLAMA3)
    expressions = {"counted": answer_regex(ChatFormat.LLAMA3, limits)}
    expressions["uncounted"] = uncounted(expressions["counted"])
    result: dict[str, Any] = {"limits": vars(limits), "xgrammar": _version("xgrammar")}
    for name, regex in expressions.items():
        t = time.perf_counter()
        compiled = compiler.compile_regex(regex)
        compile_s = time.perf_counter() - t
        result[name] = {"compile_s": round(compile_s, 2), "walk": walk(xgr, compiled, info.vocab_size, args.steps, 0),
                        "batch": batch_fill(xgr, compiled, info.vocab_size, args.n, args.threads)}
        print(name, json.dumps(result[name]), flush=True)
    payload = {"benchmark": "answer_mask", "machine": machine(),
               "command": "python benchmarks/answer_mask.py " + " ".join(sys.argv[1:]), "result": result}
    if args.out:
        args.out.write_text(json.dumps(payload, indent=2) + "\n")
    else:
        write_result("answer_mask", payload)


def _version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)


if __name__ == "__main__":
    main()
