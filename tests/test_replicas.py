"""Control-plane membership and leader election (controlplane/replicas.py) on both stores.

Two ReplicaSets share one store (on SQLite the same store object, as one process would; on
etcd two clients of one cluster). Each test gives its replicas jobs that record when they run,
so "only the leader runs the singleton jobs" is observed, not assumed.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from controlplane.discovery import ProxyRegistry, fleet_proxies, share_proxies
from controlplane.replicas import LEADER_KEY, ReplicaSet
from controlplane.store import SqliteStore, Store, StoreError
from controlplane.store.etcd import EtcdStore
from megarouter.v1 import discovery_pb2

try:
    from etcd_cluster import start_or_skip
    from harness import eventually
except ImportError:  # tests/ imported as a package
    from tests.etcd_cluster import start_or_skip
    from tests.harness import eventually

TTL = 1.0  # etcd's minimum with the test cluster's fast elections


async def until(condition, timeout: float, what: str) -> None:
    """Await a condition on in-process state that the replicas' own tasks change."""
    async def check() -> bool:
        return bool(condition())
    await eventually(check, timeout=timeout, what=what)


class Partitionable(Store):
    """A store that can be cut off from its replica: every call then fails like a lost network."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.partitioned = False

    def _check(self) -> None:
        if self.partitioned:
            raise StoreError("partitioned (test)")

    async def get(self, key):
        self._check()
        return await self.inner.get(key)

    async def list(self, prefix):
        self._check()
        return await self.inner.list(prefix)

    async def put(self, key, value, *, expected_revision=None, lease=0):
        self._check()
        return await self.inner.put(key, value, expected_revision=expected_revision, lease=lease)

    async def delete(self, key, *, expected_revision=None):
        self._check()
        return await self.inner.delete(key, expected_revision=expected_revision)

    async def revision(self):
        self._check()
        return await self.inner.revision()

    def watch(self, prefix, start_revision):
        self._check()
        return self.inner.watch(prefix, start_revision)

    async def commit(self, checks, writes):
        self._check()
        return await self.inner.commit(checks, writes)

    async def grant_lease(self, ttl_s):
        self._check()
        return await self.inner.grant_lease(ttl_s)

    async def keep_alive(self, lease_id):
        self._check()
        return await self.inner.keep_alive(lease_id)

    async def revoke_lease(self, lease_id):
        self._check()
        return await self.inner.revoke_lease(lease_id)

    async def close(self):
        await self.inner.close()


@pytest.fixture(scope="module")
def etcd() -> Any:
    cluster = start_or_skip(1)
    yield cluster
    cluster.stop()


@pytest.fixture(params=["sqlite", "etcd"])
async def stores(request, tmp_path) -> AsyncIterator[tuple[Partitionable, Partitionable]]:
    if request.param == "sqlite":
        shared = await SqliteStore.open(tmp_path / "store.db")
        yield Partitionable(shared), Partitionable(shared)
        await shared.close()
    else:
        cluster = request.getfixturevalue("etcd")
        prefix = f"/replicas-{uuid.uuid4().hex[:8]}"
        a = await EtcdStore.open(cluster.endpoints, prefix=prefix)
        b = await EtcdStore.open(cluster.endpoints, prefix=prefix)
        yield Partitionable(a), Partitionable(b)
        await a.close()
        await b.close()


class JobLog:
    """A singleton job per replica that records when it started and when it was stopped."""

    def __init__(self) -> None:
        self.events: list[tuple[float, str, str]] = []   # (loop time, replica, "start"|"stop")
        self.running: set[str] = set()

    def job(self, name: str):
        async def run() -> None:
            loop = asyncio.get_running_loop()
            self.events.append((loop.time(), name, "start"))
            self.running.add(name)
            try:
                await asyncio.Event().wait()
            finally:
                self.running.discard(name)
                self.events.append((loop.time(), name, "stop"))
        return run


async def start_pair(stores, log: JobLog) -> tuple[ReplicaSet, ReplicaSet]:
    a = ReplicaSet(stores[0], jobs=[log.job("a")], replica_id="a", lease_ttl_s=TTL)
    b = ReplicaSet(stores[1], jobs=[log.job("b")], replica_id="b", lease_ttl_s=TTL)
    await a.start("127.0.0.1:1")
    await b.start("127.0.0.1:2")
    await until(lambda: a.is_leader or b.is_leader, timeout=10, what="a leader")
    await until(lambda: len(a.replicas) == 2 and len(b.replicas) == 2, timeout=10,
                     what="both replicas to see each other")
    return a, b


def crash(replica: ReplicaSet) -> None:
    """Stop a replica as SIGKILL would: no revoke, its lease just stops being renewed."""
    for task in [*replica._tasks, *replica._job_tasks]:
        task.cancel()


async def test_one_leader_and_an_instant_handover_on_stop(stores) -> None:
    log = JobLog()
    a, b = await start_pair(stores, log)
    try:
        leader, follower = (a, b) if a.is_leader else (b, a)
        assert not follower.is_leader
        assert log.running == {leader.replica_id}
        await until(lambda: follower.leader_id == leader.replica_id, timeout=10,
                         what="the follower to know the leader")
        assert leader.replicas[follower.replica_id].address == follower.me.address
        await leader.stop()  # revokes its lease: no waiting for the TTL
        await until(lambda: follower.is_leader, timeout=10, what="the follower to take over")
        assert log.running == {follower.replica_id}
        # The old leader's job had stopped before the new one's started.
        stops = [t for t, name, what in log.events if name == leader.replica_id and what == "stop"]
        starts = [t for t, name, what in log.events if name == follower.replica_id and what == "start"]
        assert stops and starts and stops[0] <= starts[0]
        await until(lambda: list(follower.replicas) == [follower.replica_id], timeout=10,
                         what="the stopped replica to be deregistered")
    finally:
        await a.stop()
        await b.stop()


async def test_a_crashed_leader_is_replaced_once_its_lease_expires(stores) -> None:
    log = JobLog()
    a, b = await start_pair(stores, log)
    try:
        leader, follower = (a, b) if a.is_leader else (b, a)
        await leader.publish("fleet-health", b"leader's share")
        await until(lambda: follower.shared.get("fleet-health", {}).get(leader.replica_id) == b"leader's share",
                         timeout=10, what="the leader's share to reach the follower")
        crash(leader)
        await until(lambda: follower.is_leader, timeout=15, what="a new leader after the lease expired")
        assert follower.leader_id == follower.replica_id
        # What the dead replica shared went with its lease.
        assert leader.replica_id not in follower.shared.get("fleet-health", {})
        assert leader.replica_id not in follower.replicas
    finally:
        await a.stop()
        await b.stop()


async def test_a_partitioned_leader_stops_its_jobs_before_anyone_else_starts(stores) -> None:
    log = JobLog()
    a, b = await start_pair(stores, log)
    try:
        leader, follower = (a, b) if a.is_leader else (b, a)
        leader_store = stores[0] if leader is a else stores[1]
        leader_store.partitioned = True  # alive, but cannot renew its lease
        await until(lambda: follower.is_leader, timeout=15, what="the follower to take over")
        stopped = [t for t, name, what in log.events if name == leader.replica_id and what == "stop"]
        started = [t for t, name, what in log.events if name == follower.replica_id and what == "start"]
        assert stopped and started and stopped[0] < started[0], log.events
        assert log.running == {follower.replica_id}
        # Reconnected, the old leader joins again as a follower.
        leader_store.partitioned = False
        await until(lambda: leader.leader_id == follower.replica_id and leader.replica_id in follower.replicas,
                         timeout=15, what="the old leader to rejoin as a follower")
        assert not leader.is_leader and log.running == {follower.replica_id}
    finally:
        for store in stores:
            store.partitioned = False
        await a.stop()
        await b.stop()


async def test_a_restarted_replica_waits_for_its_predecessors_lease(stores) -> None:
    """Same replica id, new process: the leader key its crashed predecessor's lease still holds
    is not its own; it leads only once that lease has expired."""
    log = JobLog()
    first = ReplicaSet(stores[0], jobs=[log.job("first")], replica_id="a", lease_ttl_s=TTL)
    await first.start("127.0.0.1:1")
    await until(lambda: first.is_leader, timeout=10, what="the first process to lead")
    crash(first)
    second = ReplicaSet(stores[1], jobs=[log.job("second")], replica_id="a", lease_ttl_s=TTL)
    try:
        await second.start("127.0.0.1:1")
        held = await stores[1].get(LEADER_KEY)
        if held is not None:  # the predecessor's lease has not expired yet
            assert orjson.loads(held.value)["session"] != second._session
            assert not second.is_leader and "second" not in log.running
        await until(lambda: second.is_leader, timeout=15, what="the restarted process to lead")
        held = await stores[1].get(LEADER_KEY)
        assert held is not None and orjson.loads(held.value)["session"] == second._session
    finally:
        await second.stop()
        await first.stop()


async def test_shares_come_back_after_a_replica_rejoins(stores) -> None:
    """What a replica shares lives under its lease: gone when the lease is lost, and shared
    again (unchanged as it is) once the replica has rejoined."""
    log = JobLog()
    a, b = await start_pair(stores, log)
    registry = ProxyRegistry()
    registry.connect(discovery_pb2.Node(id="proxy-x", region="eu"), "peer", 0)
    sharer = asyncio.create_task(share_proxies(registry, a, interval_s=0.05))

    def b_sees_proxy_x() -> bool:
        return any(status.node_id == "proxy-x" for status in fleet_proxies(ProxyRegistry(), b))
    try:
        await until(b_sees_proxy_x, timeout=10, what="b to list a's proxy")
        a_store = stores[0]
        a_store.partitioned = True
        await until(lambda: not b_sees_proxy_x(), timeout=15, what="a's share to expire with its lease")
        a_store.partitioned = False
        await until(b_sees_proxy_x, timeout=15, what="a's share to be back after it rejoined")
        assert a.membership >= 2
    finally:
        stores[0].partitioned = False
        sharer.cancel()
        await a.stop()
        await b.stop()
