"""Anthropic wire format: the Messages API (``POST /v1/messages``), token counting
(``POST /v1/messages/count_tokens``) and model listing.

Auth is ``x-api-key``; every call must carry an ``anthropic-version`` header.
Errors are ``{"type": "error", "error": {"type", "message"}, "request_id"}``
with Anthropic's status-to-type mapping (529 is ``overloaded_error``).
"""

from __future__ import annotations

import hmac
import math
import time
import uuid
from typing import Any

import orjson
from aiohttp import web

from megarouter.sim import faults, reply
from megarouter.sim.common import CHAT, STATE, SimState, is_int, json_response, read_json
from megarouter.sim.settings import SimSettings

PREFIXES = ("/v1/",)
_MESSAGES_PATH = "/v1/messages"
_COUNT_TOKENS_PATH = "/v1/messages/count_tokens"

_FINISH = {reply.STOP: "end_turn", reply.LENGTH: "max_tokens", reply.TOOL: "tool_use",
           reply.STOP_SEQUENCE: "stop_sequence"}
_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
                403: "permission_error", 404: "not_found_error", 413: "request_too_large",
                429: "rate_limit_error", 500: "api_error", 503: "overloaded_error",
                504: "timeout_error", 529: "overloaded_error"}
_ERROR_MESSAGES = {429: "This request would exceed your organization's rate limit (simulated). "
                        "Please try again later.",
                   500: "Internal server error", 503: "Overloaded", 504: "Request timed out",
                   529: "Overloaded"}
# Block types the simulated model reads as media (each counted like an image).
_MEDIA_BLOCKS = ("image", "document")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/models", _list_models)
    app.router.add_get("/v1/models/{model}", _get_model)
    app.router.add_post(_MESSAGES_PATH, _messages)
    app.router.add_post(_COUNT_TOKENS_PATH, _count_tokens)


def kind_of(path: str) -> str | None:
    return CHAT if path == _MESSAGES_PATH else None


# ------------------------------------------------------------------- errors

def error(status: int, message: str, type_: str | None = None,
          headers: dict[str, str] | None = None) -> web.Response:
    if type_ is None:
        fallback = "api_error" if status >= 500 else "invalid_request_error"
        type_ = _ERROR_TYPES.get(status, fallback)
    body = {"type": "error", "error": {"type": type_, "message": message},
            "request_id": "req_" + uuid.uuid4().hex[:24]}
    return json_response(body, status, headers)


def invalid(message: str) -> web.Response:
    return error(400, message, "invalid_request_error")


def status_error(status: int, settings: SimSettings) -> web.Response:
    """A scripted failure (fault draw or outage) as Anthropic reports it."""
    headers = {"retry-after": str(math.ceil(settings.retry_after_s))} if status == 429 else None
    return error(status, _ERROR_MESSAGES.get(status, f"Simulated error {status}."), headers=headers)


def context_length_exceeded(over: reply.Overflow) -> web.Response:
    """Anthropic's answer to a request that does not fit the context window."""
    if over.max_tokens is None or over.prompt_too_long:
        return invalid(f"prompt is too long: {over.prompt_tokens} tokens > {over.limit} maximum")
    return invalid(f"input length and `max_tokens` exceed context limit: {over.prompt_tokens} + "
                   f"{over.max_tokens} > {over.limit}, decrease input length or `max_tokens` and try again")


def http_error(status: int, reason: str) -> web.Response:
    return error(status, reason)


def check_auth(request: web.Request, state: SimState) -> web.Response | None:
    if state.api_key is None:
        return None
    given = request.headers.get("x-api-key", "").encode()
    if not given:
        return error(401, "x-api-key header is required", "authentication_error")
    if not hmac.compare_digest(given, state.api_key):
        return error(401, "invalid x-api-key", "authentication_error")
    return None


# ------------------------------------------------------------------- models

async def _list_models(request: web.Request) -> web.Response:
    state = request.app[STATE]
    data = [_model_obj(state, m) for m in state.models]
    return json_response({"data": data, "has_more": False,
                          "first_id": data[0]["id"] if data else None,
                          "last_id": data[-1]["id"] if data else None})


async def _get_model(request: web.Request) -> web.Response:
    state = request.app[STATE]
    model = request.match_info["model"]
    if model not in state.model_set:
        return error(404, f"model: {model}", "not_found_error")
    return json_response(_model_obj(state, model))


def _model_obj(state: SimState, model: str) -> dict[str, Any]:
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(state.created))
    return {"type": "model", "id": model, "display_name": model, "created_at": created}


# ----------------------------------------------------------------- messages

