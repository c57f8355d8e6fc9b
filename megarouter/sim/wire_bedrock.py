"""Amazon Bedrock Runtime wire format: Converse, ConverseStream and InvokeModel for embeddings.

Routes (``{modelId}`` sent percent-encoded, ``%3A`` for ``:``, as AWS SDKs do, or raw):

- ``POST /model/{modelId}/converse``: a JSON ConverseResponse.
- ``POST /model/{modelId}/converse-stream``: ``application/vnd.amazon.eventstream``
  frames (``eventstream``): messageStart, contentBlockStart (tool use only),
  contentBlockDelta..., contentBlockStop, messageStop, metadata.
- ``POST /model/{modelId}/invoke``: embeddings only, in the model's native
  body: Amazon Titan text (``amazon.titan-embed-text-*``) or Cohere v3
  (``cohere.embed-*``).

A model exists when it is one of ``--models``, named by its id, a
cross-region inference profile of it (``us.``/``eu.``/``apac.``/``global.``...
prefix) or its foundation-model/inference-profile ARN. Other ids get what
Bedrock answers for them: 400 ValidationException "The provided model
identifier is invalid." (not a 404).

Auth, when configured (else open, as the other wires are without a key):
SigV4 with the ``aws_*`` settings (``sigv4``; service ``bedrock``), or a
Bedrock API key, ``Authorization: Bearer <--api-key>``. Each refusal is a 403
counted in the ``auth_failures`` stat.

Errors are an HTTP status, ``x-amzn-ErrorType: <Name>:http://internal.amazon.com/coral/<namespace>/``
(what botocore reads the code from) and ``{"message": "..."}``. Scripted
faults map by status: 400 ValidationException, 403 AccessDeniedException, 404
ResourceNotFoundException, 408 ModelTimeoutException, 424 ModelErrorException,
429 ThrottlingException, 500 InternalServerException, 503
ServiceUnavailableException. ``stream_error_after_chunks`` cuts a
ConverseStream with an in-stream exception frame instead (``stream_error_status``
picks which).

Prompt caching: ``{"cachePoint": {"type": "default"}}`` blocks in
``toolConfig.tools``, ``system`` or message content mark cacheable prefixes
(in that order: tools, system, messages). The first request with a prefix
reports it as ``cacheWriteInputTokens``; a later one with the same prefix and
model, within the point's ttl (5 minutes, or ``"ttl": "1h"``), as
``cacheReadInputTokens`` (the longest cached prefix is read, the rest up to
the last point written). ``inputTokens`` is then the uncached remainder and
``totalTokens`` counts all input. Both cache fields appear only when the
request has cache points. There is no minimum prefix size. Only hashes of
prefixes are kept, never content; ``/_sim/reset`` empties the cache.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import re
import secrets
import time
import uuid
from typing import Any

import orjson
from aiohttp import web

from megarouter.sim import eventstream, faults, reply, sigv4
from megarouter.sim.common import CHAT, EMBEDDING, STATE, SimState, json_response
from megarouter.sim.settings import SimSettings

PREFIXES = ("/model/",)
_OPERATIONS = {"converse": CHAT, "converse-stream": CHAT, "invoke": EMBEDDING}

# x-amzn-ErrorType namespaces: the service's own errors, and those of the AWS
# front end that authenticates requests before Bedrock sees them.
SERVICE_NAMESPACE = "http://internal.amazon.com/coral/com.amazon.bedrock/"
AUTH_NAMESPACE = "http://internal.amazon.com/coral/com.amazon.coral.service/"

_FINISH = {reply.STOP: "end_turn", reply.LENGTH: "max_tokens", reply.TOOL: "tool_use",
           reply.STOP_SEQUENCE: "stop_sequence"}
# status -> (error name, message) for scripted failures. Names are the API model's; messages are
# Bedrock's where they are known (ThrottlingException, ModelTimeoutException...), plausible otherwise.
_STATUS_ERRORS = {
    400: ("ValidationException", "Malformed input request, please reformat your input and try again."),
    403: ("AccessDeniedException", "You don't have access to the model with the specified model ID."),
    404: ("ResourceNotFoundException", "This model version has reached the end of its life. Please refer to "
                                       "the AWS documentation for more details."),
    408: ("ModelTimeoutException", "Model has timed out in processing the request. Try your request again."),
    424: ("ModelErrorException", "The model returned an error. Try your request again."),
    429: ("ThrottlingException", "Too many requests, please wait before trying again."),
    500: ("InternalServerException", "The system encountered an unexpected error during processing. Try your "
                                     "request again."),
    503: ("ServiceUnavailableException", "Bedrock is unable to process your request."),
}
# status -> (ConverseStream union member, message) for errors sent inside a stream.
_STREAM_ERRORS = {
    400: ("validationException", "Input validation failed. Check your request parameters and retry the request."),
    424: ("modelStreamErrorException", "An error occurred while streaming the response. Retry your request."),
    429: ("throttlingException", "Too many requests, please wait before trying again."),
    500: ("internalServerException", "The system encountered an unexpected error during processing. Try your "
                                     "request again."),
    503: ("serviceUnavailableException", "Bedrock is unable to process your request."),
}

_INVALID_MODEL = "The provided model identifier is invalid."
_NOT_CHAT = ("This action doesn't support the model that you provided. Try again with a supported text or "
             "chat model.")
_START_WITH_USER = ("A conversation must start with a user message. Try again with a conversation that starts "
                    "with a user message.")
_ALTERNATE = ("A conversation must alternate between user and assistant roles. Make sure the conversation "
              "alternates between user and assistant roles and try again.")
_NEEDS_TOOL_CONFIG = "The toolConfig field must be defined when using toolUse and toolResult content blocks."

# Cross-region inference profile prefixes: "us.anthropic.claude..." runs the base model.
_PROFILE_PREFIXES = ("us.", "us-gov.", "eu.", "apac.", "jp.", "au.", "global.")
_ARN = re.compile(r"arn:aws(?:-[a-z]+)*:bedrock:[a-z0-9-]*:[0-9]{0,12}:(?:foundation-model|inference-profile)/(.+)")
_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
_TOOL_USE_ID = re.compile(r"[a-zA-Z0-9_.:-]{1,64}")

_CONTENT_BLOCKS = ("text", "image", "document", "video", "audio", "toolUse", "toolResult", "guardContent",
                   "cachePoint", "reasoningContent", "citationsContent", "searchResult")
_SYSTEM_BLOCKS = ("text", "guardContent", "cachePoint")
_RESULT_BLOCKS = ("text", "json", "image", "document", "video", "searchResult")
_MEDIA_BLOCKS = ("image", "document", "video", "audio")   # each counts like an image in the prompt
_IMAGE_FORMATS = ("png", "jpeg", "gif", "webp")
_IMAGE_MAGIC = {"png": (b"\x89PNG\r\n\x1a\n",), "jpeg": (b"\xff\xd8\xff",), "gif": (b"GIF87a", b"GIF89a"),
                "webp": (b"RIFF",)}
_CACHE_TTLS = {"5m": 300.0, "1h": 3600.0}
_CACHE_LIMIT = 10_000     # prefixes remembered before expired ones are swept
_PADDING = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"

# Embeddings: Titan text v2 sizes (v1 is fixed at 1536); Cohere v3's limits.
_TITAN_V2_DIMENSIONS = (256, 512, 1024)
_TITAN_MAX_CHARS = 50_000
_COHERE_INPUT_TYPES = ("search_document", "search_query", "classification", "clustering")
_COHERE_TRUNCATE = ("NONE", "START", "END")
_COHERE_MAX_TEXTS = 96
_COHERE_MAX_CHARS = 2048

# prefix digest -> expiry (time.monotonic()), per app.
_CACHE = web.AppKey("megarouter_sim_bedrock_cache", dict)


def add_routes(app: web.Application) -> None:
    app[_CACHE] = {}
    # ``.+``: an ARN model id carries a (percent-encoded) "/" of its own.
    for operation in _OPERATIONS:
        app.router.add_post("/model/{model_id:.+}/" + operation, _serve)


def kind_of(path: str) -> str | None:
    return _OPERATIONS.get(path.rpartition("/")[2])


def reset(app: web.Application) -> None:
    """Forget cached prompt prefixes (``/_sim/reset``), so tests start cold."""
    app[_CACHE].clear()


# ------------------------------------------------------------------- errors

def error(status: int, name: str, message: str, headers: dict[str, str] | None = None,
          namespace: str = SERVICE_NAMESPACE) -> web.Response:
    return json_response({"message": message}, status,
                         {"x-amzn-ErrorType": f"{name}:{namespace}", "x-amzn-RequestId": str(uuid.uuid4()),
                          **(headers or {})})


def validation(message: str) -> web.Response:
    return error(400, "ValidationException", message)


def status_error(status: int, settings: SimSettings) -> web.Response:
    """A scripted failure (fault draw or outage) as Bedrock reports it."""
    name, message = _STATUS_ERRORS.get(status) or (
        ("InternalServerException", f"Simulated error {status}.") if status >= 500
        else ("ValidationException", f"Simulated error {status}."))
    # Bedrock itself sends no Retry-After; it is added so HTTP-level clients
    # can honour scripted 429s the same way on every wire.
    headers = {"Retry-After": str(math.ceil(settings.retry_after_s))} if status == 429 else None
    return error(status, name, message, headers)


def context_length_exceeded(over: reply.Overflow) -> web.Response:
    """Bedrock's answer to a prompt that does not fit the model's context window."""
    if over.max_tokens is None or over.prompt_too_long:
        return validation("Input is too long for requested model.")
    # The wording Claude models give through Bedrock when the requested output tips it over.
    return validation(f"The model returned the following errors: input length and `max_tokens` exceed context "
                      f"limit: {over.prompt_tokens} + {over.max_tokens} > {over.limit}, decrease input length or "
                      "`max_tokens` and try again")


def http_error(status: int, reason: str) -> web.Response:
    if status in (404, 405):
        # No such path, or a GET on one: to AWS both are an operation it does not have.
        return error(404, "UnknownOperationException", "Unknown operation")
    if status == 413:
        return error(413, "RequestEntityTooLargeException", "Request Entity Too Large")
    return error(status, "InternalServerException" if status >= 500 else "ValidationException", reason)


# --------------------------------------------------------------------- auth

async def check_auth(request: web.Request, state: SimState) -> web.Response | None:
    """A SigV4 signature by the configured AWS credentials, or the configured API key as a bearer token.

    Asynchronous because SigV4 signs the body's hash: the body is read here
    (aiohttp keeps it for the handler).
    """
    settings = state.settings
    if state.api_key is None and not settings.aws_access_key_id:
        return None
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer":
        if state.api_key is not None and hmac.compare_digest(token.strip().encode(), state.api_key):
            return None
        return _refuse(state, "AccessDeniedException", "Authentication failed: Please make sure your API Key is "
                                                       "valid.")
    if not settings.aws_access_key_id:
        # Only API keys are accepted: no access key is known to this endpoint.
        if not header:
            return _refuse(state, sigv4.MISSING_TOKEN, "Missing Authentication Token")
        return _refuse(state, sigv4.UNRECOGNIZED_CLIENT, "The security token included in the request is invalid.")
    accepted = sigv4.Accepted(settings.aws_access_key_id, settings.aws_secret_access_key,
                              settings.aws_session_token, settings.aws_session_token_expired, settings.aws_region)
    refusal = sigv4.verify(request.method, request.raw_path, request.headers, await request.read(), accepted)
    if refusal is not None:
        return _refuse(state, refusal.error_type, refusal.message)
    return None


def _refuse(state: SimState, name: str, message: str) -> web.Response:
    state.auth_failures += 1
    return error(403, name, message, namespace=AUTH_NAMESPACE)


# ------------------------------------------------------------------- models

def resolve_model(model_id: str, models: frozenset[str]) -> str | None:
    """The configured model ``model_id`` names (itself, via an inference profile or an ARN), or None."""
    arn = _ARN.fullmatch(model_id)
    if arn:
        model_id = arn[1]
    if model_id in models:
        return model_id
    base = _without_profile(model_id)
    return base if base != model_id and base in models else None


def _without_profile(model_id: str) -> str:
    for prefix in _PROFILE_PREFIXES:
        if model_id.startswith(prefix):
            return model_id[len(prefix):]
    return model_id


def embedding_family(model: str) -> str | None:
    """"titan" or "cohere" for the embedding models InvokeModel serves, None for chat models."""
    base = _without_profile(model)
    if base.startswith("amazon.titan-embed-text"):
        return "titan"
    if base.startswith("cohere.embed-"):
        return "cohere"
    return None


async def _serve(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    operation = request.path.rpartition("/")[2]
    if operation == "converse-stream":
        state.stream_requests += 1
    fault = faults.draw_fault(state)
    if fault is not None:
        return status_error(fault, state.settings)
    model = resolve_model(request.match_info["model_id"], state.model_set)
    if model is None:
        return validation(_INVALID_MODEL)
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        body = None
    if operation == "invoke":
        return await _invoke(state, model, body)
    if embedding_family(model) is not None:
        return validation(_NOT_CHAT)
    if not isinstance(body, dict):
        return validation("The request body must be a JSON object.")
    problem = _validate(body)
    if problem is not None:
        return validation(problem)
    return await _converse(request, state, model, body, streaming=operation == "converse-stream")


# ------------------------------------------------------------- validation

def _constraint(path: str, value: Any, rule: str) -> str:
    # AWS's own wording for a field that breaks the API model's constraints.
    shown = "" if value is None else f" '{value}'"
    return f"1 validation error detected: Value{shown} at '{path}' failed to satisfy constraint: Member {rule}"


def _union(block: Any, allowed: tuple[str, ...], where: str) -> tuple[str, Any] | str:
    """The one (member, value) a union object sets, or what is wrong with it."""
    if not isinstance(block, dict) or len(block) != 1:
        return f"{where} must be an object with exactly one of: {', '.join(allowed)}"
    ((kind, value),) = block.items()
    if kind not in allowed:
        return f"{where}: unknown member {kind!r}; expected one of: {', '.join(allowed)}"
    return kind, value


def _validate(body: dict) -> str | None:
    """The first problem with a Converse request, worded as Bedrock words it where known."""
    config = body.get("inferenceConfig")
    if config is not None:
        problem = _check_inference(config)
        if problem:
            return problem
    for key in ("additionalModelRequestFields",):
        if key in body and not isinstance(body[key], dict):
            return f"The format of the value at {key} is invalid. Provide a json object for the field and try again."
    system = body.get("system")
    if system is not None:
        if not isinstance(system, list):
            return _constraint("system", None, "must be a list")
        for j, block in enumerate(system):
            member = _union(block, _SYSTEM_BLOCKS, f"system.{j}")
            if isinstance(member, str):
                return member
            problem = _check_block(*member, f"system.{j}")
            if problem:
                return problem
    tool_names, problem = _check_tool_config(body.get("toolConfig"))
    if problem:
        return problem
    return _check_messages(body.get("messages"), tool_names)


def _check_inference(config: Any) -> str | None:
    if not isinstance(config, dict):
        return "The format of the value at inferenceConfig is invalid. Provide a json object for the field."
    value = config.get("maxTokens")
    if value is not None:
        if not isinstance(value, int) or isinstance(value, bool):
            return _constraint("inferenceConfig.maxTokens", value, "must be an integer")
        if value < 1:
            return _constraint("inferenceConfig.maxTokens", value, "must have value greater than or equal to 1")
    for name in ("temperature", "topP"):
        value = config.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            return _constraint(f"inferenceConfig.{name}", value, "must be a number")
        if value < 0:
            return _constraint(f"inferenceConfig.{name}", value, "must have value greater than or equal to 0")
        if value > 1:
            return _constraint(f"inferenceConfig.{name}", value, "must have value less than or equal to 1")
    stops = config.get("stopSequences")
    if stops is not None and (not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops)):
        return _constraint("inferenceConfig.stopSequences", None, "must be a list of non-empty strings")
    return None


def _check_tool_config(tool_config: Any) -> tuple[set[str] | None, str | None]:
    """(the declared tool names, or None without a toolConfig; the first problem)."""
    if tool_config is None:
        return None, None
    if not isinstance(tool_config, dict):
        return None, "The format of the value at toolConfig is invalid. Provide a json object for the field."
    tools = tool_config.get("tools")
    if not isinstance(tools, list) or not tools:
        return None, _constraint("toolConfig.tools", None, "must have length greater than or equal to 1")
    names: set[str] = set()
    for i, tool in enumerate(tools):
        member = _union(tool, ("toolSpec", "cachePoint", "systemTool"), f"toolConfig.tools.{i}")
        if isinstance(member, str):
            return None, member
        kind, value = member
        if kind == "cachePoint":
            problem = _check_block(kind, value, f"toolConfig.tools.{i}")
            if problem:
                return None, problem
            continue
        if not isinstance(value, dict) or not isinstance(value.get("name"), str) or not _NAME.fullmatch(value["name"]):
            return None, _constraint(f"toolConfig.tools.{i + 1}.member.{kind}.name",
                                     value.get("name") if isinstance(value, dict) else None,
                                     "must satisfy regular expression pattern: [a-zA-Z0-9_-]+")
        if value["name"] in names:
            return None, "The model returned the following errors: tools: Tool names must be unique."
        names.add(value["name"])
        if kind == "toolSpec":
            schema = value.get("inputSchema")
            if not isinstance(schema, dict) or not isinstance(schema.get("json"), dict):
                return None, _constraint(f"toolConfig.tools.{i + 1}.member.toolSpec.inputSchema", None,
                                         "must be an object with a json schema")
            description = value.get("description")
            if description is not None and (not isinstance(description, str) or not description):
                return None, _constraint(f"toolConfig.tools.{i + 1}.member.toolSpec.description", description,
                                         "must have length greater than or equal to 1")
    choice = tool_config.get("toolChoice")
    if choice is not None:
        member = _union(choice, ("auto", "any", "tool"), "toolConfig.toolChoice")
        if isinstance(member, str):
            return None, member
        kind, value = member
        if not isinstance(value, dict):
            return None, f"toolConfig.toolChoice.{kind} must be an object"
        if kind == "tool" and value.get("name") not in names:
            return None, (f"toolConfig.toolChoice.tool.name: {value.get('name')!r} is not the name of a tool in "
                          "toolConfig.tools")
    return names, None


def _check_messages(messages: Any, tool_names: set[str] | None) -> str | None:
    if messages is not None and not isinstance(messages, list):
        return _constraint("messages", None, "must be a list")
    if not messages:
        return _START_WITH_USER
    previous_uses: list[str] = []
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            return f"messages.{i} must be a Message object"
        role = msg.get("role")
        if role not in ("user", "assistant"):
            return _constraint(f"messages.{i + 1}.member.role", role, "must satisfy enum value set: [user, assistant]")
        if i == 0 and role != "user":
            return _START_WITH_USER
        if i > 0 and role == messages[i - 1].get("role"):
            return _ALTERNATE
        content = msg.get("content")
        if not isinstance(content, list):
            return _constraint(f"messages.{i + 1}.member.content", None, "must not be null")
        if not content:
            return (f"The content field in the Message object at messages.{i} is empty. Add a ContentBlock object "
                    "to the content field and try again.")
        uses: list[str] = []
        results: list[str] = []
        for j, block in enumerate(content):
            where = f"messages.{i}.content.{j}"
            member = _union(block, _CONTENT_BLOCKS, where)
            if isinstance(member, str):
                return member
            kind, value = member
            problem = _check_block(kind, value, where)
            if problem:
                return problem
            if kind in ("toolUse", "toolResult"):
                if tool_names is None:
                    return _NEEDS_TOOL_CONFIG
                allowed_in = "assistant" if kind == "toolUse" else "user"
                if role != allowed_in:
                    return f"{where}: {kind} blocks are only allowed in {allowed_in} messages"
                (uses if kind == "toolUse" else results).append(value["toolUseId"])
        for j, used in enumerate(results):
            if used not in previous_uses:
                return (f"messages.{i}.content.{j}: unexpected toolUseId found in toolResult blocks: {used}. Each "
                        "toolResult block must have a corresponding toolUse block in the previous message.")
        missing = [u for u in previous_uses if u not in results]
        if missing:
            return f"Expected toolResult blocks at messages.{i}.content for the following Ids: {', '.join(missing)}"
        previous_uses = uses
    return None


def _check_block(kind: str, value: Any, where: str) -> str | None:
    """Problems inside one content/system block (its member already checked)."""
    if kind == "text":
        if not isinstance(value, str):
            return f"{where}.text must be a string"
        if not value.strip():
            return (f"The text field in the ContentBlock object at {where} is blank. Add text to the text field, and "
                    "try again.")
        return None
    if kind == "cachePoint":
        if not isinstance(value, dict) or value.get("type") != "default":
            return _constraint(f"{where}.cachePoint.type", value.get("type") if isinstance(value, dict) else None,
                               "must satisfy enum value set: [default]")
        if value.get("ttl", "5m") not in _CACHE_TTLS:
            return _constraint(f"{where}.cachePoint.ttl", value.get("ttl"), "must satisfy enum value set: [5m, 1h]")
        return None
    if kind == "image":
        return _check_image(value, f"{where}.image")
    if kind == "toolUse":
        if not isinstance(value, dict):
            return f"{where}.toolUse must be an object"
        if not isinstance(value.get("toolUseId"), str) or not _TOOL_USE_ID.fullmatch(value["toolUseId"]):
            return _constraint(f"{where}.toolUse.toolUseId", value.get("toolUseId"),
                               "must satisfy regular expression pattern: [a-zA-Z0-9_.:-]+")
        if not isinstance(value.get("name"), str) or not _NAME.fullmatch(value["name"]):
            return _constraint(f"{where}.toolUse.name", value.get("name"),
                               "must satisfy regular expression pattern: [a-zA-Z0-9_-]+")
        if "input" not in value:
            return _constraint(f"{where}.toolUse.input", None, "must not be null")
        return None
    if kind == "toolResult":
        if not isinstance(value, dict):
            return f"{where}.toolResult must be an object"
        if not isinstance(value.get("toolUseId"), str) or not _TOOL_USE_ID.fullmatch(value["toolUseId"]):
            return _constraint(f"{where}.toolResult.toolUseId", value.get("toolUseId"),
                               "must satisfy regular expression pattern: [a-zA-Z0-9_.:-]+")
        if value.get("status", "success") not in ("success", "error"):
            return _constraint(f"{where}.toolResult.status", value.get("status"),
                               "must satisfy enum value set: [success, error]")
        parts = value.get("content")
        if not isinstance(parts, list):
            return _constraint(f"{where}.toolResult.content", None, "must not be null")
        for k, part in enumerate(parts):
            member = _union(part, _RESULT_BLOCKS, f"{where}.toolResult.content.{k}")
            if isinstance(member, str):
                return member
            if member[0] == "text" and not isinstance(member[1], str):
                return f"{where}.toolResult.content.{k}.text must be a string"
            if member[0] == "image":
                problem = _check_image(member[1], f"{where}.toolResult.content.{k}.image")
                if problem:
                    return problem
        return None
    if not isinstance(value, dict):
        return f"{where}.{kind} must be an object"
    return None


def _check_image(image: Any, where: str) -> str | None:
    if not isinstance(image, dict):
        return f"{where} must be an object"
    fmt = image.get("format")
    if fmt not in _IMAGE_FORMATS:
        return _constraint(f"{where}.format", fmt, "must satisfy enum value set: [png, jpeg, gif, webp]")
    source = image.get("source")
    member = _union(source, ("bytes", "s3Location"), f"{where}.source")
    if isinstance(member, str):
        return member
    if member[0] == "s3Location":
        return None  # nothing to fetch in a simulator: taken on trust
    try:
        data = base64.b64decode(member[1], validate=True) if isinstance(member[1], str) else b""
    except (binascii.Error, ValueError):
        data = b""
    if not data:
        return f"{where}.source.bytes must be non-empty base64-encoded image data"
    if not data.startswith(_IMAGE_MAGIC[fmt]) or (fmt == "webp" and data[8:12] != b"WEBP"):
        # Claude's check, as Bedrock relays it: the bytes must be the declared format.
        return (f"The model returned the following errors: {where}.source.base64.data: Image does not match the "
                f"provided media type image/{fmt}")
    return None


# ------------------------------------------------------------------ converse

class _Reader:
    """Reads a validated request into an ``Ask`` in cache order, noting each cache point's prefix."""

    def __init__(self, model: str) -> None:
        self.ask = reply.Ask(model=model)
        self._empty = reply.prompt_tokens(reply.Ask(model=model))  # the reply's own priming tokens
        self._digest = hashlib.sha256(model.encode())
        self.points: list[tuple[str, int, float]] = []  # (prefix digest, prefix tokens, ttl seconds)

    def see(self, thing: Any) -> None:
        self._digest.update(orjson.dumps(thing, option=orjson.OPT_SORT_KEYS))

    def mark(self, point: dict) -> None:
        tokens = reply.prompt_tokens(self.ask) - self._empty
        self.points.append((self._digest.hexdigest(), tokens, _CACHE_TTLS[point.get("ttl", "5m")]))

    def tool(self, entry: dict) -> None:
        self.see(entry)
        spec = entry.get("toolSpec")
        if spec is not None:
            self.ask.tools_size += len(orjson.dumps(entry))
            self.ask.tools.append(reply.Tool(spec["name"], spec["inputSchema"]["json"]))

    def block(self, kind: str, value: Any) -> None:
        self.see({kind: value})
        ask = self.ask
        if kind == "text":
            ask.texts.append(value)
        elif kind in _MEDIA_BLOCKS:
            ask.images += 1
        elif kind == "toolUse":
            ask.texts.append(value["name"] + orjson.dumps(value.get("input")).decode())
        elif kind == "toolResult":
            for part in value["content"]:
                ((part_kind, part_value),) = part.items()
                if part_kind == "text":
                    ask.texts.append(part_value)
                elif part_kind == "json":
                    ask.texts.append(orjson.dumps(part_value).decode())
                elif part_kind in _MEDIA_BLOCKS:
                    ask.images += 1
        elif kind == "guardContent" and isinstance(value.get("text"), dict):
            ask.texts.append(str(value["text"].get("text", "")))
        elif kind == "reasoningContent" and isinstance(value.get("reasoningText"), dict):
            ask.texts.append(str(value["reasoningText"].get("text", "")))


