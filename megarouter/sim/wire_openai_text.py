"""OpenAI embeddings (``/v1/embeddings``) and legacy text completions (``/v1/completions``).

Embeddings are hash-derived (see ``reply.embedding``): deterministic, and no
input is kept. Legacy completions reuse the chat model's words.
"""

from __future__ import annotations

import base64
import struct
import time
import uuid
from typing import Any

import orjson
from aiohttp import web

from megarouter.sim import faults, reply
from megarouter.sim import wire_openai as oai
from megarouter.sim.common import STATE, SimState, is_int, json_response, read_json

DEFAULT_DIMENSIONS = 1536
_MAX_DIMENSIONS = 8192
_MAX_INPUTS = 2048        # OpenAI's per-request limit on embedding inputs
_LEGACY_MAX_TOKENS = 16   # what /v1/completions generates when max_tokens is not given
_MAX_STOPS = 4


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/embeddings", _embeddings_route)
    app.router.add_post("/v1/completions", _completions_route)


async def _embeddings_route(request: web.Request) -> web.Response:
    return await embeddings(request, await read_json(request))


async def _completions_route(request: web.Request) -> web.StreamResponse:
    return await completions(request, await read_json(request))


def _start(request: web.Request, body: Any, stream_counts: bool,
           dialect: oai.Dialect) -> tuple[SimState, web.Response | None]:
    """Chat's opening (stream count, fault draw, a JSON object), then a model name."""
    state = request.app[STATE]
    refused = oai.opening(request, body, dialect, stream_counts)
    if refused is not None:
        return state, refused
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return state, oai.invalid("you must provide a model parameter", "model")
    return state, None


def _inputs(value: Any, param: str) -> list[tuple[str, int]] | str:
    """(text, tokens) per input for a string / strings / token array(s); an error message if malformed."""
    def tokens(v: Any) -> bool:
        return isinstance(v, list) and bool(v) and all(is_int(t, 0) for t in v)

    if isinstance(value, str) and value:
        return [(value, reply.text_tokens(value))]
    if tokens(value):
        return [(" ".join(map(str, value)), len(value))]
    if isinstance(value, list) and value:
        if all(isinstance(v, str) and v for v in value):
            return [(v, reply.text_tokens(v)) for v in value]
        if all(tokens(v) for v in value):
            return [(" ".join(map(str, v)), len(v)) for v in value]
    return (f"'{param}' must be a non-empty string, array of non-empty strings, or array of "
            "token arrays")


# ---------------------------------------------------------------- embeddings

async def embeddings(request: web.Request, body: Any, dialect: oai.Dialect = oai.OPENAI) -> web.Response:
    """Embeddings for ``body`` (parsed JSON, None if it was not JSON)."""
    state, problem = _start(request, body, False, dialect)
    if problem is not None:
        return problem
    inputs = _inputs(body.get("input"), "input")
    if isinstance(inputs, str):
        return oai.invalid(inputs, "input")
    if len(inputs) > _MAX_INPUTS:
        return oai.invalid(f"'input' must have at most {_MAX_INPUTS} items", "input")
    dims = body.get("dimensions", DEFAULT_DIMENSIONS)
    if not is_int(dims) or dims > _MAX_DIMENSIONS:
        return oai.invalid(f"'dimensions' must be an integer between 1 and {_MAX_DIMENSIONS}",
                           "dimensions")
    encoding = body.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        return oai.invalid("'encoding_format' must be 'float' or 'base64'", "encoding_format")
    if body["model"] not in state.model_set:
        return oai.model_not_found(body["model"])

    data = []
    for i, (text, _) in enumerate(inputs):
        vector: Any = reply.embedding(text, dims)
        if encoding == "base64":
            # The OpenAI SDKs ask for base64 by default: little-endian float32.
            vector = base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode()
        data.append({"object": "embedding", "index": i, "embedding": vector})
    tokens = sum(n for _, n in inputs)
    await faults.pause(state.settings.latency_ms)
    return json_response({"object": "list", "data": data, "model": body["model"],
                          "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})


# --------------------------------------------------------- legacy completions

async def completions(request: web.Request, body: Any, dialect: oai.Dialect = oai.OPENAI) -> web.StreamResponse:
    """A legacy text completion for ``body`` (parsed JSON, None if it was not JSON)."""
    state, problem = _start(request, body, True, dialect)
    if problem is not None:
        return problem
    if "prompt" not in body:
        return oai.invalid("you must provide a prompt parameter", "prompt")
    prompts = _inputs(body["prompt"], "prompt")
    if isinstance(prompts, str):
        return oai.invalid(prompts, "prompt")
    max_tokens = body.get("max_tokens")
    if max_tokens is not None and not is_int(max_tokens):
        return oai.invalid("'max_tokens' must be a positive integer", "max_tokens")
    n = body.get("n", 1)
    if not is_int(n) or n > 128:
        return oai.invalid("'n' must be an integer between 1 and 128", "n")
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else stop
    if stops is not None and (not isinstance(stops, list) or len(stops) > _MAX_STOPS
                              or not all(isinstance(s, str) for s in stops)):
        return oai.invalid(f"'stop' must be a string or up to {_MAX_STOPS} strings", "stop")
    if body["model"] not in state.model_set:
        return oai.model_not_found(body["model"])

    ask = reply.Ask(model=body["model"], stop=stops or [],
                    max_tokens=_LEGACY_MAX_TOKENS if max_tokens is None else max_tokens)
    ans = reply.answer(ask, state.settings)
    choices = len(prompts) * n
    # Prompts count once each, however many choices (n) each one gets.
    ans.prompt_tokens = sum(tokens for _, tokens in prompts)
    usage = {"prompt_tokens": ans.prompt_tokens, "completion_tokens": ans.completion_tokens * choices,
             "total_tokens": ans.prompt_tokens + ans.completion_tokens * choices}
    finish = "length" if ans.finish == reply.LENGTH else "stop"
    base = {"id": "cmpl-" + uuid.uuid4().hex, "object": "text_completion",
            "created": int(time.time()), "model": body["model"]}

    if body.get("stream") is True:
        options = body.get("stream_options")
        with_usage = isinstance(options, dict) and options.get("include_usage") is True
        head, pieces, tail = _stream_events(base, ans.pieces, choices, finish, usage if with_usage else None)
        return await faults.send_stream(request, state, [*dialect.stream_prelude, *head], pieces, tail)
    await faults.pause(state.settings.latency_ms)
    return json_response({**base, "choices": [_choice(i, ans.text or "", finish) for i in range(choices)],
                          "usage": usage})


def _choice(index: int, text: str, finish: str | None) -> dict[str, Any]:
    return {"text": text, "index": index, "logprobs": None, "finish_reason": finish}


def _stream_events(base: dict[str, Any], pieces: list[str], choices: int, finish: str,
                   usage: dict[str, int] | None) -> tuple[list[bytes], list[bytes], list[bytes]]:
    def event(data: dict[str, Any]) -> bytes:
        return b"data: " + orjson.dumps(data) + b"\n\n"

    def chunk(index: int, text: str, finish_reason: str | None) -> bytes:
        return event({**base, "choices": [_choice(index, text, finish_reason)]})

    # One paced piece carries that token for every choice.
    paced = [b"".join(chunk(i, p, None) for i in range(choices)) for p in pieces]
    tail = [chunk(i, "", finish) for i in range(choices)]
    if usage is not None:
        tail.append(event({**base, "choices": [], "usage": usage}))
    tail.append(b"data: [DONE]\n\n")
    return [], paced, tail
