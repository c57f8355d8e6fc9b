"""Single sign-on end to end against a real OIDC issuer (oidc-provider-mock, with PKCE
enforced by tests/oidc_issuer.py): the console's authorization-code flow, the control plane's
own ID-token checks, self-service sign-up, invited users, IdP-group roles, and the people
who may not sign in — who all see the same generic failure."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from selenium.webdriver.common.by import By

from megarouter.admin_client import admin_channel
from megarouter.v1 import admin_pb2, admin_pb2_grpc
from tests.browser import console_errors, require_browser, save_screenshot, start_browser, wait_for, wait_text
from tests.conftest import CONSOLE_TOKEN, ORG_TREE, System, build_system
from tests.console_harness import ConsoleClient, console_url, start_console
from tests.harness import Service, eventually
from tests.oidc_issuer import Issuer, oidc_issuer

CLIENT_ID = "megarouter-console"
CLIENT_SECRET = "console-client-secret-for-tests"


def sso_config(issuer: Issuer) -> str:
    return f"""
issuer: {issuer.url}
client_id: {CLIENT_ID}
allowed_domains: [example.com, partner.example]
group_bindings:
  - {{group: platform-admins, role: admin}}
  - {{group: team-a-viewers, role: viewer, scope: team-a}}
signup:
  domains: [example.com]
  parent: sandbox
  role: developer
  budget: {{limit_usd: 5, window: monthly}}
