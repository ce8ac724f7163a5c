"""The page in a real headless Chromium (Debian's ``chromium`` + ``chromium-driver``, driven by
selenium) over the real service on a loopback port, on FakeEngines: a person's forecast
through the form, the errors they see, and the adapters view after scoring."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from support.browser import WAIT_S, choose_date, start_chromium
from support.ci import require_module
from support.http import serve_http

from forecast.providers.snapshot import SnapshotMarketData
from service.app import create_app
from service.settings import ServiceSettings
from service.testing import FakeEngine

require_module("selenium", "the dev extra")

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    driver = start_chromium()
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def service_url(
    make_settings: Callable[..., ServiceSettings], engines: dict[str, FakeEngine],
    market: SnapshotMarketData, clock: Any,
) -> Iterator[str]:
    app = create_app(make_settings(), engines, market, now=clock, rng=random.Random(7))
    with serve_http(app) as url:
        yield url


def wait(browser: WebDriver, condition: Callable[[WebDriver], Any]) -> Any:
    return WebDriverWait(browser, WAIT_S).until(condition)


def text(browser: WebDriver, element_id: str) -> str:
    return str(browser.find_element(By.ID, element_id).text)


def test_a_forecast_through_the_form_reads_as_a_person_reads_it(
    browser: WebDriver, service_url: str, clock: Any
) -> None:
    clock.now = dt.datetime(2024, 3, 4, 12, tzinfo=dt.UTC)  # after AMZN replaced WBA
    browser.get(f"{service_url}/")
    wait(browser, lambda b: len(Select(b.find_element(By.ID, "ticker")).options) == 30)
    assert browser.current_url == f"{service_url}/page/"
    assert browser.find_element(By.ID, "as-of").get_attribute("value") == "2024-03-04"
    tickers = [o.text for o in Select(browser.find_element(By.ID, "ticker")).options]
    assert "AMZN" in tickers and "WBA" not in tickers
    choose_date(browser, "2023-12-13")  # the list follows the chosen date
    wait(browser, lambda b: "WBA" in [o.text for o in Select(b.find_element(By.ID, "ticker")).options])
    assert "2023-12-13" in text(browser, "universe-note")
    Select(browser.find_element(By.ID, "ticker")).select_by_visible_text("WBA")
    Select(browser.find_element(By.ID, "weeks")).select_by_value("2")
    browser.find_element(By.ID, "financials").click()
    browser.find_element(By.ID, "submit").click()
    wait(browser, lambda b: b.find_element(By.ID, "result").is_displayed())

    assert text(browser, "r-title").startswith("WBA · Walgreens")
    assert "2023-12-10 → 2023-12-17" in text(browser, "r-week")
    badge = browser.find_element(By.ID, "r-prediction")
    direction = badge.get_attribute("class").split()[-1]
    assert direction in ("up", "down")
    assert badge.text.startswith("Up " if direction == "up" else "Down ")
    assert badge.text.endswith("%")
    assert "Prediction line" in text(browser, "r-prediction-text")
    assert [li.text for li in browser.find_elements(By.CSS_SELECTOR, "#r-positive li")] == [
        "Strong demand.", "New products."
    ]
    assert [li.text for li in browser.find_elements(By.CSS_SELECTOR, "#r-concerns li")] == [
        "Margin pressure."
    ]
    assert text(browser, "r-analysis") == "The balance of news points this way."
    meta = {
        dd.get_attribute("data-field"): dd.text
        for dd in browser.find_elements(By.CSS_SELECTOR, "#r-meta dd")
    }
    assert meta["adapter"].startswith("fingpt-") and "@v1" in meta["adapter"]
    assert meta["abarm"] in ("fingpt-llama", "fingpt-deepseek")
    assert meta["latency"].startswith(("0.", "1.", "2.")) and "total" in meta["latency"]
    assert meta["data"].startswith("fresh") and "prices: snapshot" in meta["data"]
    # The form's options reached the route: the answer says what the prompt was built from.
    assert meta["prompt"].startswith("2 past week(s)") and "with basic financials" in meta["prompt"]


def test_errors_are_shown_with_their_status_and_reason(
    browser: WebDriver, service_url: str, engines: dict[str, FakeEngine]
) -> None:
    browser.get(f"{service_url}/page/")
    wait(browser, lambda b: len(Select(b.find_element(By.ID, "ticker")).options) == 30)
    choose_date(browser, "2019-06-03")  # before the recorded membership
    wait(browser, lambda b: b.find_element(By.ID, "error").is_displayed())
    assert "HTTP 422, no_data" in text(browser, "error")
    assert "recorded from 2020-08-31" in text(browser, "error")

    choose_date(browser, "2024-01-05")
    wait(browser, lambda b: not b.find_element(By.ID, "error").is_displayed())
    for engine in engines.values():
        engine.dead = True
    browser.find_element(By.ID, "submit").click()
    wait(browser, lambda b: b.find_element(By.ID, "error").is_displayed())
    assert "cannot answer right now (HTTP 503" in text(browser, "error")
    assert not browser.find_element(By.ID, "result").is_displayed()


def test_adapters_view_compares_scorecards_speed_accuracy_and_the_split(
    browser: WebDriver, service_url: str, admin: dict[str, str]
) -> None:
    with httpx.Client(base_url=service_url, timeout=60) as c:
        for adapter in ("fingpt-llama", "fingpt-deepseek"):
            for ticker in ("KO", "MSFT"):
                r = c.post("/v1/forecast", json={
                    "ticker": ticker, "as_of": "2023-12-10", "adapter": adapter,
                })  # fmt: skip
                assert r.status_code == 200, r.text
        assert c.post("/v1/scorecard/score", headers=admin).json()["updated"] == 4
    browser.get(f"{service_url}/page/#adapters")
    wait(browser, lambda b: b.find_element(By.TAG_NAME, "body").get_attribute("data-adapters-loaded"))

    cards = browser.find_elements(By.CSS_SELECTOR, "#scorecards .card")
    assert sorted(c.get_attribute("data-adapter") for c in cards) == [
        "fingpt-deepseek", "fingpt-llama"
    ]
    for card in cards:
        rows = {
            tr.find_elements(By.TAG_NAME, "td")[0].text: tr.find_elements(By.TAG_NAME, "td")[1].text
            for tr in card.find_elements(By.CSS_SELECTOR, "tbody tr")
        }
        assert rows["Forecasts"] == "2" and rows["Scored weeks"] == "2"
        assert rows["Binary accuracy"].endswith(")") and rows["Held-out accuracy"] == "50.0%"
    points = browser.find_elements(By.CSS_SELECTOR, "#chart svg circle.point")
    assert sorted(p.get_attribute("data-label") for p in points) == [
        "fingpt-deepseek@v1", "fingpt-llama@v1"
    ]
    split = text(browser, "split")
    assert "arm fingpt-llama → fingpt-llama: 50%" in split
    assert "arm fingpt-deepseek → fingpt-deepseek: 50%" in split