def _read(body: dict, model: str) -> _Reader:
    reader = _Reader(model)
    ask = reader.ask
    config = body.get("inferenceConfig") or {}
    ask.max_tokens = config.get("maxTokens")
    ask.stop = list(config.get("stopSequences") or ())
    tool_config = body.get("toolConfig")
    if tool_config is not None:
        for entry in tool_config["tools"]:
            if "cachePoint" in entry:
                reader.mark(entry["cachePoint"])
            else:
                reader.tool(entry)
        choice = tool_config.get("toolChoice") or {}
        if "tool" in choice:
            ask.forced_tool = choice["tool"]["name"]
    system = body.get("system") or []
    if any("text" in block for block in system):
        ask.turns += 1  # the system prompt counts as one more message
    for block in system:
        ((kind, value),) = block.items()
        if kind == "cachePoint":
            reader.mark(value)
        else:
            reader.block(kind, value)
    for msg in body["messages"]:
        ask.turns += 1
        reader.see(msg["role"])
        for block in msg["content"]:
            ((kind, value),) = block.items()
            if kind == "cachePoint":
                reader.mark(value)
            else:
                reader.block(kind, value)
    last = body["messages"][-1]
    blocks = [b for b in last["content"] if "cachePoint" not in b]
    # A tool's result last: the model answers in text, so a client's tool loop ends.
    ask.after_tool_result = last["role"] == "user" and bool(blocks) and "toolResult" in blocks[-1]
    return reader


