"""Router invariants, property-based, over random pools and health."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dataplane.health import HealthRegistry
from dataplane.providers.openai import OpenAIAdapter
from dataplane.routing.needs import Needs, chat_needs
from dataplane.routing.router import (
    DIVERSITY_PROVIDER,
    DIVERSITY_REGION,
    STRATEGIES,
    Candidate,
    NoCandidate,
    _by_availability,
    plan,
)
from dataplane.table import DEFAULT_WEIGHTS, EndpointRuntime, ProviderRuntime, Target
from megarouter.catalog import PriceTier, Pricing

ALL_CAPS = ("tools", "vision", "json_mode", "streaming")


def provider(name: str) -> ProviderRuntime:
    return ProviderRuntime(name, "openai", OpenAIAdapter(), "http://x", "r", {}, {}, 30.0, "")


def endpoint(name: str, *, quality: int = 3, price: float = 1.0, caps=ALL_CAPS, context: int = 100_000,
             region: str = "eu", provider_name: str = "p") -> EndpointRuntime:
    return EndpointRuntime(
        name=name, model=f"m-{name}", upstream_model=name, region=region, provider=provider(provider_name),
        chat_url="http://x", chat_stream_url="http://x", embeddings=False, native_completions=False,
        pricing=Pricing(PriceTier(0, price, price * 4, None)), capabilities=frozenset(caps),
        context_window=context, max_output_tokens=4096, quality_tier=quality,
    )


def target(*tiers: tuple[EndpointRuntime, ...], floor: int = 0, regions=None) -> Target:
    return Target("r", "route", tuple(tiers), quality_floor=floor,
                  allowed_regions=frozenset(regions) if regions else None)


endpoint_specs = st.lists(
    st.fixed_dictionaries({
        "quality": st.integers(0, 5),
        "price": st.floats(0.01, 100),
        "caps": st.sets(st.sampled_from(ALL_CAPS)),
        "context": st.sampled_from([4_096, 32_000, 200_000]),
        "region": st.sampled_from(["eu", "us"]),
        "provider_name": st.sampled_from(["a", "b", "c"]),
        "latency": st.one_of(st.none(), st.floats(0.001, 10)),
        "failures": st.integers(0, 20),
    }),
    min_size=0, max_size=12,
)
needs_strategy = st.builds(
    Needs,
    capabilities=st.frozensets(st.sampled_from(ALL_CAPS)),
    prompt_tokens=st.integers(0, 150_000),
    output_tokens=st.integers(0, 8_000),
    min_quality=st.integers(0, 5),
    needed_quality=st.integers(0, 5),
)


def build(specs: list[dict], tier_count: int) -> tuple[Target, HealthRegistry]:
    health = HealthRegistry(clock=lambda: 1000.0)
    endpoints = []
    for index, spec in enumerate(specs):
        ep = endpoint(f"e{index}", quality=spec["quality"], price=spec["price"], caps=spec["caps"],
                      context=spec["context"], region=spec["region"], provider_name=spec["provider_name"])
        endpoints.append(ep)
        for _ in range(spec["failures"]):
            health.started(ep.name)
            health.finished(ep.name, False, None, None)
        if spec["latency"] is not None:
            health.started(ep.name)
            health.finished(ep.name, True, spec["latency"], None)
    tiers = [tuple(endpoints[i::tier_count]) for i in range(tier_count)]
    return target(*tiers), health


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(specs=endpoint_specs, needs=needs_strategy, strategy=st.sampled_from(STRATEGIES),
       tier_count=st.integers(1, 3), seed=st.integers(0, 1000))
def test_plan_invariants(specs, needs, strategy, tier_count, seed) -> None:
    route, health = build(specs, tier_count)
    try:
        result = plan(route, needs, strategy, health, DEFAULT_WEIGHTS, random.Random(seed))
    except NoCandidate as exc:
        # An empty or fully filtered pool is a clear 4xx/503, never a crash.
        assert exc.status in (400, 503) and exc.message and exc.code
        if not route.endpoints:
            assert exc.status == 503
        return
    names = [e.name for e in result.endpoints]
    assert len(names) == len(set(names)), "duplicates in the plan"
    excluded = {c.endpoint.name for c in result.candidates if c.excluded}
    assert not excluded & set(names), "a filtered-out candidate was planned"
    assert set(names) | excluded == {e.name for e in route.endpoints}
    tier_of = {e.name: i for i, tier in enumerate(route.tiers) for e in tier}
    tiers_in_plan = [tier_of[n] for n in names]
    assert tiers_in_plan == sorted(tiers_in_plan), "degradation-path tiers out of order"
    for ep in result.endpoints:
        assert needs.capabilities <= ep.capabilities
        assert needs.prompt_tokens + needs.output_tokens <= ep.context_window
        assert ep.quality_tier >= needs.min_quality


@settings(max_examples=200, deadline=None)
@given(specs=endpoint_specs, needed=st.integers(1, 5), seed=st.integers(0, 1000))
def test_cost_never_picks_below_the_needed_quality_when_one_qualifies(specs, needed, seed) -> None:
    specs = [dict(spec, failures=0) for spec in specs]
    route, health = build(specs, 1)
    needs = Needs(frozenset(), 100, 100, 0, needed)
    try:
        result = plan(route, needs, "cost", health, DEFAULT_WEIGHTS, random.Random(seed))
    except NoCandidate:
        return
    qualifying = [e for e in result.endpoints if e.quality_tier >= needed]
    if qualifying:
        first = result.endpoints[0]
        assert first.quality_tier >= needed
        cheapest = min(qualifying, key=lambda e: e.pricing.base.input_per_mtok)
        assert first.pricing.base.input_per_mtok == pytest.approx(cheapest.pricing.base.input_per_mtok)


@settings(max_examples=200, deadline=None)
@given(fast=st.floats(0.01, 1.0), others=st.integers(1, 5), seed=st.integers(0, 10_000))
def test_latency_never_picks_an_order_of_magnitude_slower_endpoint(fast, others, seed) -> None:
    health = HealthRegistry(clock=lambda: 0.0)
    endpoints = [endpoint("fast")] + [endpoint(f"slow{i}") for i in range(others)]
    for ep, latency in [(endpoints[0], fast)] + [(ep, fast * 10) for ep in endpoints[1:]]:
        health.started(ep.name)
        health.finished(ep.name, True, latency, None)
    result = plan(target(tuple(endpoints)), Needs(frozenset(), 10, 10), "latency", health, DEFAULT_WEIGHTS,
                  random.Random(seed))
    assert result.endpoints[0].name == "fast"


def test_latency_spreads_load_among_equally_fast_endpoints() -> None:
    health = HealthRegistry(clock=lambda: 0.0)
    endpoints = [endpoint(f"e{i}") for i in range(3)]
    for ep in endpoints:
        health.started(ep.name)
        health.finished(ep.name, True, 0.1, None)
    rng = random.Random(7)
    firsts = {plan(target(tuple(endpoints)), Needs(frozenset(), 10, 10), "latency", health, DEFAULT_WEIGHTS,
                   rng).endpoints[0].name for _ in range(200)}
    assert firsts == {"e0", "e1", "e2"}


def test_availability_prefers_healthy_and_spans_providers() -> None:
    health = HealthRegistry(clock=lambda: 0.0)
    a1, a2 = endpoint("a1", provider_name="a"), endpoint("a2", provider_name="a")
    b1, bad = endpoint("b1", provider_name="b", region="us"), endpoint("bad", provider_name="c")
    for _ in range(10):
        for ep in (a1, a2, b1):
            health.started(ep.name)
            health.finished(ep.name, True, 0.1, None)
        health.started(bad.name)
        health.finished(bad.name, False, 0.1, None)
    result = plan(target((bad, a1, a2, b1)), Needs(frozenset(), 10, 10), "availability", health, DEFAULT_WEIGHTS)
    names = [e.name for e in result.endpoints]
    assert names[0] in ("a1", "a2") and names[1] == "b1" and names[-1] == "bad"


def _availability_reference(tier: list[Candidate]) -> list[str]:
    """The availability order as specified, by brute force: repeatedly take the endpoint with
    the highest success probability plus the diversity bonus (none for the first), the one
    ranked first by success on ties; after the head, by success alone."""
    remaining = sorted(tier, key=lambda c: -c.p_success)
    chain, providers, regions = [], set(), set()
    while remaining and len(chain) < 10:
        def value(c: Candidate) -> float:
            if not chain:
                return c.p_success
            return c.p_success + (DIVERSITY_PROVIDER if c.endpoint.provider.name not in providers else 0.0) + (
                DIVERSITY_REGION if c.endpoint.region not in regions else 0.0)
        pick = max(remaining, key=value)
        remaining.remove(pick)
        chain.append(pick)
        providers.add(pick.endpoint.provider.name)
        regions.add(pick.endpoint.region)
    return [c.endpoint.name for c in chain + remaining]


@settings(max_examples=300, deadline=None)
@given(spec=st.lists(st.tuples(st.sampled_from(["a", "b", "c", "d"]), st.sampled_from(["eu", "us", "ap"]),
                               st.sampled_from([0.5, 0.9, 0.95, 0.99]) | st.floats(0, 1)),
                     min_size=1, max_size=30))
def test_availability_order_matches_its_specification(spec) -> None:
    """The implementation (a scan that stops early) orders exactly as the brute force."""
    tier = [Candidate(endpoint(f"e{i}", provider_name=p, region=r), 0, p_success=ps)
            for i, (p, r, ps) in enumerate(spec)]
    expected = _availability_reference(list(tier))
    assert [c.endpoint.name for c in _by_availability(tier)] == expected


def test_filters_and_errors_name_the_problem() -> None:
    route = target((endpoint("small", caps=("streaming",), context=1000),))
    with pytest.raises(NoCandidate) as caught:
        plan(route, Needs(frozenset({"tools"}), 10, 10), "balanced", HealthRegistry(), DEFAULT_WEIGHTS)
    assert caught.value.status == 400 and "tools" in caught.value.message
    with pytest.raises(NoCandidate) as caught:
        plan(route, Needs(frozenset(), 5000, 10), "balanced", HealthRegistry(), DEFAULT_WEIGHTS)
    assert caught.value.code == "context_length_exceeded"
    with pytest.raises(NoCandidate) as caught:
        plan(target((endpoint("x", quality=2),)), Needs(frozenset(), 1, 1, min_quality=4), "cost",
             HealthRegistry(), DEFAULT_WEIGHTS)
    assert caught.value.param == "x-megarouter-min-quality"
    with pytest.raises(NoCandidate) as caught:
        plan(target(()), Needs(frozenset(), 1, 1), "cost", HealthRegistry(), DEFAULT_WEIGHTS)
    assert caught.value.status == 503
    eu_only = Target("r", "route", ((endpoint("us1", region="us"), endpoint("eu1", region="eu")),),
                     allowed_regions=frozenset({"eu"}))
    assert [e.name for e in plan(eu_only, Needs(frozenset(), 1, 1), "cost", HealthRegistry(),
                                 DEFAULT_WEIGHTS).endpoints] == ["eu1"]


def test_needs_are_read_from_the_request() -> None:
    needs = chat_needs({
        "messages": [{"role": "user", "content": [{"type": "text", "text": "x" * 400},
                                                  {"type": "image_url", "image_url": {"url": "data:,"}}]}],
        "tools": [{"type": "function", "function": {"name": "f"}}], "stream": True,
        "response_format": {"type": "json_object"}, "max_tokens": 77,
    }, min_quality=2)
    assert needs.capabilities == {"tools", "vision", "json_mode", "streaming"}
    assert needs.output_tokens == 77 and needs.min_quality == 2
    assert needs.prompt_tokens >= 100 + 85
    assert chat_needs({"messages": [], "tools": [{}], "tool_choice": "none"}).capabilities == frozenset()


def test_a_slow_endpoint_is_retried_once_its_measurement_is_stale() -> None:
    now = [0.0]
    health = HealthRegistry(clock=lambda: now[0])
    fast, slow = endpoint("fast"), endpoint("slow")
    for ep, latency in ((fast, 0.05), (slow, 0.5)):
        health.started(ep.name)
        health.finished(ep.name, True, latency, None)
    route, needs = target((slow, fast)), Needs(frozenset(), 10, 10)
    assert plan(route, needs, "latency", health, DEFAULT_WEIGHTS).endpoints[0].name == "fast"
    now[0] = 20.0  # the slow endpoint's only measurement is now stale; the fast one keeps serving
    health.started(fast.name)
    health.finished(fast.name, True, 0.05, None)
    firsts = {plan(route, needs, "latency", health, DEFAULT_WEIGHTS, random.Random(seed)).endpoints[0].name
              for seed in range(20)}
    assert "slow" in firsts  # it gets traffic again, and so a fresh measurement


def test_routes_can_prefer_the_proxys_own_region() -> None:
    health = HealthRegistry(clock=lambda: 0.0)
    far, near = endpoint("far", region="us", price=1.0), endpoint("near", region="eu", price=5.0)
    route = Target("r", "route", ((far, near),), prefer_local_region=True)
    needs = Needs(frozenset(), 10, 10)
    # Cost alone would pick `far`; the route prefers the proxy's region.
    assert [e.name for e in plan(route, needs, "cost", health, DEFAULT_WEIGHTS, local_region="eu").endpoints] == [
        "near", "far"]
    assert plan(route, needs, "cost", health, DEFAULT_WEIGHTS, local_region="ap").endpoints[0].name == "far"
    neutral = Target("r", "route", ((far, near),))
    assert plan(neutral, needs, "cost", health, DEFAULT_WEIGHTS, local_region="eu").endpoints[0].name == "far"


class _EverythingEjected:
    """An outlier detector in a full outage: every endpoint ejected, no probe due."""

    def unavailable_reason(self, name: str, now: float) -> str:
        return "ejected for 5xx"

    def probe_order(self, name: str) -> tuple[bool, float]:
        return (False, 0.0)

    def panic_probe_due(self, name: str, now: float) -> bool:
        return False


@pytest.mark.parametrize("flagship", [False, True])
def test_a_full_outage_still_plans_and_names_the_flagship_tier(flagship: bool) -> None:
    # Regression: the flagship's tier was taken over the usable candidates only, none in an outage.
    cheap, best = endpoint("cheap", quality=2, price=0.1), endpoint("best", quality=5, price=10)
    needs = Needs(frozenset(), 100, 50, flagship=flagship)
    routed = plan(target((cheap, best)), needs, "cost", HealthRegistry(), DEFAULT_WEIGHTS,
                  outliers=_EverythingEjected())
    assert sorted(e.name for e in routed.endpoints) == ["best", "cheap"]   # both kept, as panic fallbacks
    assert routed.best_quality == 5
    assert routed.needed_quality == (5 if flagship else 0)
