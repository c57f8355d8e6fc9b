"""`POST /v1/chat/completions`: the canonical shape — every adapter speaks it."""

from __future__ import annotations

from dataplane import validation
from dataplane.errors import OPENAI_ERRORS
from dataplane.pipeline.exchange import Exchange
from dataplane.providers.base import StreamTranslator
from dataplane.routing.needs import Needs
from dataplane.table import EndpointRuntime
from dataplane.translate.base import ChatTranslator
from dataplane.upstream import STREAM_INTERRUPTED


class ChatOperation:
    api = "chat"
    errors = OPENAI_ERRORS
    embeddings = False
    cascades = True

    def prepare(self, exchange: Exchange) -> None:
        validation.check_chat_request(exchange.payload)
        exchange.stream = exchange.payload.get("stream") is True
        exchange.chat = exchange.payload

    def needs(self, exchange: Exchange, min_quality: int) -> Needs:
        return exchange.chat_view_needs(min_quality)

    def native(self, endpoint: EndpointRuntime) -> bool:
        return True  # chat is the canonical shape: every adapter speaks it

    def translator(self, endpoint: EndpointRuntime, exchange: Exchange) -> ChatTranslator:
        return ChatTranslator(endpoint, exchange.chat, exchange.stream)

    def interrupted(self, stream: StreamTranslator) -> bytes:
        return STREAM_INTERRUPTED
