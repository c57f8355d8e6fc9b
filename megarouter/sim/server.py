"""Provider simulator: an OpenAI chat-completions server with scriptable faults.

Integration tests, the local demo and benchmarks point MegaRouter at this
instead of a real provider. Faults (latency, error rates, 429s, outages,
stalled streams) are changed at run time through ``/_sim/config``.

Zero data retention: nothing here logs or prints request or reply content.
The only output is the one ``ready`` line on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hmac
import json
import math
import os
import random
import signal
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from megarouter.sim.schema_fake import fake_from_schema

ENV_PREFIX = "MEGAROUTER_SIM_"
DEFAULT_MODELS = "sim-small,sim-medium,sim-large"
OUTAGE_MODES = ("none", "503", "reset")

# Deterministic reply text: one word is one token.
_WORDS = (
    "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima "
    "mike november oscar papa quebec romeo sierra tango uniform victor whiskey "
    "xray yankee zulu"
).split()
_SPACED_WORDS = [" " + w for w in _WORDS]

# Rough prompt accounting, in the spirit of OpenAI's cookbook estimate.
_CHARS_PER_TOKEN = 4
_TOKENS_PER_MESSAGE = 4
_TOKENS_PER_IMAGE = 85
_REPLY_PRIMING_TOKENS = 3

# How often a stalled stream checks whether its client has gone away: aiohttp
# does not cancel handlers on disconnect by default, so it has to look.
_STALL_POLL_S = 0.05


class SettingError(ValueError):
    """A bad setting value or name; ``field`` names the culprit."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass
class SimSettings:
    """Fault and pacing knobs; replaced as a whole on each control update."""

    latency_ms: float = 0
    ttft_ms: float = 0
    tokens_per_second: float = 0
    reply_tokens: int = 16
    error_rate: float = 0
    error_status: int = 500
    rate_limit_rate: float = 0
    retry_after_s: float = 1
    outage: str = "none"
    stall_after_chunks: int = -1
    seed: int | None = None

    def __post_init__(self) -> None:
        for name, (check, _) in _FIELDS.items():
            setattr(self, name, check(name, getattr(self, name)))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def updated(self, changes: dict[str, Any]) -> SimSettings:
        """A copy with ``changes`` applied; raises SettingError and changes nothing on error."""
        for name in changes:
            if name not in _FIELDS:
                raise SettingError(name, f"unknown setting {name!r}")
        return dataclasses.replace(self, **changes)


