"""Routing-table distribution to proxies (the Discovery service).

Modelled on Envoy's ADS: a proxy opens one bidirectional stream and names
itself; the control plane pushes the current table and every newer one as it
is published; the proxy answers each push with an ACK or a NACK echoing the
push's nonce. The registry records what each proxy runs, for the admin API.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import time
from dataclasses import dataclass

import grpc
from prometheus_client import Counter, Gauge

from controlplane.fleet import HealthHistory
from controlplane.replicas import ReplicaSet
from controlplane.store import StoreError
from megarouter.v1 import admin_pb2, discovery_pb2, discovery_pb2_grpc, routing_pb2

log = logging.getLogger("megarouter.controlplane.discovery")

PUSHES = Counter("megarouter_cp_table_pushes_total", "Routing tables pushed to proxies")
ACKS = Counter("megarouter_cp_table_acks_total", "Routing-table ACKs received")
NACKS = Counter("megarouter_cp_table_nacks_total", "Routing-table NACKs received")
CONNECTED = Gauge("megarouter_cp_connected_proxies", "Proxies with an open discovery stream")
TABLE_VERSION = Gauge("megarouter_cp_table_version", "Version of the table being pushed")


class SnapshotCache:
    """What the control plane pushes — the current table and the latest fleet
    health view — and a way to await either changing.

    Each publish bumps a generation counter; streams remember the
    generations they last sent, so a table republished with the same version
    (a test hook's raw push) is still delivered.
    """

    def __init__(self, health_history: HealthHistory | None = None) -> None:
        self._table: routing_pb2.RoutingTable | None = None
        self._endpoint_names: frozenset[str] | None = None
        self._health: discovery_pb2.FleetHealth | None = None
        self.health_history = health_history or HealthHistory()
        self._table_generation = 0
        self._health_generation = 0
        self._changed = asyncio.Condition()

    @property
    def current(self) -> routing_pb2.RoutingTable | None:
        return self._table

    def endpoint_names(self) -> frozenset[str] | None:
        """The current table's endpoint names (None before the first table)."""
        if self._table is None:
            return None
        if self._endpoint_names is None:
            self._endpoint_names = frozenset(endpoint.name for endpoint in self._table.endpoints)
        return self._endpoint_names

    @property
    def fleet_health(self) -> discovery_pb2.FleetHealth | None:
        return self._health

    async def publish(self, table: routing_pb2.RoutingTable) -> None:
        async with self._changed:
            self._table = table
            self._endpoint_names = None
            self._table_generation += 1
            TABLE_VERSION.set(table.version)
            self._changed.notify_all()

    async def publish_health(self, health: discovery_pb2.FleetHealth) -> None:
        self.health_history.record(health)
        async with self._changed:
            self._health = health
            self._health_generation += 1
            self._changed.notify_all()

    async def next_after(self, table_generation: int, health_generation: int = -1) -> tuple[int, int]:
        """Generations (table, health) once either passes the given ones.

        A negative health generation means "tables only".
        """
        def newer() -> bool:
            return self._table is not None and (
                self._table_generation > table_generation
                or (health_generation >= 0 and self._health_generation > health_generation)
            )

        async with self._changed:
            await self._changed.wait_for(newer)
            return self._table_generation, self._health_generation


@dataclass
class ProxyConnection:
    stream_id: int
    node_id: str
    region: str
    peer: str
    software_version: str
    connected_at_unix_ms: int
    acked_version: int = 0
    pushed_version: int = 0
    pending_nonce: str = ""
    last_nack: str = ""

    def status(self) -> admin_pb2.ProxyStatus:
        return admin_pb2.ProxyStatus(
            node_id=self.node_id,
            region=self.region,
            peer=self.peer,
            acked_version=self.acked_version,
            pushed_version=self.pushed_version,
            last_nack=self.last_nack,
            connected_at_unix_ms=self.connected_at_unix_ms,
            software_version=self.software_version,
        )


class ProxyRegistry:
    """Open discovery streams and what each proxy last ACKed."""

    def __init__(self) -> None:
        self._connections: dict[int, ProxyConnection] = {}
        self._ids = itertools.count(1)
        self.changed = asyncio.Event()  # a proxy connected, left, ACKed or NACKed

    def connect(self, node: discovery_pb2.Node, peer: str, version: int) -> ProxyConnection:
        conn = ProxyConnection(
            stream_id=next(self._ids),
            node_id=node.id,
            region=node.region,
            peer=peer,
            software_version=node.version,
            connected_at_unix_ms=int(time.time() * 1000),
            acked_version=version,
        )
        self._connections[conn.stream_id] = conn
        CONNECTED.set(len(self._connections))
        self.changed.set()
        return conn

    def disconnect(self, conn: ProxyConnection) -> None:
        self._connections.pop(conn.stream_id, None)
        CONNECTED.set(len(self._connections))
        self.changed.set()

    def statuses(self, control_plane: str = "") -> list[admin_pb2.ProxyStatus]:
        statuses = [conn.status() for conn in sorted(self._connections.values(), key=lambda c: c.node_id)]
        for status in statuses:
            status.control_plane = control_plane
        return statuses


PROXIES_SHARE = "proxies"


def fleet_proxies(registry: ProxyRegistry, replicas: ReplicaSet | None) -> list[admin_pb2.ProxyStatus]:
    """Every proxy connected to any replica: this replica's own, and those the others share."""
    if replicas is None:
        return registry.statuses()
    statuses = registry.statuses(replicas.replica_id)
    for replica_id, data in replicas.shared.get(PROXIES_SHARE, {}).items():
        if replica_id != replicas.replica_id:
            statuses.extend(admin_pb2.ListProxiesResponse.FromString(data).proxies)
    return sorted(statuses, key=lambda status: (status.node_id, status.control_plane))


async def share_proxies(registry: ProxyRegistry, replicas: ReplicaSet, interval_s: float = 0.5) -> None:
    """While other replicas run, keep this replica's proxy list in the store for them (under
    its lease), rewritten when it changes, at most every `interval_s`."""
    peers_changed = replicas.subscribe()
    published = (b"", 0)  # (list, membership) last shared
    while True:
        waits = [asyncio.create_task(registry.changed.wait()), asyncio.create_task(peers_changed.wait())]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
        registry.changed.clear()
        peers_changed.clear()
        if not replicas.peers():
            published = (b"", 0)  # a replica joining later gets it afresh
            continue
        data = admin_pb2.ListProxiesResponse(proxies=registry.statuses(replicas.replica_id)).SerializeToString()
        if (data, replicas.membership) != published:
            try:
                await replicas.publish(PROXIES_SHARE, data)
                published = (data, replicas.membership)
            except StoreError as exc:
                log.warning("cannot share the proxy list with the other replicas: %s", exc)
                registry.changed.set()  # try again after the pause
        await asyncio.sleep(interval_s)


class DiscoveryService(discovery_pb2_grpc.DiscoveryServicer):
    def __init__(self, snapshots: SnapshotCache, registry: ProxyRegistry) -> None:
        self._snapshots = snapshots
        self._registry = registry

    async def StreamRoutingTables(self, request_iterator, context: grpc.aio.ServicerContext) -> None:
        try:
            hello = await anext(request_iterator)
        except StopAsyncIteration:
            return
        if not hello.node.id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "node.id is required on the first request")
        conn = self._registry.connect(hello.node, context.peer(), hello.version_info)
        log.info("proxy connected node=%s region=%s version=%d", conn.node_id, conn.region, hello.version_info)
        acks = asyncio.create_task(self._read_responses(request_iterator, conn))
        sent_table, sent_health = 0, 0
        try:
            while True:
                changed = asyncio.create_task(self._snapshots.next_after(sent_table, sent_health))
                done, _ = await asyncio.wait({changed, acks}, return_when=asyncio.FIRST_COMPLETED)
                if acks in done:
                    changed.cancel()
                    return  # the proxy closed its side or the stream broke
                table_generation, health_generation = changed.result()
                table = self._snapshots.current
                assert table is not None
                conn.pending_nonce = secrets.token_hex(8)
                response = discovery_pb2.DiscoveryResponse(version=table.version, nonce=conn.pending_nonce)
                if table_generation != sent_table:
                    response.table.CopyFrom(table)
                    conn.pushed_version = table.version
                    PUSHES.inc()
                health = self._snapshots.fleet_health
                if health is not None and health_generation != sent_health:
                    response.fleet_health.CopyFrom(health)
                await context.write(response)
                sent_table, sent_health = table_generation, health_generation
        finally:
            acks.cancel()
            self._registry.disconnect(conn)
            log.info("proxy disconnected node=%s", conn.node_id)

    async def _read_responses(self, request_iterator, conn: ProxyConnection) -> None:
        async for request in request_iterator:
            if request.response_nonce != conn.pending_nonce:
                continue  # answers an older push, superseded by a newer one
            conn.acked_version = request.version_info
            self._registry.changed.set()
            if request.error_detail.message:
                conn.last_nack = request.error_detail.message
                NACKS.inc()
                log.warning(
                    "proxy NACKed table node=%s pushed=%d keeps=%d error=%s",
                    conn.node_id, conn.pushed_version, request.version_info, request.error_detail.message,
                )
            else:
                conn.last_nack = ""
                ACKS.inc()
