"""Google Vertex AI wire format: Gemini, text embeddings and Claude under a project and location.

Routes, all ``POST``, under ``/v1`` (or ``/v1beta1``)
``/projects/{project}/locations/{location}/publishers/{publisher}/models/{model}:{method}``:

- publisher ``google``, ``:generateContent`` and ``:streamGenerateContent`` (SSE with
  ``?alt=sse``, else one JSON array streamed element by element): the Gemini API's
  request and response bodies, answered by ``wire_gemini``.
- publisher ``google``, an embedding model (``text-embedding-*``,
  ``text-multilingual-embedding-*``, ``gemini-embedding-*``), ``:predict``:
  ``{"instances": [{"content": "...", "task_type"?, "title"?}], "parameters"?:
  {"autoTruncate", "outputDimensionality"}}`` -> ``{"predictions": [{"embeddings":
  {"values": [...], "statistics": {"token_count", "truncated"}}}], "metadata":
  {"billableCharacterCount"}}``.
- publisher ``anthropic``, a ``claude*`` model, ``:rawPredict`` (JSON) and
  ``:streamRawPredict`` (SSE): Anthropic's Messages API (``wire_anthropic``), except that
  the model is in the URL, not the body, and the body carries
  ``"anthropic_version": "vertex-2023-10-16"`` instead of the header.

The path's project must be ``vertex_project`` and its location ``vertex_location`` when
those are set (``global`` is a location like any other; hosts are not checked). Models are
those of ``--models``, each under its own publisher: elsewhere it is a 404.

Auth, when configured (else open, as the other wires are without a key):
``Authorization: Bearer <token>``, a token granted by this simulator's ``POST /token``
(``google_oauth``: a service account's JWT-bearer grant, verified with the public half of
``vertex_service_account_file``) and not yet expired, or ``--api-key`` itself. Refusals
are counted in ``auth_failures``: 401 UNAUTHENTICATED (no, unknown, revoked or expired
token), 403 PERMISSION_DENIED (a token without the cloud-platform scope, or another
project than ``vertex_project``).

Errors Vertex raises itself are Google's ``{"error": {"code", "message", "status",
"details"?}}``: auth, unknown models and locations, bad Gemini and embedding requests,
quota (429, a ``Retry-After`` added for HTTP clients), outages. Streaming methods other
than ``?alt=sse`` (``:streamRawPredict``, ``:streamGenerateContent`` without it) send them
as a one-element JSON array, ``[{"error": {...}}]``, as Vertex does. Claude's own errors
(a bad Messages body, ``anthropic_version``, a context overflow, and a scripted 529) are
Anthropic's ``{"type": "error", "error": {...}}``.
"""

from __future__ import annotations

import dataclasses
import hmac
import math
from typing import Any

from aiohttp import web

from megarouter.sim import faults, google_oauth, reply, wire_anthropic, wire_gemini
from megarouter.sim.common import CHAT, EMBEDDING, STATE, SimState, is_int, json_response, read_json
from megarouter.sim.settings import SimSettings

PREFIXES = ("/v1/projects/", "/v1beta1/projects/")
ANTHROPIC_VERSION = "vertex-2023-10-16"
GOOGLE = "google"
ANTHROPIC = "anthropic"

_METHODS = {"generateContent": CHAT, "streamGenerateContent": CHAT, "predict": EMBEDDING,
            "rawPredict": CHAT, "streamRawPredict": CHAT}
_GEMINI_METHODS = ("generateContent", "streamGenerateContent")
_CLAUDE_METHODS = ("rawPredict", "streamRawPredict")
_STREAMING = ("streamGenerateContent", "streamRawPredict")

_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
           409: "ABORTED", 429: "RESOURCE_EXHAUSTED", 499: "CANCELLED", 500: "INTERNAL",
           501: "UNIMPLEMENTED", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}
# Google's canonical messages; 429 is the pay-as-you-go quota answer of Vertex's generative AI.
_MESSAGES = {400: "Request contains an invalid argument.",
             403: "The caller does not have permission",
             404: "Requested entity was not found.",
             429: "Resource exhausted. Please try again later. Please refer to "
                  "https://cloud.google.com/vertex-ai/generative-ai/docs/error-code-429 for more details.",
             500: "Internal error encountered.",
             503: "The service is currently unavailable.",
             504: "Deadline expired before operation could complete."}
_SEE = "See https://developers.google.com/identity/sign-in/web/devconsole-project."
_MISSING_CREDENTIALS = ("Request is missing required authentication credential. Expected OAuth 2 access token, "
                        f"login cookie or other valid authentication credential. {_SEE}")