def _number(name: str, value: Any, low: float, high: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise SettingError(name, f"{name} must be a number, got {value!r}")
    if not low <= value <= high:
        raise SettingError(name, f"{name} must be between {low} and {high}, got {value!r}")
    return float(value)


def _integer(name: str, value: Any, low: int, high: float = math.inf) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SettingError(name, f"{name} must be an integer, got {value!r}")
    if not low <= value <= high:
        raise SettingError(name, f"{name} must be between {low} and {high}, got {value!r}")
    return value


def _outage(name: str, value: Any) -> str:
    if value not in OUTAGE_MODES:
        raise SettingError(name, f"{name} must be one of {', '.join(OUTAGE_MODES)}, got {value!r}")
    return value


def _seed(name: str, value: Any) -> int | None:
    return None if value is None else _integer(name, value, -(2**63))


def _parse_seed(text: str) -> int | None:
    return None if text.strip().lower() in ("", "none") else int(text)


# name -> (validator, argparse type). The validator is also what checks
# control-plane updates, so CLI, env and HTTP share one set of rules.
_FIELDS: dict[str, tuple[Any, Any]] = {
    "latency_ms": (lambda n, v: _number(n, v, 0), float),
    "ttft_ms": (lambda n, v: _number(n, v, 0), float),
    "tokens_per_second": (lambda n, v: _number(n, v, 0), float),
    "reply_tokens": (lambda n, v: _integer(n, v, 0), int),
    "error_rate": (lambda n, v: _number(n, v, 0, 1), float),
    "error_status": (lambda n, v: _integer(n, v, 400, 599), int),
    "rate_limit_rate": (lambda n, v: _number(n, v, 0, 1), float),
    "retry_after_s": (lambda n, v: _number(n, v, 0), float),
    "outage": (_outage, str),
    "stall_after_chunks": (lambda n, v: _integer(n, v, -1), int),
    "seed": (_seed, _parse_seed),
}


class _State:
    """Per-app mutable state: current settings, random source and counters."""

    def __init__(self, settings: SimSettings, name: str, models: list[str],
                 api_key: str | None) -> None:
        self.settings = settings
        self.name = name
        self.models = list(models)
        self.model_set = frozenset(models)
        self.auth = f"Bearer {api_key}".encode() if api_key else None
        self.created = int(time.time())
        self.closing = False
        self.rng = random.Random(settings.seed)
        self.reset_stats()

    def reset_stats(self) -> None:
        self.requests = 0
        self.chat_requests = 0
        self.stream_requests = 0
        self.by_status: dict[str, int] = {}

    def count(self, status: str) -> None:
        self.by_status[status] = self.by_status.get(status, 0) + 1


STATE = web.AppKey("megarouter_sim_state", _State)


class _Dropped(web.Response):
    """Stands in for the response of a connection that was closed unanswered."""


# ---------------------------------------------------------------- responses

def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, headers=headers,
                        content_type="application/json")


def _error(status: int, message: str, type_: str, param: str | None = None,
           code: str | None = None, headers: dict[str, str] | None = None) -> web.Response:
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return _json(body, status, headers)


def _invalid(message: str, param: str | None = None, code: str | None = None) -> web.Response:
    return _error(400, message, "invalid_request_error", param, code)


def _rate_limited(settings: SimSettings) -> web.Response:
    return _error(
        429, "Rate limit reached for requests (simulated). Please try again later.",
        "requests", None, "rate_limit_exceeded",
        headers={"Retry-After": str(math.ceil(settings.retry_after_s))},
    )


def _status_error(status: int, settings: SimSettings) -> web.Response:
    if status == 429:
        return _rate_limited(settings)
    if status == 503:
        return _error(503, "The server is overloaded or not ready yet.", "server_error")
    if status >= 500:
        return _error(status, "The server had an error while processing your request. "
                      "Sorry about that!", "server_error")
    return _error(status, f"Simulated error {status}.", "invalid_request_error")


def _drop_connection(request: web.Request) -> web.Response:
    # Closing before any byte is written makes aiohttp's own write fail with a
    # ConnectionError, which it treats as a client disconnect (debug-level
    # only): the client sees the socket close, the server logs no traceback.
    if request.transport is not None:
        request.transport.close()
    return _Dropped(status=503)


# --------------------------------------------------------------- middleware

@web.middleware
async def _v1_gate(request: web.Request, handler: Any) -> web.StreamResponse:
    """Stats, outages and auth for the OpenAI surface; control endpoints skip it."""
    if not request.path.startswith("/v1/"):
        return await handler(request)
    state = request.app[STATE]
    state.requests += 1
    if request.path == "/v1/chat/completions":
        state.chat_requests += 1
    try:
        resp = _gate(request, state)
        if resp is None:
            resp = await handler(request)
    except web.HTTPException as exc:
        # Unknown routes, wrong methods, oversized bodies: keep OpenAI's shape.
        if exc.status < 400:
            raise
        resp = _error(exc.status, exc.reason, "invalid_request_error")
    state.count("reset" if isinstance(resp, _Dropped) else str(resp.status))
    return resp


