"""Gemini wire format (Generative Language API, ``/v1beta`` and ``/v1``).

``models/{model}:generateContent``, ``:streamGenerateContent`` (SSE with
``?alt=sse``, else a streamed JSON array), ``:embedContent``,
``:batchEmbedContents`` and model listing. Auth is ``x-goog-api-key`` or
``?key=``. Errors are ``{"error": {"code", "message", "status"}}``.

Like the real API, request fields are accepted in lowerCamelCase or
snake_case (``systemInstruction`` or ``system_instruction``).
"""

from __future__ import annotations

import hmac
import math
import re
import uuid
from typing import Any

import orjson
from aiohttp import web

from megarouter.sim import faults, reply
from megarouter.sim.common import CHAT, EMBEDDING, STATE, SimState, is_int, json_response, read_json
from megarouter.sim.settings import SimSettings

PREFIXES = ("/v1beta/", "/v1/")
DEFAULT_DIMENSIONS = 768
_MAX_DIMENSIONS = 8192
_MAX_BATCH = 100          # the API's limit on requests per batchEmbedContents call
_MAX_CANDIDATES = 8
_KINDS = {"generateContent": CHAT, "streamGenerateContent": CHAT,
          "embedContent": EMBEDDING, "batchEmbedContents": EMBEDDING}

_FINISH = {reply.STOP: "STOP", reply.LENGTH: "MAX_TOKENS", reply.TOOL: "STOP",
           reply.STOP_SEQUENCE: "STOP"}
_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
           409: "ABORTED", 429: "RESOURCE_EXHAUSTED", 499: "CANCELLED", 500: "INTERNAL",
           501: "UNIMPLEMENTED", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}
_MESSAGES = {429: "Resource has been exhausted (e.g. check quota). (simulated)",
             500: "An internal error has occurred. Please retry.",
             503: "The model is overloaded. Please try again later.",
             504: "Deadline exceeded."}
_MODES = ("AUTO", "ANY", "NONE", "VALIDATED", "MODE_UNSPECIFIED")


def add_routes(app: web.Application) -> None:
    for version in ("/v1beta", "/v1"):
        app.router.add_get(version + "/models", _list_models)
        app.router.add_get(version + "/models/{name}", _get_model)
        app.router.add_post(version + "/models/{name}", _call)


def kind_of(path: str) -> str | None:
    return _KINDS.get(path.rpartition(":")[2]) if ":" in path else None


def _get(obj: Any, camel: str) -> Any:
    """``obj[camel]``, falling back to its snake_case spelling; None when absent."""
    if not isinstance(obj, dict):
        return None
    if camel in obj:
        return obj[camel]
    return obj.get(re.sub(r"[A-Z]", lambda m: "_" + m[0].lower(), camel))


# ------------------------------------------------------------------- errors

def error(status: int, message: str, details: list[dict] | None = None,
          headers: dict[str, str] | None = None) -> web.Response:
    fallback = "INTERNAL" if status >= 500 else "FAILED_PRECONDITION"
    body: dict[str, Any] = {"code": status, "message": message, "status": _STATUS.get(status, fallback)}
    if details:
        body["details"] = details
    return json_response({"error": body}, status, headers)


def invalid(message: str) -> web.Response:
    return error(400, message)


def status_error(status: int, settings: SimSettings) -> web.Response:
    """A scripted failure (fault draw or outage) as Gemini reports it."""
    if status == 429:
        # The real API only says when to retry in RetryInfo; the header is
        # added so HTTP-level clients can honour it the same way for every wire.
        delay = math.ceil(settings.retry_after_s)
        info = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{delay}s"}
        return error(429, _MESSAGES[429], [info], {"Retry-After": str(delay)})
    return error(status, _MESSAGES.get(status, f"Simulated error {status}."))


def context_length_exceeded(over: reply.Overflow) -> web.Response:
    """Gemini's answer to a request that does not fit the context window.

    Gemini words only an over-long input; when it is ``maxOutputTokens`` that
    tips the request over, the count reported is input plus requested output.
    """
    count = over.prompt_tokens if over.prompt_too_long else over.requested
    return invalid(f"The input token count ({count}) exceeds the maximum number of tokens allowed "
                   f"({over.limit}).")


