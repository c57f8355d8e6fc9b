"""Per-request routing controls (headers) and the explanation header.

  x-megarouter-strategy: cost | latency | balanced | availability
  x-megarouter-min-quality: 1..5    (never serve a model below this tier)
  x-megarouter-quality-target: 0.95 (cost strategy: keep at least this share,
                                     0 < x <= 1, of the flagship's quality;
                                     overrides the route's cost_quality_target)
  x-megarouter-explain: 1           (return the scored candidates)

Invalid values are the caller's error: a 400 naming the header and the
allowed values, never a silent fallback.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import orjson

from dataplane.errors import bad_request
from dataplane.routing.router import STRATEGIES, Plan

STRATEGY_HEADER = "x-megarouter-strategy"
MIN_QUALITY_HEADER = "x-megarouter-min-quality"
EXPLAIN_HEADER = "x-megarouter-explain"
QUALITY_TARGET_HEADER = "x-megarouter-quality-target"
# Plain decimals only ("0.95", ".9", "1"): no signs, exponents, "nan" or "inf".
_DECIMAL = re.compile(r"\d+(?:\.\d*)?|\.\d+", re.ASCII)
# Response headers are limited in size by most clients and proxies.
_EXPLAIN_MAX_CANDIDATES = 20


@dataclass(frozen=True, slots=True)
class Controls:
    strategy: str = ""        # "" = not set by the request
    min_quality: int = 0
    explain: bool = False
    quality_target: float = 0.0   # 0 = not set by the request; else 0 < x <= 1


NO_CONTROLS = Controls()


def read_controls(headers: Mapping[str, str]) -> Controls:
    strategy = headers.get(STRATEGY_HEADER)
    min_quality = headers.get(MIN_QUALITY_HEADER)
    explain = headers.get(EXPLAIN_HEADER)
    quality_target = headers.get(QUALITY_TARGET_HEADER)
    if strategy is None and min_quality is None and explain is None and quality_target is None:
        return NO_CONTROLS
    if strategy is not None:
        strategy = strategy.strip().lower()
        if strategy not in STRATEGIES:
            raise bad_request(
                f"invalid {STRATEGY_HEADER} {strategy!r}: use one of " + ", ".join(STRATEGIES), STRATEGY_HEADER
            )
    quality = 0
    if min_quality is not None:
        if not (min_quality.strip().isdigit() and 1 <= int(min_quality) <= 5):
            raise bad_request(f"invalid {MIN_QUALITY_HEADER} {min_quality!r}: use an integer from 1 to 5",
                              MIN_QUALITY_HEADER)
        quality = int(min_quality)
    if explain is not None and explain.strip() not in ("0", "1", "true", "false"):
        raise bad_request(f"invalid {EXPLAIN_HEADER} {explain!r}: use 1 or 0", EXPLAIN_HEADER)
    target = 0.0
    if quality_target is not None:
        target = _quality_target(quality_target)
    return Controls(strategy or "", quality, explain is not None and explain.strip() in ("1", "true"), target)


def _quality_target(value: str) -> float:
    text = value.strip()
    target = float(text) if _DECIMAL.fullmatch(text) else 0.0
    if not 0 < target <= 1:
        raise bad_request(f"invalid {QUALITY_TARGET_HEADER} {value!r}: use a number greater than 0 and at most 1 "
                          "(0.95 keeps 95% of the flagship's quality)", QUALITY_TARGET_HEADER)
    return target


def explanation(plan: Plan) -> str:
    """The scored candidates as compact JSON: names, numbers, reasons — never content."""
    order = {endpoint.name: position for position, endpoint in enumerate(plan.endpoints)}
    candidates = sorted(plan.candidates, key=lambda c: order.get(c.endpoint.name, len(order)))
    explained = {
        "strategy": plan.strategy,
        "needed_quality": plan.needed_quality,
        "candidates": [c.explain() for c in candidates[:_EXPLAIN_MAX_CANDIDATES]],
    }
    if plan.quality_target is not None:
        explained["quality_target"] = plan.quality_target
    return orjson.dumps(explained).decode()
