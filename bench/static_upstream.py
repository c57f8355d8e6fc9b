#!/usr/bin/env python3
"""A minimal, fast OpenAI- and Anthropic-format upstream for benchmarking the proxy.

It answers every `POST /v1/chat/completions` with the same canned, realistic
chat completion: a JSON body with usage, or — when the request body contains
`"stream": true` (or `"stream":true`) — an SSE stream (role chunk, 16 content
chunks, finish chunk, usage chunk, `data: [DONE]`) sent with chunked transfer
encoding, as OpenAI does.

It answers every `POST /v1/messages` (Anthropic's Messages API) the same way
with the same answer in Anthropic's shapes: a message with one text block,
`stop_reason: end_turn` and usage with cache fields, or a stream of
`event: <type>` / `data: <json>` events (message_start, content_block_start,
ping, 16 text deltas, content_block_stop, message_delta, message_stop). The
shapes follow tests/providers/fixtures/anthropic/. Neither path checks
credentials or headers.

Nothing is computed per request, so the proxy, not this server, is what a
benchmark measures.

It is an asyncio Protocol speaking just enough HTTP/1.1 (keep-alive,
pipelining, Content-Length bodies) on uvloop when available: measured with
wrk on one shared core it serves several times the requests per second of
a minimal aiohttp app (see bench/README.md).

    python bench/static_upstream.py --port 0
    -> {"event": "ready", "service": "static-upstream", "port": 40123, ...}
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys

MODEL = "gpt-4o-mini-2024-07-18"
COMPLETION_ID = "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT"
CREATED = 1741569952
FINGERPRINT = "fp_06737a9306"
# The reply, one piece per stream chunk (16 tokens, as a real model emits them).
PIECES = [
    "Hello", "!", " How", " can", " I", " assist", " you", " today", "?",
    " Let", " me", " know", " what", " you", " need", ".",
]
USAGE = {
    "prompt_tokens": 19,
    "completion_tokens": len(PIECES),
    "total_tokens": 19 + len(PIECES),
    "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
    "completion_tokens_details": {
        "reasoning_tokens": 0, "audio_tokens": 0,
        "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0,
    },
}
# The same answer from an Anthropic model (Messages API).
ANTHROPIC_MODEL = "claude-sonnet-4-5-20250929"
MESSAGE_ID = "msg_01XFDUDYJgAACzvnptvVoYEL"
ANTHROPIC_USAGE = {
    "input_tokens": 19, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
    "output_tokens": len(PIECES), "service_tier": "standard",
}
MAX_HEAD_BYTES = 64 * 1024  # a request head larger than this is not a client we serve


def _dumps(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def completion_body() -> bytes:
    return _dumps({
        "id": COMPLETION_ID, "object": "chat.completion", "created": CREATED, "model": MODEL,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": "".join(PIECES), "refusal": None, "annotations": []},
            "logprobs": None, "finish_reason": "stop",
        }],
        "usage": USAGE, "service_tier": "default", "system_fingerprint": FINGERPRINT,
    })


def stream_events() -> list[bytes]:
    """The SSE events of an `include_usage` stream, each `data: ...\\n\\n`."""
    base = {
        "id": COMPLETION_ID, "object": "chat.completion.chunk", "created": CREATED, "model": MODEL,
        "service_tier": "default", "system_fingerprint": FINGERPRINT,
    }

    def chunk(delta: dict, finish: str | None = None) -> dict:
        return {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
                "usage": None}

    events = [chunk({"role": "assistant", "content": "", "refusal": None})]
    events += [chunk({"content": piece}) for piece in PIECES]
    events.append(chunk({}, "stop"))
    events.append({**base, "choices": [], "usage": USAGE})
    return [b"data: " + _dumps(event) + b"\n\n" for event in events] + [b"data: [DONE]\n\n"]


def message_body() -> bytes:
    """An Anthropic Messages API answer: one text block, end_turn, usage."""
    return _dumps({
        "id": MESSAGE_ID, "type": "message", "role": "assistant", "model": ANTHROPIC_MODEL,
        "content": [{"type": "text", "text": "".join(PIECES)}],
        "stop_reason": "end_turn", "stop_sequence": None, "usage": ANTHROPIC_USAGE,
    })


def message_events() -> list[bytes]:
    """The SSE events of an Anthropic stream, each `event: <type>\\ndata: <json>\\n\\n`."""
    start_usage = {**ANTHROPIC_USAGE, "output_tokens": 1}
    events: list[tuple[str, object]] = [
        ("message_start", {"type": "message_start", "message": {
            "id": MESSAGE_ID, "type": "message", "role": "assistant", "model": ANTHROPIC_MODEL, "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": start_usage}}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "text", "text": ""}}),
        ("ping", None),
    ]
    events += [("content_block_delta", {"type": "content_block_delta", "index": 0,
                                         "delta": {"type": "text_delta", "text": piece}}) for piece in PIECES]
    events += [
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                           "usage": {"output_tokens": len(PIECES)}}),
        ("message_stop", {"type": "message_stop"}),
    ]
    # Anthropic writes its ping with a space after the colon; kept as sent.
    return [b"event: " + kind.encode() + b"\ndata: "
            + (b'{"type": "ping"}' if data is None else _dumps(data)) + b"\n\n" for kind, data in events]


def json_response(body: bytes) -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


def stream_response(events: list[bytes]) -> bytes:
    # One HTTP chunk per SSE event, like a real provider; all in one write
    # because a fast upstream is the point here, not pacing.
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(event), event) for event in events)
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n"
    )


def simple_response(status: bytes, message: bytes, close: bool = False) -> bytes:
    body = b'{"error":{"message":"' + message + b'","type":"invalid_request_error"}}'
    return (
        b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\n"
        + (b"Connection: close\r\n" if close else b"")
        + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


# Built once; every request gets one of these byte strings.
JSON_RESPONSE = json_response(completion_body())
STREAM_RESPONSE = stream_response(stream_events())
MESSAGE_RESPONSE = json_response(message_body())
MESSAGE_STREAM_RESPONSE = stream_response(message_events())
NOT_FOUND = simple_response(b"404 Not Found", b"not found")
LENGTH_REQUIRED = simple_response(b"411 Length Required", b"send a Content-Length body", close=True)
HEAD_TOO_LARGE = simple_response(b"431 Request Header Fields Too Large", b"header too large", close=True)


def wants_stream(body: bytes | bytearray) -> bool:
    """A bytes search instead of a JSON parse: the body is never decoded."""
    return b'"stream":true' in body or b'"stream": true' in body


class UpstreamProtocol(asyncio.Protocol):
    """One connection: parse each request head, wait for its body, answer."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        # Loop: a client may pipeline several requests in one segment.
        while self.transport is not None and not self.transport.is_closing():
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                if len(self.buffer) > MAX_HEAD_BYTES:
                    self._finish(HEAD_TOO_LARGE, close=True)
                return
            head = bytes(self.buffer[:head_end]).lower()
            length = _content_length(head)
            if length is None:
                self._finish(LENGTH_REQUIRED, close=True)
                return
            total = head_end + 4 + length
            if len(self.buffer) < total:
                return  # the rest of the body is still on its way
            body = self.buffer[head_end + 4:total]
            del self.buffer[:total]
            self._finish(_answer(head, body), close=_wants_close(head))

    def _finish(self, response: bytes, close: bool) -> None:
        assert self.transport is not None
        self.transport.write(response)
        if close:
            self.transport.close()


