"""Per-request routing controls (headers) and the explanation header.

  x-megarouter-strategy: cost | latency | balanced | availability
  x-megarouter-min-quality: 1..5    (never serve a model below this tier)
  x-megarouter-explain: 1           (return the scored candidates)

Invalid values are the caller's error: a 400 naming the header and the
allowed values, never a silent fallback.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import orjson

from dataplane.errors import bad_request
from dataplane.routing.router import STRATEGIES, Plan

STRATEGY_HEADER = "x-megarouter-strategy"
MIN_QUALITY_HEADER = "x-megarouter-min-quality"
EXPLAIN_HEADER = "x-megarouter-explain"
# Response headers are limited in size by most clients and proxies.
_EXPLAIN_MAX_CANDIDATES = 20


@dataclass(frozen=True, slots=True)
class Controls:
    strategy: str = ""        # "" = not set by the request
    min_quality: int = 0
    explain: bool = False


NO_CONTROLS = Controls()


def read_controls(headers: Mapping[str, str]) -> Controls:
    strategy = headers.get(STRATEGY_HEADER)
    min_quality = headers.get(MIN_QUALITY_HEADER)
    explain = headers.get(EXPLAIN_HEADER)
    if strategy is None and min_quality is None and explain is None:
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
    return Controls(strategy or "", quality, explain is not None and explain.strip() in ("1", "true"))


def explanation(plan: Plan) -> str:
    """The scored candidates as compact JSON: names, numbers, reasons — never content."""
    order = {endpoint.name: position for position, endpoint in enumerate(plan.endpoints)}
    candidates = sorted(plan.candidates, key=lambda c: order.get(c.endpoint.name, len(order)))
    return orjson.dumps({
        "strategy": plan.strategy,
        "needed_quality": plan.needed_quality,
        "candidates": [c.explain() for c in candidates[:_EXPLAIN_MAX_CANDIDATES]],
    }).decode()
