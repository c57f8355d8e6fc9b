"""The proxy's HTTP application: OpenAI-compatible API plus health and metrics."""

from __future__ import annotations

import hashlib
import logging
import os
import time

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess

from dataplane.budgets import BudgetEnforcer
from dataplane.chat import ChatHandler, parse_body
from dataplane.completions import CompletionsHandler
from dataplane.control_plane import ControlPlaneLink
from dataplane.embeddings import EmbeddingsHandler
from dataplane.errors import ApiError
from dataplane.failover.outlier import BASE_EJECTION_S, OutlierDetector
from dataplane.http_server import HttpLimits, read_body
from dataplane.stats import TABLE_VERSION, EndpointStats
from dataplane.table import KeyInfo, RuntimeTable
from dataplane.upstream import SessionPool
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
        self.budgets = BudgetEnforcer(node_id, link)
        self.chat = ChatHandler(self.sessions, self.stats, self.budgets, region)
        self.embeddings = EmbeddingsHandler(self.sessions, self.stats, self.budgets)
        self.completions = CompletionsHandler(self.sessions, self.stats, self.budgets)

    def install(self, table: RuntimeTable) -> None:
        self.table = table
        self.budgets.set_rules(table.proto.budgets)
        TABLE_VERSION.set(table.version)


STATE = web.AppKey("state", ProxyState)


def _table(request: web.Request) -> RuntimeTable:
    table = request.app[STATE].table
    if table is None:
        raise ApiError(503, "the gateway has no routing table yet", type="server_error", code="not_ready",
                       headers={"Retry-After": "1"})
    return table


def authenticate(request: web.Request, table: RuntimeTable) -> KeyInfo:
    headers = request.headers.getall("Authorization", ())
    if len(headers) > 1:
        # Which one would win is the server's accident; a client sending two is refused.
        raise ApiError(400, "Send one Authorization header, not several.", param="Authorization",
                       code="duplicate_header")
    header = headers[0] if headers else ""
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise ApiError(
            401,
            "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.",
            code="missing_api_key",
        )
    key = table.keys.get(hashlib.sha256(secret.strip().encode()).hexdigest())
    if key is None:
        # Like OpenAI, show only the key's first characters.
        shown = secret.strip()[:8] + "…"
        raise ApiError(401, f"Incorrect API key provided: {shown}", code="invalid_api_key")
    if key.expires_at_unix_ms and time.time() * 1000 >= key.expires_at_unix_ms:
        raise ApiError(401, f"API key '{key.name}' has expired.", code="expired_api_key")
    return key


def _api(handler: str):
    """The aiohttp handler for a JSON API: table, auth and body, then `handler`."""

    async def handle(request: web.Request) -> web.StreamResponse:
        table = _table(request)
        key = authenticate(request, table)
        state = request.app[STATE]
        raw = await read_body(request, request.app._client_max_size, state.limits.body_timeout_s)
        request["body_size"] = len(raw)
        payload = parse_body(raw)
        return await getattr(request.app[STATE], handler).handle(request, table, key, payload)

    return handle


def _openai_errors(api: str, handler):
    """Every failure leaves as an OpenAI error body; never a stack trace.

    A wrapper per route rather than an aiohttp middleware: middlewares cost a
    few percent of the proxy's CPU per request, measured (bench/RESULTS.md).
    """

    async def guarded(request: web.Request) -> web.StreamResponse:
        try:
            response = await handler(request)
        except ApiError as error:
            response = error.response()
        except web.HTTPRequestEntityTooLarge:
            limit = request.app._client_max_size
            response = ApiError(
                413, f"Request body too large: the limit is {limit} bytes.", code="request_too_large"
            ).response()
        except Exception:
            # The traceback goes to our log (it holds no request content);
            # the client gets a generic message.
            log.exception("unhandled error on %s %s", request.method, request.path)
            response = ApiError(500, "internal gateway error", type="server_error", code="internal_error").response()
        request.app[STATE].stats.client_response(api, response.status)
        return response

    return guarded


async def unknown_url(request: web.Request) -> web.Response:
    return ApiError(404, f"Invalid URL ({request.method} {request.path})", code="unknown_url").response()


async def list_models(request: web.Request) -> web.Response:
    table = _table(request)
    key = authenticate(request, table)
    created = table.proto.generated_at_unix_ms // 1000
    data = []
    for name in (*table.route_names, *table.model_names):
        target = table.resolve(name)
        if target is not None and target.endpoints and key.may_use(name):
            owner = "megarouter-route" if target.kind == "route" else "megarouter"
            data.append({"id": name, "object": "model", "created": created, "owned_by": owner})
    return web.Response(body=orjson.dumps({"object": "list", "data": data}), content_type="application/json")


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
    app.router.add_post("/v1/chat/completions", _openai_errors("chat", _api("chat")))
    app.router.add_post("/v1/completions", _openai_errors("completions", _api("completions")))
    app.router.add_post("/v1/embeddings", _openai_errors("embeddings", _api("embeddings")))
    app.router.add_get("/v1/models", _openai_errors("models", list_models))
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    # Anything else, any method: an OpenAI-shaped 404, like OpenAI's own.
    app.router.add_route("*", "/{tail:.*}", unknown_url)

    async def close_sessions(_app: web.Application) -> None:
        await state.sessions.close()

    app.on_cleanup.append(close_sessions)
    return app