def http_error(status: int, reason: str) -> web.Response:
    return error(status, reason)


def check_auth(request: web.Request, state: SimState) -> web.Response | None:
    if state.api_key is None:
        return None
    given = (request.headers.get("x-goog-api-key") or request.query.get("key") or "").encode()
    # The real API's answers: no key is a 403, a wrong key a 400 (API_KEY_INVALID).
    if not given:
        return error(403, "Method doesn't allow unregistered callers (callers without established "
                          "identity). Please use API Key or other form of API consumer identity to call "
                          "this API.")
    if not hmac.compare_digest(given, state.api_key):
        reason = {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
                  "domain": "googleapis.com"}
        return error(400, "API key not valid. Please pass a valid API key.", [reason])
    return None


def _model_not_found(request: web.Request, model: str, method: str) -> web.Response:
    version = request.path.split("/")[1]
    return error(404, f"models/{model} is not found for API version {version}, or is not supported for "
                      f"{method}. Call ListModels to see the list of available models and their "
                      "supported methods.")


# ------------------------------------------------------------------- models

async def _list_models(request: web.Request) -> web.Response:
    state = request.app[STATE]
    return json_response({"models": [_model_obj(state, m) for m in state.models]})


async def _get_model(request: web.Request) -> web.Response:
    state = request.app[STATE]
    model = request.match_info["name"]
    if model not in state.model_set:
        return _model_not_found(request, model, "get")
    return json_response(_model_obj(state, model))


def _model_obj(state: SimState, model: str) -> dict[str, Any]:
    return {"name": f"models/{model}", "baseModelId": model, "version": "001", "displayName": model,
            "description": f"Simulated model served by {state.name}.",
            "inputTokenLimit": 1048576, "outputTokenLimit": 65536,
            "supportedGenerationMethods": list(_KINDS)}


async def _call(request: web.Request) -> web.StreamResponse:
    model, _, method = request.match_info["name"].rpartition(":")
    if not model or method not in _KINDS:
        return error(404, f"Method {method or request.match_info['name']!r} not found.")
    state = request.app[STATE]
    body = await read_json(request)
    if method == "streamGenerateContent":
        state.stream_requests += 1
    fault = faults.draw_fault(state)
    if fault is not None:
        return status_error(fault, state.settings)
    if not isinstance(body, dict):
        return invalid("Invalid JSON payload received. The body must be a JSON object.")
    if _KINDS[method] == EMBEDDING:
        return await _embed(request, state, model, method, body)
    problem = validate(body)
    if problem is not None:
        return invalid(problem)
    if model not in state.model_set:
        return _model_not_found(request, model, method)
    return await generate(request, state, model, body, method == "streamGenerateContent")


# ----------------------------------------------------------- generateContent

def validate(body: dict) -> str | None:
    """The first problem with a GenerateContentRequest, naming the field."""
    contents = _get(body, "contents")
    if not isinstance(contents, list) or not contents:
        return "* GenerateContentRequest.contents: contents is not specified"
    for i, content in enumerate(contents):
        if not isinstance(content, dict) or _get(content, "role") not in (None, "user", "model", "function"):
            return f"* GenerateContentRequest.contents[{i}].role: Please use a valid role: user, model."
        problem = _check_parts(content, f"contents[{i}]")
        if problem:
            return problem
    system = _get(body, "systemInstruction")
    if system is not None:
        problem = _check_parts(system, "system_instruction")
        if problem:
            return problem
    config = _get(body, "generationConfig")
    if config is not None and not isinstance(config, dict):
        return "* GenerateContentRequest.generation_config: must be an object"
    config = config or {}
    value = _get(config, "maxOutputTokens")
    if value is not None and not is_int(value):
        return "* GenerateContentRequest.generation_config.maxOutputTokens: must be a positive integer"
    value = _get(config, "candidateCount")
    if value is not None and (not is_int(value) or value > _MAX_CANDIDATES):
        return (f"* GenerateContentRequest.generation_config.candidateCount: must be between 1 and "
                f"{_MAX_CANDIDATES}")
    stops = _get(config, "stopSequences")
    if stops is not None and (not isinstance(stops, list) or not all(isinstance(s, str) for s in stops)):
        return "* GenerateContentRequest.generation_config.stop_sequences: must be a list of strings"
    tools = _get(body, "tools")
    if tools is not None and not isinstance(tools, list):
        return "* GenerateContentRequest.tools: must be a list"
    names = set()
    for i, decl in enumerate(_declarations(tools)):
        if not isinstance(decl, dict) or not isinstance(decl.get("name"), str) or not decl["name"]:
            return f"* GenerateContentRequest.tools.function_declarations[{i}].name: Name is required"
        names.add(decl["name"])
    calling = _get(_get(body, "toolConfig"), "functionCallingConfig") or {}
    mode = _get(calling, "mode")
    if mode is not None and mode not in _MODES:
        return f"* GenerateContentRequest.tool_config.function_calling_config.mode: unknown mode {mode!r}"
    allowed = _get(calling, "allowedFunctionNames")
    if allowed is not None and (not isinstance(allowed, list)
                                or not all(isinstance(n, str) and n in names for n in allowed)):
        return ("* GenerateContentRequest.tool_config.function_calling_config.allowed_function_names: "
                "must name declared functions")
    return None


