"""Anthropic's Messages API (`POST {base_url}/messages`, `anthropic-version: 2023-06-01`).

Request — an OpenAI chat request becomes a Messages body:
  - `system` and `developer` messages, wherever they stand, become the
    top-level `system` (text blocks, in order); other parts there are rejected.
  - `user`/`assistant` turns become `messages` of content blocks; consecutive
    turns of one role are merged (Anthropic requires alternation); empty text
    is skipped and turns left empty are dropped (Anthropic rejects both).
  - Parts: text -> text; `image_url` -> image (a `data:` URL -> base64 source,
    JPEG/PNG/GIF/WebP only; http(s) -> url source; `detail` dropped); `file`
    with a PDF data URL -> document. A `cache_control` on a part is kept, so
    callers can use Anthropic prompt caching. Audio and `file_id` are rejected.
  - Assistant `tool_calls` -> `tool_use` blocks (arguments parsed; invalid JSON
    is rejected); `tool` messages -> `tool_result` blocks in a user turn.
    Tool-call ids are rewritten to Anthropic's `[a-zA-Z0-9_-]` alphabet (the
    same way on both sides, so calls and results still pair up).
  - `max_completion_tokens` or `max_tokens` -> `max_tokens`, default 4096
    (Anthropic requires it); `stop` -> `stop_sequences`; `user` (or
    `safety_identifier`) -> `metadata.user_id`; `top_k` passes through.
  - `temperature` is capped at 1 (Anthropic's maximum; OpenAI allows 2).
    `top_p` is sent only without `temperature`: recent Claude models reject
    the two together.
  - `tools` (function tools only) -> `tools` with `input_schema`; `strict` is
    dropped. `tool_choice` auto/required/none/named -> auto/any/none/tool;
    `parallel_tool_calls: false` -> `disable_parallel_tool_use: true`.
  - `response_format` json_object/json_schema has no Anthropic equivalent:
    an instruction to answer with JSON only (quoting the schema, if given) is
    appended to the system prompt. The model is asked, not constrained.
  - Rejected (400, naming the field), because dropping them would change the
    answer the caller gets: `n` > 1, `logprobs`/`top_logprobs`, audio output
    (`audio`, `modalities` other than text), `web_search_options`, the legacy
    `functions`/`function_call`, and the `function` role.
  - Dropped as hints: `seed`, `presence_penalty`, `frequency_penalty`,
    `logit_bias`, `service_tier`, `reasoning_effort` (extended thinking is not
    enabled), `prediction`, `store`, `metadata`, `verbosity`,
    `prompt_cache_key`, `stream_options`; any other unknown field is ignored.

Response — text blocks are concatenated into `content` (null when the
answer is only tool calls); `tool_use` -> `tool_calls`; thinking and
server-tool blocks are left out. `stop_reason` -> `finish_reason` as in
`anthropic_stream.FINISH_REASONS` (`pause_turn` -> "stop", `refusal` ->
"content_filter"). Usage: prompt = input + cache writes + cache reads,
`cached_tokens` = cache reads. Streams: see `anthropic_stream`.

Errors — Anthropic's `{"type": "error", "error": {"type", "message"}}`,
classified by type first, HTTP status second (`anthropic_stream.error_class`).
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Any

import orjson

from dataplane.errors import ApiError, bad_request
from dataplane.providers.anthropic_stream import (
    AnthropicStream,
    error_class,
    finish_reason,
    usage_json,
    usage_of,
)
from dataplane.providers.base import ProviderError, Usage
from dataplane.providers.errors import parse_retry_after

ANTHROPIC_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096
MAX_TEMPERATURE = 1.0
_IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
_NOT_TOOL_ID = re.compile(r"[^a-zA-Z0-9_-]")
_EMPTY_SCHEMA = {"type": "object", "properties": {}}
_TOOL_CHOICES = {"auto": {"type": "auto"}, "required": {"type": "any"}, "none": {"type": "none"}}
_JSON_ONLY = "Respond with valid JSON only: no text before or after it and no Markdown code fences."


# --- request: OpenAI chat request -> Messages body -----------------------------


def messages_body(payload: dict[str, Any], upstream_model: str) -> dict[str, Any]:
    _reject_unexpressible(payload)
    system, messages = _conversation(payload.get("messages"))
    instruction = _json_instruction(payload.get("response_format"))
    if instruction:
        system.append({"type": "text", "text": instruction})
    body: dict[str, Any] = {"model": upstream_model, "max_tokens": _max_tokens(payload), "messages": messages}
    if system:
        body["system"] = system
    body.update(_sampling(payload))
    body.update(_tools(payload))
    user = payload.get("user") or payload.get("safety_identifier")
    if isinstance(user, str) and user:
        body["metadata"] = {"user_id": user}
    if payload.get("stream") is True:
        body["stream"] = True
    return body


def _reject_unexpressible(payload: dict[str, Any]) -> None:
    if payload.get("n") not in (None, 1):
        raise bad_request("Anthropic models return one choice per request: 'n' must be 1.", "n")
    for field in ("logprobs", "top_logprobs"):
        if payload.get(field):
            raise bad_request("Anthropic models do not return log probabilities.", field)
    modalities = payload.get("modalities")
    if payload.get("audio") is not None or (isinstance(modalities, list) and set(modalities) - {"text"}):
        raise bad_request("Anthropic models answer with text only: audio output is not available.", "modalities")
    if payload.get("web_search_options") is not None:
        raise bad_request("'web_search_options' is not supported for Anthropic models.", "web_search_options")
    for field in ("functions", "function_call"):
        if payload.get(field) is not None:
            raise bad_request(f"The legacy '{field}' parameter is not supported here; use 'tools'.", field)


def _conversation(messages: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(system blocks, alternating user/assistant turns) from OpenAI messages."""
    if not isinstance(messages, list):
        raise bad_request("'messages' must be an array of message objects", "messages")
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role in ("system", "developer"):
            system.extend(_system_blocks(message.get("content"), f"messages[{i}].content"))
            continue
        if role == "user":
            blocks = _blocks(message.get("content"), f"messages[{i}].content")
        elif role == "assistant":
            blocks = _assistant_blocks(message, i)
        elif role == "tool":
            role, blocks = "user", [_tool_result(message, i)]
        else:
            raise bad_request(f"messages[{i}] has a role Anthropic models do not support: {role!r}",
                              f"messages[{i}].role")
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    if not turns:
        raise bad_request("Anthropic models need at least one non-empty user or assistant message.", "messages")
    return system, turns