def _gate(request: web.Request, state: _State) -> web.StreamResponse | None:
    outage = state.settings.outage
    if outage == "503":
        return _status_error(503, state.settings)
    if outage == "reset":
        return _drop_connection(request)
    if state.auth is not None:
        given = request.headers.get("Authorization", "").encode()
        if not hmac.compare_digest(given, state.auth):
            message = "Incorrect API key provided." if given else "You didn't provide an API key."
            return _error(401, message, "invalid_request_error", None, "invalid_api_key")
    return None


# ------------------------------------------------------------ OpenAI routes

async def _list_models(request: web.Request) -> web.Response:
    state = request.app[STATE]
    data = [_model_obj(state, m) for m in state.models]
    return _json({"object": "list", "data": data})


async def _get_model(request: web.Request) -> web.Response:
    state = request.app[STATE]
    model = request.match_info["model"]
    if model not in state.model_set:
        return _model_not_found(model)
    return _json(_model_obj(state, model))


def _model_obj(state: _State, model: str) -> dict[str, Any]:
    return {"id": model, "object": "model", "created": state.created, "owned_by": state.name}


def _model_not_found(model: str) -> web.Response:
    return _error(404, f"The model `{model}` does not exist or you do not have access to it.",
                  "invalid_request_error", None, "model_not_found")


async def _chat_completions(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    settings = state.settings
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        body = None
    streaming = isinstance(body, dict) and body.get("stream") is True
    if streaming:
        state.stream_requests += 1

    fault = _draw_fault(state, settings)
    if fault is not None:
        return fault
    if not isinstance(body, dict):
        return _invalid("We could not parse the JSON body of your request. The body must be "
                        "a JSON object.")
    problem = _validate(body, state)
    if problem is not None:
        return problem

    reply = _Reply(body, settings)
    if streaming:
        return await _stream(request, state, settings, body, reply)
    if settings.latency_ms > 0:
        await asyncio.sleep(settings.latency_ms / 1000)
    return _json(reply.completion(body))


def _draw_fault(state: _State, settings: SimSettings) -> web.Response | None:
    if settings.rate_limit_rate <= 0 and settings.error_rate <= 0:
        return None
    # One draw per request keeps each fault's share equal to its rate, and a
    # seeded run's pattern independent of which faults are switched on.
    draw = state.rng.random()
    if draw < settings.rate_limit_rate:
        return _rate_limited(settings)
    if draw < settings.rate_limit_rate + settings.error_rate:
        return _status_error(settings.error_status, settings)
    return None


def _validate(body: dict, state: _State) -> web.Response | None:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return _invalid("you must provide a model parameter", "model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return _invalid("'messages' must be a non-empty array", "messages")
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or not isinstance(msg.get("role"), str):
            return _invalid(f"messages[{i}] must be an object with a 'role'", "messages")
    for key in ("max_tokens", "max_completion_tokens"):
        value = body.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < 1):
            return _invalid(f"'{key}' must be a positive integer", key)
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list) or not all(_function_of(t) for t in tools):
            return _invalid("'tools' must be an array of function tools with a name", "tools")
        forced = _forced_tool_name(body.get("tool_choice"))
        if forced is not None and not any(_function_of(t)["name"] == forced for t in tools):
            return _invalid(f"tool_choice names unknown function {forced!r}", "tool_choice")
    if model not in state.model_set:
        return _model_not_found(model)
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


# -------------------------------------------------------------- reply model

