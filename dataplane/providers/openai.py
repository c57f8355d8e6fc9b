"""OpenAI's own wire format (and the OpenAI-compatible family).

Requests and responses pass through unchanged except `model` (rewritten to
the endpoint's upstream id), so everything the caller sent — tools,
response_format, multimodal parts — reaches the provider as it was. Streams
are relayed byte for byte; the translator only watches for the usage chunk
and `[DONE]`, and asks the upstream for usage even when the caller did not,
dropping that extra chunk, so every request's tokens are counted.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from dataplane.codecs.sse import SseFramer, parse_frame
from dataplane.providers.base import ErrorClass, ProviderError, Usage
from dataplane.providers.errors import class_for_status, parse_retry_after

# `"usage":{`, not `"usage"`: with include_usage every chunk carries `"usage":null`, and
# parsing each of them cost ~15% of the streaming throughput (bench/RESULTS.md, issue 13).
# Compact JSON only (as OpenAI and the compatible servers write it): each marker is a scan of
# every block, and a spaced variant would be a fourth.
_MARKERS = (b'"usage":{', b'"error"', b"[DONE]")
_CONTEXT_CODES = {"context_length_exceeded", "string_above_max_length"}
_FILTER_CODES = {"content_filter", "content_policy_violation"}


def usage_from(data: Any) -> Usage:
    usage = data.get("usage") if isinstance(data, dict) else None
    if not isinstance(usage, dict):
        return Usage()
    details = usage.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else 0
    return Usage(
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
        cached_prompt_tokens=int(cached or 0),
    )


class OpenAIStream:
    """Relays OpenAI SSE unchanged, event by event, noting usage and [DONE]."""

    __slots__ = ("usage", "complete", "error", "_frames", "_drop_usage_chunk")

    def __init__(self, include_usage: bool) -> None:
        self.usage = Usage()
        self.complete = False
        self.error: ProviderError | None = None
        self._frames = SseFramer()   # CRLF and split frames from OpenAI-compatible servers
        self._drop_usage_chunk = not include_usage

    def feed(self, data: bytes) -> bytes:
        complete_events = self._frames.feed(data)
        if not complete_events:
            return b""
        # Only events that can carry usage, an error or the end need a look;
        # content deltas before the first of them pass without parsing.
        first = min(
            (at for at in (complete_events.find(marker) for marker in _MARKERS) if at >= 0), default=-1
        )
        if first < 0:
            return complete_events
        cut = complete_events.rfind(b"\n\n", 0, first)
        start = cut + 2 if cut >= 0 else 0
        return complete_events[:start] + self._inspect(complete_events[start:])

    def _inspect(self, events: bytes) -> bytes:
        out = []
        for event in events.split(b"\n\n"):
            if not event:
                continue
            if event.startswith(b"data: ") and b"\n" not in event:
                payload = event[6:]  # the usual one-line event, without the general parse
            else:
                parsed = parse_frame(event)
                payload = parsed.data if parsed is not None else b""  # b"": a comment (keep-alive)
            if payload == b"[DONE]":
                self.complete = True
            elif b'"usage":{' in payload or b'"error"' in payload:
                try:
                    data = orjson.loads(payload)
                except orjson.JSONDecodeError:
                    data = None
                if isinstance(data, dict):
                    if isinstance(data.get("error"), dict):
                        inner = data["error"]
                        self.error = ProviderError(ErrorClass.RETRYABLE, str(inner.get("message") or "stream error"),
                                                   code=inner.get("code"))
                    elif data.get("usage"):
                        self.usage = usage_from(data)
                        if self._drop_usage_chunk and data.get("choices") == []:
                            continue
            out.append(event)
            out.append(b"\n\n")
        return b"".join(out)

    def finish(self) -> bytes:
        rest = self._frames.finish()
        return self._inspect(rest) if rest else b""


class OpenAIAdapter:
    kind = "openai"
    supports_embeddings = True
    supports_completions = True

    def __init__(self, stream_options: bool = True) -> None:
        # False for services that reject `stream_options` (see presets).
        self._stream_options = stream_options

    def auth_headers(self, secret: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {secret}"} if secret else {}

    def chat_url(self, base_url: str, options: Mapping[str, str], upstream_model: str, stream: bool) -> str:
        return f"{base_url}/chat/completions"

    def embeddings_request(
        self, base_url: str, options: Mapping[str, str], payload: dict[str, Any], upstream_model: str
    ) -> tuple[str, bytes]:
        return f"{base_url}/embeddings", orjson.dumps({**payload, "model": upstream_model})

    def embeddings_response(
        self, body: bytes, model: str, payload: dict[str, Any] | None = None
    ) -> tuple[bytes, Usage]:
        return self.chat_response(body, model)

    def completions_url(self, base_url: str, options: Mapping[str, str], upstream_model: str) -> str:
        return f"{base_url}/completions"

    def completions_request(self, payload: dict[str, Any], upstream_model: str) -> bytes:
        """A native legacy completions body: the same stream_options rule as chat."""
        return self.chat_request(payload, upstream_model)

    def chat_request(self, payload: dict[str, Any], upstream_model: str) -> bytes:
        if payload.get("stream") is True and not self._stream_options:
            payload = {k: v for k, v in payload.items() if k != "stream_options"}
        elif payload.get("stream") is True:
            options = payload.get("stream_options") or {}
            if not options.get("include_usage"):
                # Asked for even when the caller did not, so every stream's tokens are counted.
                payload = {**payload, "stream_options": {**options, "include_usage": True}}
        # A new dict: the caller's payload is translated again if this attempt fails.
        return orjson.dumps({**payload, "model": upstream_model})

    def chat_response(self, body: bytes, model: str) -> tuple[bytes, Usage]:
        try:
            return body, usage_from(orjson.loads(body))
        except orjson.JSONDecodeError:
            return body, Usage()

    def chat_stream(self, model: str, include_usage: bool) -> OpenAIStream:
        return OpenAIStream(include_usage)

    def classify_error(self, status: int, headers: Mapping[str, str], body: bytes) -> ProviderError:
        message, code, param = f"HTTP {status}", None, None
        try:
            parsed = orjson.loads(body)
            inner = parsed.get("error") if isinstance(parsed, dict) else None
            if isinstance(inner, dict):
                message = str(inner.get("message") or message)
                code, param = inner.get("code"), inner.get("param")
        except orjson.JSONDecodeError:
            pass
        error_class = class_for_status(status)
        if code in _CONTEXT_CODES:
            error_class = ErrorClass.CONTEXT_LENGTH
        elif code in _FILTER_CODES:
            error_class = ErrorClass.CONTENT_FILTER
        return ProviderError(
            error_class,
            message,
            status=status,
            code=code if isinstance(code, str) else None,
            param=param if isinstance(param, str) else None,
            retry_after_s=parse_retry_after(headers) if status == 429 or status >= 500 else None,
        )
