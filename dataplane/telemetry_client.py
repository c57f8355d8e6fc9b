"""Reports per-endpoint stats and usage to the control plane every few seconds.

Endpoint counters are best effort: drained for a report that cannot be
sent, they are dropped — the proxy's own routing does not depend on them,
only the fleet view does. Usage records (analytics and chargeback) are kept:
a report that cannot be written gives its usage back to the stats, merged
into what accumulates meanwhile (bounded by the number of distinct usage
keys, never a queue of reports), and it goes out with the next report.
On shutdown a last report is sent, briefly.
"""

from __future__ import annotations

import asyncio
import datetime
import logging

import grpc

from dataplane.control_plane import REFUSALS, ControlPlaneLink, describe_failure
from dataplane.stats import EndpointCounters, EndpointStats
from dataplane.usage import UsageCounters, UsageKey, UsageLedger
from megarouter.v1 import discovery_pb2, telemetry_pb2, telemetry_pb2_grpc

log = logging.getLogger("megarouter.proxy.telemetry")

FINAL_REPORT_TIMEOUT_S = 2.0
_EPOCH_DAY = datetime.date(1970, 1, 1).toordinal()


def build_report(stats: EndpointStats, interval_s: float) -> telemetry_pb2.StatsReport:
    report = telemetry_pb2.StatsReport(interval_ms=int(interval_s * 1000))
    stats.expire_suspects(stats.health.now())
    ejected = set(stats.outliers.ejected_endpoints(stats.health.now() - interval_s))
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


def _day(days_since_epoch: int) -> str:
    return datetime.date.fromordinal(_EPOCH_DAY + days_since_epoch).isoformat()


def add_usage(report: telemetry_pb2.StatsReport, usage: dict[UsageKey, UsageCounters]) -> None:
    days: dict[int, str] = {}
    for (key, node, model, route, day), counters in usage.items():
        text = days.get(day)
        if text is None:
            text = days[day] = _day(day)
        report.usage.append(telemetry_pb2.UsageRecord(
            key=key, node=node, model=model, route=route, day=text, requests=counters.requests,
            errors=counters.errors, prompt_tokens=counters.prompt_tokens,
            completion_tokens=counters.completion_tokens, cost_usd=counters.cost_usd,
            latency_ms_buckets=counters.latency_ms_buckets,
        ))


async def _send(call, ledger: UsageLedger, report: telemetry_pb2.StatsReport) -> None:
    """Write one report with the usage counted so far; on failure the usage goes back."""
    usage = ledger.drain()
    add_usage(report, usage)
    try:
        await call.write(report)
    except BaseException:
        ledger.restore(usage)
        raise


async def _final_report(call, stats: EndpointStats, ledger: UsageLedger, interval_s: float,
                        node: discovery_pb2.Node | None) -> None:
    report = build_report(stats, interval_s)
    if node is not None:
        report.node.CopyFrom(node)
    await _send(call, ledger, report)
    await call.done_writing()
    await call  # the control plane has read every report


async def report_stats(
    link: ControlPlaneLink, node: discovery_pb2.Node, stats: EndpointStats, ledger: UsageLedger,
    interval_s: float,
) -> None:
    addresses = link.addresses
    attempt = 0
    while True:
        address = addresses[attempt % len(addresses)]
        attempt += 1
        try:
            async with link.channel(address) as channel:
                call = telemetry_pb2_grpc.TelemetryStub(channel).ReportStats(metadata=link.metadata)
                first = True
                try:
                    while True:
                        await asyncio.sleep(interval_s)
                        report = build_report(stats, interval_s)
                        if first:
                            report.node.CopyFrom(node)
                        await _send(call, ledger, report)
                        first = False
                except asyncio.CancelledError:
                    # Shutting down: deliver the usage counted since the last report.
                    try:
                        await asyncio.wait_for(_final_report(call, stats, ledger, interval_s, node if first else None),
                                               FINAL_REPORT_TIMEOUT_S)
                    except (Exception, asyncio.CancelledError):
                        log.debug("last telemetry report to %s not delivered", address)
                    raise
        except grpc.aio.AioRpcError as exc:
            if exc.code() in REFUSALS:
                log.error("telemetry stream to %s refused: %s", address, describe_failure(exc.code(), exc.details()))
            else:
                log.debug("telemetry stream to %s failed: %s", address, exc.code().name)
        except asyncio.InvalidStateError:
            log.debug("telemetry stream to %s ended", address)  # the control plane went away
        except Exception:
            log.exception("telemetry stream to %s failed unexpectedly", address)
        await asyncio.sleep(min(interval_s, 1.0))
