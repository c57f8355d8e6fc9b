"""The one interface between an input API and a backend: `Translator`.

A translator is made for one request and one endpoint — (input API ×
backend) — and answers four questions the pipeline asks:

    request()                  -> UpstreamRequest: url, extra headers, body
    response(raw)              -> (client body, usage) for a 200 JSON answer
    stream()                   -> a StreamTranslator: upstream SSE -> client SSE
    error(status, headers, b)  -> ProviderError: the backend's refusal, classified

The rule every translator keeps (tested for every pair in
tests/translate/test_contract.py): it never mutates the client's payload. A
retry on the next endpoint translates the same payload again, so a field
rewritten for the first backend must not leak into the second.

Pairs that share a wire format pass through (chat × OpenAI, messages ×
Anthropic, native legacy completions); the others go through the canonical
OpenAI chat shape, which every provider adapter speaks: an input codec
(`responses_chat`, `messages_chat`, `completions_chat`) composed with the
endpoint's adapter (`ViaChat`). That keeps N input APIs × M backends at
N codecs + M adapters rather than N×M files, and a new backend serves every
input API the day its adapter lands.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from dataplane.providers.base import ProviderError, StreamTranslator, Usage
from dataplane.table import EndpointRuntime


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    url: str
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)   # added to the provider's own (auth, version)


class Translator(Protocol):
    endpoint: EndpointRuntime

    def request(self) -> UpstreamRequest: ...

    def response(self, raw: bytes) -> tuple[bytes, Usage]: ...

    def stream(self) -> StreamTranslator: ...

    def error(self, status: int, headers: Mapping[str, str], body: bytes) -> ProviderError: ...


class ChatStreamWrapper:
    """Base of the stream translators that re-emit a chat stream in another API's shape: the
    upstream's usage, completeness and error are the wrapped (chat) translator's."""

    __slots__ = ("_inner",)

    def __init__(self, inner: StreamTranslator) -> None:
        self._inner = inner

    @property
    def usage(self) -> Usage:
        return self._inner.usage

    @property
    def complete(self) -> bool:
        return self._inner.complete

    @property
    def error(self) -> ProviderError | None:
        return self._inner.error


class EndpointTranslator:
    """Base of the translators for one request to one endpoint: the client's payload (read,
    never written), whether it streams, and the backend's error classification — which is the
    endpoint's adapter's whatever API the client speaks, since the error is the backend's."""

    __slots__ = ("endpoint", "_payload", "_streaming")

    def __init__(self, endpoint: EndpointRuntime, payload: dict[str, Any], stream: bool = False) -> None:
        self.endpoint = endpoint
        self._payload = payload
        self._streaming = stream

    def error(self, status: int, headers: Mapping[str, str], body: bytes) -> ProviderError:
        return self.endpoint.provider.adapter.classify_error(status, headers, body)


class ChatTranslator(EndpointTranslator):
    """An OpenAI chat request × the endpoint's provider adapter."""

    __slots__ = ()

    def request(self) -> UpstreamRequest:
        endpoint = self.endpoint
        body = endpoint.provider.adapter.chat_request(self._payload, endpoint.upstream_model)
        return UpstreamRequest(endpoint.chat_stream_url if self._streaming else endpoint.chat_url, body)

    def response(self, raw: bytes) -> tuple[bytes, Usage]:
        return self.endpoint.provider.adapter.chat_response(raw, self.endpoint.model)

    def stream(self) -> StreamTranslator:
        include_usage = bool((self._payload.get("stream_options") or {}).get("include_usage"))
        return self.endpoint.provider.adapter.chat_stream(self.endpoint.model, include_usage)


class ViaChat:
    """Another input API served through chat: its request already translated to a chat
    request (`chat`), the chat answer translated back by `to_client` (JSON) and
    `wrap_stream` (SSE)."""

    __slots__ = ("endpoint", "_chat", "_to_client", "_wrap_stream")

    def __init__(self, endpoint: EndpointRuntime, chat: dict[str, Any], stream: bool,
                 to_client: Callable[[dict[str, Any], str], dict[str, Any]],
                 wrap_stream: Callable[[StreamTranslator, str], StreamTranslator]) -> None:
        self.endpoint = endpoint
        self._chat = ChatTranslator(endpoint, chat, stream)
        self._to_client = to_client
        self._wrap_stream = wrap_stream

    def request(self) -> UpstreamRequest:
        return self._chat.request()

    def response(self, raw: bytes) -> tuple[bytes, Usage]:
        body, usage = self._chat.response(raw)
        return orjson.dumps(self._to_client(orjson.loads(body), self.endpoint.model)), usage

    def stream(self) -> StreamTranslator:
        return self._wrap_stream(self._chat.stream(), self.endpoint.model)

    def error(self, status: int, headers: Mapping[str, str], body: bytes) -> ProviderError:
        return self._chat.error(status, headers, body)