def _cache_tokens(app: web.Application, reader: _Reader, prompt_tokens: int) -> tuple[int, int] | None:
    """(cacheReadInputTokens, cacheWriteInputTokens), or None when the request has no cache points."""
    if not reader.points:
        return None
    cache = app[_CACHE]
    now = time.monotonic()
    if len(cache) > _CACHE_LIMIT:
        for digest in [d for d, expiry in cache.items() if expiry <= now]:
            del cache[digest]
        if len(cache) > _CACHE_LIMIT:
            cache.clear()
    read = next((tokens for digest, tokens, _ in reversed(reader.points) if cache.get(digest, 0) > now), 0)
    for digest, _, ttl in reader.points:
        cache[digest] = max(cache.get(digest, 0), now + ttl)  # a hit refreshes the ttl, as Bedrock's does
    # Never more cached than there is input (tool definitions are estimated slightly differently).
    limit = max(prompt_tokens - reply.prompt_tokens(reply.Ask(model=reader.ask.model)), 0)
    read = min(read, limit)
    write = min(max(reader.points[-1][1] - read, 0), limit - read)
    return read, write


def _usage(ans: reply.Answer, cached: tuple[int, int] | None) -> dict[str, int]:
    read, write = cached or (0, 0)
    usage = {"inputTokens": ans.prompt_tokens - read - write, "outputTokens": ans.completion_tokens,
             "totalTokens": ans.prompt_tokens + ans.completion_tokens}
    if cached is not None:
        usage["cacheReadInputTokens"] = read
        usage["cacheWriteInputTokens"] = write
    return usage