_INVALID_CREDENTIALS = ("Request had invalid authentication credentials. Expected OAuth 2 access token, login "
                        f"cookie or other valid authentication credential. {_SEE}")

# Embedding models by name prefix: (default and largest dimensions, instances per request).
_EMBEDDERS = (("gemini-embedding-", 3072, 1), ("text-embedding-", 768, 250),
              ("text-multilingual-embedding-", 768, 250))
_EMBED_MAX_TOKENS = 2048  # per input; longer ones are cut unless autoTruncate is false
_TASK_TYPES = ("RETRIEVAL_QUERY", "RETRIEVAL_DOCUMENT", "SEMANTIC_SIMILARITY", "CLASSIFICATION", "CLUSTERING",
               "QUESTION_ANSWERING", "FACT_VERIFICATION", "CODE_RETRIEVAL_QUERY")


def add_routes(app: web.Application) -> None:
    google_oauth.install(app)
    # Outermost, so it also sees the answers of the gate (auth, outages) and aiohttp's.
    app.middlewares.insert(0, _streamed_errors)
    for version in ("/v1", "/v1beta1"):
        app.router.add_post(version + "/projects/{project}/locations/{location}/publishers/{publisher}"
                                      "/models/{model}", _serve)
    configure(app)  # a one-shot action given on the command line is done at start


def kind_of(path: str) -> str | None:
    return _METHODS.get(path.rpartition(":")[2]) if ":" in path else None


def reset(app: web.Application) -> None:
    """Forget every access token granted (``/_sim/reset``)."""
    app[google_oauth.TOKENS].revoke_all()


def configure(app: web.Application) -> None:
    """Act on one-shot settings after a ``/_sim/config`` update: ``vertex_revoke_tokens``."""
    state = app[STATE]
    if state.settings.vertex_revoke_tokens:
        app[google_oauth.TOKENS].revoke_all()
        state.settings = dataclasses.replace(state.settings, vertex_revoke_tokens=False)


# ------------------------------------------------------------------- errors

def error(status: int, message: str, *, status_name: str | None = None, details: list[dict] | None = None,
          headers: dict[str, str] | None = None) -> web.Response:
    body: dict[str, Any] = {"code": status, "message": message,
                            "status": status_name or _STATUS.get(status, "INTERNAL" if status >= 500
                                                                  else "FAILED_PRECONDITION")}
    if details:
        body["details"] = details
    return json_response({"error": body}, status, headers)


def invalid(message: str) -> web.Response:
    return error(400, message)


def status_error(status: int, settings: SimSettings) -> web.Response:
    """A scripted failure (fault draw or outage) as Vertex reports it."""
    headers = {"Retry-After": str(math.ceil(settings.retry_after_s))} if status == 429 else None
    return error(status, _MESSAGES.get(status, f"Simulated error {status}."), headers=headers)


def http_error(status: int, reason: str) -> web.Response:
    return error(status, _MESSAGES.get(status, reason) if status in (404, 500, 503) else reason)


def _fault(status: int, settings: SimSettings, publisher: str, model: str) -> web.Response:
    """A drawn fault on a model call: Vertex's own errors in Google's shape, Claude's overload in Anthropic's."""
    if publisher == ANTHROPIC and status == 529:
        return wire_anthropic.status_error(status, settings)
    response = status_error(status, settings)
    if status == 429 and publisher == ANTHROPIC:
        base = model.partition("@")[0]
        response = error(429, "Quota exceeded for aiplatform.googleapis.com/online_prediction_requests_per_base_model "
                              f"with base model: anthropic-{base}. Please submit a quota increase request. "
                              "https://cloud.google.com/vertex-ai/generative-ai/docs/quotas-genai.",
                         headers={"Retry-After": response.headers["Retry-After"]})
    return response


def _streams_array(request: web.Request) -> bool:
    method = request.path.rpartition(":")[2] if ":" in request.path else ""
    return request.path.startswith(PREFIXES) and (
        method == "streamRawPredict" or (method == "streamGenerateContent" and request.query.get("alt") != "sse"))


@web.middleware
async def _streamed_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    # A streaming method answers with a JSON array, so Vertex sends its errors as one too.
    resp = await handler(request)
    if (resp.status >= 400 and type(resp) is web.Response and isinstance(resp.body, bytes)
            and resp.body.startswith(b'{"error":') and _streams_array(request)):
        resp.body = b"[" + resp.body + b"]"
    return resp


# --------------------------------------------------------------------- auth