def _check_parts(content: Any, where: str) -> str | None:
    parts = _get(content, "parts")
    if not isinstance(parts, list) or not parts:
        return f"* GenerateContentRequest.{where}.parts: contents.parts must not be empty."
    for j, part in enumerate(parts):
        if not isinstance(part, dict):
            return f"* GenerateContentRequest.{where}.parts[{j}]: must be an object"
        for key in ("functionCall", "functionResponse"):
            value = _get(part, key)
            if value is not None and not isinstance(_get(value, "name"), str):
                return f"* GenerateContentRequest.{where}.parts[{j}].{key}.name: Name is required"
    return None


def _declarations(tools: Any) -> list[Any]:
    # Built-in tools (googleSearch, codeExecution...) have no declarations.
    decls: list[Any] = []
    for tool in tools or ():
        found = _get(tool, "functionDeclarations")
        decls.extend(found if isinstance(found, list) else ())
    return decls


def _ask(body: dict, model: str) -> reply.Ask:
    """A validated GenerateContentRequest as the wire-agnostic model sees it."""
    contents = _get(body, "contents")
    system = _get(body, "systemInstruction")
    config = _get(body, "generationConfig") or {}
    ask = reply.Ask(model=model, turns=len(contents) + (1 if system else 0),
                    max_tokens=_get(config, "maxOutputTokens"),
                    stop=list(_get(config, "stopSequences") or ()))
    for content in ([system] if system else []) + contents:
        for part in _get(content, "parts"):
            _read_part(part, ask)
    tools = _get(body, "tools")
    calling = _get(_get(body, "toolConfig"), "functionCallingConfig") or {}
    if tools:
        ask.tools_size = len(orjson.dumps(tools))
        allowed = _get(calling, "allowedFunctionNames")
        ask.tools = [reply.Tool(d["name"], _get(d, "parameters") or _get(d, "parametersJsonSchema"))
                     for d in _declarations(tools) if not allowed or d["name"] in allowed]
    ask.tool_mode = "none" if _get(calling, "mode") == "NONE" else "auto"
    ask.after_tool_result = _get(_get(contents[-1], "parts")[-1], "functionResponse") is not None
    schema = _get(config, "responseSchema") or _get(config, "responseJsonSchema")
    if schema:
        ask.structured = schema
    elif _get(config, "responseMimeType") == "application/json":
        ask.structured = reply.JSON_OBJECT
    return ask


def _read_part(part: dict, ask: reply.Ask) -> None:
    if isinstance(part.get("text"), str):
        ask.texts.append(part["text"])
    elif _get(part, "inlineData") is not None or _get(part, "fileData") is not None:
        ask.images += 1
    for key, payload in (("functionCall", "args"), ("functionResponse", "response")):
        value = _get(part, key)
        if value is not None:
            ask.texts.append(value["name"] + orjson.dumps(value.get(payload)).decode())


