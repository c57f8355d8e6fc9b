"""The router: candidates -> filters -> score by strategy -> attempt plan.

Pure and synchronous: it reads the routing table's target, the request's
needs and the live health registry, and returns an ordered plan — the first
pick and the fallbacks the attempt loop will use — plus every candidate's
scores and exclusion reason for `x-megarouter-explain`. No I/O.

Tiers of the degradation path keep their order: a strategy orders the
candidates *within* each tier, so the last tier stays the fallback. Put the
models a strategy should choose among in the same tier.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from operator import attrgetter

from dataplane.failover.outlier import OutlierDetector
from dataplane.health import HealthRegistry
from dataplane.routing.needs import Needs
from dataplane.table import EndpointRuntime, Target, Weights
from megarouter.catalog import cost_usd

STRATEGIES = ("balanced", "cost", "latency", "availability")

# Output length assumed for cost estimates when the caller sets no limit.
DEFAULT_EXPECTED_OUTPUT_TOKENS = 300
# Latency routing spreads load across endpoints within this factor of the
# fastest (power of two choices), so a fleet does not herd onto one.
LATENCY_BAND = 1.25
# Below this predicted success probability an endpoint is "degraded" and
# ordered after healthy ones by latency and cost routing.
DEGRADED_BELOW = 0.5
# Availability routing: bonus for a provider / region not yet in the chain.
DIVERSITY_PROVIDER = 0.1
DIVERSITY_REGION = 0.05
CHAT_CAPABILITIES = ("tools", "vision", "json_mode", "streaming")
# Panic mode (as Envoy's): when fewer than this share of a plan's candidates are usable, the
# ejected and cooling-down ones stay in the plan as fallbacks instead of being waited out.
PANIC_THRESHOLD = 0.5


@dataclass(slots=True)
class Candidate:
    endpoint: EndpointRuntime
    tier: int
    excluded: str = ""              # why it was filtered out; "" = eligible
    fallback: str = ""              # panic mode: why it is only a fallback (or a probe)
    expected_cost: float = 0.0      # USD for this request at catalog prices
    latency_s: float = 0.0          # predicted (TTFT for streams), load-adjusted
    p_success: float = 1.0
    score: float = 0.0              # the strategy's sort key within the tier: lower first

    def explain(self) -> dict:
        item = {"endpoint": self.endpoint.name, "model": self.endpoint.model, "tier": self.tier}
        if self.excluded:
            item["excluded"] = self.excluded
        elif self.fallback:
            item["fallback"] = self.fallback
        else:
            item.update(score=round(self.score, 6), cost_usd=round(self.expected_cost, 8),
                        latency_ms=round(self.latency_s * 1000, 1), p_success=round(self.p_success, 4),
                        quality=self.endpoint.quality_tier)
        return item


@dataclass(slots=True)
class Plan:
    endpoints: tuple[EndpointRuntime, ...]
    strategy: str
    candidates: list[Candidate] = field(default_factory=list)
    needed_quality: int = 0
    quality_target: dict | None = None   # the quality target's decision, for the explanation
    best_quality: int = 0                # the best quality tier among the usable candidates (the flagship's)


class NoCandidate(Exception):
    """No endpoint can serve the request; `status`/`code` say why."""

    def __init__(self, status: int, message: str, code: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param


def plan(
    target: Target,
    needs: Needs,
    strategy: str,
    health: HealthRegistry,
    weights: Weights,
    rng: random.Random | None = None,
    outliers: OutlierDetector | None = None,
    explain: bool = False,
    local_region: str = "",
) -> Plan:
    rng = rng or random
    now = health.now()
    floor = max(target.quality_floor, needs.min_quality)
    stream = "streaming" in needs.capabilities
    candidates = [Candidate(endpoint, index) for index, tier in enumerate(target.tiers) for endpoint in tier]
    required = needs.capabilities.intersection(CHAT_CAPABILITIES)
    context_needed = needs.context_needed
    embeddings = needs.embeddings
    allowed_regions = target.allowed_regions
    eligible = []
    for candidate in candidates:
        endpoint = candidate.endpoint
        # The common case in one cheap test; _exclusion says why when it fails.
        if (endpoint.embeddings == embeddings and required <= endpoint.capabilities
                and context_needed <= endpoint.context_window
                and (allowed_regions is None or endpoint.region in allowed_regions)
                and endpoint.quality_tier >= floor):
            eligible.append(candidate)
        else:
            candidate.excluded = _exclusion(endpoint, target, needs, floor)
    if not eligible:
        raise _no_candidate(target, candidates, needs, floor)
    # Over every eligible candidate, ejected ones too: in a full outage none is usable, and the
    # flagship's tier is still what a quality target asks for (the best one left serves).
    best = max(c.endpoint.quality_tier for c in eligible)
    eligible, fallbacks, probe = _split_unavailable(eligible, health, outliers, now)
    if len(eligible) == 1 and not fallbacks and not explain:
        # Nothing to rank (a model id with one endpoint): skip the scoring.
        return Plan((eligible[0].endpoint,), strategy, candidates, floor, best_quality=best)

    output_tokens = needs.output_tokens or DEFAULT_EXPECTED_OUTPUT_TOKENS
    # Only what the strategy scores is computed (explanations ask for all).
    want_cost = explain or strategy in ("cost", "balanced")
    want_latency = explain or strategy in ("latency", "balanced")
    known_latencies = []
    unknown: list[Candidate] = []
    costs: dict[int, float] = {}  # per pricing object: a model's endpoints share one
    estimates = health.estimates
    tiers: list[list[Candidate]] = [[] for _ in target.tiers]
    for candidate in eligible:
        endpoint = candidate.endpoint
        tiers[candidate.tier].append(candidate)
        if want_cost:
            cost = costs.get(id(endpoint.pricing))
            if cost is None:
                cost = costs[id(endpoint.pricing)] = cost_usd(endpoint.pricing, needs.prompt_tokens, output_tokens)
            candidate.expected_cost = cost
        candidate.p_success, latency = estimates(endpoint.name, stream, now)
        if not want_latency:
            continue
        if latency is None:
            unknown.append(candidate)
        else:
            candidate.latency_s = latency
            known_latencies.append(latency)
    # Unmeasured endpoints are assumed as fast as the best known one, so
    # they get traffic and are measured rather than starved.
    optimistic = min(known_latencies, default=0.0)
    for candidate in unknown:
        candidate.latency_s = optimistic

    needed = max(floor, needs.needed_quality) if strategy == "cost" else floor
    if strategy == "cost" and needs.flagship:
        needed = max(floor, best)
    ordered: list[EndpointRuntime] = []
    if probe is not None:
        ordered.append(probe.endpoint)
    for tier in tiers:
        if tier:
            ranked = _order(strategy, tier, weights, needed, rng)
            if target.prefer_local_region and local_region:
                # A stable sort keeps the strategy's order within each group.
                ranked.sort(key=lambda c: c.endpoint.region != local_region)
            ordered.extend(c.endpoint for c in ranked)
    # Panic fallbacks after every usable endpoint, whatever their tier: a healthy fallback tier
    # serves before an ejected primary is tried again.
    ordered.extend(c.endpoint for c in fallbacks)
    return Plan(tuple(ordered), strategy, candidates, needed, best_quality=best)


def _split_unavailable(
    eligible: list[Candidate], health: HealthRegistry, outliers: OutlierDetector | None, now: float
) -> tuple[list[Candidate], list[Candidate], Candidate | None]:
    """(usable, fallbacks, probe): leave out endpoints this proxy ejected or is cooling down,
    and those the fleet has ejected — while enough others are usable.

    Below PANIC_THRESHOLD usable (a brown-out, or the end of an outage) they are kept, after
    every usable one, in `probe_order`: what did not fail its last attempt
    first, then what failed longest ago — never the endpoint that just failed fast, which a
    latency score would rank first. And one ejected endpoint whose panic probe is due leads
    the plan: a recovered endpoint is back within seconds, not after its ejection timer."""
    own_reason = outliers.unavailable_reason if outliers is not None else None
    fleet_ejected = health.fleet_ejected if health.fleet else None
    down: list[tuple[Candidate, str]] = []
    usable: list[Candidate] = []
    for candidate in eligible:
        name = candidate.endpoint.name
        reason = own_reason(name, now) if own_reason is not None else ""
        if not reason and fleet_ejected is not None and fleet_ejected(name):
            reason = "ejected by the fleet"
        if reason:
            down.append((candidate, reason))
        else:
            usable.append(candidate)
    if not down:
        return eligible, [], None
    if len(usable) >= PANIC_THRESHOLD * len(eligible):
        for candidate, reason in down:
            candidate.excluded = reason
        return usable, [], None
    assert outliers is not None or fleet_ejected is not None
    order = outliers.probe_order if outliers is not None else (lambda name: (False, 0.0))
    down.sort(key=lambda item: order(item[0].endpoint.name))
    probe = None
    if outliers is not None:
        probe = next((c for c, reason in down if reason.startswith("ejected for")
                      and outliers.panic_probe_due(c.endpoint.name, now)), None)
        if probe is not None:
            outliers.begin_panic_probe(probe.endpoint.name, now)
            probe.fallback = "panic: probing an ejected endpoint"
    fallbacks = []
    for candidate, reason in down:
        if candidate is not probe:
            candidate.fallback = f"panic fallback ({reason})"
            fallbacks.append(candidate)
    return usable, fallbacks, probe


def _exclusion(endpoint: EndpointRuntime, target: Target, needs: Needs, floor: int) -> str:
    if endpoint.embeddings != needs.embeddings:
        return "serves embeddings only" if endpoint.embeddings else "serves no embeddings"
    missing = [cap for cap in CHAT_CAPABILITIES if cap in needs.capabilities and cap not in endpoint.capabilities]
    if missing:
        return "lacks " + ",".join(missing)
    if needs.context_needed > endpoint.context_window:
        return f"context window {endpoint.context_window} too small"
    if target.allowed_regions is not None and endpoint.region not in target.allowed_regions:
        return f"region {endpoint.region} not allowed"
    if floor and endpoint.quality_tier < floor:
        return f"quality {endpoint.quality_tier} below floor {floor}"
    return ""


def _no_candidate(target: Target, candidates: list[Candidate], needs: Needs, floor: int) -> NoCandidate:
    if not candidates:
        return NoCandidate(503, f"no endpoint is available for '{target.name}'", "no_available_endpoint")
    reasons = {c.excluded.split(" ", 1)[0] for c in candidates}
    if reasons == {"serves"}:
        if needs.embeddings:
            return NoCandidate(400, f"'{target.name}' has no embeddings model", "model_not_capable", "model")
        return NoCandidate(400, f"'{target.name}' is an embeddings model: send it to /v1/embeddings",
                           "model_not_capable", "model")
    if "lacks" in reasons and len(reasons) == 1:
        missing = sorted({cap for c in candidates for cap in c.excluded.removeprefix("lacks ").split(",")})
        return NoCandidate(400, f"no model behind '{target.name}' supports what this request uses: "
                           + ", ".join(missing), "model_not_capable", "model")
    if "context" in reasons and len(reasons) == 1:
        largest = max(c.endpoint.context_window for c in candidates)
        return NoCandidate(400, f"this request (~{needs.prompt_tokens} prompt tokens + {needs.output_tokens} "
                           f"output) exceeds the context window of every model behind '{target.name}' "
                           f"(largest {largest})", "context_length_exceeded", "messages")
    if "quality" in reasons and len(reasons) == 1:
        param = "x-megarouter-min-quality" if needs.min_quality >= floor and needs.min_quality else None
        return NoCandidate(400, f"no model behind '{target.name}' meets quality tier {floor}",
                           "quality_floor_not_met", param)
    details = "; ".join(sorted({f"{c.endpoint.name}: {c.excluded}" for c in candidates}))
    if reasons & {"lacks", "context", "quality", "serves"}:
        # Excluded for several reasons, at least one of them the request's own (what it uses, its
        # size, the floor it asked for): retrying cannot help, so a 400 — not a 503 the SDKs retry.
        code = ("model_not_capable" if reasons & {"lacks", "serves"} else
                "context_length_exceeded" if "context" in reasons else "quality_floor_not_met")
        return NoCandidate(400, f"no model behind '{target.name}' can serve this request ({details})", code,
                           "model")
    return NoCandidate(503, f"no endpoint can serve this request for '{target.name}' ({details})",
                       "no_available_endpoint")


def _order(strategy: str, tier: list[Candidate], weights: Weights, needed: int,
           rng: random.Random) -> list[Candidate]:
    if strategy == "cost":
        return _by_cost(tier, needed)
    if strategy == "latency":
        return _by_latency(tier, rng)
    if strategy == "availability":
        return _by_availability(tier)
    return _balanced(tier, weights)


def _by_cost(tier: list[Candidate], needed: int) -> list[Candidate]:
    """Cheapest that meets the needed quality first; then, as fallbacks, the
    ones below it, best quality first. Degraded endpoints go last."""
    for c in tier:
        meets = c.endpoint.quality_tier >= needed
        c.score = c.expected_cost if meets else 1e6 - c.endpoint.quality_tier
        if c.p_success < DEGRADED_BELOW:
            c.score += 1e9
    return sorted(tier, key=lambda c: (c.score, -c.endpoint.quality_tier, -c.p_success))


_score = attrgetter("score")


def _by_latency(tier: list[Candidate], rng: random.Random) -> list[Candidate]:
    for c in tier:
        c.score = c.latency_s + (1e3 if c.p_success < DEGRADED_BELOW else 0.0)
    ranked = sorted(tier, key=_score)
    best = ranked[0].score
    band = [c for c in ranked if c.score <= best * LATENCY_BAND] if best > 0 else [ranked[0]]
    if len(band) >= 2:
        # Power of two choices among the near-fastest.
        first, second = rng.sample(band, 2)
        pick = first if first.score <= second.score else second
        ranked.remove(pick)
        ranked.insert(0, pick)
    return ranked


# Only the head of a chain is ever tried (max_attempts <= 10): diversity is
# arranged there; the rest is ordered by success probability alone.
_DIVERSE_HEAD = 10


def _by_availability(tier: list[Candidate]) -> list[Candidate]:
    """Highest predicted success first, then prefer a chain that spans
    providers and regions, so one provider's outage cannot take all tries."""
    remaining = sorted(tier, key=lambda c: -c.p_success)
    chain: list[Candidate] = []
    providers: set[str] = set()
    regions: set[str] = set()
    max_bonus = DIVERSITY_PROVIDER + DIVERSITY_REGION
    while remaining and len(chain) < _DIVERSE_HEAD:
        # Scan in descending success; nothing further down can beat the best
        # value once its success plus the largest bonus falls below it.
        best_index, best_value = 0, -1.0
        for index, c in enumerate(remaining):
            if c.p_success + max_bonus <= best_value:
                break
            value = c.p_success
            if chain:
                value += (DIVERSITY_PROVIDER if c.endpoint.provider.name not in providers else 0.0) + (
                    DIVERSITY_REGION if c.endpoint.region not in regions else 0.0)
            if value > best_value:
                best_index, best_value = index, value
        pick = remaining.pop(best_index)
        pick.score = -best_value
        chain.append(pick)
        providers.add(pick.endpoint.provider.name)
        regions.add(pick.endpoint.region)
    for candidate in remaining:
        candidate.score = -candidate.p_success
    return chain + remaining


def _balanced(tier: list[Candidate], weights: Weights) -> list[Candidate]:
    """Weighted sum of normalised objectives (each 0 = best .. 1 = worst)."""
    max_cost = max(c.expected_cost for c in tier) or 1.0
    max_latency = max(c.latency_s for c in tier) or 1.0
    for c in tier:
        c.score = (
            weights.cost * c.expected_cost / max_cost
            + weights.latency * c.latency_s / max_latency
            + weights.quality * (1 - c.endpoint.quality_tier / 5)
            + weights.availability * (1 - c.p_success)
        )
    return sorted(tier, key=_score)
