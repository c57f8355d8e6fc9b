"""People and sessions in the admin API: users, token sessions, the console's credential."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import grpc
import pytest
from google.protobuf import message_factory

from controlplane import identity, rbac
from controlplane.store import open_store
from megarouter.admin_client import admin_channel
from megarouter.v1 import admin_pb2, admin_pb2_grpc, routing_pb2
from tests.conftest import CONSOLE_TOKEN, start_controlplane
from tests.harness import Service

VIEWER_A = "mr-admin-test-viewer-team-a-000000000"


@pytest.fixture(scope="module")
async def cp(tmp_path_factory) -> AsyncIterator[Service]:
    service = await start_controlplane(tmp_path_factory.mktemp("people"))
    try:
        async with admin_channel(f"127.0.0.1:{service.port}") as channel:
            root = admin_pb2_grpc.AdminStub(channel)
            for node in (routing_pb2.OrgNode(name="acme", kind="org"),
                         routing_pb2.OrgNode(name="team-a", kind="team", parent="acme"),
                         routing_pb2.OrgNode(name="team-b", kind="team", parent="acme")):
                await root.PutNode(node)
            await root.CreateApiKey(admin_pb2.CreateApiKeyRequest(name="key-a", node="team-a"))
            await root.CreateApiKey(admin_pb2.CreateApiKeyRequest(name="key-b", node="team-b"))
            await root.CreateAdminToken(admin_pb2.CreateAdminTokenRequest(name="viewer-a", secret=VIEWER_A))
            await root.PutRoleBinding(admin_pb2.RoleBinding(name="viewer-a", token="viewer-a", role="viewer",
                                                            scope="team-a"))
        yield service
    finally:
        await service.stop()


def stub(channel) -> admin_pb2_grpc.AdminStub:
    return admin_pb2_grpc.AdminStub(channel)


async def code_of(call) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


# What the console's own credential may do: nothing but trade ID tokens (and ask who it is).
CONSOLE_ALLOWED = {
    "WhoAmI": grpc.StatusCode.OK,
    "GetSignInOptions": grpc.StatusCode.OK,
    # Reached the handler: no SSO configured on this control plane.
    "ExchangeIdToken": grpc.StatusCode.FAILED_PRECONDITION,
    # Reached the handler, which refuses a service credential / a call without a session.
    "CreateSession": grpc.StatusCode.PERMISSION_DENIED,
    "EndSession": grpc.StatusCode.FAILED_PRECONDITION,
}


async def test_the_console_credential_alone_reads_and_changes_nothing(cp: Service) -> None:
    service = admin_pb2.DESCRIPTOR.services_by_name["Admin"]
    async with admin_channel(f"127.0.0.1:{cp.port}", CONSOLE_TOKEN) as channel:
        for method in service.methods:
            request_type = message_factory.GetMessageClass(method.input_type)
            call = channel.unary_unary(f"/{service.full_name}/{method.name}",
                                       request_serializer=request_type.SerializeToString,
                                       response_deserializer=lambda data: data)
            got = await code_of(call(request_type()))
            want = CONSOLE_ALLOWED.get(method.name, grpc.StatusCode.PERMISSION_DENIED)
            assert got == want, (method.name, got)
    assert len(list(service.methods)) > 50  # the loop covered the whole API


async def test_a_token_session_has_the_tokens_rights_and_ends_at_sign_out(cp: Service) -> None:
    address = f"127.0.0.1:{cp.port}"
    async with admin_channel(address, VIEWER_A) as channel:
        session = await stub(channel).CreateSession(admin_pb2.CreateSessionRequest(ttl_s=600))
    assert session.secret.startswith("mr-session-") and session.token == "viewer-a" and not session.user
    async with admin_channel(address, session.secret) as channel:
        me = await stub(channel).WhoAmI(admin_pb2.WhoAmIRequest())
        assert me.token == "viewer-a" and me.session_expires_at_unix_ms == session.expires_at_unix_ms
        keys = await stub(channel).ListApiKeys(admin_pb2.ListRequest())
        assert [k.name for k in keys.items] == ["key-a"]  # the token's scope, not more
        assert await code_of(stub(channel).GetApiKey(admin_pb2.GetRequest(name="key-b"))) == \
            grpc.StatusCode.PERMISSION_DENIED
        # A session cannot mint another (longer) one.
        assert await code_of(stub(channel).CreateSession(admin_pb2.CreateSessionRequest())) == \
            grpc.StatusCode.FAILED_PRECONDITION
        await stub(channel).EndSession(admin_pb2.EndSessionRequest())
        assert await code_of(stub(channel).WhoAmI(admin_pb2.WhoAmIRequest())) == grpc.StatusCode.UNAUTHENTICATED


async def test_session_lifetime_is_bounded(cp: Service) -> None:
    async with admin_channel(f"127.0.0.1:{cp.port}", VIEWER_A) as channel:
        for ttl in (-1, 30, identity.MAX_SESSION_S + 1):
            assert await code_of(stub(channel).CreateSession(admin_pb2.CreateSessionRequest(ttl_s=ttl))) == \
                grpc.StatusCode.INVALID_ARGUMENT, ttl
        default = await stub(channel).CreateSession(admin_pb2.CreateSessionRequest())
        assert default.idle_timeout_s == identity.IDLE_TIMEOUT_S


async def test_deleting_a_token_ends_its_sessions_even_if_it_is_recreated(cp: Service) -> None:
    address = f"127.0.0.1:{cp.port}"
    secret = "mr-admin-test-short-lived-0000000000"
    async with admin_channel(address) as channel:
        await stub(channel).CreateAdminToken(admin_pb2.CreateAdminTokenRequest(name="short-lived", secret=secret))
        await stub(channel).PutRoleBinding(admin_pb2.RoleBinding(name="short-lived", token="short-lived",
                                                                 role="viewer"))
    async with admin_channel(address, secret) as channel:
        session = await stub(channel).CreateSession(admin_pb2.CreateSessionRequest())
    async with admin_channel(address) as channel:
        await stub(channel).DeleteRoleBinding(admin_pb2.DeleteRequest(name="short-lived"))
        await stub(channel).DeleteAdminToken(admin_pb2.DeleteRequest(name="short-lived"))
        await stub(channel).CreateAdminToken(admin_pb2.CreateAdminTokenRequest(name="short-lived", secret=secret))
    async with admin_channel(address, session.secret) as channel:
        assert await code_of(stub(channel).WhoAmI(admin_pb2.WhoAmIRequest())) == grpc.StatusCode.UNAUTHENTICATED


async def test_users_are_validated_bound_and_block_their_deletion_while_bound(cp: Service) -> None:
    async with admin_channel(f"127.0.0.1:{cp.port}") as channel:
        admin = stub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await admin.PutUser(admin_pb2.User(email="not-an-email"))
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "email" in bad.value.details()
        created = await admin.PutUser(admin_pb2.User(email="Ann@Example.com", display_name="Ann"))
        assert created.created
        assert (await admin.GetUser(admin_pb2.GetRequest(name="ann@example.com"))).display_name == "Ann"
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await admin.PutRoleBinding(admin_pb2.RoleBinding(name="bob-viewer", user="bob@example.com",
                                                             role="viewer"))
        assert unknown.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "bob@example.com" in unknown.value.details()
        with pytest.raises(grpc.aio.AioRpcError) as both:
            await admin.PutRoleBinding(admin_pb2.RoleBinding(name="both", user="ann@example.com", token="viewer-a",
                                                             role="viewer"))
        assert both.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "exactly one" in both.value.details()
        with pytest.raises(grpc.aio.AioRpcError) as service_role:
            await admin.PutRoleBinding(admin_pb2.RoleBinding(name="ann-console", user="ann@example.com",
                                                             role="console"))
        assert service_role.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        await admin.PutRoleBinding(admin_pb2.RoleBinding(name="ann-viewer", user="ann@example.com", role="viewer",
                                                         scope="team-b"))
        listed = await admin.ListRoleBindings(admin_pb2.ListRequest())
        assert any(b.user == "ann@example.com" and b.scope == "team-b" for b in listed.items)
        with pytest.raises(grpc.aio.AioRpcError) as blocked:
            await admin.DeleteUser(admin_pb2.DeleteRequest(name="ann@example.com"))
        assert blocked.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "ann-viewer" in blocked.value.details()
        await admin.DeleteRoleBinding(admin_pb2.DeleteRequest(name="ann-viewer"))
        await admin.DeleteUser(admin_pb2.DeleteRequest(name="ann@example.com"))
        assert [u.email for u in (await admin.ListUsers(admin_pb2.ListRequest())).items] == []


async def test_sessions_end_when_idle_or_past_their_lifetime(tmp_path) -> None:
    """The directory's clock is injected: no waiting for a time-out."""
    store = await open_store(str(tmp_path / "store"))
    try:
        now = [1_000_000.0]
        directory = rbac.AccessDirectory(store, clock=lambda: now[0])
        await rbac.bootstrap(store, "mr-admin-test-idle-0000000000000000")
        token_hash = rbac.TOKENS.decode(await store.get(rbac.TOKENS.key("bootstrap"))).token_hash
        secret, _ = await rbac.start_session(store, token="bootstrap", ttl_s=3600, idle_timeout_s=300,
                                             subject_check=token_hash, clock=lambda: now[0])
        bearer = f"Bearer {secret}"
        assert (await directory.authenticate(bearer)).token == "bootstrap"
        now[0] += 200          # used within the idle time-out: touched (200 s > the touch interval)
        assert await directory.authenticate(bearer) is not None
        now[0] += 290          # 490 s after start, 290 s after the last use: still alive
        assert await directory.authenticate(bearer) is not None
        now[0] += 301          # idle too long
        assert await directory.authenticate(bearer) is None
        assert await directory.authenticate(bearer) is None  # and gone from the store
        assert (await store.list(identity.SESSIONS.prefix))[0] == []

        secret, _ = await rbac.start_session(store, token="bootstrap", ttl_s=600, idle_timeout_s=300,
                                             subject_check=token_hash, clock=lambda: now[0])
        for _ in range(3):     # kept busy, it still ends at its absolute lifetime
            now[0] += 200
            result = await directory.authenticate(f"Bearer {secret}")
        assert result is None
    finally:
        await store.close()


