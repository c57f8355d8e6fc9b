"""Google's Gemini API (Generative Language API, `v1beta`).

`base_url` is the API root with its version, e.g.
`https://generativelanguage.googleapis.com/v1beta`; the key goes in the
`x-goog-api-key` header; `upstream_model` is a model id with or without the
`models/` prefix (`tunedModels/...` ids are used as they are).

Request (OpenAI chat -> GenerateContentRequest):
  system / developer messages -> `systemInstruction`, one text part each, in
      order, wherever they appear (Gemini has a single system slot)
  user -> "user", assistant -> "model"; consecutive turns of one role merge
  text / image_url / input_audio / file parts -> text / inlineData (data: URLs)
      / fileData (http(s) URLs, fetched by Google; MIME guessed from the
      extension, default image/jpeg)
  assistant tool_calls -> functionCall parts; tool messages -> functionResponse
      parts in a user turn, named after the earlier call with that id
  max_(completion_)tokens, temperature, top_p, top_k, stop, n, seed,
      presence/frequency_penalty -> generationConfig
  response_format json_object / json_schema -> responseMimeType (+ responseSchema)
  tools / tool_choice -> functionDeclarations / functionCallingConfig
  JSON Schemas (tool parameters, response schemas) are cut down to the subset
  Gemini's `Schema` accepts: see `clean_schema`.
Rejected with a 400 naming the field (Gemini cannot do them, or this adapter
does not translate the answer): logprobs, top_logprobs, logit_bias, audio
output, non-text modalities, web_search_options, non-function tools, file ids,
content part types other than the above.
Ignored: user, metadata, store, service_tier, parallel_tool_calls (Gemini may
call several functions at once regardless), reasoning_effort, stream_options
(usage is always read from the stream), prompt_cache_key.

Thought signatures: Gemini 3 rejects a replayed functionCall whose part lacks
the `thoughtSignature` it was sent with. Tool calls in answers carry it in
`extra_content.google.thought_signature` (Google's own OpenAI-compatible
convention); when a client sends it back it is restored, and otherwise the
first call of each assistant message gets Google's documented placeholder,
which skips the check at some cost in reasoning continuity.

Responses, streams (`gemini_stream.py`), errors and embeddings: see the
functions below.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlparse

import orjson

from dataplane.errors import ApiError, bad_request
from dataplane.providers.base import ErrorClass, ProviderError, Usage
from dataplane.providers.errors import class_for_status, parse_duration, parse_retry_after
from dataplane.providers.gemini_stream import (
    GeminiStream,
    finish_reason,
    openai_usage,
    read_parts,
    response_id,
    usage_from_metadata,
)

# Google's placeholder for a functionCall with no real thought signature
# (a history from another model, or from a client that dropped the field).
SKIP_SIGNATURE = "skip_thought_signature_validator"

_IMAGE_TYPES = {
    ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp",
    ".gif": "image/gif", ".heic": "image/heic", ".heif": "image/heif",
}
_DATA_URL = re.compile(r"data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?:;[^;,]*)*?;base64,(?P<data>.*)", re.S | re.I)
_TOOL_MODES = {"auto": "AUTO", "required": "ANY", "none": "NONE"}
_GENERATION_FIELDS = (
    ("temperature", "temperature"), ("top_p", "topP"), ("top_k", "topK"), ("n", "candidateCount"),
    ("seed", "seed"), ("presence_penalty", "presencePenalty"), ("frequency_penalty", "frequencyPenalty"),
)

# -- schemas ---------------------------------------------------------------

# Gemini's `Schema` is a subset of OpenAPI 3.0; anything else is an error
# upstream ("Unknown name ..."), so every other keyword is dropped.
_SCHEMA_SCALARS = (
    "title", "description", "nullable", "minItems", "maxItems", "minLength", "maxLength",
    "minProperties", "maxProperties", "minimum", "maximum", "pattern", "default", "example",
)
# The Gemini API accepts only these `format`s (others fail the request).
_FORMATS = frozenset({"enum", "date-time", "float", "double", "int32", "int64"})


def clean_schema(schema: Any, ordered: bool = False) -> dict[str, Any]:
    """A JSON Schema cut down to what Gemini's `Schema` accepts.

    - local `$ref`s (`#/$defs/X`, `#/definitions/X`) are inlined; a recursive
      reference becomes a bare OBJECT (Gemini schemas cannot recurse)
    - `type: [T, "null"]` and `null` members of anyOf/oneOf/enum -> `nullable`
    - several types -> `anyOf`; `oneOf` -> `anyOf`; `allOf` is merged
    - `const` -> a one-value `enum`; enums that are not all strings are dropped
    - `format` is kept only when Gemini accepts it (enum, date-time, float,
      double, int32, int64); `required` only lists declared properties
    - dropped: additionalProperties, $schema, $id, $comment, patternProperties,
      exclusiveMinimum/Maximum, multipleOf, uniqueItems, prefixItems, not,
      if/then/else, examples, strict and any other keyword
    - type names are upper-cased (STRING, OBJECT, ...)
    `ordered` adds `propertyOrdering` (schema order) so structured output keeps
    the caller's key order instead of Gemini's default alphabetical one.
    """
    if not isinstance(schema, dict):
        return {}
    defs: dict[str, Any] = {}
    for key in ("definitions", "$defs"):
        if isinstance(schema.get(key), dict):
            defs.update(schema[key])
    return _clean(schema, defs, ordered, ())


def _clean(node: Any, defs: dict[str, Any], ordered: bool, seen: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(node, dict):
        return {}
    ref = node.get("$ref")
    if isinstance(ref, str):
        name = ref.rsplit("/", 1)[-1]
        if name in seen or not isinstance(defs.get(name), dict):
            return {"type": "OBJECT"}
        # Sibling keywords (often a `description`) override the definition's.
        merged = {**defs[name], **{k: v for k, v in node.items() if k != "$ref"}}
        return _clean(merged, defs, ordered, (*seen, name))
    if isinstance(node.get("allOf"), list):
        node = _merge_all_of(node)
    out: dict[str, Any] = {}
    variants = node.get("anyOf") if isinstance(node.get("anyOf"), list) else node.get("oneOf")
    if isinstance(variants, list):
        cleaned = []
        for variant in variants:
            if isinstance(variant, dict) and variant.get("type") == "null":
                out["nullable"] = True
            else:
                cleaned.append(_clean(variant, defs, ordered, seen))
        if len(cleaned) == 1:
            out.update(cleaned[0])
        elif cleaned:
            out["anyOf"] = cleaned
    kind = node.get("type")
    if isinstance(kind, list):
        if "null" in kind:
            out["nullable"] = True
        kinds = [k for k in kind if isinstance(k, str) and k != "null"]
        if len(kinds) > 1:
            out["anyOf"] = [{"type": k.upper()} for k in kinds]
        kind = kinds[0] if len(kinds) == 1 else None
    if kind == "null":
        out["nullable"] = True
    elif isinstance(kind, str):
        out["type"] = kind.upper()
    elif "properties" in node:
        out["type"] = "OBJECT"
    elif "items" in node:
        out["type"] = "ARRAY"
    values = [node["const"]] if "const" in node else node.get("enum")
    if isinstance(values, list):
        if None in values:
            out["nullable"] = True
        strings = [v for v in values if v is not None]
        if strings and all(isinstance(v, str) for v in strings):
            out["enum"] = strings
    if node.get("format") in _FORMATS:
        out["format"] = node["format"]
    for key in _SCHEMA_SCALARS:
        if key in node and key not in out:
            out[key] = node[key]
    properties = node.get("properties")
    if isinstance(properties, dict) and properties:
        out["properties"] = {str(k): _clean(v, defs, ordered, seen) for k, v in properties.items()}
        required = node.get("required")
        if isinstance(required, list):
            out["required"] = [r for r in required if r in properties]
        if ordered:
            out["propertyOrdering"] = list(out["properties"])
    if isinstance(node.get("items"), dict):
        out["items"] = _clean(node["items"], defs, ordered, seen)
    return out


def _merge_all_of(node: dict[str, Any]) -> dict[str, Any]:
    merged = {k: v for k, v in node.items() if k != "allOf"}
    for part in node["allOf"]:
        if not isinstance(part, dict):
            continue
        for key, value in part.items():
            if key == "properties" and isinstance(value, dict):
                merged["properties"] = {**merged.get("properties", {}), **value}
            elif key == "required" and isinstance(value, list):
                merged["required"] = [*merged.get("required", []), *value]
            else:
                merged.setdefault(key, value)
    return merged


# -- request ---------------------------------------------------------------


def _model_path(upstream_model: str) -> str:
    if upstream_model.startswith("tunedModels/"):
        return upstream_model
    return "models/" + upstream_model.removeprefix("models/")


def build_request(payload: dict[str, Any]) -> dict[str, Any]:
    """The GenerateContentRequest (as a dict) for an OpenAI chat request."""
    _reject_unsupported(payload)
    messages = payload.get("messages")
    if not isinstance(messages, list):
        raise bad_request("'messages' must be an array", "messages")
    system: list[dict[str, str]] = []
    contents: list[dict[str, Any]] = []
    call_names: dict[str, str] = {}  # tool_call_id -> function name, from earlier assistant messages
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise bad_request(f"{where} must be an object", where)
        role = message.get("role")
        if role in ("system", "developer"):
            system.extend({"text": t} for t in _texts(message.get("content"), where) if t)
            continue
        if role == "user":
            turn, parts = "user", _user_parts(message.get("content"), where)
        elif role == "assistant":
            turn, parts = "model", _assistant_parts(message, where, call_names)
        elif role in ("tool", "function"):
            turn, parts = "user", [_function_response(message, where, call_names)]
        else:
            raise bad_request(f"{where}.role {role!r} is not supported for Gemini models", f"{where}.role")
        if not parts:
            continue  # Gemini rejects a turn without parts
        if contents and contents[-1]["role"] == turn:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": turn, "parts": parts})
    if not contents:
        raise bad_request("Gemini needs at least one non-empty user or assistant message", "messages")
    body: dict[str, Any] = {"contents": contents}
    if system:
        body["systemInstruction"] = {"parts": system}
    config = _generation_config(payload)
    if config:
        body["generationConfig"] = config
    tools = payload.get("tools")
    if tools:
        body["tools"] = [{"functionDeclarations": [_declaration(t, f"tools[{i}]") for i, t in enumerate(tools)]}]
        calling = _calling_config(payload.get("tool_choice"))
        if calling:
            body["toolConfig"] = {"functionCallingConfig": calling}
    elif payload.get("tool_choice") not in (None, "none", "auto"):
        raise bad_request("'tool_choice' needs 'tools'", "tool_choice")
    return body


def _reject_unsupported(payload: dict[str, Any]) -> None:
    if payload.get("logprobs") or payload.get("top_logprobs"):
        raise bad_request("logprobs are not available for Gemini models through this gateway", "logprobs")
    if payload.get("logit_bias"):
        raise bad_request("Gemini models do not support 'logit_bias'", "logit_bias")
    modalities = payload.get("modalities")
    if payload.get("audio") is not None or (isinstance(modalities, list) and set(modalities) - {"text"}):
        raise bad_request("only text output is available for Gemini models through this gateway", "modalities")
    if payload.get("web_search_options") is not None:
        raise bad_request("web search is not available for Gemini models through this gateway",
                          "web_search_options")


def _texts(content: Any, where: str) -> list[str]:
    """The text of a message that may only hold text (system, tool)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):
        texts = []
        for i, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise bad_request(f"{where}.content[{i}] must be a text part here", f"{where}.content[{i}]")
            texts.append(part["text"])
        return texts
    raise bad_request(f"{where}.content must be a string or an array of parts", f"{where}.content")


