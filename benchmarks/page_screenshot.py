"""Screenshots of the page (``/page/``) on the real service: ``docs/page.png`` (a forecast made
through the form) and ``docs/page-adapters.png`` (scorecards, speed vs accuracy, A/B split).

    python benchmarks/page_screenshot.py [--ticker AAPL] [--date 2023-12-31] [--weeks 2]

The service as ``python -m service`` serves it with nothing configured: the tiny model standing
in for both bases on vLLM CPU engines, the shipped release adapters (``fingpt-llama@v1``,
``fingpt-deepseek@v1``) at 50/50, the bundled snapshot; adapters and forecast log in a
temporary directory. Before the pictures, each adapter forecasts a few tickers for a closed
week (``--scored-week``) and the scorer scores them, so the adapters view has realized numbers.
Then headless Chromium (Debian's ``chromium`` + ``chromium-driver``, through selenium) fills
the form the way a person does and saves each view at full height. Writes
``benchmarks/results/page_screenshot.json`` (the forecast shown, its latency, the machine);
asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
import os
import secrets
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import machine, write_result  # noqa: E402
from forecast.settings import DataSettings, market_data_from_settings  # noqa: E402
from service.bootstrap import prepare_settings, running  # noqa: E402
from service.main import serving  # noqa: E402
from service.settings import ServiceSettings  # noqa: E402

DOCS = ROOT / "docs"
WAIT_S = 1800  # a CPU forecast of up to max_new_tokens on a loaded host; not a timing claim
SCORED_TICKERS = ("KO", "JPM", "MSFT")


def chromium(width: int, height: int) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if binary is None or driver is None:
        raise SystemExit("needs Debian's chromium and chromium-driver (`make system-deps`)")
    options = Options()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={width},{height}", "--hide-scrollbars"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


def full_page(browser: Any, path: Path, width: int) -> None:
    """Set the viewport (not the window, whose height includes the browser's own frame) to
    the document's height, then save the picture."""
    height = int(browser.execute_script("return document.documentElement.scrollHeight"))
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": height, "deviceScaleFactor": 1, "mobile": False,
    })  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(path))
    browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    print(f"wrote {path.relative_to(ROOT)} ({width}x{height})")


def shoot(url: str, args: argparse.Namespace) -> dict[str, Any]:
    """Fill the form, screenshot the answer, then the adapters view (blocking: selenium)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    browser = chromium(args.width, 900)
    try:
        wait = WebDriverWait(browser, WAIT_S)
        browser.get(f"{url}/page/")
        wait.until(lambda b: len(Select(b.find_element(By.ID, "ticker")).options) == 30)
        field = browser.find_element(By.ID, "as-of")
        browser.execute_script(
            "arguments[0].value = arguments[1]; arguments[0].dispatchEvent(new Event('change'));",
            field, args.date,
        )
        wait.until(lambda b: args.date in b.find_element(By.ID, "universe-note").text)
        Select(browser.find_element(By.ID, "ticker")).select_by_visible_text(args.ticker)
        Select(browser.find_element(By.ID, "weeks")).select_by_value(str(args.weeks))
        if not browser.find_element(By.ID, "financials").is_selected():
            browser.find_element(By.ID, "financials").click()
        browser.find_element(By.ID, "submit").click()
        wait.until(lambda b: b.find_element(By.ID, "result").is_displayed()
                   or b.find_element(By.ID, "error").is_displayed())
        shown = {
            "prediction": browser.find_element(By.ID, "r-prediction").text,
            "title": browser.find_element(By.ID, "r-title").text,
            "error": browser.find_element(By.ID, "error").text or None,
            "meta": {dd.get_attribute("data-field"): dd.text
                     for dd in browser.find_elements(By.CSS_SELECTOR, "#r-meta dd")},
        }  # fmt: skip
        full_page(browser, DOCS / "page.png", args.width)
        browser.get(f"{url}/page/#adapters")
        wait.until(lambda b: b.find_element(By.TAG_NAME, "body").get_attribute("data-adapters-loaded"))
        full_page(browser, DOCS / "page-adapters.png", args.width)
        return shown
    finally:
        browser.quit()


async def scored_history(url: str, token: str, week: dt.date) -> dict[str, Any]:
    """Each adapter forecasts the closed ``week`` for a few tickers; then score them."""
    admin = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=url, timeout=None) as c:
        aliases = (await c.get("/v1/adapters", headers=admin)).json()["aliases"]
        replies = await asyncio.gather(*(
            c.post("/v1/forecast/batch", json={
                "tickers": list(SCORED_TICKERS), "as_of": week.isoformat(), "adapter": alias,
            })
            for alias in aliases
        ))  # fmt: skip
        for r in replies:
            r.raise_for_status()
        scored = (await c.post("/v1/scorecard/score", headers=admin)).json()
    return {"adapters": sorted(aliases), "tickers": list(SCORED_TICKERS), "scored": scored}


async def run(args: argparse.Namespace) -> None:
    token = secrets.token_urlsafe(16)
    work = Path(tempfile.mkdtemp(prefix="page-shot-"))
    data = DataSettings()
    settings = ServiceSettings(
        _env_file=None,  # type: ignore[call-arg]
        port=args.port, adapter_root=work / "adapters", db_url=f"sqlite:///{work / 'log.sqlite3'}",
        weeks=4, news_per_week=args.news, max_new_tokens=args.max_new_tokens,
    )
    settings = prepare_settings(settings, data, demo_adapters=False)  # the release adapters
    settings = settings.model_copy(update={"admin_token": SecretStr(token)})
    print(f"adapters {settings.preload}; starting the engines ...")
    async with running(settings, market_data_from_settings(data)) as app, serving(app, port=args.port) as url:
        history = await scored_history(url, token, args.scored_week)
        print(f"scored history: {history}")
        shown = await asyncio.to_thread(shoot, url, args)
    shutil.rmtree(work, ignore_errors=True)
    path = write_result("page_screenshot", {
        "what": "the page on the release adapters (tiny model, vLLM CPU), screenshots in docs/",
        "form": {"ticker": args.ticker, "date": args.date, "weeks": args.weeks,
                 "with_financials": True},
        "settings": {"news_per_week": args.news, "max_new_tokens": args.max_new_tokens},
        "shown": shown,
        "history": history,
        "machine": machine(),
    })  # fmt: skip
    print(f"wrote {path.relative_to(ROOT)}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--ticker", default="AAPL")
    p.add_argument("--date", default="2023-12-31", help="the form's date (the snapshot's latest week)")
    p.add_argument("--weeks", type=int, default=2, choices=[1, 2, 3, 4])
    p.add_argument("--news", type=int, default=2, help="headlines per week (the service's setting)")
    p.add_argument("--max-new-tokens", type=int, default=768)
    p.add_argument("--scored-week", type=dt.date.fromisoformat, default=dt.date(2023, 12, 10))
    p.add_argument("--width", type=int, default=1200)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "auto")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
