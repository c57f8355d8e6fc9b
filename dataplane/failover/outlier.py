"""Outlier ejection: stop sending to an endpoint that keeps failing.

An endpoint is ejected after `CONSECUTIVE_FAILURES` failures in a row, or
when its recent success rate falls far below its peers'. Ejection lasts
`BASE_EJECTION_S * 2^(n-1)` for its n-th ejection (capped), then the
endpoint is half-open: live traffic probes it, one success restores it, one
failure ejects it again for longer. A 429's Retry-After puts the endpoint in
a cool-down for that long. The router never removes the last usable
endpoint of a request's path for these reasons (see `router.plan`).

Only failures that say something about the endpoint count: the caller's own
errors and client disconnects do not.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import Counter, Gauge

from dataplane.providers.base import ErrorClass

CONSECUTIVE_FAILURES = 5
BASE_EJECTION_S = 5.0
MAX_EJECTION_S = 300.0
# Success-rate outliers: at least this many recent outcomes, and this far
# below the mean of the other endpoints.
MIN_SAMPLES_FOR_RATE = 20
RATE_GAP = 0.3
MAX_COOLDOWN_S = 300.0

_EJECTING_CLASSES = frozenset({ErrorClass.RETRYABLE, ErrorClass.TIMEOUT, ErrorClass.ENDPOINT, "stream_interrupted"})

EJECTIONS = Counter("megarouter_endpoint_ejections_total", "Outlier ejections", ["endpoint", "reason"])
EJECTED = Gauge("megarouter_endpoint_ejected", "1 while the endpoint is ejected by this proxy", ["endpoint"])


@dataclass(slots=True)
class _State:
    consecutive_failures: int = 0
    ejections: int = 0
    ejected_until: float = 0.0
    cooldown_until: float = 0.0
    half_open: bool = False


class OutlierDetector:
    def __init__(self, base_ejection_s: float = BASE_EJECTION_S) -> None:
        self._states: dict[str, _State] = {}
        self._base_ejection_s = base_ejection_s

    def _state(self, endpoint: str) -> _State:
        state = self._states.get(endpoint)
        if state is None:
            state = self._states[endpoint] = _State()
        return state

    def unavailable_reason(self, endpoint: str, now: float) -> str:
        """'' if the endpoint may be tried now, else why not."""
        state = self._states.get(endpoint)
        if state is None:
            return ""
        if now < state.ejected_until:
            return f"ejected for {state.ejected_until - now:.1f}s"
        if state.ejected_until and not state.half_open:
            state.half_open = True      # ejection over: the next request probes it
            EJECTED.labels(endpoint).set(0)
        if now < state.cooldown_until:
            return f"cooling down {state.cooldown_until - now:.1f}s (Retry-After)"
        return ""

    def is_ejected(self, endpoint: str, now: float) -> bool:
        state = self._states.get(endpoint)
        return state is not None and now < state.ejected_until

    def record(self, endpoint: str, outcome: str, now: float, *, retry_after_s: float | None = None,
               success_rate: float | None = None, peer_rate: float | None = None, samples: float = 0.0) -> None:
        if outcome == "cancelled" or outcome in (ErrorClass.INVALID_REQUEST, ErrorClass.CONTENT_FILTER):
            return
        state = self._state(endpoint)
        if outcome == ErrorClass.RATE_LIMITED:
            if retry_after_s:
                state.cooldown_until = max(state.cooldown_until, now + min(retry_after_s, MAX_COOLDOWN_S))
            return
        if outcome == "success":
            state.consecutive_failures = 0
            if state.half_open:  # the probe worked: fully back
                state.half_open = False
                state.ejected_until = 0.0
            elif state.ejections and now - state.ejected_until > MAX_EJECTION_S:
                state.ejections = 0  # healthy for long: the next ejection starts short again
            return
        if outcome not in _EJECTING_CLASSES:
            return
        state.consecutive_failures += 1
        if state.half_open:
            self._eject(endpoint, state, now, "probe_failed")
        elif state.consecutive_failures >= CONSECUTIVE_FAILURES:
            self._eject(endpoint, state, now, "consecutive_failures")
        elif (success_rate is not None and peer_rate is not None and samples >= MIN_SAMPLES_FOR_RATE
              and success_rate < peer_rate - RATE_GAP):
            self._eject(endpoint, state, now, "success_rate")

    def _eject(self, endpoint: str, state: _State, now: float, reason: str) -> None:
        state.ejections += 1
        duration = min(MAX_EJECTION_S, self._base_ejection_s * 2 ** (state.ejections - 1))
        state.ejected_until = now + duration
        state.half_open = False
        state.consecutive_failures = 0
        EJECTIONS.labels(endpoint, reason).inc()
        EJECTED.labels(endpoint).set(1)

    def ejected_endpoints(self, now: float) -> list[str]:
        return [name for name, state in self._states.items() if now < state.ejected_until]
