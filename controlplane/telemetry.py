"""The Telemetry service: per-endpoint stats and usage reported by proxies.

Reports feed the fleet health view (`fleet.py`) that is pushed back to
every proxy, fleet-wide Prometheus counters, and usage analytics
(`usage.py`), which persists per-key usage.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc
from prometheus_client import Counter

from controlplane import rbac
from controlplane.budgets import NODE_ID_PATTERN
from controlplane.fleet import STALE_AFTER_S, FleetTotals, FleetView, merged_view
from controlplane.replicas import ReplicaSet
from controlplane.store import StoreError
from controlplane.usage import UsageAggregator
from megarouter.v1 import telemetry_pb2, telemetry_pb2_grpc

log = logging.getLogger("megarouter.controlplane.telemetry")

REPORTS = Counter("megarouter_cp_telemetry_reports_total", "Stats reports received from proxies")
FLEET_REQUESTS = Counter(
    "megarouter_cp_fleet_endpoint_requests_total", "Requests reported by proxies", ["endpoint"]
)
FLEET_ERRORS = Counter(
    "megarouter_cp_fleet_endpoint_errors_total", "Errors reported by proxies", ["endpoint", "error_class"]
)


# A report larger than this is not a proxy's: refused rather than held in memory.
MAX_ENDPOINTS_PER_REPORT = 20_000
MAX_USAGE_PER_REPORT = 200_000


def report_problem(report: telemetry_pb2.StatsReport) -> str:
    """Why a report cannot be true ('' if it can): sizes, and sums that must be finite and
    not negative. Counters are unsigned on the wire already."""
    if len(report.endpoints) > MAX_ENDPOINTS_PER_REPORT:
        return f"endpoints: more than {MAX_ENDPOINTS_PER_REPORT} in one report"
    if len(report.usage) > MAX_USAGE_PER_REPORT:
        return f"usage: more than {MAX_USAGE_PER_REPORT} records in one report"
    for index, stats in enumerate(report.endpoints):
        for name in ("latency_ms_sum", "ttft_ms_sum", "cost_usd"):
            value = getattr(stats, name)
            if not (math.isfinite(value) and value >= 0):
                return f"endpoints[{index}].{name}: must be finite and not negative"
        if stats.successes > stats.requests:
            return f"endpoints[{index}].successes: more than its requests"
    for index, record in enumerate(report.usage):
        if not (math.isfinite(record.cost_usd) and record.cost_usd >= 0):
            return f"usage[{index}].cost_usd: must be finite and not negative"
        if record.errors > record.requests:
            return f"usage[{index}].errors: more than its requests"
    return ""


@dataclass
class NodeReport:
    node_id: str
    received_at: float
    report: telemetry_pb2.StatsReport


class TelemetryService(telemetry_pb2_grpc.TelemetryServicer):
    def __init__(self, fleet: FleetView, usage: UsageAggregator | None = None,
                 known_endpoints: Callable[[], frozenset[str] | None] | None = None) -> None:
        self.latest: dict[str, NodeReport] = {}
        self._fleet = fleet
        self._usage = usage
        # The endpoints of the table being pushed (None: no table yet): stats about any other
        # name are dropped, so a report cannot grow the fleet view or its metrics without bound.
        self._known_endpoints = known_endpoints or (lambda: None)

    async def ReportStats(self, request_iterator, context: grpc.aio.ServicerContext) -> telemetry_pb2.StatsAck:
        node_id = ""
        received = 0
        async for report in request_iterator:
            if report.node.id:
                node_id = report.node.id
            if not NODE_ID_PATTERN.match(node_id):
                rbac.REFUSED.labels("proxy", "range").inc()
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "node.id is required on the first report "
                                    "(up to 128 letters, digits or ._:@/-)")
            problem = report_problem(report)
            if problem:
                rbac.REFUSED.labels("proxy", "range").inc()
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"invalid stats report: {problem}")
            known = self._known_endpoints()
            if known is not None and any(stats.endpoint not in known for stats in report.endpoints):
                unknown = [stats for stats in report.endpoints if stats.endpoint not in known]
                rbac.REFUSED.labels("proxy", "unknown_endpoint").inc(len(unknown))
                for stats in unknown:
                    report.endpoints.remove(stats)
            received += 1
            REPORTS.inc()
            self.latest[node_id] = NodeReport(node_id, time.time(), report)
            self._fleet.add_report(node_id, report)
            if self._usage is not None and report.usage:
                self._usage.add(report.usage)
            for stats in report.endpoints:
                FLEET_REQUESTS.labels(stats.endpoint).inc(stats.requests)
                for error_class, count in stats.errors_by_class.items():
                    FLEET_ERRORS.labels(stats.endpoint, error_class).inc(count)
        return telemetry_pb2.StatsAck(reports_received=received)


FLEET_SHARE = "fleet-health"


async def publish_fleet_health(
    fleet: FleetView, snapshots, interval_s: float, replicas: ReplicaSet | None = None
) -> None:
    """Push the fleet view at most every `interval_s`, when reports changed it.

    With other control-plane replicas running, this replica's sums go into the store (under
    its lease) and the others' sums are merged in, so every proxy sees the whole fleet
    whichever replica it is connected to. A single replica writes nothing to the store.
    """
    published = (-1, -1)  # (fleet generation, membership) last shared
    pushes = 0
    peers_changed = replicas.subscribe() if replicas is not None else None
    while True:
        await _next_change(fleet, peers_changed)
        local = fleet.totals()
        others: list[FleetTotals] = []
        if replicas is not None and replicas.peers():
            if (fleet.generation, replicas.membership) != published:
                try:
                    await replicas.publish(FLEET_SHARE, local.encode())
                    published = (fleet.generation, replicas.membership)
                except StoreError as exc:
                    log.warning("cannot share fleet health with the other replicas: %s", exc)
            now = time.time()
            for replica_id, data in replicas.shared.get(FLEET_SHARE, {}).items():
                totals = FleetTotals.decode(data)
                if replica_id != replicas.replica_id and now - totals.at_unix_s <= STALE_AFTER_S:
                    others.append(totals)
        pushes += 1
        await snapshots.publish_health(merged_view(pushes, [local, *others]))
        await asyncio.sleep(interval_s)  # batch the reports of the next interval into one push


async def _next_change(fleet: FleetView, peers_changed: asyncio.Event | None) -> None:
    waits = [asyncio.create_task(fleet.wait_changed())]
    if peers_changed is not None:
        waits.append(asyncio.create_task(peers_changed.wait()))
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
    if peers_changed is not None:
        peers_changed.clear()
