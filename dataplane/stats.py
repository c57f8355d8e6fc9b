"""What upstream attempts say about endpoints: health, outliers, counters, metrics.

The request path calls `record` once per upstream attempt; it keeps the live
health registry and the outlier detector current and counts for telemetry
and Prometheus (label children are cached, so a record costs a few
dictionary lookups). Telemetry takes the counters accumulated since its last
report with `drain`. Per-key usage analytics are `dataplane/usage.py`; the
routes' retry budgets are `dataplane/failover/budget.py` — each stage is
handed the pieces it uses. Counts, latencies and token totals only — never
content.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import Counter, Gauge, Histogram

from dataplane.failover.outlier import NOT_THE_ENDPOINTS, OutlierDetector
from dataplane.health import HealthRegistry

CLIENT_REQUESTS = Counter(
    "megarouter_requests_total", "Client requests by API and HTTP status", ["api", "status"]
)
UPSTREAM_REQUESTS = Counter(
    "megarouter_upstream_requests_total", "Upstream attempts by endpoint and outcome", ["endpoint", "outcome"]
)
UPSTREAM_LATENCY = Histogram(
    "megarouter_upstream_latency_seconds",
    "Upstream time to response headers (JSON: whole response)",
    ["endpoint"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
TOKENS = Counter("megarouter_tokens_total", "Tokens reported by upstreams", ["endpoint", "kind"])
COST = Counter("megarouter_cost_usd_total", "Cost of served requests at catalog prices", ["endpoint"])
ATTEMPTS = Histogram(
    "megarouter_attempts_per_request", "Upstream attempts per client request", buckets=(1, 2, 3, 4, 5, 10)
)
# With --workers: the oldest table any worker runs.
TABLE_VERSION = Gauge("megarouter_table_version", "Version of the routing table in use", multiprocess_mode="min")
SUSPECT_FAILURES = Counter(
    "megarouter_suspect_failures_total",
    "Failures of requests that failed on several providers, not counted against an endpoint because it went "
    "on serving other requests")
# How long a suspect request's failure waits for the endpoint's next outcome before it counts.
SUSPECT_HOLD_S = 5.0
TABLE_NACKS = Counter("megarouter_table_nacks_total", "Routing tables rejected by this proxy")


@dataclass(slots=True)
class EndpointCounters:
    requests: int = 0
    successes: int = 0
    errors_by_class: dict[str, int] = field(default_factory=dict)
    latency_ms_sum: float = 0.0
    ttft_ms_sum: float = 0.0
    ttft_count: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0


class EndpointStats:
    """Counters per endpoint; also keeps the live health registry current."""

    def __init__(self, health: HealthRegistry | None = None, outliers: OutlierDetector | None = None) -> None:
        self.health = health or HealthRegistry()
        self.outliers = outliers or OutlierDetector()
        self._counters: dict[str, EndpointCounters] = {}
        self._outcome_children: dict[tuple[str, str], object] = {}
        self._latency_children: dict[str, object] = {}
        self._token_children: dict[str, tuple] = {}
        self._client_children: dict[tuple[str, int], object] = {}
        # endpoint -> failures of suspect requests awaiting its next outcome: (at, class, latency, retry-after)
        self._suspects: dict[str, list[tuple[float, str, float, float | None]]] = {}

    def started(self, endpoint: str) -> None:
        """An attempt begins; every attempt ends with exactly one `record`."""
        self.health.started(endpoint)

    def record(self, endpoint: str, outcome: str, latency_s: float, **details) -> None:
        """An attempt ended with `outcome` ("success", "cancelled" by the client, or an error
        class); `details` as for `observe`."""
        self.health.finished(endpoint, None, None, None)
        self.observe(endpoint, outcome, latency_s, **details)

    def hold_suspect(self, endpoint: str, outcome: str, latency_s: float, retry_after_s: float | None) -> None:
        """A failure of a request that failed on several providers: judged by the endpoint's next
        outcome — dropped on a success, counted on a failure or after SUSPECT_HOLD_S."""
        self._suspects.setdefault(endpoint, []).append((self.health.now(), outcome, latency_s, retry_after_s))

    def _judge_suspects(self, endpoint: str, outcome: str) -> None:
        held = self._suspects.pop(endpoint, None)
        if held is None:
            return
        if outcome == "success":
            SUSPECT_FAILURES.inc(len(held))  # it serves others: the request was the problem
            return
        for _at, failure, latency_s, retry_after_s in held:
            self.observe(endpoint, failure, latency_s, retry_after_s=retry_after_s)

    def expire_suspects(self, now: float) -> None:
        """Held failures with no verdict after SUSPECT_HOLD_S count after all."""
        for endpoint, held in list(self._suspects.items()):
            if now - held[0][0] >= SUSPECT_HOLD_S:
                self._judge_suspects(endpoint, "expired")

    def abandon(self, endpoint: str) -> None:
        """An attempt ended whose outcome is judged later (`observe`), or never."""
        self.health.finished(endpoint, None, None, None)

    def observe(
        self,
        endpoint: str,
        outcome: str,
        latency_s: float,
        *,
        ttft_s: float | None = None,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        cost_usd: float = 0.0,
        retry_after_s: float | None = None,
    ) -> None:
        """An attempt's outcome: health, outliers, counters, metrics (not requests in flight)."""
        if self._suspects and endpoint in self._suspects and outcome not in NOT_THE_ENDPOINTS:
            self._judge_suspects(endpoint, outcome)
        # A client hanging up, or the caller's own error, says nothing about the endpoint's health.
        if outcome not in NOT_THE_ENDPOINTS:
            self.health.observe(endpoint, outcome == "success", latency_s, ttft_s)
        now = self.health.now()
        if outcome != "success" and outcome not in NOT_THE_ENDPOINTS:
            rate, peers, samples = self._rates(endpoint, now)
            self.outliers.record(endpoint, outcome, now, retry_after_s=retry_after_s,
                                 success_rate=rate, peer_rate=peers, samples=samples)
        else:
            self.outliers.record(endpoint, outcome, now)
        counters = self._counters.get(endpoint)
        if counters is None:
            counters = self._counters[endpoint] = EndpointCounters()
        counters.requests += 1
        if outcome == "success":
            counters.successes += 1
        else:
            counters.errors_by_class[outcome] = counters.errors_by_class.get(outcome, 0) + 1
        counters.latency_ms_sum += latency_s * 1000.0
        if ttft_s is not None:
            counters.ttft_ms_sum += ttft_s * 1000.0
            counters.ttft_count += 1
        counters.prompt_tokens += prompt_tokens
        counters.completion_tokens += completion_tokens
        counters.cost_usd += cost_usd

        child = self._outcome_children.get((endpoint, outcome))
        if child is None:
            child = self._outcome_children[(endpoint, outcome)] = UPSTREAM_REQUESTS.labels(endpoint, outcome)
        child.inc()  # type: ignore[attr-defined]
        latency = self._latency_children.get(endpoint)
        if latency is None:
            latency = self._latency_children[endpoint] = UPSTREAM_LATENCY.labels(endpoint)
        latency.observe(latency_s)  # type: ignore[attr-defined]
        if prompt_tokens or completion_tokens:
            children = self._token_children.get(endpoint)
            if children is None:
                children = self._token_children[endpoint] = (
                    TOKENS.labels(endpoint, "prompt"), TOKENS.labels(endpoint, "completion"), COST.labels(endpoint))
            children[0].inc(prompt_tokens)
            children[1].inc(completion_tokens)
            children[2].inc(cost_usd)

    def _rates(self, endpoint: str, now: float) -> tuple[float, float | None, float]:
        """This endpoint's success probability, its peers' mean, and its sample weight."""
        own = self.health.get(endpoint)
        peers = [self.health.success_probability(name, now) for name in self.health.names() if name != endpoint]
        return (self.health.success_probability(endpoint, now), (sum(peers) / len(peers) if peers else None),
                own.successes + own.failures)

    def client_response(self, api: str, status: int) -> None:
        child = self._client_children.get((api, status))
        if child is None:
            child = self._client_children[(api, status)] = CLIENT_REQUESTS.labels(api, str(status))
        child.inc()  # type: ignore[attr-defined]

    def drain(self) -> dict[str, EndpointCounters]:
        """Counters since the previous drain, resetting them."""
        counters, self._counters = self._counters, {}
        return counters
