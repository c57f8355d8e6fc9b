"""`POST /v1/embeddings`: OpenAI's embeddings API over any provider that has one.

Only endpoints whose model is flagged `capabilities.embeddings` (and whose
adapter can embed) are candidates, so a route mixing chat and embedding
models still sends each request to the right kind.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from dataplane.budgets import BudgetEnforcer, Charge
from dataplane.chat import check_model, counted, resolve, task_headers
from dataplane.errors import bad_request
from dataplane.failover.engine import first_success
from dataplane.relay import relay_json
from dataplane.stats import EndpointStats, UsageAccount
from dataplane.table import EndpointRuntime, KeyInfo, RuntimeTable
from dataplane.upstream import SessionPool, exhausted_error


def check_embeddings_request(payload: dict[str, Any]) -> None:
    check_model(payload)
    value = payload.get("input")
    valid = (
        (isinstance(value, str) and value != "")
        or (isinstance(value, list) and value and all(isinstance(item, str) for item in value))
        or (isinstance(value, list) and value and all(isinstance(item, int) for item in value))
        or (isinstance(value, list) and value and all(
            isinstance(item, list) and item and all(isinstance(t, int) for t in item) for item in value))
    )
    if not valid:
        raise bad_request("'input' must be a non-empty string, array of strings, or array of token arrays", "input")
    if payload.get("encoding_format") not in (None, "float", "base64"):
        raise bad_request("'encoding_format' must be 'float' or 'base64'", "encoding_format")
    dimensions = payload.get("dimensions")
    if dimensions is not None and (not isinstance(dimensions, int) or isinstance(dimensions, bool) or dimensions < 1):
        raise bad_request("'dimensions' must be a positive integer", "dimensions")


class EmbeddingsHandler:
    def __init__(self, sessions: SessionPool, stats: EndpointStats, budgets: BudgetEnforcer) -> None:
        self._sessions = sessions
        self._stats = stats
        self._budgets = budgets

    @counted
    async def handle(
        self, request: web.Request, table: RuntimeTable, key: KeyInfo, payload: dict[str, Any],
        account: UsageAccount,
    ) -> web.StreamResponse:
        check_embeddings_request(payload)
        target = resolve(table, key, payload["model"])
        if not target.endpoints:
            raise exhausted_error(None, 0)  # 503: nothing can serve it on this proxy now
        endpoints = tuple(e for e in target.endpoints if e.embeddings)
        if not endpoints:
            raise bad_request(f"'{target.name}' has no embeddings model", "model")

        def build(endpoint: EndpointRuntime) -> tuple[str, bytes]:
            provider = endpoint.provider
            return provider.adapter.embeddings_request(
                provider.base_url, provider.options, dict(payload), endpoint.upstream_model
            )

        task = request["task"]
        charge = await Charge.reserve(self._budgets, key, task, endpoints, request.get("body_size", 0) // 4, 0)
        async with charge:
            success = await first_success(self._sessions, self._stats, target, charge.endpoints, build,
                                          stream=False, payload=payload)
            adapter, model = success.endpoint.provider.adapter, success.endpoint.model
            charge.served_by(model)
            headers = {**success.headers(target), **charge.headers(), **task_headers(request, task)}
            return await relay_json(
                self._stats, success, lambda raw: adapter.embeddings_response(raw, model, payload),
                headers, on_usage=charge.on_usage, account=account,
            )
