"""Anthropic answers -> OpenAI: the streamed path, and what it shares with the JSON path.

Shared with `anthropic.py`: the `stop_reason` -> `finish_reason` table, usage
arithmetic (Anthropic's `input_tokens` excludes cached tokens, OpenAI's
`prompt_tokens` includes them), and the classification of Anthropic error
types, which arrive both as HTTP errors and as mid-stream `error` events.

`AnthropicStream` turns Anthropic's SSE (`event: <type>` / `data: <json>`,
blank line between events) into OpenAI `chat.completion.chunk` events:

    message_start        first chunk, delta {"role": "assistant", "content": ""}
    content_block_start  tool_use -> tool_calls delta (index, id, type, name, arguments "")
    content_block_delta  text_delta -> content; input_json_delta -> tool_calls arguments
    content_block_stop   tool_use that streamed no arguments -> arguments "{}" (what the
                         JSON path reports for an empty input), else nothing
    message_delta        stop_reason -> empty delta with finish_reason; output usage
    message_stop         usage chunk (choices: []) if asked for, then `data: [DONE]`
    error                OpenAI-style error event; no [DONE]; `error` set
    ping, thinking and signature deltas, server-tool blocks: nothing

Framing is the shared SSE decoder's (`dataplane/codecs/sse.py`): network pieces
may split lines, `\\r\\n` pairs and UTF-8 sequences anywhere.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson

from dataplane.codecs.sse import SseDecoder
from dataplane.errors import error_body
from dataplane.providers.base import ErrorClass, ProviderError, Usage
from dataplane.providers.errors import class_for_status

# --- shared with the JSON path -------------------------------------------------

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",  # the answer was cut off, as with max_tokens
    "tool_use": "tool_calls",
    "refusal": "content_filter",
    # A server-tool loop hit its iteration limit. OpenAI has no "paused"; the
    # answer so far is complete text, and "stop" is what clients handle.
    "pause_turn": "stop",
}

# Anthropic's documented error types and the HTTP status each comes with; a
# mid-stream `error` event carries only the type.
_TYPE_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}
_TYPE_CLASSES = {
    "invalid_request_error": ErrorClass.INVALID_REQUEST,
    "request_too_large": ErrorClass.INVALID_REQUEST,
    "authentication_error": ErrorClass.ENDPOINT,
    "permission_error": ErrorClass.ENDPOINT,
    "not_found_error": ErrorClass.ENDPOINT,
    "billing_error": ErrorClass.ENDPOINT,  # the endpoint's account, not the caller's request
    "rate_limit_error": ErrorClass.RATE_LIMITED,
    "api_error": ErrorClass.RETRYABLE,
    "timeout_error": ErrorClass.RETRYABLE,
    "overloaded_error": ErrorClass.RETRYABLE,
}
# `invalid_request_error` messages that mean "too long for this model"
# ("prompt is too long: 208656 tokens > 200000 maximum", "input length and
# `max_tokens` exceed context limit: ...") — a larger model may take them.
_CONTEXT_MARKERS = ("prompt is too long", "exceed context limit", "context window")
# ... and ones about the endpoint's account ("Your credit balance is too low to
# access the Anthropic API", "You have reached your specified API usage limits"),
# which another endpoint may not share.
_ACCOUNT_MARKERS = ("credit balance", "usage limits")


def finish_reason(stop_reason: Any) -> str:
    return FINISH_REASONS.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def usage_of(usage: Any) -> Usage:
    """Anthropic `usage` -> Usage; prompt tokens include cache writes and reads."""
    if not isinstance(usage, dict):
        return Usage()
    cache_read = _count(usage.get("cache_read_input_tokens"))
    prompt = _count(usage.get("input_tokens")) + _count(usage.get("cache_creation_input_tokens")) + cache_read
    return Usage(prompt, _count(usage.get("output_tokens")), cache_read)


def usage_json(usage: Usage) -> dict[str, Any]:
    """The OpenAI `usage` object."""
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_prompt_tokens},
    }


def error_class(status: int, error_type: str | None, message: str) -> ErrorClass:
    if error_type == "invalid_request_error":
        lowered = message.lower()
        if any(marker in lowered for marker in _CONTEXT_MARKERS):
            return ErrorClass.CONTEXT_LENGTH
        if any(marker in lowered for marker in _ACCOUNT_MARKERS):
            return ErrorClass.ENDPOINT
    known = _TYPE_CLASSES.get(error_type or "")
    return known if known is not None else class_for_status(status)


def stream_error(error: Any) -> ProviderError:
    """A mid-stream `error` event's `error` object, classified as its HTTP twin would be."""
    error = error if isinstance(error, dict) else {}
    error_type = error.get("type") if isinstance(error.get("type"), str) else None
    message = str(error.get("message") or error_type or "stream error")
    # The stream began with 200; report the status the error type stands for
    # (529 for overloaded_error), so nothing mistakes it for a success.
    status = _TYPE_STATUS.get(error_type or "", 500)
    return ProviderError(error_class(status, error_type, message), message, status=status, code=error_type)


# --- the stream translator -----------------------------------------------------

_DONE = b"data: [DONE]\n\n"


