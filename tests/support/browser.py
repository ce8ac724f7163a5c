"""Headless Chromium for the page's tests: Debian's ``chromium`` and ``chromium-driver``
(``make system-deps``) driven by selenium, with no driver download."""

from __future__ import annotations

import shutil
from typing import Any

from support.ci import missing, require_module

WAIT_S = 120  # a condition's deadline on a loaded 2-core host; never a timing claim


def start_chromium(width: int = 1280, height: int = 1400) -> Any:
    """A headless Chromium session (a selenium ``WebDriver``); a skip (a failure in CI) when
    chromium, its driver or selenium is missing."""
    require_module("selenium", "the dev extra")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if binary is None or driver is None:
        missing("chromium and chromium-driver (Debian packages; `make system-deps`)")
    options = Options()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={width},{height}"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


def choose_date(browser: Any, day: str) -> None:
    """Set the page's date picker as a person's pick does: its value, then its change event
    (typing into a date field depends on the browser's locale)."""
    from selenium.webdriver.common.by import By

    field = browser.find_element(By.ID, "as-of")
    browser.execute_script(
        "arguments[0].value = arguments[1];"
        "arguments[0].dispatchEvent(new Event('change'));", field, day,
    )
