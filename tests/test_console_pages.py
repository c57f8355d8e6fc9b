"""The console's forms against real processes, over HTTP: the YAML editor (validate, diff,
apply, errors inline), budgets, the org tree and role bindings, usage filters and CSV.
Every change is checked where it lands — in the control plane — not only on the page."""

from __future__ import annotations

import html as htmllib
import re
from collections.abc import AsyncIterator

import openai
import pytest

from megarouter.v1 import admin_pb2
from tests.conftest import ADMIN_TOKEN, API_KEY, ORG_TREE, System, build_system
from tests.console_harness import ConsoleClient, console_url, start_console
from tests.harness import Service, eventually

OPERATOR = "mr-admin-test-console-pages-operator-0"


async def _seed(system: System) -> int:
    await system.admin.CreateAdminToken(admin_pb2.CreateAdminTokenRequest(name="ops", secret=OPERATOR))
    return (await system.admin.PutRoleBinding(admin_pb2.RoleBinding(name="ops", token="ops",
                                                                    role="operator"))).revision


@pytest.fixture(scope="module")
async def setup(tmp_path_factory) -> AsyncIterator[tuple[System, Service]]:
    tmp = tmp_path_factory.mktemp("console-pages")
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
async def admin_session(setup) -> AsyncIterator[ConsoleClient]:
    client = ConsoleClient.open(console_url(setup[1]))
    await client.sign_in(ADMIN_TOKEN)
    try:
        yield client
    finally:
        await client.close()


async def test_the_yaml_editor_previews_a_diff_shows_errors_inline_and_applies(setup, admin_session) -> None:
    system, _ = setup
    status, page = await admin_session.page("/routes/edit?route=chat")
    assert status == 200 and "name: chat" in page
    edited = ("route:\n  name: chat\n  description: edited in the console\n"
              "  tiers:\n  - models: [demo-small]\n  - models: [demo-medium]\n")
    status, page, _ = await admin_session.post("/routes/edit", {"text": edited, "action": "preview"},
                                               csrf_from="/routes/edit")
    assert status == 200
    diff = htmllib.unescape(re.sub(r"<[^>]+>", "", page.split('id="diff">', 1)[1].split("</pre>", 1)[0]))
    assert "+  description: edited in the console" in diff and "+    - demo-medium" in diff
    changed = [line for line in diff.splitlines() if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    assert not [line for line in changed if "retry" in line or "weights" in line], changed  # defaults: no change
    assert (await system.admin.GetRoute(admin_pb2.GetRequest(name="chat"))).description == ""  # nothing written yet

    # The control plane's validation — in the preview already, and at apply — naming the field.
    bad = edited.replace("description: edited in the console", "quality_floor: 9")
    for action in ("preview", "apply"):
        status, page, _ = await admin_session.post("/routes/edit", {"text": bad, "action": action},
                                                   csrf_from="/routes/edit")
        assert status == 400 and 'id="yaml-error"' in page and "quality_floor" in page, action
    # References are checked by the control plane at apply (a model that does not exist).
    dangling = edited.replace("[demo-medium]", "[no-such-model]")
    status, page, _ = await admin_session.post("/routes/edit", {"text": dangling, "action": "apply"},
                                               csrf_from="/routes/edit")
    assert status == 400 and "no-such-model" in page.split('id="yaml-error">', 1)[1]
    status, page, _ = await admin_session.post("/routes/edit", {"text": "route: [unclosed", "action": "preview"},
                                               csrf_from="/routes/edit")
    assert status == 400 and 'id="yaml-error"' in page

    status, page, _ = await admin_session.post("/routes/edit", {"text": edited, "action": "apply"},
                                               csrf_from="/routes/edit")
    assert status == 200 and "route chat: configured" in page
    route = await system.admin.GetRoute(admin_pb2.GetRequest(name="chat"))
    assert route.description == "edited in the console" and [list(t.models) for t in route.tiers] == [
        ["demo-small"], ["demo-medium"]]


async def test_budgets_are_created_and_edited_with_errors_named(setup, admin_session) -> None:
    system, _ = setup
    form = {"name": "team-b-cap", "node": "team-b", "key": "", "window": "monthly", "unit": "usd",
            "limit": "12.5", "action": "pause"}
    status, _, location = await admin_session.post("/budgets", form, csrf_from="/budgets")
    assert (status, location) == (303, "/budgets")
    assert (await system.admin.GetBudget(admin_pb2.GetRequest(name="team-b-cap"))).limit == 12.5
    status, page = await admin_session.page("/budgets?edit=team-b-cap")
    assert 'value="12.5"' in page
    status, page, _ = await admin_session.post("/budgets", {**form, "key": "test"}, csrf_from="/budgets")
    assert status == 400 and "exactly one of node" in page
    status, page, _ = await admin_session.post("/budgets", {**form, "limit": "lots"}, csrf_from="/budgets")
    assert status == 400 and "limit" in page


async def test_the_org_page_adds_nodes_invites_people_and_grants_and_removes_roles(setup, admin_session) -> None:
    system, _ = setup
    status, _, _ = await admin_session.post("/org/nodes", {"name": "team-c", "kind": "team", "parent": "acme",
                                                           "display_name": "Team C"}, csrf_from="/org")
    assert status == 303
    assert (await system.admin.GetNode(admin_pb2.GetRequest(name="team-c"))).display_name == "Team C"
    status, page, _ = await admin_session.post("/org/nodes", {"name": "Bad Name", "kind": "team", "parent": "acme"},
                                               csrf_from="/org")
    assert status == 400 and "name" in page

    status, _, _ = await admin_session.post("/org/people", {"email": "Erin@Example.com", "display_name": "Erin",
                                                            "role": "viewer", "scope": "team-c"}, csrf_from="/org")
    assert status == 303
    status, page = await admin_session.page("/org")
    assert "erin@example.com" in page and "viewer on team-c" in page

    status, _, _ = await admin_session.post("/org/bindings", {"subject": "token:ops", "role": "billing",
                                                              "scope": "team-a"}, csrf_from="/org")
    assert status == 303
    bindings = {b.name: b for b in (await system.admin.ListRoleBindings(admin_pb2.ListRequest())).items}
    assert ("ops", "billing", "team-a") in {(b.token, b.role, b.scope) for b in bindings.values()}
    granted = next(name for name, b in bindings.items() if b.token == "ops" and b.role == "billing")
    status, _, _ = await admin_session.post(f"/org/bindings/{granted}/delete", {}, csrf_from="/org")
    assert status == 303
    names = {b.name for b in (await system.admin.ListRoleBindings(admin_pb2.ListRequest())).items}
    assert granted not in names


async def test_an_operator_cannot_grant_roles(setup) -> None:
    """The page hides the forms, and the control plane refuses the POST anyway."""
    client = ConsoleClient.open(console_url(setup[1]))
    try:
        await client.sign_in(OPERATOR)
        status, page = await client.page("/org")
        assert status == 200 and 'id="bindings"' not in page
        status, page, _ = await client.post("/org/bindings", {"subject": "token:ops", "role": "admin", "scope": ""},
                                            csrf_from="/org")
        assert status == 403 and "access.admin" in page
        bindings = (await setup[0].admin.ListRoleBindings(admin_pb2.ListRequest())).items
        assert [(b.role, b.scope) for b in bindings if b.token == "ops"] == [("operator", "")]
    finally:
        await client.close()


async def test_usage_filters_and_csv(setup, admin_session) -> None:
    system, _ = setup
    client = openai.AsyncOpenAI(base_url=system.base_url(), api_key=API_KEY, max_retries=0)
    await client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}])

    async def counted() -> bool:
        return "test" in (await admin_session.page("/usage?group_by=key"))[1].split('id="usage-table"', 1)[1]
    await eventually(counted, timeout=20, what="the request in the usage table")
    status, page = await admin_session.page("/usage?since=last-week")
    assert status == 400 and "since" in page.split('id="usage-error">', 1)[1].split("<", 1)[0]
    async with admin_session.http.get(admin_session.url + "/usage.csv?group_by=key&group_by=model") as response:
        assert response.status == 200 and response.content_type == "text/csv"
        assert "attachment" in response.headers["Content-Disposition"]
        lines = (await response.text()).strip().splitlines()
    assert lines[0].startswith("key,model,requests,cost_usd,errors")
    assert any(line.startswith("test,demo-small,") for line in lines[1:])
    async with admin_session.http.get(admin_session.url + "/usage/series.json?metric=nope") as response:
        assert response.status == 400 and (await response.json())["error"]["param"] == "metric"