class _Reply:
    """What the simulated model answers, split into stream pieces."""

    def __init__(self, body: dict, settings: SimSettings) -> None:
        self.id = "chatcmpl-" + uuid.uuid4().hex
        self.created = int(time.time())
        self.model = body["model"]
        self.prompt_tokens = _prompt_tokens(body)
        self.tool_call: dict[str, Any] | None = None
        self.content: str | None
        self.pieces: list[str]

        tool = _chosen_tool(body)
        if tool is not None:
            args = orjson.dumps(_tool_arguments(tool)).decode()
            self.tool_call = {"id": "call_" + uuid.uuid4().hex[:24], "type": "function",
                              "function": {"name": tool["name"], "arguments": args}}
            self.content = None
            self.pieces = _split(args)
            self.finish_reason = "tool_calls"
        else:
            fmt = body.get("response_format")
            structured = _structured_content(fmt) if isinstance(fmt, dict) else None
            if structured is not None:
                self.content = structured
                self.pieces = _split(structured)
                self.finish_reason = "stop"
            else:
                self.pieces, self.finish_reason = _words(settings.reply_tokens,
                                                         _token_limit(body))
                self.content = "".join(self.pieces)
        self.completion_tokens = len(self.pieces)

    def usage(self) -> dict[str, int]:
        return {"prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens}

    def completion(self, body: dict) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": self.content, "refusal": None}
        if self.tool_call is not None:
            message["tool_calls"] = [self.tool_call]
        return {
            "id": self.id, "object": "chat.completion", "created": self.created,
            "model": self.model, "system_fingerprint": None,
            "choices": [{"index": 0, "message": message, "logprobs": None,
                         "finish_reason": self.finish_reason}],
            "usage": self.usage(),
        }


def _chosen_tool(body: dict) -> dict | None:
    tools = body.get("tools")
    choice = body.get("tool_choice")
    if not tools or choice == "none":
        return None
    # A tool result last means the model has what it asked for: answer in text
    # so a client's tool loop terminates.
    if body["messages"][-1].get("role") == "tool":
        return None
    forced = _forced_tool_name(choice)
    functions = [_function_of(t) for t in tools]
    for fn in functions:
        if forced is None or fn["name"] == forced:
            return fn
    return None


def _tool_arguments(fn: dict) -> Any:
    params = fn.get("parameters")
    # A function without parameters takes an empty object, not a string.
    return fake_from_schema(params) if isinstance(params, dict) and params else {}


def _structured_content(fmt: dict) -> str | None:
    kind = fmt.get("type")
    if kind == "json_object":
        return orjson.dumps({"answer": " ".join(_WORDS[:3]), "ok": True}).decode()
    if kind == "json_schema":
        spec = fmt.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        return orjson.dumps(fake_from_schema(schema) if schema else {}).decode()
    return None


def _token_limit(body: dict) -> int | None:
    limits = [body[k] for k in ("max_tokens", "max_completion_tokens") if body.get(k) is not None]
    return min(limits) if limits else None


def _words(count: int, limit: int | None) -> tuple[list[str], str]:
    finish = "stop"
    if limit is not None and limit < count:
        count, finish = limit, "length"
    if count <= 0:
        return [], finish
    n = len(_WORDS)
    return [_WORDS[0]] + [_SPACED_WORDS[i % n] for i in range(1, count)], finish


def _split(text: str) -> list[str]:
    # Structured output and tool arguments stream as ~one-token fragments.
    return [text[i:i + _CHARS_PER_TOKEN] for i in range(0, len(text), _CHARS_PER_TOKEN)]


def _prompt_tokens(body: dict) -> int:
    chars = 0
    tokens = _REPLY_PRIMING_TOKENS
    for msg in body["messages"]:
        tokens += _TOKENS_PER_MESSAGE
        content = msg.get("content")
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            for part in content:
                if not isinstance(part, dict):
                    continue
                if isinstance(part.get("text"), str):
                    chars += len(part["text"])
                elif part.get("type") in ("image_url", "input_image"):
                    tokens += _TOKENS_PER_IMAGE
        if isinstance(msg.get("name"), str):
            chars += len(msg["name"])
        for call in msg.get("tool_calls") or ():
            fn = call.get("function") if isinstance(call, dict) else None
            if isinstance(fn, dict):
                chars += len(str(fn.get("name") or "")) + len(str(fn.get("arguments") or ""))
    if body.get("tools"):
        chars += len(orjson.dumps(body["tools"]))
    return tokens + math.ceil(chars / _CHARS_PER_TOKEN)


# ---------------------------------------------------------------- streaming

async def _stream(request: web.Request, state: _State, settings: SimSettings, body: dict,
                  reply: _Reply) -> web.StreamResponse:
    options = body.get("stream_options")
    with_usage = isinstance(options, dict) and options.get("include_usage") is True
    head, pieces, tail = _stream_events(reply, with_usage)
    stall = settings.stall_after_chunks
    stalled = 0 <= stall < len(pieces)
    if stalled:
        pieces, tail = pieces[:stall], []

    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                       "Cache-Control": "no-cache"})
    try:
        await resp.prepare(request)
        if settings.ttft_ms > 0:
            await asyncio.sleep(settings.ttft_ms / 1000)
        if settings.tokens_per_second <= 0:
            # Unpaced: one write is much cheaper, and what benchmarks want.
            await resp.write(b"".join(head + pieces + tail))
        else:
            await _paced(resp, head, pieces, settings.tokens_per_second)
            if tail:
                await resp.write(b"".join(tail))
        if stalled:
            await _hold_open(request, state)
        else:
            await resp.write_eof()
    except ConnectionError:
        pass  # the client went away mid-stream: nothing left to do
    return resp


