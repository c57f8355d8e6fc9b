"""The Responses API × an OpenAI endpoint that serves it natively (`options: {responses_api: native}`).

The body passes through with `model` rewritten and `store` forced to `false`:
zero data retention holds at the provider too, not only in the gateway (the
Responses API stores every response unless told not to). The stream is
relayed frame for frame; `ResponsesPassthroughStream` reads only the frames
that end it — `response.completed` / `response.incomplete` (usage, the end),
`response.failed` and `error` — so text deltas pass unparsed.
"""

from __future__ import annotations

from typing import Any

import orjson

from dataplane.codecs.sse import SseFramer, parse_frame
from dataplane.providers.base import ErrorClass, ProviderError, Usage
from dataplane.table import EndpointRuntime
from dataplane.translate.base import EndpointTranslator, UpstreamRequest

# The frames a pass-through relay must read; everything else is relayed unread.
_MARKERS = (b"response.completed", b"response.incomplete", b"response.failed", b'"type":"error"',
            b"event: error")
_ERROR_CLASSES = {"rate_limit_exceeded": ErrorClass.RATE_LIMITED, "server_error": ErrorClass.RETRYABLE}


def responses_usage(response: Any) -> Usage:
    """A Responses `usage` object (inside `response`) as Usage; zeros when absent."""
    usage = response.get("usage") if isinstance(response, dict) else None
    if not isinstance(usage, dict):
        return Usage()
    details = usage.get("input_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else 0
    return Usage(int(usage.get("input_tokens") or 0), int(usage.get("output_tokens") or 0), int(cached or 0))


def native_responses(endpoint: EndpointRuntime) -> bool:
    provider = endpoint.provider
    return provider.kind == "openai" and provider.options.get("responses_api") == "native"


class NativeResponses(EndpointTranslator):
    __slots__ = ()

    def request(self) -> UpstreamRequest:
        endpoint = self.endpoint
        body = orjson.dumps({**self._payload, "model": endpoint.upstream_model, "store": False})
        return UpstreamRequest(endpoint.provider.base_url + "/responses", body)

    def response(self, raw: bytes) -> tuple[bytes, Usage]:
        try:
            return raw, responses_usage(orjson.loads(raw))
        except orjson.JSONDecodeError:
            return raw, Usage()

    def stream(self) -> ResponsesPassthroughStream:
        return ResponsesPassthroughStream()


class ResponsesPassthroughStream:
    __slots__ = ("usage", "complete", "error", "_frames")

    def __init__(self) -> None:
        self.usage = Usage()
        self.complete = False
        self.error: ProviderError | None = None
        self._frames = SseFramer()

    def feed(self, data: bytes) -> bytes:
        return self._watch(self._frames.feed(data))

    def finish(self) -> bytes:
        return self._watch(self._frames.finish())

    def _watch(self, frames: bytes) -> bytes:
        if frames and any(marker in frames for marker in _MARKERS):
            for frame in frames.split(b"\n\n"):
                if frame and any(marker in frame for marker in _MARKERS):
                    self._read(frame)
        return frames

    def _read(self, frame: bytes) -> None:
        event = parse_frame(frame)
        try:
            data = orjson.loads(event.data) if event is not None else None
        except orjson.JSONDecodeError:
            return
        if not isinstance(data, dict):
            return
        kind = data.get("type")
        if kind in ("response.completed", "response.incomplete"):
            self.usage = responses_usage(data.get("response"))
            self.complete = True
        elif kind in ("response.failed", "error") and self.error is None:
            failure = data.get("error") or (data.get("response") or {}).get("error") or data
            failure = failure if isinstance(failure, dict) else {}
            code = failure.get("code") if isinstance(failure.get("code"), str) else None
            self.error = ProviderError(_ERROR_CLASSES.get(code or "", ErrorClass.RETRYABLE),
                                       str(failure.get("message") or "stream error"), code=code)