def _response_fields(body: dict, ans: reply.Answer) -> dict[str, Any]:
    # Claude's stop sequence comes back only when asked for by path, as on Bedrock.
    paths = body.get("additionalModelResponseFieldPaths") or ()
    if "/stop_sequence" in paths:
        return {"additionalModelResponseFields": {"stop_sequence": ans.stop_sequence}}
    return {}


async def _converse(request: web.Request, state: SimState, model: str, body: dict,
                    streaming: bool) -> web.StreamResponse:
    started = time.monotonic()
    reader = _read(body, model)
    ask = reader.ask
    over = reply.context_overflow(ask, state.settings)
    if over is not None:
        return context_length_exceeded(over)
    ans = reply.answer(ask, state.settings)
    usage = _usage(ans, _cache_tokens(request.app, reader, ans.prompt_tokens))
    tool_id = "tooluse_" + secrets.token_urlsafe(16)[:22] if ans.tool_call else None
    if streaming:
        head, pieces, tail = _stream_frames(ans, tool_id, usage, _stream_latency_ms(state.settings, ans), body)
        pieces, tail = _with_stream_error(state.settings, pieces, tail)
        return await faults.send_stream(request, state, head, pieces, tail, content_type=eventstream.CONTENT_TYPE)
    await faults.pause(state.settings.latency_ms)
    if ans.tool_call is not None:
        content: list[dict[str, Any]] = [{"toolUse": {"toolUseId": tool_id, "name": ans.tool_call.name,
                                                      "input": ans.tool_call.arguments}}]
    else:
        content = [{"text": ans.text}] if ans.text else []
    return json_response({"output": {"message": {"role": "assistant", "content": content}},
                          "stopReason": _FINISH[ans.finish], "usage": usage,
                          "metrics": {"latencyMs": round((time.monotonic() - started) * 1000)},
                          **_response_fields(body, ans)},
                         headers={"x-amzn-RequestId": str(uuid.uuid4())})