def _error_info(request: web.Request, reason: str) -> list[dict[str, Any]]:
    version = "v1beta1" if request.path.startswith("/v1beta1/") else "v1"
    method = request.path.rpartition(":")[2] if ":" in request.path else ""
    rpc = f"google.cloud.aiplatform.{version}.PredictionService.{method[:1].upper()}{method[1:]}"
    return [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason, "domain": "googleapis.com",
             "metadata": {"service": "aiplatform.googleapis.com", "method": rpc}}]


def _refuse(request: web.Request, state: SimState, status: int, message: str, reason: str,
            details: list[dict[str, Any]] | None = None) -> web.Response:
    state.auth_failures += 1
    headers = {"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/"'} if status == 401 else None
    return error(status, message, details=details or _error_info(request, reason), headers=headers)


def check_auth(request: web.Request, state: SimState) -> web.Response | None:
    """A bearer token this simulator granted (or the API key), then the project's permission."""
    settings = state.settings
    if state.api_key is not None or settings.vertex_service_account_file:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return _refuse(request, state, 401, _MISSING_CREDENTIALS, "CREDENTIALS_MISSING")
        if state.api_key is None or not hmac.compare_digest(token.encode(), state.api_key):
            verdict = request.app[google_oauth.TOKENS].check(token)
            if verdict == google_oauth.EXPIRED:
                return _refuse(request, state, 401, _INVALID_CREDENTIALS, "ACCESS_TOKEN_EXPIRED")
            if verdict == google_oauth.UNKNOWN:
                return _refuse(request, state, 401, _INVALID_CREDENTIALS, "ACCESS_TOKEN_TYPE_UNSUPPORTED")
            if verdict == google_oauth.NO_SCOPE:
                return _refuse(request, state, 403, "Request had insufficient authentication scopes.",
                               "ACCESS_TOKEN_SCOPE_INSUFFICIENT")
    project = request.match_info.get("project")
    if settings.vertex_project and project is not None and project != settings.vertex_project:
        # IAM's answer for a project the caller has no role in (or that does not exist).
        tail = request.path.split("/", 2)[2]
        resource = tail.rpartition(":")[0] if ":" in tail else tail
        permission = "aiplatform.endpoints.predict"
        details = [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "IAM_PERMISSION_DENIED",
                    "domain": "aiplatform.googleapis.com",
                    "metadata": {"permission": permission, "resource": resource}}]
        return _refuse(request, state, 403, f"Permission '{permission}' denied on resource "
                                            f"'//aiplatform.googleapis.com/{resource}' (or it may not exist).",
                       "IAM_PERMISSION_DENIED", details)
    return None


# ------------------------------------------------------------------- models

def publisher_of(model: str) -> str:
    """The publisher a configured model is served under: Claude models are Anthropic's, the rest Google's."""
    return ANTHROPIC if model.startswith("claude") else GOOGLE


def _embedder(model: str) -> tuple[int, int] | None:
    """(dimensions, instances per request) for an embedding model, None for a generative one."""
    for prefix, dimensions, batch in _EMBEDDERS:
        if model.startswith(prefix):
            return dimensions, batch
    return None


def _model_not_found(request: web.Request, model: str) -> web.Response:
    info = request.match_info
    name = f"projects/{info['project']}/locations/{info['location']}/publishers/{info['publisher']}/models/{model}"
    return error(404, f"Publisher Model `{name}` was not found or your project does not have access to it. "
                      "Please ensure you are using a valid model version. For more information, see: "
                      "https://cloud.google.com/vertex-ai/generative-ai/docs/learn/model-versions")


