"""`POST /v1/messages/count_tokens`: how many input tokens a Messages request would use.

Resolved and routed like `/v1/messages` — the same key permissions, regions,
health and strategy — and answered by the endpoint the request would be
sent to: an Anthropic endpoint counts exactly (pass-through to its own
`count_tokens`, with failover across Anthropic endpoints); for any other
backend the gateway estimates (`messages_chat.estimate_input_tokens`, ≈ 4
characters a token), since those providers have no counting API. Counting
is free upstream, so nothing is charged to budgets or counted as usage.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from dataplane.errors import ClientError
from dataplane.failover.engine import first_success
from dataplane.operations.messages import NativeMessages, forwarded_headers, is_anthropic
from dataplane.pipeline.run import Pipeline, resolve, strategy_for
from dataplane.routing.controls import read_controls
from dataplane.routing.needs import body_needs, chat_needs
from dataplane.table import KeyInfo, RuntimeTable
from dataplane.translate.messages_chat import check_count_tokens_request, estimate_input_tokens, messages_to_chat
from dataplane.upstream import exhausted_error


async def count_tokens(pipeline: Pipeline, request: web.Request, table: RuntimeTable, key: KeyInfo,
                       payload: dict[str, Any]) -> web.Response:
    check_count_tokens_request(payload)
    controls = read_controls(request.headers)
    target = resolve(table, key, payload["model"])
    try:
        chat = messages_to_chat({**payload, "max_tokens": 1})
        needs = chat_needs(chat, controls.min_quality, request.get("body_size", 0))
    except ClientError:  # a server tool only Anthropic expresses: size the prompt from the body
        needs = body_needs(request.get("body_size", 0), False, 0, controls.min_quality)
    plan = pipeline.plan_for(target, needs, strategy_for(controls, key, target, table), table, controls.explain)
    headers = {"x-megarouter-model": plan.endpoints[0].model}
    if not is_anthropic(plan.endpoints[0]):
        headers["x-megarouter-count"] = "estimated"
        return web.Response(body=orjson.dumps({"input_tokens": estimate_input_tokens(payload)}),
                            content_type="application/json", headers=headers)
    endpoints = tuple(e for e in plan.endpoints if is_anthropic(e))
    forwarded = forwarded_headers(request.headers)
    success = await first_success(
        pipeline.sessions, pipeline.stats, pipeline.retry_budgets, target, endpoints,
        lambda endpoint: NativeMessages(endpoint, payload, forwarded, path="/messages/count_tokens"),
        stream=False, payload=payload)
    loop = asyncio.get_running_loop()
    try:
        async with success.response as upstream:
            body = await upstream.read()
    except (aiohttp.ClientError, TimeoutError):
        pipeline.stats.record(success.endpoint.name, "retryable", loop.time() - success.started)
        raise exhausted_error(None, success.attempts) from None
    pipeline.stats.record(success.endpoint.name, "success", loop.time() - success.started)
    headers.update({"x-megarouter-model": success.endpoint.model, "x-megarouter-endpoint": success.endpoint.name,
                    "x-megarouter-count": "exact"})
    return web.Response(body=body, content_type="application/json", headers=headers)
