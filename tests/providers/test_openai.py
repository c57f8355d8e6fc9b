"""The OpenAI adapter: pass-through with usage accounting."""

from __future__ import annotations

import orjson
import pytest

from dataplane.providers.base import ErrorClass
from dataplane.providers.errors import parse_duration, parse_retry_after
from dataplane.providers.openai import OpenAIAdapter

ADAPTER = OpenAIAdapter()


def _sse(*events: dict | str) -> bytes:
    return b"".join(
        b"data: " + (e.encode() if isinstance(e, str) else orjson.dumps(e)) + b"\n\n" for e in events
    )


CHUNK = {"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "hi"}}]}
USAGE = {"id": "c", "object": "chat.completion.chunk", "choices": [],
         "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7,
                   "prompt_tokens_details": {"cached_tokens": 3}}}


def _run(stream, data: bytes, piece: int) -> bytes:
    out = b"".join(stream.feed(data[i:i + piece]) for i in range(0, len(data), piece))
    return out + stream.finish()


@pytest.mark.parametrize("piece", [1, 7, 64, 10_000])
def test_stream_relayed_unchanged_when_caller_asked_for_usage(piece: int) -> None:
    data = _sse(CHUNK, CHUNK, USAGE, "[DONE]")
    stream = ADAPTER.chat_stream("m", include_usage=True)
    assert _run(stream, data, piece) == data
    assert stream.complete and stream.error is None
    assert (stream.usage.prompt_tokens, stream.usage.completion_tokens, stream.usage.cached_prompt_tokens) == (5, 2, 3)


@pytest.mark.parametrize("piece", [1, 13, 10_000])
def test_usage_chunk_the_gateway_asked_for_is_dropped(piece: int) -> None:
    stream = ADAPTER.chat_stream("m", include_usage=False)
    assert _run(stream, _sse(CHUNK, USAGE, "[DONE]"), piece) == _sse(CHUNK, "[DONE]")
    assert stream.usage.completion_tokens == 2


def test_request_asks_for_usage_and_rewrites_model() -> None:
    payload = {"model": "auto", "messages": [], "stream": True}
    body = orjson.loads(ADAPTER.chat_request(payload, "gpt-4o-mini"))
    assert body["model"] == "gpt-4o-mini"
    assert body["stream_options"] == {"include_usage": True}


def test_truncated_stream_is_not_complete() -> None:
    stream = ADAPTER.chat_stream("m", include_usage=True)
    stream.feed(_sse(CHUNK)[:-1])
    stream.finish()
    assert not stream.complete


def test_error_event_mid_stream_is_seen() -> None:
    stream = ADAPTER.chat_stream("m", include_usage=True)
    out = stream.feed(_sse(CHUNK, {"error": {"message": "overloaded", "type": "server_error"}}))
    assert b"overloaded" in out
    assert stream.error is not None and stream.error.message == "overloaded"


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (500, b"", ErrorClass.RETRYABLE),
        (503, b"<html>", ErrorClass.RETRYABLE),
        (429, b'{"error": {"message": "slow down"}}', ErrorClass.RATE_LIMITED),
        (401, b'{"error": {"message": "bad key"}}', ErrorClass.ENDPOINT),
        (404, b"", ErrorClass.ENDPOINT),
        (400, b'{"error": {"message": "bad", "param": "messages"}}', ErrorClass.INVALID_REQUEST),
        (400, b'{"error": {"message": "too long", "code": "context_length_exceeded"}}', ErrorClass.CONTEXT_LENGTH),
        (400, b'{"error": {"message": "no", "code": "content_filter"}}', ErrorClass.CONTENT_FILTER),
    ],
)
def test_error_classification(status: int, body: bytes, expected: ErrorClass) -> None:
    assert ADAPTER.classify_error(status, {}, body).error_class is expected


def test_retry_after_styles() -> None:
    assert parse_retry_after({"Retry-After": "20"}) == 20
    assert parse_retry_after({"retry-after-ms": "1500"}) == 1.5
    assert parse_retry_after({"x-ratelimit-reset-requests": "6m0s"}) == 360
    assert parse_retry_after({"Retry-After": "Fri, 27 Nov 2026 10:00:30 GMT"}, now=1795773600.0) == 30
    assert parse_retry_after({"anthropic-ratelimit-requests-reset": "2026-11-27T10:00:05Z"}, now=1795773600.0) == 5
    assert parse_retry_after({}) is None
    assert parse_duration("250ms") == 0.25 and parse_duration("1h2m3s") == 3723 and parse_duration("soon") is None
