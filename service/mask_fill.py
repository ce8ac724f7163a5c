"""Structured-output masks filled by several threads at every batch size.

Decoding under the answer expression (:mod:`forecast.answer_format`) costs a token mask per
request per step. The expression bounds every item and the analysis by a counted repeat, and a
counted repeat makes nearly every token's validity depend on the count so far: with Llama 3's
128,256-token vocabulary xgrammar 0.2 fills one such mask in ~2.3 ms on one core, against
~0.1 ms for the same expression with uncounted repeats (``benchmarks/answer_mask.py``). vLLM
computes the step's masks while the GPU runs the forward pass, but fills them one request after
another below 128 requests (``StructuredOutputManager.fill_bitmask_parallel_threshold``): at 16
in flight that is ~30 ms a step against a ~8 ms forward on the H200, and decoding runs at the
mask's pace. Filled by several threads, the masks take a fraction of that.

vLLM's extension point is the scheduler class (``scheduler_cls``, resolved in the engine-core
process): :func:`scheduler` builds vLLM's own scheduler (the async one when async scheduling is
on) and sets its structured-output manager to fill in parallel from ``MIN_PARALLEL`` requests
on, on ``forecast_mask_fill_threads`` threads (read from the engine's ``additional_config``).
Nothing else of the scheduler changes.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

log = logging.getLogger(__name__)

CONFIG_KEY = "forecast_mask_fill_threads"
QUALNAME = "service.mask_fill.scheduler"
MIN_PARALLEL = 4  # below this many structured requests a step, one thread fills them
BATCH = 2  # requests per task: small, so that 16 requests spread over 8 threads


def auto_threads(cpus: int | None = None) -> int:
    """vLLM's own pool size for large batches: half the cores, at most 8."""
    return max(1, min((cpus or os.cpu_count() or 1) // 2, 8))


def resolve_threads(setting: int | None, cpus: int | None = None) -> int:
    """The thread count a setting asks for (None: :func:`auto_threads`); 1 or less: off."""
    return auto_threads(cpus) if setting is None else max(setting, 0)


def tune(manager: Any, threads: int) -> bool:
    """Make ``manager`` (vLLM's ``StructuredOutputManager``) fill a step's masks on ``threads``
    threads from ``MIN_PARALLEL`` requests on: xgrammar's masks all at once by its own C++
    ``BatchGrammarMatcher``, any other backend's by a pool of Python threads in batches of
    ``BATCH``. False (nothing changed) when this vLLM lacks the knobs."""
    if threads < 2 or not hasattr(manager, "fill_bitmask_parallel_threshold") \
            or not hasattr(manager, "_async_submit_fill_bitmask") or not hasattr(manager, "_fill_bitmasks"):
        return False
    old = getattr(manager, "executor_for_fillmask", None)
    # the Python-thread path's pool (vLLM also shuts it down with the manager)
    manager.executor_for_fillmask = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="mask-fill")
    if old is not None:
        old.shutdown(wait=False)
    batcher = _xgrammar_batcher(threads)
    if batcher is None:
        manager.fill_bitmask_parallel_batch_size = BATCH
    else:  # one task holds the step's whole batch; xgrammar spreads it over its threads
        manager.fill_bitmask_parallel_batch_size = 1 << 20
        manager._async_submit_fill_bitmask = lambda batch: _fill_batch(manager, batcher, batch)
    # vLLM takes the parallel path above the threshold
    manager.fill_bitmask_parallel_threshold = MIN_PARALLEL - 1
    return True


def _xgrammar_batcher(threads: int) -> Any:
    try:
        import xgrammar
    except ImportError:
        return None
    make = getattr(xgrammar, "BatchGrammarMatcher", None)
    return make(threads) if make is not None else None


def _fill_batch(manager: Any, batcher: Any, batch: list[tuple[Any, int, bool]]) -> Future[None]:
    """vLLM's ``_fill_bitmasks`` for one step's batch: the xgrammar matchers that need a mask
    by ``batcher`` in one call, the rest (finished, not constrained yet, another backend) as
    vLLM does. Done here, in the caller's thread: vLLM waits for the result at once, and
    xgrammar spreads the batch over its own threads."""
    import xgrammar

    matchers, rows, rest = [], [], []
    for grammar, index, apply_bitmask in batch:
        matcher = getattr(grammar, "matcher", None)
        if apply_bitmask and isinstance(matcher, xgrammar.GrammarMatcher) and not grammar.is_terminated():
            matchers.append(matcher)
            rows.append(index)
        else:
            rest.append((grammar, index, apply_bitmask))
    if rest:
        manager._fill_bitmasks(rest)
    if matchers:
        batcher.batch_fill_next_token_bitmask(matchers, manager._grammar_bitmask, rows)
    done: Future[None] = Future()
    done.set_result(None)
    return done


def scheduler(*args: Any, **kwargs: Any) -> Any:
    """vLLM's scheduler for this engine, its structured-output masks filled in parallel."""
    vllm_config = kwargs["vllm_config"]
    from vllm.v1.core.sched.async_scheduler import AsyncScheduler
    from vllm.v1.core.sched.scheduler import Scheduler

    cls: type[Any] = AsyncScheduler if vllm_config.scheduler_config.async_scheduling else Scheduler
    built = cls(*args, **kwargs)
    threads = int((vllm_config.additional_config or {}).get(CONFIG_KEY, 0))
    manager = getattr(built, "structured_output_manager", None)
    if tune(manager, threads):
        log.info("structured-output masks filled on %d threads from %d requests on", threads, MIN_PARALLEL)
    return built