def _stream_latency_ms(settings: SimSettings, ans: reply.Answer) -> int:
    # The frames are built before they are paced out, so this is the time they will take.
    pacing = ans.completion_tokens / settings.tokens_per_second if settings.tokens_per_second > 0 else 0
    return round(settings.ttft_ms + pacing * 1000)


def _frame(event_type: str, payload: dict[str, Any], n: int) -> bytes:
    # Bedrock has been seen padding event JSON with a "p" field of varying length
    # (so sizes do not reveal the tokens). It is in no API model: clients must
    # ignore it, and sending it here makes one that does not fail in tests.
    return eventstream.event(event_type, {**payload, "p": _PADDING[:1 + (n * 7) % len(_PADDING)]})


def _stream_frames(ans: reply.Answer, tool_id: str | None, usage: dict[str, int], latency_ms: int,
                   body: dict) -> tuple[list[bytes], list[bytes], list[bytes]]:
    """Event-stream frames as (before the tokens, one per token, after the tokens)."""
    head = [_frame("messageStart", {"role": "assistant"}, 0)]
    call = ans.tool_call
    if call is not None:
        # Only tool use blocks open with contentBlockStart; text starts with its first delta.
        head.append(_frame("contentBlockStart", {"contentBlockIndex": 0,
                                                 "start": {"toolUse": {"toolUseId": tool_id, "name": call.name}}}, 1))
        deltas: list[dict[str, Any]] = [{"toolUse": {"input": p}} for p in ans.pieces]
    else:
        deltas = [{"text": p} for p in ans.pieces]
    pieces = [_frame("contentBlockDelta", {"contentBlockIndex": 0, "delta": d}, i + 2) for i, d in enumerate(deltas)]
    tail = [_frame("contentBlockStop", {"contentBlockIndex": 0}, 3)] if pieces else []
    tail += [_frame("messageStop", {"stopReason": _FINISH[ans.finish], **_response_fields(body, ans)}, 4),
             _frame("metadata", {"usage": usage, "metrics": {"latencyMs": latency_ms}}, 5)]
    return head, pieces, tail


