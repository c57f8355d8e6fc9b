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

from dataplane.control_plane import REFUSALS, ControlPlaneLink, call_status, describe_failure
from dataplane.stats import TABLE_NACKS
from dataplane.table import RuntimeTable, TableError
from megarouter.v1 import discovery_pb2, discovery_pb2_grpc, routing_pb2

log = logging.getLogger("megarouter.proxy.discovery")

BACKOFF_INITIAL_S = 0.1
BACKOFF_MAX_S = 5.0
INVALID_ARGUMENT = 3  # google.rpc.Code


def load_cached_table(path: Path) -> tuple[RuntimeTable | None, str]:
    """The table saved by a previous run if present and loadable, else (None, why not)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None, f"no cached table at {path}"
    except OSError as exc:
        reason = f"cannot read the cached table {path}: {exc.strerror}"
    else:
        try:
            if not data:
                raise TableError("the file is empty")
            return RuntimeTable.load(routing_pb2.RoutingTable.FromString(data)), ""
        except Exception as exc:  # a corrupt cache must never stop a proxy starting
            reason = f"ignored the cached table {path}: {exc}"
    log.warning("%s; not ready until the control plane answers", reason)
    return None, reason


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


class StreamFailed(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(code.name)
        self.code, self.details = code, details


class DiscoveryClient:
    def __init__(
        self,
        link: ControlPlaneLink,
        node: discovery_pb2.Node,
        current: Callable[[], RuntimeTable | None],
        install: Callable[[RuntimeTable], None],
        cache_path: Path | None,
        on_fleet_health: Callable[[discovery_pb2.FleetHealth], None] | None = None,
    ) -> None:
        self._link = link
        self._addresses = link.addresses
        self._node = node
        self._current = current
        self._install = install
        self._cache_path = cache_path
        self._on_fleet_health = on_fleet_health

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
            except StreamFailed as failure:
                level = logging.ERROR if failure.code in REFUSALS else logging.WARNING
                log.log(level, "discovery stream to %s failed: %s", address,
                        describe_failure(failure.code, failure.details))
            except Exception:
                log.exception("discovery stream to %s failed unexpectedly", address)
            # Full jitter: spread a fleet's reconnects over the window.
            await asyncio.sleep(random.uniform(0, backoff))
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    async def _stream(self, address: str) -> bool:
        """One stream's life; True if it delivered at least one table."""
        delivered = False
        async with self._link.channel(address) as channel:
            call = discovery_pb2_grpc.DiscoveryStub(channel).StreamRoutingTables(metadata=self._link.metadata)
            try:
                await call.write(discovery_pb2.DiscoveryRequest(node=self._node, version_info=self._version()))
                log.info("discovery stream open to %s", address)
                while True:
                    response = await call.read()
                    if response is grpc.aio.EOF:
                        return delivered
                    delivered = True
                    await call.write(await self._apply(response))
            except grpc.aio.AioRpcError as exc:
                raise StreamFailed(*await call_status(call, exc)) from None

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
