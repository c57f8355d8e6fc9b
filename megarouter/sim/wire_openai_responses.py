"""OpenAI Responses API: ``POST /v1/responses``, answered and streamed as api.openai.com does.

A request is checked here, then rewritten as the equivalent chat request
(``instructions`` a leading system message, ``input`` the messages, consecutive
``function_call`` items one assistant message with ``tool_calls``, a
``function_call_output`` a tool message, tools and ``tool_choice`` in chat's
shape, ``max_output_tokens`` as ``max_tokens``, ``text.format`` as
``response_format``) and reduced to an ``Ask`` by the chat code itself. So one
question gets the same words, tool arguments and token counts on both APIs.

Nothing is kept: ``store`` (true unless sent false) is echoed and counted in
the stats, but no response can be fetched back or continued from, so a
``previous_response_id`` is always unknown and ``GET /v1/responses/{id}`` a 404.

Faults, auth, latency, TTFT, pacing and stalls apply exactly as they do to chat:
the same gate, the same fault draw (after the same stream count) and
``faults.send_stream``, whose per-token pieces here are the text deltas (or
the function-call argument deltas).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson
from aiohttp import web

from megarouter.sim import faults, reply
from megarouter.sim import wire_openai as oai
from megarouter.sim.common import STATE, is_int, json_response, read_json

PATH = "/v1/responses"

_ROLES = ("user", "assistant", "system", "developer")
_TOOL_CHOICES = ("none", "auto", "required")
_FORMATS = ("text", "json_object", "json_schema")
_VERBOSITY = ("low", "medium", "high")
# Content parts a message may carry, and their chat equivalents (as chat's Ask reads them).
_TEXT_PARTS = ("input_text", "output_text")
_USER_PARTS = ("input_text", "input_image", "input_file", "input_audio")
_ASSISTANT_PARTS = ("output_text", "refusal")


def add_routes(app: web.Application) -> None:
    app.router.add_post(PATH, _responses_route)
    app.router.add_get(PATH + "/{response_id}", _get_response)


async def _responses_route(request: web.Request) -> web.StreamResponse:
    return await responses(request, await read_json(request))


async def _get_response(request: web.Request) -> web.Response:
    # Nothing is retained, stored or not: every id is unknown.
    response_id = request.match_info["response_id"]
    return oai.error(404, f"Response with id '{response_id}' not found.", "invalid_request_error")


# ------------------------------------------------------------------ handler

async def responses(request: web.Request, body: Any, dialect: oai.Dialect = oai.OPENAI) -> web.StreamResponse:
    """A Responses API answer for ``body`` (parsed JSON, None if it was not JSON)."""
    state = request.app[STATE]
    refused = oai.opening(request, body, dialect)
    if refused is not None:
        return refused
    streaming = body.get("stream") is True
    problem = _check(body)
    if problem is not None:
        return oai.invalid(*problem)
    if body["model"] not in state.model_set:
        return oai.model_not_found(body["model"])

    ask = oai.chat_ask(_chat_request(body))
    if reply.context_overflow(ask, state.settings) is not None:
        return oai.invalid("Your input exceeds the context window of this model. Please adjust your "
                           "input and try again.", "input", "context_length_exceeded")
    ans = reply.answer(ask, state.settings)
    if body.get("store") is not False:
        state.responses_stored += 1
    out = _Output(body, ans)
    if streaming:
        head, pieces, tail = out.stream_events()
        return await faults.send_stream(request, state, head, pieces, tail)
    await faults.pause(state.settings.latency_ms)
    return json_response(out.response())


# --------------------------------------------------------------- validation
# Each check returns (message, param) for the first problem, or None. Messages
# follow the API's own wording ("Missing required parameter: 'input'.").

Problem = tuple[str, str] | None


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "an array", dict: "an object"}.get(type(value), "a value")


def _wrong_type(param: str, expected: str, value: Any) -> Problem:
    return (f"Invalid type for '{param}': expected {expected}, but got {_type_name(value)} instead.", param)


def _missing(param: str) -> Problem:
    return f"Missing required parameter: '{param}'.", param


def _bad_value(param: str, value: Any, allowed: tuple[str, ...]) -> Problem:
    return (f"Invalid value: {value!r}. Supported values are: "
            f"{', '.join(repr(a) for a in allowed)}.", param)


def _string(item: dict, key: str, param: str, required: bool = True) -> Problem:
    value = item.get(key)
    if value is None:
        return _missing(f"{param}.{key}") if required else None
    return None if isinstance(value, str) else _wrong_type(f"{param}.{key}", "a string", value)


def _check(body: dict) -> Problem:
    model = body.get("model")
    if model is None:
        return _missing("model")
    if not isinstance(model, str) or not model:
        return _wrong_type("model", "a non-empty string", model)
    if body.get("previous_response_id") is not None:
        # Nothing is stored, so there is nothing to continue from.
        return (f"Previous response with id {str(body['previous_response_id'])!r} not found.",
                "previous_response_id")
    for key in ("stream", "store", "parallel_tool_calls", "background"):
        value = body.get(key)
        if value is not None and not isinstance(value, bool):
            return _wrong_type(key, "a boolean", value)
    if body.get("background") is True:
        return "Background mode is not supported by this simulator.", "background"
    for key in ("instructions", "user"):
        value = body.get(key)
        if value is not None and not isinstance(value, str):
            return _wrong_type(key, "a string", value)
    for key, high in (("temperature", 2), ("top_p", 1)):
        value = body.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)
                                  or not 0 <= value <= high):
            return f"Invalid '{key}': expected a number between 0 and {high}.", key
    limit = body.get("max_output_tokens")
    if limit is not None and not is_int(limit):
        return "Invalid 'max_output_tokens': expected a positive integer.", "max_output_tokens"
    metadata = body.get("metadata")
    if metadata is not None and (not isinstance(metadata, dict)
                                 or not all(isinstance(v, str) for v in metadata.values())):
        return _wrong_type("metadata", "an object of string values", metadata)
    return _check_input(body.get("input")) or _check_tools(body) or _check_text(body.get("text"))


def _check_input(value: Any) -> Problem:
    if value is None:
        return _missing("input")
    if isinstance(value, str):
        return None if value else ("Invalid 'input': empty string.", "input")
    if not isinstance(value, list):
        return _wrong_type("input", "a string or an array of input items", value)
    if not value:
        return "Invalid 'input': expected a non-empty array of input items.", "input"
    calls: set[str] = set()
    for i, item in enumerate(value):
        param = f"input[{i}]"
        if not isinstance(item, dict):
            return _wrong_type(param, "an object", item)
        kind = item.get("type", "message" if "role" in item else None)
        if kind is None:
            return _missing(f"{param}.type")
        if kind == "message":
            problem = _check_message(item, param)
        elif kind == "function_call":
            problem = (_string(item, "call_id", param) or _string(item, "name", param)
                       or _string(item, "arguments", param))
            calls.add(item.get("call_id"))
        elif kind == "function_call_output":
            problem = _string(item, "call_id", param) or _check_output(item.get("output"), f"{param}.output")
            if problem is None and item["call_id"] not in calls:
                problem = (f"No tool call found for function call output with call_id {item['call_id']!r}.",
                           f"{param}.call_id")
        elif kind == "reasoning":
            problem = None  # accepted and dropped, as chat cannot hand it back
        elif kind == "item_reference":
            problem = f"Item with id {str(item.get('id'))!r} not found.", f"{param}.id"
        else:
            problem = (f"Invalid value: {kind!r}. Supported input item types are: 'message', "
                       "'function_call', 'function_call_output', 'reasoning'.", f"{param}.type")
        if problem is not None:
            return problem
    return None


def _check_message(item: dict, param: str) -> Problem:
    role = item.get("role")
    if role is None:
        return _missing(f"{param}.role")
    if role not in _ROLES:
        return _bad_value(f"{param}.role", role, _ROLES)
    content = item.get("content")
    if content is None:
        return _missing(f"{param}.content")
    if isinstance(content, str):
        return None
    if not isinstance(content, list):
        return _wrong_type(f"{param}.content", "a string or an array of content parts", content)
    allowed = _ASSISTANT_PARTS if role == "assistant" else _USER_PARTS
    for j, part in enumerate(content):
        where = f"{param}.content[{j}]"
        if not isinstance(part, dict):
            return _wrong_type(where, "an object", part)
        kind = part.get("type")
        if kind is None:
            return _missing(f"{where}.type")
        if kind not in allowed:
            return _bad_value(f"{where}.type", kind, allowed)
        if kind in _TEXT_PARTS:
            problem = _string(part, "text", where)
        elif kind == "refusal":
            problem = _string(part, "refusal", where)
        elif kind == "input_image":
            if part.get("image_url") is None and part.get("file_id") is None:
                return _missing(f"{where}.image_url")
            problem = _string(part, "image_url", where, False) or _string(part, "file_id", where, False)
        else:
            problem = None
        if problem is not None:
            return problem
    return None


def _check_output(value: Any, param: str) -> Problem:
    if value is None:
        return _missing(param)
    if isinstance(value, str):
        return None
    if not isinstance(value, list):
        return _wrong_type(param, "a string or an array of content parts", value)
    for j, part in enumerate(value):
        if not isinstance(part, dict):
            return _wrong_type(f"{param}[{j}]", "an object", part)
        if part.get("type") == "input_text":
            problem = _string(part, "text", f"{param}[{j}]")
            if problem is not None:
                return problem
    return None


def _check_tools(body: dict) -> Problem:
    tools = body.get("tools")
    names: set[str] = set()
    if tools is not None:
        if not isinstance(tools, list):
            return _wrong_type("tools", "an array of tools", tools)
        for i, tool in enumerate(tools):
            param = f"tools[{i}]"
            if not isinstance(tool, dict):
                return _wrong_type(param, "an object", tool)
            if tool.get("type") != "function":
                return (f"Tools of type {tool.get('type')!r} are not supported by this simulator: only "
                        "function tools (type 'function') are.", f"{param}.type")
            problem = _string(tool, "name", param) or _string(tool, "description", param, False)
            if problem is not None:
                return problem
            params = tool.get("parameters")
            if params is not None and not isinstance(params, dict):
                return _wrong_type(f"{param}.parameters", "an object", params)
            strict = tool.get("strict")
            if strict is not None and not isinstance(strict, bool):
                return _wrong_type(f"{param}.strict", "a boolean", strict)
            names.add(tool["name"])
    choice = body.get("tool_choice")
    if choice is None:
        return None
    if isinstance(choice, str):
        if choice not in _TOOL_CHOICES:
            return _bad_value("tool_choice", choice, _TOOL_CHOICES)
        if choice == "required" and not names:
            return "Tool choice 'required' must be specified with 'tools' parameter.", "tool_choice"
        return None
    if not isinstance(choice, dict):
        return _wrong_type("tool_choice", "a string or an object", choice)
    if choice.get("type") != "function":
        return _bad_value("tool_choice.type", choice.get("type"), ("function",))
    problem = _string(choice, "name", "tool_choice")
    if problem is None and choice["name"] not in names:
        problem = (f"Tool choice '{choice['name']}' not found in 'tools' parameter.", "tool_choice")
    return problem


def _check_text(text: Any) -> Problem:
    if text is None:
        return None
    if not isinstance(text, dict):
        return _wrong_type("text", "an object", text)
    verbosity = text.get("verbosity")
    if verbosity is not None and verbosity not in _VERBOSITY:
        return _bad_value("text.verbosity", verbosity, _VERBOSITY)
    fmt = text.get("format")
    if fmt is None:
        return None
    if not isinstance(fmt, dict):
        return _wrong_type("text.format", "an object", fmt)
    if fmt.get("type") not in _FORMATS:
        return _bad_value("text.format.type", fmt.get("type"), _FORMATS)
    if fmt["type"] == "json_schema":
        problem = _string(fmt, "name", "text.format")
        if problem is not None:
            return problem
        if not isinstance(fmt.get("schema"), dict):
            return (_missing("text.format.schema") if fmt.get("schema") is None
                    else _wrong_type("text.format.schema", "an object", fmt["schema"]))
    return None


# ---------------------------------------------------- the equivalent chat request

def _chat_request(body: dict) -> dict[str, Any]:
    """The chat request a translating gateway would send for this (checked) Responses request."""
    chat: dict[str, Any] = {"model": body["model"], "messages": _chat_messages(body)}
    tools = body.get("tools")
    if tools:
        chat["tools"] = [{"type": "function", "function": {
            k: t[k] for k in ("name", "description", "parameters", "strict") if t.get(k) is not None}}
            for t in tools]
    choice = body.get("tool_choice")
    if choice is not None:
        chat["tool_choice"] = choice if isinstance(choice, str) else {
            "type": "function", "function": {"name": choice["name"]}}
    if body.get("max_output_tokens") is not None:
        chat["max_tokens"] = body["max_output_tokens"]
    fmt = (body.get("text") or {}).get("format") or {}
    if fmt.get("type") == "json_object":
        chat["response_format"] = {"type": "json_object"}
    elif fmt.get("type") == "json_schema":
        chat["response_format"] = {"type": "json_schema",
                                   "json_schema": {"name": fmt["name"], "schema": fmt["schema"]}}
    return chat


def _chat_part(part: dict) -> dict[str, Any]:
    kind = part["type"]
    if kind in _TEXT_PARTS:
        return {"type": "text", "text": part["text"]}
    if kind == "input_image":
        return {"type": "image_url", "image_url": {"url": part.get("image_url") or part.get("file_id")}}
    return {"type": kind}  # files, audio, refusals: no text the model reads


def _chat_messages(body: dict) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    if body.get("instructions"):
        messages.append({"role": "system", "content": body["instructions"]})
    source = body["input"]
    if isinstance(source, str):
        return [*messages, {"role": "user", "content": source}]
    for item in source:
        kind = item.get("type", "message")
        if kind == "message":
            content = item["content"]
            messages.append({"role": item["role"], "content": content if isinstance(content, str)
                             else [_chat_part(p) for p in content]})
        elif kind == "function_call":
            call = {"id": item["call_id"], "type": "function",
                    "function": {"name": item["name"], "arguments": item["arguments"]}}
            # One model turn is [message?, function_call...] here, one assistant message in chat.
            if messages and messages[-1]["role"] == "assistant":
                messages[-1].setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item["output"]
            messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": output
                             if isinstance(output, str) else [_chat_part(p) for p in output
                                                              if p.get("type") == "input_text"]})
    return messages


# ---------------------------------------------------------------- rendering

def _usage(ans: reply.Answer) -> dict[str, Any]:
    return {"input_tokens": ans.prompt_tokens,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": ans.completion_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": ans.total_tokens}


class _Output:
    """One answer as a ``response`` object and as its event stream."""

    def __init__(self, body: dict, ans: reply.Answer) -> None:
        self.body = body
        self.ans = ans
        self.id = "resp_" + uuid.uuid4().hex
        self.created = int(time.time())
        self.incomplete = ans.finish == reply.LENGTH
        self.status = "incomplete" if self.incomplete else "completed"
        if ans.tool_call is not None:
            self.item_id = "fc_" + uuid.uuid4().hex
            self.call_id = "call_" + uuid.uuid4().hex[:24]
        else:
            self.item_id = "msg_" + uuid.uuid4().hex

    # -- objects

    def response(self, final: bool = True) -> dict[str, Any]:
        body = self.body
        text = body.get("text") or {}
        return {
            "id": self.id, "object": "response", "created_at": self.created,
            "status": self.status if final else "in_progress",
            "background": False, "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if final and self.incomplete else None,
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"), "max_tool_calls": None,
            "model": body["model"],
            "output": [self.item()] if final else [],
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "previous_response_id": None, "prompt_cache_key": None,
            "reasoning": {"effort": None, "summary": None}, "safety_identifier": None,
            "service_tier": "default", "store": body.get("store") is not False,
            "temperature": body.get("temperature", 1.0),
            "text": {"format": text.get("format") or {"type": "text"},
                     "verbosity": text.get("verbosity", "medium")},
            "tool_choice": body.get("tool_choice", "auto"),
            "tools": [self._tool(t) for t in body.get("tools") or ()],
            "top_logprobs": 0, "top_p": body.get("top_p", 1.0), "truncation": "disabled",
            "usage": _usage(self.ans) if final else None,
            "user": body.get("user"), "metadata": body.get("metadata") or {},
            "completed_at": int(time.time()) if final and not self.incomplete else None,
        }

    @staticmethod
    def _tool(tool: dict) -> dict[str, Any]:
        return {"type": "function", "name": tool["name"], "description": tool.get("description"),
                "parameters": tool.get("parameters"), "strict": tool.get("strict", True)}

    def _part(self, text: str) -> dict[str, Any]:
        return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}

    def item(self, done: bool = True) -> dict[str, Any]:
        call = self.ans.tool_call
        status = (self.status if call is None else "completed") if done else "in_progress"
        if call is not None:
            return {"id": self.item_id, "type": "function_call", "status": status, "call_id": self.call_id,
                    "name": call.name, "arguments": call.json if done else ""}
        return {"id": self.item_id, "type": "message", "status": status, "role": "assistant",
                "content": [self._part(self.ans.text or "")] if done else []}

    # -- stream

    def stream_events(self) -> tuple[list[bytes], list[bytes], list[bytes]]:
        """SSE events as (before the deltas, one per answer piece, after the deltas)."""
        seq = 0

        def event(type_: str, **fields: Any) -> bytes:
            nonlocal seq
            data = {"type": type_, "sequence_number": seq, **fields}
            seq += 1
            return b"event: " + type_.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"

        at = {"item_id": self.item_id, "output_index": 0}
        part_at = {**at, "content_index": 0}
        head = [event("response.created", response=self.response(False)),
                event("response.in_progress", response=self.response(False)),
                event("response.output_item.added", output_index=0, item=self.item(False))]
        call = self.ans.tool_call
        if call is None:
            head.append(event("response.content_part.added", **part_at, part=self._part("")))
            pieces = [event("response.output_text.delta", **part_at, delta=p, logprobs=[])
                      for p in self.ans.pieces]
            text = self.ans.text or ""
            tail = [event("response.output_text.done", **part_at, text=text, logprobs=[]),
                    event("response.content_part.done", **part_at, part=self._part(text))]
        else:
            pieces = [event("response.function_call_arguments.delta", **at, delta=p) for p in self.ans.pieces]
            tail = [event("response.function_call_arguments.done", **at, name=call.name, arguments=call.json)]
        tail.append(event("response.output_item.done", output_index=0, item=self.item()))
        final = "response.incomplete" if self.incomplete else "response.completed"
        tail.append(event(final, response=self.response()))
        return head, pieces, tail
