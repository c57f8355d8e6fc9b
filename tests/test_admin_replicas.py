"""Admin writes through two control-plane replicas at once keep the configuration's rules.

Two AdminService instances on one store stand for two replicas: each has its own cache and
its own lock, so only the store's configuration guard stands between them. The interleavings
that break a reference check without it are forced with a store hook, not left to timing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import grpc
import pytest

from controlplane import rbac
from controlplane.admin import AdminService
from controlplane.discovery import ProxyRegistry, SnapshotCache
from controlplane.repository import read_all
from controlplane.store import SqliteStore
from megarouter.resources import Provider, resource_to_proto
from megarouter.v1 import admin_pb2, routing_pb2


class Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


class Context:
    """The one ServicerContext method the handlers call."""

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise Aborted(code, details)


class HookedStore(SqliteStore):
    """Runs `hook` once, just before the next commit: after the writer has read and checked
    the configuration, before its write lands."""

    hook: Callable[[], Awaitable[None]] | None = None

    async def commit(self, checks, writes):
        if self.hook is not None:
            hook, self.hook = self.hook, None
            await hook()
        return await super().commit(checks, writes)


@pytest.fixture(autouse=True)
def operator_is_admin():
    """What the auth interceptor sets for a call by an admin token."""
    binding = rbac.RoleBindingRecord(name="test-admin", token="test", role="admin", scope="")
    reset = rbac.current_principal.set(rbac.Principal(token="test", bindings=(binding,)))
    yield
    rbac.current_principal.reset(reset)


@pytest.fixture
async def store(tmp_path):
    store = await HookedStore.open(tmp_path / "store.db")
    yield store
    await store.close()


def replica(store) -> AdminService:
    return AdminService(store, SnapshotCache(), ProxyRegistry())


async def seed(admin: AdminService) -> None:
    provider = Provider(name="p", kind="openai", base_url="http://127.0.0.1:1/v1")
    await admin.PutProvider(resource_to_proto(provider, routing_pb2.Provider), Context())
    await admin.PutModel(routing_pb2.Model(name="m", context_window=1000), Context())


async def test_an_endpoint_cannot_land_on_a_provider_deleted_meanwhile(store) -> None:
    a, b = replica(store), replica(store)
    await seed(a)
    await a.contents()  # a's cache says the provider exists

    async def delete_on_b() -> None:
        await b.DeleteProvider(admin_pb2.DeleteRequest(name="p"), Context())

    store.hook = delete_on_b
    with pytest.raises(Aborted) as info:
        await a.PutEndpoint(routing_pb2.Endpoint(name="e", model="m", provider="p"), Context())
    assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "p" in info.value.details
    contents = await read_all(store)
    assert contents.endpoints == {} and contents.providers == {}


async def test_a_provider_cannot_be_deleted_under_an_endpoint_created_meanwhile(store) -> None:
    a, b = replica(store), replica(store)
    await seed(a)
    await a.contents()

    async def create_on_b() -> None:
        await b.PutEndpoint(routing_pb2.Endpoint(name="e", model="m", provider="p"), Context())

    store.hook = create_on_b
    with pytest.raises(Aborted) as info:
        await a.DeleteProvider(admin_pb2.DeleteRequest(name="p"), Context())
    assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "still used by" in info.value.details and "e" in info.value.details
    contents = await read_all(store)
    assert set(contents.endpoints) == {"e"} and set(contents.providers) == {"p"}


async def test_one_secret_cannot_become_two_keys_on_two_replicas(store) -> None:
    a, b = replica(store), replica(store)
    await a.contents()
    secret = "sk-mr-shared-secret-0123456789"

    async def create_on_b() -> None:
        await b.CreateApiKey(admin_pb2.CreateApiKeyRequest(name="kb", principal="x", secret=secret), Context())

    store.hook = create_on_b
    with pytest.raises(Aborted) as info:
        await a.CreateApiKey(admin_pb2.CreateApiKeyRequest(name="ka", principal="x", secret=secret), Context())
    assert info.value.code == grpc.StatusCode.ALREADY_EXISTS
    assert set((await read_all(store)).api_keys) == {"kb"}


async def test_versions_follow_configuration_changes_only(store) -> None:
    """The table version (config_revision) moves with configuration writes, deletes included,
    and not with anything else written to the store."""
    a = replica(store)
    await seed(a)
    before = (await read_all(store)).config_revision
    await store.put("/megarouter/ledger/x", b"spend")
    assert (await read_all(store)).config_revision == before
    deleted = await a.DeleteModel(admin_pb2.DeleteRequest(name="m"), Context())
    assert (await read_all(store)).config_revision == deleted.revision > before
