"""Retry budgets: failover must not bury an endpoint that is itself in trouble.

Each endpoint has a token bucket. Every first attempt sent to it adds
`ratio` tokens (0.2 = retries may add 20% on top of first attempts); every
retry sent to it takes one. A retry finding no token is not sent there, so
the extra load any endpoint sees from other endpoints' failures is bounded.
A small floor lets a quiet endpoint still absorb a few retries.
"""

from __future__ import annotations

from prometheus_client import Counter

BUDGET_EXHAUSTED = Counter(
    "megarouter_retry_budget_exhausted_total", "Retries not sent because the endpoint's budget was spent", ["endpoint"]
)
FLOOR_TOKENS = 3.0      # available to an endpoint that has seen no traffic yet
MAX_TOKENS = 100.0      # a long quiet period does not bank unlimited retries


class RetryBudgets:
    def __init__(self) -> None:
        self._tokens: dict[str, float] = {}

    def first_attempt(self, endpoint: str, ratio: float) -> None:
        tokens = self._tokens.get(endpoint, FLOOR_TOKENS)
        self._tokens[endpoint] = min(MAX_TOKENS, tokens + ratio)

    def try_retry(self, endpoint: str) -> bool:
        tokens = self._tokens.get(endpoint, FLOOR_TOKENS)
        if tokens < 1.0:
            BUDGET_EXHAUSTED.labels(endpoint).inc()
            return False
        self._tokens[endpoint] = tokens - 1.0
        return True

    def tokens(self, endpoint: str) -> float:
        return self._tokens.get(endpoint, FLOOR_TOKENS)
