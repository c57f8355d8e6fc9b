"""What a well-formed OpenAI request looks like, checked before anything is sent upstream.

A request the gateway forwards is one it vouches for: a malformed one costs an upstream
call, can make a provider answer 5xx — which would count against a healthy endpoint — and
reached code of ours that assumed shapes (a 500). So every field the OpenAI API documents
is checked for its type and range, with `param` naming the field (`messages[2].content`)
in the 400, as OpenAI does. Fields the API does not document pass through untouched:
providers add parameters faster than a gateway can list them.

Plain functions over dicts: pydantic would cost more per request than the whole router.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dataplane.errors import ApiError, bad_request

Check = Callable[[Any, str], None]  # (value, param) -> None, or raise


def _type_name(value: Any) -> str:
    return "null" if value is None else {bool: "boolean", int: "integer", float: "number", str: "string",
                                          list: "array", dict: "object"}.get(type(value), type(value).__name__)


def _fail(param: str, expected: str, value: Any) -> ApiError:
    return bad_request(f"Invalid type for '{param}': expected {expected}, but got {_type_name(value)}.", param)


def integer(low: int | None = None, high: int | None = None) -> Check:
    def check(value: Any, param: str) -> None:
        if not isinstance(value, int) or isinstance(value, bool):
            raise _fail(param, "an integer", value)
        if (low is not None and value < low) or (high is not None and value > high):
            raise bad_request(f"Invalid value for '{param}': {value} is outside [{low}, {high}].", param)
    return check


def number(low: float, high: float) -> Check:
    def check(value: Any, param: str) -> None:
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise _fail(param, "a number", value)
        if not low <= value <= high:
            raise bad_request(f"Invalid value for '{param}': {value} is outside [{low:g}, {high:g}].", param)
    return check


def boolean(value: Any, param: str) -> None:
    if not isinstance(value, bool):
        raise _fail(param, "a boolean", value)


def string(value: Any, param: str) -> None:
    if not isinstance(value, str):
        raise _fail(param, "a string", value)


def obj(value: Any, param: str) -> None:
    if not isinstance(value, dict):
        raise _fail(param, "an object", value)


def one_of(*allowed: str) -> Check:
    def check(value: Any, param: str) -> None:
        if value not in allowed:
            raise bad_request(f"Invalid value for '{param}': {value!r}; supported: {', '.join(allowed)}.", param)
    return check


def fields(spec: dict[str, Check], required: tuple[str, ...] = ()) -> Check:
    """An object whose listed fields, when present (and not null), pass their checks."""
    def check(value: Any, param: str) -> None:
        obj(value, param)
        for name in required:
            if value.get(name) is None:
                raise bad_request(f"Missing required parameter: '{param}.{name}'.", f"{param}.{name}")
        for name, field_check in spec.items():
            item = value.get(name)
            if item is not None:
                field_check(item, f"{param}.{name}")
    return check


def array_of(item_check: Check, min_items: int = 0, max_items: int | None = None) -> Check:
    def check(value: Any, param: str) -> None:
        if not isinstance(value, list):
            raise _fail(param, "an array", value)
        if len(value) < min_items or (max_items is not None and len(value) > max_items):
            bound = f"at least {min_items}" if len(value) < min_items else f"at most {max_items}"
            raise bad_request(f"Invalid '{param}': expected an array with {bound} items, got {len(value)}.", param)
        for index, item in enumerate(value):
            item_check(item, f"{param}[{index}]")
    return check


def either(*checks: Check, expected: str) -> Check:
    def check(value: Any, param: str) -> None:
        for candidate in checks:
            try:
                candidate(value, param)
                return
            except ApiError:
                continue
        raise _fail(param, expected, value)
    return check


def check_fields(payload: dict[str, Any], spec: dict[str, Check]) -> None:
    for name, check in spec.items():
        value = payload.get(name)
        if value is not None:
            check(value, name)


def model_name(payload: dict[str, Any]) -> None:
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("you must provide a model parameter (a non-empty string)", "model")


# ------------------------------------------------------------------ chat completions

_STOP = either(string, array_of(string, 1, 4), expected="a string or an array of up to 4 strings")
_FUNCTION_CALL = fields({"name": string, "arguments": string}, required=("name",))
_TOOL_CALL = fields({"id": string, "type": one_of("function"), "function": _FUNCTION_CALL}, required=("function",))

_PART_FIELDS: dict[str, Check] = {
    "text": fields({"text": string}, required=("text",)),
    "image_url": fields({"image_url": either(string, fields({"url": string, "detail": string}, required=("url",)),
                                             expected="an object with 'url'")}, required=("image_url",)),
    "input_audio": fields({"input_audio": fields({"data": string, "format": string}, required=("data",))},
                          required=("input_audio",)),
    "file": fields({"file": obj}, required=("file",)),
    "refusal": fields({"refusal": string}, required=("refusal",)),
}


def _content_part(value: Any, param: str) -> None:
    obj(value, param)
    kind = value.get("type")
    if not isinstance(kind, str):
        raise bad_request(f"Missing required parameter: '{param}.type'.", f"{param}.type")
    check = _PART_FIELDS.get(kind)
    if check is not None:  # part types the API adds later pass through to the provider
        check(value, param)


_CONTENT = either(string, array_of(_content_part, 1), expected="a string or a non-empty array of content parts")
_CONTENT_PARTS = array_of(_content_part, 1)
_ROLES = ("system", "developer", "user", "assistant", "tool", "function")


def _message(value: Any, param: str) -> None:
    obj(value, param)
    role = value.get("role")
    if not isinstance(role, str):
        raise bad_request(f"Missing required parameter: '{param}.role'.", f"{param}.role")
    if role not in _ROLES:
        raise bad_request(f"Invalid value for '{param}.role': {role!r}; supported: {', '.join(_ROLES)}.",
                          f"{param}.role")
    content = value.get("content")
    if content is None:
        # Only an assistant turn that called a tool (or refused) may leave content out.
        if not (role == "assistant" and (value.get("tool_calls") or value.get("function_call")
                                         or value.get("refusal"))):
            raise bad_request(f"Missing required parameter: '{param}.content'.", f"{param}.content")
    elif isinstance(content, list):
        _CONTENT_PARTS(content, f"{param}.content")
    elif not isinstance(content, str):
        raise _fail(f"{param}.content", "a string or an array of content parts", content)
    for name, check in (("name", string), ("tool_call_id", string), ("refusal", string),
                        ("tool_calls", array_of(_TOOL_CALL)), ("function_call", _FUNCTION_CALL)):
        item = value.get(name)
        if item is not None:
            check(item, f"{param}.{name}")
    if role == "tool" and not isinstance(value.get("tool_call_id"), str):
        raise bad_request(f"Missing required parameter: '{param}.tool_call_id'.", f"{param}.tool_call_id")


_TOOL = fields({"type": one_of("function"),
                "function": fields({"name": string, "description": string, "parameters": obj, "strict": boolean},
                                   required=("name",))},
               required=("function",))
_TOOL_CHOICE = either(one_of("none", "auto", "required"),
                      fields({"type": one_of("function"), "function": fields({"name": string}, required=("name",))},
                             required=("function",)),
                      expected="'none', 'auto', 'required' or an object naming a function")
_RESPONSE_FORMAT = fields({"type": one_of("text", "json_object", "json_schema"),
                           "json_schema": fields({"name": string, "schema": obj, "strict": boolean,
                                                  "description": string}, required=("name",))},
                          required=("type",))

def _logit_bias(value: Any, param: str) -> None:
    """Token ids (as strings, JSON has no integer keys) to a bias in [-100, 100]."""
    obj(value, param)
    for token, bias in value.items():
        if not token.isdigit():
            raise bad_request(f"Invalid key in '{param}': {token!r} is not a token id.", param)
        number(-100, 100)(bias, f"{param}.{token}")


CHAT_FIELDS: dict[str, Check] = {
    "messages": array_of(_message, 1),
    "temperature": number(0, 2),
    "top_p": number(0, 1),
    "n": integer(1, 128),
    "stop": _STOP,
    "max_tokens": integer(1),
    "max_completion_tokens": integer(1),
    "presence_penalty": number(-2, 2),
    "frequency_penalty": number(-2, 2),
    "seed": integer(),
    "user": string,
    "logit_bias": _logit_bias,
    "logprobs": boolean,
    "top_logprobs": integer(0, 20),
    "stream": boolean,
    "stream_options": fields({"include_usage": boolean}),
    "response_format": _RESPONSE_FORMAT,
    "tools": array_of(_TOOL),
    "tool_choice": _TOOL_CHOICE,
    "parallel_tool_calls": boolean,
    "metadata": obj,
    "store": boolean,
    "reasoning_effort": string,
    "service_tier": string,
    "modalities": array_of(string),
    "prediction": obj,
    "audio": obj,
}


def check_chat_request(payload: dict[str, Any]) -> None:
    model_name(payload)
    if payload.get("messages") is None:
        raise bad_request("Missing required parameter: 'messages'.", "messages")
    check_fields(payload, CHAT_FIELDS)
    choice = payload.get("tool_choice")
    if isinstance(choice, dict):
        declared = {tool["function"]["name"] for tool in payload.get("tools") or ()}
        if choice["function"]["name"] not in declared:
            raise bad_request(f"Invalid value for 'tool_choice.function.name': {choice['function']['name']!r} is "
                              "not one of the request's tools.", "tool_choice.function.name")
    elif choice == "required" and not payload.get("tools"):
        raise bad_request("Invalid value for 'tool_choice': 'required' needs 'tools'.", "tool_choice")


# ------------------------------------------------------------------ legacy completions

COMPLETIONS_FIELDS: dict[str, Check] = {
    "prompt": either(string, array_of(string, 1), array_of(integer(0), 1), array_of(array_of(integer(0), 1), 1),
                     expected="a string, an array of strings, or token arrays"),
    "suffix": string,
    "max_tokens": integer(1),
    "temperature": number(0, 2),
    "top_p": number(0, 1),
    "n": integer(1, 128),
    "stream": boolean,
    "stream_options": fields({"include_usage": boolean}),
    "logprobs": integer(0, 5),
    "echo": boolean,
    "stop": _STOP,
    "presence_penalty": number(-2, 2),
    "frequency_penalty": number(-2, 2),
    "best_of": integer(1, 20),
    "logit_bias": _logit_bias,
    "user": string,
    "seed": integer(),
}


def check_completions_request(payload: dict[str, Any]) -> None:
    model_name(payload)
    if payload.get("prompt") is None:
        raise bad_request("Missing required parameter: 'prompt'.", "prompt")
    check_fields(payload, COMPLETIONS_FIELDS)
