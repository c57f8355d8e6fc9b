"""`POST /v1/messages` and `/v1/messages/count_tokens`: Anthropic's Messages API as an input.

Claude Code and every Anthropic-SDK application speak only this API. An
Anthropic endpoint serves it natively — the body passes through with only
`model` rewritten, and the client's `anthropic-version` / `anthropic-beta`
headers go along, so prompt caching, thinking and betas keep working; the
stream is relayed frame for frame (`messages_chat.AnthropicPassthroughStream`
only reads usage and the end). Every other backend serves it through chat
(`messages_chat`: request, answer and event stream translated both ways).
`model` resolves routes and model ids exactly as on the OpenAI side, so
`ANTHROPIC_MODEL=auto` routes. Errors leave in Anthropic's shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from dataplane.errors import ANTHROPIC_ERRORS, ClientError
from dataplane.pipeline.exchange import Exchange
from dataplane.providers.base import StreamTranslator, Usage
from dataplane.routing.needs import Needs
from dataplane.table import EndpointRuntime
from dataplane.translate.base import EndpointTranslator, Translator, UpstreamRequest, ViaChat
from dataplane.translate.messages_chat import (
    AnthropicPassthroughStream,
    ChatToMessagesStream,
    chat_to_message,
    check_messages_request,
    messages_to_chat,
    passthrough_usage,
    stream_error_event,
)

# Client headers an Anthropic endpoint should see as sent (the version pins the wire format;
# betas switch features on). Anything else the client sent stays at the gateway.
FORWARDED_HEADERS = ("anthropic-version", "anthropic-beta")


def forwarded_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {name: headers[name] for name in FORWARDED_HEADERS if name in headers}


class NativeMessages(EndpointTranslator):
    """Messages × an Anthropic endpoint: pass-through."""

    __slots__ = ("_headers", "_path")

    def __init__(self, endpoint: EndpointRuntime, payload: dict[str, Any], headers: dict[str, str],
                 path: str = "/messages") -> None:
        super().__init__(endpoint, payload)
        self._headers = headers
        self._path = path

    def request(self) -> UpstreamRequest:
        endpoint = self.endpoint
        body = orjson.dumps({**self._payload, "model": endpoint.upstream_model})
        return UpstreamRequest(endpoint.provider.base_url + self._path, body, self._headers)

    def response(self, raw: bytes) -> tuple[bytes, Usage]:
        return raw, passthrough_usage(raw)

    def stream(self) -> AnthropicPassthroughStream:
        return AnthropicPassthroughStream()


def is_anthropic(endpoint: EndpointRuntime) -> bool:
    return endpoint.provider.adapter.kind == "anthropic"


class MessagesOperation:
    api = "messages"
    errors = ANTHROPIC_ERRORS
    embeddings = False
    cascades = False

    def prepare(self, exchange: Exchange) -> None:
        payload = exchange.payload
        check_messages_request(payload)
        exchange.stream = payload.get("stream") is True
        try:
            exchange.chat = messages_to_chat(payload)
        except ClientError as refusal:
            # Something only Anthropic can do (a server tool): its endpoints still serve it.
            exchange.chat_refusal = refusal

    def needs(self, exchange: Exchange, min_quality: int) -> Needs:
        return exchange.chat_view_needs(min_quality, exchange.payload["max_tokens"])

    def native(self, endpoint: EndpointRuntime) -> bool:
        return is_anthropic(endpoint)

    def translator(self, endpoint: EndpointRuntime, exchange: Exchange) -> Translator:
        if is_anthropic(endpoint):
            return NativeMessages(endpoint, exchange.payload, forwarded_headers(exchange.request.headers))
        return ViaChat(endpoint, exchange.chat, exchange.stream, chat_to_message, ChatToMessagesStream)

    def interrupted(self, stream: StreamTranslator) -> bytes:
        return stream_error_event("the upstream stream ended before completing; the response is incomplete")

