"""Bedrock ConverseStream -> OpenAI chat chunks, and what the JSON path shares with it:
the stop-reason table, usage arithmetic, and the classification of Bedrock's exceptions,
which arrive both as HTTP errors and as in-stream exception messages.

ConverseStream answers in AWS's binary event-stream framing (length-prefixed messages with
headers and CRC32 checksums). botocore's own parser, `EventStreamBuffer`, decodes it — fed
the network's pieces as they come, it yields whole messages and checks both checksums — so
no framing code is written here. Each message's `:event-type` header names the event:

    messageStart        first chunk, delta {"role": "assistant", "content": ""}
    contentBlockStart   start.toolUse -> tool_calls delta (index, id, type, name, arguments "")
    contentBlockDelta   delta.text -> content; delta.toolUse.input -> tool_calls arguments
    contentBlockStop    a tool call that streamed no input -> arguments "{}"
    messageStop         stopReason -> empty delta with finish_reason
    metadata            usage (and latency) -> the usage chunk if asked for, then [DONE]

A message with `:message-type: exception` is an in-stream error (`:exception-type`
throttlingException, modelStreamErrorException, …): an OpenAI-style error event, no [DONE],
and `error` set, classified as its HTTP twin would be.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson
from botocore.eventstream import EventStreamBuffer, ParserError

from dataplane.errors import error_body
from dataplane.providers.anthropic_stream import usage_json
from dataplane.providers.base import ErrorClass, ProviderError, Usage
from dataplane.providers.errors import class_for_status

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
}
# In-stream exception types (lower camel case) and the HTTP status of their JSON-path twins.
_STREAM_EXCEPTIONS = {
    "throttlingException": 429,
    "serviceUnavailableException": 503,
    "internalServerException": 500,
    "modelStreamErrorException": 424,
    "modelTimeoutException": 408,
    "validationException": 400,
}
_DONE = b"data: [DONE]\n\n"

# Exception name -> what it means for failover. Names are Bedrock Runtime's (and the AWS
# auth layer's, which answers before Bedrock does).
_ERROR_CLASSES = {
    "ThrottlingException": ErrorClass.RATE_LIMITED,
    "ServiceQuotaExceededException": ErrorClass.RATE_LIMITED,
    "TooManyRequestsException": ErrorClass.RATE_LIMITED,
    "ModelTimeoutException": ErrorClass.TIMEOUT,
    "ServiceUnavailableException": ErrorClass.RETRYABLE,
    "InternalServerException": ErrorClass.RETRYABLE,
    "ModelErrorException": ErrorClass.RETRYABLE,
    "ModelNotReadyException": ErrorClass.RETRYABLE,
    "ModelStreamErrorException": ErrorClass.RETRYABLE,
    "AccessDeniedException": ErrorClass.ENDPOINT,
    "ResourceNotFoundException": ErrorClass.ENDPOINT,
    "UnrecognizedClientException": ErrorClass.ENDPOINT,
    "InvalidSignatureException": ErrorClass.ENDPOINT,
    "SignatureDoesNotMatch": ErrorClass.ENDPOINT,
    "ExpiredTokenException": ErrorClass.ENDPOINT,
    "IncompleteSignatureException": ErrorClass.ENDPOINT,
    "MissingAuthenticationTokenException": ErrorClass.ENDPOINT,
    "ValidationException": ErrorClass.INVALID_REQUEST,
}
# ValidationException messages that mean "does not fit this model" — a larger one may take it.
_CONTEXT_MARKERS = ("too long", "too many input tokens", "context length", "context window",
                    "maximum context", "prompt is too long")




def finish_reason(stop_reason: Any) -> str:
    return FINISH_REASONS.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def usage_of(usage: Any) -> Usage:
    """Converse `usage` -> Usage. Like Anthropic's, `inputTokens` leaves out what was read
    from or written to the prompt cache; OpenAI's prompt tokens include both."""
    if not isinstance(usage, dict):
        return Usage()
    cache_read = _count(usage.get("cacheReadInputTokens"))
    prompt = _count(usage.get("inputTokens")) + cache_read + _count(usage.get("cacheWriteInputTokens"))
    return Usage(prompt, _count(usage.get("outputTokens")), cache_read)


def classify(status: int, name: str, message: str) -> ErrorClass:
    if name == "ValidationException" and any(marker in message.lower() for marker in _CONTEXT_MARKERS):
        return ErrorClass.CONTEXT_LENGTH
    known = _ERROR_CLASSES.get(name)
    return known if known is not None else class_for_status(status)


def stream_exception(exception_type: str, payload: bytes) -> ProviderError:
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError:
        body = {}
    message = str(body.get("message") or body.get("Message") or exception_type) if isinstance(body, dict) \
        else exception_type
    name = exception_type[:1].upper() + exception_type[1:]
    status = _STREAM_EXCEPTIONS.get(exception_type, 500)
    return ProviderError(classify(status, name, message), message, status=status, code=name)


