"""What-if replay: what a workload would cost per month under each routing strategy.

    megarouterctl whatif --profile support-chat
    megarouterctl whatif --log usage.jsonl --models gpt-4o,gpt-4o-mini,gemini-2.5-flash
    megarouterctl --server cp:50051 whatif --profile coding-assistant --route auto

A workload — a usage log, or a built-in profile sampled with a seeded RNG
(megarouter.whatif, which needs no plane) — is replayed through the real
router (`dataplane.routing.router.plan`) over a synthetic routing table
loaded with `RuntimeTable.load`: one endpoint per model of the pool and one
route with the pool in one tier (or, with `--route`, that route's tiers,
floor and weights as the control plane has them). Each request is charged at
catalog (or admin) prices for the model the router picks first, and the
monthly totals are compared with sending everything to the flagship.

No network unless `--route` is given. There is no live health: the latency
and availability strategies fall back to their priors (`--latency-ms` models
speeds). Every request is assumed to succeed on its first pick (no retries).

It lives in the data plane because it runs the data plane's router, table and
health; `megarouterctl whatif` (megarouter/ctl.py) resolves it by module name.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from dataplane.health import PRIOR_FAILURES, PRIOR_SUCCESSES, HealthRegistry
from dataplane.routing.needs import Needs
from dataplane.routing.router import NoCandidate, plan
from dataplane.table import DEFAULT_WEIGHTS, RuntimeTable, TableError, Target, Weights
from megarouter.catalog import cost_usd, load_catalog
from megarouter.v1 import routing_pb2
from megarouter.whatif import (
    DAYS_PER_MONTH,
    DEFAULT_POOL,
    DEFAULT_SAMPLES,
    DEFAULT_SEED,
    PoolModel,
    WhatIfError,
    Workload,
    _n,
    _parse_latency,
    catalog_pool,
    default_flagship,
    load_profile,
    profile_workload,
    read_log,
    route_pool,
)

__all__ = [
    "FLAGSHIP_ONLY",
    "STRATEGY_ORDER",
    "Report",
    "StrategyResult",
    "build_table",
    "estimate_complexity",
    "measured_quality_target",
    "render_table",
    "report_dict",
    "run",
    "simulate",
]

STRATEGY_ORDER = ("cost", "balanced", "latency", "availability")
FLAGSHIP_ONLY = "flagship-only"
_SYNTHETIC_ROUTE = "whatif/pool"


def estimate_complexity(payload: dict[str, Any]) -> Any:
    """The data plane's complexity estimator, for usage-log lines with prompt text (loaded on first use)."""
    from dataplane.routing.complexity import estimate

    return estimate(payload)


# ------------------------------------------------------------------------------- simulation


@dataclass
class StrategyResult:
    strategy: str
    cost_usd: float = 0.0             # per month
    served: float = 0.0               # requests per month
    unserved: float = 0.0
    below_needed: float = 0.0
    quality_sum: float = 0.0
    by_model: Counter = field(default_factory=Counter)          # requests per month
    unserved_reasons: Counter = field(default_factory=Counter)

    @property
    def requests(self) -> float:
        return self.served + self.unserved

    @property
    def avg_quality(self) -> float:
        return self.quality_sum / self.served if self.served else 0.0

    def share(self, amount: float) -> float:
        return amount / self.requests if self.requests else 0.0


@dataclass
class Report:
    workload: Workload
    pool: list[PoolModel]
    in_pool: list[str]                # the route's models (the flagship may be outside)
    flagship: str
    results: list[StrategyResult]     # flagship-only first, then STRATEGY_ORDER
    weights: Weights
    latency_ms: dict[str, float]
    notes: list[str]
    seed: int
    route: str = ""                   # set when the pool came from the control plane

    def result(self, strategy: str) -> StrategyResult:
        return next(r for r in self.results if r.strategy == strategy)

    def saving(self, result: StrategyResult) -> float:
        """Percent saved against flagship-only (negative: costs more)."""
        base = self.result(FLAGSHIP_ONLY).cost_usd
        return (base - result.cost_usd) / base * 100 if base else 0.0


