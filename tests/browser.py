"""Helpers for browser tests: Selenium 4 driving Debian's headless Chromium.

The browser is /usr/bin/chromium with /usr/bin/chromedriver (the Debian packages chromium and
chromium-driver, installed by scripts/install_browser.sh). Both paths are given to Selenium, so
Selenium Manager never runs and nothing is downloaded. Without them browser tests skip, unless
MEGAROUTER_REQUIRE_BROWSER=1 (set in CI) makes that a failure: call require_browser() first.

Selenium's calls block. A test whose server runs on the test's event loop (as the repo's async
fixtures do) must make them through asyncio.to_thread, or the server cannot answer the browser.
"""

from __future__ import annotations

import base64
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
REPO = Path(__file__).resolve().parent.parent
PAGE_LOAD_TIMEOUT_S = 30
_T = TypeVar("_T")

UNAVAILABLE_REASON = f"{CHROMIUM} or {CHROMEDRIVER} is missing (install them with scripts/install_browser.sh)"

_FLAGS = (
    "--headless=new",
    "--no-sandbox",  # tests (and CI containers) run as root, where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # No traffic of the browser's own (updates, sync, safe browsing lists): tests are offline.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",  # a container's small /dev/shm crashes renderers; use /tmp
    "--window-size=1280,900",
)


def chromium_available() -> bool:
    return all(p.is_file() and os.access(p, os.X_OK) for p in (CHROMIUM, CHROMEDRIVER))


def require_browser() -> None:
    """Skip the calling test without a browser, or fail it when MEGAROUTER_REQUIRE_BROWSER is set."""
    if chromium_available():
        return
    if os.environ.get("MEGAROUTER_REQUIRE_BROWSER", "") not in ("", "0"):
        pytest.fail(f"MEGAROUTER_REQUIRE_BROWSER is set but {UNAVAILABLE_REASON}")
    pytest.skip(UNAVAILABLE_REASON)


def start_browser(tmp_path: Path, *, dark: bool = False) -> webdriver.Chrome:
    """A fresh headless Chromium with its own profile under tmp_path; the caller quits it.

    dark=True makes the page see prefers-color-scheme: dark (emulated over CDP for this tab,
    and kept across its navigations)."""
    require_browser()
    tmp_path.mkdir(parents=True, exist_ok=True)
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in _FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    # Keep the page's console (CSP violations, uncaught errors) for console_errors().
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # Selenium talks to chromedriver on loopback: never through an HTTP(S)_PROXY from the environment.
    # The replacement Selenium suggests (a ClientConfig) is not accepted by webdriver.Chrome, hence
    # the deprecated call, quietly.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        options.ignore_local_proxy_environment_variables()
    # chromedriver's log, which also gets Chromium's stderr, stays with the test's files.
    service = Service(str(CHROMEDRIVER), log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    try:
        driver.set_page_load_timeout(PAGE_LOAD_TIMEOUT_S)
        if dark:
            driver.execute_cdp_cmd(
                "Emulation.setEmulatedMedia",
                {"media": "", "features": [{"name": "prefers-color-scheme", "value": "dark"}]},
            )
    except BaseException:
        driver.quit()
        raise
    return driver


def console_errors(driver: webdriver.Chrome) -> list[str]:
    """The SEVERE messages in the browser's console since the last call (reading drains the log)."""
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def screenshot_dir() -> Path:
    return Path(os.environ.get("MEGAROUTER_SCREENSHOT_DIR") or REPO / "test-artifacts" / "screenshots")


def save_screenshot(driver: webdriver.Chrome, name: str) -> Path:
    """Save a PNG of the whole page (not just the 1280x900 viewport) as <screenshot dir>/<name>.png.

    WebDriver's own screenshot stops at the viewport. Full page: CDP Page.captureScreenshot, clipped
    to the layout metrics' content size (cssContentSize, in CSS pixels; contentSize on older
    Chromium), with captureBeyondViewport so the part below the fold is rendered too. Should CDP
    fail, falls back to driver.save_screenshot (the viewport only)."""
    directory = screenshot_dir()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.png"
    try:
        metrics = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})
        size = metrics.get("cssContentSize") or metrics["contentSize"]
        shot = driver.execute_cdp_cmd(
            "Page.captureScreenshot",
            {
                "format": "png",
                "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1},
            },
        )
        path.write_bytes(base64.b64decode(shot["data"]))
    except Exception:
        if not driver.save_screenshot(str(path)):
            raise
    return path


def wait_for(driver: webdriver.Chrome, condition: Callable[[Any], _T], timeout: float = 10) -> _T:
    """WebDriverWait(driver, timeout).until(condition): condition's first truthy value, else TimeoutException."""
    return WebDriverWait(driver, timeout).until(condition)


def wait_text(driver: webdriver.Chrome, css: str, text: str, timeout: float = 10) -> None:
    """Wait until the (first) element matching css contains text."""
    wait_for(driver, ec.text_to_be_present_in_element((By.CSS_SELECTOR, css), text), timeout)
