"""OpenAI wire format: models, chat completions, and the error/auth conventions.

Embeddings and legacy text completions, also OpenAI routes, live in
``wire_openai_text``; both modules share the helpers defined here.

The handlers take the parsed body and a ``Dialect`` so that an
OpenAI-compatible service (``wire_azure``) can serve the same replies under
its own paths, error shapes and stream prelude.
"""

from __future__ import annotations

import hmac
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from megarouter.sim import faults, reply
from megarouter.sim.common import CHAT, COMPLETION, EMBEDDING, RESPONSES, STATE, SimState, json_response, read_json
from megarouter.sim.settings import SimSettings

PREFIXES = ("/v1/",)
_CHAT_PATH = "/v1/chat/completions"
_KINDS = {_CHAT_PATH: CHAT, "/v1/embeddings": EMBEDDING, "/v1/completions": COMPLETION,
          "/v1/responses": RESPONSES}

_FINISH = {reply.STOP: "stop", reply.LENGTH: "length", reply.TOOL: "tool_calls",
           reply.STOP_SEQUENCE: "stop"}


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/models", _list_models)
    app.router.add_get("/v1/models/{model}", _get_model)
    app.router.add_post(_CHAT_PATH, _chat_route)
    # Imported here because wire_openai_text and wire_openai_responses build on this module's helpers.
    from megarouter.sim import wire_openai_responses, wire_openai_text

    wire_openai_text.add_routes(app)
    wire_openai_responses.add_routes(app)


def kind_of(path: str) -> str | None:
    return _KINDS.get(path)


# ------------------------------------------------------------------- errors

def error(status: int, message: str, type_: str, param: str | None = None,
          code: str | None = None, headers: dict[str, str] | None = None) -> web.Response:
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return json_response(body, status, headers)


def invalid(message: str, param: str | None = None, code: str | None = None) -> web.Response:
    return error(400, message, "invalid_request_error", param, code)


def status_error(status: int, settings: SimSettings) -> web.Response:
    """A scripted failure (fault draw or outage) as OpenAI reports it."""
    if status == 429:
        return error(
            429, "Rate limit reached for requests (simulated). Please try again later.",
            "requests", None, "rate_limit_exceeded",
            headers={"Retry-After": str(math.ceil(settings.retry_after_s))},
        )
    if status == 503:
        return error(503, "The server is overloaded or not ready yet.", "server_error")
    if status >= 500:
        return error(status, "The server had an error while processing your request. "
                     "Sorry about that!", "server_error")
    return error(status, f"Simulated error {status}.", "invalid_request_error")


@dataclass(frozen=True)
class Dialect:
    """Where an OpenAI-compatible service's replies differ from OpenAI's own."""

    # Renders a scripted failure (fault draw) for this request.
    status_error: Callable[[int, SimSettings], web.Response] = status_error
    # SSE events sent before a stream's first chunk (Azure's prompt annotations).
    stream_prelude: tuple[bytes, ...] = ()


OPENAI = Dialect()


def http_error(status: int, reason: str) -> web.Response:
    # Unknown routes, wrong methods, oversized bodies: keep OpenAI's shape.
    return error(status, reason, "invalid_request_error")


def check_auth(request: web.Request, state: SimState) -> web.Response | None:
    if state.api_key is None:
        return None
    given = request.headers.get("Authorization", "").encode()
    if not hmac.compare_digest(given, b"Bearer " + state.api_key):
        message = "Incorrect API key provided." if given else "You didn't provide an API key."
        return error(401, message, "invalid_request_error", None, "invalid_api_key")
    return None


def context_length_exceeded(over: reply.Overflow) -> web.Response:
    """OpenAI's (and Azure's) answer to a request that does not fit the context window."""
    head = f"This model's maximum context length is {over.limit} tokens. However, "
    if over.max_tokens is None or over.prompt_too_long:
        message = (f"{head}your messages resulted in {over.prompt_tokens} tokens. "
                   "Please reduce the length of the messages.")
    else:
        message = (f"{head}you requested {over.requested} tokens ({over.prompt_tokens} in the messages, "
                   f"{over.max_tokens} in the completion). Please reduce the length of the messages or "
                   "completion.")
    return invalid(message, "messages", "context_length_exceeded")


