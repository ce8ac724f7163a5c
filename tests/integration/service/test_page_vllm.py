"""The page in headless Chromium over the service on the real vLLM CPU engines: a forecast
made through the form shows the engine's own answer, and the adapters view loads the live
split and the scorecards. (The page's behaviour in detail is tested on FakeEngines in
``tests/unit/service/test_page_browser.py``.)"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from support.browser import WAIT_S, start_chromium

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(900)]


def forecast_through_the_page(url: str) -> dict[str, Any]:
    """Blocking selenium calls (run off the event loop that serves the app)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    browser = start_chromium()
    try:
        wait = WebDriverWait(browser, WAIT_S * 5)
        browser.get(f"{url}/page/")
        wait.until(lambda b: len(Select(b.find_element(By.ID, "ticker")).options) == 30)
        Select(browser.find_element(By.ID, "ticker")).select_by_visible_text("KO")
        Select(browser.find_element(By.ID, "weeks")).select_by_value("1")
        browser.find_element(By.ID, "submit").click()
        wait.until(lambda b: b.find_element(By.ID, "result").is_displayed()
                   or b.find_element(By.ID, "error").is_displayed())
        shown = {
            "error": browser.find_element(By.ID, "error").text,
            "title": browser.find_element(By.ID, "r-title").text,
            "badge": browser.find_element(By.ID, "r-prediction").text,
            "raw": browser.find_element(By.ID, "r-raw").get_attribute("textContent"),
            "meta": {dd.get_attribute("data-field"): dd.text
                     for dd in browser.find_elements(By.CSS_SELECTOR, "#r-meta dd")},
        }  # fmt: skip
        browser.get(f"{url}/page/#adapters")
        wait.until(lambda b: b.find_element(By.TAG_NAME, "body").get_attribute("data-adapters-loaded"))
        shown["cards"] = [c.get_attribute("data-adapter")
                          for c in browser.find_elements(By.CSS_SELECTOR, "#scorecards .card")]  # fmt: skip
        shown["split"] = browser.find_element(By.ID, "split").text
        return shown
    finally:
        browser.quit()


async def test_a_forecast_through_the_page_is_the_engines_answer(service_url: str) -> None:
    shown = await asyncio.to_thread(forecast_through_the_page, service_url)
    assert shown["error"] == ""
    assert shown["title"] == "KO · Coca-Cola Co"
    assert shown["raw"]  # the tiny model's own text, whatever it says
    assert shown["badge"] == "No prediction" or shown["badge"].endswith("%")
    assert shown["meta"]["adapter"].startswith("fingpt-")
    assert "model HuggingFaceTB/SmolLM2-135M-Instruct" in shown["meta"]["adapter"]
    assert "total" in shown["meta"]["latency"] and "tokens" in shown["meta"]["latency"]
    assert shown["meta"]["prompt"].startswith("1 past week(s)")
    assert {"fingpt-llama", "fingpt-deepseek"} <= set(shown["cards"])
    assert "arm " in shown["split"]
