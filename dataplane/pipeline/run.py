"""The stages, in order (see the package docstring).

A stream may move to another endpoint only before its first byte reaches the
client; after that, an upstream failure ends it with the API's own error
event, never with a clean end that would pass a half answer off as complete.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import orjson
from aiohttp import web

from dataplane.budgets import BudgetEnforcer, BudgetExhausted, Charge
from dataplane.errors import ApiError, BudgetError, ClientError, NoEndpointError, model_not_found
from dataplane.failover.budget import RetryBudgets
from dataplane.failover.engine import Success, first_success
from dataplane.pipeline.exchange import Exchange, Operation
from dataplane.relay import relay_json, relay_stream
from dataplane.request_log import RequestLog, request_id
from dataplane.routing import router
from dataplane.routing.cascade import judge
from dataplane.routing.complexity import Complexity, QualityDecision, estimate, quality_decision
from dataplane.routing.controls import Controls, explanation, read_controls
from dataplane.routing.needs import Needs
from dataplane.stats import EndpointStats
from dataplane.table import EndpointRuntime, KeyInfo, RuntimeTable, Target
from dataplane.upstream import SessionPool
from dataplane.usage import UsageLedger
from megarouter import tracing

CASCADE_HEADER = "x-megarouter-cascade"
CASCADE_REASON_HEADER = "x-megarouter-cascade-reason"
TASK_HEADER = "x-megarouter-task"
# What usage is counted under when the request named no route or model this key may use:
# one label, so a client cannot create usage records by inventing names.
UNKNOWN_TARGET = "(unknown)"


def resolve(table: RuntimeTable, key: KeyInfo, model: str) -> Target:
    target = table.resolve(model)
    if target is None or not key.may_use(model):
        raise model_not_found(model)
    return target


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


def strategy_for(controls: Controls, key: KeyInfo, target: Target, table: RuntimeTable) -> str:
    """The request's header, else the key's default, else the route's, else the table's."""
    return controls.strategy or key.default_strategy or target.strategy or table.default_strategy


class Pipeline:
    """The stages, each handed the pieces it uses: the router the health registry and outlier
    detector, failover the sessions, endpoint stats and retry budgets, charge the spend budgets,
    settle the usage ledger."""

    def __init__(self, sessions: SessionPool, stats: EndpointStats, usage: UsageLedger,
                 retry_budgets: RetryBudgets, budgets: BudgetEnforcer, region: str = "",
                 request_log: RequestLog | None = None) -> None:
        self.request_log = request_log
        self._sessions = sessions
        self._stats = stats
        self._usage = usage
        self._retry_budgets = retry_budgets
        self._budgets = budgets
        self._region = region  # this proxy's region, for routes that prefer local endpoints

    async def run(self, operation: Operation, request: web.Request, table: RuntimeTable, key: KeyInfo,
                  payload: dict[str, Any]) -> web.StreamResponse:
        """Serve one authenticated request whose body parsed as a JSON object. Counted once in
        its key's usage: the relay counts what was served; an error counts as an error."""
        model = payload.get("model")
        task = request_task(request, key, model if isinstance(model, str) else "", table)
        account = self._usage.account(key.name, key.nodes, task)
        exchange = Exchange(request, table, key, payload, task, account,
                            request_id=request_id(request.headers.get(REQUEST_ID_HEADER)))
        status, error = 499, None  # 499: the client left first (nginx's name for it)

        def describe() -> tuple[str, dict[str, Any]]:
            operation_name = GENAI_OPERATIONS.get(operation.api, operation.api)
            asked = model if isinstance(model, str) else ""
            return f"{operation_name} {asked}".strip(), {
                "gen_ai.operation.name": operation_name, "gen_ai.request.model": asked,
                "http.request.method": "POST", "url.path": request.path,
                "megarouter.request_id": exchange.request_id, "megarouter.key": key.name}
        with tracing.span("server", describe, request.headers) as server_span:
            try:
                response = await self._serve(operation, exchange)
                status = response.status
                return response
            except ApiError as exc:
                status, error = exc.status, exc
                account.failed()
                raise
            except Exception:
                status = 500
                account.failed()
                raise
            except BaseException:
                account.served("")  # the client left before anything was served
                raise
            finally:
                record = log_record(operation.api, exchange, status, error) \
                    if self.request_log is not None or server_span is not None else None
                if self.request_log is not None:
                    self.request_log.write(record)
                if server_span is not None:
                    _trace_outcome(server_span, record)

    async def _serve(self, operation: Operation, exchange: Exchange) -> web.StreamResponse:
        # parse/validate
        operation.prepare(exchange)
        controls = exchange.controls = read_controls(exchange.request.headers)
        # resolve
        target = exchange.target = resolve(exchange.table, exchange.key, exchange.payload["model"])
        # route
        exchange.strategy = strategy_for(controls, exchange.key, target, exchange.table)
        needs = operation.needs(exchange, controls.min_quality)
        decision = complexity = None
        if exchange.strategy == "cost" and exchange.chat is not None:
            complexity = estimate(exchange.chat)
            quality_target = controls.quality_target or target.cost_quality_target
            if quality_target:
                # "Keep this share of the flagship's quality": flagship or cheapest, by the
                # calibrated threshold; the needed-quality tiers step aside.
                decision = quality_decision(complexity, quality_target)
                needs = replace(needs, flagship=decision.flagship)
            else:
                needs = replace(needs, needed_quality=complexity.needed_quality)
        exchange.needs = needs
        cascade_note = None
        if exchange.strategy == "cost" and target.cascade and complexity is not None:
            if exchange.stream:
                cascade_note = "skipped (streaming)"
            elif decision is not None and decision.flagship:
                cascade_note = "skipped (the quality target needs the flagship)"
            elif not operation.cascades:
                cascade_note = f"skipped (not for {operation.api})"
            else:
                return await self._cascade(operation, exchange, complexity)
        plan = self._plan(exchange, needs, exchange.strategy)
        return await self._call(operation, exchange, plan, plan.endpoints, decision,
                                extra_headers={CASCADE_HEADER: cascade_note} if cascade_note else None)

    @property
    def sessions(self) -> SessionPool:
        return self._sessions

    @property
    def stats(self) -> EndpointStats:
        return self._stats

    @property
    def retry_budgets(self) -> RetryBudgets:
        return self._retry_budgets

    def _plan(self, exchange: Exchange, needs: Needs, strategy: str) -> router.Plan:
        return self.plan_for(exchange.target, needs, strategy, exchange.table, exchange.controls.explain)

    def plan_for(self, target: Target, needs: Needs, strategy: str, table: RuntimeTable,
                 explain: bool = False) -> router.Plan:
        """The router's plan, or the request's error when nothing can serve it."""
        try:
            return router.plan(target, needs, strategy, self._stats.health,
                               target.weights or table.default_weights, outliers=self._stats.outliers,
                               explain=explain, local_region=self._region)
        except router.NoCandidate as exc:
            error = ClientError if exc.status < 500 else NoEndpointError
            raise error(exc.status, exc.message, code=exc.code, param=exc.param,
                        type="invalid_request_error" if exc.status < 500 else "server_error") from None

    async def _call(self, operation: Operation, exchange: Exchange, plan: router.Plan,
                    endpoints: tuple[EndpointRuntime, ...], decision: QualityDecision | None = None,
                    strategy: str | None = None, extra_headers: dict[str, str] | None = None) -> web.StreamResponse:
        """charge -> failover -> relay -> settle, over `endpoints` in order."""
        needs = exchange.needs
        if exchange.chat_refusal is not None:
            # What the request asks can only be expressed natively (an Anthropic server tool, a
            # legacy `echo`): the endpoints that would translate it through chat step aside.
            endpoints = tuple(e for e in endpoints if operation.native(e))
            if not endpoints:
                raise exchange.chat_refusal
            for candidate in plan.candidates:
                if not candidate.excluded and candidate.endpoint not in endpoints:
                    candidate.excluded = f"serves {operation.api} only through chat, which cannot express it"
        charge = await Charge.reserve(self._budgets, exchange.key, exchange.task, endpoints, needs.prompt_tokens,
                                      None if needs.output_tokens == 0 and not operation.embeddings
                                      else needs.output_tokens)
        async with charge:
            success = await first_success(
                self._sessions, self._stats, self._retry_budgets, exchange.target, charge.endpoints,
                lambda endpoint: operation.translator(endpoint, exchange),
                stream=exchange.stream, payload=exchange.payload, failures=exchange.attempt_failures)
            exchange.served_by = success.endpoint
            charge.served_by(success.endpoint.model)
            headers = {**success.headers(exchange.target, strategy or exchange.strategy), **charge.headers(),
                       **(extra_headers or {}), REQUEST_ID_HEADER: exchange.request_id}
            if TASK_HEADER in exchange.request.headers:
                # Echoed when asked for, so a label the key may not set is visibly not honoured.
                headers[TASK_HEADER] = exchange.task
            if exchange.controls.explain:
                headers["x-megarouter-explain"] = self._explain(plan, success, charge, decision)
            if exchange.stream:
                return await relay_stream(exchange.request, self._stats, success, success.translator.stream(),
                                          headers, charge.on_usage, exchange.account,
                                          interrupted=operation.interrupted)
            return await relay_json(self._stats, success, success.translator.response, headers, charge.on_usage,
                                    exchange.account)

    @staticmethod
    def _explain(plan: router.Plan, success: Success, charge: Charge, decision: QualityDecision | None) -> str:
        if decision is not None:
            plan.quality_target = decision.explain(success.endpoint.quality_tier >= plan.best_quality)
        for candidate in plan.candidates:
            if not candidate.excluded and candidate.endpoint not in charge.endpoints:
                candidate.excluded = "model quota spent"
        return explanation(plan)

    async def _cascade(self, operation: Operation, exchange: Exchange, complexity: Complexity) -> web.Response:
        """`cost_mode: cascade`: the cheapest qualifying model first; the flagship only when
        `cascade.judge` rejects that answer. Each call is planned, charged against the budgets
        and counted on its own; the client gets one answer. The rejected answer is dropped
        unread by anything but the judge."""
        needs = exchange.needs

        async def call(flagship: bool) -> tuple[web.Response, EndpointRuntime, int]:
            plan = self._plan(exchange, replace(needs, needed_quality=0, flagship=flagship), "cost")
            # The escalation is to the flagship tier only: a cheaper fallback would repeat the first call.
            endpoints = tuple(e for e in plan.endpoints if e.quality_tier >= plan.needed_quality) if flagship \
                else plan.endpoints
            response = await self._call(operation, exchange, plan, endpoints, strategy="cost")
            return response, _served_by(response, plan), plan.best_quality

        cheap, endpoint, best = await call(flagship=False)
        if endpoint.quality_tier >= best:   # the cheapest qualifying model is (or failed over to) the best one
            cheap.headers[CASCADE_HEADER] = "accepted (served by the flagship)"
            return cheap
        verdict = judge(exchange.chat, orjson.loads(cheap.body), complexity)
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


