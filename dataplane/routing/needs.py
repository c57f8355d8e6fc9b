"""What a chat request needs from a model, read cheaply from its body."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Rough and fast: ~4 characters per token for text, a fixed cost per image.
CHARS_PER_TOKEN = 4
TOKENS_PER_IMAGE = 85
TOKENS_PER_MESSAGE = 4


@dataclass(frozen=True, slots=True)
class Needs:
    capabilities: frozenset[str]   # of: tools, vision, json_mode, streaming
    prompt_tokens: int             # estimate
    output_tokens: int             # what the caller allows (max_tokens); 0 = not said
    min_quality: int = 0           # explicit floor from the request (x-megarouter-min-quality)
    needed_quality: int = 0        # from the complexity estimate, for the cost strategy
    # A quality target's decision (cost strategy): the flagship — the best quality tier among
    # the usable candidates — must serve; otherwise the cheapest one above the floor may.
    flagship: bool = False
    embeddings: bool = False       # served by embeddings models only (else by chat models only)
    # What must fit the context window, when not prompt + output (embeddings: the largest
    # single input — each input of a batch is embedded on its own).
    context_tokens: int | None = None

    @property
    def context_needed(self) -> int:
        return self.prompt_tokens + self.output_tokens if self.context_tokens is None else self.context_tokens


def approx_prompt_tokens(messages: Any) -> int:
    if not isinstance(messages, list):
        return 0
    chars = 0
    images = 0
    for message in messages:
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict):
                    if part.get("type") == "image_url":
                        images += 1
                    elif isinstance(part.get("text"), str):
                        chars += len(part["text"])
        for call in message.get("tool_calls") or ():
            if isinstance(call, dict) and isinstance(call.get("function"), dict):
                chars += len(str(call["function"].get("arguments") or ""))
    return chars // CHARS_PER_TOKEN + images * TOKENS_PER_IMAGE + len(messages) * TOKENS_PER_MESSAGE


def body_needs(body_size: int, stream: bool, output_tokens: int, min_quality: int = 0) -> Needs:
    """What a request with no chat view needs (one only a native endpoint can express): its
    prompt sized by its body, as `chat_needs` does when given the body size."""
    return Needs(frozenset({"streaming"} if stream else ()), body_size // CHARS_PER_TOKEN, output_tokens,
                 min_quality)


def chat_needs(payload: dict[str, Any], min_quality: int = 0, body_size: int = 0) -> Needs:
    """What the request needs. `body_size` (the raw JSON's length), when
    given, stands in for walking every message to estimate the prompt: the
    JSON syntax it includes makes it a slight overestimate, which is the safe
    side for context-window checks and budget reservations."""
    capabilities = set()
    if payload.get("tools") and payload.get("tool_choice") != "none":
        capabilities.add("tools")
    if payload.get("stream") is True:
        capabilities.add("streaming")
    response_format = payload.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") in ("json_object", "json_schema"):
        capabilities.add("json_mode")
    messages = payload.get("messages") or ()
    images = 0
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            images += sum(1 for part in content if isinstance(part, dict) and part.get("type") == "image_url")
    if images:
        capabilities.add("vision")
    if body_size:
        # base64 images are counted at a flat rate, not by their bytes.
        prompt_tokens = body_size // CHARS_PER_TOKEN if not images else approx_prompt_tokens(messages)
    else:
        prompt_tokens = approx_prompt_tokens(messages) + len(str(payload.get("tools") or "")) // CHARS_PER_TOKEN
    output = payload.get("max_completion_tokens") or payload.get("max_tokens") or 0
    return Needs(
        capabilities=frozenset(capabilities),
        prompt_tokens=prompt_tokens,
        output_tokens=output if isinstance(output, int) else 0,
        min_quality=min_quality,
    )
