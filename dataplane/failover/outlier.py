"""Outlier ejection: stop sending to an endpoint that keeps failing, and take it back as
soon as it works again.

An endpoint is ejected after `CONSECUTIVE_FAILURES` failures in a row, or when its recent
success rate falls far below its peers'. Its n-th ejection lasts `base * 2^(n-1)` (capped);
then it is half-open: live traffic probes it, one success restores it, one failure ejects
it again for longer. A 429's Retry-After puts the endpoint in a cool-down for that long.

What keeps a long outage from outliving itself:

- **Evidence beats the timer.** Any success — a probe, or traffic sent to an ejected
  endpoint because nothing better was left — restores the endpoint at once.
- **Only probes grow the multiplier.** Failures of traffic that reached an endpoint while
  it was ejected (see the router's panic mode) say nothing new and do not lengthen its
  ejection; only a failed half-open probe does.
- **The multiplier decays** by one step for every `DECAY_S` without a failure, so an
  endpoint with many outages in its past starts short again once it has been quiet.
- **Panic mode** (in the router): when too few endpoints of a tier are usable, ejected
  ones are tried again as fallbacks, and their ejections are cut to `PANIC_PROBE_S` so a
  recovered endpoint is found within seconds rather than after its timer.
- What failed last goes last: `probe_order` ranks unavailable endpoints for panic traffic
  by whether their last attempt failed, then by how long ago.

Only failures that say something about the endpoint count: the caller's own errors and
client disconnects do not.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import Counter, Gauge

from dataplane.providers.base import ErrorClass

CONSECUTIVE_FAILURES = 5
BASE_EJECTION_S = 5.0
MAX_EJECTION_S = 300.0
# One ejection-multiplier step is forgotten per this long without a failure.
DECAY_S = 30.0
# In panic mode an ejected endpoint is probed again this long after its last failure.
PANIC_PROBE_S = 2.0
# Success-rate outliers: at least this many recent outcomes, and this far
# below the mean of the other endpoints.
MIN_SAMPLES_FOR_RATE = 20
RATE_GAP = 0.3
MAX_COOLDOWN_S = 300.0

_EJECTING_CLASSES = frozenset({ErrorClass.RETRYABLE, ErrorClass.TIMEOUT, ErrorClass.ENDPOINT, "stream_interrupted"})
NOT_THE_ENDPOINTS = frozenset({"cancelled", ErrorClass.INVALID_REQUEST, ErrorClass.CONTENT_FILTER,
                                ErrorClass.CONTEXT_LENGTH})

EJECTIONS = Counter("megarouter_endpoint_ejections_total", "Outlier ejections", ["endpoint", "reason"])
EJECTED = Gauge("megarouter_endpoint_ejected", "1 while the endpoint is ejected by this proxy (any worker)",
                ["endpoint"], multiprocess_mode="max")
RESTORED = Counter("megarouter_endpoint_restored_total",
                   "Ejected or half-open endpoints taken back after a success", ["endpoint"])


@dataclass(slots=True)
class _State:
    consecutive_failures: int = 0
    ejections: int = 0              # the multiplier: how many ejections count towards the next one
    ejected_until: float = 0.0
    cooldown_until: float = 0.0
    half_open: bool = False         # its ejection ended: the next attempt is a probe
    last_failure_at: float = 0.0
    last_attempt_failed: bool = False
    decayed_at: float = 0.0         # when the multiplier last lost a step (or last failed)
    probed_at: float = 0.0          # the last panic probe was sent
    probe_token: bool = False       # a probe is due: the next attempt on it is that probe


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
            state.probe_token = True
            EJECTED.labels(endpoint).set(0)
        if now < state.cooldown_until:
            return f"cooling down {state.cooldown_until - now:.1f}s (Retry-After)"
        return ""

    def panic_probe_due(self, endpoint: str, now: float) -> bool:
        """In panic mode: has this ejected endpoint been quiet long enough to be probed again?
        (At most one probe per PANIC_PROBE_S, however many requests arrive.)"""
        state = self._states.get(endpoint)
        return state is not None and now >= max(state.last_failure_at, state.probed_at) + PANIC_PROBE_S

    def begin_panic_probe(self, endpoint: str, now: float) -> None:
        state = self._state(endpoint)
        state.probed_at = now
        state.probe_token = True

    def probe_order(self, endpoint: str) -> tuple[bool, float]:
        """Sort key among endpoints that are not usable: those whose last attempt did not fail
        first, then the one that failed longest ago (most likely to have recovered)."""
        state = self._states.get(endpoint)
        if state is None:
            return False, 0.0
        return state.last_attempt_failed, state.last_failure_at

    def take_probe(self, endpoint: str) -> bool:
        """Is the attempt about to be sent this endpoint's probe — the first attempt since it
        turned half-open, or its panic probe? True once per probe: other attempts that reach it
        meanwhile (panic fallbacks, concurrent requests) are ordinary attempts."""
        state = self._states.get(endpoint)
        if state is None or not state.probe_token:
            return False
        state.probe_token = False
        return True

    def is_ejected(self, endpoint: str, now: float) -> bool:
        state = self._states.get(endpoint)
        return state is not None and now < state.ejected_until

    def multiplier(self, endpoint: str, now: float) -> int:
        state = self._states.get(endpoint)
        if state is None:
            return 0
        self._decay(state, now)
        return state.ejections

    def record(self, endpoint: str, outcome: str, now: float, *, retry_after_s: float | None = None,
               success_rate: float | None = None, peer_rate: float | None = None, samples: float = 0.0) -> None:
        if outcome in NOT_THE_ENDPOINTS:
            return
        state = self._state(endpoint)
        self._decay(state, now)
        if outcome == ErrorClass.RATE_LIMITED:
            if retry_after_s:
                state.cooldown_until = max(state.cooldown_until, now + min(retry_after_s, MAX_COOLDOWN_S))
            return
        if outcome == "success":
            state.consecutive_failures = 0
            state.last_attempt_failed = False
            state.probe_token = False
            if state.half_open or now < state.ejected_until:  # a probe, or panic traffic: it works
                state.half_open = False
                state.ejected_until = 0.0
                EJECTED.labels(endpoint).set(0)
                RESTORED.labels(endpoint).inc()
            return
        if outcome not in _EJECTING_CLASSES:
            return
        state.last_failure_at = now
        state.decayed_at = now
        state.last_attempt_failed = True
        if now < state.ejected_until:
            return  # traffic sent to it while ejected (panic mode): nothing new, nothing longer
        state.consecutive_failures += 1
        if state.half_open:
            self._eject(endpoint, state, now, "probe_failed")
        elif state.consecutive_failures >= CONSECUTIVE_FAILURES:
            self._eject(endpoint, state, now, "consecutive_failures")
        elif (success_rate is not None and peer_rate is not None and samples >= MIN_SAMPLES_FOR_RATE
              and success_rate < peer_rate - RATE_GAP):
            self._eject(endpoint, state, now, "success_rate")

    @staticmethod
    def _decay(state: _State, now: float) -> None:
        if state.ejections and state.decayed_at:
            steps = int((now - state.decayed_at) // DECAY_S)
            if steps > 0:
                state.ejections = max(0, state.ejections - steps)
                state.decayed_at += steps * DECAY_S

    def _eject(self, endpoint: str, state: _State, now: float, reason: str) -> None:
        state.ejections += 1
        duration = min(MAX_EJECTION_S, self._base_ejection_s * 2 ** (state.ejections - 1))
        state.ejected_until = now + duration
        state.half_open = False
        state.consecutive_failures = 0
        EJECTIONS.labels(endpoint, reason).inc()
        EJECTED.labels(endpoint).set(1)

    def ejected_endpoints(self, since: float) -> list[str]:
        """Endpoints ejected at any time from `since` until now: a report covering that interval
        mentions an ejection shorter than the interval too."""
        return [name for name, state in self._states.items() if since < state.ejected_until]
