"""Gemini -> OpenAI on the response side: the SSE stream translator, and the
pieces (finish reasons, usage, tool calls) that `gemini.py` shares with it.

`streamGenerateContent?alt=sse` sends `data: <GenerateContentResponse>` events
separated by blank lines (`\\r\\n\\r\\n` on the wire). Each event is a whole
response object carrying only the *new* parts; the event with a candidate's
`finishReason` usually carries the final `usageMetadata` too. There is no
terminal marker: the stream just ends.

Translated:
  text parts              -> `delta.content` (parts with `thought: true` are
                             dropped: the chat shape has no place for them)
  functionCall parts      -> one complete `tool_calls` delta each (Gemini sends
                             calls whole, never as argument fragments)
  finishReason            -> a chunk with an empty delta and the mapped reason
  usageMetadata           -> `usage` (latest wins); the usage chunk at the end
                             when the caller asked for it
  promptFeedback.blockReason without candidates -> finish `content_filter`
  {"error": {...}}        -> an OpenAI-style error event; `error` is set
  candidate `index`       -> choice `index` (n > 1 streams work)

Not translated: safetyRatings, citationMetadata, groundingMetadata, logprobs,
executableCode / codeExecutionResult and inline media in the output.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import orjson

from dataplane.codecs.sse import SseDecoder
from dataplane.errors import error_body
from dataplane.providers.base import ErrorClass, ProviderError, Usage

# Finish reasons meaning the provider's filters stopped the answer.
_FILTERED = frozenset(
    {"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII",
     "IMAGE_SAFETY", "IMAGE_PROHIBITED_CONTENT", "IMAGE_RECITATION"}
)
_DONE = b"data: [DONE]\n\n"


def finish_reason(reason: Any, has_tool_calls: bool) -> str:
    """OpenAI's finish_reason for a Gemini `finishReason`.

    Filter reasons -> content_filter, MAX_TOKENS -> length; everything else
    (STOP, OTHER, LANGUAGE, MALFORMED_FUNCTION_CALL, unknown future values)
    ends the answer normally: "tool_calls" when the candidate called
    functions, since the client must act on them, else "stop".
    """
    if reason in _FILTERED:
        return "content_filter"
    if reason == "MAX_TOKENS":
        return "length"
    return "tool_calls" if has_tool_calls else "stop"


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def usage_from_metadata(meta: Any) -> Usage:
    """Usage from `usageMetadata`. Thought tokens are billed as output, so
    they count as completion tokens; `promptTokenCount` already includes the
    cached part, as OpenAI's `prompt_tokens` does."""
    if not isinstance(meta, dict):
        return Usage()
    return Usage(
        prompt_tokens=_count(meta.get("promptTokenCount")),
        completion_tokens=_count(meta.get("candidatesTokenCount")) + _count(meta.get("thoughtsTokenCount")),
        cached_prompt_tokens=_count(meta.get("cachedContentTokenCount")),
    )


def openai_usage(meta: Any) -> dict[str, Any]:
    usage = usage_from_metadata(meta)
    thoughts = _count(meta.get("thoughtsTokenCount")) if isinstance(meta, dict) else 0
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_prompt_tokens},
        "completion_tokens_details": {"reasoning_tokens": thoughts},
    }


def new_id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:24]


def response_id(event: dict[str, Any]) -> str:
    rid = event.get("responseId")
    return f"chatcmpl-{rid}" if isinstance(rid, str) and rid else new_id("chatcmpl-")


def read_parts(candidate: dict[str, Any]) -> tuple[list[str], list[dict[str, Any]]]:
    """A candidate's answer text pieces and its tool calls, in order."""
    content = candidate.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for part in parts if isinstance(parts, list) else ():
        if not isinstance(part, dict) or part.get("thought") is True:
            continue
        call = part.get("functionCall")
        if isinstance(call, dict):
            calls.append(tool_call(call, part.get("thoughtSignature")))
        elif isinstance(part.get("text"), str):
            texts.append(part["text"])
    return texts, calls


def tool_call(call: dict[str, Any], signature: Any) -> dict[str, Any]:
    """An OpenAI tool call for a Gemini functionCall.

    Gemini has no call ids, so each call gets a fresh `call_...` id. Its
    thought signature (Gemini 3 rejects a replayed call without one) travels
    in `extra_content.google.thought_signature`, the field Google's own
    OpenAI-compatible endpoint uses; clients that send the assistant message
    back unchanged return it, and `gemini.py` puts it back on the part.
    """
    args = call.get("args")
    out: dict[str, Any] = {
        "id": new_id("call_"),
        "type": "function",
        "function": {
            "name": str(call.get("name") or ""),
            "arguments": orjson.dumps(args if isinstance(args, dict) else {}).decode(),
        },
    }
    if isinstance(signature, str) and signature:
        out["extra_content"] = {"google": {"thought_signature": signature}}
    return out