async def _messages(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    body = await read_json(request)
    streaming = isinstance(body, dict) and body.get("stream") is True
    if streaming:
        state.stream_requests += 1

    fault = faults.draw_fault(state)
    if fault is not None:
        return status_error(fault, state.settings)
    if not request.headers.get("anthropic-version"):
        return invalid("anthropic-version: header is required")
    if not isinstance(body, dict):
        return invalid("The request body is not valid JSON.")
    return await respond(request, state, body, streaming)


async def respond(request: web.Request, state: SimState, body: dict, streaming: bool) -> web.StreamResponse:
    """The answer to a Messages request whose envelope (auth, faults, version) is already checked.

    Shared with the Vertex wire, which serves Claude's Messages API under its own URLs.
    """
    problem = _validate(body)
    if problem is not None:
        return invalid(problem)
    if body["model"] not in state.model_set:
        return error(404, f"model: {body['model']}", "not_found_error")

    ask = _ask(body)
    over = reply.context_overflow(ask, state.settings)
    if over is not None:
        return context_length_exceeded(over)
    ans = reply.answer(ask, state.settings)
    msg_id = "msg_" + uuid.uuid4().hex[:24]
    tool_id = "toolu_" + uuid.uuid4().hex[:24] if ans.tool_call else None
    if streaming:
        head, pieces, tail = _stream_events(msg_id, body["model"], ans, tool_id)
        return await faults.send_stream(request, state, head, pieces, tail)
    await faults.pause(state.settings.latency_ms)
    return json_response(_message(msg_id, body["model"], ans, tool_id, _content(ans, tool_id)))


async def _count_tokens(request: web.Request) -> web.Response:
    """``{"input_tokens": N}``: exactly the ``input_tokens`` ``/v1/messages`` would report.

    Auth and outages apply (the gate); drawn faults do not, so counting leaves the seeded
    fault sequence of chat requests as it was."""
    state = request.app[STATE]
    body = await read_json(request)
    if not request.headers.get("anthropic-version"):
        return invalid("anthropic-version: header is required")
    if not isinstance(body, dict):
        return invalid("The request body is not valid JSON.")
    problem = _validate(body, max_tokens_required=False)
    if problem is not None:
        return invalid(problem)
    if body["model"] not in state.model_set:
        return error(404, f"model: {body['model']}", "not_found_error")
    return json_response({"input_tokens": reply.prompt_tokens(_ask(body))})


def _validate(body: dict, *, max_tokens_required: bool = True) -> str | None:
    """The first problem with a Messages request, as "<field path>: <what is wrong>"."""
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "model: Field required"
    if "max_tokens" not in body and max_tokens_required:
        return "max_tokens: Field required"
    if "max_tokens" in body and not is_int(body["max_tokens"]):
        return "max_tokens: Input should be a positive integer"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages: Field required (a non-empty array)"
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or msg.get("role") not in ("user", "assistant"):
            return f"messages.{i}.role: Input should be 'user' or 'assistant'"
        problem = _check_content(msg.get("content"), f"messages.{i}.content")
        if problem:
            return problem
    system = body.get("system")
    if system is not None and not isinstance(system, str):
        problem = _check_content(system, "system")
        if problem:
            return problem
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            return "tools: Input should be a valid list"
        for i, tool in enumerate(tools):
            if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
                return f"tools.{i}.name: Field required"
            if _is_custom(tool) and not isinstance(tool.get("input_schema"), dict):
                return f"tools.{i}.input_schema: Field required"
    choice = body.get("tool_choice")
    if choice is not None:
        if not isinstance(choice, dict) or choice.get("type") not in ("auto", "any", "tool", "none"):
            return "tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none'"
        names = {t["name"] for t in tools or ()}
        name = choice.get("name")
        if choice["type"] == "tool" and not (isinstance(name, str) and name in names):
            return f"tool_choice.name: tool {choice.get('name')!r} is not among the tools"
    stops = body.get("stop_sequences")
    if stops is not None and (not isinstance(stops, list) or not all(isinstance(s, str) for s in stops)):
        return "stop_sequences: Input should be a list of strings"
    return None


def _check_content(content: Any, where: str) -> str | None:
    if isinstance(content, str):
        return None
    if not isinstance(content, list):
        return f"{where}: Input should be a string or a list of content blocks"
    for j, block in enumerate(content):
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            return f"{where}.{j}.type: Field required"
        kind = block["type"]
        if kind == "text" and not isinstance(block.get("text"), str):
            return f"{where}.{j}.text: Field required"
        if kind == "tool_use" and not isinstance(block.get("name"), str):
            return f"{where}.{j}.name: Field required"
        if kind == "tool_result" and not isinstance(block.get("tool_use_id"), str):
            return f"{where}.{j}.tool_use_id: Field required"
    return None


def _is_custom(tool: dict) -> bool:
    # Server tools (web search, code execution...) carry a versioned type and no schema.
    return tool.get("type") in (None, "custom")


def _ask(body: dict) -> reply.Ask:
    """A validated Messages request as the wire-agnostic model sees it."""
    messages = body["messages"]
    system = body.get("system")
    ask = reply.Ask(model=body["model"], turns=len(messages) + (1 if system else 0),
                    max_tokens=body.get("max_tokens"), stop=list(body.get("stop_sequences") or ()))
    if system:
        _read_content(system, ask)
    for msg in messages:
        _read_content(msg["content"], ask)
    tools = body.get("tools")
    if tools:
        ask.tools_size = len(orjson.dumps(tools))
        ask.tools = [reply.Tool(t["name"], t.get("input_schema")) for t in tools if _is_custom(t)]
    choice = body.get("tool_choice") or {}
    ask.tool_mode = "none" if choice.get("type") == "none" else "auto"
    ask.forced_tool = choice.get("name") if choice.get("type") == "tool" else None
    last = messages[-1]
    blocks = last["content"]
    ask.after_tool_result = (last["role"] == "user" and isinstance(blocks, list) and bool(blocks)
                             and blocks[-1].get("type") == "tool_result")
    return ask


def _read_content(content: Any, ask: reply.Ask) -> None:
    if isinstance(content, str):
        ask.texts.append(content)
        return
    for block in content:
        # Defensive: a tool_result's nested blocks are not validated up front.
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text" and isinstance(block.get("text"), str):
            ask.texts.append(block["text"])
        elif kind in _MEDIA_BLOCKS:
            ask.images += 1
        elif kind == "tool_use":
            ask.texts.append(str(block.get("name")) + orjson.dumps(block.get("input")).decode())
        elif kind == "tool_result" and isinstance(block.get("content"), str | list):
            _read_content(block["content"], ask)


def _usage(ans: reply.Answer, output_tokens: int | None = None) -> dict[str, int]:
    return {"input_tokens": ans.prompt_tokens,
            "output_tokens": ans.completion_tokens if output_tokens is None else output_tokens,
            "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}


def _content(ans: reply.Answer, tool_id: str | None) -> list[dict[str, Any]]:
    if ans.tool_call is not None:
        return [{"type": "tool_use", "id": tool_id, "name": ans.tool_call.name,
                 "input": ans.tool_call.arguments}]
    # An empty answer has no blocks at all, as the real API returns it.
    return [{"type": "text", "text": ans.text}] if ans.text else []


def _message(msg_id: str, model: str, ans: reply.Answer, tool_id: str | None,
             content: list[dict[str, Any]], done: bool = True) -> dict[str, Any]:
    return {"id": msg_id, "type": "message", "role": "assistant", "model": model,
            "content": content,
            "stop_reason": _FINISH[ans.finish] if done else None,
            "stop_sequence": ans.stop_sequence if done else None,
            # message_start reports the output so far: one token, as the real API does.
            "usage": _usage(ans, None if done else min(1, ans.completion_tokens))}


def _stream_events(msg_id: str, model: str, ans: reply.Answer,
                   tool_id: str | None) -> tuple[list[bytes], list[bytes], list[bytes]]:
    """Named SSE events as (before the tokens, one per token, after the tokens)."""
    def event(data: dict[str, Any]) -> bytes:
        return b"event: " + data["type"].encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"

    start = event({"type": "message_start",
                   "message": _message(msg_id, model, ans, tool_id, [], done=False)})
    ping = event({"type": "ping"})
    call = ans.tool_call
    if call is not None:
        block: dict[str, Any] | None = {"type": "tool_use", "id": tool_id, "name": call.name, "input": {}}
        deltas = [{"type": "input_json_delta", "partial_json": p} for p in ans.pieces]
    else:
        block = {"type": "text", "text": ""} if ans.pieces else None
        deltas = [{"type": "text_delta", "text": p} for p in ans.pieces]

    finish = [event({"type": "message_delta",
                     "delta": {"stop_reason": _FINISH[ans.finish], "stop_sequence": ans.stop_sequence},
                     "usage": {"output_tokens": ans.completion_tokens}}),
              event({"type": "message_stop"})]
    if block is None:
        return [start, ping], [], finish
    head = [start, event({"type": "content_block_start", "index": 0, "content_block": block}), ping]
    pieces = [event({"type": "content_block_delta", "index": 0, "delta": d}) for d in deltas]
    return head, pieces, [event({"type": "content_block_stop", "index": 0}), *finish]