def build_table(pool: list[PoolModel], route: routing_pb2.Route | None = None,
                in_pool: Iterable[str] | None = None) -> tuple[RuntimeTable, str]:
    """A routing table with one endpoint per model and one route over the pool (one tier, or `route`'s
    tiers, floor and weights), loaded by the proxy's own loader."""
    table = routing_pb2.RoutingTable(version=1)
    for provider in sorted({m.provider for m in pool}):
        table.providers.add(name=provider, kind=routing_pb2.PROVIDER_KIND_OPENAI,
                            base_url="https://whatif.invalid/v1", region="whatif")
    for model in pool:
        table.models.append(model.proto)
        table.endpoints.add(name=model.name, model=model.name, provider=model.provider)
    if route is not None:
        synthetic = table.routes.add()
        synthetic.CopyFrom(route)
        del synthetic.allowed_regions[:]   # synthetic endpoints have no real regions
        name = route.name
    else:
        names = list(in_pool) if in_pool is not None else [m.name for m in pool]
        name = _SYNTHETIC_ROUTE
        table.routes.add(name=name).tiers.add(models=names)
    try:
        return RuntimeTable.load(table, secrets=lambda ref: None), name
    except TableError as exc:
        raise WhatIfError(f"cannot build the routing table: {exc}") from None


def simulate(workload: Workload, pool: list[PoolModel], *, flagship: str | None = None,
             in_pool: Iterable[str] | None = None, route: routing_pb2.Route | None = None,
             latency_ms: Mapping[str, float] | None = None, seed: int = DEFAULT_SEED) -> Report:
    """Replay `workload` through the router for each strategy and for flagship-only."""
    names = [m.name for m in pool]
    if route is not None:
        members = [model for tier in route.tiers for model in tier.models]
    else:
        members = list(in_pool) if in_pool is not None else names
    flagship = flagship or default_flagship([m for m in pool if m.name in members])
    if flagship not in names:
        raise WhatIfError(f"flagship {flagship!r} is not among the models ({', '.join(names)})")
    table, route_name = build_table(pool, route, members)
    target = table.resolve(route_name)
    flagship_target = table.resolve(flagship)
    assert target is not None and flagship_target is not None
    weights = target.weights or DEFAULT_WEIGHTS
    latency_ms = dict(latency_ms or {})

    # Neutral health: every endpoint known, with no successes or failures (so the prior success
    # probability) and no latency unless --latency-ms gives one (an average, not success evidence).
    health = HealthRegistry(clock=lambda: 0.0)
    for model in names:
        health.get(model).latency_s = latency_ms[model] / 1000 if model in latency_ms else None

    results = [_replay(FLAGSHIP_ONLY, flagship_target, "cost", workload, health, weights, seed)]
    results += [_replay(s, target, s, workload, health, weights, seed) for s in STRATEGY_ORDER]

    prior = PRIOR_SUCCESSES / (PRIOR_SUCCESSES + PRIOR_FAILURES)
    first = members[0] if members else ""
    notes = ["no live health: every request is taken to succeed on the router's first pick (no retries or "
             "fallbacks), and each request's max_tokens is taken to be its completion length"]
    if latency_ms:
        unset = [n for n in members if n not in latency_ms]
        notes.append("latency: modelled with --latency-ms " + ", ".join(f"{m}={v:g}ms" for m, v in latency_ms.items())
                     + (f"; {', '.join(unset)} unmeasured, so assumed as fast as the fastest given (the router's "
                        "treatment of unmeasured endpoints)" if unset else ""))
    else:
        notes.append(f"latency: no measurements, so the router's prior applies — every endpoint looks equally "
                     f"fast and the first eligible in pool order wins ({first} when it qualifies); "
                     "--latency-ms model=ms,... models speeds")
    notes.append(f"availability: no measurements, so every endpoint has the prior success probability "
                 f"{prior:.0%}; the first eligible in pool order wins, then the chain prefers other providers")
    notes.append(f"balanced weights: cost {weights.cost:.2f}, latency {weights.latency:.2f}, quality "
                 f"{weights.quality:.2f}, availability {weights.availability:.2f}"
                 + (" (the route's)" if target.weights else " (defaults)"))
    if route is not None:
        if route.allowed_regions:
            notes.append(f"route {route.name}: allowed_regions ({', '.join(route.allowed_regions)}) not modelled")
        if target.quality_floor:
            notes.append(f"route {route.name}: quality floor {target.quality_floor} applies")
        if target.strategy:
            notes.append(f"route {route.name} is configured with strategy {target.strategy}")
    if flagship not in members:
        notes.append(f"flagship {flagship} is outside the routed pool; it is only used for flagship-only")
    if results[0].unserved:
        notes.append(f"flagship {flagship} cannot serve {results[0].share(results[0].unserved):.1%} of requests; "
                     "savings compare different sets of requests")
    return Report(workload, pool, members, flagship, results, weights, latency_ms, notes, seed,
                  route.name if route is not None else "")


