"""The attempt loop shared by every API: try a target's endpoints in order.

Candidates are tried in degradation-path order, up to the target's attempt
limit, each within the per-try timeout and all within the total deadline.
Failures classified as the endpoint's (see `FAILOVER_CLASSES`) move on to
the next candidate; the caller's own errors end the request at once. The
result is the first open 200 response, with what it took to get it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp

from dataplane.providers.base import FAILOVER_CLASSES, ProviderError
from dataplane.stats import ATTEMPTS, EndpointStats
from dataplane.table import EndpointRuntime, Target
from dataplane.upstream import SessionPool, caller_error, exhausted_error, send

# Builds (url, body) for one endpoint; may raise ApiError for a request the
# endpoint's wire format cannot express.
RequestBuilder = Callable[[EndpointRuntime], tuple[str, bytes]]


@dataclass(slots=True)
class Success:
    endpoint: EndpointRuntime
    response: aiohttp.ClientResponse
    attempts: int
    started: float          # loop time when the successful attempt began

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
    loop = asyncio.get_running_loop()
    deadline = loop.time() + target.total_timeout_s
    attempts = 0
    last_failure: ProviderError | None = None
    for endpoint in endpoints:
        remaining = deadline - loop.time()
        if attempts >= target.max_attempts or remaining <= 0:
            break
        attempts += 1
        timeout_s = min(target.per_try_timeout_s, endpoint.provider.timeout_s, remaining)
        started = loop.time()
        url, body = build(endpoint)
        stats.started(endpoint.name)
        try:
            response = await send(sessions, endpoint, url, body, timeout_s=timeout_s, stream=stream)
        except asyncio.CancelledError:
            stats.record(endpoint.name, "cancelled", loop.time() - started)
            raise
        except ProviderError as failure:
            stats.record(endpoint.name, failure.error_class, loop.time() - started)
            if failure.error_class not in FAILOVER_CLASSES:
                ATTEMPTS.observe(attempts)
                raise caller_error(failure) from None
            last_failure = failure
            continue
        ATTEMPTS.observe(attempts)
        return Success(endpoint, response, attempts, started)
    ATTEMPTS.observe(max(attempts, 1))
    raise exhausted_error(last_failure, attempts)
