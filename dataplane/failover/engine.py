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

import aiohttp
from prometheus_client import Histogram

from dataplane.failover.policy import FailoverPolicy
from dataplane.providers.base import ErrorClass, ProviderError
from dataplane.stats import ATTEMPTS, EndpointStats
from dataplane.table import EndpointRuntime, Target
from dataplane.upstream import SessionPool, caller_error, exhausted_error, send

FALLBACK_DEPTH = Histogram(
    "megarouter_fallback_depth", "Degradation-path tier that served the request (0 = first)",
    buckets=(0, 1, 2, 3, 5),
)

# Builds (url, body) for one endpoint; may raise ApiError for a request the
# endpoint's wire format cannot express.
RequestBuilder = Callable[[EndpointRuntime], tuple[str, bytes]]


@dataclass(slots=True)
class Success:
    endpoint: EndpointRuntime
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
    target: Target,
    endpoints: tuple[EndpointRuntime, ...],
    build: RequestBuilder,
    *,
    stream: bool,
) -> Success:
    policy: FailoverPolicy = target.policy
    loop = asyncio.get_running_loop()
    deadline = loop.time() + policy.total_timeout_s
    attempts = 0
    last_failure: ProviderError | None = None
    min_context = 0   # after a context-length error, only larger windows
    for endpoint in endpoints:
        remaining = deadline - loop.time()
        if attempts >= policy.max_attempts or remaining <= 0:
            break
        if endpoint.context_window <= min_context:
            continue
        if attempts == 0:
            stats.retry_budgets.first_attempt(target.name, policy.retry_budget_ratio)
        else:
            if not stats.retry_budgets.try_retry(target.name):
                break  # the route's retries are spent: fail now rather than pile on
            await asyncio.sleep(_backoff(policy, attempts, deadline - loop.time()))
        attempts += 1
        started = loop.time()
        url, body = build(endpoint)
        stats.started(endpoint.name)
        try:
            response = await send(sessions, endpoint, url, body,
                                  timeout_s=min(policy.per_try_timeout_s, endpoint.provider.timeout_s, remaining),
                                  read_timeout_s=policy.stall_timeout_s if stream else None)
            first_chunk = await _first_chunk(response, endpoint, policy, deadline) if stream else b""
        except asyncio.CancelledError:
            stats.record(endpoint.name, "cancelled", loop.time() - started)
            raise
        except ProviderError as failure:
            stats.record(endpoint.name, failure.error_class, loop.time() - started,
                         retry_after_s=failure.retry_after_s)
            if failure.error_class not in policy.retry_on:
                ATTEMPTS.observe(attempts)
                if failure.error_class in (ErrorClass.INVALID_REQUEST, ErrorClass.CONTENT_FILTER):
                    raise caller_error(failure) from None
                raise exhausted_error(failure, attempts) from None
            if failure.error_class is ErrorClass.CONTEXT_LENGTH:
                min_context = max(min_context, endpoint.context_window)
            last_failure = failure
            continue
        ATTEMPTS.observe(attempts)
        FALLBACK_DEPTH.observe(target.tier_of(endpoint))
        return Success(endpoint, response, attempts, started, first_chunk, loop.time())
    ATTEMPTS.observe(max(attempts, 1))
    raise exhausted_error(last_failure, attempts)


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


def _backoff(policy: FailoverPolicy, retry: int, remaining_s: float) -> float:
    """Full jitter: uniform in [0, min(max, base * 2^(retry-1))], within the deadline."""
    ceiling = min(policy.backoff_max_s, policy.backoff_base_s * 2 ** (retry - 1), max(0.0, remaining_s))
    return random.uniform(0.0, ceiling)