def _with_stream_error(settings: SimSettings, pieces: list[bytes],
                       tail: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    """``pieces`` and ``tail`` with the scripted in-stream error applied (``stream_error_after_chunks``).

    The exception frame replaces the rest of the stream: no contentBlockStop,
    messageStop or metadata follow it, as when Bedrock fails mid-answer.
    """
    cut = settings.stream_error_after_chunks
    if not 0 <= cut < len(pieces):
        return pieces, tail
    name, message = _STREAM_ERRORS[settings.stream_error_status]
    return pieces[:cut], [eventstream.exception(name, message)]


# --------------------------------------------------------------- embeddings

def _malformed(detail: str) -> web.Response:
    # The models' own input-schema errors, as Bedrock relays them.
    return validation(f"Malformed input request: {detail}, please reformat your input and try again.")


def _type_name(value: Any) -> str:
    return {bool: "Boolean", int: "Integer", float: "Number", str: "String", list: "JSONArray",
            dict: "JSONObject"}.get(type(value), "Null")


async def _invoke(state: SimState, model: str, body: Any) -> web.Response:
    family = embedding_family(model)
    if family is None:
        return validation(f"The simulator serves InvokeModel for embedding models only (amazon.titan-embed-text-*, "
                          f"cohere.embed-*); use Converse for {model}.")
    if not isinstance(body, dict):
        return _malformed("#: expected type: JSONObject, found: " + _type_name(body))
    started = time.monotonic()
    result = _titan(body, model) if family == "titan" else _cohere(body, model)
    if isinstance(result, web.Response):
        return result
    data, input_tokens = result
    await faults.pause(state.settings.latency_ms)
    return json_response(data, headers={
        "x-amzn-RequestId": str(uuid.uuid4()),
        # InvokeModel reports usage in headers; embeddings have no output tokens.
        "X-Amzn-Bedrock-Input-Token-Count": str(input_tokens),
        "X-Amzn-Bedrock-Invocation-Latency": str(round((time.monotonic() - started) * 1000))})


def _titan(body: dict, model: str) -> tuple[dict[str, Any], int] | web.Response:
    v1 = _without_profile(model).startswith("amazon.titan-embed-text-v1")
    allowed = ("inputText",) if v1 else ("inputText", "dimensions", "normalize", "embeddingTypes")
    for key in body:
        if key not in allowed:
            return _malformed(f"#: extraneous key [{key}] is not permitted")
    if "inputText" not in body:
        return _malformed("#: required key [inputText] not found")
    text = body["inputText"]
    if not isinstance(text, str):
        return _malformed(f"#/inputText: expected type: String, found: {_type_name(text)}")
    if not text:
        return _malformed("#/inputText: expected minLength: 1, actual: 0")
    if len(text) > _TITAN_MAX_CHARS:
        return _malformed(f"#/inputText: expected maxLength: {_TITAN_MAX_CHARS}, actual: {len(text)}")
    dimensions = body.get("dimensions", 1536 if v1 else 1024)
    if not v1 and dimensions not in _TITAN_V2_DIMENSIONS:
        return _malformed(f"#/dimensions: {dimensions} is not a valid enum value")
    normalize = body.get("normalize", True)
    if not isinstance(normalize, bool):
        return _malformed(f"#/normalize: expected type: Boolean, found: {_type_name(normalize)}")
    types = body.get("embeddingTypes")
    if types is not None and (not isinstance(types, list) or not types
                              or not all(t in ("float", "binary") for t in types)):
        return _malformed("#/embeddingTypes: expected a non-empty array of \"float\" and \"binary\"")
    vector = reply.embedding(text, dimensions)
    if not normalize:
        # Same direction, not unit length; a power of two keeps the values float32-exact.
        vector = [v * 8.0 for v in vector]
    data: dict[str, Any] = {"embedding": vector, "inputTextTokenCount": reply.text_tokens(text)}
    if types:
        by_type: dict[str, Any] = {}
        if "float" in types:
            by_type["float"] = vector
        if "binary" in types:
            by_type["binary"] = [1 if v > 0 else 0 for v in vector]
        data["embeddingsByType"] = by_type
    return data, data["inputTextTokenCount"]


def _cohere(body: dict, model: str) -> tuple[dict[str, Any], int] | web.Response:
    for key in body:
        if key not in ("texts", "input_type", "truncate", "embedding_types"):
            return _malformed(f"#: extraneous key [{key}] is not permitted")
    for key in ("texts", "input_type"):
        if key not in body:
            return _malformed(f"#: required key [{key}] not found")
    texts = body["texts"]
    if not isinstance(texts, list):
        return _malformed(f"#/texts: expected type: JSONArray, found: {_type_name(texts)}")
    if not texts or len(texts) > _COHERE_MAX_TEXTS:
        bound = "minItems: 1" if not texts else f"maxItems: {_COHERE_MAX_TEXTS}"
        return _malformed(f"#/texts: expected {bound}, actual: {len(texts)}")
    if body["input_type"] not in _COHERE_INPUT_TYPES:
        return _malformed(f"#/input_type: {body['input_type']} is not a valid enum value")
    truncate = body.get("truncate", "NONE")
    if truncate not in _COHERE_TRUNCATE:
        return _malformed(f"#/truncate: {truncate} is not a valid enum value")
    types = body.get("embedding_types")
    if types is not None and types != ["float"]:
        return validation("The simulator supports embedding_types [\"float\"] only.")
    kept = []
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            return _malformed(f"#/texts/{i}: expected type: String, found: {_type_name(text)}")
        if len(text) > _COHERE_MAX_CHARS:
            if truncate == "NONE":
                return _malformed(f"#/texts/{i}: expected maxLength: {_COHERE_MAX_CHARS}, actual: {len(text)}")
            text = text[:_COHERE_MAX_CHARS] if truncate == "END" else text[-_COHERE_MAX_CHARS:]
        kept.append(text)
    dimensions = 384 if "light" in model else 1024
    vectors = [reply.embedding(text, dimensions) for text in kept]
    data: dict[str, Any] = {"id": str(uuid.uuid4()), "texts": texts}
    if types:
        data.update(embeddings={"float": vectors}, response_type="embeddings_by_type")
    else:
        data.update(embeddings=vectors, response_type="embeddings_floats")
    return data, sum(reply.text_tokens(t) for t in kept)