async def _paced(resp: web.StreamResponse, head: list[bytes], pieces: list[bytes],
                 tokens_per_second: float) -> None:
    loop = asyncio.get_running_loop()
    interval = 1 / tokens_per_second
    start = loop.time()
    # The first token goes out with the role chunk; later ones are scheduled
    # against the start time so sleep overshoot does not accumulate.
    await resp.write(b"".join(head + pieces[:1]))
    for i in range(1, len(pieces)):
        delay = start + i * interval - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        await resp.write(pieces[i])


async def _hold_open(request: web.Request, state: _State) -> None:
    while not state.closing:
        transport = request.transport
        if transport is None or transport.is_closing():
            return
        await asyncio.sleep(_STALL_POLL_S)


def _stream_events(reply: _Reply, with_usage: bool) -> tuple[list[bytes], list[bytes], list[bytes]]:
    """SSE events as (before the tokens, one per token, after the tokens)."""
    base: dict[str, Any] = {"id": reply.id, "object": "chat.completion.chunk",
                            "created": reply.created, "model": reply.model,
                            "system_fingerprint": None}
    if with_usage:
        base["usage"] = None

    def event(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return b"data: " + orjson.dumps({**base, "choices": [choice]}) + b"\n\n"

    call = reply.tool_call
    if call is None:
        head = [event({"role": "assistant", "content": ""})]
        pieces = [event({"content": p}) for p in reply.pieces]
    else:
        header = {"index": 0, "id": call["id"], "type": "function",
                  "function": {"name": call["function"]["name"], "arguments": ""}}
        head = [event({"role": "assistant", "content": None}),
                event({"tool_calls": [header]})]
        pieces = [event({"tool_calls": [{"index": 0, "function": {"arguments": p}}]})
                  for p in reply.pieces]
    tail = [event({}, reply.finish_reason)]
    if with_usage:
        final = {**base, "choices": [], "usage": reply.usage()}
        tail.append(b"data: " + orjson.dumps(final) + b"\n\n")
    tail.append(b"data: [DONE]\n\n")
    return head, pieces, tail


# ---------------------------------------------------------- control routes

async def _healthz(request: web.Request) -> web.Response:
    return _json({"status": "ok"})


async def _get_config(request: web.Request) -> web.Response:
    return _json(request.app[STATE].settings.to_dict())


async def _put_config(request: web.Request) -> web.Response:
    state = request.app[STATE]
    try:
        changes = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        changes = None
    if not isinstance(changes, dict):
        return _invalid("config update must be a JSON object")
    try:
        state.settings = state.settings.updated(changes)
    except SettingError as exc:
        return _invalid(str(exc), exc.field)
    if "seed" in changes:
        state.rng.seed(state.settings.seed)
    return _json(state.settings.to_dict())


async def _get_stats(request: web.Request) -> web.Response:
    state = request.app[STATE]
    return _json({"requests": state.requests, "chat_requests": state.chat_requests,
                  "by_status": state.by_status, "stream_requests": state.stream_requests})


async def _reset_stats(request: web.Request) -> web.Response:
    state = request.app[STATE]
    state.reset_stats()
    # Restarting the random sequence lets a test replay a seeded fault pattern.
    state.rng.seed(state.settings.seed)
    return await _get_stats(request)


async def _on_shutdown(app: web.Application) -> None:
    app[STATE].closing = True  # releases stalled streams so shutdown is prompt


def build_app(settings: SimSettings | None = None, name: str = "sim",
              models: list[str] | None = None, api_key: str | None = None) -> web.Application:
    """The simulator as an aiohttp app, for in-process use (tests) or ``run``."""
    if models is None:
        models = DEFAULT_MODELS.split(",")
    # Multimodal prompts carry base64 images: allow bodies well past 1 MiB.
    app = web.Application(middlewares=[_v1_gate], client_max_size=64 * 1024 * 1024)
    app[STATE] = _State(settings or SimSettings(), name, models, api_key)
    app.router.add_get("/v1/models", _list_models)
    app.router.add_get("/v1/models/{model}", _get_model)
    app.router.add_post("/v1/chat/completions", _chat_completions)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/_sim/config", _get_config)
    app.router.add_put("/_sim/config", _put_config)
    app.router.add_post("/_sim/config", _put_config)
    app.router.add_get("/_sim/stats", _get_stats)
    app.router.add_post("/_sim/reset", _reset_stats)
    app.on_shutdown.append(_on_shutdown)
    return app


# -------------------------------------------------------------------- CLI

def _env(name: str, default: Any) -> Any:
    # argparse runs string defaults through the option's type, so env values
    # are converted and checked exactly like flags, and a flag still wins.
    return os.environ.get(ENV_PREFIX + name.upper(), default)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the simulator's flags; each also reads ``MEGAROUTER_SIM_<NAME>`` from the env."""
    parser.add_argument("--host", default=_env("host", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=_env("port", 0),
                        help="0 lets the OS pick; the ready line reports it")
    parser.add_argument("--name", default=_env("name", "sim"))
    parser.add_argument("--models", default=_env("models", DEFAULT_MODELS),
                        help="comma-separated model ids served")
    parser.add_argument("--api-key", default=_env("api_key", None),
                        help="require 'Authorization: Bearer <key>' on /v1")
    defaults = SimSettings()
    for field in dataclasses.fields(SimSettings):
        _, arg_type = _FIELDS[field.name]
        flag = "--" + field.name.replace("_", "-")
        extra = {"choices": OUTAGE_MODES} if field.name == "outage" else {}
        parser.add_argument(flag, type=arg_type, default=_env(field.name,
                            getattr(defaults, field.name)), **extra)


def settings_from_args(args: argparse.Namespace) -> SimSettings:
    return SimSettings(**{f.name: getattr(args, f.name) for f in dataclasses.fields(SimSettings)})


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM; prints one JSON ``ready`` line once listening."""
    try:
        settings = settings_from_args(args)
    except SettingError as exc:
        print(f"megarouter.sim: {exc}", file=sys.stderr)
        return 2
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    app = build_app(settings, args.name, models, args.api_key)
    try:
        import uvloop
    except ImportError:
        return asyncio.run(_serve(app, args.host, args.port, args.name))
    return uvloop.run(_serve(app, args.host, args.port, args.name))


async def _serve(app: web.Application, host: str, port: int, name: str) -> int:
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        ready = {"event": "ready", "service": "sim", "name": name,
                 "port": runner.addresses[0][1]}
        sys.stdout.write(json.dumps(ready) + "\n")
        sys.stdout.flush()
        await stop.wait()
    finally:
        await runner.cleanup()
    return 0
