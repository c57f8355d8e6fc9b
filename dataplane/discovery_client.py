"""The proxy side of the Discovery stream.

Connects to one of the control-plane addresses, names itself, and applies
every pushed table: a table that loads is installed, written to the cache
file and ACKed; one that does not is NACKed with the reason and the previous
table stays in service. A broken stream is retried with jittered
exponential backoff on the next address, so a fleet does not reconnect in
lockstep. The cache file lets a proxy start serving while the control plane
is unreachable.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import tempfile
from collections.abc import Callable
from pathlib import Path

import grpc

from dataplane.stats import TABLE_NACKS
from dataplane.table import RuntimeTable, TableError
from megarouter.grpc_tls import ClientTls, control_plane_channel
from megarouter.v1 import discovery_pb2, discovery_pb2_grpc, routing_pb2

log = logging.getLogger("megarouter.proxy.discovery")

CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    # Notice a control plane that vanished without closing the connection.
    ("grpc.keepalive_time_ms", 5000),
    ("grpc.keepalive_timeout_ms", 3000),
    ("grpc.keepalive_permit_without_calls", 1),
    # Reconnection pacing is ours (below), not the channel's.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]
BACKOFF_INITIAL_S = 0.1
BACKOFF_MAX_S = 5.0
INVALID_ARGUMENT = 3  # google.rpc.Code


def load_cached_table(path: Path) -> RuntimeTable | None:
    """The table saved by a previous run, if present and still loadable."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("cannot read cached table %s: %s", path, exc)
        return None
    try:
        table = routing_pb2.RoutingTable.FromString(data)
        return RuntimeTable.load(table)
    except Exception as exc:  # a corrupt cache must never stop a proxy starting
        log.warning("ignoring cached table %s: %s", path, exc)
        return None


def write_cached_table(path: Path, table: routing_pb2.RoutingTable) -> None:
    """Atomically replace the cache file (write, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(table.SerializeToString())
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class DiscoveryClient:
    def __init__(
        self,
        addresses: list[str],
        node: discovery_pb2.Node,
        current: Callable[[], RuntimeTable | None],
        install: Callable[[RuntimeTable], None],
        cache_path: Path | None,
        on_fleet_health: Callable[[discovery_pb2.FleetHealth], None] | None = None,
        tls: ClientTls | None = None,
    ) -> None:
        if not addresses:
            raise ValueError("at least one control-plane address is required")
        self._addresses = addresses
        self._node = node
        self._current = current
        self._install = install
        self._cache_path = cache_path
        self._on_fleet_health = on_fleet_health
        self._tls = tls

    def _version(self) -> int:
        table = self._current()
        return table.version if table is not None else 0

    async def run(self) -> None:
        backoff = BACKOFF_INITIAL_S
        for attempt in range(1 << 62):
            address = self._addresses[attempt % len(self._addresses)]
            try:
                if await self._stream(address):
                    backoff = BACKOFF_INITIAL_S
            except grpc.aio.AioRpcError as exc:
                log.warning("discovery stream to %s failed: %s", address, exc.code().name)
            except Exception:
                log.exception("discovery stream to %s failed unexpectedly", address)
            # Full jitter: spread a fleet's reconnects over the window.
            await asyncio.sleep(random.uniform(0, backoff))
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    async def _stream(self, address: str) -> bool:
        """One stream's life; True if it delivered at least one table."""
        delivered = False
        async with control_plane_channel(address, self._tls, options=CHANNEL_OPTIONS) as channel:
            call = discovery_pb2_grpc.DiscoveryStub(channel).StreamRoutingTables()
            await call.write(discovery_pb2.DiscoveryRequest(node=self._node, version_info=self._version()))
            log.info("discovery stream open to %s", address)
            while True:
                response = await call.read()
                if response is grpc.aio.EOF:
                    return delivered
                delivered = True
                await call.write(await self._apply(response))

    async def _apply(self, response: discovery_pb2.DiscoveryResponse) -> discovery_pb2.DiscoveryRequest:
        if response.HasField("fleet_health") and self._on_fleet_health is not None:
            self._on_fleet_health(response.fleet_health)
        if not response.HasField("table"):  # a health-only push
            return discovery_pb2.DiscoveryRequest(version_info=self._version(), response_nonce=response.nonce)
        try:
            if response.version != response.table.version:
                raise TableError(f"push version {response.version} != table version {response.table.version}")
            runtime = RuntimeTable.load(response.table)
        except TableError as exc:
            TABLE_NACKS.inc()
            log.warning("NACK table version=%d: %s (keeping version %d)", response.version, exc, self._version())
            return discovery_pb2.DiscoveryRequest(
                version_info=self._version(),
                response_nonce=response.nonce,
                error_detail=discovery_pb2.ErrorDetail(code=INVALID_ARGUMENT, message=str(exc)),
            )
        self._install(runtime)
        if self._cache_path is not None:
            try:
                await asyncio.to_thread(write_cached_table, self._cache_path, response.table)
            except OSError as exc:
                log.warning("cannot write table cache %s: %s", self._cache_path, exc)
        log.info("installed table version=%d", runtime.version)
        return discovery_pb2.DiscoveryRequest(version_info=runtime.version, response_nonce=response.nonce)