def _system_blocks(content: Any, where: str) -> list[dict[str, Any]]:
    blocks = _blocks(content, where)
    if any(block["type"] != "text" for block in blocks):
        raise bad_request("System and developer messages may contain only text for Anthropic models.", where)
    return blocks


def _blocks(content: Any, where: str) -> list[dict[str, Any]]:
    """Anthropic content blocks for an OpenAI `content` (string, parts, or null)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise bad_request(f"'{where}' must be a string or an array of content parts", where)
    blocks = [_part(part, f"{where}[{j}]") for j, part in enumerate(content)]
    return [block for block in blocks if block is not None]


def _part(part: Any, where: str) -> dict[str, Any] | None:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind in ("text", "refusal"):  # a refusal part is the assistant's earlier text
        text = part.get(kind)
        if not isinstance(text, str):
            raise bad_request(f"'{where}.{kind}' must be a string", where)
        if not text:
            return None
        block: dict[str, Any] = {"type": "text", "text": text}
    elif kind == "image_url":
        block = _image(part.get("image_url"), where)
    elif kind == "file":
        block = _document(part.get("file"), where)
    else:
        raise bad_request(f"Content parts of type {kind!r} are not supported for Anthropic models.", where)
    if isinstance(part.get("cache_control"), dict):
        block["cache_control"] = part["cache_control"]
    return block


def _image(image: Any, where: str) -> dict[str, Any]:
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str):
        raise bad_request(f"'{where}.image_url.url' must be a string", where)
    if url.startswith("data:"):
        media_type, data = _data_url(url, where)
        if media_type not in _IMAGE_TYPES:
            raise bad_request(f"Anthropic models accept JPEG, PNG, GIF and WebP images, not {media_type!r}.", where)
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    if url.startswith(("https://", "http://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise bad_request("An image URL must be an http(s) URL or a base64 data URL.", where)


def _document(file: Any, where: str) -> dict[str, Any]:
    data_url = file.get("file_data") if isinstance(file, dict) else None
    if not isinstance(data_url, str):
        # A `file_id` names a file stored at OpenAI, which Anthropic cannot read.
        raise bad_request("For Anthropic models a file must be sent inline as 'file_data'.", where)
    media_type, data = _data_url(data_url, where)
    if media_type != "application/pdf":
        raise bad_request(f"Anthropic models accept PDF files, not {media_type!r}.", where)
    return {"type": "document", "source": {"type": "base64", "media_type": media_type, "data": data}}


def _data_url(url: str, where: str) -> tuple[str, str]:
    """(media type, base64 data) of a `data:<type>[;param];base64,<data>` URL."""
    header, comma, data = url.partition(",")
    params = header.removeprefix("data:").split(";")
    if not comma or params[-1] != "base64" or not data:
        raise bad_request("A data URL must be base64-encoded: 'data:<media type>;base64,<data>'.", where)
    return params[0].strip().lower(), data


def _assistant_blocks(message: dict[str, Any], i: int) -> list[dict[str, Any]]:
    blocks = _blocks(message.get("content"), f"messages[{i}].content")
    calls = message.get("tool_calls") or []
    if not isinstance(calls, list):
        raise bad_request(f"'messages[{i}].tool_calls' must be an array", f"messages[{i}].tool_calls")
    return blocks + [_tool_use(call, f"messages[{i}].tool_calls") for call in calls]


def _tool_use(call: Any, where: str) -> dict[str, Any]:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not call.get("id"):
        raise bad_request(f"Each of '{where}' needs an 'id' and a 'function' with a 'name'.", where)
    arguments = function.get("arguments")
    if isinstance(arguments, str):
        try:
            arguments = orjson.loads(arguments) if arguments.strip() else {}
        except orjson.JSONDecodeError:
            raise bad_request(f"The arguments in '{where}' are not valid JSON.", where) from None
    if not isinstance(arguments, dict):
        raise bad_request(f"The arguments in '{where}' must be a JSON object for Anthropic models.", where)
    return {"type": "tool_use", "id": _tool_id(call["id"]), "name": function["name"], "input": arguments}


def _tool_result(message: dict[str, Any], i: int) -> dict[str, Any]:
    call_id = message.get("tool_call_id")
    if not isinstance(call_id, str) or not call_id:
        raise bad_request(f"'messages[{i}].tool_call_id' is required", f"messages[{i}].tool_call_id")
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": _tool_id(call_id)}
    content = _blocks(message.get("content"), f"messages[{i}].content")
    if content:
        block["content"] = content
    return block


def _tool_id(call_id: Any) -> str:
    # Ids minted by other providers may hold characters Anthropic rejects
    # (`^[a-zA-Z0-9_-]+$`); rewriting both the call and its result keeps them paired.
    return _NOT_TOOL_ID.sub("_", str(call_id))


def _max_tokens(payload: dict[str, Any]) -> int:
    for field in ("max_completion_tokens", "max_tokens"):  # the first is OpenAI's current name
        if payload.get(field) is not None:
            return payload[field]
    return DEFAULT_MAX_TOKENS


def _sampling(payload: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    temperature = payload.get("temperature")
    if temperature is not None:
        is_number = isinstance(temperature, int | float) and not isinstance(temperature, bool)
        out["temperature"] = min(temperature, MAX_TEMPERATURE) if is_number else temperature
    elif payload.get("top_p") is not None:
        out["top_p"] = payload["top_p"]
    if payload.get("top_k") is not None:  # Anthropic's own sampling knob, sent as an extra field
        out["top_k"] = payload["top_k"]
    stop = payload.get("stop")
    stop = [stop] if isinstance(stop, str) else stop or []
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise bad_request("'stop' must be a string or an array of strings", "stop")
    if any(stop):
        out["stop_sequences"] = [s for s in stop if s]
    return out


def _tools(payload: dict[str, Any]) -> dict[str, Any]:
    tools = payload.get("tools")
    if not tools:
        return {}  # a tool_choice without tools has nothing to choose from
    out: dict[str, Any] = {"tools": [_tool(tool, f"tools[{k}]") for k, tool in enumerate(tools)]}
    choice = _tool_choice(payload.get("tool_choice"))
    if payload.get("parallel_tool_calls") is False and (choice or {}).get("type") != "none":
        choice = {**(choice or {"type": "auto"}), "disable_parallel_tool_use": True}
    if choice:
        out["tool_choice"] = choice
    return out


def _tool(tool: Any, where: str) -> dict[str, Any]:
    function = tool.get("function") if isinstance(tool, dict) and tool.get("type") == "function" else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise bad_request("Anthropic models support function tools only, each with a 'name'.", where)
    out: dict[str, Any] = {"name": function["name"]}
    if function.get("description"):
        out["description"] = function["description"]
    out["input_schema"] = function.get("parameters") or _EMPTY_SCHEMA
    return out


def _tool_choice(choice: Any) -> dict[str, Any] | None:
    if choice is None:
        return None
    if isinstance(choice, str) and choice in _TOOL_CHOICES:
        return dict(_TOOL_CHOICES[choice])
    function = choice.get("function") if isinstance(choice, dict) else None
    if isinstance(function, dict) and isinstance(function.get("name"), str):
        return {"type": "tool", "name": function["name"]}
    raise bad_request("'tool_choice' must be 'auto', 'required', 'none' or a named function", "tool_choice")


def _json_instruction(response_format: Any) -> str | None:
    """The system-prompt instruction standing in for `response_format`."""
    if response_format is None:
        return None
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return _JSON_ONLY
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not schema:
            return _JSON_ONLY
        return f"{_JSON_ONLY} The JSON must conform to this JSON Schema:\n{orjson.dumps(schema).decode()}"
    raise bad_request(f"'response_format' type {kind!r} is not supported", "response_format")


# --- response: Messages answer -> chat.completion -------------------------------


def completion(message: dict[str, Any], model: str) -> tuple[dict[str, Any], Usage]:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in message.get("content") or []:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            texts.append(str(block.get("text") or ""))
        elif kind == "tool_use":
            arguments = orjson.dumps(block.get("input") or {}).decode()
            calls.append({"id": block.get("id"), "type": "function",
                          "function": {"name": block.get("name"), "arguments": arguments}})
    answer: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts or not calls else None,
                              "refusal": None}
    if calls:
        answer["tool_calls"] = calls
    usage = usage_of(message.get("usage"))
    body = {
        "id": f"chatcmpl-{message.get('id') or ''}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": answer, "logprobs": None,
                     "finish_reason": finish_reason(message.get("stop_reason"))}],
        "usage": usage_json(usage),
    }
    return body, usage


# --- the adapter ---------------------------------------------------------------


class AnthropicAdapter:
    kind = "anthropic"
    supports_embeddings = False
    supports_completions = False  # legacy completions are translated through chat

    def auth_headers(self, secret: str | None) -> dict[str, str]:
        # The version header is required on every request, keyed or not.
        headers = {"anthropic-version": ANTHROPIC_VERSION}
        if secret:
            headers["x-api-key"] = secret
        return headers

    def chat_url(self, base_url: str, options: Mapping[str, str], upstream_model: str, stream: bool) -> str:
        return f"{base_url}/messages"

    def chat_request(self, payload: dict[str, Any], upstream_model: str) -> bytes:
        return orjson.dumps(messages_body(payload, upstream_model))

    def chat_response(self, body: bytes, model: str) -> tuple[bytes, Usage]:
        try:
            message = orjson.loads(body)
        except orjson.JSONDecodeError:
            message = None
        if not isinstance(message, dict):
            # Passing Anthropic's own shape on would break every OpenAI client.
            raise ApiError(502, "the upstream returned a response that is not a JSON message",
                           type="server_error", code="upstream_error")
        answer, usage = completion(message, model)
        return orjson.dumps(answer), usage

    def chat_stream(self, model: str, include_usage: bool) -> AnthropicStream:
        return AnthropicStream(model, include_usage)

    def classify_error(self, status: int, headers: Mapping[str, str], body: bytes) -> ProviderError:
        message, error_type = f"HTTP {status}", None
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            parsed = None
        inner = parsed.get("error") if isinstance(parsed, dict) else None
        if isinstance(inner, dict):
            message = str(inner.get("message") or message)
            error_type = inner.get("type") if isinstance(inner.get("type"), str) else None
        return ProviderError(
            error_class(status, error_type, message),
            message,
            status=status,
            code=error_type,
            retry_after_s=parse_retry_after(headers) if status == 429 or status >= 500 else None,
        )

    def embeddings_request(
        self, base_url: str, options: Mapping[str, str], payload: dict[str, Any], upstream_model: str
    ) -> tuple[str, bytes]:
        raise _no_embeddings()

    def embeddings_response(self, body: bytes, model: str, payload: dict | None = None) -> tuple[bytes, Usage]:
        raise _no_embeddings()


def _no_embeddings() -> ApiError:
    return ApiError(400, "Anthropic has no embeddings API; this model cannot serve embeddings.", param="model",
                    code="embeddings_not_supported")
