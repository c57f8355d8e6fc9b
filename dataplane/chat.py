"""`POST /v1/chat/completions`: validate, resolve, call, fail over, relay.

The request path in one pass: auth (in `app`) -> parse and check the body ->
resolve `model` to a route or model and its ordered endpoints -> try them in
order within the route's attempt and time limits -> relay the first success
(JSON as one body, SSE chunk by chunk) -> record stats. A stream may move to
another endpoint only before its first byte reaches the client; after that,
an upstream failure ends it with an OpenAI-style error event, never with a
clean `[DONE]` that would pass a half answer off as complete.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from dataplane.errors import bad_request, model_not_found
from dataplane.providers.base import FAILOVER_CLASSES, ErrorClass, ProviderError, Usage
from dataplane.stats import ATTEMPTS, EndpointStats
from dataplane.table import EndpointRuntime, KeyInfo, RuntimeTable, Target
from dataplane.upstream import STREAM_INTERRUPTED, SessionPool, caller_error, exhausted_error, send


def parse_body(raw: bytes) -> dict[str, Any]:
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"We could not parse the JSON body of your request: {exc.msg}") from None
    if not isinstance(payload, dict):
        raise bad_request("The request body must be a JSON object.")
    return payload


def check_chat_request(payload: dict[str, Any]) -> None:
    """Cheap structural checks; the provider validates the rest.

    Only what the gateway itself relies on is checked here, with `param`
    naming the field, so a malformed request never costs an upstream call.
    """
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("you must provide a model parameter (a non-empty string)", "model")
    messages = payload.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad_request("'messages' must be a non-empty array of message objects", "messages")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise bad_request(f"messages[{index}] must be an object with a string 'role'", f"messages[{index}]")
    stream = payload.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise bad_request("'stream' must be a boolean", "stream")
    stream_options = payload.get("stream_options")
    if stream_options is not None and not isinstance(stream_options, dict):
        raise bad_request("'stream_options' must be an object", "stream_options")
    for field in ("max_tokens", "max_completion_tokens", "n"):
        value = payload.get(field)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise bad_request(f"'{field}' must be a positive integer", field)
    tools = payload.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise bad_request("'tools' must be an array", "tools")


def resolve(table: RuntimeTable, key: KeyInfo, model: str) -> Target:
    target = table.resolve(model)
    if target is None or not key.may_use(model):
        raise model_not_found(model)
    return target


class ChatHandler:
    def __init__(self, sessions: SessionPool, stats: EndpointStats) -> None:
        self._sessions = sessions
        self._stats = stats

    async def handle(
        self, request: web.Request, table: RuntimeTable, key: KeyInfo, payload: dict[str, Any]
    ) -> web.StreamResponse:
        check_chat_request(payload)
        requested = payload["model"]
        target = resolve(table, key, requested)
        stream = payload.get("stream") is True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + target.total_timeout_s
        attempts = 0
        last_failure: ProviderError | None = None

        for endpoint in target.endpoints:
            remaining = deadline - loop.time()
            if attempts >= target.max_attempts or remaining <= 0:
                break
            attempts += 1
            timeout_s = min(target.per_try_timeout_s, endpoint.provider.timeout_s, remaining)
            adapter = endpoint.provider.adapter
            started = loop.time()
            try:
                body = adapter.chat_request(payload, endpoint.upstream_model)
                upstream = await send(self._sessions, endpoint, body, timeout_s=timeout_s, stream=stream)
            except ProviderError as failure:
                self._stats.record(endpoint.name, failure.error_class, loop.time() - started)
                if failure.error_class not in FAILOVER_CLASSES:
                    ATTEMPTS.observe(attempts)
                    raise caller_error(failure) from None
                last_failure = failure
                continue
            ATTEMPTS.observe(attempts)
            headers = _served_by(target, endpoint, attempts)
            if stream:
                include_usage = bool((payload.get("stream_options") or {}).get("include_usage"))
                return await self._relay_stream(request, upstream, endpoint, headers, started, include_usage)
            return await self._relay_json(upstream, endpoint, headers, started)

        ATTEMPTS.observe(max(attempts, 1))
        raise exhausted_error(last_failure, attempts)

    async def _relay_json(
        self,
        upstream: aiohttp.ClientResponse,
        endpoint: EndpointRuntime,
        headers: dict[str, str],
        started: float,
    ) -> web.Response:
        loop = asyncio.get_running_loop()
        try:
            async with upstream:
                raw = await upstream.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            failure = ProviderError(
                ErrorClass.RETRYABLE, f"response body lost ({type(exc).__name__})", endpoint=endpoint.name
            )
            self._stats.record(endpoint.name, failure.error_class, loop.time() - started)
            raise exhausted_error(failure, 1) from None
        body, usage = endpoint.provider.adapter.chat_response(raw, endpoint.model)
        self._record(endpoint.name, "success", loop.time() - started, None, usage)
        return web.Response(body=body, content_type="application/json", headers=headers)

    async def _relay_stream(
        self,
        request: web.Request,
        upstream: aiohttp.ClientResponse,
        endpoint: EndpointRuntime,
        headers: dict[str, str],
        started: float,
        include_usage: bool,
    ) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        translator = endpoint.provider.adapter.chat_stream(endpoint.model, include_usage)
        response = web.StreamResponse(
            status=200,
            headers={**headers, "Content-Type": "text/event-stream", "Cache-Control": "no-cache"},
        )
        first_chunk_at: float | None = None
        interrupted = False
        async with upstream:
            await response.prepare(request)
            try:
                async for chunk in upstream.content.iter_any():
                    if first_chunk_at is None:
                        first_chunk_at = loop.time()
                    out = translator.feed(chunk)
                    if out:
                        await response.write(out)
                tail = translator.finish()
                if tail:
                    await response.write(tail)
            except (aiohttp.ClientError, TimeoutError, asyncio.IncompleteReadError):
                interrupted = True
        outcome = "success"
        if translator.error is not None:
            outcome = str(translator.error.error_class)  # the upstream's own error event was relayed
        elif interrupted or not translator.complete:
            # Never end cleanly on a broken stream: the client must not take
            # half an answer for a whole one.
            outcome = "stream_interrupted"
            await response.write(STREAM_INTERRUPTED)
        ttft = None if first_chunk_at is None else first_chunk_at - started
        self._record(endpoint.name, outcome, loop.time() - started, ttft, translator.usage)
        await response.write_eof()
        return response

    def _record(self, endpoint: str, outcome: str, latency: float, ttft: float | None, usage: Usage) -> None:
        self._stats.record(
            endpoint, outcome, latency, ttft_s=ttft,
            prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
        )


def _served_by(target: Target, endpoint: EndpointRuntime, attempts: int) -> dict[str, str]:
    headers = {
        "x-megarouter-model": endpoint.model,
        "x-megarouter-endpoint": endpoint.name,
        "x-megarouter-attempts": str(attempts),
    }
    if target.kind == "route":
        headers["x-megarouter-route"] = target.name
    return headers
