"""Anthropic Messages (`POST /v1/messages`, `/v1/messages/count_tokens`) <-> the canonical chat shape.

Claude Code and Anthropic-SDK apps speak Messages. An Anthropic endpoint gets the body as
it came (`AnthropicPassthroughStream` only watches its stream); every other backend gets
the equivalent OpenAI chat request, and its answer is turned back into a Messages answer.

Validation (`check_messages_request`) covers every documented field, with `param` naming
the field path (`messages[1].content[0].source.media_type`). Undocumented top-level fields
are allowed: the native path passes them to Anthropic, the translated path drops them.
`check_count_tokens_request` is the same for count_tokens, which takes no `max_tokens`.

Request — a Messages body becomes a chat request (`messages_to_chat`):

    system (string or text blocks)      one leading `system` message, blocks joined by a blank line
    user / assistant turns              messages of the same role, in order
    text block                          text part; a user turn of one text block is a plain string,
                                        an assistant turn's text blocks are one string (blank line between)
    image, base64 / url source          `image_url` part: `data:<media_type>;base64,<data>` / the URL
    document, base64 PDF                `file` part {"filename": "document.pdf", "file_data": PDF data URL}
    document, text source               text part
    document, url source                400: chat file parts carry data, not links
    image / document in an assistant    400: chat assistant messages hold text and tool calls only
    tool_use (assistant)                `tool_calls`, ids kept; arguments = compact JSON of `input`
    tool_result (user)                  `tool` messages, in block order, BEFORE the rest of that user
                                        turn (chat wants them right after the assistant's calls);
                                        content string, text blocks joined by a blank line,
                                        `is_error: true` -> "Error: " prefix. Images in a result
                                        (chat tool messages hold text only) open the user message
                                        that follows, so the model still sees them.
    thinking, redacted_thinking         dropped: signed by Anthropic for Anthropic; no other model reads them
    cache_control, citations, title,
    context, strict                     dropped (prompt-caching and Anthropic-only hints)
    model, max_tokens, temperature,
    top_p                               copied
    stop_sequences                      `stop` (chat allows at most 4: more is a 400, not a silent cut)
    metadata.user_id                    `user`
    stream                              `stream` + `stream_options: {"include_usage": true}`
    tools, custom                       function tools; input_schema -> parameters
    tools, server (web_search_20250305, 400 naming `tools[i].type`: they run on Anthropic's servers,
    bash_..., code_execution_...)       which no other backend has
    tool_choice auto/any/none/tool      "auto" / "required" / "none" / {"type": "function", ...}
    disable_parallel_tool_use: true     `parallel_tool_calls: false`
    (tool_choice, parallel_tool_calls are sent only with tools: chat rejects them alone)
    thinking enabled                    `reasoning_effort`: budget_tokens < 4096 "low", < 16384
                                        "medium", else "high"
    thinking disabled / adaptive        nothing: the backend's default
    top_k                               DROPPED, deliberately. It only narrows sampling, like the
                                        hints (`seed`, penalties) the reverse codec drops; OpenAI
                                        rejects it as an unknown argument, and this codec does not
                                        know which backend it feeds. Refusing it would fail SDK apps
                                        that set it by habit for no change they could notice.
    service_tier                        dropped: Anthropic's tiers (auto, standard_only) mean
                                        nothing to other providers
    other fields                        dropped (Anthropic-only; the native path keeps them)

Response — a `chat.completion` becomes a `message` (`chat_to_message`, first choice):

    content (or refusal) text           one text block, if non-empty
    tool_calls                          tool_use blocks, ids kept; `input` = the parsed arguments.
                                        Arguments that are not a JSON object (a model wrote broken
                                        JSON) become {"_raw": <the text>}: the caller's tool sees
                                        what the model wrote and can report it back, where a 502
                                        would lose the whole turn. Empty arguments -> {}.
    reasoning_content                   dropped: a thinking block needs Anthropic's signature
    finish_reason                       stop -> end_turn, length -> max_tokens, tool_calls (and the
                                        legacy function_call) -> tool_use, content_filter -> refusal;
                                        a "stop" that came with tool calls -> tool_use (some backends
                                        say "stop"; agents loop on tool_use)
    stop_sequence                       null: chat does not say which stop matched
    usage                               input_tokens = prompt - cached, output_tokens = completion,
                                        cache_read_input_tokens = cached, cache_creation_input_tokens 0

Streams — `ChatToMessagesStream` turns the canonical chat SSE into Anthropic's events:

    first chunk                         message_start (empty content, zero usage: chat streams count
                                        at their end), ping
    content deltas                      a text block: content_block_start (text ""), text_delta...;
                                        opened at the first text, closed when a tool call starts
    tool_calls deltas                   per call: content_block_start (tool_use, id, name, input {}),
                                        input_json_delta (partial_json)...; block indexes count up
                                        across text and tools. A backend that interleaves fragments
                                        of parallel calls (none known) gets each late fragment sent
                                        to its call's block by index, which is how the SDKs
                                        accumulate — nothing is lost.
    finish_reason                       the open block's content_block_stop
    [DONE]                              message_delta (stop_reason, stop_sequence null, the inner
                                        translator's usage as above), message_stop
    {"error": ...}                      `error` event, typed by the inner error's class; then nothing
    EOF without [DONE]                  no message_stop: the relay reports the interruption

`AnthropicPassthroughStream` relays an Anthropic endpoint's own stream byte for byte (in
whole frames), reading usage, the end and errors from the few frames that carry them.
`estimate_input_tokens` answers count_tokens for backends that cannot count Claude tokens.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

import orjson

from dataplane.codecs.sse import SseDecoder, SseEvent, SseFramer, encode, parse_frame
from dataplane.errors import ApiError, bad_request
from dataplane.providers.anthropic_stream import stream_error, usage_of
from dataplane.providers.base import ErrorClass, ProviderError, StreamTranslator, Usage
from dataplane.providers.openai import usage_from
from dataplane.routing.needs import CHARS_PER_TOKEN, TOKENS_PER_IMAGE, TOKENS_PER_MESSAGE
from dataplane.translate.base import ChatStreamWrapper
from dataplane.validation import (
    Check,
    array_of,
    boolean,
    check_fields,
    fields,
    integer,
    model_name,
    number,
    obj,
    one_of,
    string,
)

# ============================================================ validation

IMAGE_MEDIA_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
MIN_THINKING_BUDGET = 1024
_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_BLOCK_TYPES = ("text", "image", "document", "tool_use", "tool_result", "thinking", "redacted_thinking")
_ONLY_IN = {"tool_use": "assistant", "tool_result": "user"}  # blocks one role alone may send


def _missing(param: str) -> ApiError:
    return bad_request(f"Missing required parameter: '{param}'.", param)


def _by_type(variants: dict[str, Check]) -> Check:
    """An object whose `type` picks the check for the rest of it."""
    def check(value: Any, param: str) -> None:
        obj(value, param)
        kind = value.get("type")
        if kind is None:
            raise _missing(f"{param}.type")
        variant = variants.get(kind) if isinstance(kind, str) else None
        if variant is None:
            raise bad_request(f"Invalid value for '{param}.type': {kind!r}; supported: {', '.join(variants)}.",
                              f"{param}.type")
        variant(value, param)
    return check


def _string_or(blocks: Check, expected: str) -> Check:
    """A string, or an array checked by `blocks` (whose errors keep their exact `param`)."""
    def check(value: Any, param: str) -> None:
        if isinstance(value, list):
            blocks(value, param)
        elif not isinstance(value, str):
            raise bad_request(f"Invalid type for '{param}': expected {expected}.", param)
    return check


def _tool_name(value: Any, param: str) -> None:
    string(value, param)
    if not _TOOL_NAME.match(value):
        raise bad_request(f"Invalid value for '{param}': {value!r} must match {_TOOL_NAME.pattern}.", param)


_TEXT = fields({"text": string}, required=("text",))
_IMAGE = fields({"source": _by_type({
    "base64": fields({"media_type": one_of(*IMAGE_MEDIA_TYPES), "data": string}, required=("media_type", "data")),
    "url": fields({"url": string}, required=("url",)),
})}, required=("source",))
_DOCUMENT = fields({"source": _by_type({
    "base64": fields({"media_type": one_of("application/pdf"), "data": string}, required=("media_type", "data")),
    "text": fields({"media_type": one_of("text/plain"), "data": string}, required=("media_type", "data")),
    "url": fields({"url": string}, required=("url",)),
}), "title": string, "context": string}, required=("source",))
_TOOL_RESULT_CONTENT = _string_or(array_of(_by_type({"text": _TEXT, "image": _IMAGE})),
                                  "a string or an array of text and image blocks")
_BLOCK: dict[str, Check] = {
    "text": _TEXT,
    "image": _IMAGE,
    "document": _DOCUMENT,
    "tool_use": fields({"id": string, "name": string, "input": obj}, required=("id", "name", "input")),
    "tool_result": fields({"tool_use_id": string, "content": _TOOL_RESULT_CONTENT, "is_error": boolean},
                          required=("tool_use_id",)),
    "thinking": fields({"thinking": string, "signature": string}, required=("thinking", "signature")),
    "redacted_thinking": fields({"data": string}, required=("data",)),
}
_CONTENT = _string_or(array_of(_by_type(_BLOCK), 1), "a string or a non-empty array of content blocks")
_SYSTEM = _string_or(array_of(_by_type({"text": _TEXT})), "a string or an array of text blocks")


def _message(value: Any, param: str) -> None:
    obj(value, param)
    role = value.get("role")
    if role is None:
        raise _missing(f"{param}.role")
    one_of("user", "assistant")(role, f"{param}.role")
    content = value.get("content")
    if content is None:
        raise _missing(f"{param}.content")
    _CONTENT(content, f"{param}.content")
    for j, block in enumerate(content if isinstance(content, list) else ()):
        owner = _ONLY_IN.get(block["type"])
        if owner is not None and owner != role:
            raise bad_request(f"'{block['type']}' blocks may appear only in {owner} messages.",
                              f"{param}.content[{j}].type")


_CUSTOM_TOOL = fields({"name": _tool_name, "description": string, "input_schema": obj},
                      required=("name", "input_schema"))


def _tool(value: Any, param: str) -> None:
    obj(value, param)
    kind = value.get("type")
    if kind is None or kind == "custom":
        _CUSTOM_TOOL(value, param)
        return
    # A server tool (web_search_20250305, bash_20250124, ...): its own schema is Anthropic's
    # to check, and the native path passes it there; the translated path refuses it.
    string(kind, f"{param}.type")
    fields({"name": string}, required=("name",))(value, param)


MESSAGES_FIELDS: dict[str, Check] = {
    "max_tokens": integer(1),
    "messages": array_of(_message, 1),
    "system": _SYSTEM,
    "temperature": number(0, 1),
    "top_p": number(0, 1),
    "top_k": integer(0),
    "stop_sequences": array_of(string),
    "stream": boolean,
    "metadata": fields({"user_id": string}),
    "tools": array_of(_tool),
    "tool_choice": fields({"type": one_of("auto", "any", "none", "tool"), "name": string,
                           "disable_parallel_tool_use": boolean}, required=("type",)),
    "thinking": _by_type({"enabled": fields({"budget_tokens": integer(MIN_THINKING_BUDGET)},
                                            required=("budget_tokens",)),
                          "disabled": obj, "adaptive": obj}),
    "service_tier": string,
}


def check_messages_request(payload: dict[str, Any]) -> None:
    """Raises a 400 naming the field for anything `POST /v1/messages` would refuse."""
    _check(payload, required=("max_tokens", "messages"))


def check_count_tokens_request(payload: dict[str, Any]) -> None:
    """The same for `POST /v1/messages/count_tokens`, which takes no `max_tokens`."""
    _check(payload, required=("messages",))


def _check(payload: Any, required: tuple[str, ...]) -> None:
    if not isinstance(payload, dict):
        raise bad_request("The request body must be a JSON object.")
    model_name(payload)
    for name in required:
        if payload.get(name) is None:
            raise _missing(name)
    check_fields(payload, MESSAGES_FIELDS)
    _check_tool_choice(payload)
    _check_thinking_budget(payload)
    _check_tool_results(payload["messages"])


def _check_tool_choice(payload: dict[str, Any]) -> None:
    choice = payload.get("tool_choice")
    if not choice or choice["type"] != "tool":
        return
    declared = {tool["name"] for tool in payload.get("tools") or ()}
    name = choice.get("name")
    if name is None:
        raise _missing("tool_choice.name")
    if name not in declared:
        raise bad_request(f"Invalid value for 'tool_choice.name': {name!r} is not one of the declared tools.",
                          "tool_choice.name")


def _check_thinking_budget(payload: dict[str, Any]) -> None:
    thinking = payload.get("thinking")
    max_tokens = payload.get("max_tokens")
    if thinking and thinking["type"] == "enabled" and max_tokens is not None \
            and thinking["budget_tokens"] >= max_tokens:
        raise bad_request(f"'thinking.budget_tokens' must be less than 'max_tokens' ({max_tokens}).",
                          "thinking.budget_tokens")


def _check_tool_results(messages: list[dict[str, Any]]) -> None:
    """Every tool_result answers a tool_use an earlier assistant turn made."""
    called: set[str] = set()
    for i, message in enumerate(messages):
        content = message["content"]
        if isinstance(content, str):
            continue
        for j, block in enumerate(content):
            if block["type"] == "tool_use":
                called.add(block["id"])
            elif block["type"] == "tool_result" and block["tool_use_id"] not in called:
                raise bad_request(f"tool_result block answers {block['tool_use_id']!r}, which no earlier "
                                  "assistant tool_use block has.", f"messages[{i}].content[{j}].tool_use_id")


# ============================================================ request: Messages -> chat

_TOOL_CHOICES = {"auto": "auto", "any": "required", "none": "none"}
# thinking.budget_tokens below each bound -> reasoning_effort; above the last, "high".
_EFFORT_BOUNDS = ((4096, "low"), (16384, "medium"))
_MAX_CHAT_STOPS = 4
_DROPPED_BLOCKS = ("thinking", "redacted_thinking")
_BLOCK_SEPARATOR = "\n\n"


def messages_to_chat(payload: dict[str, Any]) -> dict[str, Any]:
    """The OpenAI chat request equivalent to a validated Messages request; `payload` is only read.

    Nested values that are passed on as they are (tool schemas, strings) are shared, not
    copied: adapters read their payload and never write into it."""
    chat: dict[str, Any] = {"model": payload["model"], "messages": _chat_messages(payload),
                            "max_tokens": payload["max_tokens"]}
    for name in ("temperature", "top_p"):
        if payload.get(name) is not None:
            chat[name] = payload[name]
    stops = payload.get("stop_sequences")
    if stops:
        if len(stops) > _MAX_CHAT_STOPS:
            raise bad_request(f"This model takes at most {_MAX_CHAT_STOPS} stop sequences.", "stop_sequences")
        chat["stop"] = list(stops)
    user = (payload.get("metadata") or {}).get("user_id")
    if user:
        chat["user"] = user
    if payload.get("stream") is True:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    chat.update(_chat_tools(payload))
    effort = _reasoning_effort(payload.get("thinking"))
    if effort is not None:
        chat["reasoning_effort"] = effort
    return chat


def _chat_messages(payload: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    system = payload.get("system")
    if isinstance(system, list):
        system = _BLOCK_SEPARATOR.join(block["text"] for block in system)
    if system:
        out.append({"role": "system", "content": system})
    for i, message in enumerate(payload["messages"]):
        turn = _assistant_turn if message["role"] == "assistant" else _user_turn
        out.extend(turn(message["content"], f"messages[{i}].content"))
    return out


def _user_turn(content: str | list[dict[str, Any]], where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    results: list[dict[str, Any]] = []
    result_images: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        kind = block["type"]
        if kind == "tool_result":
            text, images = _tool_result(block)
            results.append({"role": "tool", "tool_call_id": block["tool_use_id"], "content": text})
            result_images.extend(images)
        elif kind not in _DROPPED_BLOCKS:
            parts.append(_part(block, f"{where}[{j}]"))
    parts = result_images + parts
    if not parts:
        return results
    if len(parts) == 1 and parts[0]["type"] == "text":
        return [*results, {"role": "user", "content": parts[0]["text"]}]
    return [*results, {"role": "user", "content": parts}]


def _assistant_turn(content: str | list[dict[str, Any]], where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"role": "assistant", "content": content}]
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        kind = block["type"]
        if kind == "text":
            texts.append(block["text"])
        elif kind == "tool_use":
            calls.append({"id": block["id"], "type": "function",
                          "function": {"name": block["name"], "arguments": orjson.dumps(block["input"]).decode()}})
        elif kind not in _DROPPED_BLOCKS:
            raise bad_request(f"'{kind}' blocks in assistant messages can be sent to Anthropic models only.",
                              f"{where}[{j}].type")
    if not texts and not calls:
        return []  # only thinking: nothing another model could read
    message: dict[str, Any] = {"role": "assistant", "content": _BLOCK_SEPARATOR.join(texts) if texts else None}
    if calls:
        message["tool_calls"] = calls
    return [message]


def _tool_result(block: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """(the result's text, its images as image_url parts)."""
    content = block.get("content")
    images: list[dict[str, Any]] = []
    if isinstance(content, list):
        text = _BLOCK_SEPARATOR.join(item["text"] for item in content if item["type"] == "text")
        images = [_image_part(item["source"]) for item in content if item["type"] == "image"]
    else:
        text = content or ""
    if block.get("is_error") is True:
        text = f"Error: {text}"
    return text, images


def _part(block: dict[str, Any], where: str) -> dict[str, Any]:
    kind = block["type"]
    if kind == "text":
        return {"type": "text", "text": block["text"]}
    if kind == "image":
        return _image_part(block["source"])
    source = block["source"]  # a document
    if source["type"] == "text":
        return {"type": "text", "text": source["data"]}
    if source["type"] == "url":
        raise bad_request("A document given by URL can be sent to Anthropic models only; send it as base64 data.",
                          f"{where}.source.type")
    return {"type": "file", "file": {"filename": "document.pdf",
                                     "file_data": f"data:{source['media_type']};base64,{source['data']}"}}


def _image_part(source: dict[str, Any]) -> dict[str, Any]:
    if source["type"] == "url":
        return {"type": "image_url", "image_url": {"url": source["url"]}}
    return {"type": "image_url", "image_url": {"url": f"data:{source['media_type']};base64,{source['data']}"}}


def _chat_tools(payload: dict[str, Any]) -> dict[str, Any]:
    tools = payload.get("tools")
    if not tools:
        return {}  # chat rejects tool_choice and parallel_tool_calls without tools
    functions = []
    for k, tool in enumerate(tools):
        if tool.get("type") not in (None, "custom"):
            raise bad_request(f"The server tool {tool['type']!r} runs on Anthropic's servers; this model "
                              "can use custom tools only.", f"tools[{k}].type")
        function = {"name": tool["name"]}
        if tool.get("description"):
            function["description"] = tool["description"]
        function["parameters"] = tool["input_schema"]
        functions.append({"type": "function", "function": function})
    out: dict[str, Any] = {"tools": functions}
    choice = payload.get("tool_choice")
    if choice:
        kind = choice["type"]
        out["tool_choice"] = (_TOOL_CHOICES[kind] if kind != "tool"
                              else {"type": "function", "function": {"name": choice["name"]}})
        if choice.get("disable_parallel_tool_use") is True:
            out["parallel_tool_calls"] = False
    return out


def _reasoning_effort(thinking: dict[str, Any] | None) -> str | None:
    if not thinking or thinking["type"] != "enabled":
        return None
    budget = thinking["budget_tokens"]
    return next((effort for bound, effort in _EFFORT_BOUNDS if budget < bound), "high")


# ============================================================ response: chat -> Messages

_STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",  # the legacy name some backends still send
    "content_filter": "refusal",
}