def model_not_found(model: str) -> web.Response:
    return error(404, f"The model `{model}` does not exist or you do not have access to it.",
                 "invalid_request_error", None, "model_not_found")


# ------------------------------------------------------------------- models

async def _list_models(request: web.Request) -> web.Response:
    state = request.app[STATE]
    return json_response({"object": "list", "data": [_model_obj(state, m) for m in state.models]})


async def _get_model(request: web.Request) -> web.Response:
    state = request.app[STATE]
    model = request.match_info["model"]
    if model not in state.model_set:
        return model_not_found(model)
    return json_response(_model_obj(state, model))


def _model_obj(state: SimState, model: str) -> dict[str, Any]:
    return {"id": model, "object": "model", "created": state.created, "owned_by": state.name}


# --------------------------------------------------------- chat completions

async def _chat_route(request: web.Request) -> web.StreamResponse:
    return await chat_completions(request, await read_json(request))


def opening(request: web.Request, body: Any, dialect: Dialect, count_stream: bool = True) -> web.Response | None:
    """What every OpenAI-wire call does first, in this order so seeded fault runs line up
    across its APIs: count a stream, draw a fault, insist on a JSON object. None: go on."""
    state = request.app[STATE]
    if count_stream and isinstance(body, dict) and body.get("stream") is True:
        state.stream_requests += 1
    fault = faults.draw_fault(state)
    if fault is not None:
        return dialect.status_error(fault, state.settings)
    if not isinstance(body, dict):
        return invalid("We could not parse the JSON body of your request. The body must be a JSON object.")
    return None


async def chat_completions(request: web.Request, body: Any, dialect: Dialect = OPENAI) -> web.StreamResponse:
    """A chat completion for ``body`` (parsed JSON, None if it was not JSON)."""
    state = request.app[STATE]
    refused = opening(request, body, dialect)
    if refused is not None:
        return refused
    streaming = body.get("stream") is True
    problem = _validate(body, state)
    if problem is not None:
        return problem

    ask = chat_ask(body)
    over = reply.context_overflow(ask, state.settings)
    if over is not None:
        return context_length_exceeded(over)
    ans = reply.answer(ask, state.settings)
    call_id = "call_" + uuid.uuid4().hex[:24] if ans.tool_call else None
    meta = {"id": "chatcmpl-" + uuid.uuid4().hex, "created": int(time.time()), "model": body["model"]}
    if streaming:
        options = body.get("stream_options")
        with_usage = isinstance(options, dict) and options.get("include_usage") is True
        head, pieces, tail = _stream_events(meta, ans, call_id, with_usage)
        return await faults.send_stream(request, state, [*dialect.stream_prelude, *head], pieces, tail)
    await faults.pause(state.settings.latency_ms)
    return json_response(_completion(meta, ans, call_id))


def _validate(body: dict, state: SimState) -> web.Response | None:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return invalid("you must provide a model parameter", "model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return invalid("'messages' must be a non-empty array", "messages")
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or not isinstance(msg.get("role"), str):
            return invalid(f"messages[{i}] must be an object with a 'role'", "messages")
    for key in ("max_tokens", "max_completion_tokens"):
        value = body.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < 1):
            return invalid(f"'{key}' must be a positive integer", key)
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list) or not all(_function_of(t) for t in tools):
            return invalid("'tools' must be an array of function tools with a name", "tools")
        forced = _forced_tool_name(body.get("tool_choice"))
        if forced is not None and not any(_function_of(t)["name"] == forced for t in tools):
            return invalid(f"tool_choice names unknown function {forced!r}", "tool_choice")
    if model not in state.model_set:
        return model_not_found(model)
    return None


def _function_of(tool: Any) -> dict | None:
    fn = tool.get("function") if isinstance(tool, dict) else None
    return fn if isinstance(fn, dict) and isinstance(fn.get("name"), str) else None


def _forced_tool_name(choice: Any) -> str | None:
    if isinstance(choice, dict):
        fn = choice.get("function")
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            return fn["name"]
    return None