def _replay(label: str, target: Target, strategy: str, workload: Workload, health: HealthRegistry,
            weights: Weights, seed: int) -> StrategyResult:
    rng = random.Random(seed)
    result = StrategyResult(label)
    for request in workload.requests:
        needs = Needs(request.capabilities, request.prompt_tokens, request.completion_tokens, 0,
                      request.needed_quality)
        try:
            chosen = plan(target, needs, strategy, health, weights, rng).endpoints[0]
        except NoCandidate as exc:
            result.unserved += request.weight
            result.unserved_reasons[exc.code] += request.weight
            continue
        result.served += request.weight
        result.cost_usd += cost_usd(chosen.pricing, request.prompt_tokens, request.completion_tokens) * request.weight
        result.quality_sum += chosen.quality_tier * request.weight
        result.by_model[chosen.model] += request.weight
        if chosen.quality_tier < request.needed_quality:
            result.below_needed += request.weight
    return result


# ---------------------------------------------------------------------------------- output




def _pct(share: float) -> str:
    if 0 < share < 0.0005:
        return "<0.1%"
    return f"{share:.1%}"


def _mix(result: StrategyResult) -> str:
    parts = []
    for model, amount in sorted(result.by_model.items(), key=lambda kv: (-kv[1], kv[0])):
        share = result.share(amount)
        parts.append(f"{model} {'<1' if share < 0.005 else f'{share:.0%}'.rstrip('%')}%")
    if result.unserved:
        parts.append(f"unserved {result.share(result.unserved):.0%}")
    return ", ".join(parts)


def _table(columns: list[str], rows: list[list[str]]) -> list[str]:
    """Columns as `megarouterctl get` prints them."""
    cells = [[c.upper() for c in columns]] + rows
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in cells]


def _price(model: routing_pb2.Model) -> str:
    text = f"{model.input_price_per_mtok:g} / {model.output_price_per_mtok:g}"
    if model.price_tiers:
        tier = model.price_tiers[0]
        text += f" (>{_n(tier.min_prompt_tokens - 1)} prompt: {tier.input_price_per_mtok:g} / " \
                f"{tier.output_price_per_mtok:g})"
    return text


def _capabilities(model: routing_pb2.Model) -> str:
    return ",".join(f.name for f, on in model.capabilities.ListFields() if on is True and f.name != "completions")