def _user_parts(content: Any, where: str) -> list[dict[str, Any]]:
    if content is None or isinstance(content, str):
        return [{"text": content}] if content else []
    if not isinstance(content, list):
        raise bad_request(f"{where}.content must be a string or an array of parts", f"{where}.content")
    parts: list[dict[str, Any]] = []
    for i, part in enumerate(content):
        field = f"{where}.content[{i}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            if part["text"]:
                parts.append({"text": part["text"]})
        elif kind == "image_url":
            parts.append(_image_part(part.get("image_url"), field))
        elif kind == "input_audio":
            parts.append(_audio_part(part.get("input_audio"), field))
        elif kind == "file":
            parts.append(_file_part(part.get("file"), field))
        else:
            raise bad_request(f"{field}: content part type {kind!r} is not supported for Gemini models", field)
    return parts


def _image_part(image: Any, field: str) -> dict[str, Any]:
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str) or not url:
        raise bad_request(f"{field}.image_url.url must be a non-empty string", f"{field}.image_url")
    if url.startswith("data:"):
        return _inline(url, field, "image/jpeg")
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https"):
        raise bad_request(f"{field}: image URLs must be http(s) or data: URLs", f"{field}.image_url")
    suffix = parsed.path[parsed.path.rfind("."):].lower() if "." in parsed.path else ""
    return {"fileData": {"mimeType": _IMAGE_TYPES.get(suffix, "image/jpeg"), "fileUri": url}}


