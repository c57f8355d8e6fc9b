"""Reports per-endpoint stats to the control plane every few seconds.

Best effort: counters drained for a report that cannot be sent are dropped,
never queued without bound — the proxy's own routing does not depend on
them, only the fleet view does.
"""

from __future__ import annotations

import asyncio
import logging

import grpc

from dataplane.discovery_client import CHANNEL_OPTIONS
from dataplane.stats import EndpointCounters, EndpointStats
from megarouter.v1 import discovery_pb2, telemetry_pb2, telemetry_pb2_grpc

log = logging.getLogger("megarouter.proxy.telemetry")


def build_report(stats: EndpointStats, interval_s: float) -> telemetry_pb2.StatsReport:
    report = telemetry_pb2.StatsReport(interval_ms=int(interval_s * 1000))
    ejected = set(stats.outliers.ejected_endpoints(stats.health.now()))
    drained = stats.drain()
    for endpoint in sorted(set(drained) | ejected):
        counters = drained.get(endpoint) or EndpointCounters()
        report.endpoints.append(
            telemetry_pb2.EndpointStats(
                endpoint=endpoint,
                requests=counters.requests,
                successes=counters.successes,
                errors_by_class=counters.errors_by_class,
                latency_ms_sum=counters.latency_ms_sum,
                ttft_ms_sum=counters.ttft_ms_sum,
                ttft_count=counters.ttft_count,
                prompt_tokens=counters.prompt_tokens,
                completion_tokens=counters.completion_tokens,
                cost_usd=counters.cost_usd,
                ejected=endpoint in ejected,
            )
        )
    return report


async def report_stats(
    addresses: list[str], node: discovery_pb2.Node, stats: EndpointStats, interval_s: float
) -> None:
    attempt = 0
    while True:
        address = addresses[attempt % len(addresses)]
        attempt += 1
        try:
            async with grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
                call = telemetry_pb2_grpc.TelemetryStub(channel).ReportStats()
                first = True
                while True:
                    await asyncio.sleep(interval_s)
                    report = build_report(stats, interval_s)
                    if first:
                        report.node.CopyFrom(node)
                    await call.write(report)
                    first = False
        except grpc.aio.AioRpcError as exc:
            log.debug("telemetry stream to %s failed: %s", address, exc.code().name)
        except Exception:
            log.exception("telemetry stream to %s failed unexpectedly", address)
        await asyncio.sleep(min(interval_s, 1.0))
