"""Fleet health: one replica's view, and replicas' shares merged into the same view."""

from __future__ import annotations

import pytest

from controlplane.fleet import FleetTotals, FleetView, merged_view
from megarouter.v1 import telemetry_pb2


def report(*stats: telemetry_pb2.EndpointStats) -> telemetry_pb2.StatsReport:
    return telemetry_pb2.StatsReport(endpoints=list(stats))


def stats(endpoint: str, requests: int, successes: int, latency_ms: float, ejected: bool = False,
          ttft_ms: float = 0.0, ttft_count: int = 0) -> telemetry_pb2.EndpointStats:
    return telemetry_pb2.EndpointStats(endpoint=endpoint, requests=requests, successes=successes,
                                       latency_ms_sum=latency_ms, ejected=ejected, ttft_ms_sum=ttft_ms,
                                       ttft_count=ttft_count)


REPORTS = {
    "p1": report(stats("e-a", 10, 5, 1000.0, ejected=True), stats("e-b", 4, 4, 80.0, ttft_ms=40.0, ttft_count=4)),
    "p2": report(stats("e-a", 10, 10, 3000.0), stats("e-c", 0, 0, 0.0, ejected=True)),
    "p3": report(stats("e-b", 6, 3, 120.0, ttft_ms=20.0, ttft_count=2)),
}


def test_replicas_shares_merge_into_the_single_replica_view() -> None:
    """Proxies spread over two replicas give the same fleet view as all on one."""
    one = FleetView()
    for node, rep in REPORTS.items():
        one.add_report(node, rep)
    first, second = FleetView(), FleetView()
    first.add_report("p1", REPORTS["p1"])
    for node in ("p2", "p3"):
        second.add_report(node, REPORTS[node])
    shared = FleetTotals.decode(second.totals().encode())  # as it travels through the store
    merged = merged_view(1, [first.totals(), shared])
    whole = merged_view(1, [one.totals()])
    assert merged.proxies == whole.proxies == 3
    assert list(merged.endpoints) == list(whole.endpoints)
    by_name = {e.endpoint: e for e in merged.endpoints}
    assert by_name["e-a"].requests == 20
    assert by_name["e-a"].success_rate == pytest.approx(0.75)
    assert by_name["e-a"].latency_ms == pytest.approx(200.0)   # (1000 + 3000) / 20
    assert (by_name["e-a"].reporting_proxies, by_name["e-a"].ejected_by) == (2, 1)
    assert by_name["e-b"].success_rate == pytest.approx(0.7)
    assert by_name["e-b"].ttft_ms == pytest.approx(10.0)        # (40 + 20) / 6
    assert (by_name["e-c"].requests, by_name["e-c"].ejected_by) == (0, 1)


def test_a_proxy_that_stops_reporting_leaves_the_view() -> None:
    now = [100.0]
    view = FleetView(clock=lambda: now[0])
    view.add_report("p1", REPORTS["p1"])
    assert view.totals().proxies == 1
    now[0] += 16  # past STALE_AFTER_S
    totals = view.totals()
    assert totals.proxies == 0 and totals.endpoints == {}