def _inline(url: str, field: str, default_mime: str) -> dict[str, Any]:
    match = _DATA_URL.fullmatch(url)
    if not match:
        raise bad_request(f"{field}: only base64 data: URLs can be sent inline", field)
    return {"inlineData": {"mimeType": match["mime"] or default_mime, "data": match["data"]}}


def _audio_part(audio: Any, field: str) -> dict[str, Any]:
    if not isinstance(audio, dict) or not isinstance(audio.get("data"), str):
        raise bad_request(f"{field}.input_audio must have base64 'data'", f"{field}.input_audio")
    fmt = audio.get("format") if isinstance(audio.get("format"), str) else "wav"
    return {"inlineData": {"mimeType": f"audio/{fmt}", "data": audio["data"]}}


def _file_part(file: Any, field: str) -> dict[str, Any]:
    data = file.get("file_data") if isinstance(file, dict) else None
    if not isinstance(data, str) or not data:
        # An OpenAI file id means nothing to Google.
        raise bad_request(f"{field}: Gemini models need the file's content in 'file_data'", f"{field}.file")
    if data.startswith("data:"):
        return _inline(data, field, "application/pdf")
    name = file.get("filename") if isinstance(file.get("filename"), str) else ""
    if name.lower().endswith(".pdf"):
        return {"inlineData": {"mimeType": "application/pdf", "data": data}}
    raise bad_request(f"{field}: 'file_data' must be a data: URL naming its MIME type", f"{field}.file")


