"""Fleet health: every proxy's endpoint stats, aggregated.

Each telemetry report adds a sample per (proxy, endpoint) to a sliding
window; `snapshot()` sums the window across proxies into one view per
endpoint — success rate, mean latency and TTFT, how many proxies report it
and how many have it ejected right now. The control plane pushes that view
to every proxy, so an endpoint failing for one proxy is avoided by the
others before their own traffic suffers.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field

from megarouter.v1 import discovery_pb2, telemetry_pb2

WINDOW_S = 30.0
# A proxy that has not reported for this long no longer counts as reporting
# (its ejections are forgotten too).
STALE_AFTER_S = 15.0


@dataclass(slots=True)
class _Sample:
    at: float
    requests: int
    successes: int
    latency_ms_sum: float
    ttft_ms_sum: float
    ttft_count: int


@dataclass
class _ProxyView:
    last_report: float = 0.0
    ejected: set[str] = field(default_factory=set)
    samples: dict[str, deque[_Sample]] = field(default_factory=dict)


class FleetView:
    def __init__(self, clock=time.monotonic) -> None:
        self._proxies: dict[str, _ProxyView] = {}
        self._clock = clock
        self._generation = 0
        self._changed = asyncio.Event()

    def add_report(self, node_id: str, report: telemetry_pb2.StatsReport) -> None:
        now = self._clock()
        proxy = self._proxies.setdefault(node_id, _ProxyView())
        proxy.last_report = now
        proxy.ejected = {stats.endpoint for stats in report.endpoints if stats.ejected}
        for stats in report.endpoints:
            if not stats.requests:
                continue
            window = proxy.samples.setdefault(stats.endpoint, deque())
            window.append(_Sample(now, stats.requests, stats.successes, stats.latency_ms_sum,
                                  stats.ttft_ms_sum, stats.ttft_count))
        self._generation += 1
        self._changed.set()

    async def wait_changed(self) -> None:
        await self._changed.wait()
        self._changed.clear()

    def snapshot(self) -> discovery_pb2.FleetHealth:
        now = self._clock()
        totals: dict[str, list[float]] = {}   # endpoint -> [requests, successes, latency, ttft, ttft_n, proxies]
        ejected_by: dict[str, int] = {}
        live = 0
        for node_id in list(self._proxies):
            proxy = self._proxies[node_id]
            if now - proxy.last_report > STALE_AFTER_S:
                del self._proxies[node_id]
                continue
            live += 1
            for endpoint in proxy.ejected:
                ejected_by[endpoint] = ejected_by.get(endpoint, 0) + 1
            for endpoint, window in proxy.samples.items():
                while window and now - window[0].at > WINDOW_S:
                    window.popleft()
                if not window:
                    continue
                total = totals.setdefault(endpoint, [0, 0, 0.0, 0.0, 0, 0])
                for sample in window:
                    total[0] += sample.requests
                    total[1] += sample.successes
                    total[2] += sample.latency_ms_sum
                    total[3] += sample.ttft_ms_sum
                    total[4] += sample.ttft_count
                total[5] += 1
        view = discovery_pb2.FleetHealth(
            generation=self._generation, generated_at_unix_ms=int(time.time() * 1000), proxies=live,
            window_s=WINDOW_S,
        )
        for endpoint in sorted(set(totals) | set(ejected_by)):
            requests, successes, latency, ttft, ttft_n, proxies = totals.get(endpoint, [0, 0, 0.0, 0.0, 0, 0])
            view.endpoints.add(
                endpoint=endpoint,
                requests=int(requests),
                success_rate=successes / requests if requests else 0.0,
                latency_ms=latency / requests if requests else 0.0,
                ttft_ms=ttft / ttft_n if ttft_n else 0.0,
                reporting_proxies=int(proxies),
                ejected_by=ejected_by.get(endpoint, 0),
            )
        return view
