"""The Telemetry service: per-endpoint stats reported by proxies.

This release records the reports (latest per node, and fleet counters as
Prometheus metrics); fleet health aggregation builds on it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import grpc
from prometheus_client import Counter

from megarouter.v1 import telemetry_pb2, telemetry_pb2_grpc

log = logging.getLogger("megarouter.controlplane.telemetry")

REPORTS = Counter("megarouter_cp_telemetry_reports_total", "Stats reports received from proxies")
FLEET_REQUESTS = Counter(
    "megarouter_cp_fleet_endpoint_requests_total", "Requests reported by proxies", ["endpoint"]
)
FLEET_ERRORS = Counter(
    "megarouter_cp_fleet_endpoint_errors_total", "Errors reported by proxies", ["endpoint", "error_class"]
)


@dataclass
class NodeReport:
    node_id: str
    received_at: float
    report: telemetry_pb2.StatsReport


class TelemetryService(telemetry_pb2_grpc.TelemetryServicer):
    def __init__(self) -> None:
        self.latest: dict[str, NodeReport] = {}

    async def ReportStats(self, request_iterator, context: grpc.aio.ServicerContext) -> telemetry_pb2.StatsAck:
        node_id = ""
        received = 0
        async for report in request_iterator:
            if report.node.id:
                node_id = report.node.id
            if not node_id:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "node.id is required on the first report")
            received += 1
            REPORTS.inc()
            self.latest[node_id] = NodeReport(node_id, time.time(), report)
            for stats in report.endpoints:
                FLEET_REQUESTS.labels(stats.endpoint).inc(stats.requests)
                for error_class, count in stats.errors_by_class.items():
                    FLEET_ERRORS.labels(stats.endpoint, error_class).inc(count)
        return telemetry_pb2.StatsAck(reports_received=received)