def _assistant_parts(message: dict[str, Any], where: str, call_names: dict[str, str]) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    content = message.get("content")
    if isinstance(content, list):
        for i, part in enumerate(content):
            text = part.get("text", part.get("refusal")) if isinstance(part, dict) else None
            if not isinstance(text, str):
                raise bad_request(f"{where}.content[{i}] must be a text or refusal part", f"{where}.content[{i}]")
            if text:
                parts.append({"text": text})
    elif isinstance(content, str):
        if content:
            parts.append({"text": content})
    elif content is not None:
        raise bad_request(f"{where}.content must be a string or an array of parts", f"{where}.content")
    calls = message.get("tool_calls")
    if calls is None and isinstance(message.get("function_call"), dict):  # the deprecated single-call form
        calls = [{"type": "function", "function": message["function_call"]}]
    if calls is None:
        return parts
    if not isinstance(calls, list):
        raise bad_request(f"{where}.tool_calls must be an array", f"{where}.tool_calls")
    for j, call in enumerate(calls):
        field = f"{where}.tool_calls[{j}]"
        if not isinstance(call, dict) or call.get("type", "function") != "function":
            raise bad_request(f"{field} must be a function call", field)
        function = call.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(name, str) or not name:
            raise bad_request(f"{field} must be a function call with a name", field)
        part: dict[str, Any] = {
            "functionCall": {"name": name, "args": _arguments(function.get("arguments"), f"{field}.function.arguments")}
        }
        extra = call.get("extra_content")
        google = extra.get("google") if isinstance(extra, dict) else None
        signature = google.get("thought_signature") if isinstance(google, dict) else None
        if isinstance(signature, str) and signature:
            part["thoughtSignature"] = signature
        elif j == 0:  # Gemini checks the first call of each step
            part["thoughtSignature"] = SKIP_SIGNATURE
        parts.append(part)
        if isinstance(call.get("id"), str):
            call_names[call["id"]] = name
    return parts


def _arguments(arguments: Any, field: str) -> dict[str, Any]:
    if isinstance(arguments, dict):
        return arguments
    if arguments is None or (isinstance(arguments, str) and not arguments.strip()):
        return {}
    try:
        parsed = orjson.loads(arguments) if isinstance(arguments, str) else None
    except orjson.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, dict):
        raise bad_request(f"{field} must be a JSON object in a string", field)
    return parsed


