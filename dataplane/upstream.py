"""Calling providers: pooled sessions, one attempt, error classification.

One `aiohttp.ClientSession` per provider keeps its connections warm. An
attempt either returns an open response with status 200 or raises
`UpstreamFailure` carrying a class the retry loop uses:

  retryable      5xx, 408, 429, connection failures — try the next candidate
  timeout        no answer within the per-try timeout — try the next candidate
  endpoint       401/403/404 from the provider: this endpoint is misconfigured
                 (bad credential, wrong upstream model) — not the caller's
                 fault, so try the next candidate
  invalid_request 400/413/422: the caller's own request is wrong — never
                 retried; the provider's error goes back to the caller
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aiohttp
import orjson

from dataplane.errors import ApiError, error_body
from dataplane.table import EndpointRuntime

CALLER_FAULT_STATUSES = frozenset({400, 413, 422})
ENDPOINT_FAULT_STATUSES = frozenset({401, 403, 404})


@dataclass
class UpstreamFailure(Exception):
    error_class: str
    endpoint: str
    detail: str
    status: int = 0                  # the provider's status, if it answered
    body: bytes = b""                # the provider's error body (caller faults only)
    retry_after: str | None = None

    def __str__(self) -> str:
        return f"endpoint {self.endpoint!r}: {self.detail}"


class SessionPool:
    """One client session per provider, created on first use."""

    def __init__(self, connections_per_provider: int = 1000) -> None:
        self._sessions: dict[str, aiohttp.ClientSession] = {}
        self._limit = connections_per_provider

    def get(self, provider: str) -> aiohttp.ClientSession:
        session = self._sessions.get(provider)
        if session is None or session.closed:
            connector = aiohttp.TCPConnector(limit=self._limit, ttl_dns_cache=300, enable_cleanup_closed=True)
            # Timeouts are set per request; the session default would cap streams.
            session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=None),
                auto_decompress=True,
                json_serialize=lambda obj: orjson.dumps(obj).decode(),
            )
            self._sessions[provider] = session
        return session

    async def retire_except(self, keep: set[str]) -> None:
        """Close sessions of providers no longer in the table."""
        for name in [name for name in self._sessions if name not in keep]:
            await self._sessions.pop(name).close()

    async def close(self) -> None:
        for session in self._sessions.values():
            await session.close()
        self._sessions.clear()


async def send(
    sessions: SessionPool,
    endpoint: EndpointRuntime,
    body: bytes,
    *,
    timeout_s: float,
    stream: bool,
) -> aiohttp.ClientResponse:
    """POST `body` to the endpoint; return the open 200 response or raise."""
    provider = endpoint.provider
    # A JSON call must finish within the timeout; a stream must start within
    # it and then never go silent for longer than it.
    timeout = (
        aiohttp.ClientTimeout(total=None, sock_connect=timeout_s, sock_read=timeout_s)
        if stream
        else aiohttp.ClientTimeout(total=timeout_s)
    )
    try:
        response = await sessions.get(provider.name).post(
            endpoint.chat_url, data=body, headers=provider.headers, timeout=timeout
        )
    except TimeoutError as exc:
        raise UpstreamFailure("timeout", endpoint.name, f"no response within {timeout_s:g}s") from exc
    except aiohttp.ClientError as exc:
        raise UpstreamFailure("retryable", endpoint.name, f"connection failed ({type(exc).__name__})") from exc
    if response.status == 200:
        return response
    try:
        error = await response.read()
    except (aiohttp.ClientError, TimeoutError):
        error = b""
    finally:
        response.release()
    raise _classify(endpoint.name, response.status, error, response.headers.get("Retry-After"))


def _classify(endpoint: str, status: int, body: bytes, retry_after: str | None) -> UpstreamFailure:
    if status in CALLER_FAULT_STATUSES:
        return UpstreamFailure("invalid_request", endpoint, f"HTTP {status}", status, body)
    if status in ENDPOINT_FAULT_STATUSES:
        return UpstreamFailure("endpoint", endpoint, f"HTTP {status} (endpoint misconfigured?)", status)
    if status == 429:
        return UpstreamFailure("rate_limited", endpoint, "HTTP 429", status, retry_after=retry_after)
    return UpstreamFailure("retryable", endpoint, f"HTTP {status}", status)


def caller_fault_error(failure: UpstreamFailure) -> ApiError:
    """The provider's verdict on the caller's request, in OpenAI's shape."""
    message, param, code = f"the provider rejected the request ({failure.detail})", None, None
    try:
        parsed = orjson.loads(failure.body)
        inner = parsed.get("error") if isinstance(parsed, dict) else None
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            message, param, code = inner["message"], inner.get("param"), inner.get("code")
    except orjson.JSONDecodeError:
        pass
    return ApiError(failure.status, message, param=param, code=code)


def exhausted_error(failure: UpstreamFailure | None, attempts: int) -> ApiError:
    """The error for a request none of whose attempts succeeded."""
    if failure is None:
        return ApiError(
            503,
            "no healthy endpoint is available for this model",
            type="server_error",
            code="no_available_endpoint",
        )
    status = 504 if failure.error_class == "timeout" else 502
    return ApiError(
        status,
        f"upstream failed after {attempts} attempt(s); last: {failure}",
        type="server_error",
        code="upstream_timeout" if status == 504 else "upstream_error",
    )


STREAM_INTERRUPTED = b"data: " + error_body(
    "the upstream stream ended before completing; the response is incomplete",
    "server_error",
    None,
    "upstream_stream_interrupted",
) + b"\n\n"


def is_stream_error(exc: BaseException) -> bool:
    return isinstance(exc, (aiohttp.ClientError, TimeoutError, asyncio.IncompleteReadError))
