"""The browser-test infrastructure (tests/browser.py) against a real local aiohttp server: headless
Chromium loads a page under a strict CSP, runs its external script, blocks its inline one and
reports that in the console; full-page screenshots and the dark color-scheme emulation work.

The server runs on the test's event loop, so every (blocking) Selenium call goes through
asyncio.to_thread. Without Chromium these tests skip, unless MEGAROUTER_REQUIRE_BROWSER=1.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from selenium import webdriver

from tests.browser import console_errors, require_browser, save_screenshot, start_browser, wait_text

CSP = "default-src 'self'; script-src 'self'"
# Filler taller than the viewport, as content: a style="height: ..." would be blocked by the CSP
# (default-src 'self' covers inline styles too).
FILLER = "\n".join(f"<p>line {i}</p>" for i in range(60))
PAGE = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>smoke</title></head>
<body>
<p id="status">static</p>
<p id="inline">inline did not run</p>
<script>document.getElementById("inline").textContent = "inline ran";</script>
<script src="/app.js"></script>
{FILLER}
</body></html>
"""
APP_JS = 'document.getElementById("status").textContent = "app.js ran";\n'
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
async def site() -> AsyncIterator[str]:
    """The page and its script on 127.0.0.1, every response under the CSP; yields the base URL."""

    async def page(_: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html", headers={"Content-Security-Policy": CSP})

    async def app_js(_: web.Request) -> web.Response:
        return web.Response(
            text=APP_JS, content_type="application/javascript", headers={"Content-Security-Policy": CSP}
        )

    app = web.Application()
    app.router.add_get("/", page)
    app.router.add_get("/app.js", app_js)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[webdriver.Chrome]:
    require_browser()  # here, not in the worker thread, so a skip is plain
    driver = await asyncio.to_thread(start_browser, tmp_path)
    try:
        yield driver
    finally:
        await asyncio.to_thread(driver.quit)


async def test_csp_console_and_screenshot(site: str, browser: webdriver.Chrome) -> None:
    await asyncio.to_thread(browser.get, site + "/")
    await asyncio.to_thread(wait_text, browser, "#status", "app.js ran")

    inline = await asyncio.to_thread(browser.execute_script, "return document.getElementById('inline').textContent")
    assert inline == "inline did not run"
    errors = await asyncio.to_thread(console_errors, browser)
    assert any("Content Security Policy" in e and "inline script" in e for e in errors), errors
    # The default is light: the dark test below shows its emulation is what changes this.
    dark = await asyncio.to_thread(
        browser.execute_script, "return window.matchMedia('(prefers-color-scheme: dark)').matches"
    )
    assert dark is False

    path = await asyncio.to_thread(save_screenshot, browser, "browser-smoke")
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk follows the signature
    viewport = await asyncio.to_thread(browser.execute_script, "return [innerWidth, innerHeight]")
    assert 1200 < width <= viewport[0] and height > viewport[1] + 1000, (width, height, viewport)  # whole page


async def test_dark_color_scheme(site: str, tmp_path: Path) -> None:
    require_browser()
    driver = await asyncio.to_thread(start_browser, tmp_path, dark=True)
    try:
        await asyncio.to_thread(driver.get, site + "/")  # emulation set before, kept across navigation
        dark = await asyncio.to_thread(
            driver.execute_script, "return window.matchMedia('(prefers-color-scheme: dark)').matches"
        )
        assert dark is True
    finally:
        await asyncio.to_thread(driver.quit)