def _function_response(message: dict[str, Any], where: str, call_names: dict[str, str]) -> dict[str, Any]:
    call_id = message.get("tool_call_id")
    name = call_names.get(call_id) if isinstance(call_id, str) else None
    if name is None and isinstance(message.get("name"), str) and message["name"]:
        name = message["name"]  # the legacy `function` role, or a client that names the tool
    if name is None:
        raise bad_request(
            f"{where}.tool_call_id {call_id!r} matches no tool call of an earlier assistant message",
            f"{where}.tool_call_id",
        )
    text = "".join(_texts(message.get("content"), where))
    try:
        parsed = orjson.loads(text)
    except orjson.JSONDecodeError:
        parsed = None
    # Gemini's `response` is a JSON object; anything else is wrapped.
    return {"functionResponse": {"name": name, "response": parsed if isinstance(parsed, dict) else {"content": text}}}


def _generation_config(payload: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    max_tokens = payload.get("max_completion_tokens")
    if max_tokens is None:
        max_tokens = payload.get("max_tokens")
    if max_tokens is not None:
        config["maxOutputTokens"] = max_tokens
    for ours, theirs in _GENERATION_FIELDS:
        if payload.get(ours) is not None:
            config[theirs] = payload[ours]
    stop = payload.get("stop")
    if isinstance(stop, str):
        config["stopSequences"] = [stop]
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        if stop:
            config["stopSequences"] = stop
    elif stop is not None:
        raise bad_request("'stop' must be a string or an array of strings", "stop")
    fmt = payload.get("response_format")
    if fmt is None:
        return config
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "json_object":
        config["responseMimeType"] = "application/json"
    elif kind == "json_schema":
        config["responseMimeType"] = "application/json"
        spec = fmt.get("json_schema")
        schema = clean_schema(spec.get("schema") if isinstance(spec, dict) else None, ordered=True)
        if schema.get("properties") or schema.get("type", "OBJECT") != "OBJECT":
            config["responseSchema"] = schema  # an empty object schema says no more than JSON mode
    elif kind != "text":
        raise bad_request("'response_format.type' must be text, json_object or json_schema", "response_format")
    return config


def _declaration(tool: Any, field: str) -> dict[str, Any]:
    function = tool.get("function") if isinstance(tool, dict) and tool.get("type") == "function" else None
    name = function.get("name") if isinstance(function, dict) else None
    if not isinstance(name, str) or not name:
        raise bad_request(f"{field}: Gemini models support only function tools with a name", field)
    declaration: dict[str, Any] = {"name": name}
    if isinstance(function.get("description"), str):
        declaration["description"] = function["description"]
    parameters = clean_schema(function.get("parameters"))
    # Gemini rejects an OBJECT with no properties: a function without
    # arguments simply has no `parameters`.
    if parameters.get("properties"):
        declaration["parameters"] = parameters
    return declaration


def _calling_config(choice: Any) -> dict[str, Any] | None:
    if choice is None:
        return None
    if isinstance(choice, str) and choice in _TOOL_MODES:
        return {"mode": _TOOL_MODES[choice]}
    function = choice.get("function") if isinstance(choice, dict) and choice.get("type") == "function" else None
    name = function.get("name") if isinstance(function, dict) else None
    if isinstance(name, str) and name:
        return {"mode": "ANY", "allowedFunctionNames": [name]}
    raise bad_request("'tool_choice' must be auto, required, none or a named function", "tool_choice")


# -- response --------------------------------------------------------------


def _json_object(body: bytes, what: str) -> dict[str, Any]:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = None
    if not isinstance(data, dict):
        raise ApiError(502, f"the Gemini endpoint sent an unreadable {what}", type="server_error",
                       code="upstream_error")
    return data


def translate_response(data: dict[str, Any], model: str, created: int) -> dict[str, Any]:
    """The OpenAI chat.completion for a GenerateContentResponse."""
    choices = []
    candidates = data.get("candidates")
    for position, candidate in enumerate(candidates if isinstance(candidates, list) else ()):
        if not isinstance(candidate, dict):
            continue
        texts, calls = read_parts(candidate)
        message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
        if calls:
            message["content"] = message["content"] or None
            message["tool_calls"] = calls
        index = candidate.get("index", position)
        choices.append({
            "index": index if isinstance(index, int) else position,
            "message": message,
            "logprobs": None,
            "finish_reason": finish_reason(candidate.get("finishReason"), bool(calls)),
        })
    if not choices:
        # No candidates: the prompt itself was blocked (promptFeedback.blockReason).
        feedback = data.get("promptFeedback")
        blocked = isinstance(feedback, dict) and bool(feedback.get("blockReason"))
        choices.append({"index": 0, "message": {"role": "assistant", "content": None}, "logprobs": None,
                        "finish_reason": "content_filter" if blocked else "stop"})
    choices.sort(key=lambda choice: choice["index"])
    return {
        "id": response_id(data),
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": choices,
        "usage": openai_usage(data.get("usageMetadata")),
    }


# -- errors ----------------------------------------------------------------

_STATUS_CLASSES = {
    "RESOURCE_EXHAUSTED": ErrorClass.RATE_LIMITED,
    "UNAVAILABLE": ErrorClass.RETRYABLE,
    "INTERNAL": ErrorClass.RETRYABLE,
    "DEADLINE_EXCEEDED": ErrorClass.RETRYABLE,
    "UNAUTHENTICATED": ErrorClass.ENDPOINT,
    "PERMISSION_DENIED": ErrorClass.ENDPOINT,
    "NOT_FOUND": ErrorClass.ENDPOINT,
    # "User location is not supported", "free tier is not available in your
    # country": the endpoint's key/project cannot serve, another one may.
    "FAILED_PRECONDITION": ErrorClass.ENDPOINT,
    "INVALID_ARGUMENT": ErrorClass.INVALID_REQUEST,
}
# google.rpc.ErrorInfo reasons of a bad key, which Google sends as 400 INVALID_ARGUMENT.
_KEY_REASONS = frozenset({"API_KEY_INVALID", "API_KEY_EXPIRED", "API_KEY_SERVICE_BLOCKED", "SERVICE_DISABLED",
                          "CONSUMER_SUSPENDED"})
_TOO_LONG = re.compile(r"input token count.*exceeds|exceeds the maximum number of tokens", re.I | re.S)


def google_error(body: bytes) -> dict[str, Any] | None:
    """The `error` object of a Google error body (also in a one-element array)."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if isinstance(parsed, list) and parsed:
        parsed = parsed[0]
    inner = parsed.get("error") if isinstance(parsed, dict) else None
    return inner if isinstance(inner, dict) else None


def classify_google_error(status: int, headers: Mapping[str, str], error: dict[str, Any] | None) -> ProviderError:
    error = error or {}
    if not status and isinstance(error.get("code"), int):
        status = error["code"]  # an error event inside a 200 stream
    code = error.get("status") if isinstance(error.get("status"), str) else None
    message = str(error.get("message") or (f"HTTP {status}" if status else "Gemini stream error"))
    details = [d for d in error.get("details") or () if isinstance(d, dict)]
    reasons = {d.get("reason") for d in details if str(d.get("@type", "")).endswith("google.rpc.ErrorInfo")}
    error_class = class_for_status(status) if status else ErrorClass.RETRYABLE
    error_class = _STATUS_CLASSES.get(code or "", error_class)
    if reasons & _KEY_REASONS:
        error_class = ErrorClass.ENDPOINT
    elif error_class is ErrorClass.INVALID_REQUEST and _TOO_LONG.search(message):
        # OpenAI's code, which clients test for before trimming a conversation;
        # Google's own status (INVALID_ARGUMENT) says nothing more.
        error_class, code = ErrorClass.CONTEXT_LENGTH, "context_length_exceeded"
    retry_after = None
    if error_class in (ErrorClass.RATE_LIMITED, ErrorClass.RETRYABLE):
        retry_after = parse_retry_after(headers)
        for detail in details:
            if retry_after is None and str(detail.get("@type", "")).endswith("google.rpc.RetryInfo"):
                delay = detail.get("retryDelay")
                retry_after = parse_duration(delay) if isinstance(delay, str) else None
    return ProviderError(error_class, message, status=status, code=code, retry_after_s=retry_after)


def _stream_error(error: dict[str, Any]) -> ProviderError:
    return classify_google_error(0, {}, error)


# -- embeddings --------------------------------------------------------------


def estimate_tokens(payload: Mapping[str, Any]) -> int:
    """About four characters a token: for usage when Gemini reports none."""
    inputs = payload.get("input")
    texts = [inputs] if isinstance(inputs, str) else inputs if isinstance(inputs, list) else []
    return sum((len(t) + 3) // 4 for t in texts if isinstance(t, str))


# -- adapter -------------------------------------------------------------------


class GeminiAdapter:
    kind = "gemini"
    supports_embeddings = True
    supports_completions = False  # legacy completions are translated through chat

    def auth_headers(self, secret: str | None) -> dict[str, str]:
        return {"x-goog-api-key": secret} if secret else {}

    def chat_url(self, base_url: str, options: Mapping[str, str], upstream_model: str, stream: bool) -> str:
        method = "streamGenerateContent?alt=sse" if stream else "generateContent"
        return f"{base_url}/{_model_path(upstream_model)}:{method}"

    def chat_request(self, payload: dict[str, Any], upstream_model: str) -> bytes:
        return orjson.dumps(build_request(payload))

    def chat_response(self, body: bytes, model: str) -> tuple[bytes, Usage]:
        data = _json_object(body, "response")
        response = translate_response(data, model, int(time.time()))
        return orjson.dumps(response), usage_from_metadata(data.get("usageMetadata"))

    def chat_stream(self, model: str, include_usage: bool) -> GeminiStream:
        return GeminiStream(model, include_usage, _stream_error)

    def classify_error(self, status: int, headers: Mapping[str, str], body: bytes) -> ProviderError:
        return classify_google_error(status, headers, google_error(body))

    def embeddings_request(
        self, base_url: str, options: Mapping[str, str], payload: dict[str, Any], upstream_model: str
    ) -> tuple[str, bytes]:
        """`:embedContent` for one string, `:batchEmbedContents` for a list.

        `encoding_format: base64` is accepted and answered with float arrays:
        the response side cannot see the request, and the official OpenAI SDKs
        ask for base64 by default yet accept floats. OpenAI's token-array
        inputs cannot be expressed (Gemini embeds text) and are rejected.
        """
        inputs = payload.get("input")
        dimensions = payload.get("dimensions")
        if dimensions is not None and (not isinstance(dimensions, int) or isinstance(dimensions, bool)
                                       or dimensions < 1):
            raise bad_request("'dimensions' must be a positive integer", "dimensions")
        if payload.get("encoding_format") not in (None, "float", "base64"):
            raise bad_request("'encoding_format' must be float or base64", "encoding_format")
        extra = {"outputDimensionality": dimensions} if dimensions is not None else {}
        path = _model_path(upstream_model)
        if isinstance(inputs, str):
            body: dict[str, Any] = {"content": {"parts": [{"text": inputs}]}, **extra}
            return f"{base_url}/{path}:embedContent", orjson.dumps(body)
        if isinstance(inputs, list) and inputs and all(isinstance(t, str) for t in inputs):
            requests = [{"model": path, "content": {"parts": [{"text": t}]}, **extra} for t in inputs]
            return f"{base_url}/{path}:batchEmbedContents", orjson.dumps({"requests": requests})
        if isinstance(inputs, list) and inputs and all(isinstance(t, (int, list)) for t in inputs):
            raise bad_request("Gemini embeds text: token-array inputs are not supported", "input")
        raise bad_request("'input' must be a non-empty string or array of strings", "input")

    def embeddings_response(
        self, body: bytes, model: str, payload: Mapping[str, Any] | None = None
    ) -> tuple[bytes, Usage]:
        """The OpenAI embeddings list. Tokens come from Gemini's
        `usageMetadata.promptTokenCount` when it sends one; otherwise they are
        estimated from `payload` (the request, if the caller passes it) at
        about four characters a token, and are 0 without it."""
        data = _json_object(body, "embeddings response")
        if isinstance(data.get("embedding"), dict):
            vectors = [data["embedding"]]
        else:
            vectors = [e for e in data.get("embeddings") or () if isinstance(e, dict)]
        meta = data.get("usageMetadata")
        tokens = meta.get("promptTokenCount", meta.get("totalTokenCount")) if isinstance(meta, dict) else None
        if not isinstance(tokens, int):
            tokens = estimate_tokens(payload) if payload is not None else 0
        response = {
            "object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": v.get("values") or []}
                     for i, v in enumerate(vectors)],
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return orjson.dumps(response), Usage(prompt_tokens=tokens)
