"""The proxy's HTTP application: OpenAI-compatible API plus health and metrics."""

from __future__ import annotations

import gc
import hashlib
import logging
import os
import time
from collections.abc import Callable

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess

from dataplane.budgets import BudgetEnforcer
from dataplane.control_plane import ControlPlaneLink
from dataplane.errors import (
    ANTHROPIC_ERRORS,
    OPENAI_ERRORS,
    ApiError,
    ClientError,
    ErrorFormat,
    bad_request,
    error_format_for,
)
from dataplane.failover.budget import RetryBudgets
from dataplane.failover.outlier import BASE_EJECTION_S, OutlierDetector
from dataplane.http_server import HttpLimits, read_body
from dataplane.operations.chat import ChatOperation
from dataplane.operations.completions import CompletionsOperation
from dataplane.operations.count_tokens import count_tokens
from dataplane.operations.embeddings import EmbeddingsOperation
from dataplane.operations.messages import MessagesOperation
from dataplane.operations.responses import ResponsesOperation
from dataplane.pipeline.exchange import Operation
from dataplane.pipeline.run import Pipeline
from dataplane.stats import TABLE_VERSION, EndpointStats
from dataplane.table import KeyInfo, RuntimeTable
from dataplane.translate.responses_chat import not_retained_error
from dataplane.upstream import SessionPool
from dataplane.usage import UsageLedger
from dataplane.workers import MULTIPROC_ENV

log = logging.getLogger("megarouter.proxy")

DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024  # base64 images make chat bodies large


class ProxyState:
    """What the proxy holds: caches only. The table is swapped whole."""

    def __init__(self, link: ControlPlaneLink, ejection_base_s: float = BASE_EJECTION_S, node_id: str = "proxy",
                 region: str = "") -> None:
        self.table: RuntimeTable | None = None
        self.not_ready_reason = ""      # why there is no table yet (e.g. the cache file was empty)
        self.limits = HttpLimits()
        self.sessions = SessionPool()
        self.stats = EndpointStats(outliers=OutlierDetector(ejection_base_s))
        self.usage = UsageLedger()
        self.retry_budgets = RetryBudgets()  # failover load; spend budgets are self.budgets
        self.budgets = BudgetEnforcer(node_id, link)
        self.pipeline = Pipeline(self.sessions, self.stats, self.usage, self.retry_budgets, self.budgets, region)
        self._frozen = False

    def install(self, table: RuntimeTable) -> None:
        self.table = table
        self.budgets.set_rules(table.proto.budgets)
        TABLE_VERSION.set(table.version)
        if not self._frozen:
            # Everything loaded to serve — modules (botocore's alone is ~10 MB of objects), the first
            # table — lives as long as the process: moved out of the collector's sight, so a full
            # collection under traffic walks only what requests allocate.
            gc.freeze()
            self._frozen = True


STATE = web.AppKey("state", ProxyState)


def _table(request: web.Request) -> RuntimeTable:
    table = request.app[STATE].table
    if table is None:
        raise ApiError(503, "the gateway has no routing table yet", type="server_error", code="not_ready",
                       headers={"Retry-After": "1"})
    return table


def parse_body(raw: bytes) -> dict:
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"We could not parse the JSON body of your request: {exc.msg}") from None
    if not isinstance(payload, dict):
        raise bad_request("The request body must be a JSON object.")
    return payload


def _credentials(request: web.Request, x_api_key: bool) -> list[str]:
    """The API keys the request carries: `Authorization: Bearer <key>`, and (Anthropic's APIs)
    `x-api-key: <key>` — Claude Code sends one or the other, or both when both of its
    variables are set (one of them often a placeholder)."""
    headers = request.headers.getall("Authorization", ())
    if len(headers) > 1:
        # Which one would win is the server's accident; a client sending two is refused.
        raise ClientError(400, "Send one Authorization header, not several.", param="Authorization",
                          code="duplicate_header")
    offered = []
    if x_api_key:
        keys = request.headers.getall("x-api-key", ())
        if len(keys) > 1:
            raise ClientError(400, "Send one x-api-key header, not several.", param="x-api-key",
                              code="duplicate_header")
        if keys and keys[0].strip():
            offered.append(keys[0].strip())
    scheme, _, secret = (headers[0] if headers else "").partition(" ")
    if scheme.lower() == "bearer" and secret.strip():
        offered.append(secret.strip())
    if not offered:
        how = "'x-api-key: <key>' or 'Authorization: Bearer <key>'" if x_api_key else "'Authorization: Bearer <key>'"
        raise ApiError(401, f"You didn't provide an API key. Send it as {how}.", code="missing_api_key")
    return offered


def authenticate(request: web.Request, table: RuntimeTable, x_api_key: bool = False) -> KeyInfo:
    offered = _credentials(request, x_api_key)
    found = {}
    for secret in offered:
        key = table.keys.get(hashlib.sha256(secret.encode()).hexdigest())
        if key is not None:
            found[key.name] = key
    if len(found) > 1:
        # Two valid keys: whose usage and budgets this is would be a guess.
        raise ClientError(400, "The x-api-key and Authorization headers carry two different API keys; send one.",
                          param="x-api-key", code="duplicate_header")
    if not found:
        # Like OpenAI, show only the key's first characters.
        shown = " / ".join(secret[:8] + "…" for secret in dict.fromkeys(offered))
        raise ApiError(401, f"Incorrect API key provided: {shown}", code="invalid_api_key")
    key = next(iter(found.values()))
    if key.expires_at_unix_ms and time.time() * 1000 >= key.expires_at_unix_ms:
        raise ApiError(401, f"API key '{key.name}' has expired.", code="expired_api_key")
    return key


