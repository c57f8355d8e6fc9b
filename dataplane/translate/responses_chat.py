"""The OpenAI Responses API (`POST /v1/responses`) <-> the canonical chat shape.

Every backend serves Responses clients through its chat adapter: the request is
checked (`check_responses_request`), turned into an OpenAI chat request
(`responses_to_chat`), and the chat answer turned back into a `response` object
(`chat_to_response`) or a Responses event stream (`ChatToResponsesStream`).

Zero data retention — the gateway stores nothing, so everything the API keeps
server-side is refused with a 400, code `retention_not_supported`
(`retention_error`), telling the client to send the whole conversation in
`input`: `previous_response_id`, `conversation`, `background: true`, `prompt`
(stored prompt templates) and `item_reference` input items. `store` is accepted
and always answered `false`; `GET /v1/responses/{id}` is a 404, code
`response_not_found` (`not_retained_error`).

Request — Responses field                 -> chat field
  `model`                                 -> `model`
  `instructions`                          -> a leading `system` message
  `input` (a string)                      -> one `user` message
  message item {role, content}            -> {role, content}; role kept (user,
                                             assistant, system, developer)
    input_text / output_text {text}       -> {"type": "text", text}
    refusal {refusal} (assistant)         -> {"type": "refusal", refusal}
    input_image {image_url, detail}       -> {"type": "image_url", image_url: {url, detail}}
                                             (`original` -> `high`, unset -> `auto`)
    input_file {file_data, filename}      -> {"type": "file", file: {file_data, filename}}
    input_audio {input_audio}             -> {"type": "input_audio", input_audio}
  function_call items (consecutive)       -> ONE assistant message with `tool_calls`
                                             ({id: call_id, function: {name, arguments}}),
                                             joined to the assistant message just before
  function_call_output {call_id, output}  -> {"role": "tool", tool_call_id, content}
  reasoning items                         -> dropped (chat cannot carry them back)
  `tools` (function tools)                -> [{"type": "function", function: {name,
                                             description, parameters, strict}}]
  `tool_choice` none/auto/required        -> the same string
  `tool_choice` {type: function, name}    -> {"type": "function", function: {name}}
  `parallel_tool_calls`                   -> `parallel_tool_calls`
      (`tool_choice` and `parallel_tool_calls` only with `tools`: chat refuses them alone)
  `text.format` json_schema               -> `response_format` {"type": "json_schema",
                                             json_schema: {name, schema, strict, description}}
  `text.format` json_object               -> `response_format` {"type": "json_object"}
  `max_output_tokens`                     -> `max_tokens`
  `temperature`, `top_p`, `service_tier`  -> the same
  `user` (else `safety_identifier`)       -> `user`
  `reasoning.effort`                      -> `reasoning_effort`
  `stream: true`                          -> `stream: true`, `stream_options: {include_usage: true}`
  Accepted and dropped (chat has no field for them, or they ask nothing of the
  model): `store`, `metadata` (echoed back), `include`, `truncation`,
  `prompt_cache_key`, `text.verbosity`, `reasoning.summary`, `top_logprobs`,
  `max_tool_calls` (it limits built-in tools, which are refused),
  `stream_options`. Fields the API does not document are allowed but not sent:
  they would name Responses features a chat endpoint would reject.
  Refused with a 400 naming the field, because the gateway cannot do them:
  tools other than functions (web_search, file_search, computer_use, mcp,
  code_interpreter, image_generation, …), `file_id` (there is no file store),
  `input_file.file_url` (the gateway fetches nothing), input items other than
  the above, image or file parts in a function_call_output.

Response — chat.completion                -> response
  `message.content` (text)                -> a `message` output item with one
                                             `output_text` part (no item without text)
  `message.refusal`                       -> a `refusal` part of that item
  each `message.tool_calls[i]`            -> a `function_call` item {call_id: id, name,
                                             arguments}, after the message
  `finish_reason` length / content_filter -> status `incomplete`, incomplete_details
                                             {reason: max_output_tokens / content_filter}
  `usage` prompt/completion/total tokens  -> `usage` input/output/total tokens, with
    cached_tokens and reasoning_tokens details
  The request's settings are echoed as the real API does (`instructions`,
  `tools`, `tool_choice`, `temperature`, `text`, `reasoning`, `metadata`, …,
  with its defaults), `store: false`, `previous_response_id: null`.

Streams: see `ChatToResponsesStream`.
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from dataplane.codecs.sse import SseDecoder, SseEvent, encode
from dataplane.errors import ApiError, ClientError, bad_request
from dataplane.providers.base import ErrorClass, StreamTranslator
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

RETENTION_NOT_SUPPORTED = "retention_not_supported"
RESPONSE_NOT_FOUND = "response_not_found"

# What each refused field would need the gateway to have kept.
_RETAINED = {
    "previous_response_id": "there is no stored response to continue from",
    "conversation": "there are no stored conversations",
    "background": "background mode needs the response stored for polling",
    "prompt": "there are no stored prompt templates",
    "input": "there are no stored items to reference",
}


def retention_error(param: str) -> ClientError:
    """The 400 for a field that refers to state the gateway would have had to retain."""
    base = param.split(".", 1)[0].split("[", 1)[0]
    why = _RETAINED.get(base, "nothing is stored")
    return bad_request(
        f"'{param}' is not supported: this gateway retains no data (zero data retention), so {why}. "
        "Send the whole conversation in 'input' instead, including any earlier output items "
        "the model should see.",
        param,
        RETENTION_NOT_SUPPORTED,
    )


def not_retained_error(response_id: str) -> ApiError:
    """The 404 for `GET /v1/responses/{id}` (and the other calls on a stored response)."""
    return ClientError(
        404,
        f"Response '{response_id}' not found: this gateway retains no responses (zero data retention). "
        "Keep the response your request returned, and send the conversation in 'input' to continue it.",
        code=RESPONSE_NOT_FOUND,
    )


# ------------------------------------------------------------------ validation

def _type_name(value: Any) -> str:
    return "null" if value is None else {bool: "boolean", int: "integer", float: "number", str: "string",
                                          list: "array", dict: "object"}.get(type(value), type(value).__name__)


def _wrong_type(param: str, expected: str, value: Any) -> ClientError:
    return bad_request(f"Invalid type for '{param}': expected {expected}, but got {_type_name(value)}.", param)


def _missing(param: str) -> ClientError:
    return bad_request(f"Missing required parameter: '{param}'.", param)


def _no_file_store(send_instead: str) -> Check:
    def check(value: Any, param: str) -> None:
        raise bad_request(f"'{param}' is not supported: this gateway has no file store (it retains nothing); "
                          f"{send_instead}.", param)
    return check


def _not_fetched(value: Any, param: str) -> None:
    raise bad_request(f"'{param}' is not supported: this gateway does not fetch files; "
                      "send the file's content in 'file_data'.", param)


def _required(check: Check, *names: str) -> Check:
    """`check` (a `fields` spec), then the first of `names` must be present."""
    def checked(value: Any, param: str) -> None:
        check(value, param)
        if all(value.get(name) is None for name in names):
            raise _missing(f"{param}.{names[0]}")
    return checked


_ITEM_STATUS = one_of("in_progress", "completed", "incomplete")
_TEXT_PART = fields({"text": string}, required=("text",))
_INPUT_PARTS: dict[str, Check] = {
    "input_text": _TEXT_PART,
    # `file_id` is listed last so that a part naming one is refused for it, not for a missing URL.
    "input_image": _required(fields({"image_url": string, "detail": one_of("auto", "low", "high", "original"),
                                     "file_id": _no_file_store("send the image in 'image_url' "
                                                               "(a URL or a data: URL)")}), "image_url"),
    "input_file": _required(fields({"file_data": string, "filename": string, "file_url": _not_fetched,
                                    "file_id": _no_file_store("send the file's content in 'file_data'")}),
                            "file_data"),
    "input_audio": fields({"input_audio": fields({"data": string, "format": one_of("mp3", "wav")},
                                                 required=("data", "format"))}, required=("input_audio",)),
}
_ASSISTANT_PARTS: dict[str, Check] = {
    "output_text": _TEXT_PART,
    "refusal": fields({"refusal": string}, required=("refusal",)),
}
_TOOL_OUTPUT_PARTS: dict[str, Check] = {"input_text": _TEXT_PART}


def _part(allowed: dict[str, Check], where: str) -> Check:
    def check(value: Any, param: str) -> None:
        obj(value, param)
        kind = value.get("type")
        if kind is None:
            raise _missing(f"{param}.type")
        item_check = allowed.get(kind) if isinstance(kind, str) else None
        if item_check is None:
            raise bad_request(f"Invalid value for '{param}.type': {kind!r}. Supported values {where} are: "
                              f"{', '.join(allowed)}.", f"{param}.type")
        item_check(value, param)
    return check


def _string_or_parts(part: Check, expected: str) -> Check:
    parts = array_of(part, 1)

    def check(value: Any, param: str) -> None:
        if isinstance(value, list):
            parts(value, param)
        elif not isinstance(value, str):
            raise _wrong_type(param, expected, value)
    return check


_USER_CONTENT = _string_or_parts(_part(_INPUT_PARTS, "for user, system and developer messages"),
                                 "a string or an array of input content parts")
_ASSISTANT_CONTENT = _string_or_parts(_part(_ASSISTANT_PARTS, "for assistant messages"),
                                      "a string or an array of output_text and refusal parts")
_ROLES = ("user", "assistant", "system", "developer")
_MESSAGE_EXTRAS = fields({"id": string, "status": _ITEM_STATUS, "phase": one_of("commentary", "final_answer")})


def _message(item: dict[str, Any], param: str) -> None:
    role = item.get("role")
    if role is None:
        raise _missing(f"{param}.role")
    if role not in _ROLES:
        raise bad_request(f"Invalid value for '{param}.role': {role!r}. Supported values are: {', '.join(_ROLES)}.",
                          f"{param}.role")
    content = item.get("content")
    if content is None:
        raise _missing(f"{param}.content")
    (_ASSISTANT_CONTENT if role == "assistant" else _USER_CONTENT)(content, f"{param}.content")
    _MESSAGE_EXTRAS(item, param)


_FUNCTION_CALL = fields({"call_id": string, "name": string, "arguments": string, "id": string,
                         "status": _ITEM_STATUS}, required=("call_id", "name", "arguments"))
_FUNCTION_CALL_OUTPUT = fields(
    {"call_id": string, "id": string, "status": _ITEM_STATUS,
     "output": _string_or_parts(_part(_TOOL_OUTPUT_PARTS, "in a function_call_output through this gateway"),
                                "a string or an array of input_text parts")},
    required=("call_id", "output"))
_REASONING = fields({"id": string, "summary": array_of(obj), "encrypted_content": string})
_SERVED_ITEMS = "message, function_call, function_call_output and reasoning"


def _item_type(item: dict[str, Any], param: str) -> str:
    kind = item.get("type")
    if kind is None:
        if "role" in item:
            return "message"  # the "easy" message form leaves the type out
        raise _missing(f"{param}.type")
    if not isinstance(kind, str):
        raise _wrong_type(f"{param}.type", "a string", kind)
    return kind


def _check_input(value: Any) -> None:
    if isinstance(value, str):
        if not value:
            raise bad_request("Invalid 'input': it must not be empty.", "input")
        return
    if not isinstance(value, list):
        raise _wrong_type("input", "a string or an array of input items", value)
    if not value:
        raise bad_request("Invalid 'input': expected a non-empty array of input items.", "input")
    call_ids: set[str] = set()  # a function_call_output must answer a call made earlier in `input`
    for index, item in enumerate(value):
        param = f"input[{index}]"
        obj(item, param)
        kind = _item_type(item, param)
        if kind == "message":
            _message(item, param)
        elif kind == "function_call":
            _FUNCTION_CALL(item, param)
            call_ids.add(item["call_id"])
        elif kind == "function_call_output":
            _FUNCTION_CALL_OUTPUT(item, param)
            if item["call_id"] not in call_ids:
                raise bad_request(f"No tool call found for function call output with call_id {item['call_id']!r}: "
                                  "the function_call item must come earlier in 'input'.", f"{param}.call_id")
        elif kind == "reasoning":
            _REASONING(item, param)
        elif kind == "item_reference":
            raise retention_error(f"{param}.type")
        else:
            raise bad_request(f"Input items of type {kind!r} are not supported through this gateway: "
                              f"only {_SERVED_ITEMS} items are.", f"{param}.type")


_FUNCTION_TOOL = fields({"name": string, "description": string, "parameters": obj, "strict": boolean},
                        required=("name",))


def _tool(value: Any, param: str) -> None:
    obj(value, param)
    kind = value.get("type")
    if kind is None:
        raise _missing(f"{param}.type")
    if kind != "function":
        raise bad_request(f"Tools of type {kind!r} are not supported through this gateway: only function tools "
                          "(type 'function') are.", f"{param}.type")
    _FUNCTION_TOOL(value, param)


def _check_tool_choice(payload: dict[str, Any]) -> None:
    choice = payload.get("tool_choice")
    if choice is None:
        return
    declared = {tool["name"] for tool in payload.get("tools") or ()}
    if isinstance(choice, str):
        one_of("none", "auto", "required")(choice, "tool_choice")
        if choice == "required" and not declared:
            raise bad_request("'tool_choice' is 'required' but no function tools are declared in 'tools'.",
                              "tool_choice")
        return
    if not isinstance(choice, dict):
        raise _wrong_type("tool_choice", "'none', 'auto', 'required' or an object naming a function", choice)
    if choice.get("type") != "function":
        raise bad_request(f"Invalid value for 'tool_choice.type': {choice.get('type')!r}. Only 'function' is "
                          "supported through this gateway.", "tool_choice.type")
    fields({"name": string}, required=("name",))(choice, "tool_choice")
    if choice["name"] not in declared:
        raise bad_request(f"Invalid value for 'tool_choice.name': {choice['name']!r} is not one of the function "
                          "tools declared in 'tools'.", "tool_choice.name")


_SCHEMA_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
_JSON_SCHEMA = fields({"name": string, "schema": obj, "strict": boolean, "description": string},
                      required=("name", "schema"))


def _text_format(value: Any, param: str) -> None:
    fields({"type": one_of("text", "json_object", "json_schema")}, required=("type",))(value, param)
    if value["type"] == "json_schema":
        _JSON_SCHEMA(value, param)
        if not _SCHEMA_NAME.fullmatch(value["name"]):
            raise bad_request(f"Invalid '{param}.name': it must be 1 to 64 letters, digits, '_' or '-'.",
                              f"{param}.name")


def _metadata(value: Any, param: str) -> None:
    obj(value, param)
    if len(value) > 16:
        raise bad_request(f"Invalid '{param}': at most 16 keys are allowed, got {len(value)}.", param)
    for key, item in value.items():
        where = f"{param}.{key}"
        if len(key) > 64:
            raise bad_request(f"Invalid '{param}': keys are at most 64 characters long.", where)
        string(item, where)
        if len(item) > 512:
            raise bad_request(f"Invalid '{where}': values are at most 512 characters long.", where)


_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")
_SUMMARIES = one_of("auto", "concise", "detailed")

RESPONSES_FIELDS: dict[str, Check] = {
    "instructions": string,
    "max_output_tokens": integer(1),
    "temperature": number(0, 2),
    "top_p": number(0, 1),
    "tools": array_of(_tool),
    "parallel_tool_calls": boolean,
    "text": fields({"format": _text_format, "verbosity": one_of("low", "medium", "high")}),
    "reasoning": fields({"effort": one_of(*_EFFORTS), "summary": _SUMMARIES, "generate_summary": _SUMMARIES}),
    "stream": boolean,
    "stream_options": fields({"include_obfuscation": boolean}),
    "store": boolean,
    "metadata": _metadata,
    "user": string,
    "safety_identifier": string,
    "prompt_cache_key": string,
    "include": array_of(string),
    "truncation": one_of("auto", "disabled"),
    "top_logprobs": integer(0, 20),
    "service_tier": string,
    "max_tool_calls": integer(1),
}


def check_responses_request(payload: dict[str, Any]) -> None:
    """A 400 naming the field for anything wrong in a Responses create request."""
    model_name(payload)
    # Before `input`: a client relying on stored state may have left `input` out.
    for name in ("previous_response_id", "conversation", "prompt"):
        if payload.get(name) is not None:
            raise retention_error(name)
    background = payload.get("background")
    if background is not None:
        boolean(background, "background")
        if background:
            raise retention_error("background")
    if payload.get("input") is None:
        raise _missing("input")
    _check_input(payload["input"])
    check_fields(payload, RESPONSES_FIELDS)
    _check_tool_choice(payload)


# ------------------------------------------------------------------ request: Responses -> chat

# Plain copies: same name, same meaning in both APIs.
_COPIED = ("temperature", "top_p", "service_tier")
_CHAT_DETAIL = {"original": "high"}  # chat knows auto/low/high; `original` is the full-resolution ask


def _text(part: dict[str, Any]) -> dict[str, Any]:
    return {"type": "text", "text": part["text"]}


def _image(part: dict[str, Any]) -> dict[str, Any]:
    detail = part.get("detail") or "auto"
    return {"type": "image_url", "image_url": {"url": part["image_url"], "detail": _CHAT_DETAIL.get(detail, detail)}}


def _file(part: dict[str, Any]) -> dict[str, Any]:
    file = {"file_data": part["file_data"]}
    if part.get("filename") is not None:
        file["filename"] = part["filename"]
    return {"type": "file", "file": file}


_CHAT_PARTS = {
    "input_text": _text,
    "output_text": _text,
    "refusal": lambda part: {"type": "refusal", "refusal": part["refusal"]},
    "input_image": _image,
    "input_file": _file,
    "input_audio": lambda part: {"type": "input_audio", "input_audio": dict(part["input_audio"])},
}


def _chat_content(content: str | list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    return content if isinstance(content, str) else [_CHAT_PARTS[part["type"]](part) for part in content]


def _chat_messages(payload: dict[str, Any]) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    if payload.get("instructions"):
        messages.append({"role": "system", "content": payload["instructions"]})
    source = payload["input"]
    if isinstance(source, str):
        messages.append({"role": "user", "content": source})
        return messages
    for item in source:
        kind = item.get("type") or "message"
        if kind == "message":
            messages.append({"role": item["role"], "content": _chat_content(item["content"])})
        elif kind == "function_call":
            call = {"id": item["call_id"], "type": "function",
                    "function": {"name": item["name"], "arguments": item["arguments"]}}
            last = messages[-1] if messages else None
            # One model turn is [message?, function_call…] in Responses; one assistant message in chat.
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item["output"]
            messages.append({"role": "tool", "tool_call_id": item["call_id"],
                             "content": output if isinstance(output, str) else [_text(part) for part in output]})
        # reasoning items: dropped — chat has no way to hand them back to the model
    return messages


def _chat_tool(tool: dict[str, Any]) -> dict[str, Any]:
    function = {name: tool[name] for name in ("name", "description", "parameters", "strict")
                if tool.get(name) is not None}
    return {"type": "function", "function": function}


def _chat_tool_choice(choice: str | dict[str, Any]) -> str | dict[str, Any]:
    return choice if isinstance(choice, str) else {"type": "function", "function": {"name": choice["name"]}}


def _response_format(text: dict[str, Any] | None) -> dict[str, Any] | None:
    form = (text or {}).get("format")
    if not form or form["type"] == "text":
        return None
    if form["type"] == "json_object":
        return {"type": "json_object"}
    schema = {name: form[name] for name in ("name", "schema", "strict", "description") if form.get(name) is not None}
    return {"type": "json_schema", "json_schema": schema}


def responses_to_chat(payload: dict[str, Any]) -> dict[str, Any]:
    """The OpenAI chat request equivalent to a checked Responses request.

    Builds new containers throughout and never writes to `payload`; leaf values
    (schemas, strings) are shared, so whoever holds the result must not mutate them.
    """
    chat: dict[str, Any] = {"model": payload["model"], "messages": _chat_messages(payload)}
    for name in _COPIED:
        if payload.get(name) is not None:
            chat[name] = payload[name]
    if payload.get("max_output_tokens") is not None:
        chat["max_tokens"] = payload["max_output_tokens"]
    user = payload.get("user") or payload.get("safety_identifier")
    if user:
        chat["user"] = user
    if payload.get("tools"):
        chat["tools"] = [_chat_tool(tool) for tool in payload["tools"]]
        if payload.get("tool_choice") is not None:
            chat["tool_choice"] = _chat_tool_choice(payload["tool_choice"])
        if payload.get("parallel_tool_calls") is not None:
            chat["parallel_tool_calls"] = payload["parallel_tool_calls"]
    response_format = _response_format(payload.get("text"))
    if response_format is not None:
        chat["response_format"] = response_format
    effort = (payload.get("reasoning") or {}).get("effort")
    if effort is not None:
        chat["reasoning_effort"] = effort
    if payload.get("stream") is True:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}  # the usage Responses reports at the end
    return chat


# ------------------------------------------------------------------ response: chat -> Responses

# finish_reason -> incomplete_details.reason; any other finish is a completed response.
_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}
# The service tiers the Responses `service_tier` field takes; a provider's own names are not echoed.
_SERVICE_TIERS = frozenset({"auto", "default", "flex", "scale", "priority", "fast", "ultrafast"})
# The codes `response.error` takes (openai.types.responses.ResponseError) that a chat failure can mean.
_FAILURE_CODES = frozenset({"server_error", "rate_limit_exceeded", "invalid_prompt"})


def _new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(24)}"


def _now() -> int:
    return int(time.time())


def _usage(input_tokens: int, output_tokens: int, cached: int = 0, reasoning: int = 0,
           total: int | None = None) -> dict[str, Any]:
    return {
        "input_tokens": input_tokens,
        # Cache writes are not reported through chat; Responses requires the field.
        "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": total if total is not None else input_tokens + output_tokens,
    }


def _count(details: Any, name: str) -> int:
    value = details.get(name) if isinstance(details, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _usage_from_chat(usage: Any) -> dict[str, Any] | None:
    if not isinstance(usage, dict):
        return None
    total = usage.get("total_tokens")
    return _usage(_count(usage, "prompt_tokens"), _count(usage, "completion_tokens"),
                  _count(usage.get("prompt_tokens_details"), "cached_tokens"),
                  _count(usage.get("completion_tokens_details"), "reasoning_tokens"),
                  total if isinstance(total, int) else None)


def _echo_tool(tool: dict[str, Any]) -> dict[str, Any]:
    return {"type": "function", "name": tool["name"], "description": tool.get("description"),
            "parameters": tool.get("parameters"), "strict": tool.get("strict")}


def _response(request: dict[str, Any], model: str, response_id: str, created_at: int, status: str,
              output: list[dict[str, Any]], usage: dict[str, Any] | None, incomplete: str | None = None,
              error: dict[str, Any] | None = None, service_tier: Any = None) -> dict[str, Any]:
    """A `response` object; the request's settings echoed with the real API's defaults."""
    text = request.get("text") or {}
    reasoning = request.get("reasoning") or {}
    if service_tier not in _SERVICE_TIERS:
        service_tier = request.get("service_tier", "auto")
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "completed_at": _now() if status == "completed" else None,
        "background": False,
        "error": error,
        "incomplete_details": {"reason": incomplete} if incomplete else None,
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        "max_tool_calls": request.get("max_tool_calls"),
        "model": model,
        "output": output,
        "parallel_tool_calls": request.get("parallel_tool_calls", True),
        "previous_response_id": None,
        "prompt_cache_key": request.get("prompt_cache_key"),
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "safety_identifier": request.get("safety_identifier"),
        "service_tier": service_tier,
        "store": False,  # zero data retention: whatever was asked, nothing was stored
        "temperature": request.get("temperature", 1.0),
        "text": {"format": text.get("format") or {"type": "text"}, "verbosity": text.get("verbosity", "medium")},
        "tool_choice": request.get("tool_choice", "auto"),
        "tools": [_echo_tool(tool) for tool in request.get("tools") or ()],
        "top_logprobs": request.get("top_logprobs", 0),
        "top_p": request.get("top_p", 1.0),
        "truncation": request.get("truncation", "disabled"),
        "usage": usage,
        "user": request.get("user"),
        "metadata": request.get("metadata") or {},
    }


def _output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _message_item(item_id: str, status: str, content: list[dict[str, Any]]) -> dict[str, Any]:
    return {"id": item_id, "type": "message", "role": "assistant", "status": status, "content": content}


def _call_item(item_id: str, call_id: str, name: str, arguments: str, status: str) -> dict[str, Any]:
    return {"id": item_id, "type": "function_call", "status": status, "call_id": call_id, "name": name,
            "arguments": arguments}


def _chat_text(content: Any) -> str:
    if isinstance(content, list):  # a few providers answer with parts
        return "".join(part.get("text") or "" for part in content if isinstance(part, dict))
    return content if isinstance(content, str) else ""


def chat_to_response(chat: dict[str, Any], request: dict[str, Any], model: str,
                     response_id: str | None = None) -> dict[str, Any]:
    """The Responses `response` object for a chat.completion body answering `request`."""
    choices = chat.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
    incomplete = _INCOMPLETE.get(choice.get("finish_reason"))
    content = []
    text = _chat_text(message.get("content"))
    if text:
        content.append(_output_text(text))
    if isinstance(message.get("refusal"), str) and message["refusal"]:
        content.append({"type": "refusal", "refusal": message["refusal"]})
    output = [_message_item(_new_id("msg"), "incomplete" if incomplete else "completed", content)] if content else []
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        output.append(_call_item(_new_id("fc"), call.get("id") or _new_id("call"), function.get("name") or "",
                                 function.get("arguments") or "", "completed"))
    created = chat.get("created")
    return _response(request, model, response_id or _new_id("resp"),
                     created if isinstance(created, int) else _now(),
                     "incomplete" if incomplete else "completed", output, _usage_from_chat(chat.get("usage")),
                     incomplete, service_tier=chat.get("service_tier"))


# ------------------------------------------------------------------ streams: chat SSE -> Responses events

def _error_event(sequence_number: int, message: str, code: str | None, param: str | None = None,
                 error_type: str = "server_error") -> bytes:
    data = {
        "type": "error", "sequence_number": sequence_number, "code": code, "message": message, "param": param,
        # The nested object is what the live API sends (the fields above are what it documents): the
        # official SDKs raise an APIError on it, so a client cannot mistake a failed stream for a short one.
        "error": {"type": error_type, "code": code, "message": message, "param": param},
    }
    return encode(orjson.dumps(data), "error")


def stream_error_event(message: str, code: str, sequence_number: int = 0) -> bytes:
    """A Responses `error` event for an upstream that broke mid-stream (appended by the relay).

    The relay does not know how many events went before it, so `sequence_number` is what the
    caller says (0 by default); `ChatToResponsesStream.fail` numbers it right, and adds the
    `response.failed` event.
    """
    return _error_event(sequence_number, message, code)


@dataclass(slots=True)
class _Message:
    id: str
    output_index: int
    parts: list[dict[str, Any]] = field(default_factory=list)   # output_text / refusal, as they grow
    open_part: bool = False
    status: str = "in_progress"

    def as_output(self) -> dict[str, Any]:
        return _message_item(self.id, self.status, [dict(part) for part in self.parts])


@dataclass(slots=True)
class _Call:
    id: str
    output_index: int
    call_id: str
    name: str
    arguments: list[str] = field(default_factory=list)
    status: str = "in_progress"

    def as_output(self) -> dict[str, Any]:
        return _call_item(self.id, self.call_id, self.name, "".join(self.arguments), self.status)


_PART_FIELD = {"output_text": "text", "refusal": "refusal"}  # the part type's text field
_DELTA_EVENT = {"output_text": "response.output_text", "refusal": "response.refusal"}


class ChatToResponsesStream(ChatStreamWrapper):
    """Wraps a chat stream translator; re-emits its OpenAI SSE as Responses events.

    Events, each `event: <type>` + `data: {"type", "sequence_number", …}`, numbered from 0:

        first bytes         response.created, response.in_progress (status in_progress, no output)
        content / refusal   response.output_item.added (message), response.content_part.added,
                            response.output_text.delta … (response.refusal.delta for a refusal);
                            closed by response.output_text.done, response.content_part.done,
                            response.output_item.done
        each tool call      response.output_item.added (function_call, arguments ""),
                            response.function_call_arguments.delta …, closed by
                            response.function_call_arguments.done, response.output_item.done
        [DONE]              response.completed, or response.incomplete (finish_reason length or
                            content_filter), carrying the whole response; usage from the inner
                            translator's (what the gateway bills)
        upstream error      error, then response.failed (status failed, response.error); as the
                            live API does. Nothing follows.

    An item is closed when the next one starts or the chat stream finishes. A stream that ends
    without [DONE] gets no closing event: the caller appends its interruption error (`fail`).
    Only the first choice is read (Responses has no `n`); tool-call fragments are assumed to
    arrive call after call, as every adapter sends them — a late fragment of an already closed
    call is kept in the final response but gets no delta event of its own.
    """

    __slots__ = ("_request", "_model", "_events", "_sequence", "_response_id", "_created_at",
                 "_started", "_ended", "_output", "_current", "_calls", "_finish", "_reasoning_tokens",
                 "_service_tier")

    def __init__(self, inner: StreamTranslator, request: dict[str, Any], model: str) -> None:
        super().__init__(inner)
        self._request = request
        self._model = model
        self._events = SseDecoder()
        self._sequence = 0
        self._response_id = _new_id("resp")
        self._created_at = _now()
        self._started = False
        self._ended = False                      # a terminal event went out: nothing more is sent
        self._output: list[_Message | _Call] = []
        self._current: _Message | _Call | None = None
        self._calls: dict[int, _Call] = {}       # by the chat tool call's `index`
        self._finish: str | None = None
        self._reasoning_tokens = 0               # chat usage has it; the inner Usage does not
        self._service_tier: Any = None

    @property
    def sequence_number(self) -> int:
        """The number the next event will carry."""
        return self._sequence

    def feed(self, data: bytes) -> bytes:
        return self._translate(self._events.feed(self._inner.feed(data)))

    def finish(self) -> bytes:
        tail = self._inner.finish()
        return self._translate(self._events.feed(tail) + self._events.finish())

    def fail(self, message: str, code: str) -> bytes:
        """The events that end this stream when its upstream broke: error, response.failed."""
        if self._ended:
            return b""
        out: list[bytes] = []
        self._start(out)
        self._fail(out, message, code, None, "server_error", "server_error")
        return b"".join(out)

    # --- events ---

    def _emit(self, out: list[bytes], kind: str, **data: Any) -> None:
        out.append(encode(orjson.dumps({"type": kind, "sequence_number": self._sequence, **data}), kind))
        self._sequence += 1

    def _snapshot(self, status: str, usage: dict[str, Any] | None = None, incomplete: str | None = None,
                  error: dict[str, Any] | None = None) -> dict[str, Any]:
        return _response(self._request, self._model, self._response_id, self._created_at, status,
                         [item.as_output() for item in self._output], usage, incomplete, error,
                         self._service_tier)

    def _start(self, out: list[bytes]) -> None:
        if not self._started:
            self._started = True
            self._emit(out, "response.created", response=self._snapshot("in_progress"))
            self._emit(out, "response.in_progress", response=self._snapshot("in_progress"))

    def _translate(self, events: list[SseEvent]) -> bytes:
        out: list[bytes] = []
        self._start(out)
        for event in events:
            if self._ended:
                break
            if event.data == b"[DONE]":
                self._complete(out)
                continue
            try:
                chunk = orjson.loads(event.data)
            except orjson.JSONDecodeError:
                continue  # not a chat chunk; the inner translator would have reported a real error
            if not isinstance(chunk, dict):
                continue
            if isinstance(chunk.get("error"), dict):
                self._upstream_error(out, chunk["error"])
            else:
                self._chunk(out, chunk)
        return b"".join(out)

    def _chunk(self, out: list[bytes], chunk: dict[str, Any]) -> None:
        if chunk.get("service_tier") is not None:
            self._service_tier = chunk["service_tier"]
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self._reasoning_tokens = _count(usage.get("completion_tokens_details"), "reasoning_tokens")
        choices = chunk.get("choices")
        choice = next((c for c in choices if isinstance(c, dict) and c.get("index", 0) == 0), None) \
            if isinstance(choices, list) else None
        if choice is None:
            return
        delta = choice.get("delta") if isinstance(choice.get("delta"), dict) else {}
        for kind in ("output_text", "refusal"):
            text = delta.get("content" if kind == "output_text" else "refusal")
            if isinstance(text, str) and text:
                self._text(out, kind, text)
        for call in delta.get("tool_calls") or ():
            if isinstance(call, dict):
                self._tool_call(out, call)
        if choice.get("finish_reason"):
            self._finish = choice["finish_reason"]
            self._close(out)

    def _text(self, out: list[bytes], kind: str, text: str) -> None:
        message = self._current
        if not isinstance(message, _Message):
            self._close(out)
            message = _Message(_new_id("msg"), len(self._output))
            self._output.append(message)
            self._current = message
            self._emit(out, "response.output_item.added", output_index=message.output_index,
                       item=message.as_output())
        if message.open_part and message.parts[-1]["type"] != kind:
            self._close_part(out, message)
        if not message.open_part:
            message.parts.append(_output_text("") if kind == "output_text" else {"type": "refusal", "refusal": ""})
            message.open_part = True
            self._emit(out, "response.content_part.added", item_id=message.id, output_index=message.output_index,
                       content_index=len(message.parts) - 1, part=dict(message.parts[-1]))
        part = message.parts[-1]
        part[_PART_FIELD[kind]] += text
        extra = {"logprobs": []} if kind == "output_text" else {}
        self._emit(out, _DELTA_EVENT[kind] + ".delta", item_id=message.id, output_index=message.output_index,
                   content_index=len(message.parts) - 1, delta=text, **extra)

    def _tool_call(self, out: list[bytes], delta: dict[str, Any]) -> None:
        index = delta.get("index")
        if not isinstance(index, int):
            index = len(self._calls)
        function = delta.get("function") if isinstance(delta.get("function"), dict) else {}
        fragment = function.get("arguments")
        fragment = fragment if isinstance(fragment, str) else ""
        call = self._calls.get(index)
        if call is None:
            self._close(out)
            call = _Call(_new_id("fc"), len(self._output), str(delta.get("id") or _new_id("call")),
                         str(function.get("name") or ""))
            self._calls[index] = call
            self._output.append(call)
            self._current = call
            self._emit(out, "response.output_item.added", output_index=call.output_index, item=call.as_output())
        if fragment:
            call.arguments.append(fragment)
            if call is self._current:
                self._emit(out, "response.function_call_arguments.delta", item_id=call.id,
                           output_index=call.output_index, delta=fragment)

    def _close_part(self, out: list[bytes], message: _Message) -> None:
        part = message.parts[-1]
        message.open_part = False
        kind = part["type"]
        extra = {"logprobs": []} if kind == "output_text" else {}
        self._emit(out, _DELTA_EVENT[kind] + ".done", item_id=message.id, output_index=message.output_index,
                   content_index=len(message.parts) - 1, **{_PART_FIELD[kind]: part[_PART_FIELD[kind]]}, **extra)
        self._emit(out, "response.content_part.done", item_id=message.id, output_index=message.output_index,
                   content_index=len(message.parts) - 1, part=dict(part))

    def _close(self, out: list[bytes]) -> None:
        """Ends the open item, if any, with the status the finish so far gives it."""
        item, self._current = self._current, None
        if item is None:
            return
        if isinstance(item, _Message):
            if item.open_part:
                self._close_part(out, item)
            item.status = "incomplete" if self._finish in _INCOMPLETE else "completed"
        else:
            item.status = "completed"
            self._emit(out, "response.function_call_arguments.done", item_id=item.id,
                       output_index=item.output_index, arguments="".join(item.arguments))
        self._emit(out, "response.output_item.done", output_index=item.output_index, item=item.as_output())

    def _complete(self, out: list[bytes]) -> None:
        self._close(out)
        self._ended = True
        usage = self._inner.usage
        incomplete = _INCOMPLETE.get(self._finish)
        response = self._snapshot("incomplete" if incomplete else "completed",
                                  _usage(usage.prompt_tokens, usage.completion_tokens, usage.cached_prompt_tokens,
                                         self._reasoning_tokens), incomplete)
        self._emit(out, "response.incomplete" if incomplete else "response.completed", response=response)

    def _upstream_error(self, out: list[bytes], error: dict[str, Any]) -> None:
        message = error.get("message") if isinstance(error.get("message"), str) else "upstream stream error"
        error_type = error.get("type") if isinstance(error.get("type"), str) else "server_error"
        code = error.get("code") if isinstance(error.get("code"), str) else error_type
        param = error.get("param") if isinstance(error.get("param"), str) else None
        rate_limited = (self._inner.error is not None and self._inner.error.error_class is ErrorClass.RATE_LIMITED) \
            or "rate_limit" in code
        failure = code if code in _FAILURE_CODES else "rate_limit_exceeded" if rate_limited else "server_error"
        self._fail(out, message, code, param, error_type, failure)

    def _fail(self, out: list[bytes], message: str, code: str, param: str | None, error_type: str,
              failure_code: str) -> None:
        self._ended = True
        out.append(_error_event(self._sequence, message, code, param, error_type))
        self._sequence += 1
        self._emit(out, "response.failed",
                   response=self._snapshot("failed", error={"code": failure_code, "message": message}))
