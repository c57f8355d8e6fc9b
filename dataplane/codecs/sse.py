"""Server-sent events (WHATWG HTML, "event stream interpretation"), incrementally.

Every stream the gateway reads or writes is an event stream: OpenAI's and
Gemini's (`data:` lines only), Anthropic's and the Responses API's (`event:`
plus `data:`). Upstreams differ in the details the spec allows — `\\r\\n` or
`\\r` line ends, `:` comment lines (keep-alives), several `data:` lines per
event, no space after the colon — and the network splits frames anywhere,
even between `\\r` and `\\n` or inside a UTF-8 sequence. One decoder handles
all of it, so no translator re-learns it.

`SseFramer` only cuts complete frames (normalised to `\\n` line ends), for
relays that pass most frames through byte for byte and parse only a few;
`SseDecoder` also parses each frame into an `SseEvent`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SseEvent:
    event: str      # the `event:` field; "" when the frame named none (the spec's "message")
    data: bytes     # the `data:` lines joined by "\n"


def _normalise(buffer: bytes) -> bytes:
    return buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n") if b"\r" in buffer else buffer


class SseFramer:
    """Cuts a byte stream into whole frames: `feed` returns the frames completed so far, each
    ending in a blank line ("\\n\\n"), with `\\n` line ends; `finish` the last frame, if the
    stream ended without its blank line."""

    __slots__ = ("_pending",)

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, data: bytes) -> bytes:
        if self._pending:
            buffer = self._pending + data
        elif data.endswith(b"\n\n") and b"\r" not in data:
            return data  # the common case on the hot path: whole frames, LF line ends
        else:
            buffer = data
        held = b""
        if b"\r" in buffer:
            if buffer.endswith(b"\r"):  # its "\n" may be in the next piece: "\r\n" is one line end
                buffer, held = buffer[:-1], b"\r"
            buffer = _normalise(buffer)
        end = buffer.rfind(b"\n\n")
        if end < 0:
            self._pending = buffer + held
            return b""
        self._pending = buffer[end + 2:] + held
        return buffer[: end + 2]

    def finish(self) -> bytes:
        rest, self._pending = _normalise(self._pending).strip(b"\n"), b""
        return rest + b"\n\n" if rest else b""


def parse_frame(frame: bytes) -> SseEvent | None:
    """One frame (without its blank line) -> its event; None for a frame of comments only."""
    event = ""
    data: list[bytes] = []
    seen = False
    for line in frame.split(b"\n"):
        if not line or line.startswith(b":"):
            continue  # a comment: keep-alives such as ": ping" or ": OPENROUTER PROCESSING"
        name, colon, value = line.partition(b":")
        if colon and value.startswith(b" "):
            value = value[1:]
        if name == b"data":
            data.append(value)
            seen = True
        elif name == b"event":
            event = value.decode("utf-8", "replace")
            seen = True
        # `id` and `retry` steer a browser's reconnection; a relay has no use for them.
    return SseEvent(event, b"\n".join(data)) if seen else None


class SseDecoder:
    """Bytes in, complete events out."""

    __slots__ = ("_framer",)

    def __init__(self) -> None:
        self._framer = SseFramer()

    def feed(self, data: bytes) -> list[SseEvent]:
        return _events(self._framer.feed(data))

    def finish(self) -> list[SseEvent]:
        return _events(self._framer.finish())


def _events(frames: bytes) -> list[SseEvent]:
    if not frames:
        return []
    events = []
    for frame in frames.split(b"\n\n"):
        if frame:
            parsed = parse_frame(frame)
            if parsed is not None:
                events.append(parsed)
    return events


def encode(data: bytes, event: str = "") -> bytes:
    """One event. `data` must be a single line (orjson never writes a newline)."""
    return (b"event: " + event.encode() + b"\ndata: " + data + b"\n\n") if event else b"data: " + data + b"\n\n"