class GeminiStream:
    """Translates one Gemini SSE stream into OpenAI chat.completion.chunk events."""

    __slots__ = (
        "usage", "complete", "error", "_model", "_include_usage", "_classify", "_events",
        "_id", "_created", "_started", "_finished", "_calls", "_meta",
    )

    def __init__(
        self, model: str, include_usage: bool, classify: Callable[[dict[str, Any]], ProviderError]
    ) -> None:
        self.usage = Usage()
        self.complete = False
        self.error: ProviderError | None = None
        self._model = model
        self._include_usage = include_usage
        self._classify = classify          # a Google error object -> ProviderError
        self._events = SseDecoder()
        self._id = ""
        self._created = int(time.time())
        self._started: set[int] = set()    # choice indexes that had their role chunk
        self._finished: set[int] = set()   # choice indexes that had their finish chunk
        self._calls: dict[int, int] = {}   # choice index -> tool calls sent so far
        self._meta: Any = None             # latest usageMetadata

    # -- SSE framing -------------------------------------------------------

    def feed(self, data: bytes) -> bytes:
        out: list[bytes] = []
        for event in self._events.feed(data):
            if self.error is not None:
                break
            if event.data:
                self._event(event.data, out, at_eof=False)
        return b"".join(out)

    def finish(self) -> bytes:
        out: list[bytes] = []
        if self.error is None:
            # An event not closed by a blank line before EOF still counts if it
            # is whole JSON; a half-received one is dropped (the stream is then
            # incomplete unless a finishReason already came).
            for event in self._events.finish():
                if event.data and self.error is None:
                    self._event(event.data, out, at_eof=True)
        if self.error is None and self._started and self._started <= self._finished:
            if self._include_usage:
                chunk = self._base(choices=[])
                chunk["usage"] = openai_usage(self._meta)
                out.append(b"data: " + orjson.dumps(chunk) + b"\n\n")
            out.append(_DONE)
            self.complete = True
        return b"".join(out)

    # -- events ------------------------------------------------------------

    def _event(self, payload: bytes, out: list[bytes], at_eof: bool) -> None:
        try:
            event = orjson.loads(payload)
        except orjson.JSONDecodeError:
            if not at_eof:  # a whole event that is not JSON: the stream is corrupt
                self._fail({"message": "Gemini sent a malformed stream event", "status": "INTERNAL"}, out)
            return
        for item in event if isinstance(event, list) else [event]:  # tolerate JSON-array framing
            if isinstance(item, dict) and self.error is None:
                self._response(item, out)

    def _response(self, event: dict[str, Any], out: list[bytes]) -> None:
        if isinstance(event.get("error"), dict):
            self._fail(event["error"], out)
            return
        if not self._id:
            self._id = response_id(event)
        if isinstance(event.get("usageMetadata"), dict):
            self._meta = event["usageMetadata"]
            self.usage = usage_from_metadata(self._meta)
        candidates = event.get("candidates")
        if not isinstance(candidates, list) or not candidates:
            feedback = event.get("promptFeedback")
            if isinstance(feedback, dict) and feedback.get("blockReason"):
                self._start(0, out)
                self._finish(0, "content_filter", out)
            return
        for position, candidate in enumerate(candidates):
            if not isinstance(candidate, dict):
                continue
            index = candidate.get("index", position)
            index = index if isinstance(index, int) else position
            if index in self._finished:
                continue
            self._start(index, out)
            texts, calls = read_parts(candidate)
            text = "".join(texts)
            if text:
                out.append(self._chunk(index, {"content": text}))
            for call in calls:
                number = self._calls.get(index, 0)
                self._calls[index] = number + 1
                out.append(self._chunk(index, {"tool_calls": [{"index": number, **call}]}))
            reason = candidate.get("finishReason")
            if isinstance(reason, str) and reason:
                self._finish(index, finish_reason(reason, self._calls.get(index, 0) > 0), out)

    def _start(self, index: int, out: list[bytes]) -> None:
        if index not in self._started:
            self._started.add(index)
            out.append(self._chunk(index, {"role": "assistant", "content": ""}))

    def _finish(self, index: int, reason: str, out: list[bytes]) -> None:
        self._finished.add(index)
        out.append(self._chunk(index, {}, reason))

    def _fail(self, error: dict[str, Any], out: list[bytes]) -> None:
        self.error = self._classify(error)
        kind = (
            "invalid_request_error"
            if self.error.error_class in (ErrorClass.INVALID_REQUEST, ErrorClass.CONTEXT_LENGTH)
            else "server_error"
        )
        out.append(b"data: " + error_body(self.error.message, kind, None, self.error.code) + b"\n\n")

    def _base(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": choices,
        }

    def _chunk(self, index: int, delta: dict[str, Any], reason: str | None = None) -> bytes:
        chunk = self._base([{"index": index, "delta": delta, "finish_reason": reason}])
        if self._include_usage:
            chunk["usage"] = None  # as OpenAI sends it on every chunk when usage was asked for
        return b"data: " + orjson.dumps(chunk) + b"\n\n"
