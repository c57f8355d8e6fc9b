"""AWS event-stream framing (``application/vnd.amazon.eventstream``), encode side only.

Bedrock's streaming operations (ConverseStream, InvokeModelWithResponseStream)
answer with a sequence of binary messages rather than SSE. Each message is::

    prelude   total length (u32 BE) | headers length (u32 BE) | CRC32 of those 8 bytes (u32 BE)
    headers   per header: name length (u8) | name | value type (u8) | value
    payload   raw bytes (JSON for Bedrock)
    trailer   CRC32 of everything above, prelude included (u32 BE)

The checksums are plain CRC-32 (IEEE, zlib's). Only string headers (type 7:
u16 BE length, then UTF-8) are written: they are all Bedrock sends. The
simulator only produces streams, so there is no decoder here; tests decode
with botocore's own parser, which is what proves the framing.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable
from typing import Any

import orjson

CONTENT_TYPE = "application/vnd.amazon.eventstream"

_STRING = 7
_PRELUDE = struct.Struct(">II")
_CRC = struct.Struct(">I")
# The format's own limits (and botocore's, which refuses larger messages).
MAX_HEADERS_BYTES = 128 * 1024
MAX_PAYLOAD_BYTES = 16 * 1024 * 1024
_MAX_NAME_BYTES = 255
_MAX_VALUE_BYTES = 32767


def encode_message(headers: Iterable[tuple[str, str]], payload: bytes) -> bytes:
    """One framed message with string ``headers`` (in the given order) and ``payload``."""
    header_bytes = b"".join(_header(name, value) for name, value in headers)
    if len(header_bytes) > MAX_HEADERS_BYTES:
        raise ValueError(f"event-stream headers are {len(header_bytes)} bytes, over {MAX_HEADERS_BYTES}")
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ValueError(f"event-stream payload is {len(payload)} bytes, over {MAX_PAYLOAD_BYTES}")
    total = _PRELUDE.size + _CRC.size + len(header_bytes) + len(payload) + _CRC.size
    prelude = _PRELUDE.pack(total, len(header_bytes))
    message = prelude + _CRC.pack(zlib.crc32(prelude)) + header_bytes + payload
    return message + _CRC.pack(zlib.crc32(message))


def _header(name: str, value: str) -> bytes:
    raw_name, raw_value = name.encode(), value.encode()
    if not 0 < len(raw_name) <= _MAX_NAME_BYTES:
        raise ValueError(f"event-stream header name must be 1 to {_MAX_NAME_BYTES} bytes: {name!r}")
    if len(raw_value) > _MAX_VALUE_BYTES:
        raise ValueError(f"event-stream header {name!r} value is over {_MAX_VALUE_BYTES} bytes")
    return (struct.pack(">B", len(raw_name)) + raw_name + struct.pack(">BH", _STRING, len(raw_value))
            + raw_value)


def event(event_type: str, payload: dict[str, Any]) -> bytes:
    """An event message as AWS JSON protocols send them (``:message-type`` event)."""
    return encode_message([(":event-type", event_type), (":content-type", "application/json"),
                           (":message-type", "event")], orjson.dumps(payload))


def exception(exception_type: str, message: str, **fields: Any) -> bytes:
    """A modelled error sent inside the stream (``:message-type`` exception).

    ``exception_type`` is the member name of the stream union (for Bedrock
    lowerCamelCase: ``throttlingException``), which is what SDKs raise on.
    """
    return encode_message([(":exception-type", exception_type), (":content-type", "application/json"),
                           (":message-type", "exception")], orjson.dumps({"message": message, **fields}))
