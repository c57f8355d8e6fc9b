"""The attempt loop: walk a routing plan until an endpoint answers.

Candidates are tried in plan order (the degradation path's tiers, each
ordered by the strategy), within the route's attempt limit, per-try timeout
and total deadline. A failure whose class the route retries moves on —
after a short jittered backoff,  and only while the route's retry budget
allows it; after a context-length error, only to models with a larger
window. The caller's own errors end the request at once.

For streams an attempt succeeds only when its first chunk has arrived
(within the TTFT timeout): until then nothing has reached the client, so a
provider that accepts the request and then stalls is failed over invisibly.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from urllib.parse import urlsplit

import aiohttp
import orjson
from prometheus_client import Counter, Histogram

from dataplane.errors import ApiError, bad_request
from dataplane.failover.budget import RetryBudgets
from dataplane.failover.policy import FailoverPolicy
from dataplane.providers.base import ErrorClass, ProviderError
from dataplane.stats import ATTEMPTS, EndpointStats
from dataplane.table import EndpointRuntime, Target
from dataplane.translate.base import Translator, UpstreamRequest
from dataplane.upstream import SessionPool, caller_error, exhausted_error, send
from megarouter import tracing

FALLBACK_DEPTH = Histogram(
    "megarouter_fallback_depth", "Degradation-path tier that served the request (0 = first)",
    buckets=(0, 1, 2, 3, 5),
)

# The translator for one endpoint; its request() may raise ApiError for a request the
# endpoint's wire format cannot express.
TranslatorFor = Callable[[EndpointRuntime], Translator]


@dataclass(slots=True)
class Success:
    endpoint: EndpointRuntime
    translator: Translator      # the one that sent the request: it translates the answer
    response: aiohttp.ClientResponse
    attempts: int
    started: float              # loop time when the successful attempt began
    first_chunk: bytes = b""    # streams: already read from `response`
    first_chunk_at: float = 0.0

    def headers(self, target: Target, strategy: str | None = None) -> dict[str, str]:
        """Response headers that say what served the request."""
        headers = {
            "x-megarouter-model": self.endpoint.model,
            "x-megarouter-endpoint": self.endpoint.name,
            "x-megarouter-attempts": str(self.attempts),
        }
        if target.kind == "route":
            headers["x-megarouter-route"] = target.name
        if strategy:
            headers["x-megarouter-strategy"] = strategy
        return headers


async def first_success(
    sessions: SessionPool,
    stats: EndpointStats,
    retry_budgets: RetryBudgets,
    target: Target,
    endpoints: tuple[EndpointRuntime, ...],
    translator_for: TranslatorFor,
    *,
    stream: bool,
    payload: dict | None = None,
    failures: list[tuple[str, str]] | None = None,
) -> Success:
    """`payload`: the client's request, only to name the field of a too-deeply-nested one.
    `failures`, if given, gets each failed attempt's (endpoint, error class), for the request log."""
    policy: FailoverPolicy = target.policy
    loop = asyncio.get_running_loop()
    deadline = loop.time() + policy.total_timeout_s
    attempts = 0
    last_failure: ProviderError | None = None
    min_context = 0   # after a context-length error, only larger windows
    verdicts = _Verdicts(stats)
    free_retry = False  # the last attempt was a probe: moving on costs no retry-budget token
    for endpoint in endpoints:
        remaining = deadline - loop.time()
        if attempts >= policy.max_attempts or remaining <= 0:
            break
        if endpoint.context_window <= min_context:
            continue
        if attempts == 0:
            retry_budgets.first_attempt(target.name, policy.retry_budget_ratio)
        else:
            if free_retry:
                PROBE_RETRIES.inc()
            elif not retry_budgets.try_retry(target.name):
                break  # the route's retries are spent: fail now rather than pile on
            await asyncio.sleep(_backoff(policy, attempts, deadline - loop.time()))
        attempts += 1
        started = loop.time()
        translator = translator_for(endpoint)
        upstream = _request(translator, payload)
        now = stats.health.now()
        free_retry = stats.outliers.take_probe(endpoint.name)
        known_bad = free_retry or stats.outliers.is_ejected(endpoint.name, now)
        stats.started(endpoint.name)
        try:
            with tracing.span("client", partial(_attempt_span, endpoint, attempts, stream)) as attempt_span:
                try:
                    timeout_s = min(policy.per_try_timeout_s, endpoint.provider.timeout_s, remaining)
                    response = await send(sessions, translator, upstream, timeout_s=timeout_s,
                                          read_timeout_s=policy.stall_timeout_s if stream else None)
                    first_chunk = await _first_chunk(response, endpoint, policy, deadline) if stream else b""
                    tracing.set_attributes(attempt_span, {"http.response.status_code": response.status})
                except ProviderError as failure:
                    tracing.set_attributes(attempt_span, {"megarouter.failover_reason": failure.error_class.value,
                                                          "http.response.status_code": failure.status or None})
                    tracing.fail(attempt_span, failure.error_class.value)
                    raise
        except asyncio.CancelledError:
            stats.record(endpoint.name, "cancelled", loop.time() - started)
            verdicts.settle(served=False, cancelled=True)
            raise
        except ProviderError as failure:
            if failures is not None:
                failures.append((endpoint.name, failure.error_class.value))
            verdicts.failed(endpoint, failure, loop.time() - started, judge_later=not known_bad)
            if failure.error_class not in policy.retry_on:
                ATTEMPTS.observe(attempts)
                verdicts.settle(served=False)
                if failure.error_class in (ErrorClass.INVALID_REQUEST, ErrorClass.CONTENT_FILTER):
                    raise caller_error(failure) from None
                raise exhausted_error(failure, attempts) from None
            if failure.error_class is ErrorClass.CONTEXT_LENGTH:
                min_context = max(min_context, endpoint.context_window)
            last_failure = failure
            continue
        verdicts.settle(served=True)
        ATTEMPTS.observe(attempts)
        FALLBACK_DEPTH.observe(target.tier_of(endpoint))
        return Success(endpoint, translator, response, attempts, started, first_chunk, loop.time())
    ATTEMPTS.observe(max(attempts, 1))
    if verdicts.settle(served=False):
        raise suspect_request_error(last_failure, attempts)
    raise exhausted_error(last_failure, attempts)


