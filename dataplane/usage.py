"""Usage analytics: each client request counted once, by the first of its outcomes.

Per (key, key's node, served model, route or task, UTC day) — one dict lookup
keyed by a tuple. Telemetry takes them with `drain` and gives back what it
could not send with `restore`, merged by the same keys, so undelivered usage
is bounded by the number of distinct keys. Counts, tokens and cost only —
never content.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from megarouter import latency


@dataclass(slots=True)
class UsageCounters:
    requests: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    # Requests per latency bucket (megarouter.latency).
    latency_ms_buckets: list[int] = field(default_factory=lambda: [0] * latency.BUCKETS)

    def add(self, other: UsageCounters) -> None:
        self.requests += other.requests
        self.errors += other.errors
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.cost_usd += other.cost_usd
        latency.add_into(self.latency_ms_buckets, other.latency_ms_buckets)


@dataclass(slots=True, frozen=True)
class Recorded:
    """One request's usage as the ledger counted it."""
    model: str
    error: bool
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    cost_usd: float
    latency_ms: float
    ttft_ms: float | None


# (API key name, the key's node, served model ("" = none), route or task, UTC day as days since the epoch)
UsageKey = tuple[str, str, str, str, int]


class UsageAccount:
    """One client request's usage: counted exactly once, by the first of
    `served` (a response was relayed) or `failed` (an error response)."""

    __slots__ = ("_ledger", "key", "node", "route", "done", "_started", "recorded")

    def __init__(self, ledger: UsageLedger, key: str, node: str, route: str) -> None:
        self._ledger = ledger
        self.key = key
        self.node = node
        self.route = route
        self.done = False
        self._started = time.monotonic()
        # What was counted, for the request log (which must agree with the ledger).
        self.recorded: Recorded | None = None

    def served(self, model: str, error: bool = False, prompt_tokens: int = 0, completion_tokens: int = 0,
               cost_usd: float = 0.0, *, cached_tokens: int = 0, ttft_s: float | None = None) -> None:
        """Counted when the response (for a stream: its last byte) has been relayed, so the
        latency is the whole request as the client saw it."""
        if not self.done:
            self.done = True
            latency_ms = (time.monotonic() - self._started) * 1000
            self._ledger.record((self.key, self.node, model, self.route, int(time.time() // 86400)),
                                error, prompt_tokens, completion_tokens, cost_usd, latency_ms)
            self.recorded = Recorded(model, error, prompt_tokens, completion_tokens, cached_tokens, cost_usd,
                                     latency_ms, ttft_s * 1000 if ttft_s is not None else None)

    def failed(self) -> None:
        """An error response before anything was served: no model, no tokens."""
        self.served("", True)


class UsageLedger:
    """The usage counted since telemetry last took it."""

    def __init__(self) -> None:
        self._usage: dict[UsageKey, UsageCounters] = {}

    def account(self, key: str, nodes: tuple[str, ...], route: str) -> UsageAccount:
        """The usage account of one client request by API key `key` (whose
        node chain is `nodes`, nearest first) naming `route` (route, model or task)."""
        return UsageAccount(self, key, nodes[0] if nodes else "", route)

    def record(self, key: UsageKey, error: bool, prompt_tokens: int, completion_tokens: int,
               cost_usd: float, latency_ms: float = 0.0) -> None:
        counters = self._usage.get(key)
        if counters is None:
            counters = self._usage[key] = UsageCounters()
        counters.requests += 1
        counters.latency_ms_buckets[latency.bucket_of(latency_ms)] += 1
        if error:
            counters.errors += 1
        counters.prompt_tokens += prompt_tokens
        counters.completion_tokens += completion_tokens
        counters.cost_usd += cost_usd

    def drain(self) -> dict[UsageKey, UsageCounters]:
        """Usage since the previous drain, resetting it."""
        usage, self._usage = self._usage, {}
        return usage

    def restore(self, usage: dict[UsageKey, UsageCounters]) -> None:
        """Give back drained usage that could not be delivered; it goes out
        with the next report, merged with what was counted meanwhile."""
        for key, counters in usage.items():
            current = self._usage.get(key)
            if current is None:
                self._usage[key] = counters
            else:
                current.add(counters)