def _content_length(head: bytes) -> int | None:
    """The body length; 0 without a body; None for bodies we do not parse (chunked)."""
    if b"\r\ntransfer-encoding:" in head:
        return None
    at = head.find(b"\r\ncontent-length:")
    if at < 0:
        return 0
    end = head.find(b"\r\n", at + 2)
    try:
        return int(head[at + 17:end if end >= 0 else None])
    except ValueError:
        return None


def _wants_close(head: bytes) -> bool:
    if b"\r\nconnection: close" in head:
        return True
    # HTTP/1.0 closes unless it asks for keep-alive.
    return head[: head.find(b"\r\n")].endswith(b"http/1.0") and b"\r\nconnection: keep-alive" not in head


def _answer(head: bytes, body: bytes | bytearray) -> bytes:
    if head.startswith(b"post /v1/chat/completions"):
        return STREAM_RESPONSE if wants_stream(body) else JSON_RESPONSE
    if head.startswith((b"post /v1/messages ", b"post /v1/messages?")):
        return MESSAGE_STREAM_RESPONSE if wants_stream(body) else MESSAGE_RESPONSE
    return NOT_FOUND


async def serve(host: str, port: int) -> int:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(UpstreamProtocol, host, port, backlog=1024, reuse_address=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    bound = server.sockets[0].getsockname()[1]
    ready = {"event": "ready", "service": "static-upstream", "port": bound, "loop": type(loop).__module__}
    print(json.dumps(ready), flush=True)
    await stop.wait()
    server.close()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 lets the OS pick; the ready line reports it")
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        return asyncio.run(serve(args.host, args.port))
    return uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    sys.exit(main())
