"""Fleet health: every proxy's endpoint stats, aggregated.

Each telemetry report adds a sample per (proxy, endpoint) to a sliding
window; `totals()` sums the window across proxies and `merged_view()` turns
sums into one view per endpoint — success rate, mean latency and TTFT, how
many proxies report it and how many have it ejected right now. The control plane pushes that view
to every proxy, so an endpoint failing for one proxy is avoided by the
others before their own traffic suffers.

With several control-plane replicas each one hears only its own proxies, so
each publishes its sums (`FleetTotals`) in the store under its lease and
merges the others' into what it pushes (`controlplane/telemetry.py`).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field

import orjson

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

    def totals(self) -> FleetTotals:
        """This replica's sums over the window: what its own proxies reported."""
        now = self._clock()
        totals = FleetTotals()
        for node_id in list(self._proxies):
            proxy = self._proxies[node_id]
            if now - proxy.last_report > STALE_AFTER_S:
                del self._proxies[node_id]
                continue
            totals.proxies += 1
            for endpoint in proxy.ejected:
                totals.endpoint(endpoint)[6] += 1
            for endpoint, window in proxy.samples.items():
                while window and now - window[0].at > WINDOW_S:
                    window.popleft()
                if not window:
                    continue
                total = totals.endpoint(endpoint)
                for sample in window:
                    total[0] += sample.requests
                    total[1] += sample.successes
                    total[2] += sample.latency_ms_sum
                    total[3] += sample.ttft_ms_sum
                    total[4] += sample.ttft_count
                total[5] += 1
        return totals

    @property
    def generation(self) -> int:
        return self._generation


@dataclass
class FleetTotals:
    """Sums per endpoint: [requests, successes, latency_ms_sum, ttft_ms_sum, ttft_count,
    reporting proxies, proxies ejecting it]. Sums, not means, so replicas' shares add up."""

    proxies: int = 0
    endpoints: dict[str, list[float]] = field(default_factory=dict)
    at_unix_s: float = field(default_factory=time.time)

    def endpoint(self, name: str) -> list[float]:
        return self.endpoints.setdefault(name, [0, 0, 0.0, 0.0, 0, 0, 0])

    def encode(self) -> bytes:
        return orjson.dumps({"proxies": self.proxies, "endpoints": self.endpoints, "at_unix_s": self.at_unix_s})

    @classmethod
    def decode(cls, data: bytes) -> FleetTotals:
        raw = orjson.loads(data)
        return cls(int(raw["proxies"]), {name: list(values) for name, values in raw["endpoints"].items()},
                   float(raw["at_unix_s"]))


def merged_view(generation: int, parts: list[FleetTotals]) -> discovery_pb2.FleetHealth:
    merged = FleetTotals()
    for part in parts:
        merged.proxies += part.proxies
        for name, values in part.endpoints.items():
            total = merged.endpoint(name)
            for i, value in enumerate(values):
                total[i] += value
    view = discovery_pb2.FleetHealth(
        generation=generation, generated_at_unix_ms=int(time.time() * 1000), proxies=merged.proxies,
        window_s=WINDOW_S,
    )
    for endpoint in sorted(merged.endpoints):
        requests, successes, latency, ttft, ttft_n, proxies, ejected_by = merged.endpoints[endpoint]
        view.endpoints.add(
            endpoint=endpoint,
            requests=int(requests),
            success_rate=successes / requests if requests else 0.0,
            latency_ms=latency / requests if requests else 0.0,
            ttft_ms=ttft / ttft_n if ttft_n else 0.0,
            reporting_proxies=int(proxies),
            ejected_by=int(ejected_by),
        )
    return view


class HealthHistory:
    """The recent past of the fleet health view, for the console's per-endpoint sparklines:
    one point per `step_s` (the last view published in each step), `points` of them per
    endpoint. In memory, per replica — each replica publishes the merged view of the whole
    fleet, so any replica's history tells the same story; a restarted replica starts empty."""

    def __init__(self, step_s: float = 30.0, points: int = 60) -> None:
        self.step_s = step_s
        self._points = points
        self._steps: deque[tuple[int, discovery_pb2.FleetHealth]] = deque(maxlen=points)

    def record(self, view: discovery_pb2.FleetHealth) -> None:
        step = int(view.generated_at_unix_ms // (self.step_s * 1000))
        if self._steps and self._steps[-1][0] == step:
            self._steps[-1] = (step, view)   # the latest view of a step stands for it
        else:
            self._steps.append((step, view))

    def series(self) -> dict[str, list[tuple[int, float, float, int]]]:
        """endpoint -> [(unix ms, success rate, mean latency ms, requests)], oldest first; a
        step in which the endpoint had no traffic is left out."""
        result: dict[str, list[tuple[int, float, float, int]]] = {}
        for _step, view in self._steps:
            for endpoint in view.endpoints:
                result.setdefault(endpoint.endpoint, []).append(
                    (view.generated_at_unix_ms, endpoint.success_rate, endpoint.latency_ms, endpoint.requests))
        return result
