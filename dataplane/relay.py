"""Relaying a successful upstream response to the client.

JSON is read whole and translated once. Streams are translated piece by
piece as they arrive; a stream that breaks, stalls past the read timeout or
ends without its terminal marker is finished with an error event in the
client API's shape and no clean end (`[DONE]`, `message_stop`,
`response.completed`), so a client never takes half an answer for a whole
one. Stats are recorded here, once per request, with the usage the
upstream reported and its cost at catalog prices (also in the
`x-megarouter-cost-usd` header of JSON responses; a stream's headers leave
before its usage is known), and counted in the request's usage account
(a stream that ends in an error event counts as an error).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aiohttp
from aiohttp import web

from dataplane.failover.engine import Success
from dataplane.providers.base import ErrorClass, ProviderError, StreamTranslator, Usage
from dataplane.stats import EndpointStats
from dataplane.table import EndpointRuntime
from dataplane.upstream import STREAM_INTERRUPTED, exhausted_error
from dataplane.usage import UsageAccount
from megarouter.catalog import cost_usd


class _ClientGone(Exception):
    """Writing to the client failed: it disconnected."""


async def _write(response: web.StreamResponse, request: web.Request, data: bytes) -> None:
    try:
        if not response.prepared:
            await response.prepare(request)
        if data:
            await response.write(data)
    except ConnectionResetError as exc:  # aiohttp's ClientConnectionResetError included
        raise _ClientGone from exc


def request_cost(endpoint: EndpointRuntime, usage: Usage) -> float:
    """USD at the model's catalog prices for the usage the upstream reported."""
    return cost_usd(endpoint.pricing, usage.prompt_tokens, usage.completion_tokens, usage.cached_prompt_tokens)


# Called once per served request with what it used: budgets settle on it.
UsageCallback = Callable[[EndpointRuntime, Usage, float], None]


def _record(stats: EndpointStats, endpoint: EndpointRuntime, outcome: str, latency: float, ttft: float | None,
            usage: Usage, on_usage: UsageCallback | None = None, account: UsageAccount | None = None) -> float:
    cost = request_cost(endpoint, usage)
    stats.record(endpoint.name, outcome, latency, ttft_s=ttft,
                 prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens, cost_usd=cost)
    if on_usage is not None:
        on_usage(endpoint, usage, cost)
    if account is not None:
        account.served(endpoint.model, outcome != "success", usage.prompt_tokens, usage.completion_tokens, cost,
                       cached_tokens=usage.cached_prompt_tokens, ttft_s=ttft)
    return cost


async def relay_json(
    stats: EndpointStats,
    success: Success,
    translate: Callable[[bytes], tuple[bytes, Usage]],
    headers: dict[str, str],
    on_usage: UsageCallback | None = None,
    account: UsageAccount | None = None,
) -> web.Response:
    loop = asyncio.get_running_loop()
    endpoint = success.endpoint.name
    try:
        async with success.response as upstream:
            raw = await upstream.read()
    except asyncio.CancelledError:
        stats.record(endpoint, "cancelled", loop.time() - success.started)
        if account is not None:
            account.served(success.endpoint.model)  # the client left; its usage is unknown
        raise
    except (aiohttp.ClientError, TimeoutError) as exc:
        failure = ProviderError(ErrorClass.RETRYABLE, f"response body lost ({type(exc).__name__})", endpoint=endpoint)
        stats.record(endpoint, failure.error_class, loop.time() - success.started)
        raise exhausted_error(failure, success.attempts) from None
    body, usage = translate(raw)
    cost = _record(stats, success.endpoint, "success", loop.time() - success.started, None, usage, on_usage,
                   account)
    headers["x-megarouter-cost-usd"] = f"{cost:.8f}"
    return web.Response(body=body, content_type="application/json", headers=headers)


async def relay_stream(
    request: web.Request,
    stats: EndpointStats,
    success: Success,
    translator: StreamTranslator,
    headers: dict[str, str],
    on_usage: UsageCallback | None = None,
    account: UsageAccount | None = None,
    interrupted: Callable[[StreamTranslator], bytes] | None = None,
) -> web.StreamResponse:
    """`interrupted`: the events, in the client API's shape, that end a broken stream (given
    the stream's translator, which may number them); OpenAI's error chunk by default."""
    loop = asyncio.get_running_loop()
    response = web.StreamResponse(
        status=200, headers={**headers, "Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    broke = False
    async with success.response as upstream:
        try:
            out = translator.feed(success.first_chunk)
            await _write(response, request, out)
            async for chunk in upstream.content.iter_any():
                out = translator.feed(chunk)
                if out:
                    await _write(response, request, out)
            tail = translator.finish()
            if tail:
                await _write(response, request, tail)
        except _ClientGone:
            # Leaving the `async with` closes the upstream call at once.
            stats.record(success.endpoint.name, "cancelled", loop.time() - success.started)
            if account is not None:
                account.served(success.endpoint.model)  # the client left; its usage is unknown
            return response
        except asyncio.CancelledError:
            stats.record(success.endpoint.name, "cancelled", loop.time() - success.started)
            if account is not None:
                account.served(success.endpoint.model)
            raise
        except (aiohttp.ClientError, TimeoutError, asyncio.IncompleteReadError):
            broke = True  # the upstream broke or went silent
    outcome = "success"
    if translator.error is not None:
        outcome = str(translator.error.error_class)  # the upstream's own error event was relayed
    elif broke or not translator.complete:
        outcome = "stream_interrupted"
    ttft = success.first_chunk_at - success.started
    _record(stats, success.endpoint, outcome, loop.time() - success.started, ttft, translator.usage, on_usage,
            account)
    try:
        if outcome == "stream_interrupted":
            await _write(response, request, interrupted(translator) if interrupted else STREAM_INTERRUPTED)
        await response.write_eof()
    except (_ClientGone, ConnectionResetError):
        pass  # the client left as the stream ended; nothing more to tell it
    return response
