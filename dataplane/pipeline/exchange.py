"""What one request carries through the pipeline, and what an API supplies to it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web

from dataplane.errors import ApiError, ErrorFormat
from dataplane.providers.base import StreamTranslator
from dataplane.routing.controls import Controls
from dataplane.routing.needs import Needs, body_needs, chat_needs
from dataplane.table import EndpointRuntime, KeyInfo, RuntimeTable, Target
from dataplane.translate.base import Translator
from dataplane.usage import UsageAccount


@dataclass(slots=True)
class Exchange:
    """One client request: filled in stage by stage, never shared between requests.
    `payload` is the client's body exactly as parsed; nothing writes to it."""

    request: web.Request
    table: RuntimeTable
    key: KeyInfo
    payload: dict[str, Any]
    task: str                          # what budgets and usage count it under
    account: UsageAccount
    stream: bool = False
    # The request as an OpenAI chat request, for operations that can be served through chat
    # (None for embeddings). The router's needs and the complexity estimate read it.
    chat: dict[str, Any] | None = None
    # Why this request cannot be served through chat (a field chat cannot express): only the
    # endpoints that speak the API natively are tried, and with none the request gets this error.
    chat_refusal: ApiError | None = None
    controls: Controls | None = None
    target: Target | None = None
    strategy: str = ""
    needs: Needs | None = None
    request_id: str = ""
    # For the request log: each failed attempt's (endpoint, error class), and what served.
    attempt_failures: list[tuple[str, str]] = field(default_factory=list)
    served_by: EndpointRuntime | None = None

    def chat_view_needs(self, min_quality: int, output_tokens: int = 0) -> Needs:
        """What a model needs for this request, read from its chat view — or sized by its body
        when it has none, `output_tokens` being what the request allows."""
        body_size = self.request.get("body_size", 0)
        if self.chat is not None:
            return chat_needs(self.chat, min_quality, body_size)
        return body_needs(body_size, self.stream, output_tokens, min_quality)


class Operation(Protocol):
    """One API over the pipeline's stages."""

    api: str                 # "chat", "completions", "embeddings", "responses", "messages"
    errors: ErrorFormat      # the shape its errors leave in
    embeddings: bool         # served by embeddings models (else by chat models)
    cascades: bool           # may run the cost strategy's cascade (needs a chat answer to judge)

    def prepare(self, exchange: Exchange) -> None:
        """Validate `exchange.payload` (400 naming the field) and set `stream`, `chat`."""

    def needs(self, exchange: Exchange, min_quality: int) -> Needs:
        """What a model must have to serve the request."""

    def native(self, endpoint: EndpointRuntime) -> bool:
        """`endpoint` speaks this API itself (no translation through chat)."""

    def translator(self, endpoint: EndpointRuntime, exchange: Exchange) -> Translator:
        """How `endpoint` serves the request."""

    def interrupted(self, stream: StreamTranslator) -> bytes:
        """The stream events that end a stream whose upstream broke, in this API's shape;
        `stream` is the translator that was relaying it."""