"""


@dataclass
class Sso:
    system: System
    console: Service
    issuer: Issuer
    tmp: Path

    @property
    def url(self) -> str:
        return console_url(self.console)


@pytest.fixture(scope="module")
async def sso(tmp_path_factory) -> AsyncIterator[Sso]:
    tmp = tmp_path_factory.mktemp("console-sso")
    with oidc_issuer() as issuer:
        for sub, email, name, groups, verified in (
                ("alice", "alice@example.com", "Alice Liddell", [], True),
                ("alice-twin", "alice@example.org", "Other Alice", [], True),
                ("bob", "bob@partner.example", "Bob", [], True),
                ("carol", "carol@example.com", "Carol", ["platform-admins"], True),
                ("dave", "dave@example.com", "Dave", ["team-a-viewers"], True),
                ("eve", "eve@example.com", "Eve", [], False),
                ("mallory", "mallory@evil.example", "Mallory", [], True)):
            issuer.add_user(sub, email=email, name=name, groups=groups, email_verified=verified)
        config = tmp / "sso.yaml"
        config.write_text(sso_config(issuer))
        system = await build_system(tmp, manifest_extra=ORG_TREE + "---\nnodes:\n  - {name: sandbox, kind: org}\n",
                                    controlplane_flags=("--sso-config", str(config)))
        try:
            # A high sign-in limit: these tests fail on purpose, all from 127.0.0.1.
            console = await start_console(system, tmp, "--signin-limit", "100",
                                          env={"MEGAROUTER_OIDC_CLIENT_SECRET": CLIENT_SECRET})
            try:
                setup = Sso(system, console, issuer, tmp)
                client = ConsoleClient.open(setup.url)
                try:
                    async def sso_offered() -> bool:  # the console asks the control plane at start
                        return 'id="sso"' in (await client.page("/signin"))[1]
                    await eventually(sso_offered, what="the console to offer SSO")
                finally:
                    await client.close()
                yield setup
            finally:
                await console.stop()
        finally:
            await system.close()


async def sign_in_over_http(sso: Sso, sub: str, next_path: str = "/") -> tuple[ConsoleClient, int, str, str]:
    """Sign in as `sub` without a browser: (client, status, Location, body) of the callback."""
    client = ConsoleClient.open(sso.url)
    async with client.http.get(f"{sso.url}/signin/sso", params={"next": next_path}, allow_redirects=False) as start:
        assert start.status == 302, await start.text()
        authorize = start.headers["Location"]
    assert authorize.startswith(sso.issuer.authorization_endpoint)
    assert "code_challenge_method=S256" in authorize and "nonce=" in authorize
    callback = await asyncio.to_thread(sso.issuer.authorize_with_http, authorize, sub)
    async with client.http.get(callback, allow_redirects=False) as back:
        return client, back.status, back.headers.get("Location", ""), await back.text()


def _browser_sign_up(sso: Sso) -> str:
    driver = start_browser(sso.tmp / "sso-browser")
    try:
        driver.get(sso.url + "/")
        wait_for(driver, lambda d: d.find_elements(By.ID, "sso"))
        driver.find_element(By.ID, "sso").click()
        # The issuer's own authorization page (oidc-provider-mock): who signs in.
        wait_for(driver, lambda d: d.current_url.startswith(sso.issuer.url))
        driver.find_element(By.CSS_SELECTOR, 'input[name="sub"]').send_keys("alice")
        driver.find_element(By.XPATH, '//button[normalize-space()="Authorize"]').click()
        wait_for(driver, lambda d: d.current_url.startswith(sso.url + "/keys"))
        wait_text(driver, ".notice", "Welcome")
        assert "Alice Liddell" in driver.find_element(By.CSS_SELECTOR, ".who").text
        # The mock issuer's page asks a CDN for its stylesheet (offline here): not ours to judge.
        ours = [e for e in console_errors(driver) if sso.issuer.url not in e and "cdn.jsdelivr.net" not in e]
        assert ours == []
        save_screenshot(driver, "console-sso-welcome")
        # Their own project is the only place they may create keys.
        options = [o.get_attribute("value") for o in driver.find_elements(By.CSS_SELECTOR, "#k-node option")]
        assert options == ["sandbox-alice"], options
        driver.find_element(By.ID, "k-name").send_keys("alice-first")
        driver.find_element(By.CSS_SELECTOR, "form[action='/keys'] button[type=submit]").click()
        wait_text(driver, "h1", "alice-first")
        return driver.find_element(By.ID, "secret").get_attribute("value")
    finally:
        driver.quit()


async def test_a_first_sso_sign_in_signs_the_person_up_with_a_project_of_their_own(sso: Sso) -> None:
    require_browser()
    secret = await asyncio.to_thread(_browser_sign_up, sso)
    assert secret.startswith("sk-mr-")
    admin = sso.system.admin
    user = await admin.GetUser(admin_pb2.GetRequest(name="alice@example.com"))
    assert user.created_by == "signup" and user.display_name == "Alice Liddell"
    node = await admin.GetNode(admin_pb2.GetRequest(name="sandbox-alice"))
    assert node.parent == "sandbox" and node.kind == "project" and node.metadata["owner"] == "alice@example.com"
    bindings = [b for b in (await admin.ListRoleBindings(admin_pb2.ListRequest())).items if b.user == user.email]
    assert [(b.role, b.scope) for b in bindings] == [("developer", "sandbox-alice")]
    budget = await admin.GetBudget(admin_pb2.GetRequest(name="sandbox-alice-starter"))
    assert budget.node == "sandbox-alice" and budget.limit == 5 and budget.unit == "usd"
    key = await admin.GetApiKey(admin_pb2.GetRequest(name="alice-first"))
    assert key.node == "sandbox-alice" and key.metadata["created_by"] == "alice@example.com"

    # Signing in again finds the user: no second project, and back where they asked to go.
    client, status, location, _ = await sign_in_over_http(sso, "alice", next_path="/usage")
    try:
        assert (status, location) == (303, "/usage")
        status, html = await client.page("/keys")
        assert status == 200 and 'data-key="alice-first"' in html and 'data-key="test"' not in html
    finally:
        await client.close()
    nodes = [n.name for n in (await admin.ListNodes(admin_pb2.ListRequest())).items if n.parent == "sandbox"]
    assert nodes == ["sandbox-alice"]

    # Someone else with the same local part gets a project of their own, not Alice's — but only
    # from a sign-up domain: alice@example.org is not even allowed to sign in.
    client, status, _, body = await sign_in_over_http(sso, "alice-twin")
    await client.close()
    assert status == 401 and "Sign-in failed" in body


@pytest.mark.parametrize("sub", ["mallory", "eve", "bob"],
                         ids=["domain-not-allowed", "email-not-verified", "allowed-domain-without-sign-up"])
async def test_people_who_may_not_sign_in_get_one_generic_failure(sso: Sso, sub: str) -> None:
    client, status, location, body = await sign_in_over_http(sso, sub)
    try:
        assert status == 401 and not location
        assert "Sign-in failed. Check what you entered, or ask your administrator for access." in body
        assert "domain" not in body and "verified" not in body  # never which part was wrong
        assert not client.session_cookie()
    finally:
        await client.close()


async def test_an_invited_person_signs_in_with_the_role_they_were_given(sso: Sso) -> None:
    admin = sso.system.admin
    await admin.PutUser(admin_pb2.User(email="bob@partner.example", display_name="Bob from Partner"))
    await admin.PutRoleBinding(admin_pb2.RoleBinding(name="bob-viewer", user="bob@partner.example", role="viewer",
                                                     scope="team-b"))
    client, status, location, _ = await sign_in_over_http(sso, "bob", next_path="//evil.example/")
    try:
        assert (status, location) == (303, "/")  # signed in, and not sent off-site
        status, html = await client.page("/usage?group_by=node")
        assert status == 200
        status, html = await client.page("/usage?node=team-a")
        assert status == 403
        async with admin_channel(sso.system.admin_address, client.session_cookie()) as channel:
            me = await admin_pb2_grpc.AdminStub(channel).WhoAmI(admin_pb2.WhoAmIRequest())
        assert me.user == "bob@partner.example" and [(b.role, b.scope) for b in me.bindings] == [("viewer", "team-b")]
        # Disabling the user ends their sessions at once.
        await admin.PutUser(admin_pb2.User(email="bob@partner.example", disabled=True))
        status, _ = await client.page("/keys")
        assert status == 303
    finally:
        await client.close()
    client, status, _, _ = await sign_in_over_http(sso, "bob")
    await client.close()
    assert status == 401


async def test_idp_groups_grant_roles_for_the_session(sso: Sso) -> None:
    client, status, _, _ = await sign_in_over_http(sso, "carol")
    try:
        assert status == 303
        status, html = await client.page("/org")
        assert status == 200 and 'id="people"' in html and "alice@example.com" in html  # an admin, by group
    finally:
        await client.close()
    client, status, _, _ = await sign_in_over_http(sso, "dave")
    try:
        async with admin_channel(sso.system.admin_address, client.session_cookie()) as channel:
            me = await admin_pb2_grpc.AdminStub(channel).WhoAmI(admin_pb2.WhoAmIRequest())
        roles = sorted((b.role, b.scope) for b in me.bindings)
        assert roles == [("developer", "sandbox-dave"), ("viewer", "team-a")]
    finally:
        await client.close()


async def test_a_callback_without_its_sign_in_in_flight_is_refused(sso: Sso) -> None:
    """A code delivered to someone else's browser (login CSRF) or a replayed callback."""
    client = ConsoleClient.open(sso.url)
    other = ConsoleClient.open(sso.url)
    try:
        async with client.http.get(f"{sso.url}/signin/sso", allow_redirects=False) as start:
            authorize = start.headers["Location"]
        callback = await asyncio.to_thread(sso.issuer.authorize_with_http, authorize, "alice")
        async with other.http.get(callback, allow_redirects=False) as stolen:
            assert stolen.status == 400 and "Sign-in failed" in await stolen.text()
        async with client.http.get(callback, allow_redirects=False) as own:
            assert own.status == 303
        async with client.http.get(callback, allow_redirects=False) as replay:  # the code is spent
            assert replay.status in (400, 401)
    finally:
        await client.close()
        await other.close()


