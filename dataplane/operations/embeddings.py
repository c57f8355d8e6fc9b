"""`POST /v1/embeddings`: OpenAI's embeddings API over any provider that has one.

Only embeddings models (`capabilities.embeddings`) are candidates — the
router's filter — so a route mixing chat and embedding models still sends
each request to the right kind, and every other rule (regions, ejection,
strategy, budgets) applies as for chat.
"""

from __future__ import annotations

from typing import Any

from dataplane.errors import OPENAI_ERRORS, bad_request
from dataplane.pipeline.exchange import Exchange
from dataplane.providers.base import StreamTranslator, Usage
from dataplane.routing.needs import CHARS_PER_TOKEN, Needs
from dataplane.table import EndpointRuntime
from dataplane.translate.base import EndpointTranslator, UpstreamRequest
from dataplane.upstream import STREAM_INTERRUPTED
from dataplane.validation import model_name


def check_embeddings_request(payload: dict[str, Any]) -> None:
    model_name(payload)
    value = payload.get("input")
    valid = (
        (isinstance(value, str) and value != "")
        or (isinstance(value, list) and value and all(isinstance(item, str) for item in value))
        or (isinstance(value, list) and value and all(
            isinstance(item, int) and not isinstance(item, bool) for item in value))
        or (isinstance(value, list) and value and all(
            isinstance(item, list) and item and all(isinstance(t, int) and not isinstance(t, bool) for t in item)
            for item in value))
    )
    if not valid:
        raise bad_request("'input' must be a non-empty string, array of strings, or array of token arrays", "input")
    if payload.get("encoding_format") not in (None, "float", "base64"):
        raise bad_request("'encoding_format' must be 'float' or 'base64'", "encoding_format")
    dimensions = payload.get("dimensions")
    if dimensions is not None and (not isinstance(dimensions, int) or isinstance(dimensions, bool) or dimensions < 1):
        raise bad_request("'dimensions' must be a positive integer", "dimensions")
    if payload.get("user") is not None and not isinstance(payload["user"], str):
        raise bad_request("'user' must be a string", "user")


def _largest_input_tokens(value: Any) -> int:
    if isinstance(value, str):
        return len(value) // CHARS_PER_TOKEN
    if value and isinstance(value[0], int):
        return len(value)                      # one token array
    return max((_largest_input_tokens(item) for item in value), default=0)


class EmbeddingsTranslator(EndpointTranslator):
    __slots__ = ()

    def request(self) -> UpstreamRequest:
        endpoint, provider = self.endpoint, self.endpoint.provider
        url, body = provider.adapter.embeddings_request(provider.base_url, provider.options, self._payload,
                                                        endpoint.upstream_model)
        return UpstreamRequest(url, body)

    def response(self, raw: bytes) -> tuple[bytes, Usage]:
        return self.endpoint.provider.adapter.embeddings_response(raw, self.endpoint.model, self._payload)

    def stream(self) -> StreamTranslator:
        raise TypeError("embeddings are never streamed")


class EmbeddingsOperation:
    api = "embeddings"
    errors = OPENAI_ERRORS
    embeddings = True
    cascades = False

    def prepare(self, exchange: Exchange) -> None:
        check_embeddings_request(exchange.payload)

    def needs(self, exchange: Exchange, min_quality: int) -> Needs:
        return Needs(frozenset(), exchange.request.get("body_size", 0) // CHARS_PER_TOKEN, 0, min_quality,
                     embeddings=True, context_tokens=_largest_input_tokens(exchange.payload["input"]))

    def native(self, endpoint: EndpointRuntime) -> bool:
        return True

    def translator(self, endpoint: EndpointRuntime, exchange: Exchange) -> EmbeddingsTranslator:
        return EmbeddingsTranslator(endpoint, exchange.payload)

    def interrupted(self, stream: StreamTranslator) -> bytes:
        return STREAM_INTERRUPTED