class BedrockStream:
    """Translates one ConverseStream response into OpenAI chunks, message by message."""

    __slots__ = ("usage", "complete", "error", "_model", "_include_usage", "_buffer", "_id", "_created",
                 "_tools", "_tools_with_arguments", "_finished", "_ended")

    def __init__(self, model: str, include_usage: bool) -> None:
        self.usage = Usage()
        self.complete = False
        self.error: ProviderError | None = None
        self._model = model
        self._include_usage = include_usage
        self._buffer = EventStreamBuffer()
        self._id = f"chatcmpl-{uuid.uuid4().hex}"
        self._created = int(time.time())
        self._tools: dict[int, int] = {}  # contentBlockIndex -> OpenAI tool_calls index
        self._tools_with_arguments: set[int] = set()
        self._finished = False  # the finish_reason chunk went out
        self._ended = False  # metadata or an exception seen: ignore anything after

    def feed(self, data: bytes) -> bytes:
        if self._ended:
            return b""
        self._buffer.add_data(data)
        out: list[bytes] = []
        try:
            for message in self._buffer:
                out.append(self._message(message.headers, message.payload))
                if self._ended:
                    break
        except ParserError as exc:  # a checksum or length that does not add up: the stream is broken
            self.error = ProviderError(ErrorClass.RETRYABLE, f"corrupt event stream from Bedrock ({exc})",
                                       status=502, code="eventstream")
            self._ended = True
            out.append(b"data: " + error_body(self.error.message, "server_error", None, "upstream_error") + b"\n\n")
        return b"".join(out)

    def finish(self) -> bytes:
        if not self._ended and self._finished:
            # The message ended but its metadata never came: close the answer cleanly, without usage.
            return self._end()
        return b""

    def _message(self, headers: dict[str, Any], payload: bytes) -> bytes:
        if headers.get(":message-type") == "exception":
            return self._exception(str(headers.get(":exception-type", "internalServerException")), payload)
        if headers.get(":message-type") not in (None, "event"):
            return b""
        try:
            event = orjson.loads(payload) if payload else {}
        except orjson.JSONDecodeError:
            return b""
        if not isinstance(event, dict):
            return b""
        handler = _HANDLERS.get(headers.get(":event-type"))
        return handler(self, event) if handler is not None else b""

    # --- one method per event type ---

    def _message_start(self, _event: dict[str, Any]) -> bytes:
        return self._chunk({"role": "assistant", "content": ""})

    def _block_start(self, event: dict[str, Any]) -> bytes:
        start = event.get("start") if isinstance(event.get("start"), dict) else {}
        use = start.get("toolUse")
        if not isinstance(use, dict):
            return b""
        tool = len(self._tools)
        self._tools[event.get("contentBlockIndex")] = tool
        call = {"index": tool, "id": use.get("toolUseId"), "type": "function",
                "function": {"name": use.get("name"), "arguments": ""}}
        return self._chunk({"tool_calls": [call]})

    def _block_delta(self, event: dict[str, Any]) -> bytes:
        delta = event.get("delta") if isinstance(event.get("delta"), dict) else {}
        if isinstance(delta.get("text"), str) and delta["text"]:
            return self._chunk({"content": delta["text"]})
        tool = self._tools.get(event.get("contentBlockIndex"))
        use = delta.get("toolUse")
        if tool is not None and isinstance(use, dict) and isinstance(use.get("input"), str) and use["input"]:
            self._tools_with_arguments.add(tool)
            return self._arguments(tool, use["input"])
        return b""  # reasoning content, citations: not part of an OpenAI answer

    def _block_stop(self, event: dict[str, Any]) -> bytes:
        tool = self._tools.get(event.get("contentBlockIndex"))
        if tool is None or tool in self._tools_with_arguments:
            return b""
        return self._arguments(tool, "{}")

    def _message_stop(self, event: dict[str, Any]) -> bytes:
        if self._finished:
            return b""
        self._finished = True
        return self._chunk({}, finish_reason(event.get("stopReason")))

    def _metadata(self, event: dict[str, Any]) -> bytes:
        self.usage = usage_of(event.get("usage"))
        prefix = b"" if self._finished else self._chunk({}, "stop")
        self._finished = True
        return prefix + self._end()

    def _exception(self, exception_type: str, payload: bytes) -> bytes:
        self.error = stream_exception(exception_type, payload)
        self._ended = True
        openai_type = ("invalid_request_error"
                       if self.error.error_class in (ErrorClass.INVALID_REQUEST, ErrorClass.CONTEXT_LENGTH)
                       else "server_error")
        return b"data: " + error_body(self.error.message, openai_type, None, self.error.code) + b"\n\n"

    # --- helpers ---

    def _end(self) -> bytes:
        out = []
        if self._include_usage:
            chunk = {"id": self._id, "object": "chat.completion.chunk", "created": self._created,
                     "model": self._model, "choices": [], "usage": usage_json(self.usage)}
            out.append(b"data: " + orjson.dumps(chunk) + b"\n\n")
        out.append(_DONE)
        self.complete = self._ended = True
        return b"".join(out)

    def _arguments(self, tool: int, text: str) -> bytes:
        return self._chunk({"tool_calls": [{"index": tool, "function": {"arguments": text}}]})

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        chunk: dict[str, Any] = {
            "id": self._id, "object": "chat.completion.chunk", "created": self._created, "model": self._model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        if self._include_usage:
            chunk["usage"] = None
        return b"data: " + orjson.dumps(chunk) + b"\n\n"


_HANDLERS = {
    "messageStart": BedrockStream._message_start,
    "contentBlockStart": BedrockStream._block_start,
    "contentBlockDelta": BedrockStream._block_delta,
    "contentBlockStop": BedrockStream._block_stop,
    "messageStop": BedrockStream._message_stop,
    "metadata": BedrockStream._metadata,
}