# The GenAI conventions' gen_ai.provider.name for each provider kind.
GENAI_PROVIDERS = {"openai": "openai", "azure_openai": "azure.ai.openai", "anthropic": "anthropic",
                   "gemini": "gcp.gemini", "bedrock": "aws.bedrock", "vertex": "gcp.vertex_ai"}


def _attempt_span(endpoint: EndpointRuntime, attempt: int, stream: bool) -> tuple[str, dict]:
    return f"chat {endpoint.upstream_model}", {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": GENAI_PROVIDERS.get(endpoint.provider.kind, endpoint.provider.kind),
        "gen_ai.request.model": endpoint.upstream_model, "gen_ai.request.stream": stream,
        "megarouter.endpoint": endpoint.name, "megarouter.provider": endpoint.provider.name,
        "megarouter.region": endpoint.region, "megarouter.attempt": attempt,
        "server.address": urlsplit(endpoint.provider.base_url).hostname}


PROBE_RETRIES = Counter("megarouter_probe_retries_total",
                        "Retries after a failed probe, which the retry budget does not charge")
# A request whose attempts failed on this many different providers may be the problem itself.
SUSPECT_PROVIDERS = 2


class _Verdicts:
    """A request's server-side failures, judged once the request's outcome is known.

    A malformed request can make a provider answer 5xx — and then the next provider, and the
    next: counted as they happen, one client's bad request would eject healthy endpoints.
    So failures that would count against an endpoint wait for the request to end: if
    another endpoint served it, they stand (those endpoints failed a request that could be
    served). If it failed on several providers, the request is a suspect, and each of its
    failures waits for that endpoint's next outcome (`EndpointStats.hold_suspect`): a
    success — the provider serving others meanwhile — drops it; a failure, or no traffic
    for a few seconds, counts it. In an outage the next request fails too, so nothing is
    lost but a moment."""

    __slots__ = ("_stats", "_pending")

    def __init__(self, stats: EndpointStats) -> None:
        self._stats = stats
        self._pending: list[tuple[EndpointRuntime, ProviderError, float]] = []

    def failed(self, endpoint: EndpointRuntime, failure: ProviderError, latency_s: float,
               judge_later: bool = True) -> None:
        """`judge_later` False: the endpoint was already known bad (ejected, or this was its
        probe), so its failure says nothing new about the request and counts at once."""
        if judge_later and failure.error_class in _JUDGED_LATER:
            self._stats.abandon(endpoint.name)
            self._pending.append((endpoint, failure, latency_s))
        else:
            self._stats.record(endpoint.name, failure.error_class, latency_s, retry_after_s=failure.retry_after_s)

    def settle(self, *, served: bool, cancelled: bool = False) -> bool:
        """Count the pending failures, or hold them as a suspect request's; True if held."""
        pending, self._pending = self._pending, []
        if not pending:
            return False
        suspect = (not served and not cancelled
                   and len({endpoint.provider.name for endpoint, _, _ in pending}) >= SUSPECT_PROVIDERS)
        for endpoint, failure, latency_s in pending:
            if suspect:
                self._stats.hold_suspect(endpoint.name, failure.error_class, latency_s, failure.retry_after_s)
            else:
                self._stats.observe(endpoint.name, failure.error_class, latency_s,
                                    retry_after_s=failure.retry_after_s)
        return suspect


