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

import functools
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import orjson
from aiohttp import web

from dataplane import validation
from dataplane.budgets import BudgetEnforcer, Charge
from dataplane.errors import ApiError, bad_request, model_not_found
from dataplane.failover.engine import first_success
from dataplane.relay import relay_json, relay_stream
from dataplane.routing import router
from dataplane.routing.complexity import estimate, quality_decision
from dataplane.routing.controls import explanation, read_controls
from dataplane.routing.needs import chat_needs
from dataplane.stats import EndpointStats, UsageAccount
from dataplane.table import EndpointRuntime, KeyInfo, RuntimeTable, Target
from dataplane.upstream import SessionPool


def parse_body(raw: bytes) -> dict[str, Any]:
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"We could not parse the JSON body of your request: {exc.msg}") from None
    if not isinstance(payload, dict):
        raise bad_request("The request body must be a JSON object.")
    return payload


check_model = validation.model_name
check_chat_request = validation.check_chat_request


def resolve(table: RuntimeTable, key: KeyInfo, model: str) -> Target:
    target = table.resolve(model)
    if target is None or not key.may_use(model):
        raise model_not_found(model)
    return target


TASK_HEADER = "x-megarouter-task"
# What usage is counted under when the request named no route or model this key may use:
# one label, so a client cannot create usage records by inventing names.
UNKNOWN_TARGET = "(unknown)"


def request_task(request: web.Request, key: KeyInfo, named: str, table: RuntimeTable) -> str:
    """The task a request counts under — for task budgets and usage analytics alike.

    The `x-megarouter-task` header only when the key may set that value (`tasks`), else the
    route or model the request named; a name that resolves to nothing this key may use is
    UNKNOWN_TARGET. So a client can neither dodge a task budget by inventing a label nor
    grow the stored usage dimensions; every value is bounded by the configuration."""
    header = request.headers.get(TASK_HEADER)
    if header and header in key.tasks:
        return header
    if named and key.may_use(named) and table.resolve(named) is not None:
        return named
    return UNKNOWN_TARGET


def task_headers(request: web.Request, task: str) -> dict[str, str]:
    """Echo the task a request was counted under when it asked for one, so a label the key
    may not set is visibly not honoured."""
    return {TASK_HEADER: task} if TASK_HEADER in request.headers else {}


Handle = Callable[..., Awaitable[web.StreamResponse]]


def counted(handle: Handle) -> Handle:
    """Counts each client request once in its key's usage: the relay counts
    what was served; an error response counts as an error with no model."""

    @functools.wraps(handle)
    async def counted_handle(self, request: web.Request, table: RuntimeTable, key: KeyInfo,
                             payload: dict[str, Any]) -> web.StreamResponse:
        model = payload.get("model")
        task = request_task(request, key, model if isinstance(model, str) else "", table)
        request["task"] = task
        account = self._stats.account(key.name, key.nodes, task)
        try:
            return await handle(self, request, table, key, payload, account)
        except Exception:
            account.failed()
            raise
        except BaseException:
            account.served("")  # the client left before anything was served
            raise

    return counted_handle


class ChatHandler:
    def __init__(self, sessions: SessionPool, stats: EndpointStats, budgets: BudgetEnforcer,
                 region: str = "") -> None:
        self._sessions = sessions
        self._stats = stats
        self._budgets = budgets
        self._region = region  # this proxy's region, for routes that prefer local endpoints

    @counted
    async def handle(
        self, request: web.Request, table: RuntimeTable, key: KeyInfo, payload: dict[str, Any],
        account: UsageAccount,
    ) -> web.StreamResponse:
        check_chat_request(payload)
        controls = read_controls(request.headers)
        target = resolve(table, key, payload["model"])
        stream = payload.get("stream") is True
        strategy = controls.strategy or key.default_strategy or target.strategy or table.default_strategy
        needs = chat_needs(payload, controls.min_quality, request.get("body_size", 0))
        decision = None
        if strategy == "cost":
            complexity = estimate(payload)
            quality_target = controls.quality_target or target.cost_quality_target
            if quality_target:
                # "Keep this share of the flagship's quality": flagship or cheapest, by the
                # calibrated threshold; the needed-quality tiers step aside.
                decision = quality_decision(complexity, quality_target)
                needs = replace(needs, flagship=decision.flagship)
            else:
                needs = replace(needs, needed_quality=complexity.needed_quality)
        try:
            route_plan = router.plan(target, needs, strategy, self._stats.health,
                                     target.weights or table.default_weights, outliers=self._stats.outliers,
                                     explain=controls.explain, local_region=self._region)
        except router.NoCandidate as exc:
            raise ApiError(exc.status, exc.message, code=exc.code, param=exc.param,
                           type="invalid_request_error" if exc.status < 500 else "server_error") from None

        def build(endpoint: EndpointRuntime) -> tuple[str, bytes]:
            body = endpoint.provider.adapter.chat_request(payload, endpoint.upstream_model)
            return (endpoint.chat_stream_url if stream else endpoint.chat_url), body

        task = request["task"]
        charge = await Charge.reserve(self._budgets, key, task, route_plan.endpoints,
                                      needs.prompt_tokens, needs.output_tokens or None)
        async with charge:
            success = await first_success(
                self._sessions, self._stats, target, charge.endpoints, build, stream=stream, payload=payload
            )
            adapter = success.endpoint.provider.adapter
            model = success.endpoint.model
            charge.served_by(model)
            headers = {**success.headers(target, strategy), **charge.headers(), **task_headers(request, task)}
            if controls.explain:
                if decision is not None:
                    best = max((c.endpoint.quality_tier for c in route_plan.candidates if not c.excluded),
                               default=0)
                    route_plan.quality_target = decision.explain(success.endpoint.quality_tier >= best)
                for candidate in route_plan.candidates:
                    if not candidate.excluded and candidate.endpoint not in charge.endpoints:
                        candidate.excluded = "model quota spent"
                headers["x-megarouter-explain"] = explanation(route_plan)
            if stream:
                include_usage = bool((payload.get("stream_options") or {}).get("include_usage"))
                translator = adapter.chat_stream(model, include_usage)
                return await relay_stream(request, self._stats, success, translator, headers, charge.on_usage, account)
            return await relay_json(self._stats, success, lambda raw: adapter.chat_response(raw, model), headers,
                                    charge.on_usage, account)