async def _serve(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    info = request.match_info
    model, _, method = info["model"].rpartition(":")
    if not model or method not in _METHODS:
        return error(404, f"Method {method or info['model']!r} not found.")
    if method in _STREAMING:
        state.stream_requests += 1
    publisher = info["publisher"]
    fault = faults.draw_fault(state)
    if fault is not None:
        return _fault(fault, state.settings, publisher, model)
    location = state.settings.vertex_location
    if (location and info["location"] != location) or model not in state.model_set \
            or publisher_of(model) != publisher:
        return _model_not_found(request, model)
    body = await read_json(request)
    embedder = _embedder(model)
    if publisher == ANTHROPIC:
        if method not in _CLAUDE_METHODS:
            return error(400, f"Anthropic models are served through rawPredict and streamRawPredict, not {method}.",
                         status_name="FAILED_PRECONDITION")
        return await _claude(request, state, model, body, method == "streamRawPredict")
    if embedder is not None:
        if method != "predict":
            return error(400, f"{model} is an embedding model: call it with predict, not {method}.",
                         status_name="FAILED_PRECONDITION")
        return await _predict(state, model, body, *embedder)
    if method not in _GEMINI_METHODS:
        return error(400, "Gemini cannot be accessed through Vertex Predict/RawPredict API. Please follow "
                          "https://cloud.google.com/vertex-ai/docs/generative-ai/start/quickstarts/"
                          "quickstart-multimodal for Gemini usage.", status_name="FAILED_PRECONDITION")
    if not isinstance(body, dict):
        return invalid("Invalid JSON payload received. The body must be a JSON object.")
    problem = wire_gemini.validate(body)
    if problem is not None:
        return invalid(problem)
    return await wire_gemini.generate(request, state, model, body, method == "streamGenerateContent")


# ------------------------------------------------------------------- Claude

async def _claude(request: web.Request, state: SimState, model: str, body: Any,
                  streaming: bool) -> web.StreamResponse:
    """Anthropic's Messages API with Vertex's envelope: the model in the URL, the version in the body."""
    if not isinstance(body, dict):
        return wire_anthropic.invalid("The request body is not valid JSON.")
    if "anthropic_version" not in body:
        return wire_anthropic.invalid(f"anthropic_version: Field required (Vertex AI takes it in the body, "
                                      f"not as a header: \"anthropic_version\": \"{ANTHROPIC_VERSION}\")")
    if body["anthropic_version"] != ANTHROPIC_VERSION:
        return wire_anthropic.invalid(f"anthropic_version: Input should be '{ANTHROPIC_VERSION}'")
    if "model" in body:
        return wire_anthropic.invalid("model: Extra inputs are not permitted (on Vertex AI the model is named "
                                      "in the URL)")
    stream = body.get("stream")
    if stream is not None and stream is not streaming:
        return wire_anthropic.invalid("stream: streamRawPredict streams: stream must be true or absent" if streaming
                                      else "stream: rawPredict does not stream: call streamRawPredict")
    messages = {k: v for k, v in body.items() if k not in ("anthropic_version", "stream")}
    messages["model"] = model
    return await wire_anthropic.respond(request, state, messages, streaming)


# --------------------------------------------------------------- embeddings

async def _predict(state: SimState, model: str, body: Any, dimensions: int, batch: int) -> web.Response:
    if not isinstance(body, dict):
        return invalid("Invalid JSON payload received. The body must be a JSON object.")
    instances = body.get("instances")
    if not isinstance(instances, list) or not instances:
        return invalid("instances: at least one instance is required.")
    if len(instances) > batch:
        return invalid(f"{model} takes at most {batch} instance{'s' if batch > 1 else ''} per request, "
                       f"got {len(instances)}.")
    parameters = body.get("parameters", {})
    if not isinstance(parameters, dict):
        return invalid("parameters: must be an object.")
    truncate = parameters.get("autoTruncate", True)
    size = parameters.get("outputDimensionality", dimensions)
    if not isinstance(truncate, bool):
        return invalid("parameters.autoTruncate: must be true or false.")
    if not is_int(size) or size > dimensions:
        return invalid(f"parameters.outputDimensionality: must be between 1 and {dimensions} for {model}.")
    predictions = []
    billable = 0
    for i, instance in enumerate(instances):
        content = instance.get("content") if isinstance(instance, dict) else None
        if not isinstance(content, str) or not content:
            return invalid(f"instances[{i}].content: a non-empty string is required.")
        task = instance.get("task_type")
        if task is not None and task not in _TASK_TYPES:
            return invalid(f"instances[{i}].task_type: must be one of {', '.join(_TASK_TYPES)}.")
        if not isinstance(instance.get("title", ""), str):
            return invalid(f"instances[{i}].title: must be a string.")
        tokens = reply.text_tokens(content)
        if tokens > _EMBED_MAX_TOKENS and not truncate:
            return invalid(f"Input instances[{i}] has {tokens} tokens, more than the {_EMBED_MAX_TOKENS} "
                           f"{model} takes; set autoTruncate to cut it.")
        cut = content[:_EMBED_MAX_TOKENS * reply.CHARS_PER_TOKEN]
        billable += sum(1 for c in content if not c.isspace())
        predictions.append({"embeddings": {"values": reply.embedding(cut, size),
                                           "statistics": {"token_count": min(tokens, _EMBED_MAX_TOKENS),
                                                          "truncated": tokens > _EMBED_MAX_TOKENS}}})
    await faults.pause(state.settings.latency_ms)
    return json_response({"predictions": predictions, "metadata": {"billableCharacterCount": billable}})
