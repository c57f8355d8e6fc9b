"""`POST /v1/completions`: the legacy text-completions API.

Native where the model serves it (`capabilities.completions` on an
OpenAI-family provider): passed through like chat. Everywhere else it is
translated through chat — the prompt becomes one user message, and the chat
answer (JSON or stream) is turned back into `text_completion` objects — so
any chat model answers legacy clients. The translation cannot express
`echo`, `suffix`, `logprobs` or `best_of`; requests using them are refused
with a 400 naming the field rather than answered differently.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from aiohttp import web

from dataplane import validation
from dataplane.budgets import BudgetEnforcer, Charge
from dataplane.chat import counted, resolve, task_headers
from dataplane.errors import bad_request
from dataplane.failover.engine import first_success
from dataplane.providers.base import ProviderError, StreamTranslator, Usage
from dataplane.providers.openai import OpenAIStream
from dataplane.relay import relay_json, relay_stream
from dataplane.stats import EndpointStats, UsageAccount
from dataplane.table import EndpointRuntime, KeyInfo, RuntimeTable
from dataplane.upstream import SessionPool

# OpenAI's default for the legacy API, which chat translation must keep.
DEFAULT_MAX_TOKENS = 16
# Fields chat cannot express, with the values that ask for nothing special.
_UNTRANSLATABLE = {"echo": (None, False), "suffix": (None, ""), "logprobs": (None,), "best_of": (None, 1)}
_CHAT_FIELDS = ("max_tokens", "temperature", "top_p", "n", "stop", "stream", "stream_options", "seed",
                "presence_penalty", "frequency_penalty", "user", "logit_bias")


check_completions_request = validation.check_completions_request


def chat_payload(payload: dict[str, Any]) -> dict[str, Any]:
    """The chat request equivalent to a legacy completions request."""
    for field, harmless in _UNTRANSLATABLE.items():
        if payload.get(field) not in harmless:
            raise bad_request(f"'{field}' is not supported for this model (it is served through chat)", field)
    prompt = payload["prompt"]
    if isinstance(prompt, list):
        if len(prompt) != 1 or not isinstance(prompt[0], str):
            raise bad_request("send one text prompt per request for this model (it is served through chat)", "prompt")
        prompt = prompt[0]
    chat = {field: payload[field] for field in _CHAT_FIELDS if field in payload}
    chat["model"] = payload["model"]
    chat["messages"] = [{"role": "user", "content": prompt}]
    chat.setdefault("max_tokens", DEFAULT_MAX_TOKENS)
    return chat


def completion_from_chat(body: bytes) -> bytes:
    chat = orjson.loads(body)
    return orjson.dumps({
        "id": "cmpl-" + str(chat.get("id", "")).removeprefix("chatcmpl-"),
        "object": "text_completion",
        "created": chat.get("created") or int(time.time()),
        "model": chat.get("model"),
        "choices": [
            {
                "text": (choice.get("message") or {}).get("content") or "",
                "index": choice.get("index", 0),
                "logprobs": None,
                "finish_reason": choice.get("finish_reason"),
            }
            for choice in chat.get("choices", [])
        ],
        "usage": chat.get("usage"),
    })


class ChatToCompletionStream:
    """Wraps a chat stream translator; re-emits its chunks as text_completion chunks."""

    def __init__(self, inner: StreamTranslator) -> None:
        self._inner = inner
        self._pending = b""

    @property
    def usage(self) -> Usage:
        return self._inner.usage

    @property
    def complete(self) -> bool:
        return self._inner.complete

    @property
    def error(self) -> ProviderError | None:
        return self._inner.error

    def feed(self, data: bytes) -> bytes:
        return self._convert(self._inner.feed(data))

    def finish(self) -> bytes:
        return self._convert(self._inner.finish(), final=True)

    def _convert(self, data: bytes, final: bool = False) -> bytes:
        buffer = self._pending + data
        if final:
            events, self._pending = buffer, b""
        else:
            cut = buffer.rfind(b"\n\n")
            if cut < 0:
                self._pending = buffer
                return b""
            events, self._pending = buffer[: cut + 2], buffer[cut + 2 :]
        out = []
        for event in events.split(b"\n\n"):
            if not event.startswith(b"data: {"):
                if event:
                    out.append(event + b"\n\n")
                continue
            chunk = orjson.loads(event[6:])
            if "error" in chunk:
                out.append(event + b"\n\n")
                continue
            choices = [
                {"text": (c.get("delta") or {}).get("content") or "", "index": c.get("index", 0),
                 "logprobs": None, "finish_reason": c.get("finish_reason")}
                for c in chunk.get("choices", [])
                if (c.get("delta") or {}).get("content") or c.get("finish_reason")
            ]
            if not choices and not chunk.get("usage"):
                continue  # role-only or empty deltas have no text_completion equivalent
            converted = {"id": "cmpl-" + str(chunk.get("id", "")).removeprefix("chatcmpl-"),
                         "object": "text_completion", "created": chunk.get("created"),
                         "model": chunk.get("model"), "choices": choices}
            if "usage" in chunk:
                converted["usage"] = chunk["usage"]
            out.append(b"data: " + orjson.dumps(converted) + b"\n\n")
        return b"".join(out)


class CompletionsHandler:
    def __init__(self, sessions: SessionPool, stats: EndpointStats, budgets: BudgetEnforcer) -> None:
        self._sessions = sessions
        self._stats = stats
        self._budgets = budgets

    @counted
    async def handle(
        self, request: web.Request, table: RuntimeTable, key: KeyInfo, payload: dict[str, Any],
        account: UsageAccount,
    ) -> web.StreamResponse:
        check_completions_request(payload)
        target = resolve(table, key, payload["model"])
        stream = payload.get("stream") is True
        include_usage = bool((payload.get("stream_options") or {}).get("include_usage"))

        def build(endpoint: EndpointRuntime) -> tuple[str, bytes]:
            provider = endpoint.provider
            if endpoint.native_completions:
                body = dict(payload, model=endpoint.upstream_model)
                if stream:  # ask for usage so it is counted; dropped again unless the caller asked
                    body["stream_options"] = {**(payload.get("stream_options") or {}), "include_usage": True}
                return provider.adapter.completions_url(provider.base_url, provider.options,
                                                        endpoint.upstream_model), orjson.dumps(body)
            body = provider.adapter.chat_request(chat_payload(payload), endpoint.upstream_model)
            return (endpoint.chat_stream_url if stream else endpoint.chat_url), body

        task = request["task"]
        max_tokens = payload.get("max_tokens")
        charge = await Charge.reserve(
            self._budgets, key, task, target.endpoints, request.get("body_size", 0) // 4,
            max_tokens if isinstance(max_tokens, int) and max_tokens > 0 else DEFAULT_MAX_TOKENS,
        )
        async with charge:
            success = await first_success(self._sessions, self._stats, target, charge.endpoints, build,
                                          stream=stream, payload=payload)
            charge.served_by(success.endpoint.model)
            return await self._relay(request, success, target, stream, include_usage, charge, account)

    async def _relay(self, request, success, target, stream, include_usage, charge, account) -> web.StreamResponse:
        endpoint = success.endpoint
        headers = {**success.headers(target), **charge.headers(), **task_headers(request, request["task"])}
        on_usage = charge.on_usage
        adapter = endpoint.provider.adapter
        if endpoint.native_completions:
            if stream:
                return await relay_stream(request, self._stats, success, OpenAIStream(include_usage), headers,
                                          on_usage, account=account)
            return await relay_json(self._stats, success, lambda raw: adapter.chat_response(raw, endpoint.model),
                                    headers, on_usage, account=account)
        if stream:
            translator = ChatToCompletionStream(adapter.chat_stream(endpoint.model, include_usage))
            return await relay_stream(request, self._stats, success, translator, headers, on_usage, account=account)

        def translate(raw: bytes) -> tuple[bytes, Usage]:
            body, usage = adapter.chat_response(raw, endpoint.model)
            return completion_from_chat(body), usage

        return await relay_json(self._stats, success, translate, headers, on_usage, account=account)
