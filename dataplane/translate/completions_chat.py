"""Legacy completions (`POST /v1/completions`) <-> the canonical chat shape.

For models without a native completions API: the prompt becomes one user
message, and the chat answer (JSON or stream) is turned back into
`text_completion` objects, so any chat model answers legacy clients. The
translation cannot express `echo`, `suffix`, `logprobs` or `best_of`;
requests using them are refused with a 400 naming the field rather than
answered differently.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from dataplane.codecs.sse import SseDecoder, encode
from dataplane.errors import bad_request
from dataplane.providers.base import StreamTranslator
from dataplane.translate.base import ChatStreamWrapper

# OpenAI's default for the legacy API, which chat translation must keep.
DEFAULT_MAX_TOKENS = 16
# Fields chat cannot express, with the values that ask for nothing special.
_UNTRANSLATABLE = {"echo": (None, False), "suffix": (None, ""), "logprobs": (None,), "best_of": (None, 1)}
_CHAT_FIELDS = ("max_tokens", "temperature", "top_p", "n", "stop", "stream", "stream_options", "seed",
                "presence_penalty", "frequency_penalty", "user", "logit_bias")


def untranslatable_field(payload: dict[str, Any]) -> str | None:
    """The first field asking for something chat cannot do, if any."""
    for field, harmless in _UNTRANSLATABLE.items():
        if payload.get(field) not in harmless:
            return field
    prompt = payload.get("prompt")
    if isinstance(prompt, list) and (len(prompt) != 1 or not isinstance(prompt[0], str)):
        return "prompt"
    return None


def chat_payload(payload: dict[str, Any]) -> dict[str, Any]:
    """The chat request equivalent to a legacy completions request."""
    field = untranslatable_field(payload)
    if field == "prompt":
        raise bad_request("send one text prompt per request for this model (it is served through chat)", "prompt")
    if field is not None:
        raise bad_request(f"'{field}' is not supported for this model (it is served through chat)", field)
    prompt = payload["prompt"]
    chat = {field: payload[field] for field in _CHAT_FIELDS if field in payload}
    chat["model"] = payload["model"]
    chat["messages"] = [{"role": "user", "content": prompt[0] if isinstance(prompt, list) else prompt}]
    chat.setdefault("max_tokens", DEFAULT_MAX_TOKENS)
    return chat


def completion_from_chat(chat: dict[str, Any], model: str = "") -> dict[str, Any]:
    return {
        "id": "cmpl-" + str(chat.get("id", "")).removeprefix("chatcmpl-"),
        "object": "text_completion",
        "created": chat.get("created") or int(time.time()),
        "model": chat.get("model") or model,
        "choices": [
            {
                "text": (choice.get("message") or {}).get("content") or "",
                "index": choice.get("index", 0),
                "logprobs": None,
                "finish_reason": choice.get("finish_reason"),
            }
            for choice in chat.get("choices", [])
        ],
        "usage": chat.get("usage"),
    }


class ChatToCompletionStream(ChatStreamWrapper):
    """Wraps a chat stream translator; re-emits its chunks as text_completion chunks."""

    __slots__ = ("_events",)

    def __init__(self, inner: StreamTranslator, model: str = "") -> None:
        super().__init__(inner)
        self._events = SseDecoder()

    def feed(self, data: bytes) -> bytes:
        return self._convert(self._events.feed(self._inner.feed(data)))

    def finish(self) -> bytes:
        tail = self._inner.finish()
        return self._convert(self._events.feed(tail) + self._events.finish())

    @staticmethod
    def _convert(events) -> bytes:
        out = []
        for event in events:
            if not event.data.startswith(b"{"):
                out.append(encode(event.data, event.event))  # [DONE]
                continue
            chunk = orjson.loads(event.data)
            if "error" in chunk:
                out.append(encode(event.data))
                continue
            choices = [
                {"text": (c.get("delta") or {}).get("content") or "", "index": c.get("index", 0),
                 "logprobs": None, "finish_reason": c.get("finish_reason")}
                for c in chunk.get("choices", [])
                if (c.get("delta") or {}).get("content") or c.get("finish_reason")
            ]
            if not choices and not chunk.get("usage"):
                continue  # role-only or empty deltas have no text_completion equivalent
            converted = {"id": "cmpl-" + str(chunk.get("id", "")).removeprefix("chatcmpl-"),
                         "object": "text_completion", "created": chunk.get("created"),
                         "model": chunk.get("model"), "choices": choices}
            if "usage" in chunk:
                converted["usage"] = chunk["usage"]
            out.append(encode(orjson.dumps(converted)))
        return b"".join(out)