async def test_megarouterctl_manages_users(cp: Service) -> None:
    import asyncio
    import os
    import subprocess
    import sys

    def ctl(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "megarouter.ctl", "--server", f"127.0.0.1:{cp.port}", *args],
                              capture_output=True, text=True, timeout=60, env=os.environ.copy())
    added = await asyncio.to_thread(ctl, "users", "add", "Dana@Example.com", "--name", "Dana", "--role", "viewer",
                                    "--scope", "team-a")
    assert added.returncode == 0, added.stderr
    assert added.stdout.strip() == "user/dana@example.com created as viewer over team-a"
    listed = await asyncio.to_thread(ctl, "users", "list", "-o", "json")
    rows = {row["email"]: row for row in json.loads(listed.stdout)}
    assert rows["dana@example.com"]["roles"] == ["viewer@team-a"] and rows["dana@example.com"]["status"] == "active"
    disabled = await asyncio.to_thread(ctl, "users", "disable", "dana@example.com")
    assert disabled.returncode == 0 and "disabled" in disabled.stdout
    listed = await asyncio.to_thread(ctl, "users", "list", "-o", "json")
    assert {row["email"]: row for row in json.loads(listed.stdout)}["dana@example.com"]["status"] == "disabled"
    bad = await asyncio.to_thread(ctl, "users", "add", "nope")
    assert bad.returncode != 0 and "email" in bad.stderr