async def generate(request: web.Request, state: SimState, model: str, body: dict,
                   streaming: bool) -> web.StreamResponse:
    """The answer to a ``validate``d request; shared with the Vertex wire, which serves the same bodies."""
    ask = _ask(body, model)
    over = reply.context_overflow(ask, state.settings)
    if over is not None:
        return context_length_exceeded(over)
    ans = reply.answer(ask, state.settings)
    count = _get(_get(body, "generationConfig"), "candidateCount") or 1
    meta = {"modelVersion": model, "responseId": uuid.uuid4().hex[:22]}
    out = ans.completion_tokens * count
    usage = {"promptTokenCount": ans.prompt_tokens, "candidatesTokenCount": out,
             "totalTokenCount": ans.prompt_tokens + out}

    def response(parts: list[dict], last: bool) -> dict[str, Any]:
        candidates = []
        for i in range(count):
            candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}}
            if last:
                candidate["finishReason"] = _FINISH[ans.finish]
            candidate["index"] = i
            candidates.append(candidate)
        data: dict[str, Any] = {"candidates": candidates}
        if last:
            data["usageMetadata"] = usage
        return {**data, **meta}

    if ans.tool_call is not None:
        # Gemini sends a function call whole, never as argument fragments.
        whole = [{"functionCall": {"name": ans.tool_call.name, "args": ans.tool_call.arguments}}]
        chunks = [whole]
    else:
        whole = [{"text": ans.text}]
        chunks = [[{"text": t}] for t in ans.pieces or [""]]
    if not streaming:
        await faults.pause(state.settings.latency_ms)
        return json_response(response(whole, last=True))
    events = [response(parts, last=i == len(chunks) - 1) for i, parts in enumerate(chunks)]
    # Each event is a whole GenerateContentResponse; the last carries finishReason
    # and usage. There is no terminal marker: the stream just ends.
    if request.query.get("alt") == "sse":
        sse = [b"data: " + orjson.dumps(e) + b"\r\n\r\n" for e in events]
        return await faults.send_stream(request, state, [], sse, [])
    # Without alt=sse the API streams one JSON array, element by element.
    array = [(b"[" if i == 0 else b",\r\n") + orjson.dumps(e) for i, e in enumerate(events)]
    return await faults.send_stream(request, state, [], array, [b"]"], content_type="application/json")


# ---------------------------------------------------------------- embeddings

async def _embed(request: web.Request, state: SimState, model: str, method: str, body: dict) -> web.Response:
    if method == "embedContent":
        one = _embed_one(body, model, "")
        if isinstance(one, str):
            return invalid(one)
        result: dict[str, Any] = {"embedding": one}
    else:
        requests = _get(body, "requests")
        if not isinstance(requests, list) or not requests or len(requests) > _MAX_BATCH:
            return invalid(f"* BatchEmbedContentsRequest.requests: must hold 1 to {_MAX_BATCH} requests")
        result = {"embeddings": []}
        for i, item in enumerate(requests):
            one = _embed_one(item, model, f"requests[{i}].")
            if isinstance(one, str):
                return invalid(one)
            result["embeddings"].append(one)
    if model not in state.model_set:
        return _model_not_found(request, model, method)
    await faults.pause(state.settings.latency_ms)
    return json_response(result)


def _embed_one(request: Any, model: str, where: str) -> dict[str, list[float]] | str:
    """``{"values": [...]}`` for one EmbedContentRequest, or what is wrong with it."""
    if not isinstance(request, dict):
        return f"* {where}: must be an object"
    named = request.get("model")
    if where and named is not None and named not in (f"models/{model}", model):
        return f"* BatchEmbedContentsRequest.{where}model: Model names should match in the batch request."
    parts = _get(_get(request, "content"), "parts")
    if not isinstance(parts, list):
        parts = []
    texts = [p["text"] for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str)]
    if not texts:
        return f"* EmbedContentRequest.{where}content: content must have at least one text part"
    # Newer clients put the size in embedContentConfig; older ones at the top level.
    dims = _get(request, "outputDimensionality")
    if dims is None:
        dims = _get(_get(request, "embedContentConfig"), "outputDimensionality") or DEFAULT_DIMENSIONS
    if not is_int(dims) or dims > _MAX_DIMENSIONS:
        return f"* EmbedContentRequest.{where}output_dimensionality: must be between 1 and {_MAX_DIMENSIONS}"
    return {"values": reply.embedding("\n".join(texts), dims)}
