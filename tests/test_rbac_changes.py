"""Scope checks on both sides of every change.

A token scoped to team-a may create, replace and delete what lives in team-a's subtree —
and nothing else: replacing a resource by name is a change where it was as well as where it
lands, and a scope root can be edited but not moved, re-kinded or deleted by a token scoped
to it. The matrix covers replace-by-name and move for every scoped resource type; each row
is checked against a freshly reset tree, and a denied write must leave the store unchanged.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import grpc
import pytest

from megarouter.admin_client import admin_channel
from megarouter.v1 import admin_pb2, admin_pb2_grpc, routing_pb2
from tests.conftest import start_controlplane
from tests.harness import Service

OK, DENIED = grpc.StatusCode.OK, grpc.StatusCode.PERMISSION_DENIED
TOKENS = {  # name -> (role, scope)
    "operator-a": ("operator", "team-a"),
    "billing-a": ("billing", "team-a"),
    "admin-all": ("admin", ""),
}


def _secret(name: str) -> str:
    return f"mr-admin-changes-{name}-0000000000"


def _node(name: str, kind: str, parent: str = "", **fields) -> routing_pb2.OrgNode:
    return routing_pb2.OrgNode(name=name, kind=kind, parent=parent, **fields)


def _budget(name: str, **scope) -> routing_pb2.Budget:
    return routing_pb2.Budget(name=name, window="daily", unit="usd", limit=5, action="pause", **scope)


TREE = [_node("acme", "org"), _node("other-org", "org"), _node("team-a", "team", "acme"),
        _node("team-b", "team", "acme"), _node("proj-a", "project", "team-a"), _node("proj-b", "project", "team-b")]
BUDGETS = [_budget("a-budget", node="team-a"), _budget("b-budget", node="team-b"), _budget("org-budget", node="acme"),
           _budget("key-b-budget", key="key-b")]


async def _reset(root: admin_pb2_grpc.AdminStub) -> None:
    """The same tree, keys and budgets before every row."""
    for budget in (await root.ListBudgets(admin_pb2.ListRequest())).items:
        await root.DeleteBudget(admin_pb2.DeleteRequest(name=budget.name))
    for key in (await root.ListApiKeys(admin_pb2.ListRequest())).items:
        await root.DeleteApiKey(admin_pb2.DeleteRequest(name=key.name))
    for node in TREE:
        await root.PutNode(node)
    known = {node.name for node in TREE}
    for node in sorted((await root.ListNodes(admin_pb2.ListRequest())).items, key=lambda n: -len(n.parent)):
        if node.name not in known:
            await root.DeleteNode(admin_pb2.DeleteRequest(name=node.name))
    await root.CreateApiKey(admin_pb2.CreateApiKeyRequest(name="key-a", node="proj-a"))
    await root.CreateApiKey(admin_pb2.CreateApiKeyRequest(name="key-b", node="proj-b"))
    for budget in BUDGETS:
        await root.PutBudget(budget)


@pytest.fixture(scope="module")
async def cp(tmp_path_factory) -> AsyncIterator[Service]:
    service = await start_controlplane(tmp_path_factory.mktemp("rbac-changes"))
    try:
        async with admin_channel(f"127.0.0.1:{service.port}") as channel:
            root = admin_pb2_grpc.AdminStub(channel)
            await _reset(root)
            for name, (role, scope) in TOKENS.items():
                await root.CreateAdminToken(admin_pb2.CreateAdminTokenRequest(name=name, secret=_secret(name)))
                await root.PutRoleBinding(admin_pb2.RoleBinding(name=name, token=name, role=role, scope=scope))
        yield service
    finally:
        await service.stop()


Call = Callable[[admin_pb2_grpc.AdminStub], object]
# (description, token, call, expected)
MATRIX: list[tuple[str, str, Call, grpc.StatusCode]] = [
    # budgets: replace-by-name and move, both directions
    ("billing-a creates a budget in team-a", "billing-a",
     lambda a: a.PutBudget(_budget("new-a", node="proj-a")), OK),
    ("billing-a edits its own budget in place", "billing-a",
     lambda a: a.PutBudget(routing_pb2.Budget(name="a-budget", node="team-a", window="daily", unit="usd", limit=9,
                                              action="pause")), OK),
    ("billing-a overwrites team-b's budget by reusing its name", "billing-a",
     lambda a: a.PutBudget(_budget("b-budget", node="team-a")), DENIED),
    ("billing-a overwrites the org's budget by reusing its name", "billing-a",
     lambda a: a.PutBudget(_budget("org-budget", node="proj-a")), DENIED),
    ("billing-a moves its budget to team-b", "billing-a",
     lambda a: a.PutBudget(_budget("a-budget", node="team-b")), DENIED),
    ("billing-a moves its budget up to the org", "billing-a",
     lambda a: a.PutBudget(_budget("a-budget", node="acme")), DENIED),
    ("billing-a takes over a key-scoped budget of team-b", "billing-a",
     lambda a: a.PutBudget(_budget("key-b-budget", key="key-a")), DENIED),
    ("billing-a puts a budget on team-b's key", "billing-a", lambda a: a.PutBudget(_budget("sneaky", key="key-b")),
     DENIED),
    ("billing-a deletes team-b's budget", "billing-a",
     lambda a: a.DeleteBudget(admin_pb2.DeleteRequest(name="b-budget")), DENIED),
    ("billing-a deletes its own budget", "billing-a",
     lambda a: a.DeleteBudget(admin_pb2.DeleteRequest(name="a-budget")), OK),
    # nodes: a scope root may be edited, not moved, re-kinded or deleted by its own token
    ("operator-a edits team-a in place", "operator-a",
     lambda a: a.PutNode(_node("team-a", "team", "acme", display_name="Team A")), OK),
    ("operator-a moves team-a under another org", "operator-a",
     lambda a: a.PutNode(_node("team-a", "team", "other-org")), DENIED),
    ("operator-a makes team-a a root", "operator-a", lambda a: a.PutNode(_node("team-a", "org")), DENIED),
    ("operator-a re-kinds team-a", "operator-a", lambda a: a.PutNode(_node("team-a", "project", "acme")), DENIED),
    ("operator-a deletes team-a", "operator-a", lambda a: a.DeleteNode(admin_pb2.DeleteRequest(name="team-a")),
     DENIED),
    ("operator-a creates a project in team-a", "operator-a", lambda a: a.PutNode(_node("proj-a2", "project", "team-a")),
     OK),
    ("operator-a creates a root org", "operator-a", lambda a: a.PutNode(_node("rogue", "org")), DENIED),
    ("operator-a re-parents team-b under team-a (replace by name)", "operator-a",
     lambda a: a.PutNode(_node("team-b", "team", "team-a")), DENIED),
    ("operator-a pulls team-b's project into team-a", "operator-a",
     lambda a: a.PutNode(_node("proj-b", "project", "team-a")), DENIED),
    ("operator-a pushes its project into team-b", "operator-a",
     lambda a: a.PutNode(_node("proj-a", "project", "team-b")), DENIED),
    ("operator-a re-kinds its own project", "operator-a", lambda a: a.PutNode(_node("proj-a", "team", "team-a")), OK),
    # keys
    ("operator-a creates a key in team-a", "operator-a",
     lambda a: a.CreateApiKey(admin_pb2.CreateApiKeyRequest(name="key-a2", node="proj-a")), OK),
    ("operator-a creates a key in team-b", "operator-a",
     lambda a: a.CreateApiKey(admin_pb2.CreateApiKeyRequest(name="key-x", node="team-b")), DENIED),
    ("operator-a replaces team-b's key by name", "operator-a",
     lambda a: a.CreateApiKey(admin_pb2.CreateApiKeyRequest(name="key-b", node="proj-a")), DENIED),
    ("operator-a deletes team-b's key", "operator-a", lambda a: a.DeleteApiKey(admin_pb2.DeleteRequest(name="key-b")),
     DENIED),
    ("operator-a deletes its own key", "operator-a", lambda a: a.DeleteApiKey(admin_pb2.DeleteRequest(name="key-a")),
     OK),
    # tokens and role bindings: access control is the global admin's alone
    ("operator-a binds itself admin over team-a", "operator-a",
     lambda a: a.PutRoleBinding(admin_pb2.RoleBinding(name="operator-a", token="operator-a", role="admin",
                                                      scope="team-a")), DENIED),
    ("operator-a rebinds billing-a's binding by name", "operator-a",
     lambda a: a.PutRoleBinding(admin_pb2.RoleBinding(name="billing-a", token="operator-a", role="billing",
                                                      scope="team-a")), DENIED),
    ("billing-a deletes a binding", "billing-a",
     lambda a: a.DeleteRoleBinding(admin_pb2.DeleteRequest(name="admin-all")), DENIED),
    ("operator-a creates a token", "operator-a",
     lambda a: a.CreateAdminToken(admin_pb2.CreateAdminTokenRequest(name="mine")), DENIED),
    ("operator-a deletes a token", "operator-a",
     lambda a: a.DeleteAdminToken(admin_pb2.DeleteRequest(name="admin-all")), DENIED),
    ("the global admin moves team-a", "admin-all", lambda a: a.PutNode(_node("team-a", "team", "other-org")), OK),
    ("the global admin replaces team-b's budget", "admin-all",
     lambda a: a.PutBudget(_budget("b-budget", node="team-a")), OK),
]


async def _snapshot(root: admin_pb2_grpc.AdminStub) -> tuple:
    nodes = sorted((n.name, n.parent, n.kind, n.display_name)
                   for n in (await root.ListNodes(admin_pb2.ListRequest())).items)
    budgets = sorted((b.name, b.node, b.key, b.limit) for b in (await root.ListBudgets(admin_pb2.ListRequest())).items)
    keys = sorted((k.name, k.node) for k in (await root.ListApiKeys(admin_pb2.ListRequest())).items)
    bindings = sorted((b.name, b.token, b.role, b.scope)
                      for b in (await root.ListRoleBindings(admin_pb2.ListRequest())).items)
    tokens = sorted(t.name for t in (await root.ListAdminTokens(admin_pb2.ListRequest())).items)
    return nodes, budgets, keys, bindings, tokens


@pytest.mark.parametrize("description,token,call,expected", MATRIX, ids=[row[0] for row in MATRIX])
async def test_scope_checks_on_both_sides(cp: Service, description, token, call, expected) -> None:
    address = f"127.0.0.1:{cp.port}"
    async with admin_channel(address) as root_channel, admin_channel(address, _secret(token)) as channel:
        root = admin_pb2_grpc.AdminStub(root_channel)
        await _reset(root)
        before = await _snapshot(root)
        try:
            await call(admin_pb2_grpc.AdminStub(channel))
            code = OK
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
        assert code == expected, description
        if code != OK:
            assert await _snapshot(root) == before, f"{description}: a refused write changed the store"


async def test_a_scope_node_with_bindings_cannot_be_deleted(cp: Service) -> None:
    """Deleting it would leave the binding waiting for whoever re-creates the name."""
    async with admin_channel(f"127.0.0.1:{cp.port}") as channel:
        root = admin_pb2_grpc.AdminStub(channel)
        await _reset(root)
        await root.DeleteApiKey(admin_pb2.DeleteRequest(name="key-a"))
        await root.DeleteBudget(admin_pb2.DeleteRequest(name="a-budget"))
        await root.DeleteNode(admin_pb2.DeleteRequest(name="proj-a"))
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await root.DeleteNode(admin_pb2.DeleteRequest(name="team-a"))
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "role bindings" in refused.value.details() and "operator-a" in refused.value.details()
