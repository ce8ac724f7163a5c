"""The main job on the embedded default, in one command: ``python -m service.demo``.

Tiny model standing in for both bases, the bundled snapshot, both adapters: the shipped
release adapters (``service/release_adapters``) first; when training produced a newer
version under ``var/adapters`` (``make demo`` trains one on the CPU slice), the service
hot-swaps to it after the first forecast and forecasts again. It starts
the real service on a loopback port, then over HTTP: checks readiness, forecasts one ticker,
sends keyed requests through the 50/50 A/B split (and repeats one key to show stickiness),
scores the closed week against realized returns, and prints the ``/metrics`` lines that
matter. Prompts are shortened by default (``--weeks 1 --news 2``) so it finishes in minutes
on two CPU cores; ``--weeks 4 --news 5`` is the full FinGPT prompt.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import secrets
import textwrap
from collections import Counter
from typing import Any

import httpx
from pydantic import SecretStr

from forecast.settings import DataSettings, market_data_from_settings
from service.bootstrap import prepare_settings, running
from service.demo_adapters import release_version
from service.engine_args import resolve_model_id
from service.main import serving
from service.manifest import versions_on_disk
from service.settings import ServiceSettings

SHOWN = re.compile(
    r"^forecast_(forecasts_total|requests_total|time_to_first_token_seconds_(sum|count)|"
    r"decode_tokens_per_second_(sum|count)|parse_failures_total|probed_total|adapter_alias|routing_weight|"
    r"engine_\w+|adapter_swaps_total|realized_\w+|scored_forecasts|provider_cache_\w+)\b"
)


SOURCES = {
    "line": "read from the answer's own Prediction line",
    "prose": "read from the answer's analysis prose",
    "probe": "answer cut off: the model's constrained choice after a Prediction header",
}


def readable(r: dict[str, Any], width: int = 88) -> str:
    """A forecast as a person reads it: what, for which week, why, by which adapter, how fast."""
    p = r["prediction"]
    lines = [f"{r['ticker']} ({r['company']}), week {r['week_start']} -> {r['week_end']}"]
    if p is None:
        lines.append(f"Prediction: none ({r['parse_error']})")
    else:
        lines.append(f"Prediction: {p['text']}  [{p['bin']}, {SOURCES[p['source']]}]")
    for title, key in (("Positive developments", "positive_developments"), ("Potential concerns", "concerns")):
        lines.append(f"{title}:")
        for item in (r[key] or "(none)").splitlines():
            lines.extend(textwrap.wrap(item.strip(), width, initial_indent="  ", subsequent_indent="     "))
    lines.extend(textwrap.wrap(f"Analysis: {r['analysis'] or '(none)'}", width, subsequent_indent="  "))
    lat = r["latency"]
    tokens = r["generated_tokens"]
    rate = f", {tokens / lat['generation_s']:.1f} tokens/s" if lat.get("generation_s") else ""
    ttft = f"first token {lat['ttft_s']:.2f} s, " if lat.get("ttft_s") is not None else ""
    lines.append(f"Adapter: {r['adapter']} (arm {r['arm']}, base {r['base']}, model {r['base_model']})")
    lines.append(f"Latency: {lat['total_s']:.2f} s ({ttft}{tokens} tokens{rate})")
    return "\n".join(lines)


def show(title: str, payload: Any) -> None:
    print(f"\n### {title}")
    print(payload if isinstance(payload, str) else json.dumps(payload, indent=2))


async def walkthrough(
    url: str, token: str, ticker: str, n_ab: int, swaps: dict[str, tuple[str, str]] | None = None
) -> None:
    admin = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=url, timeout=None) as c:
        show("readiness  GET /readyz", (await c.get("/readyz")).json())
        r = (await c.post("/v1/forecast", json={"ticker": ticker})).json()
        show(f"forecast  POST /v1/forecast {{ticker: {ticker}}}", readable(r))
        show("... the same forecast as JSON", {
            k: r[k] for k in ("ticker", "company", "week_start", "week_end", "prediction",
                              "parse_error", "adapter", "base_model", "arm", "freshness", "latency",
                              "generated_tokens", "raw_text")
        })
        for name, (release, version) in (swaps or {}).items():
            swapped = await c.post("/v1/adapters", headers=admin, json={"name": name, "version": version})
            show(f"hot-swap  POST /v1/adapters {{name: {name}, version: {version}}}  "
                 f"(the version trained above, in place of the release adapter {release})", swapped.json())
        if swaps:
            r = (await c.post("/v1/forecast", json={"ticker": ticker})).json()
            show(f"forecast after the swap  POST /v1/forecast {{ticker: {ticker}}}", readable(r))
        show("routing  GET /v1/routing", (await c.get("/v1/routing", headers=admin)).json())
        replies = await asyncio.gather(*(
            c.post("/v1/forecast", json={"ticker": ticker}, headers={"X-Client-Key": f"client-{i}"})
            for i in range(n_ab)
        ))
        split = Counter(f"{x.json()['arm']} -> {x.json()['adapter']}" for x in replies)
        again = (await c.post("/v1/forecast", json={"ticker": ticker},
                              headers={"X-Client-Key": "client-0"})).json()["arm"]
        show(f"A/B split over {n_ab} client keys", dict(split)
             | {"client-0 first": replies[0].json()["arm"], "client-0 again": again})
        show("score closed weeks  POST /v1/scorecard/score",
             (await c.post("/v1/scorecard/score", headers=admin)).json())
        aliases = (await c.get("/v1/adapters", headers=admin)).json()["aliases"]
        for alias in aliases:
            card = (await c.get(f"/v1/adapters/{alias}/scorecard")).json()
            show(f"scorecard  GET /v1/adapters/{alias}/scorecard", card["versions"])
        metrics = (await c.get("/metrics")).text
        show("/metrics (the lines that matter)",
             "\n".join(line for line in metrics.splitlines() if SHOWN.match(line)))


def release_first(settings: ServiceSettings) -> tuple[list[str], dict[str, tuple[str, str]]]:
    """Preload entries that pin each adapter to its release version when a newer one is on
    disk, and the swaps (name -> (release, newest version)) to make once the service is up."""
    preload: list[str] = []
    swaps: dict[str, tuple[str, str]] = {}
    for spec in settings.preload:
        name = spec.partition("@")[0]
        versions = versions_on_disk(settings.adapter_root, name)
        release = release_version(name, resolve_model_id(settings.engines[0]))
        if "@" not in spec and release in versions and versions[-1] != release:
            preload.append(f"{name}@{release}")
            swaps[name] = (release, versions[-1])
        else:
            preload.append(spec)
    return preload, swaps


async def run(args: argparse.Namespace) -> None:
    token = secrets.token_urlsafe(16)
    data = DataSettings()
    settings = ServiceSettings(
        port=args.port, weeks=args.weeks, news_per_week=args.news,
        max_new_tokens=args.max_new_tokens,
    )
    settings = prepare_settings(settings, data, demo_adapters=True)
    # Start on the shipped release adapter; a newer version (the one the demo just trained)
    # is hot-swapped in during the walkthrough.
    preload, swaps = release_first(settings)
    settings = settings.model_copy(update={"admin_token": SecretStr(token), "preload": preload})
    print(f"adapters: {settings.preload} from {settings.adapter_root}; starting the engines ...")
    async with running(settings, market_data_from_settings(data)) as app, serving(app, port=args.port) as url:
        await walkthrough(url, token, args.ticker, args.ab_requests, swaps)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m service.demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--ticker", default="AAPL")
    p.add_argument("--ab-requests", type=int, default=8)
    p.add_argument("--weeks", type=int, default=1)
    p.add_argument("--news", type=int, default=2)
    # Room for a whole answer: the answer expression's bounds are fitted to it (at this budget
    # 3 items of up to 104 characters a section for Llama, 2 of 105 for DeepSeek with its
    # reasoning; ~300 tokens of English when filled).
    p.add_argument("--max-new-tokens", type=int, default=1024)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "auto")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
