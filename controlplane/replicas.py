"""Control-plane replicas: membership, leader election, and the leader's singleton jobs.

Every replica holds one store lease (etcd's, or the SQLite store's equivalent) and renews it
every third of its TTL. Under that lease it

* registers itself at ``/megarouter/cluster/replicas/<id>`` (address, start time), so any
  replica can list the others (`megarouterctl controlplanes`);
* campaigns for ``/megarouter/cluster/leader`` with a create-only put: exactly one replica
  holds the key. The others watch it and campaign again when it is deleted, which the store
  does by itself when the leader's lease expires (the process died or was cut off from the
  store) and which a leader stopping cleanly does at once by revoking its lease;
* publishes whatever else must vanish with it (its share of fleet health, see `publish`).

While it leads, a replica runs the singleton jobs. A leader that cannot renew its lease stops
them once the lease may have expired in the store — measured from the last renewal it *sent*,
so before any other replica can have won the key — and campaigns again when it can reach the
store. Overlap is therefore excluded as long as clocks run at the same rate; the jobs are also
written with compare-and-swap, so even a slow clock costs a redundant write, never a wrong one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import orjson
from prometheus_client import Counter, Gauge

from controlplane.store import CasConflict, Compacted, LeaseNotFound, Store, StoreError

log = logging.getLogger("megarouter.controlplane.replicas")

CLUSTER_PREFIX = "/megarouter/cluster/"
LEADER_KEY = CLUSTER_PREFIX + "leader"
REPLICAS_PREFIX = CLUSTER_PREFIX + "replicas/"
SHARED_PREFIX = CLUSTER_PREFIX + "shared/"   # shared/<kind>/<replica id>: data that dies with its replica

# Leadership moves within about this long after a leader dies (etcd rounds up to whole seconds).
LEASE_TTL_S = 3.0
# Pause before retrying after the store failed.
_RETRY_S = 0.5

IS_LEADER = Gauge("megarouter_cp_is_leader", "1 while this control-plane replica is the leader")
LEADERSHIP_CHANGES = Counter("megarouter_cp_leadership_changes_total", "Times this replica became leader")

Job = Callable[[], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ReplicaInfo:
    replica_id: str
    address: str
    started_at_unix_ms: int


def new_replica_id() -> str:
    return uuid.uuid4().hex[:12]


class ReplicaSet:
    """This replica's membership in the control-plane cluster.

    `start()` joins (lease, registration, campaign, watch); `stop()` leaves, handing the
    leadership over at once. `jobs` run only while this replica leads.
    """

    def __init__(
        self,
        store: Store,
        *,
        jobs: list[Job] | None = None,
        replica_id: str | None = None,
        lease_ttl_s: float = LEASE_TTL_S,
    ) -> None:
        self.store = store
        self.me = ReplicaInfo(replica_id or new_replica_id(), "", int(time.time() * 1000))
        # Leadership is this process's, not its name's: a restarted replica (same id) must not
        # take the key its predecessor's lease still holds for its own.
        self._session = uuid.uuid4().hex
        self._jobs = list(jobs or [])
        self._ttl = lease_ttl_s
        self._lease = 0
        # Counts (re)joins: what was shared under an earlier lease is gone and must be shared again.
        self.membership = 0
        self._lease_valid_until = 0.0            # monotonic: the lease cannot have expired before
        self._lease_lost = asyncio.Event()
        self._leader_id = ""
        self._leader_changed = asyncio.Event()  # the leader key changed (or may have)
        self.replicas: dict[str, ReplicaInfo] = {}
        # shared/<kind>/<replica id> -> value, for every replica (this one included)
        self.shared: dict[str, dict[str, bytes]] = {}
        self._listeners: list[asyncio.Event] = []  # see subscribe()
        self._tasks: list[asyncio.Task[None]] = []
        self._job_tasks: list[asyncio.Task[None]] = []
        self._ready = asyncio.Event()

    # -- public view -------------------------------------------------------------------------

    @property
    def replica_id(self) -> str:
        return self.me.replica_id

    @property
    def leader_id(self) -> str:
        """The replica holding the leader key as last seen ('' while there is none)."""
        return self._leader_id

    @property
    def is_leader(self) -> bool:
        return bool(self._job_tasks)

    def subscribe(self) -> asyncio.Event:
        """An event of the caller's own, set whenever replicas, the leader or another
        replica's shared data change (the caller clears it)."""
        event = asyncio.Event()
        self._listeners.append(event)
        return event

    def _notify(self) -> None:
        for event in self._listeners:
            event.set()

    def peers(self) -> list[str]:
        return [replica for replica in self.replicas if replica != self.replica_id]

    async def publish(self, kind: str, value: bytes) -> None:
        """Store `value` as this replica's `kind` share, deleted with the replica's lease (so
        after a rejoin — `membership` moved — it must be published again)."""
        if not self._lease:  # between losing a lease and the next: a lease-less key would never go
            raise StoreError("this replica holds no store lease at the moment; not shared")
        key = f"{SHARED_PREFIX}{kind}/{self.replica_id}"
        await self.store.put(key, value, lease=self._lease)

    # -- life cycle --------------------------------------------------------------------------

    async def start(self, address: str) -> None:
        """Join the cluster as reachable at `address`; returns once registered."""
        self.me = ReplicaInfo(self.me.replica_id, address, self.me.started_at_unix_ms)
        self._tasks = [
            asyncio.create_task(self._keep_membership(), name="replica-membership"),
            asyncio.create_task(self._follow_cluster(), name="replica-watch"),
        ]
        ready = asyncio.create_task(self._ready.wait())
        done, _ = await asyncio.wait([ready, *self._tasks], return_when=asyncio.FIRST_COMPLETED)
        if ready not in done:
            ready.cancel()
            for task in done:
                task.result()  # raises what stopped it

    async def stop(self) -> None:
        """Leave: stop the jobs and revoke the lease, so a successor is elected at once."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._step_down("stopping")
        if self._lease:
            with contextlib.suppress(StoreError):
                await self.store.revoke_lease(self._lease)
            self._lease = 0

    # -- membership: lease, registration, campaign ----------------------------------------------

    async def _keep_membership(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                await self._join()
            except StoreError as exc:
                log.warning("cannot join the control-plane cluster yet: %s", exc)
                await asyncio.sleep(_RETRY_S)
                continue
            self._ready.set()
            # Renew until the lease is lost; campaign whenever the leader key is free.
            renewals = asyncio.create_task(self._renew())
            try:
                while not renewals.done():
                    self._leader_changed.clear()
                    await self._campaign()
                    waiter = asyncio.create_task(self._leader_changed.wait())
                    await asyncio.wait([waiter, renewals], return_when=asyncio.FIRST_COMPLETED)
                    waiter.cancel()
            finally:
                renewals.cancel()
            await self._step_down("lease lost")
            self._lease = 0
            log.warning("replica %s lost its store lease; joining again", self.replica_id)
            await asyncio.sleep(_RETRY_S * (0.5 + loop.time() % 1))

    async def _join(self) -> None:
        loop = asyncio.get_running_loop()
        sent = loop.time()
        self._lease = await self.store.grant_lease(self._ttl)
        self._lease_valid_until = sent + self._ttl
        info = orjson.dumps({"address": self.me.address, "started_at_unix_ms": self.me.started_at_unix_ms})
        await self.store.put(REPLICAS_PREFIX + self.replica_id, info, lease=self._lease)
        self.membership += 1
        self._notify()
        log.info("replica %s joined the control-plane cluster (address %s)", self.replica_id, self.me.address)

    async def _renew(self) -> None:
        """Renew the lease every third of its TTL; return when it is gone."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._ttl / 3)
            sent = loop.time()
            try:
                ttl = await asyncio.wait_for(self.store.keep_alive(self._lease), self._ttl / 3)
            except LeaseNotFound:
                return
            except (StoreError, TimeoutError) as exc:
                if loop.time() >= self._lease_valid_until:
                    log.warning("cannot renew the store lease (%s); it has expired", exc)
                    return
                if self.is_leader and loop.time() >= self._lease_valid_until - self._ttl / 3:
                    await self._step_down(f"lease renewals failing ({exc})")
                continue
            # etcd counts the TTL from when it handled the renewal, which is after `sent`.
            self._lease_valid_until = sent + min(ttl, self._ttl)
            if not self.is_leader and not self._leader_id:
                self._leader_changed.set()  # stepped down while renewals failed: campaign again

    async def _campaign(self) -> None:
        """Take the leader key if it is free; start or stop the jobs to match."""
        value = orjson.dumps({"replica_id": self.replica_id, "address": self.me.address, "session": self._session})
        try:
            await self.store.put(LEADER_KEY, value, expected_revision=0, lease=self._lease)
        except CasConflict:
            pass
        except (StoreError, LeaseNotFound) as exc:
            log.warning("campaign for leadership failed: %s", exc)
            await asyncio.sleep(_RETRY_S)
            self._leader_changed.set()  # try again
            return
        try:
            current = await self.store.get(LEADER_KEY)
        except StoreError as exc:
            log.warning("cannot read the leader key: %s", exc)
            await asyncio.sleep(_RETRY_S)
            self._leader_changed.set()
            return
        if current is None:
            self._leader_changed.set()  # deleted in between: campaign again
            return
        holder = orjson.loads(current.value)
        self._set_leader(holder["replica_id"])
        if holder.get("session") == self._session:
            self._lead()
        else:
            await self._step_down(f"replica {self._leader_id} leads")

    def _set_leader(self, leader_id: str) -> None:
        if leader_id != self._leader_id:
            self._leader_id = leader_id
            self._notify()

    def _lead(self) -> None:
        if self._job_tasks:
            return
        LEADERSHIP_CHANGES.inc()
        IS_LEADER.set(1)
        log.info("replica %s is the control-plane leader", self.replica_id)
        self._job_tasks = [
            asyncio.create_task(_forever(job), name=f"leader-job-{i}") for i, job in enumerate(self._jobs)
        ]
        # A job-less leader still counts as leading.
        if not self._job_tasks:
            self._job_tasks = [asyncio.create_task(asyncio.Event().wait(), name="leader-idle")]

    async def _step_down(self, why: str) -> None:
        if not self._job_tasks:
            return
        tasks, self._job_tasks = self._job_tasks, []
        IS_LEADER.set(0)
        log.warning("replica %s stops leading: %s", self.replica_id, why)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._leader_id == self.replica_id:
            self._set_leader("")

    # -- the cluster view -------------------------------------------------------------------

    async def _follow_cluster(self) -> None:
        """Mirror replicas, leader and shared data from the store, following its watch."""
        while True:
            try:
                items, revision = await self.store.list(CLUSTER_PREFIX)
                self._reset([(kv.key, kv.value) for kv in items])
                async with contextlib.aclosing(self.store.watch(CLUSTER_PREFIX, revision + 1)) as events:
                    async for event in events:
                        self._apply(event.key, event.value if event.type == "put" else None)
            except Compacted:
                continue  # fell too far behind: read everything again
            except StoreError as exc:
                log.warning("watch of the control-plane cluster failed, retrying: %s", exc)
            await asyncio.sleep(_RETRY_S)

    def _reset(self, items: list[tuple[str, bytes]]) -> None:
        self.replicas.clear()
        self.shared.clear()
        leader_seen = False
        for key, value in items:
            leader_seen |= key == LEADER_KEY
            self._apply(key, value)
        if not leader_seen:
            self._apply(LEADER_KEY, None)

    def _apply(self, key: str, value: bytes | None) -> None:
        if key == LEADER_KEY:
            if value is None:
                self._set_leader("")
            else:
                self._set_leader(orjson.loads(value)["replica_id"])
            self._leader_changed.set()
        elif key.startswith(REPLICAS_PREFIX):
            replica_id = key[len(REPLICAS_PREFIX):]
            if value is None:
                self.replicas.pop(replica_id, None)
            else:
                data = orjson.loads(value)
                self.replicas[replica_id] = ReplicaInfo(replica_id, data["address"], data["started_at_unix_ms"])
        elif key.startswith(SHARED_PREFIX):
            kind, _, replica_id = key[len(SHARED_PREFIX):].partition("/")
            if value is None:
                self.shared.get(kind, {}).pop(replica_id, None)
            else:
                self.shared.setdefault(kind, {})[replica_id] = value
            if replica_id == self.replica_id:
                return  # the echo of our own share changes nothing we push
        self._notify()


async def _forever(job: Job) -> None:
    """Run a singleton job, restarting it after an unexpected error."""
    while True:
        try:
            await job()
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("leader job failed; restarting it")
            await asyncio.sleep(_RETRY_S)
