"""Operator access control: the allow/deny matrix for each role, and scopes."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from megarouter.admin_client import admin_channel
from megarouter.v1 import admin_pb2, admin_pb2_grpc, routing_pb2
from tests.conftest import start_controlplane
from tests.harness import Service


@pytest.fixture(scope="module")
async def cp(tmp_path_factory) -> AsyncIterator[Service]:
    service = await start_controlplane(tmp_path_factory.mktemp("rbac"))
    try:
        async with admin_channel(f"127.0.0.1:{service.port}") as channel:
            root = admin_pb2_grpc.AdminStub(channel)
            for node in (routing_pb2.OrgNode(name="acme", kind="org"),
                         routing_pb2.OrgNode(name="team-a", kind="team", parent="acme"),
                         routing_pb2.OrgNode(name="team-a-x", kind="project", parent="team-a"),
                         routing_pb2.OrgNode(name="team-b", kind="team", parent="acme")):
                await root.PutNode(node)
            await root.CreateApiKey(admin_pb2.CreateApiKeyRequest(name="key-a", node="team-a-x"))
            await root.CreateApiKey(admin_pb2.CreateApiKeyRequest(name="key-b", node="team-b"))
            for role, scope in (("admin", ""), ("operator", ""), ("viewer", ""), ("billing", ""),
                                ("viewer", "team-a"), ("operator", "team-a"), ("developer", "team-a")):
                name = f"{role}-{scope or 'all'}"
                await root.CreateAdminToken(admin_pb2.CreateAdminTokenRequest(name=name, secret=_secret(name)))
                await root.PutRoleBinding(admin_pb2.RoleBinding(name=name, token=name, role=role, scope=scope))
            await root.CreateAdminToken(admin_pb2.CreateAdminTokenRequest(name="nobody", secret=_secret("nobody")))
        yield service
    finally:
        await service.stop()


def _secret(name: str) -> str:
    return f"mr-admin-test-{name}-000000000000"


async def _call(cp: Service, token: str | None, method: str, request) -> grpc.StatusCode:
    secret = _secret(token) if token else "mr-admin-not-a-real-token-0000000"
    async with admin_channel(f"127.0.0.1:{cp.port}", secret) as channel:
        try:
            await getattr(admin_pb2_grpc.AdminStub(channel), method)(request)
        except grpc.aio.AioRpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


OK, DENIED = grpc.StatusCode.OK, grpc.StatusCode.PERMISSION_DENIED
LIST = admin_pb2.ListRequest()
# method, request, and the expected result for: admin, operator, viewer, billing (all global)
MATRIX = [
    ("ListRoutes", LIST, (OK, OK, OK, OK)),
    ("PutModel", routing_pb2.Model(name="m-rbac", context_window=10), (OK, OK, DENIED, DENIED)),
    ("ListApiKeys", LIST, (OK, OK, OK, OK)),
    ("CreateApiKey", admin_pb2.CreateApiKeyRequest(name="k-{role}", node="team-b"), (OK, OK, DENIED, DENIED)),
    ("PutNode", routing_pb2.OrgNode(name="n-{role}", kind="team", parent="acme"), (OK, OK, DENIED, DENIED)),
    ("ListAdminTokens", LIST, (OK, DENIED, DENIED, DENIED)),
    ("PutDefaults", routing_pb2.Defaults(), (OK, OK, DENIED, DENIED)),
    ("GetFleetHealth", admin_pb2.GetFleetHealthRequest(), (OK, OK, OK, OK)),
]


@pytest.mark.parametrize(("method", "request_template", "expected"), MATRIX, ids=[m[0] for m in MATRIX])
async def test_role_matrix(cp: Service, method: str, request_template, expected) -> None:
    for role, want in zip(("admin", "operator", "viewer", "billing"), expected, strict=True):
        request = type(request_template)()
        request.CopyFrom(request_template)
        if hasattr(request, "name") and "{role}" in request.name:
            request.name = request.name.format(role=role)
        assert await _call(cp, f"{role}-all", method, request) == want, (role, method)


async def test_denials_name_the_missing_permission(cp: Service) -> None:
    async with admin_channel(f"127.0.0.1:{cp.port}", _secret("viewer-all")) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await admin_pb2_grpc.AdminStub(channel).PutRoute(routing_pb2.Route(name="x"))
    assert caught.value.code() == DENIED
    assert "'config.write'" in caught.value.details() and "viewer-all" in caught.value.details()


async def test_missing_or_unknown_token_is_unauthenticated(cp: Service) -> None:
    assert await _call(cp, None, "ListRoutes", LIST) == grpc.StatusCode.UNAUTHENTICATED
    async with grpc.aio.insecure_channel(f"127.0.0.1:{cp.port}") as channel:  # no token at all
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await admin_pb2_grpc.AdminStub(channel).ListRoutes(LIST)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # A token with no role binding can authenticate but do nothing.
    assert await _call(cp, "nobody", "ListRoutes", LIST) == DENIED


async def test_viewer_of_team_a_sees_only_team_a(cp: Service) -> None:
    async with admin_channel(f"127.0.0.1:{cp.port}", _secret("viewer-team-a")) as channel:
        stub = admin_pb2_grpc.AdminStub(channel)
        keys = await stub.ListApiKeys(LIST)
        assert [k.name for k in keys.items] == ["key-a"]  # in team-a's subtree; key-b is not
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetApiKey(admin_pb2.GetRequest(name="key-b"))
        assert caught.value.code() == DENIED
        nodes = await stub.ListNodes(LIST)
        assert {n.name for n in nodes.items} == {"team-a", "team-a-x"}
        # System-wide configuration needs a global binding.
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ListRoutes(LIST)
        assert caught.value.code() == DENIED
        who = await stub.WhoAmI(admin_pb2.WhoAmIRequest())
        assert who.token == "viewer-team-a" and "keys.read" in who.permissions


async def test_scoped_operator_manages_only_its_subtree(cp: Service) -> None:
    assert await _call(cp, "operator-team-a", "CreateApiKey",
                       admin_pb2.CreateApiKeyRequest(name="key-a2", node="team-a")) == OK
    assert await _call(cp, "operator-team-a", "CreateApiKey",
                       admin_pb2.CreateApiKeyRequest(name="key-b2", node="team-b")) == DENIED
    assert await _call(cp, "operator-team-a", "PutNode",
                       routing_pb2.OrgNode(name="team-a-y", kind="project", parent="team-a")) == OK
    # Moving team-a's project under team-b is a write in team-b: denied.
    assert await _call(cp, "operator-team-a", "PutNode",
                       routing_pb2.OrgNode(name="team-a-y", kind="project", parent="team-b")) == DENIED
    assert await _call(cp, "operator-team-a", "DeleteApiKey", admin_pb2.DeleteRequest(name="key-b")) == DENIED
    assert await _call(cp, "operator-team-a", "DeleteApiKey", admin_pb2.DeleteRequest(name="key-a2")) == OK


async def test_a_developer_manages_keys_in_its_subtree_and_nothing_else(cp: Service) -> None:
    developer = "developer-team-a"
    assert await _call(cp, developer, "CreateApiKey", admin_pb2.CreateApiKeyRequest(name="key-dev",
                                                                                   node="team-a-x")) == OK
    assert await _call(cp, developer, "CreateApiKey", admin_pb2.CreateApiKeyRequest(name="key-dev-b",
                                                                                   node="team-b")) == DENIED
    assert await _call(cp, developer, "DeleteApiKey", admin_pb2.DeleteRequest(name="key-b")) == DENIED
    assert await _call(cp, developer, "DeleteApiKey", admin_pb2.DeleteRequest(name="key-dev")) == OK
    for method, request in (
            ("PutNode", routing_pb2.OrgNode(name="team-a-z", kind="project", parent="team-a")),
            ("PutBudget", routing_pb2.Budget(name="b-dev", node="team-a", unit="usd", limit=1, window="monthly")),
            ("PutRoleBinding", admin_pb2.RoleBinding(name="self-admin", token=developer, role="admin")),
            ("PutRoute", routing_pb2.Route(name="r-dev", tiers=[routing_pb2.Tier(models=["m"])])),
            ("ListAdminTokens", LIST)):
        assert await _call(cp, developer, method, request) == DENIED, method
    async with admin_channel(f"127.0.0.1:{cp.port}", _secret(developer)) as channel:
        stub = admin_pb2_grpc.AdminStub(channel)
        assert "key-b" not in [k.name for k in (await stub.ListApiKeys(LIST)).items]
        await stub.QueryUsage(admin_pb2.QueryUsageRequest(group_by=["node"]))   # its subtree's usage: allowed


async def test_bootstrap_token_is_never_logged(cp: Service) -> None:
    import os

    assert os.environ["MEGAROUTER_ADMIN_TOKEN"] not in cp.log_text()


async def test_ctl_tokens_and_whoami(cp: Service) -> None:
    import asyncio
    import subprocess
    import sys

    def ctl(*args: str, token: str | None = None) -> subprocess.CompletedProcess:
        env = {**__import__("os").environ}
        if token:
            env["MEGAROUTER_ADMIN_TOKEN"] = token
        return subprocess.run([sys.executable, "-m", "megarouter.ctl", "--server", f"127.0.0.1:{cp.port}", *args],
                              capture_output=True, text=True, timeout=60, env=env)

    created = await asyncio.to_thread(ctl, "tokens", "create", "ci-reader", "--role", "viewer", "--scope", "team-b")
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip().splitlines()[-1]
    who = await asyncio.to_thread(ctl, "whoami", token=secret)
    assert "token: ci-reader" in who.stdout and "viewer over team-b" in who.stdout
    denied = await asyncio.to_thread(ctl, "get", "routes", token=secret)
    assert denied.returncode == 1 and "PERMISSION_DENIED" in denied.stderr and "config.read" in denied.stderr
    listed = await asyncio.to_thread(ctl, "tokens", "list")
    assert "viewer@team-b" in listed.stdout
