"""Retry budgets: failover must not multiply load on providers in trouble.

Each route has a token bucket. Every first attempt of a request on the
route adds `ratio` tokens (0.2 = retries may add 20% on top of first
attempts); every retry takes one. A retry finding no token is not sent, so
however many endpoints fail at once, the upstream load the route generates
stays within (1 + ratio) times its requests, plus the bucket's capacity:
`CAPACITY` (20) tokens, which is also where a new route starts, so a quiet
route can still absorb a short burst of failures. (It used to bank up to 100,
which let a full outage after a quiet spell almost double the upstream load;
10 starved failover in `make chaos`'s combined-faults scenario, 20 does not.)
A retry after a failed *probe* (a half-open or panic probe, see outlier.py)
costs no token: probing must not starve failover to the healthy endpoints.

Why per route, not per endpoint: keyed by the endpoint a retry goes to, a
healthy fallback that gets no first attempts of its own could never take
over from a failed primary; keyed by the endpoint that failed, a dead
primary's requests would mostly fail instead of moving on. A single
failing endpoint is handled by outlier ejection (it stops getting first
attempts at all); the budget bounds the brown-out where everything fails.
"""

from __future__ import annotations

from prometheus_client import Counter

BUDGET_EXHAUSTED = Counter(
    "megarouter_retry_budget_exhausted_total", "Retries not sent because the route's retry budget was spent",
    ["route"],
)
CAPACITY = 20.0         # the most a route can bank, and what it starts with


class RetryBudgets:
    def __init__(self) -> None:
        self._tokens: dict[str, float] = {}

    def first_attempt(self, route: str, ratio: float) -> None:
        tokens = self._tokens.get(route, CAPACITY)
        self._tokens[route] = min(CAPACITY, tokens + ratio)

    def try_retry(self, route: str) -> bool:
        tokens = self._tokens.get(route, CAPACITY)
        if tokens < 1.0:
            BUDGET_EXHAUSTED.labels(route).inc()
            return False
        self._tokens[route] = tokens - 1.0
        return True

    def tokens(self, route: str) -> float:
        return self._tokens.get(route, CAPACITY)
