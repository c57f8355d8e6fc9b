"""The console in a real browser (Debian's chromium through Selenium) against real processes:
a control plane, a simulator, a proxy and `megarouter console`.

The newcomer's path: sign in with the operator token, create a key, see it once, call the
proxy with it through the OpenAI SDK, see that request on the usage page and its chart,
revoke the key and see the proxy refuse it. Every main page is saved as a screenshot
(test-artifacts/screenshots/, or MEGAROUTER_SCREENSHOT_DIR) and checked for console errors,
which is where the strict CSP reports anything it blocks.

Selenium is blocking, so each flow runs in a thread (`asyncio.to_thread`) while the event
loop keeps draining the services' output.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import openai
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from megarouter.v1 import admin_pb2, routing_pb2
from tests.browser import console_errors, require_browser, save_screenshot, start_browser, wait_for, wait_text
from tests.conftest import ADMIN_TOKEN, ORG_TREE, System, build_system
from tests.console_harness import console_url, start_console
from tests.harness import Service

# Usage reaches the console after a proxy report (1 s in tests) and a control-plane flush (2 s).
USAGE_TIMEOUT_S = 30


VIEWER_A = "mr-admin-test-browser-viewer-a-000000"
DEVELOPER_A = "mr-admin-test-browser-developer-a-000"


async def _seed(system: System) -> int:
    for name, node in (("key-a", "team-a"), ("key-b", "team-b")):
        await system.admin.CreateApiKey(admin_pb2.CreateApiKeyRequest(name=name, node=node))
    for name, secret, role in (("viewer-a", VIEWER_A, "viewer"), ("developer-a", DEVELOPER_A, "developer")):
        await system.admin.CreateAdminToken(admin_pb2.CreateAdminTokenRequest(name=name, secret=secret))
        await system.admin.PutRoleBinding(admin_pb2.RoleBinding(name=name, token=name, role=role, scope="team-a"))
    await system.admin.PutBudget(routing_pb2.Budget(name="team-a-monthly", node="team-a", window="monthly",
                                                    unit="usd", limit=25, action="pause"))
    put = await system.admin.PutBudget(routing_pb2.Budget(name="acme-daily-requests", node="acme", window="daily",
                                                          unit="requests", limit=1000, action="alert"))
    return put.revision


@pytest.fixture(scope="module")
async def setup(tmp_path_factory) -> AsyncIterator[tuple[System, Service, Path]]:
    require_browser()
    tmp = tmp_path_factory.mktemp("console-browser")
    # A one-second health-history step, so the fleet page's sparklines have points within the test.
    system = await build_system(tmp, manifest_extra=ORG_TREE, seed=_seed,
                                controlplane_flags=("--health-history-step-s", "1"))
    try:
        console = await start_console(system, tmp)
        try:
            yield system, console, tmp
        finally:
            await console.stop()
    finally:
        await system.close()


def _no_console_errors(driver: WebDriver, page: str) -> None:
    errors = console_errors(driver)
    assert errors == [], f"{page}: {errors}"


def _open(driver: WebDriver, url: str, page: str, *, screenshot: str | None = None) -> None:
    driver.get(url)
    wait_for(driver, lambda d: d.execute_script("return document.readyState") == "complete")
    if driver.find_elements(By.CSS_SELECTOR, "figure.chart[data-src]"):
        wait_for(driver, lambda d: all(f.get_attribute("data-drawn") for f in
                                       d.find_elements(By.CSS_SELECTOR, "figure.chart[data-src]")))
    _no_console_errors(driver, page)
    if screenshot:
        save_screenshot(driver, screenshot)


def _sign_in_with_token(driver: WebDriver, base: str, token: str) -> None:
    driver.get(base + "/")
    wait_for(driver, lambda d: "/signin" in d.current_url)
    _no_console_errors(driver, "sign-in")
    save_screenshot(driver, "console-signin")
    field = driver.find_element(By.ID, "token")
    assert field.get_attribute("type") == "password"
    field.send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "form[action='/signin/token'] button[type=submit]").click()
    wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "form[action='/signout']"))


def _newcomer_flow(base: str, proxy_base_url: str, tmp: Path) -> None:
    driver = start_browser(tmp / "newcomer")
    try:
        _sign_in_with_token(driver, base, ADMIN_TOKEN)

        # Create a key.
        _open(driver, base + "/keys", "keys")
        driver.find_element(By.ID, "k-name").send_keys("newcomer-key")
        driver.find_element(By.CSS_SELECTOR, "#k-node option[value='team-a']").click()
        driver.find_element(By.CSS_SELECTOR, "form[action='/keys'] button[type=submit]").click()
        wait_text(driver, "h1", "newcomer-key")
        secret = driver.find_element(By.ID, "secret").get_attribute("value")
        assert secret.startswith("sk-mr-")
        assert secret in driver.find_element(By.ID, "snippet-openai").text
        assert f"ANTHROPIC_AUTH_TOKEN={secret}" in driver.find_element(By.ID, "snippet-claude").text
        _no_console_errors(driver, "key created")
        save_screenshot(driver, "console-key-created")
        driver.find_element(By.CSS_SELECTOR, "button[data-copy='#secret']").click()
        wait_for(driver, lambda d: d.find_element(By.CSS_SELECTOR, "button[data-copy='#secret']").text != "Copy")

        # Shown once: the keys page lists it by prefix, never the secret.
        _open(driver, base + "/keys", "keys after create")
        assert secret not in driver.page_source
        row = driver.find_element(By.CSS_SELECTOR, "tr[data-key='newcomer-key']")
        assert secret[:10] in row.text

        # Call the proxy with it, through the OpenAI SDK.
        client = openai.OpenAI(base_url=proxy_base_url, api_key=secret, max_retries=0)
        for _ in range(3):
            reply = client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "hi"}])
            assert reply.choices[0].message.content

        # See the requests on the usage page: table and chart.
        usage_url = base + "/usage?group_by=day&group_by=key"

        def requests_listed(d: WebDriver) -> bool:
            d.get(usage_url)
            return "newcomer-key" in d.find_element(By.ID, "usage-table").text
        wait_for(driver, requests_listed, timeout=USAGE_TIMEOUT_S)
        _open(driver, usage_url, "usage", screenshot="console-usage")
        row = next(r for r in driver.find_elements(By.CSS_SELECTOR, "#usage-table tbody tr")
                   if "newcomer-key" in r.text)
        assert " 3 " in f" {row.text} "  # three requests
        figure = driver.find_element(By.CSS_SELECTOR, "figure.chart")
        assert figure.get_attribute("data-drawn") == "chart"
        assert figure.find_elements(By.CSS_SELECTOR, "canvas")
        assert "newcomer-key" in figure.text  # the chart's legend

        # The other main pages render without errors.
        _open(driver, base + "/", "overview", screenshot="console-overview")
        assert driver.find_element(By.ID, "month-requests").text != "0"
        assert "team-a-monthly" in driver.find_element(By.CSS_SELECTOR, "ul.bars").text
        _open(driver, base + "/budgets", "budgets", screenshot="console-budgets")
        assert "proxy-" in driver.find_element(By.ID, "budgets").text  # the proxy holding a lease
        _open(driver, base + "/routes", "routes", screenshot="console-routes")
        _open(driver, base + "/fleet", "fleet")
        assert "yes" in driver.find_element(By.ID, "proxies").text  # the proxy is in sync
        wait_for(driver, lambda d: all(s.get_attribute("data-drawn") for s in d.find_elements(By.CSS_SELECTOR,
                                                                                          "span.spark")))
        drawn = [s.get_attribute("data-drawn") for s in driver.find_elements(By.CSS_SELECTOR, "span.spark")]
        assert "chart" in drawn, drawn  # the endpoint that served has a history
        _no_console_errors(driver, "fleet sparklines")
        save_screenshot(driver, "console-fleet")
        _open(driver, base + "/org", "org", screenshot="console-org")
        _open(driver, base + "/routes/edit?route=auto", "route editor")

        # What-if: a built-in profile through every strategy, as a chart and a table.
        _open(driver, base + "/whatif", "what-if")
        driver.find_element(By.CSS_SELECTOR, "#w-profile option[value='support-chat']").click()
        driver.find_element(By.ID, "w-samples").send_keys("500")
        driver.find_element(By.CSS_SELECTOR, "form[action='/whatif'] button[type=submit]").click()
        wait_for(driver, lambda d: d.find_elements(By.ID, "whatif-results"), timeout=60)
        wait_for(driver, lambda d: d.find_element(By.CSS_SELECTOR, "figure[data-bars]").get_attribute("data-drawn"))
        strategies = [r.find_element(By.TAG_NAME, "td").text
                      for r in driver.find_elements(By.CSS_SELECTOR, "#whatif-results tbody tr")]
        assert {"flagship-only", "cost", "balanced"} <= set(strategies), strategies
        _no_console_errors(driver, "what-if results")
        save_screenshot(driver, "console-whatif")

        # Revoke it, confirming, and see the proxy refuse it.
        _open(driver, base + "/keys", "keys before revoke")
        driver.find_element(By.CSS_SELECTOR, "tr[data-key='newcomer-key'] a.danger").click()
        wait_for(driver, lambda d: d.find_elements(By.ID, "confirm-revoke"))
        save_screenshot(driver, "console-revoke")
        driver.find_element(By.ID, "confirm-revoke").click()
        wait_text(driver, "#revoked", "newcomer-key")
        assert not driver.find_elements(By.CSS_SELECTOR, "tr[data-key='newcomer-key']")
        deadline = time.monotonic() + 15
        while True:  # the proxy gets the revocation with its next table
            try:
                client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "hi"}])
            except openai.AuthenticationError:
                break
            assert time.monotonic() < deadline, "the proxy still accepts the revoked key"
            time.sleep(0.2)

        # Dark theme follows the system.
        dark = start_browser(tmp / "dark", dark=True)
        try:
            for cookie in driver.get_cookies():
                if cookie["name"] == "mr_console_session":
                    dark.get(base + "/signin")
                    dark.add_cookie({"name": cookie["name"], "value": cookie["value"], "path": "/"})
            _open(dark, base + "/", "overview (dark)", screenshot="console-overview-dark")
            background = dark.execute_script("return getComputedStyle(document.body).backgroundColor")
            assert background == "rgb(13, 17, 23)", background
        finally:
            dark.quit()

        # Sign out: back to the sign-in page, and the console is closed to this browser.
        driver.find_element(By.CSS_SELECTOR, "form[action='/signout'] button").click()
        wait_text(driver, ".notice", "signed out")
        driver.get(base + "/keys")
        wait_for(driver, lambda d: "/signin" in d.current_url)
    finally:
        driver.quit()


async def test_a_newcomer_signs_in_creates_a_key_and_sees_its_requests(setup) -> None:
    system, console, tmp = setup
    await asyncio.to_thread(_newcomer_flow, console_url(console), system.base_url(), tmp)
    with pytest.raises(Exception) as gone:
        await system.admin.GetApiKey(admin_pb2.GetRequest(name="newcomer-key"))
    assert "not found" in str(gone.value)


def _keyboard_flow(base: str, tmp: Path) -> None:
    """The sign-in form works from the keyboard alone, and every form field has a label."""
    driver = start_browser(tmp / "keyboard")
    try:
        driver.get(base + "/signin")
        from selenium.webdriver.common.keys import Keys
        active = driver.switch_to.active_element
        for _ in range(10):  # Tab until the token field has focus
            if active.get_attribute("id") == "token":
                break
            active.send_keys(Keys.TAB)
            active = driver.switch_to.active_element
        assert active.get_attribute("id") == "token"
        active.send_keys(ADMIN_TOKEN + Keys.ENTER)
        wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "form[action='/signout']"))
        for page in ("/keys", "/budgets", "/usage", "/org", "/routes/edit"):
            driver.get(base + page)
            for field in driver.find_elements(By.CSS_SELECTOR, "input:not([type=hidden]), select, textarea"):
                ident = field.get_attribute("id")
                labelled = ident and driver.find_elements(By.CSS_SELECTOR, f"label[for='{ident}']")
                wrapped = field.find_elements(By.XPATH, "ancestor::label")
                assert labelled or wrapped, f"{page}: a field without a label ({field.get_attribute('name')})"
    finally:
        driver.quit()


async def test_the_console_is_usable_from_the_keyboard_with_labelled_fields(setup) -> None:
    _, console, tmp = setup
    await asyncio.to_thread(_keyboard_flow, console_url(console), tmp)



async def test_what_if_replays_an_uploaded_usage_log_without_keeping_it(setup) -> None:
    import aiohttp

    from tests.console_harness import ConsoleClient, csrf_of
    system, console, tmp = setup
    client = ConsoleClient.open(console_url(console))
    try:
        await client.sign_in(ADMIN_TOKEN)
        _, page = await client.page("/whatif")
        canary = b"CANARY-whatif-prompt-7f3a"  # prompt text in a log line: used for the estimate, then gone
        log = b"\n".join(b'{"prompt_tokens": %d, "completion_tokens": 200, "count": 1000, "prompt": "%s"}'
                         % (n, canary) for n in (300, 900))
        for body, want_status, want in ((log, 200, "flagship-only"), (b'{"prompt_tokens": "many"}', 400, ":1")):
            form = aiohttp.FormData()
            form.add_field("csrf", csrf_of(page))
            form.add_field("profile", "support-chat")
            form.add_field("log", body, filename="usage.jsonl", content_type="application/jsonl")
            async with client.http.post(client.url + "/whatif", data=form) as response:
                html = await response.text()
                assert response.status == want_status and want in html, html[-2000:]
        # Nothing of it in any file of the system: store, services' logs, caches.
        leaked = [p for p in tmp.rglob("*") if p.is_file() and canary in p.read_bytes()]
        assert leaked == []
    finally:
        await client.close()


def _scoped_flow(base: str, tmp: Path) -> int:
    """A viewer of team A sees only team A; a developer of team A forging a revoke of team B's
    key from inside the page (the page's own CSRF token, a fetch() no form offers) is refused."""
    viewer = start_browser(tmp / "viewer-a")
    try:
        _sign_in_with_token(viewer, base, VIEWER_A)
        _open(viewer, base + "/keys", "keys as viewer")
        listed = {row.get_attribute("data-key") for row in viewer.find_elements(By.CSS_SELECTOR, "tr[data-key]")}
        assert listed == {"key-a"}, listed
        assert not viewer.find_elements(By.CSS_SELECTOR, "form[action='/keys']")  # no create form
        _open(viewer, base + "/usage?group_by=key&group_by=node", "usage as viewer")
        assert "team-b" not in viewer.find_element(By.ID, "usage-table").text
        nav = viewer.find_element(By.CSS_SELECTOR, "header nav").text
        assert "Fleet" not in nav and "Routes" not in nav  # system-wide pages need a global role
    finally:
        viewer.quit()
    developer = start_browser(tmp / "developer-a")
    try:
        _sign_in_with_token(developer, base, DEVELOPER_A)
        _open(developer, base + "/keys", "keys as developer")
        return developer.execute_async_script("""
            const done = arguments[arguments.length - 1];
            const csrf = document.querySelector('meta[name="csrf-token"]').content;
            fetch('/keys/key-b/revoke', {method: 'POST', body: new URLSearchParams({csrf}),
                                         headers: {'Content-Type': 'application/x-www-form-urlencoded'}})
              .then((response) => done(response.status), () => done(-1));
        """)
    finally:
        developer.quit()


async def test_a_scoped_viewer_sees_only_their_team_and_a_forged_post_is_refused(setup) -> None:
    system, console, tmp = setup
    status = await asyncio.to_thread(_scoped_flow, console_url(console), tmp)
    assert status == 403
    assert (await system.admin.GetApiKey(admin_pb2.GetRequest(name="key-b"))).node == "team-b"  # still there