def render_table(report: Report) -> str:
    w = report.workload
    lines = [f"What-if replay: {w.source} — {w.description}"]
    volume = (f"  volume: {_n(w.requests_per_month)} requests/month, {_n(w.input_tokens_per_month)} input + "
              f"{_n(w.output_tokens_per_month)} output tokens")
    total = w.input_tokens_per_month + w.output_tokens_per_month
    if total:
        volume += f" ({w.input_tokens_per_month / total:.0%} input)"
    if w.source.startswith("profile"):
        lines.append(volume)
        lines.append(f"  replayed: {len(w.requests):,} sampled requests through the router (seed {report.seed}), "
                     f"each standing for {_n(w.requests_per_month / len(w.requests))} requests a month")
    else:
        lines += [volume, f"  replayed: {len(w.requests):,} distinct logged requests through the router"]
    if report.route:
        lines.append(f"  pool: route {report.route} from the control plane")
    lines.append("")

    flagship_mark = {report.flagship: " (flagship)"}
    rows = [[m.name + flagship_mark.get(m.name, ""), m.provider, _price(m.proto), str(m.proto.quality_tier),
             _n(m.proto.context_window), _capabilities(m.proto), m.source] for m in report.pool]
    lines += _table(["model", "provider", "usd/mtok in / out", "quality", "context", "capabilities", "prices"],
                    rows)
    lines.append("")

    rows = []
    for result in report.results:
        rows.append([result.strategy, f"${result.cost_usd:,.2f}",
                     f"{report.saving(result):.1f}%",
                     f"{result.avg_quality:.2f}", _pct(result.share(result.below_needed)),
                     _pct(result.share(result.unserved)), _mix(result)])
    lines += _table(["strategy", "usd/month", "saved vs flagship", "avg quality", "below needed", "unserved",
                     "models (share of requests)"], rows)
    lines.append("")
    lines.append("Assumptions:")
    catalog = load_catalog().version
    source = catalog.get("genai_prices", {})
    lines.append(f"  - prices: list prices in USD per million tokens from the MegaRouter catalog (as of "
                 f"{catalog.get('prices_as_of', '?')}, genai-prices {source.get('version', '?')})"
                 + (" or the control plane's admin models" if report.route else "")
                 + "; no cached-input, batch or negotiated discounts; long-context tiers apply above their threshold")
    lines += [f"  - {text}" for text in w.assumptions + report.notes]
    lines += ["", *measured_quality_target(report)]
    return "\n".join(lines)


MEASURED_TARGET = 0.95


def measured_quality_target(report: Report, target: float = MEASURED_TARGET) -> list[str]:
    """What a route with `cost_quality_target` would save on this workload's volume if its traffic
    looked like each evaluation set: the share of requests the calibrated router sent to the
    flagship there (measured, not assumed) applied to the flagship and the cheapest pool model."""
    from dataplane.routing.complexity import quality_calibration

    calibration = quality_calibration(target)
    requests = report.workload.requests
    table, _ = build_table(report.pool)

    def monthly(model: PoolModel) -> float:
        pricing = table.resolve(model.name).endpoints[0].pricing
        return sum(cost_usd(pricing, r.prompt_tokens, r.completion_tokens) * r.weight for r in requests)

    flagship_cost = report.result(FLAGSHIP_ONLY).cost_usd
    cheapest = min(report.pool, key=monthly)
    cheap_cost = monthly(cheapest)
    lines = [f"Measured: a cost route with cost_quality_target {target} between {report.flagship} and "
             f"{cheapest.name} (the cheapest pool model for these requests), at this workload's volume:"]
    for dataset, measured in calibration["measured"].items():
        share = measured["strong_share"]
        cost = share * flagship_cost + (1 - share) * cheap_cost
        saved = (1 - cost / flagship_cost) * 100 if flagship_cost else 0.0
        lines.append(f"  - traffic like {dataset}: flagship serves {share:.0%}, ${cost:,.2f}/month, {saved:.1f}% "
                     f"saved vs flagship-only, {measured['quality_share']:.1%} of the flagship's quality kept")
    lines.append(f"  (shares measured by the shipped complexity model on the evaluation data — "
                 f"{calibration['measured_on']}; quality as defined there — not assumed by the profile; the "
                 "strategy rows above use the profile's assumed needed-quality mix instead)")
    return lines