async def test_a_binding_cannot_be_re_pointed_at_someone_else_by_reusing_its_name(cp: Service) -> None:
    async with admin_channel(f"127.0.0.1:{cp.port}") as channel:
        admin = stub(channel)
        await admin.PutUser(admin_pb2.User(email="hal@example.com"))
        await admin.PutRoleBinding(admin_pb2.RoleBinding(name="shared-name", user="hal@example.com", role="viewer"))
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await admin.PutRoleBinding(admin_pb2.RoleBinding(name="shared-name", token="viewer-a", role="viewer"))
        assert refused.value.code() == grpc.StatusCode.ALREADY_EXISTS and "hal@example.com" in refused.value.details()
        # Changing the role or scope of the same holder is an update, as before.
        await admin.PutRoleBinding(admin_pb2.RoleBinding(name="shared-name", user="hal@example.com", role="billing"))
        await admin.DeleteRoleBinding(admin_pb2.DeleteRequest(name="shared-name"))
        await admin.DeleteUser(admin_pb2.DeleteRequest(name="hal@example.com"))


async def test_api_keys_cannot_expire_beyond_the_calendar(cp: Service) -> None:
    async with admin_channel(f"127.0.0.1:{cp.port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub(channel).CreateApiKey(admin_pb2.CreateApiKeyRequest(
                name="forever", node="team-a", expires_at_unix_ms=10 ** 15))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "expires_at_unix_ms" in refused.value.details()
