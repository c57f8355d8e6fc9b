"""Calling providers: pooled sessions and one classified attempt.

One `aiohttp.ClientSession` per provider keeps its connections warm. An
attempt either returns an open 200 response or raises `ProviderError`,
classified by the provider's adapter (see `ErrorClass`).
"""

from __future__ import annotations

import asyncio

import aiohttp
import orjson
import yarl

from dataplane.errors import ClientError, NoEndpointError, UpstreamError, error_body
from dataplane.providers.base import ErrorClass, ProviderError
from dataplane.translate.base import Translator, UpstreamRequest
from megarouter import tracing


class SessionPool:
    """One client session per provider, created on first use."""

    def __init__(self, connections_per_provider: int = 1000) -> None:
        self._sessions: dict[str, aiohttp.ClientSession] = {}
        self._limit = connections_per_provider

    def get(self, provider: str) -> aiohttp.ClientSession:
        session = self._sessions.get(provider)
        if session is None or session.closed:
            connector = aiohttp.TCPConnector(limit=self._limit, ttl_dns_cache=300, enable_cleanup_closed=True)
            # Timeouts are set per request; a session default would cap streams.
            session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=None),
                json_serialize=lambda obj: orjson.dumps(obj).decode(),
            )
            self._sessions[provider] = session
        return session

    async def close(self) -> None:
        for session in self._sessions.values():
            await session.close()
        self._sessions.clear()


async def send(
    sessions: SessionPool,
    translator: Translator,
    upstream: UpstreamRequest,
    *,
    timeout_s: float,
    read_timeout_s: float | None = None,
) -> aiohttp.ClientResponse:
    """Send `upstream` (the translator's request) to its endpoint's provider; return the open
    200 response or raise the ProviderError the translator classifies.

    Without `read_timeout_s` the whole call (a JSON response) must finish
    within `timeout_s`. With it (streams), the response headers must arrive
    within `timeout_s` and afterwards no read may wait longer than
    `read_timeout_s` — the stall timeout.
    """
    endpoint = translator.endpoint
    provider = endpoint.provider
    headers = {**provider.headers, **upstream.headers} if upstream.headers else provider.headers
    trace_headers = tracing.inject()
    if trace_headers:  # W3C traceparent: the provider's side of the trace, where it keeps one
        headers = {**headers, **trace_headers}
    url: str | yarl.URL = upstream.url
    if provider.signer is not None:
        try:
            headers = {**headers, **await provider.signer.headers_for("POST", upstream.url, upstream.body, headers)}
        except ProviderError as failure:
            failure.endpoint = endpoint.name
            raise
        # Sent exactly as signed: yarl would otherwise re-quote the path (`%3A` in a Bedrock
        # model id back to `:`), and the provider would compute a different signature.
        url = yarl.URL(upstream.url, encoded=True)
    timeout = (
        aiohttp.ClientTimeout(total=timeout_s)
        if read_timeout_s is None
        else aiohttp.ClientTimeout(total=None, sock_connect=timeout_s, sock_read=read_timeout_s)
    )
    try:
        request = sessions.get(provider.name).post(url, data=upstream.body, headers=headers, timeout=timeout)
        # Streams: the stall timeout applies to reads of the body; waiting
        # for the headers is bounded by the per-try timeout.
        if read_timeout_s is None:
            response = await request
        else:
            async with asyncio.timeout(timeout_s):  # cheaper than wait_for: no extra task
                response = await request
    except TimeoutError as exc:
        raise ProviderError(ErrorClass.TIMEOUT, f"no response within {timeout_s:g}s", endpoint=endpoint.name) from exc
    except aiohttp.ClientError as exc:
        raise ProviderError(
            ErrorClass.RETRYABLE, f"connection failed ({type(exc).__name__})", endpoint=endpoint.name
        ) from exc
    if response.status == 200:
        return response
    try:
        error = await response.read()
    except (aiohttp.ClientError, TimeoutError):
        error = b""
    finally:
        response.release()
    failure = translator.error(response.status, response.headers, error)
    failure.endpoint = endpoint.name
    if provider.signer is not None:
        provider.signer.after_failure(failure)
    raise failure


def caller_error(failure: ProviderError) -> ClientError:
    """A provider's verdict on the caller's own request, in OpenAI's shape."""
    status = failure.status if 400 <= failure.status < 500 else 400
    code = failure.code
    if failure.error_class is ErrorClass.CONTEXT_LENGTH:
        code = code or "context_length_exceeded"
    elif failure.error_class is ErrorClass.CONTENT_FILTER:
        code = code or "content_filter"
    return ClientError(status, failure.message, param=failure.param, code=code)


def exhausted_error(failure: ProviderError | None, attempts: int) -> ClientError | NoEndpointError | UpstreamError:
    """The error for a request none of whose attempts succeeded."""
    if failure is None:
        return NoEndpointError(
            503, "no healthy endpoint is available for this model", type="server_error", code="no_available_endpoint"
        )
    message = f"upstream failed after {attempts} attempt(s); last: {failure}"
    if failure.error_class is ErrorClass.TIMEOUT:
        return UpstreamError(504, message, type="server_error", code="upstream_timeout")
    if failure.error_class is ErrorClass.RATE_LIMITED:
        # Every candidate is rate-limited: tell the caller when to come back.
        headers = {"Retry-After": str(max(1, round(failure.retry_after_s)))} if failure.retry_after_s else {}
        return UpstreamError(429, message, type="requests", code="rate_limit_exceeded", headers=headers)
    if failure.error_class is ErrorClass.CONTEXT_LENGTH:
        return caller_error(failure)
    return UpstreamError(502, message, type="server_error", code="upstream_error")


STREAM_INTERRUPTED = b"data: " + error_body(
    "the upstream stream ended before completing; the response is incomplete",
    "server_error",
    None,
    "upstream_stream_interrupted",
) + b"\n\n"
