"""`POST /v1/completions`: the legacy text-completions API.

Native where the model serves it (`capabilities.completions` on an
OpenAI-family provider): passed to the adapter's completions request, which
keeps its quirks (`no_stream_options`). Everywhere else it is translated
through chat (`translate/completions_chat.py`), so any chat model answers
legacy clients.
"""

from __future__ import annotations

from dataplane import validation
from dataplane.errors import OPENAI_ERRORS, ClientError
from dataplane.pipeline.exchange import Exchange
from dataplane.providers.base import StreamTranslator, Usage
from dataplane.providers.openai import OpenAIStream
from dataplane.routing.needs import Needs
from dataplane.table import EndpointRuntime
from dataplane.translate.base import EndpointTranslator, Translator, UpstreamRequest, ViaChat
from dataplane.translate.completions_chat import (
    DEFAULT_MAX_TOKENS,
    ChatToCompletionStream,
    chat_payload,
    completion_from_chat,
)
from dataplane.upstream import STREAM_INTERRUPTED


class NativeCompletions(EndpointTranslator):
    """Legacy completions × an OpenAI-family endpoint that has the API."""

    __slots__ = ()

    def request(self) -> UpstreamRequest:
        endpoint, provider = self.endpoint, self.endpoint.provider
        url = provider.adapter.completions_url(provider.base_url, provider.options, endpoint.upstream_model)
        return UpstreamRequest(url, provider.adapter.completions_request(self._payload, endpoint.upstream_model))

    def response(self, raw: bytes) -> tuple[bytes, Usage]:
        return self.endpoint.provider.adapter.chat_response(raw, self.endpoint.model)

    def stream(self) -> OpenAIStream:
        return OpenAIStream(bool((self._payload.get("stream_options") or {}).get("include_usage")))


class CompletionsOperation:
    api = "completions"
    errors = OPENAI_ERRORS
    embeddings = False
    cascades = False

    def prepare(self, exchange: Exchange) -> None:
        payload = exchange.payload
        validation.check_completions_request(payload)
        exchange.stream = payload.get("stream") is True
        try:
            exchange.chat = chat_payload(payload)
        except ClientError as refusal:
            exchange.chat_refusal = refusal  # fine for a native endpoint; refused for the others

    def needs(self, exchange: Exchange, min_quality: int) -> Needs:
        return exchange.chat_view_needs(min_quality, exchange.payload.get("max_tokens") or DEFAULT_MAX_TOKENS)

    def native(self, endpoint: EndpointRuntime) -> bool:
        return endpoint.native_completions

    def translator(self, endpoint: EndpointRuntime, exchange: Exchange) -> Translator:
        if endpoint.native_completions:
            return NativeCompletions(endpoint, exchange.payload, exchange.stream)
        return ViaChat(endpoint, exchange.chat, exchange.stream, completion_from_chat, ChatToCompletionStream)

    def interrupted(self, stream: StreamTranslator) -> bytes:
        return STREAM_INTERRUPTED