def stop_reason(finish_reason: Any, called_tools: bool) -> str:
    reason = _STOP_REASONS.get(finish_reason, "end_turn") if isinstance(finish_reason, str) else "end_turn"
    return "tool_use" if called_tools and reason == "end_turn" else reason


def messages_usage(usage: Usage) -> dict[str, int]:
    """A Messages `usage` object; Anthropic's input_tokens leave the cached tokens out."""
    return {"input_tokens": max(usage.prompt_tokens - usage.cached_prompt_tokens, 0),
            "output_tokens": usage.completion_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": usage.cached_prompt_tokens}


def tool_input(arguments: Any) -> dict[str, Any]:
    """A tool call's `arguments` (JSON text) as a tool_use `input` object (see the module docstring)."""
    if isinstance(arguments, dict):
        return arguments
    if not isinstance(arguments, str) or not arguments.strip():
        return {}
    try:
        parsed = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        parsed = None
    return parsed if isinstance(parsed, dict) else {"_raw": arguments}


def chat_to_message(chat: dict[str, Any], model: str) -> dict[str, Any]:
    choices = chat.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    answer = choice.get("message") if isinstance(choice.get("message"), dict) else {}
    content: list[dict[str, Any]] = []
    text = _text_of(answer.get("content")) or _text_of(answer.get("refusal"))
    if text:
        content.append({"type": "text", "text": text})
    for call in answer.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            content.append({"type": "tool_use", "id": call.get("id") or _tool_use_id(),
                            "name": function.get("name") or "", "input": tool_input(function.get("arguments"))})
    called = any(block["type"] == "tool_use" for block in content)
    return {
        "id": _message_id(chat.get("id")),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(choice.get("finish_reason"), called),
        "stop_sequence": None,
        "usage": messages_usage(usage_from(chat)),
    }


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # some backends answer in parts
        return "".join(part["text"] for part in content if isinstance(part, dict) and isinstance(part.get("text"), str))
    return ""


def _message_id(chat_id: Any) -> str:
    if isinstance(chat_id, str) and chat_id.removeprefix("chatcmpl-"):
        return "msg_" + chat_id.removeprefix("chatcmpl-")
    return "msg_" + uuid.uuid4().hex[:24]


def _tool_use_id() -> str:
    return "toolu_" + uuid.uuid4().hex[:24]


# ============================================================ stream: chat SSE -> Messages events

# The Anthropic error type a client's SDK should raise for each class of upstream failure.
_ERROR_TYPES = {
    ErrorClass.RETRYABLE: "api_error",
    ErrorClass.TIMEOUT: "timeout_error",
    ErrorClass.RATE_LIMITED: "rate_limit_error",
    ErrorClass.ENDPOINT: "api_error",  # a misconfigured endpoint is the gateway's problem, not the caller's key
    ErrorClass.CONTEXT_LENGTH: "invalid_request_error",
    ErrorClass.INVALID_REQUEST: "invalid_request_error",
    ErrorClass.CONTENT_FILTER: "invalid_request_error",
}
_PING = encode(b'{"type":"ping"}', "ping")


def _event(data: dict[str, Any]) -> bytes:
    return encode(orjson.dumps(data), data["type"])


def stream_error_event(message: str, error_type: str = "api_error") -> bytes:
    """An Anthropic `error` event, e.g. for an upstream that broke off mid-stream."""
    return _event({"type": "error", "error": {"type": error_type, "message": message}})


class ChatToMessagesStream(ChatStreamWrapper):
    """Wraps a chat stream translator; re-emits its chunks as Anthropic Messages events."""

    __slots__ = ("_model", "_decoder", "_started", "_ended", "_next_block", "_open_block",
                 "_open_tool", "_tool_blocks", "_tool_ids", "_finish_reason")

    def __init__(self, inner: StreamTranslator, model: str) -> None:
        super().__init__(inner)
        self._model = model
        self._decoder = SseDecoder()
        self._started = False   # message_start went out
        self._ended = False     # message_stop or error went out: nothing may follow
        self._next_block = 0
        self._open_block: int | None = None   # the block index awaiting its content_block_stop
        self._open_tool: int | None = None    # the chat tool_calls index of that block, if a tool's
        self._tool_blocks: dict[int, int] = {}  # chat tool_calls index -> block index
        self._tool_ids: dict[str, int] = {}     # tool call id -> chat tool_calls index
        self._finish_reason: str | None = None

    def feed(self, data: bytes) -> bytes:
        return self._translate(self._decoder.feed(self._inner.feed(data)))

    def finish(self) -> bytes:
        events = self._decoder.feed(self._inner.finish())
        return self._translate(events + self._decoder.finish())

    def _translate(self, events: list[SseEvent]) -> bytes:
        out: list[bytes] = []
        for event in events:
            if self._ended:
                break
            if event.data == b"[DONE]":
                self._end(out)
                continue
            try:
                chunk = orjson.loads(event.data)
            except orjson.JSONDecodeError:
                continue  # not a chunk; a broken stream shows as incomplete anyway
            if not isinstance(chunk, dict):
                continue
            if isinstance(chunk.get("error"), dict):
                out.append(self._error_event(chunk["error"]))
                self._ended = True
                continue
            self._start(out, chunk)
            for choice in chunk.get("choices") or ():
                if isinstance(choice, dict) and choice.get("index", 0) == 0:
                    self._choice(out, choice)
        return b"".join(out)

    def _choice(self, out: list[bytes], choice: dict[str, Any]) -> None:
        delta = choice.get("delta") if isinstance(choice.get("delta"), dict) else {}
        text = delta.get("content") or delta.get("refusal")
        if isinstance(text, str) and text:
            if self._open_block is None or self._open_tool is not None:
                self._open(out, {"type": "text", "text": ""})
            out.append(self._delta({"type": "text_delta", "text": text}))
        for call in delta.get("tool_calls") or ():
            if isinstance(call, dict):
                self._tool_call(out, call)
        if choice.get("finish_reason"):
            self._finish_reason = choice["finish_reason"]
            self._close(out)

    def _tool_call(self, out: list[bytes], call: dict[str, Any]) -> None:
        index = call.get("index")
        if not isinstance(index, int):
            # Backends that leave it out send one call at a time: a new id starts the next one.
            known = self._tool_ids.get(call.get("id")) if call.get("id") else self._open_tool
            index = known if known is not None else len(self._tool_blocks)
        if call.get("id"):
            self._tool_ids.setdefault(call["id"], index)
        function = call.get("function") if isinstance(call.get("function"), dict) else {}
        block = self._tool_blocks.get(index)
        if block is None:
            block = self._open(out, {"type": "tool_use", "id": call.get("id") or _tool_use_id(),
                                     "name": function.get("name") or "", "input": {}}, tool=index)
            self._tool_blocks[index] = block
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            out.append(self._delta({"type": "input_json_delta", "partial_json": arguments}, block))

    def _start(self, out: list[bytes], chunk: dict[str, Any] | None = None) -> None:
        if self._started:
            return
        self._started = True
        # Zeros: chat streams report usage at their end, and what the inner translator has
        # read by now depends on how the network split the bytes. message_delta has the counts.
        usage = messages_usage(Usage())
        message = {"id": _message_id((chunk or {}).get("id")), "type": "message", "role": "assistant",
                   "model": self._model, "content": [], "stop_reason": None, "stop_sequence": None,
                   "usage": usage}
        out.append(_event({"type": "message_start", "message": message}))
        out.append(_PING)

    def _open(self, out: list[bytes], block: dict[str, Any], tool: int | None = None) -> int:
        self._close(out)
        index, self._next_block = self._next_block, self._next_block + 1
        self._open_block, self._open_tool = index, tool
        out.append(_event({"type": "content_block_start", "index": index, "content_block": block}))
        return index

    def _close(self, out: list[bytes]) -> None:
        if self._open_block is not None:
            out.append(_event({"type": "content_block_stop", "index": self._open_block}))
            self._open_block = self._open_tool = None

    def _delta(self, delta: dict[str, Any], index: int | None = None) -> bytes:
        block = self._open_block if index is None else index
        return _event({"type": "content_block_delta", "index": block, "delta": delta})

    def _end(self, out: list[bytes]) -> None:
        self._start(out)
        self._close(out)
        reason = stop_reason(self._finish_reason, bool(self._tool_blocks))
        out.append(_event({"type": "message_delta", "delta": {"stop_reason": reason, "stop_sequence": None},
                           "usage": messages_usage(self._inner.usage)}))
        out.append(_event({"type": "message_stop"}))
        self._ended = True

    def _error_event(self, error: dict[str, Any]) -> bytes:
        inner = self._inner.error
        if inner is not None:
            return stream_error_event(inner.message, _ERROR_TYPES.get(inner.error_class, "api_error"))
        return stream_error_event(str(error.get("message") or "upstream error"))


# ============================================================ native pass-through

# Frames that carry usage, the end or an error hold one of these; content deltas (the
# bulk of a stream) hold none and pass without being parsed.
_WATCHED = (b"message_start", b"message_delta", b"message_stop", b'"error"')


class AnthropicPassthroughStream:
    """Relays an Anthropic Messages stream unchanged (in whole frames, `\\n` line ends),
    noting usage, `message_stop` and `error` events."""

    __slots__ = ("usage", "complete", "error", "_framer", "_raw_usage")

    def __init__(self) -> None:
        self.usage = Usage()
        self.complete = False
        self.error: ProviderError | None = None
        self._framer = SseFramer()
        self._raw_usage: dict[str, int] = {}

    def feed(self, data: bytes) -> bytes:
        return self._watch(self._framer.feed(data))

    def finish(self) -> bytes:
        return self._watch(self._framer.finish())

    def _watch(self, frames: bytes) -> bytes:
        if frames and any(marker in frames for marker in _WATCHED):
            for frame in frames.split(b"\n\n"):
                if any(marker in frame for marker in _WATCHED):
                    self._read(frame)
        return frames

    def _read(self, frame: bytes) -> None:
        event = parse_frame(frame)
        if event is None:
            return
        try:
            data = orjson.loads(event.data)
        except orjson.JSONDecodeError:
            return
        if not isinstance(data, dict):
            return
        handler = _PASSTHROUGH_HANDLERS.get(data.get("type"))
        if handler is not None:
            handler(self, data)

    def _message_start(self, data: dict[str, Any]) -> None:
        message = data.get("message")
        if isinstance(message, dict):
            self._take_usage(message.get("usage"))

    def _message_delta(self, data: dict[str, Any]) -> None:
        self._take_usage(data.get("usage"))

    def _message_stop(self, _data: dict[str, Any]) -> None:
        self.complete = True

    def _error(self, data: dict[str, Any]) -> None:
        self.error = stream_error(data.get("error"))

    def _take_usage(self, usage: Any) -> None:
        # message_delta's counts are cumulative; those it leaves out keep message_start's.
        if isinstance(usage, dict):
            self._raw_usage.update({k: v for k, v in usage.items() if isinstance(v, int)})
            self.usage = usage_of(self._raw_usage)


_PASSTHROUGH_HANDLERS: dict[Any, Callable[[AnthropicPassthroughStream, dict[str, Any]], None]] = {
    "message_start": AnthropicPassthroughStream._message_start,
    "message_delta": AnthropicPassthroughStream._message_delta,
    "message_stop": AnthropicPassthroughStream._message_stop,
    "error": AnthropicPassthroughStream._error,
}


def passthrough_usage(body: bytes) -> Usage:
    """The usage of a native Anthropic JSON answer (zeros if it is not one)."""
    try:
        message = orjson.loads(body)
    except orjson.JSONDecodeError:
        return Usage()
    return usage_of(message.get("usage")) if isinstance(message, dict) else Usage()


# ============================================================ count_tokens estimate

_MEDIA_BLOCKS = ("image", "document")


def estimate_input_tokens(payload: dict[str, Any]) -> int:
    """count_tokens for backends that cannot count Claude tokens: the router's own estimate
    (`routing.needs`: ~4 characters a token, a flat cost per image or document and per message)."""
    chars = media = messages = 0
    system = payload.get("system")
    if system:
        messages += 1
        chars += _content_size(system)[0]
    for message in payload.get("messages") or ():
        if isinstance(message, dict):
            messages += 1
            text, blocks = _content_size(message.get("content"))
            chars, media = chars + text, media + blocks
    tools = payload.get("tools")
    if tools:
        chars += len(orjson.dumps(tools))
    return chars // CHARS_PER_TOKEN + media * TOKENS_PER_IMAGE + messages * TOKENS_PER_MESSAGE


def _content_size(content: Any) -> tuple[int, int]:
    """(characters of text, media blocks) in a content string or block list."""
    if isinstance(content, str):
        return len(content), 0
    chars = media = 0
    for block in content if isinstance(content, list) else ():
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text" and isinstance(block.get("text"), str):
            chars += len(block["text"])
        elif kind in _MEDIA_BLOCKS:
            media += 1
        elif kind == "tool_use":
            chars += len(str(block.get("name") or "")) + len(orjson.dumps(block.get("input")))
        elif kind == "tool_result":
            text, blocks = _content_size(block.get("content"))
            chars, media = chars + text, media + blocks
    return chars, media
