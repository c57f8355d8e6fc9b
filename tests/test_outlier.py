"""Outlier ejection and panic mode, on a fake clock: ejections that decay, successes that
restore at once, panic traffic that does not lengthen an ejection, and plans that put what
failed last at the back."""

from __future__ import annotations

from dataplane.failover.outlier import (
    BASE_EJECTION_S,
    CONSECUTIVE_FAILURES,
    DECAY_S,
    PANIC_PROBE_S,
    OutlierDetector,
)
from dataplane.health import HealthRegistry
from dataplane.providers.base import ErrorClass
from dataplane.routing import router
from dataplane.routing.needs import Needs
from dataplane.table import DEFAULT_WEIGHTS, Target
from tests.test_router import endpoint

FAIL = ErrorClass.RETRYABLE


def _fail(detector: OutlierDetector, name: str, now: float, times: int = CONSECUTIVE_FAILURES) -> None:
    for _ in range(times):
        detector.record(name, FAIL, now)


def test_probe_failures_grow_the_ejection_and_quiet_time_shrinks_it_again() -> None:
    detector = OutlierDetector()
    now = 1000.0
    _fail(detector, "a", now)
    assert detector.unavailable_reason("a", now).startswith("ejected for 5.0")
    for n in range(1, 4):  # each failed probe doubles it
        now = detector._states["a"].ejected_until
        assert detector.unavailable_reason("a", now) == ""  # half-open: probe it
        detector.record("a", FAIL, now)
        assert detector.unavailable_reason("a", now).startswith(f"ejected for {BASE_EJECTION_S * 2 ** n:.1f}")
    assert detector.multiplier("a", now) == 4
    # Quiet for a while (ejected, no traffic): the multiplier decays step by step.
    assert detector.multiplier("a", now + 2 * DECAY_S + 1) == 2
    later = now + 10 * DECAY_S
    assert detector.unavailable_reason("a", later) == ""
    detector.record("a", FAIL, later)  # the next failed probe starts short again
    assert detector.unavailable_reason("a", later).startswith(f"ejected for {BASE_EJECTION_S:.1f}")


def test_a_success_restores_an_ejected_endpoint_at_once() -> None:
    detector = OutlierDetector()
    _fail(detector, "a", 1000.0)
    assert detector.is_ejected("a", 1001.0)
    detector.record("a", "success", 1001.0)  # panic traffic reached it, and it worked
    assert not detector.is_ejected("a", 1001.0) and detector.unavailable_reason("a", 1001.0) == ""


def test_failures_while_ejected_do_not_lengthen_the_ejection() -> None:
    detector = OutlierDetector()
    _fail(detector, "a", 1000.0)
    until = detector._states["a"].ejected_until
    _fail(detector, "a", 1001.0, times=50)  # panic traffic, failing
    assert detector._states["a"].ejected_until == until and detector.multiplier("a", 1001.0) == 1
    assert detector.probe_order("a") == (True, 1001.0)


def test_caller_errors_never_count() -> None:
    detector = OutlierDetector()
    for outcome in (ErrorClass.INVALID_REQUEST, ErrorClass.CONTENT_FILTER, ErrorClass.CONTEXT_LENGTH, "cancelled"):
        _fail(detector, "a", 1000.0, times=1)  # one real failure...
        for _ in range(20):
            detector.record("a", outcome, 1000.0)  # ...and many that are not the endpoint's
    assert not detector.is_ejected("a", 1000.0)


def _plan(detector: OutlierDetector, health: HealthRegistry, endpoints, strategy: str = "latency"):
    target = Target(name="r", kind="route", tiers=(tuple(endpoints),))
    needs = Needs(capabilities=frozenset(), prompt_tokens=10, output_tokens=10)
    return router.plan(target, needs, strategy, health, DEFAULT_WEIGHTS, outliers=detector, explain=True)


def test_panic_keeps_ejected_endpoints_as_fallbacks_in_probe_order() -> None:
    clock = [1000.0]
    health = HealthRegistry(clock=lambda: clock[0])
    detector = OutlierDetector()
    fast, slow, slower = endpoint("fast"), endpoint("slow"), endpoint("slower")
    for name, latency in (("fast", 0.01), ("slow", 0.1), ("slower", 0.2)):
        health.started(name)
        health.finished(name, True, latency, None)
    # Two of three ejected: fewer than half usable, so panic. The one that failed longest ago
    # comes before the one that just failed; the healthy one leads.
    _fail(detector, "fast", 1000.0)
    _fail(detector, "slow", 999.0)
    clock[0] = 1000.5
    plan = _plan(detector, health, [fast, slow, slower])
    assert [e.name for e in plan.endpoints] == ["slower", "slow", "fast"]
    notes = {c.endpoint.name: c.fallback for c in plan.candidates}
    assert notes["fast"].startswith("panic fallback") and notes["slower"] == ""
    # Once its panic probe is due, an ejected endpoint leads one request's plan, then waits again.
    clock[0] = 1000.0 + PANIC_PROBE_S
    assert _plan(detector, health, [fast, slow, slower]).endpoints[0].name == "slow"
    assert _plan(detector, health, [fast, slow, slower]).endpoints[0].name == "fast"
    assert _plan(detector, health, [fast, slow, slower]).endpoints[0].name == "slower"


def test_no_panic_while_most_endpoints_are_usable() -> None:
    health = HealthRegistry(clock=lambda: 1000.0)
    detector = OutlierDetector()
    endpoints = [endpoint(name) for name in ("a", "b", "c")]
    _fail(detector, "a", 1000.0)
    plan = _plan(detector, health, endpoints)
    assert [e.name for e in plan.endpoints if e.name == "a"] == []
    assert next(c for c in plan.candidates if c.endpoint.name == "a").excluded.startswith("ejected")
