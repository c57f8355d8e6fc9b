"""`POST /v1/responses`: the OpenAI Responses API, served by every backend.

OpenAI endpoints whose provider sets `options: {responses_api: native}` get
the request as sent (`translate/responses_native.py`: `store` forced false).
Everywhere else `responses_chat` translates the request to chat, and the chat
answer and stream back to a `response` object and the Responses event
sequence. Zero
data retention: nothing is stored, so `store` is answered `false`, and
whatever needs a stored response (`previous_response_id`, `conversation`,
background runs, `GET /v1/responses/{id}`) is refused with a message saying
the client must send the conversation itself.
"""

from __future__ import annotations

from dataplane.errors import OPENAI_ERRORS
from dataplane.pipeline.exchange import Exchange
from dataplane.providers.base import StreamTranslator
from dataplane.routing.needs import Needs
from dataplane.table import EndpointRuntime
from dataplane.translate.base import Translator, ViaChat
from dataplane.translate.responses_chat import (
    ChatToResponsesStream,
    chat_to_response,
    check_responses_request,
    responses_to_chat,
    stream_error_event,
)
from dataplane.translate.responses_native import NativeResponses, native_responses


class ResponsesOperation:
    api = "responses"
    errors = OPENAI_ERRORS
    embeddings = False
    cascades = False

    def prepare(self, exchange: Exchange) -> None:
        check_responses_request(exchange.payload)
        exchange.stream = exchange.payload.get("stream") is True
        exchange.chat = responses_to_chat(exchange.payload)

    def needs(self, exchange: Exchange, min_quality: int) -> Needs:
        return exchange.chat_view_needs(min_quality)

    def native(self, endpoint: EndpointRuntime) -> bool:
        return native_responses(endpoint)

    def translator(self, endpoint: EndpointRuntime, exchange: Exchange) -> Translator:
        request = exchange.payload
        if native_responses(endpoint):
            return NativeResponses(endpoint, request)
        return ViaChat(endpoint, exchange.chat, exchange.stream,
                       lambda chat, model: chat_to_response(chat, request, model),
                       lambda inner, model: ChatToResponsesStream(inner, request, model))

    def interrupted(self, stream: StreamTranslator) -> bytes:
        message = "the upstream stream ended before completing; the response is incomplete"
        if isinstance(stream, ChatToResponsesStream):   # numbers the events on from the last one sent
            return stream.fail(message, "upstream_stream_interrupted")
        return stream_error_event(message, "upstream_stream_interrupted")