async def test_the_control_plane_verifies_id_tokens_itself(sso: Sso) -> None:
    """The console's credential alone signs nobody in: a forged or mismatched ID token is refused."""
    from authlib.integrations.httpx_client import AsyncOAuth2Client
    redirect = "http://127.0.0.1:1/callback"
    async with AsyncOAuth2Client(CLIENT_ID, CLIENT_SECRET, redirect_uri=redirect, scope="openid email profile",
                                 code_challenge_method="S256") as oauth:
        verifier = "v" * 64
        url, _ = oauth.create_authorization_url(sso.issuer.authorization_endpoint, code_verifier=verifier,
                                                nonce="nonce-1")
        callback = await asyncio.to_thread(sso.issuer.authorize_with_http, url, "alice")
        token = await oauth.fetch_token(sso.issuer.token_endpoint, authorization_response=callback,
                                        code_verifier=verifier)
    id_token = token["id_token"]
    header, payload, signature = id_token.split(".")
    forged = f"{header}.{payload[:-4]}AAAA.{signature}"
    async with admin_channel(sso.system.admin_address, CONSOLE_TOKEN) as channel:
        stub = admin_pb2_grpc.AdminStub(channel)
        for bad, nonce, why in ((id_token, "nonce-2", "nonce"), (forged, "nonce-1", "id_token"),
                                ("not-a-jwt", "nonce-1", "id_token"), (id_token, "", "nonce")):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.ExchangeIdToken(admin_pb2.ExchangeIdTokenRequest(id_token=bad, nonce=nonce))
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED and why in refused.value.details()
        session = await stub.ExchangeIdToken(admin_pb2.ExchangeIdTokenRequest(id_token=id_token, nonce="nonce-1"))
        assert session.user == "alice@example.com" and session.secret.startswith("mr-session-")
    # Only the console's credential may trade ID tokens.
    async with admin_channel(sso.system.admin_address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await admin_pb2_grpc.AdminStub(channel).ExchangeIdToken(
                admin_pb2.ExchangeIdTokenRequest(id_token=id_token, nonce="nonce-1"))
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_an_invited_person_without_any_role_cannot_sign_in(sso: Sso) -> None:
    await sso.system.admin.PutUser(admin_pb2.User(email="ivy@partner.example"))
    sso.issuer.add_user("ivy", email="ivy@partner.example", name="Ivy")
    client, status, _, body = await sign_in_over_http(sso, "ivy")
    await client.close()
    assert status == 401 and "Sign-in failed" in body


async def test_callbacks_that_cost_nothing_do_not_lock_anyone_out(sso: Sso, tmp_path) -> None:
    """Bare callbacks and IdP errors are not counted: otherwise anyone could lock out everyone
    behind the same proxy. A console with a limit of 2 shows it."""
    console = await start_console(sso.system, tmp_path, "--signin-limit", "2", name="console-limit-2",
                                  env={"MEGAROUTER_OIDC_CLIENT_SECRET": CLIENT_SECRET})
    client = ConsoleClient.open(console_url(console))
    try:
        for _ in range(5):
            status, _ = await client.page("/signin/callback?code=x&state=y")
            assert status == 400
        response = await client.sign_in("mr-admin-test-token-0123456789abcdef")
        assert response.status == 303
    finally:
        await client.close()
        await console.stop()