# Failures that would count against an endpoint's health, and so wait for the request's outcome.
_JUDGED_LATER = frozenset({ErrorClass.RETRYABLE, ErrorClass.TIMEOUT})


def suspect_request_error(failure: ProviderError | None, attempts: int) -> ApiError:
    error = exhausted_error(failure, attempts)
    error.message += ("; it failed on several providers, which are charged for it only if they fail other "
                      "requests too: if they keep serving others, this request itself may be malformed")
    return error


async def _first_chunk(
    response: aiohttp.ClientResponse, endpoint: EndpointRuntime, policy: FailoverPolicy, deadline: float
) -> bytes:
    """The stream's first bytes, or a ProviderError (the response is released)."""
    loop = asyncio.get_running_loop()
    timeout = max(0.0, min(policy.ttft_timeout_s, deadline - loop.time()))
    try:
        async with asyncio.timeout(timeout):  # cheaper than wait_for: no extra task
            chunk = await response.content.readany()
    except TimeoutError:
        response.close()
        raise ProviderError(ErrorClass.TIMEOUT, f"no first chunk within {timeout:g}s",
                            endpoint=endpoint.name) from None
    except (aiohttp.ClientError, asyncio.IncompleteReadError) as exc:
        response.close()
        raise ProviderError(ErrorClass.RETRYABLE, f"stream failed before its first chunk ({type(exc).__name__})",
                            endpoint=endpoint.name) from None
    if not chunk:
        response.close()
        raise ProviderError(ErrorClass.RETRYABLE, "stream ended before any data", endpoint=endpoint.name)
    return chunk


# orjson writes at most this many levels of arrays and objects (it reads up to 1024).
MAX_NESTING = 254


def _request(translator: Translator, payload: dict | None) -> UpstreamRequest:
    """The upstream request, or a 400: JSON the caller could send but no provider body can
    hold (orjson writes at most 254 levels of nesting; a translator may recurse)."""
    try:
        return translator.request()
    except (orjson.JSONEncodeError, RecursionError):
        raise bad_request(f"The request is nested too deeply (more than {MAX_NESTING} levels of arrays and "
                          "objects).", param=deepest_field(payload) if payload else None,
                          code="nesting_too_deep") from None


def deepest_field(payload: dict) -> str | None:
    """The top-level field holding the deepest nesting (only computed for the error)."""
    def depth(value) -> int:
        deepest, stack = 0, [(value, 1)]
        while stack:  # iterative: the value may be nested beyond Python's recursion limit
            item, level = stack.pop()
            if isinstance(item, dict | list):
                deepest = max(deepest, level)
                stack.extend((child, level + 1) for child in (item.values() if isinstance(item, dict) else item))
        return deepest
    depths = {name: depth(value) for name, value in payload.items()}
    return max(depths, key=depths.get) if depths else None


def _backoff(policy: FailoverPolicy, retry: int, remaining_s: float) -> float:
    """Full jitter: uniform in [0, min(max, base * 2^(retry-1))], within the deadline."""
    ceiling = min(policy.backoff_max_s, policy.backoff_base_s * 2 ** (retry - 1), max(0.0, remaining_s))
    return random.uniform(0.0, ceiling)