REQUEST_ID_HEADER = "x-request-id"
# Our APIs as the GenAI semantic conventions name operations.
GENAI_OPERATIONS = {"chat": "chat", "responses": "chat", "messages": "chat", "completions": "text_completion",
                    "embeddings": "embeddings", "count_tokens": "count_tokens"}


def _trace_outcome(server_span, record: dict[str, Any]) -> None:
    """The server span's outcome: the same numbers as the request log's line."""
    tracing.set_attributes(server_span, {
        "http.response.status_code": record["status"], "gen_ai.response.model": record["model"],
        "gen_ai.usage.input_tokens": record["prompt_tokens"], "gen_ai.usage.output_tokens": record["completion_tokens"],
        "gen_ai.request.stream": record["stream"], "megarouter.route": record["route"],
        "megarouter.route_kind": record["route_kind"], "megarouter.strategy": record["strategy"],
        "megarouter.endpoint": record["endpoint"], "megarouter.provider": record["provider"],
        "megarouter.region": record["region"], "megarouter.attempts": record["attempts"],
        "megarouter.cost_usd": record["cost_usd"], "megarouter.cached_tokens": record["cached_tokens"],
        "megarouter.node": record["node"], "megarouter.task": record["task"]})
    if record["error_class"] or record["status"] >= 400:
        tracing.fail(server_span, record["error_class"] or str(record["status"]))