async def _body(request: web.Request) -> dict:
    state = request.app[STATE]
    raw = await read_body(request, request.app._client_max_size, state.limits.body_timeout_s)
    request["body_size"] = len(raw)
    return parse_body(raw)


def _api(operation: Operation):
    """The aiohttp handler for one API: table, auth and body, then the pipeline."""
    x_api_key = operation.errors is ANTHROPIC_ERRORS

    async def handle(request: web.Request) -> web.StreamResponse:
        table = _table(request)
        key = authenticate(request, table, x_api_key)
        payload = await _body(request)
        return await request.app[STATE].pipeline.run(operation, request, table, key, payload)

    return handle


def _models_errors(request: web.Request) -> ErrorFormat:
    return ANTHROPIC_ERRORS if "anthropic-version" in request.headers else OPENAI_ERRORS


def _guarded(api: str, errors: ErrorFormat | Callable[[web.Request], ErrorFormat], handler):
    """Every failure leaves in the API's own error shape (`errors`, or the one it picks for
    the request); never a stack trace.

    A wrapper per route rather than an aiohttp middleware: middlewares cost a
    few percent of the proxy's CPU per request, measured (bench/RESULTS.md).
    """

    async def guarded(request: web.Request) -> web.StreamResponse:
        shape = errors(request) if callable(errors) else errors
        try:
            response = await handler(request)
        except ApiError as error:
            response = shape.response(error)
        except web.HTTPRequestEntityTooLarge:
            limit = request.app._client_max_size
            response = shape.response(ApiError(
                413, f"Request body too large: the limit is {limit} bytes.", code="request_too_large"))
        except Exception:
            # The traceback goes to our log (it holds no request content);
            # the client gets a generic message.
            log.exception("unhandled error on %s %s", request.method, request.path)
            response = shape.response(
                ApiError(500, "internal gateway error", type="server_error", code="internal_error"))
        request.app[STATE].stats.client_response(api, response.status)
        return response

    return guarded


async def _count_tokens(request: web.Request) -> web.Response:
    table = _table(request)
    key = authenticate(request, table, x_api_key=True)
    payload = await _body(request)
    return await count_tokens(request.app[STATE].pipeline, request, table, key, payload)


async def _not_retained(request: web.Request) -> web.Response:
    """`GET /v1/responses/{id}` and friends: this gateway stores no response to find."""
    authenticate(request, _table(request))
    raise not_retained_error(request.match_info["response_id"])


async def unknown_url(request: web.Request) -> web.Response:
    return error_format_for(request.path).response(
        ApiError(404, f"Invalid URL ({request.method} {request.path})", code="unknown_url"))


async def list_models(request: web.Request) -> web.Response:
    """The routes and models this key may use — in Anthropic's list shape when the client
    speaks Anthropic's API (it sends `anthropic-version`), else OpenAI's."""
    table = _table(request)
    anthropic = "anthropic-version" in request.headers
    key = authenticate(request, table, x_api_key=anthropic)
    created = table.proto.generated_at_unix_ms // 1000
    names = [name for name in (*table.route_names, *table.model_names)
             if (target := table.resolve(name)) is not None and target.endpoints and key.may_use(name)]
    if anthropic:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created))
        data = [{"type": "model", "id": name, "display_name": name, "created_at": stamp} for name in names]
        body = {"data": data, "has_more": False, "first_id": names[0] if names else None,
                "last_id": names[-1] if names else None}
    else:
        body = {"object": "list", "data": [
            {"id": name, "object": "model", "created": created,
             "owned_by": "megarouter-route" if table.resolve(name).kind == "route" else "megarouter"}
            for name in names]}
    return web.Response(body=orjson.dumps(body), content_type="application/json")


async def healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    state = request.app[STATE]
    table = state.table
    if table is None:
        reason = "no routing table yet: waiting for the control plane"
        if state.not_ready_reason:
            reason += f" ({state.not_ready_reason})"
        return web.json_response({"status": reason}, status=503)
    health = request.app[STATE].stats.health
    return web.json_response({"status": "ready", "table_version": table.version,
                              "fleet_health_generation": health.fleet_generation})


async def metrics(_request: web.Request) -> web.Response:
    if os.environ.get(MULTIPROC_ENV):
        # One of several workers (`--workers`): report all of them, summed by prometheus_client.
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        body = generate_latest(registry)
    else:
        body = generate_latest()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def build_app(state: ProxyState, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
              limits: HttpLimits | None = None) -> web.Application:
    app = web.Application(client_max_size=max_body_bytes)
    state.limits = limits or HttpLimits()
    app[STATE] = state
    for path, operation in (("/v1/chat/completions", ChatOperation()), ("/v1/completions", CompletionsOperation()),
                            ("/v1/embeddings", EmbeddingsOperation()), ("/v1/responses", ResponsesOperation()),
                            ("/v1/messages", MessagesOperation())):
        app.router.add_post(path, _guarded(operation.api, operation.errors, _api(operation)))
    app.router.add_post("/v1/messages/count_tokens", _guarded("count_tokens", ANTHROPIC_ERRORS, _count_tokens))
    stored = _guarded("responses", OPENAI_ERRORS, _not_retained)
    app.router.add_get("/v1/responses/{response_id}", stored)
    app.router.add_delete("/v1/responses/{response_id}", stored)
    app.router.add_get("/v1/responses/{response_id}/input_items", stored)
    app.router.add_post("/v1/responses/{response_id}/cancel", stored)
    app.router.add_get("/v1/models", _guarded("models", _models_errors, list_models))
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    # Anything else, any method: an OpenAI-shaped 404, like OpenAI's own.
    app.router.add_route("*", "/{tail:.*}", unknown_url)

    async def close_sessions(_app: web.Application) -> None:
        await state.sessions.close()

    app.on_cleanup.append(close_sessions)
    return app
