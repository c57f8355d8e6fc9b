"""The interface every provider adapter implements, and its shared types.

An adapter translates between OpenAI's chat-completions shape (what clients
send and receive) and one provider's wire format, in both directions:

    chat_request    OpenAI request dict      -> provider request body
    chat_response   provider response body   -> OpenAI response body + usage
    chat_stream     a StreamTranslator: provider stream bytes -> OpenAI SSE bytes
    classify_error  provider error response  -> ProviderError (class + message)

Adapters are stateless and shared by all requests; a StreamTranslator holds
the state of one stream.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol


class ErrorClass(StrEnum):
    """What a failed attempt means for the retry loop.

    RETRYABLE       provider-side failure (5xx, 529 overloaded, connection
                    reset): try the next candidate
    TIMEOUT         no answer in time: try the next candidate
    RATE_LIMITED    429: try the next candidate; `retry_after_s` if given
    ENDPOINT        401/403/404 from the provider: the endpoint is
                    misconfigured (credential, upstream model id) — not the
                    caller's fault, so try the next candidate
    CONTEXT_LENGTH  the prompt does not fit this model: a larger one may do
    INVALID_REQUEST the caller's request is wrong: never retried
    CONTENT_FILTER  the provider refused the content: never retried
    """

    RETRYABLE = "retryable"
    TIMEOUT = "timeout"
    RATE_LIMITED = "rate_limited"
    ENDPOINT = "endpoint"
    CONTEXT_LENGTH = "context_length"
    INVALID_REQUEST = "invalid_request"
    CONTENT_FILTER = "content_filter"


# Classes whose failure is about this endpoint, so another candidate may work.
FAILOVER_CLASSES = frozenset(
    {ErrorClass.RETRYABLE, ErrorClass.TIMEOUT, ErrorClass.RATE_LIMITED, ErrorClass.ENDPOINT, ErrorClass.CONTEXT_LENGTH}
)


@dataclass
class ProviderError(Exception):
    """One failed attempt, classified. `message` is safe to show a client."""

    error_class: ErrorClass
    message: str
    status: int = 0                  # the provider's HTTP status; 0 if it never answered
    code: str | None = None
    param: str | None = None
    retry_after_s: float | None = None
    endpoint: str = ""

    def __str__(self) -> str:
        where = f"endpoint {self.endpoint!r}: " if self.endpoint else ""
        return f"{where}{self.message}"


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0


class StreamTranslator(Protocol):
    """Translates one upstream stream into OpenAI SSE bytes, incrementally.

    `feed` gets raw upstream bytes in whatever pieces the network delivers
    and returns the bytes to send to the client now (possibly b"").
    `finish` is called at upstream EOF and returns any final bytes. Afterwards
    `complete` says whether the upstream ended properly (e.g. `[DONE]`,
    `message_stop`); `error` holds an upstream error event, if one came.
    """

    usage: Usage
    complete: bool
    error: ProviderError | None

    def feed(self, data: bytes) -> bytes: ...

    def finish(self) -> bytes: ...


class RequestSigner(Protocol):
    """Authentication computed from each request (AWS SigV4 covers the URL, the body and the
    time): `headers_for` gives the headers one request needs; `after_failure` sees each failed
    answer, so credentials the provider refused are resolved afresh and the message says where
    they came from."""

    async def headers_for(self, method: str, url: str, body: bytes, headers: Mapping[str, str]) -> dict[str, str]:
        ...

    def after_failure(self, failure: ProviderError) -> None: ...


class Adapter(Protocol):
    kind: str
    supports_embeddings: bool
    # Has a native legacy completions API; otherwise /v1/completions is
    # translated through chat.
    supports_completions: bool

    def auth_headers(self, secret: str | None) -> dict[str, str]:
        """Headers that authenticate to the provider (empty without a secret)."""
        ...

    def chat_url(self, base_url: str, options: Mapping[str, str], upstream_model: str, stream: bool) -> str:
        """Where a chat request for `upstream_model` is sent.

        `options` are the provider's adapter-specific settings (e.g. Azure's
        api_version); `base_url` has no trailing slash.
        """
        ...

    def chat_request(self, payload: dict[str, Any], upstream_model: str) -> bytes:
        """The provider's request body for an OpenAI chat request.

        Raises ApiError (400, naming the field) for what the provider cannot
        express. May read but must not keep `payload`.
        """
        ...

    def chat_response(self, body: bytes, model: str) -> tuple[bytes, Usage]:
        """The OpenAI chat.completion body for a provider's 200 response."""
        ...

    def chat_stream(self, model: str, include_usage: bool) -> StreamTranslator:
        """A translator for one streamed response."""
        ...

    def classify_error(self, status: int, headers: Mapping[str, str], body: bytes) -> ProviderError:
        """A provider's non-200 answer, classified."""
        ...

    def embeddings_request(
        self, base_url: str, options: Mapping[str, str], payload: dict[str, Any], upstream_model: str
    ) -> tuple[str, bytes]:
        """URL and body for an OpenAI embeddings request (`supports_embeddings` only)."""
        ...

    def embeddings_response(
        self, body: bytes, model: str, payload: dict[str, Any] | None = None
    ) -> tuple[bytes, Usage]:
        """The OpenAI embeddings list body for a provider's 200 response.

        `payload` is the caller's request, for providers that do not report
        token counts (usage is then estimated from the input).
        """
        ...

    def completions_url(self, base_url: str, options: Mapping[str, str], upstream_model: str) -> str:
        """Where a native legacy completions request goes (`supports_completions` only)."""
        ...