def report_dict(report: Report) -> dict[str, Any]:
    w = report.workload
    catalog = load_catalog().version
    return {
        "workload": {
            "source": w.source,
            "description": w.description,
            "stated": w.stated,
            "requests_per_month": round(w.requests_per_month, 3),
            "input_tokens_per_month": round(w.input_tokens_per_month),
            "output_tokens_per_month": round(w.output_tokens_per_month),
            "simulated_requests": len(w.requests),
            "seed": report.seed,
            "assumptions": w.assumptions,
        },
        "prices": {"source": "route " + report.route if report.route else "catalog",
                   "catalog_prices_as_of": catalog.get("prices_as_of")},
        "flagship": report.flagship,
        "route": report.route or None,
        "models": [{
            "name": m.name,
            "provider": m.provider,
            "in_pool": m.name in report.in_pool,
            "input_price_per_mtok": m.proto.input_price_per_mtok,
            "output_price_per_mtok": m.proto.output_price_per_mtok,
            "price_tiers": [{"min_prompt_tokens": t.min_prompt_tokens, "input_price_per_mtok": t.input_price_per_mtok,
                             "output_price_per_mtok": t.output_price_per_mtok} for t in m.proto.price_tiers],
            "quality_tier": m.proto.quality_tier,
            "context_window": m.proto.context_window,
            "capabilities": _capabilities(m.proto).split(",") if _capabilities(m.proto) else [],
            "prices_from": m.source,
        } for m in report.pool],
        "results": [{
            "strategy": r.strategy,
            "cost_usd_per_month": round(r.cost_usd, 4),
            "saving_vs_flagship_pct": round(report.saving(r), 3),
            "avg_quality_tier": round(r.avg_quality, 4),
            "below_needed_quality_share": round(r.share(r.below_needed), 6),
            "unserved_share": round(r.share(r.unserved), 6),
            "unserved_reasons": {k: round(r.share(v), 6) for k, v in sorted(r.unserved_reasons.items())},
            "model_share": {m: round(r.share(v), 6) for m, v in sorted(r.by_model.items(), key=lambda kv: -kv[1])},
        } for r in report.results],
        "notes": report.notes,
    }


# -------------------------------------------------------------------------------------- CLI


async def run(stub: Any, args: Any) -> int:
    """`megarouterctl whatif` (its options are in megarouter.ctl); `stub` is only used with --route."""
    seed = DEFAULT_SEED if args.seed is None else args.seed
    if args.log:
        workload = read_log(args.log, DAYS_PER_MONTH if args.log_days is None else args.log_days,
                            estimator=estimate_complexity)
    else:
        samples = DEFAULT_SAMPLES if args.samples is None else args.samples
        workload = profile_workload(load_profile(args.profile), samples, seed)
    route = None
    if args.route:
        extra = [args.flagship] if args.flagship else []
        route, pool = await route_pool(stub, args.route, extra)
        members = None
    else:
        refs = [r.strip() for r in args.models.split(",") if r.strip()] if args.models else list(DEFAULT_POOL)
        pool = catalog_pool(refs)
        members = [m.name for m in pool]
        if args.flagship:
            entry = load_catalog().get(args.flagship)
            if entry is None:
                raise WhatIfError(f"flagship {args.flagship!r} is not in the catalog")
            if entry.id not in members:
                pool += catalog_pool([args.flagship])
    flagship = None
    if args.flagship:
        entry = None if args.route else load_catalog().get(args.flagship)
        flagship = entry.id if entry is not None else args.flagship
    latency = _parse_latency(args.latency_ms, [m.name for m in pool])
    report = simulate(workload, pool, flagship=flagship, in_pool=members, route=route, latency_ms=latency,
                      seed=seed)
    if args.output == "json":
        print(json.dumps(report_dict(report), indent=2))
    elif args.output == "yaml":
        print(yaml.safe_dump(report_dict(report), sort_keys=False), end="")
    else:
        print(render_table(report))
    return 0
