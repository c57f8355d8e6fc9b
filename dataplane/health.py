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

    def _decay(self, now: float) -> None:
        if self.updated_at:
            factor = math.exp2(-(now - self.updated_at) / DECAY_HALF_LIFE_S)
            self.successes *= factor
            self.failures *= factor
        self.updated_at = now

    def success_probability(self, now: float | None = None) -> float:
        factor = 1.0
        if now is not None and self.updated_at:
            factor = math.exp2(-(now - self.updated_at) / DECAY_HALF_LIFE_S)
        good = self.successes * factor + PRIOR_SUCCESSES
        bad = self.failures * factor + PRIOR_FAILURES
        return good / (good + bad)


class HealthRegistry:
    def __init__(self, clock=time.monotonic) -> None:
        self._endpoints: dict[str, EndpointHealth] = {}
        self._clock = clock

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
        """An attempt ended: ok, failed, or (None) abandoned by the client."""
        health = self.get(endpoint)
        health.inflight = max(0, health.inflight - 1)
        if ok is None:
            return
        health._decay(self._clock())
        if ok:
            health.successes += 1.0
        else:
            health.failures += 1.0
        if ttft_s is not None:
            health.ttft_s = _ewma(health.ttft_s, ttft_s)
        elif latency_s is not None and ok:
            health.latency_s = _ewma(health.latency_s, latency_s)
        if not ok and latency_s is not None:
            # A failure that took long (a timeout) is evidence of slowness;
            # a fast failure must not make the endpoint look fast.
            health.latency_s = _ewma(health.latency_s, max(latency_s, health.latency_s or 0.0))


def _ewma(average: float | None, sample: float) -> float:
    return sample if average is None else average + LATENCY_ALPHA * (sample - average)
