"""The console's web security, over HTTP against real processes: CSRF, cookie flags, the
CSP and other headers, server-side sign-out, open redirects, scoping, and rate-limited
generic sign-in failures. (The flows in a real browser are in test_console_browser.py.)"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from console.security import safe_return_path
from megarouter.admin_client import admin_channel
from megarouter.v1 import admin_pb2, admin_pb2_grpc
from tests.conftest import ADMIN_TOKEN, ORG_TREE, System, build_system
from tests.console_harness import ConsoleClient, console_url, csrf_of, start_console
from tests.harness import Service

VIEWER_A = "mr-admin-test-console-viewer-a-0000000"
DEVELOPER_A = "mr-admin-test-console-developer-a-00000"


async def _seed(system: System) -> int:
    revision = 0
    for name, node in (("key-a", "team-a"), ("key-b", "team-b")):
        created = await system.admin.CreateApiKey(admin_pb2.CreateApiKeyRequest(name=name, node=node))
        revision = max(revision, created.revision)
    for name, secret, role in (("viewer-a", VIEWER_A, "viewer"), ("developer-a", DEVELOPER_A, "developer")):
        await system.admin.CreateAdminToken(admin_pb2.CreateAdminTokenRequest(name=name, secret=secret))
        bound = await system.admin.PutRoleBinding(admin_pb2.RoleBinding(name=name, token=name, role=role,
                                                                         scope="team-a"))
        revision = max(revision, bound.revision)
    return revision


@pytest.fixture(scope="module")
async def setup(tmp_path_factory) -> AsyncIterator[tuple[System, Service]]:
    tmp = tmp_path_factory.mktemp("console-security")
    system = await build_system(tmp, manifest_extra=ORG_TREE, seed=_seed)
    try:
        console = await start_console(system, tmp)
        try:
            yield system, console
        finally:
            await console.stop()
    finally:
        await system.close()


@pytest.fixture
async def browser_session(setup) -> AsyncIterator[ConsoleClient]:
    client = ConsoleClient.open(console_url(setup[1]))
    try:
        yield client
    finally:
        await client.close()


async def test_every_response_carries_the_security_headers(setup, browser_session: ConsoleClient) -> None:
    for path in ("/signin", "/static/console.css", "/no-such-page", "/keys"):
        async with browser_session.http.get(browser_session.url + path, allow_redirects=False) as response:
            csp = response.headers.get("Content-Security-Policy", "")
            assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe" not in csp, path
            assert response.headers["X-Content-Type-Options"] == "nosniff"
            assert response.headers["X-Frame-Options"] == "DENY"
            assert response.headers["Server"] == "megarouter"
            if not path.startswith("/static/"):
                assert response.headers["Cache-Control"] == "no-store", path


async def test_session_cookie_flags(setup, browser_session: ConsoleClient) -> None:
    response = await browser_session.sign_in(ADMIN_TOKEN)
    assert response.status == 303
    cookie = next(value for key, value in response.headers.items()
                  if key.lower() == "set-cookie" and value.startswith("mr_console_session="))
    flags = {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "path", "samesite", "max-age"} <= flags
    assert "samesite=lax" in cookie.lower() and "path=/" in cookie.lower()
    # Served over plain http on loopback (dev), so not Secure: a browser would drop it.
    assert "secure" not in flags


async def test_cookies_are_secure_behind_https(setup, tmp_path) -> None:
    system, _ = setup
    console = await start_console(system, tmp_path, "--public-url", "https://console.example.test",
                                  name="console-https")
    client = ConsoleClient.open(f"http://127.0.0.1:{console.ready['port']}")
    try:
        async with client.http.get(client.url + "/signin") as page:
            pre = page.headers["Set-Cookie"]
            html = await page.text()
        assert "Secure" in pre and "HttpOnly" in pre
        # The test talks plain http to it, where a cookie jar keeps Secure cookies to itself: send it by hand.
        pre_value = pre.split(";", 1)[0].split("=", 1)[1]
        async with client.http.post(client.url + "/signin/token", allow_redirects=False,
                                    headers={"Cookie": f"mr_console_pre={pre_value}"},
                                    data={"csrf": csrf_of(html), "token": ADMIN_TOKEN, "next": "/"}) as response:
            assert response.status == 303
            session = next(v for k, v in response.headers.items() if k.lower() == "set-cookie"
                           and v.startswith("mr_console_session="))
        assert "Secure" in session and "HttpOnly" in session and "SameSite=Lax" in session
    finally:
        await client.close()
        await console.stop()


async def test_a_post_without_or_with_a_wrong_csrf_token_is_refused(setup, browser_session: ConsoleClient) -> None:
    system, _ = setup
    await browser_session.sign_in(ADMIN_TOKEN)
    form = {"name": "csrf-probe", "node": "team-a", "strategy": "unspecified"}
    for data in (form, {**form, "csrf": "0" * 64}, {**form, "csrf": ""}):
        async with browser_session.http.post(browser_session.url + "/keys", data=data,
                                             allow_redirects=False) as response:
            assert response.status == 403
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await system.admin.GetApiKey(admin_pb2.GetRequest(name="csrf-probe"))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND  # nothing was created
    # The same form with the page's token works.
    status, html, _ = await browser_session.post("/keys", form, csrf_from="/keys")
    assert status == 200 and "sk-mr-" in html
    await system.admin.DeleteApiKey(admin_pb2.DeleteRequest(name="csrf-probe"))
    # Sign-in forms have their own (pre-session) token.
    async with browser_session.http.post(browser_session.url + "/signin/token", allow_redirects=False,
                                         data={"token": ADMIN_TOKEN, "csrf": "forged"}) as response:
        assert response.status == 403


async def test_sign_out_ends_the_session_on_the_server(setup, browser_session: ConsoleClient) -> None:
    system, _ = setup
    await browser_session.sign_in(ADMIN_TOKEN)
    credential = browser_session.session_cookie()
    assert credential.startswith("mr-session-")
    async with admin_channel(system.admin_address, credential) as channel:
        me = await admin_pb2_grpc.AdminStub(channel).WhoAmI(admin_pb2.WhoAmIRequest())
        assert me.token == "bootstrap" and me.session_expires_at_unix_ms > 0
    status, _, location = await browser_session.post("/signout", {})
    assert status == 303 and location.startswith("/signin")
    async with admin_channel(system.admin_address, credential) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            await admin_pb2_grpc.AdminStub(channel).WhoAmI(admin_pb2.WhoAmIRequest())
    assert ended.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # Replaying the old cookie gets the sign-in page, not the console.
    browser_session.http.cookie_jar.update_cookies({"mr_console_session": credential})
    status, _ = await browser_session.page("/keys")
    assert status == 303


@pytest.mark.parametrize("target", ["//evil.example/", "https://evil.example/", "/\\evil.example", "\\\\evil",
                                    "/ok\r\nSet-Cookie: x=y", "javascript:alert(1)", "evil.example", ""])
def test_return_paths_that_could_leave_the_console_go_home(target: str) -> None:
    assert safe_return_path(target) == "/"


def test_return_paths_on_the_console_are_kept() -> None:
    assert safe_return_path("/usage?group_by=day&since=2026-12-01") == "/usage?group_by=day&since=2026-12-01"


async def test_sign_in_refuses_to_redirect_off_site(setup, browser_session: ConsoleClient) -> None:
    response = await browser_session.sign_in(ADMIN_TOKEN, next_path="//evil.example/steal")
    assert response.status == 303 and response.headers["Location"] == "/"


async def test_a_scoped_viewer_sees_only_their_team(setup, browser_session: ConsoleClient) -> None:
    await browser_session.sign_in(VIEWER_A)
    status, html = await browser_session.page("/keys")
    assert status == 200 and 'data-key="key-a"' in html and "key-b" not in html and 'data-key="test"' not in html
    status, html = await browser_session.page("/usage?group_by=key&group_by=node")
    assert status == 200 and "team-b" not in html
    # A node outside the scope is refused by the control plane, and the console says so.
    status, html = await browser_session.page("/usage?group_by=key&node=team-b")
    assert status == 403 and "usage.read" in html
    # No create form for a viewer; a hand-made POST is refused by the control plane.
    status, html = await browser_session.page("/keys")
    assert "Create a key" not in html
    status, html, _ = await browser_session.post("/keys", {"name": "sneaky", "node": "team-a"}, csrf_from="/keys")
    assert status == 403 and "keys.write" in html


async def test_a_hand_made_post_for_another_teams_key_is_refused_by_the_control_plane(
        setup, browser_session: ConsoleClient) -> None:
    system, _ = setup
    await browser_session.sign_in(DEVELOPER_A)
    status, html, _ = await browser_session.post("/keys/key-b/revoke", {}, csrf_from="/keys")
    assert status == 403 and "keys.write" in html and "team-b" in html
    assert (await system.admin.GetApiKey(admin_pb2.GetRequest(name="key-b"))).name == "key-b"  # still there
    status, html, _ = await browser_session.post("/keys", {"name": "dev-in-b", "node": "team-b"}, csrf_from="/keys")
    assert status == 403 and "keys.write" in html
    # Within their own team the developer may create (and revoke) keys.
    status, html, _ = await browser_session.post("/keys", {"name": "dev-in-a", "node": "team-a"}, csrf_from="/keys")
    assert status == 200 and "only time it is shown" in html
    status, _, location = await browser_session.post("/keys/dev-in-a/revoke", {}, csrf_from="/keys")
    assert status == 303 and location == "/keys?revoked=dev-in-a"


async def test_failed_sign_ins_are_generic_and_rate_limited(setup, tmp_path) -> None:
    # A console of its own: its limiter must not lock the other tests (all on 127.0.0.1) out.
    console = await start_console(setup[0], tmp_path, "--signin-limit", "4", name="console-limited")
    client = ConsoleClient.open(console_url(console))
    try:
        bodies = set()
        for wrong in ("mr-admin-wrong-000000000000000000000", "", "not even a token", "mr-session-forged"):
            response = await client.sign_in(wrong)
            assert response.status == 401
            bodies.add((await response.text()).split('id="signin-error">', 1)[1].split("<", 1)[0])
        assert len(bodies) == 1 and "Sign-in failed" in bodies.pop()  # the same words whatever was wrong
        # The limit (4 here) is reached: even the right token is refused for now.
        response = await client.sign_in(ADMIN_TOKEN)
        assert response.status == 429 and "Too many failed sign-ins" in await response.text()
    finally:
        await client.close()
        await console.stop()