class AnthropicStream:
    """Translates one Anthropic Messages stream into OpenAI chunks, event by event."""

    __slots__ = (
        "usage", "complete", "error", "_model", "_include_usage", "_events", "_id", "_created",
        "_raw_usage", "_tools", "_tools_with_arguments", "_finished", "_ended",
    )

    def __init__(self, model: str, include_usage: bool) -> None:
        self.usage = Usage()
        self.complete = False
        self.error: ProviderError | None = None
        self._model = model
        self._include_usage = include_usage
        self._events = SseDecoder()
        self._id = "chatcmpl-"
        self._created = int(time.time())
        self._raw_usage: dict[str, int] = {}
        self._tools: dict[int, int] = {}  # Anthropic block index -> OpenAI tool_calls index
        self._tools_with_arguments: set[int] = set()
        self._finished = False  # the finish_reason chunk went out
        self._ended = False  # message_stop or error seen: ignore anything after

    def feed(self, data: bytes) -> bytes:
        return b"".join(self._event(event.data) for event in self._events.feed(data))

    def finish(self) -> bytes:
        # An event not followed by a blank line before EOF still counts.
        return b"".join(self._event(event.data) for event in self._events.finish())

    def _event(self, data: bytes) -> bytes:
        if self._ended or not data:
            return b""
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            return b""  # not Anthropic's; a broken stream shows as incomplete anyway
        if not isinstance(event, dict):
            return b""
        handler = _HANDLERS.get(event.get("type"))
        return handler(self, event) if handler is not None else b""

    # --- one method per Anthropic event type ---

    def _message_start(self, event: dict[str, Any]) -> bytes:
        message = event.get("message") if isinstance(event.get("message"), dict) else {}
        self._id = f"chatcmpl-{message.get('id') or ''}"
        self._take_usage(message.get("usage"))
        return self._chunk({"role": "assistant", "content": ""})

    def _content_block_start(self, event: dict[str, Any]) -> bytes:
        block = event.get("content_block") if isinstance(event.get("content_block"), dict) else {}
        if block.get("type") == "text" and block.get("text"):
            return self._chunk({"content": block["text"]})
        if block.get("type") != "tool_use":
            return b""  # thinking, redacted_thinking, server tools: not part of an OpenAI answer
        tool = len(self._tools)
        self._tools[event.get("index")] = tool
        call = {"index": tool, "id": block.get("id"), "type": "function",
                "function": {"name": block.get("name"), "arguments": ""}}
        return self._chunk({"tool_calls": [call]})

    def _content_block_delta(self, event: dict[str, Any]) -> bytes:
        delta = event.get("delta") if isinstance(event.get("delta"), dict) else {}
        if delta.get("type") == "text_delta" and delta.get("text"):
            return self._chunk({"content": delta["text"]})
        tool = self._tools.get(event.get("index"))
        if delta.get("type") == "input_json_delta" and tool is not None and delta.get("partial_json"):
            self._tools_with_arguments.add(tool)
            return self._arguments(tool, delta["partial_json"])
        return b""

    def _content_block_stop(self, event: dict[str, Any]) -> bytes:
        tool = self._tools.get(event.get("index"))
        if tool is None or tool in self._tools_with_arguments:
            return b""
        # A tool without input streams no JSON at all; clients parse arguments.
        return self._arguments(tool, "{}")

    def _message_delta(self, event: dict[str, Any]) -> bytes:
        self._take_usage(event.get("usage"))
        delta = event.get("delta") if isinstance(event.get("delta"), dict) else {}
        if not delta.get("stop_reason") or self._finished:
            return b""
        self._finished = True
        return self._chunk({}, finish_reason(delta["stop_reason"]))

    def _message_stop(self, _event: dict[str, Any]) -> bytes:
        out = [] if self._finished else [self._chunk({}, "stop")]
        if self._include_usage:
            chunk = {"id": self._id, "object": "chat.completion.chunk", "created": self._created,
                     "model": self._model, "choices": [], "usage": usage_json(self.usage)}
            out.append(b"data: " + orjson.dumps(chunk) + b"\n\n")
        out.append(_DONE)
        self.complete = self._ended = True
        return b"".join(out)

    def _error(self, event: dict[str, Any]) -> bytes:
        self.error = stream_error(event.get("error"))
        self._ended = True
        openai_type = (
            "invalid_request_error"
            if self.error.error_class in (ErrorClass.INVALID_REQUEST, ErrorClass.CONTEXT_LENGTH)
            else "server_error"
        )
        return b"data: " + error_body(self.error.message, openai_type, None, self.error.code) + b"\n\n"

    # --- helpers ---

    def _take_usage(self, usage: Any) -> None:
        # message_delta's counts are cumulative and may repeat the input ones.
        if isinstance(usage, dict):
            self._raw_usage.update({k: v for k, v in usage.items() if isinstance(v, int)})
            self.usage = usage_of(self._raw_usage)

    def _arguments(self, tool: int, text: str) -> bytes:
        return self._chunk({"tool_calls": [{"index": tool, "function": {"arguments": text}}]})

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        chunk: dict[str, Any] = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        if self._include_usage:
            chunk["usage"] = None  # as OpenAI does when the caller asked for usage
        return b"data: " + orjson.dumps(chunk) + b"\n\n"


_HANDLERS: dict[Any, Callable[[AnthropicStream, dict[str, Any]], bytes]] = {
    "message_start": AnthropicStream._message_start,
    "content_block_start": AnthropicStream._content_block_start,
    "content_block_delta": AnthropicStream._content_block_delta,
    "content_block_stop": AnthropicStream._content_block_stop,
    "message_delta": AnthropicStream._message_delta,
    "message_stop": AnthropicStream._message_stop,
    "error": AnthropicStream._error,
}
