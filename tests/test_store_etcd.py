"""The store contract on a real etcd, plus what is specific to etcd: namespaces, paged lists,
URLs, unreachable endpoints and failover when a cluster member dies.

etcd comes from tests/etcd_cluster.py (the /usr/bin/etcd of the Debian package etcd-server,
installed by scripts/install_etcd.sh). Without it these tests skip, unless
MEGAROUTER_REQUIRE_ETCD=1 (set in CI) makes that a failure.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing
from typing import Any

import grpc
import pytest
from aetcd import rpc

from controlplane.store import CasConflict, Compacted, KeyValue, Store, StoreError, open_store
from controlplane.store import etcd as etcd_backend
from controlplane.store.etcd import EtcdStore, parse_etcd_url
from megarouter.grpc_tls import ClientTls

try:
    from etcd_cluster import EtcdCluster, free_port, start_or_skip
    from store_contract import StoreContract, StoreFactory, next_event, take
except ImportError:  # tests/ imported as a package
    from tests.etcd_cluster import EtcdCluster, free_port, start_or_skip
    from tests.store_contract import StoreContract, StoreFactory, next_event, take



@pytest.fixture(scope="module")
def etcd() -> Iterator[EtcdCluster]:
    cluster = start_or_skip(1)
    yield cluster
    cluster.stop()


def namespace() -> str:
    """A key prefix of its own for each test: the tests share one etcd."""
    return f"/test-{uuid.uuid4().hex[:12]}/"


class TestEtcdStore(StoreContract):
    # An empty etcd is at revision 1, and other namespaces' writes move the revision too.
    empty_store_revision = None
    # etcd's minimum lease TTL with default election settings (1.5 s, in whole seconds).
    short_lease_ttl_s = 2.0

    @pytest.fixture
    async def store_factory(self, etcd: EtcdCluster) -> AsyncIterator[StoreFactory]:
        prefix = namespace()
        opened: list[Store] = []

        async def factory(**kwargs: Any) -> Store:
            store = await EtcdStore.open(etcd.endpoints, prefix=prefix, **kwargs)
            opened.append(store)
            return store

        yield factory
        for store in opened:
            await store.close()

    async def compact_history(self, store: Store, revision: int) -> None:
        assert isinstance(store, EtcdStore)
        await store.compact(revision)


@pytest.fixture
async def store(etcd: EtcdCluster) -> AsyncIterator[EtcdStore]:
    store = await EtcdStore.open(etcd.endpoints, prefix=namespace())
    yield store
    await store.close()


async def test_keys_live_under_the_namespace(etcd: EtcdCluster, store: EtcdStore) -> None:
    root = await EtcdStore.open(etcd.endpoints)
    other = await EtcdStore.open(etcd.endpoints, prefix=namespace())
    try:
        revision = await store.put("a/1", b"mine")
        kv = await root.get(store.prefix + "a/1")
        assert kv == KeyValue(store.prefix + "a/1", b"mine", revision, revision)
        assert await other.get("a/1") is None
        async with aclosing(store.watch("a/", 0)) as events:
            await other.put("a/2", b"theirs")  # another namespace: not seen
            mine = await store.put("a/3", b"mine")
            event = await next_event(events)
            assert (event.key, event.revision) == ("a/3", mine)
        assert [kv.key for kv in (await store.list(""))[0]] == ["a/1", "a/3"]
        assert [kv.key for kv in (await other.list(""))[0]] == ["a/2"]
    finally:
        await root.close()
        await other.close()


async def test_list_pages_are_read_at_one_revision(store: EtcdStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(etcd_backend, "_LIST_PAGE", 2)
    for i in range(7):
        await store.put(f"p/{i}", str(i).encode())
    expected_revision = await store.revision()
    original = store._range_request
    pages = 0

    async def range_then_write(request: Any, what: str) -> Any:
        nonlocal pages
        response = await original(request, what)
        pages += 1
        if pages == 1:  # a write between the first and second page must not show up
            await store.put("p/0", b"changed")
            await store.put("p/9", b"new")
        return response

    monkeypatch.setattr(store, "_range_request", range_then_write)
    items, revision = await store.list("p/")
    monkeypatch.undo()
    assert pages == 4
    assert revision == expected_revision
    assert [(kv.key, kv.value) for kv in items] == [(f"p/{i}", str(i).encode()) for i in range(7)]
    items, revision = await store.list("p/")
    assert len(items) == 8 and revision == expected_revision + 2


async def test_bad_keys_and_arguments(store: EtcdStore) -> None:
    with pytest.raises(StoreError, match="non-empty"):
        await store.put("", b"x")
    with pytest.raises(StoreError, match="UTF-8"):
        await store.put("bad\ud800", b"x")
    with pytest.raises(StoreError, match="expected_revision"):
        await store.put("k", b"x", expected_revision=-1)
    with pytest.raises(StoreError, match="endpoint"):
        await EtcdStore.open(["no-port"])
    with pytest.raises(StoreError, match="at least one"):
        await EtcdStore.open([])


def test_parse_etcd_url() -> None:
    assert parse_etcd_url("etcd://a:2379") == (["a:2379"], "", None)
    assert parse_etcd_url("etcd://a:2379,10.0.0.2:2380/") == (["a:2379", "10.0.0.2:2380"], "", None)
    assert parse_etcd_url("etcd://a:1/team-a") == (["a:1"], "/team-a", None)
    assert parse_etcd_url("etcd://a:1/team/a//") == (["a:1"], "/team/a", None)
    assert parse_etcd_url("etcd://[::1]:2379") == (["[::1]:2379"], "", None)
    assert parse_etcd_url("etcd://a:1/p?cacert=/c/ca.pem&cert=/c/me.pem&key=/c/me.key") == (
        ["a:1"], "/p", ClientTls("/c/ca.pem", "/c/me.pem", "/c/me.key"))
    assert parse_etcd_url("etcd://a:1?tls=1") == (["a:1"], "", ClientTls())
    for bad in ("etcd://", "etcd:///p", "etcd://host", "etcd://host:x", "etcd://h:70000", "etcd://a:1,,b:2",
                "etcd://a:1?cert=/c/me.pem&key=/c/me.key",  # a client certificate without TLS
                "etcd://a:1?cacert=", "etcd://a:1?ca=/c/ca.pem", "etcd://a:1?tls=yes"):
        with pytest.raises(StoreError):
            parse_etcd_url(bad)


async def test_open_store_url(etcd: EtcdCluster) -> None:
    name = f"/url-{uuid.uuid4().hex[:8]}"
    dead = f"127.0.0.1:{free_port()}"
    store = await open_store(f"etcd://{dead},{etcd.endpoints[0]}{name}/")
    root = await EtcdStore.open(etcd.endpoints)
    try:
        assert isinstance(store, EtcdStore)
        assert store.prefix == name
        assert store.endpoints == [dead, etcd.endpoints[0]]
        assert store.current_endpoint == etcd.endpoints[0]  # the dead one was skipped
        await store.put("/megarouter/v1/x", b"v")
        assert (await root.get(f"{name}/megarouter/v1/x")).value == b"v"  # type: ignore[union-attr]
    finally:
        await store.close()
        await root.close()


async def test_unreachable_endpoints_fail_within_the_timeout() -> None:
    dead = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    started = time.monotonic()
    with pytest.raises(StoreError, match="no etcd endpoint is reachable"):
        await EtcdStore.open(dead, timeout_s=0.5)
    assert time.monotonic() - started < 3


async def test_watch_ends_quietly_when_closed_while_waiting(etcd: EtcdCluster) -> None:
    store = await EtcdStore.open(etcd.endpoints, prefix=namespace())
    events = store.watch("w/", 0)
    waiting = asyncio.create_task(anext(events))
    await asyncio.sleep(0.2)  # the stream is open and its read is pending
    await store.close()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(waiting, 5)


async def test_watch_survives_consumer_timeouts(store: EtcdStore) -> None:
    """A consumer polling with short timeouts cancels reads (and so gRPC calls) midway."""
    base = await store.revision()
    async with aclosing(store.watch("t/", base + 1)) as events:
        for _ in range(3):  # nothing to read yet
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(anext(events), 0.05)
        for i in range(3):
            await store.put(f"t/{i}", b"x")
        assert [e.revision - base for e in await take(events, 3)] == [1, 2, 3]
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(anext(events), 0.05)
        await store.put("t/last", b"x")
        assert (await next_event(events)).revision == base + 4


async def test_compaction_beyond_the_current_revision(store: EtcdStore) -> None:
    revision = await store.put("c", b"x")
    await store.compact(revision)
    await store.compact(revision - 1)  # already compacted: nothing to do
    with pytest.raises(StoreError, match="future revision"):
        await store.compact(revision + 1000)
    with pytest.raises(Compacted) as info:
        await take(store.watch("", revision - 1), 1)
    assert (info.value.requested_revision, info.value.compact_revision) == (revision - 1, revision)


# -- a three-member cluster: losing a member -----------------------------------------------


async def _leader_endpoint(endpoints: list[str]) -> str:
    """The client endpoint of the current raft leader."""
    ids = {}
    leader = 0
    for endpoint in endpoints:
        async with grpc.aio.insecure_channel(endpoint) as channel:
            status = await rpc.MaintenanceStub(channel).Status(rpc.StatusRequest(), timeout=5)
        ids[status.header.member_id] = endpoint
        leader = status.leader or leader
    return ids[leader]


async def put_after_kill(store: EtcdStore, key: str, value: bytes) -> int:
    """The first write after a member was killed.

    If the store sent it on the dead member's connection before gRPC saw that connection
    close, the store cannot know whether it was applied and says so rather than retrying (in
    general a member can die after applying a write and before answering). Here the member was
    already dead, so the write was not applied: writing again is safe, and the callers'
    revision checks prove that nothing was written twice.
    """
    try:
        return await store.put(key, value)
    except StoreError as exc:
        assert "may or may not have been applied" in str(exc)
        return await store.put(key, value)


async def test_writes_continue_when_a_member_is_killed() -> None:
    cluster = start_or_skip(3)
    store: EtcdStore | None = None
    try:
        # The store talks to the leader first, so killing it costs a failover and an election.
        leader = await _leader_endpoint(cluster.endpoints)
        endpoints = [leader] + [e for e in cluster.endpoints if e != leader]
        store = await EtcdStore.open(endpoints, prefix=namespace(), timeout_s=5)
        assert store.current_endpoint == leader
        base = await store.revision()
        async with aclosing(store.watch("k/", base + 1)) as events:
            for i in range(5):
                await store.put(f"k/{i}", b"before")
            assert len(await take(events, 5)) == 5  # the watch stream is on the leader too

            cluster.member_for(leader).kill()  # SIGKILL
            started = time.monotonic()
            revision = await put_after_kill(store, "k/after", b"1")
            failover_s = time.monotonic() - started
            assert revision == base + 6
            assert store.current_endpoint != leader
            for i in range(10):
                kv = await store.get("k/after")
                assert kv is not None
                await store.put("k/after", str(i + 2).encode(), expected_revision=kv.mod_revision)
            items, revision = await store.list("k/")
            assert revision == base + 16 and len(items) == 6
            # The watch moved to a live member and resumed where it was: no gap, no repeat.
            assert [e.revision for e in await take(events, 11)] == list(range(base + 6, base + 17))

            # The killed member comes back, another one dies: the store moves again.
            cluster.member_for(leader).restart()
            survivor = store.current_endpoint
            cluster.member_for(survivor).kill()
            assert await put_after_kill(store, "k/again", b"x") == base + 17
            assert store.current_endpoint != survivor
            assert (await next_event(events)).key == "k/again"
        assert failover_s < 5, f"failover took {failover_s:.1f}s"
    finally:
        if store is not None:
            await store.close()
        cluster.stop()


async def test_ambiguous_write_is_reported_not_retried(store: EtcdStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write whose connection broke mid-request may have been applied: StoreError says so."""

    class Broken(grpc.aio.AioRpcError):
        def __init__(self) -> None:
            super().__init__(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "Socket closed")

    calls = 0
    endpoint = store._endpoints[0]
    real_txn = endpoint.kv.Txn

    async def txn(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        await real_txn(*args, **kwargs)  # applied, but the answer is lost
        raise Broken()

    monkeypatch.setattr(endpoint.kv, "Txn", txn)
    with pytest.raises(StoreError, match="may or may not have been applied"):
        await store.put("amb", b"x", expected_revision=0)
    assert calls == 1  # not retried: a retry would now fail its own compare-and-swap
    monkeypatch.undo()
    assert (await store.get("amb")).value == b"x"  # type: ignore[union-attr]
    with pytest.raises(CasConflict):
        await store.put("amb", b"y", expected_revision=0)
