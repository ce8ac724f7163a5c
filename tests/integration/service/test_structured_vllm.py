"""Every answer well-formed on the real engine: 20 forecasts over different tickers and weeks,
on both bases, with the untrained stand-in adapters, all read by their own Prediction line.

The service decodes under the FinGPT answer expression (vLLM structured output, xgrammar on
this CPU build) with bounds fitted to ``max_new_tokens``, so even an adapter that has learned
nothing writes the three sections, a bin phrase and an analysis, whole. Own engines (the
package's shared app serves 8-token answers for speed): one per base, started for this module,
their token masks filled by two threads (``service.mask_fill``; on this machine's kind the
service's default is vLLM's one thread), so that every answer here also checks the parallel fill.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from support.engines import tiny_engine_spec, tiny_engines

from forecast.answer import bin_phrases
from forecast.answer_format import LIMITS, answer_regex, max_answer_chars
from forecast.providers.snapshot import SnapshotMarketData
from forecast.templates import ChatFormat
from service.bootstrap import running
from service.settings import ServiceSettings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]

BUDGET = 256
FORMATS = {"llama": ChatFormat.LLAMA3, "deepseek": ChatFormat.DEEPSEEK_R1}
TICKERS = ["AAPL", "AXP", "BA", "CAT", "CSCO", "CVX", "DIS", "GS", "HD", "IBM",
           "JNJ", "JPM", "KO", "MCD", "MMM", "MRK", "MSFT", "NKE", "PG", "WMT"]  # fmt: skip
WEEKS = [dt.date(2023, 10, 1) + dt.timedelta(weeks=3 * i) for i in range(5)]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def structured_client(
    adapter_root: Path, tiny_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[httpx.AsyncClient]:
    settings = ServiceSettings(
        _env_file=None,  # type: ignore[call-arg]
        adapter_root=adapter_root,
        db_url=f"sqlite:///{tmp_path_factory.mktemp('db') / 'forecasts.sqlite3'}",
        preload=["fingpt-llama@v1", "fingpt-deepseek@v1"],
        max_new_tokens=BUDGET, weeks=1, news_per_week=1, with_financials=False,
        ready_probe_s=3600, ready_timeout_s=600,
    )
    now = dt.datetime(2024, 1, 5, tzinfo=dt.UTC)
    async with (
        tiny_engines(tiny_model, FORMATS, max_num_seqs=16, max_loras=2, mask_fill_threads=2) as engines,
        running(settings, SnapshotMarketData(), engines, now=lambda: now) as app,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://svc", timeout=1200
        ) as client,
    ):
        yield client


@pytest.mark.asyncio(loop_scope="session")
async def test_twenty_forecasts_all_parse_by_their_prediction_line(
    structured_client: httpx.AsyncClient,
) -> None:
    requests = [
        {"ticker": t, "as_of": WEEKS[i % len(WEEKS)].isoformat(),
         "adapter": "fingpt-llama" if i % 2 == 0 else "fingpt-deepseek"}
        for i, t in enumerate(TICKERS)
    ]  # fmt: skip
    answers = await asyncio.gather(*(structured_client.post("/v1/forecast", json=r) for r in requests))
    assert len({(r["ticker"], r["as_of"]) for r in requests}) == 20
    for request, r in zip(requests, answers, strict=True):
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        fmt = FORMATS[body["base"]]
        context = f"{request}: {body['raw_text']!r}"
        assert body["prediction"]["source"] == "line", context
        assert body["parse_error"] is None, context
        assert " " + body["prediction"]["text"] in bin_phrases(), context
        assert body["positive_developments"] and body["concerns"] and body["analysis"], context
        assert re.fullmatch(answer_regex(fmt, LIMITS.fitting(BUDGET, fmt)), body["raw_text"]), context
        assert body["generated_tokens"] <= BUDGET
    assert max_answer_chars(ChatFormat.DEEPSEEK_R1, LIMITS.fitting(BUDGET, ChatFormat.DEEPSEEK_R1)) <= BUDGET
    card = await structured_client.get("/v1/adapters/fingpt-llama/scorecard")
    assert card.status_code == 200, card.text
    assert all(v["parse_failure_rate"] == 0.0 for v in card.json()["versions"]), card.text


def test_the_parallel_fill_fits_this_vllms_structured_output_manager(tiny_model: Path) -> None:
    """The manager the engines above run with: ``mask_fill.tune`` finds its knobs (the
    engines' answers, all matching the expression, show the masks it fills are right)."""
    from vllm.engine.arg_utils import EngineArgs
    from vllm.v1.structured_output import StructuredOutputManager

    from service import mask_fill
    from service.engine_args import engine_kwargs

    kwargs = engine_kwargs(tiny_engine_spec(tiny_model, "llama", max_num_seqs=16, mask_fill_threads=2), gpu=False)
    assert kwargs["scheduler_cls"] == mask_fill.QUALNAME
    manager = StructuredOutputManager(EngineArgs(**kwargs).create_engine_config())
    assert manager.fill_bitmask_parallel_threshold == 128  # vLLM's own: one thread below 128
    assert mask_fill.tune(manager, 2)
    assert manager.fill_bitmask_parallel_threshold == mask_fill.MIN_PARALLEL - 1
    assert manager.executor_for_fillmask._max_workers == 2
