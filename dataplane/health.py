"""Live health of each endpoint, as this proxy sees it.

Exponentially weighted latency and time-to-first-token, requests in flight,
and success/failure counts that decay with time (so an endpoint that failed
a minute ago is not judged by it forever). Updated on the request path —
O(1), no allocation — and read by the router's strategies.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

# Weight of a new latency sample in the moving average: high enough that a
# degraded endpoint is noticed within a handful of requests.
LATENCY_ALPHA = 0.3
# Success/failure counts halve every this many seconds without new samples.
DECAY_HALF_LIFE_S = 30.0
# Beta prior on the success probability: an unseen endpoint is assumed to
# succeed ~95% of the time, worth a few observations.
PRIOR_SUCCESSES = 1.9
PRIOR_FAILURES = 0.1


@dataclass(slots=True)
class EndpointHealth:
    latency_s: float | None = None     # EWMA of whole-request latency (JSON)
    ttft_s: float | None = None        # EWMA of time to first token (streams)
    inflight: int = 0
    successes: float = 0.0             # decayed counts
    failures: float = 0.0
    updated_at: float = 0.0
    measured_at: float = 0.0           # when latency or TTFT last changed

    def decay_factor(self, now: float) -> float:
        """How much of the counts is left at `now` (halving every DECAY_HALF_LIFE_S)."""
        return math.exp2(-(now - self.updated_at) / DECAY_HALF_LIFE_S) if self.updated_at else 1.0

    def _decay(self, now: float) -> None:
        if self.updated_at:
            factor = self.decay_factor(now)
            self.successes *= factor
            self.failures *= factor
        self.updated_at = now


# A latency measurement older than this no longer counts: the endpoint is
# treated as unmeasured (optimistically fast), so live traffic re-measures it.
# Without this, an endpoint that was slow once would never be tried again.
STALE_LATENCY_S = 15.0
# Each request in flight makes an endpoint look this much slower.
INFLIGHT_PENALTY = 0.15
# How many observations the fleet's view of an endpoint is worth, at most,
# next to this proxy's own.
FLEET_WEIGHT = 20.0


@dataclass(frozen=True, slots=True)
class FleetEndpoint:
    """The control plane's aggregate over every proxy (see controlplane/fleet.py)."""

    requests: int
    success_rate: float
    latency_s: float | None
    ttft_s: float | None
    ejected_by: int


class HealthRegistry:
    def __init__(self, clock=time.monotonic) -> None:
        self._endpoints: dict[str, EndpointHealth] = {}
        self._clock = clock
        self.fleet: dict[str, FleetEndpoint] = {}
        self.fleet_proxies = 0
        self.fleet_generation = 0

    def set_fleet(self, view) -> None:
        """Install a pushed `FleetHealth` view."""
        self.fleet = {
            e.endpoint: FleetEndpoint(e.requests, e.success_rate, e.latency_ms / 1000 if e.latency_ms else None,
                                      e.ttft_ms / 1000 if e.ttft_ms else None, e.ejected_by)
            for e in view.endpoints
        }
        self.fleet_proxies = view.proxies
        self.fleet_generation = view.generation

    def estimates(self, endpoint: str, stream: bool, now: float) -> tuple[float, float | None]:
        """(success probability, predicted latency) in one lookup — the router needs both for
        every candidate.

        Success: this proxy's decayed counts, the fleet's recent rate and the prior, pooled.
        Latency (seconds; TTFT for streams): this proxy's measurement unless stale, load-
        adjusted, else the fleet's; None when neither knows."""
        state = self._endpoints.get(endpoint)
        fleet = self.fleet.get(endpoint) if self.fleet else None
        good, bad = PRIOR_SUCCESSES, PRIOR_FAILURES
        latency = None
        if state is not None:
            if state.successes or state.failures:
                factor = state.decay_factor(now)
                good += state.successes * factor
                bad += state.failures * factor
            if now - state.measured_at <= STALE_LATENCY_S:
                own = state.ttft_s if stream and state.ttft_s is not None else state.latency_s
                if own is not None:
                    latency = own * (1 + INFLIGHT_PENALTY * state.inflight)
        if fleet is not None:
            if fleet.requests:
                weight = min(float(fleet.requests), FLEET_WEIGHT)
                good += fleet.success_rate * weight
                bad += (1 - fleet.success_rate) * weight
            if latency is None:
                latency = fleet.ttft_s if stream and fleet.ttft_s is not None else fleet.latency_s
        return good / (good + bad), latency

    def success_probability(self, endpoint: str, now: float) -> float:
        return self.estimates(endpoint, False, now)[0]

    def latency(self, endpoint: str, stream: bool, now: float | None = None) -> float | None:
        return self.estimates(endpoint, stream, self._clock() if now is None else now)[1]

    def fleet_ejected(self, endpoint: str) -> bool:
        """Ejected by at least half of the proxies reporting (and at least one)."""
        fleet = self.fleet.get(endpoint)
        return fleet is not None and fleet.ejected_by >= max(1, (self.fleet_proxies + 1) // 2)

    def get(self, endpoint: str) -> EndpointHealth:
        health = self._endpoints.get(endpoint)
        if health is None:
            health = self._endpoints[endpoint] = EndpointHealth()
        return health

    def peek(self, endpoint: str) -> EndpointHealth | None:
        return self._endpoints.get(endpoint)

    def now(self) -> float:
        return self._clock()

    def names(self) -> list[str]:
        return list(self._endpoints)

    def started(self, endpoint: str) -> None:
        self.get(endpoint).inflight += 1

    def finished(self, endpoint: str, ok: bool | None, latency_s: float | None, ttft_s: float | None) -> None:
        """An attempt ended: ok, failed, or (None) abandoned by the client / not the endpoint's doing."""
        health = self.get(endpoint)
        health.inflight = max(0, health.inflight - 1)
        if ok is not None:
            self.observe(endpoint, ok, latency_s, ttft_s)

    def observe(self, endpoint: str, ok: bool, latency_s: float | None, ttft_s: float | None) -> None:
        """Count an attempt's outcome (its end was `finished` already, or is being now)."""
        health = self.get(endpoint)
        now = self._clock()
        health._decay(now)
        if ok:
            health.successes += 1.0
        else:
            health.failures += 1.0
        if ttft_s is not None:
            health.ttft_s = _ewma(health.ttft_s, ttft_s)
            health.measured_at = health.updated_at
        elif latency_s is not None and ok:
            health.latency_s = _ewma(health.latency_s, latency_s)
            health.measured_at = health.updated_at
        if not ok and latency_s is not None:
            # A failure that took long (a timeout) is evidence of slowness;
            # a fast failure must not make the endpoint look fast.
            health.latency_s = _ewma(health.latency_s, max(latency_s, health.latency_s or 0.0))


def _ewma(average: float | None, sample: float) -> float:
    return sample if average is None else average + LATENCY_ALPHA * (sample - average)
