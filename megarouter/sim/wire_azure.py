"""Azure OpenAI wire format: OpenAI's bodies behind deployment URLs.

``POST /openai/deployments/{deployment}/chat/completions``, ``/embeddings``
and ``/completions``, each with a required ``?api-version=YYYY-MM-DD[-preview]``.
The deployment in the path selects the model (it must be one of the
simulator's models; the body's ``model`` is ignored, as Azure does), the key
goes in the ``api-key`` header, and everything else is the OpenAI wire's own
handlers: validation, replies, streaming, usage and faults.

Where Azure differs, it is reproduced:

- its errors for a missing or malformed api-version, an unknown path (404
  ``Resource not found``), a bad key (401) and an unknown deployment (404
  ``DeploymentNotFound``), all ``{"error": {"code", "message"}}``;
- streams open with a prompt-annotation chunk (``choices: []``, empty
  ``id``/``object``/``model``, ``created: 0``, ``prompt_filter_results``);
- scripted 429s use Azure's quota message and send ``retry-after-ms`` too;
  a scripted 400 is Azure's content-filter rejection (``code:
  content_filter``), its characteristic 400. Other scripted statuses keep
  OpenAI's shapes, which Azure passes through.
"""

from __future__ import annotations

import functools
import hmac
import math
import re
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from megarouter.sim import wire_openai as oai
from megarouter.sim import wire_openai_text as oai_text
from megarouter.sim.common import CHAT, COMPLETION, EMBEDDING, STATE, SimState, json_response, read_json
from megarouter.sim.settings import SimSettings

PREFIXES = ("/openai/",)
Handler = Callable[[web.Request, Any, oai.Dialect], Awaitable[web.StreamResponse]]
_DEPLOYMENTS = "/openai/deployments/"
# operation path -> (stats kind, Azure's operation name in quota messages)
_OPERATIONS = {"chat/completions": (CHAT, "ChatCompletions_Create"),
               "embeddings": (EMBEDDING, "Embeddings_Create"),
               "completions": (COMPLETION, "Completions_Create")}
_API_VERSION = re.compile(r"\d{4}-\d{2}-\d{2}(-preview)?")

_NOT_FOUND = "Resource not found"
_ACCESS_DENIED = ("Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide "
                  "a valid key for an active subscription and use a correct regional API endpoint for your "
                  "resource.")
_NO_DEPLOYMENT = ("The API deployment for this resource does not exist. If you created the deployment "
                  "within the last 5 minutes, please wait a moment and try again.")
_FILTERED = ("The response was filtered due to the prompt triggering Azure OpenAI's content management "
             "policy. Please modify your prompt and retry. To learn more about our content filtering "
             "policies please read our documentation: https://go.microsoft.com/fwlink/?linkid=2198766")

_SAFE = {category: {"filtered": False, "severity": "safe"}
         for category in ("hate", "self_harm", "sexual", "violence")}
# The first event of every Azure stream: the prompt's content-filter verdict.
PROMPT_ANNOTATIONS = b"data: " + orjson.dumps({
    "choices": [], "created": 0, "id": "", "model": "", "object": "",
    "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": _SAFE}],
}) + b"\n\n"


def add_routes(app: web.Application) -> None:
    handlers = {"chat/completions": oai.chat_completions, "embeddings": oai_text.embeddings,
                "completions": oai_text.completions}
    for operation, handler in handlers.items():
        app.router.add_post(_DEPLOYMENTS + "{deployment}/" + operation,
                            functools.partial(_serve, handler, operation))


def kind_of(path: str) -> str | None:
    operation = _operation(path)
    return _OPERATIONS[operation][0] if operation else None


def _operation(path: str) -> str | None:
    if not path.startswith(_DEPLOYMENTS):
        return None
    _, _, operation = path[len(_DEPLOYMENTS):].partition("/")
    return operation if operation in _OPERATIONS else None


# ------------------------------------------------------------------- errors

def error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return json_response({"error": {"code": code, "message": message}}, status, headers)


def status_error(status: int, settings: SimSettings, operation: str = "ChatCompletions_Create",
                 api_version: str = "2024-10-21") -> web.Response:
    """A scripted failure (fault draw or outage) as Azure OpenAI reports it."""
    if status == 429:
        seconds = math.ceil(settings.retry_after_s)
        return error(
            429, "429",
            f"Requests to the {operation} Operation under Azure OpenAI API version {api_version} have "
            f"exceeded token rate limit of your current OpenAI S0 pricing tier. Please retry after "
            f"{seconds} second{'' if seconds == 1 else 's'}. Please go here: https://aka.ms/oai/quotaincrease "
            "if you would like to further increase the default rate limit. (simulated)",
            headers={"Retry-After": str(seconds), "retry-after-ms": str(round(settings.retry_after_s * 1000))},
        )
    if status == 400:
        body = {"message": _FILTERED, "type": None, "param": "prompt", "code": "content_filter",
                "status": 400, "innererror": {"code": "ResponsibleAIPolicyViolation",
                                              "content_filter_result": {**_SAFE, "violence": {
                                                  "filtered": True, "severity": "medium"}}}}
        return json_response({"error": body}, 400)
    return oai.status_error(status, settings)


def http_error(status: int, reason: str) -> web.Response:
    # Unknown paths, wrong methods, oversized bodies.
    return error(status, str(status), _NOT_FOUND if status == 404 else reason)


def check_auth(request: web.Request, state: SimState) -> web.Response | None:
    # Without a valid api-version the path names no operation at all, whatever the key.
    if not _API_VERSION.fullmatch(request.query.get("api-version", "")):
        return error(404, "404", _NOT_FOUND)
    if state.api_key is None:
        return None
    given = request.headers.get("api-key", "").encode()
    if not hmac.compare_digest(given, state.api_key):
        return error(401, "401", _ACCESS_DENIED)
    return None


def deployment_not_found() -> web.Response:
    return error(404, "DeploymentNotFound", _NO_DEPLOYMENT)


# ------------------------------------------------------------------ handler

async def _serve(handler: Handler, operation: str, request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    deployment = request.match_info["deployment"]
    if deployment not in state.model_set:
        return deployment_not_found()
    body = await read_json(request)
    if isinstance(body, dict):
        body["model"] = deployment  # the deployment, not the body, picks the model
    fail = functools.partial(status_error, operation=_OPERATIONS[operation][1],
                             api_version=request.query["api-version"])
    return await handler(request, body, oai.Dialect(fail, (PROMPT_ANNOTATIONS,)))