def chat_ask(body: dict) -> reply.Ask:
    """A validated chat request as the wire-agnostic model sees it."""
    ask = reply.Ask(model=body["model"], turns=len(body["messages"]))
    for msg in body["messages"]:
        content = msg.get("content")
        if isinstance(content, str):
            ask.texts.append(content)
        elif isinstance(content, list):
            for part in content:
                if not isinstance(part, dict):
                    continue
                if isinstance(part.get("text"), str):
                    ask.texts.append(part["text"])
                elif part.get("type") in ("image_url", "input_image"):
                    ask.images += 1
        if isinstance(msg.get("name"), str):
            ask.texts.append(msg["name"])
        for call in msg.get("tool_calls") or ():
            fn = call.get("function") if isinstance(call, dict) else None
            if isinstance(fn, dict):
                ask.texts.append(str(fn.get("name") or "") + str(fn.get("arguments") or ""))
    tools = body.get("tools")
    if tools:
        ask.tools_size = len(orjson.dumps(tools))
        ask.tools = [reply.Tool(fn["name"], fn.get("parameters")) for fn in map(_function_of, tools)]
    choice = body.get("tool_choice")
    ask.tool_mode = "none" if choice == "none" else "auto"
    ask.forced_tool = _forced_tool_name(choice)
    ask.after_tool_result = body["messages"][-1].get("role") == "tool"
    limits = [body[k] for k in ("max_tokens", "max_completion_tokens") if body.get(k) is not None]
    ask.max_tokens = min(limits) if limits else None
    ask.structured = _structured(body.get("response_format"))
    return ask


def _structured(fmt: Any) -> Any:
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "json_object":
        return reply.JSON_OBJECT
    if kind == "json_schema":
        spec = fmt.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        # No schema still means a JSON object: the empty one.
        return schema if schema else {"type": "object"}
    return None


def usage(ans: reply.Answer) -> dict[str, int]:
    return {"prompt_tokens": ans.prompt_tokens, "completion_tokens": ans.completion_tokens,
            "total_tokens": ans.total_tokens}


def _completion(meta: dict[str, Any], ans: reply.Answer, call_id: str | None) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": ans.text, "refusal": None}
    if ans.tool_call is not None:
        message["tool_calls"] = [{"id": call_id, "type": "function",
                                  "function": {"name": ans.tool_call.name, "arguments": ans.tool_call.json}}]
    return {
        "id": meta["id"], "object": "chat.completion", "created": meta["created"],
        "model": meta["model"], "system_fingerprint": None,
        "choices": [{"index": 0, "message": message, "logprobs": None,
                     "finish_reason": _FINISH[ans.finish]}],
        "usage": usage(ans),
    }


def _stream_events(meta: dict[str, Any], ans: reply.Answer, call_id: str | None,
                   with_usage: bool) -> tuple[list[bytes], list[bytes], list[bytes]]:
    """SSE events as (before the tokens, one per token, after the tokens)."""
    base: dict[str, Any] = {"id": meta["id"], "object": "chat.completion.chunk",
                            "created": meta["created"], "model": meta["model"],
                            "system_fingerprint": None}
    if with_usage:
        base["usage"] = None

    def event(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return b"data: " + orjson.dumps({**base, "choices": [choice]}) + b"\n\n"

    call = ans.tool_call
    if call is None:
        head = [event({"role": "assistant", "content": ""})]
        pieces = [event({"content": p}) for p in ans.pieces]
    else:
        header = {"index": 0, "id": call_id, "type": "function",
                  "function": {"name": call.name, "arguments": ""}}
        head = [event({"role": "assistant", "content": None}),
                event({"tool_calls": [header]})]
        pieces = [event({"tool_calls": [{"index": 0, "function": {"arguments": p}}]})
                  for p in ans.pieces]
    tail = [event({}, _FINISH[ans.finish])]
    if with_usage:
        final = {**base, "choices": [], "usage": usage(ans)}
        tail.append(b"data: " + orjson.dumps(final) + b"\n\n")
    tail.append(b"data: [DONE]\n\n")
    return head, pieces, tail
