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
from dataplane.budgets import BudgetEnforcer, BudgetExhausted, Charge
from dataplane.errors import ApiError, bad_request, model_not_found
from dataplane.failover.engine import first_success
from dataplane.relay import relay_json, relay_stream
from dataplane.routing import router
from dataplane.routing.cascade import judge
from dataplane.routing.complexity import Complexity, estimate, quality_decision
from dataplane.routing.controls import explanation, read_controls
from dataplane.routing.needs import Needs, chat_needs
from dataplane.stats import EndpointStats, UsageAccount
from dataplane.table import EndpointRuntime, KeyInfo, RuntimeTable, Target
from dataplane.upstream import SessionPool

CASCADE_HEADER = "x-megarouter-cascade"
CASCADE_REASON_HEADER = "x-megarouter-cascade-reason"


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
        cascade_note = None
        if strategy == "cost" and target.cascade:
            if stream:
                cascade_note = "skipped (streaming)"
            elif decision is not None and decision.flagship:
                cascade_note = "skipped (the quality target needs the flagship)"
            else:
                return await self._cascade(request, table, key, payload, account, target, needs, complexity,
                                           controls.explain)
        route_plan = self._plan(table, target, needs, strategy, controls.explain)

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
            if cascade_note is not None:
                headers[CASCADE_HEADER] = cascade_note
            if controls.explain:
                if decision is not None:
                    route_plan.quality_target = decision.explain(
                        success.endpoint.quality_tier >= route_plan.best_quality)
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

    def _plan(self, table: RuntimeTable, target: Target, needs: Needs, strategy: str, explain: bool) -> router.Plan:
        """The router's plan, or the request's error in OpenAI's shape when nothing can serve it."""
        try:
            return router.plan(target, needs, strategy, self._stats.health, target.weights or table.default_weights,
                               outliers=self._stats.outliers, explain=explain, local_region=self._region)
        except router.NoCandidate as exc:
            raise ApiError(exc.status, exc.message, code=exc.code, param=exc.param,
                           type="invalid_request_error" if exc.status < 500 else "server_error") from None

    async def _cascade(self, request: web.Request, table: RuntimeTable, key: KeyInfo, payload: dict[str, Any],
                       account: UsageAccount, target: Target, needs: Needs, complexity: Complexity,
                       explain: bool) -> web.Response:
        """`cost_mode: cascade`: the cheapest qualifying model first; the flagship only when
        `cascade.judge` rejects that answer. Each call is planned, charged against the budgets
        and counted on its own; the client gets one answer. The rejected answer is dropped
        unread by anything but the judge."""
        task = request["task"]

        def build(endpoint: EndpointRuntime) -> tuple[str, bytes]:
            return endpoint.chat_url, endpoint.provider.adapter.chat_request(payload, endpoint.upstream_model)

        async def call(flagship: bool) -> tuple[web.Response, EndpointRuntime, int]:
            plan = self._plan(table, target, replace(needs, needed_quality=0, flagship=flagship), "cost", explain)
            # The escalation is to the flagship tier only: a cheaper fallback would repeat the first call.
            endpoints = tuple(e for e in plan.endpoints if e.quality_tier >= plan.needed_quality) if flagship \
                else plan.endpoints
            charge = await Charge.reserve(self._budgets, key, task, endpoints, needs.prompt_tokens,
                                          needs.output_tokens or None)
            async with charge:
                success = await first_success(self._sessions, self._stats, target, charge.endpoints, build,
                                              stream=False, payload=payload)
                adapter, model = success.endpoint.provider.adapter, success.endpoint.model
                charge.served_by(model)
                headers = {**success.headers(target, "cost"), **charge.headers(), **task_headers(request, task)}
                if explain:
                    headers["x-megarouter-explain"] = explanation(plan)
                response = await relay_json(self._stats, success, lambda raw: adapter.chat_response(raw, model),
                                            headers, charge.on_usage, account)
            return response, success.endpoint, plan.best_quality

        cheap, endpoint, best = await call(flagship=False)
        if endpoint.quality_tier >= best:   # the cheapest qualifying model is (or failed over to) the best one
            cheap.headers[CASCADE_HEADER] = "accepted (served by the flagship)"
            return cheap
        verdict = judge(payload, orjson.loads(cheap.body), complexity)
        if verdict.accepted:
            cheap.headers[CASCADE_HEADER] = "accepted"
            return cheap
        try:
            strong, _, _ = await call(flagship=True)
        except BudgetExhausted:
            # Budgets first: the second call would overshoot one, so the first answer stands.
            cheap.headers[CASCADE_HEADER] = "kept (a budget refused the escalation)"
            cheap.headers[CASCADE_REASON_HEADER] = verdict.reason
            return cheap
        except ApiError as exc:
            if exc.status < 500:
                raise
            # The flagship is down or failing: an answer the check doubted beats none.
            cheap.headers[CASCADE_HEADER] = "kept (the escalation failed)"
            cheap.headers[CASCADE_REASON_HEADER] = verdict.reason
            return cheap
        strong.headers[CASCADE_HEADER] = "escalated"
        strong.headers[CASCADE_REASON_HEADER] = verdict.reason
        strong.headers["x-megarouter-cascade-first-model"] = endpoint.model
        # Both calls were charged and counted; the client sees what the request cost in all.
        total = float(cheap.headers["x-megarouter-cost-usd"]) + float(strong.headers["x-megarouter-cost-usd"])
        strong.headers["x-megarouter-cost-usd"] = f"{total:.8f}"
        return strong