def _error_class(status: int, error: ApiError | None, failures: list[tuple[str, str]]) -> str:
    """Why a request failed, in the failover engine's vocabulary: the last attempt's class when
    an attempt was made; otherwise what the gateway itself refused it for."""
    if error is None and status < 400:
        return ""
    if failures:
        return failures[-1][1]
    if isinstance(error, BudgetError):
        return "budget"
    if isinstance(error, NoEndpointError):
        return "no_endpoint"
    return "invalid_request" if status < 500 else "internal"


def log_record(api: str, exchange: Exchange, status: int, error: ApiError | None) -> dict[str, Any]:
    """The request log's line for one request: names, counts and outcomes — never content
    (nothing here is read from a request or response body)."""
    recorded = exchange.account.recorded
    endpoint = exchange.served_by
    failures = exchange.attempt_failures
    target = exchange.target
    record: dict[str, Any] = {
        "request_id": exchange.request_id,
        "api": api,
        "key": exchange.key.name,
        "node": exchange.account.node,
        "route": target.name if target is not None else exchange.task,
        "route_kind": target.kind if target is not None else "",
        "task": exchange.task,
        "strategy": exchange.strategy,
        "stream": exchange.stream,
        "status": status,
        "model": recorded.model if recorded is not None else "",
        "endpoint": endpoint.name if endpoint is not None else "",
        "provider": endpoint.provider.name if endpoint is not None else "",
        "region": endpoint.region if endpoint is not None else "",
        "attempts": len(failures) + (1 if endpoint is not None else 0),
        "failovers": [{"endpoint": name, "error_class": error_class} for name, error_class in failures],
        "error_class": _error_class(status, error, failures),
        "error_code": (error.code or error.type) if error is not None else "",
        "prompt_tokens": recorded.prompt_tokens if recorded is not None else 0,
        "completion_tokens": recorded.completion_tokens if recorded is not None else 0,
        "cached_tokens": recorded.cached_tokens if recorded is not None else 0,
        "cost_usd": round(recorded.cost_usd, 8) if recorded is not None else 0.0,
        "latency_ms": round(recorded.latency_ms, 1) if recorded is not None else None,
        "ttft_ms": round(recorded.ttft_ms, 1) if recorded is not None and recorded.ttft_ms is not None else None,
    }
    return record


def _served_by(response: web.StreamResponse, plan: router.Plan) -> EndpointRuntime:
    name = response.headers["x-megarouter-endpoint"]
    return next(c.endpoint for c in plan.candidates if c.endpoint.name == name)
