"""What a load run measured, and the summary the load generator prints and writes.

One :class:`Sample` per request; :func:`summarize` turns them into percentiles of latency and
time-to-first-token, samples/s, errors by type — overall, per arm and per adapter version —
plus a timeline and a stickiness check. Pure functions of the samples, so tests are exact.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Sample:
    start_s: float  # since the run started
    latency_s: float
    ok: bool
    ticker: str
    client_key: str
    arm: str | None = None
    adapter: str | None = None  # "name@version" that served it
    ttft_s: float | None = None
    ttft_source: str | None = None  # "sse" (measured here) or "server" (reported by it)
    tokens: int | None = None
    error_type: str | None = None  # the service's error type, or a transport error class
    status: int | None = None


@dataclass(frozen=True)
class Event:
    """A hot-swap or re-weight the run performed, and how it went."""

    kind: str  # "swap" | "reweight"
    target: str
    at_s: float  # scheduled
    started_s: float
    duration_s: float
    ok: bool
    error: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (numpy's default method) of unsorted ``values``."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def distribution(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "p99": None, "mean": None, "max": None}
    return {
        "p50": _r(percentile(values, 50)),
        "p95": _r(percentile(values, 95)),
        "p99": _r(percentile(values, 99)),
        "mean": _r(sum(values) / len(values)),
        "max": _r(max(values)),
    }


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 6)


def group_stats(samples: Sequence[Sample], elapsed_s: float) -> dict[str, Any]:
    ok = [s for s in samples if s.ok]
    ttft = [s.ttft_s for s in ok if s.ttft_s is not None]
    tokens = sum(s.tokens or 0 for s in ok)
    return {
        "requests": len(samples),
        "ok": len(ok),
        "errors": len(samples) - len(ok),
        "samples_per_s": round(len(ok) / elapsed_s, 4) if elapsed_s > 0 else None,
        "tokens_per_s": round(tokens / elapsed_s, 2) if elapsed_s > 0 and tokens else None,
        "latency_s": distribution([s.latency_s for s in ok]),
        "ttft_s": distribution(ttft),
        "ttft_source": _most_common(s.ttft_source for s in ok if s.ttft_source),
        "errors_by_type": dict(Counter(s.error_type or "unknown" for s in samples if not s.ok)),
    }


def _most_common(values: Iterable[str]) -> str | None:
    counts = Counter(values)
    return counts.most_common(1)[0][0] if counts else None


def timeline(samples: Sequence[Sample], bucket_s: float) -> list[dict[str, Any]]:
    """Completed requests per bucket of start time: shows a dip (or none) around a swap."""
    buckets: dict[int, list[Sample]] = defaultdict(list)
    for s in samples:
        buckets[int(s.start_s // bucket_s)].append(s)
    rows = []
    for i in sorted(buckets):
        group = buckets[i]
        oks = [s.latency_s for s in group if s.ok]
        rows.append(
            {
                "t_s": round(i * bucket_s, 3),
                "ok": len(oks),
                "errors": len(group) - len(oks),
                "p95_latency_s": _r(percentile(oks, 95)),
                "adapters": dict(Counter(s.adapter for s in group if s.ok and s.adapter)),
            }
        )
    return rows


def stickiness(samples: Sequence[Sample], events: Sequence[Event]) -> dict[str, Any]:
    """Keys that saw more than one arm between two re-weights (0 means sticky).

    Requests started while a re-weight was being applied are left out: either arm is right.
    """
    reweights = sorted((e for e in events if e.kind == "reweight"), key=lambda e: e.started_s)

    def phase(t: float) -> int | None:
        n = 0
        for e in reweights:
            if e.started_s <= t < e.started_s + e.duration_s:
                return None
            if t >= e.started_s + e.duration_s:
                n += 1
        return n

    arms: dict[tuple[int, str], set[str]] = defaultdict(set)
    for s in samples:
        p = phase(s.start_s)
        if s.ok and s.arm is not None and p is not None:
            arms[(p, s.client_key)].add(s.arm)
    multi = sorted({key for (_, key), seen in arms.items() if len(seen) > 1})
    return {
        "keys": len({key for _, key in arms}),
        "keys_with_multiple_arms": len(multi),
        "examples": multi[:5],
    }


def swap_effects(samples: Sequence[Sample], events: Sequence[Event]) -> list[dict[str, Any]]:
    """For each successful swap: how soon after the admin call *returned* the new version
    served — the first request it took (start), its first token, its first whole answer — and
    how many requests failed while the swap was in progress or after it.

    A swap event's ``detail["after"]`` is the ``name@version`` now serving the alias."""
    out: list[dict[str, Any]] = []
    for e in events:
        if e.kind != "swap" or not e.ok:
            continue
        ref = e.detail.get("after")
        returned = e.started_s + e.duration_s
        new = [s for s in samples if s.ok and s.adapter == ref and s.start_s >= e.started_s]
        first_token = [s.start_s + s.ttft_s - returned for s in new if s.ttft_s is not None]
        out.append({
            "target": e.target,
            "version": ref,
            "admin_call_s": _r(e.duration_s),
            "requests_served_by_new": len(new),
            "first_request_after_return_s": _r(min((s.start_s - returned for s in new), default=None)),
            "first_token_after_return_s": _r(min(first_token, default=None)),
            "first_answer_after_return_s": _r(
                min((s.start_s + s.latency_s - returned for s in new), default=None)
            ),
            "failed_after_swap_started": sum(
                1 for s in samples if not s.ok and s.start_s + s.latency_s >= e.started_s
            ),
        })  # fmt: skip
    return out


def summarize(
    samples: Sequence[Sample],
    events: Sequence[Event],
    elapsed_s: float,
    config: dict[str, Any],
    bucket_s: float = 10.0,
    keep_samples: bool = False,
) -> dict[str, Any]:
    by_arm: dict[str, list[Sample]] = defaultdict(list)
    by_adapter: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        by_arm[s.arm or "(none)"].append(s)
        if s.adapter:
            by_adapter[s.adapter].append(s)
    return {
        "config": config,
        "elapsed_s": round(elapsed_s, 3),
        "totals": group_stats(samples, elapsed_s),
        "per_arm": {arm: group_stats(group, elapsed_s) for arm, group in sorted(by_arm.items())},
        "per_adapter": {
            ref: group_stats(group, elapsed_s) for ref, group in sorted(by_adapter.items())
        },
        "events": [asdict(e) for e in events],
        "stickiness": stickiness(samples, events),
        "swap_effects": swap_effects(samples, events),
        "timeline": timeline(samples, bucket_s),
        **({"samples": [asdict(s) for s in samples]} if keep_samples else {}),
    }