async def test_the_yaml_editor_refuses_aliases_oversized_text_and_people_without_config_write(
        setup, admin_session) -> None:
    bomb = "a: &a [x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\nroute: [*b, *b, *b, *b]\n"
    status, page, _ = await admin_session.post("/routes/edit", {"text": bomb, "action": "preview"},
                                               csrf_from="/routes/edit")
    assert status == 400 and "aliases" in page
    status, page, _ = await admin_session.post("/routes/edit", {"text": "#" * 300_000, "action": "preview"},
                                               csrf_from="/routes/edit")
    assert status == 413
    system, _ = setup
    await system.admin.CreateAdminToken(admin_pb2.CreateAdminTokenRequest(name="reader",
                                                                          secret="mr-admin-test-pages-reader-00000"))
    await system.admin.PutRoleBinding(admin_pb2.RoleBinding(name="reader", token="reader", role="viewer"))
    reader = ConsoleClient.open(console_url(setup[1]))
    try:
        await reader.sign_in("mr-admin-test-pages-reader-00000")
        assert (await reader.page("/routes/edit"))[0] == 403
        status, _, _ = await reader.post("/routes/edit", {"text": "route: {name: x}", "action": "preview"},
                                         csrf_from="/routes")
        assert status == 403
    finally:
        await reader.close()


async def test_a_budget_limit_that_json_cannot_store_is_refused(setup, admin_session) -> None:
    form = {"name": "infinite", "node": "team-a", "window": "monthly", "unit": "tokens", "limit": "1e999",
            "action": "pause"}
    status, page, _ = await admin_session.post("/budgets", form, csrf_from="/budgets")
    assert status == 400 and "limit" in page and "finite" in page
    assert (await admin_session.page("/budgets"))[0] == 200  # the store and the page still work


async def test_inviting_an_existing_person_keeps_them_disabled_and_bindings_never_collide(
        setup, admin_session) -> None:
    system, _ = setup
    await system.admin.PutUser(admin_pb2.User(email="gil@example.com", display_name="Gil", disabled=True))
    for email in ("gil@example.com", "gil@partner.example"):
        status, _, _ = await admin_session.post("/org/people", {"email": email, "role": "viewer", "scope": "team-a"},
                                                csrf_from="/org")
        assert status == 303
    gil = await system.admin.GetUser(admin_pb2.GetRequest(name="gil@example.com"))
    assert gil.disabled and gil.display_name == "Gil"
    holders = {b.user for b in (await system.admin.ListRoleBindings(admin_pb2.ListRequest())).items
               if b.role == "viewer" and b.scope == "team-a"}
    assert {"gil@example.com", "gil@partner.example"} <= holders  # two bindings, not one re-pointed
