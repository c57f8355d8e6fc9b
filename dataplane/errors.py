"""The gateway's one error tree, and the two shapes errors leave in.

Everything a client can be told went wrong is an `ApiError` — status, message,
`param` naming the field, `code`, extra headers — raised wherever it is found
and rendered once, at the edge, in the shape of the API the client speaks:

    ApiError                 catch-all: what the client sees
    ├── ClientError          the caller's request is wrong (4xx): never retried
    ├── BudgetError          a budget or quota refuses it (429, Retry-After)
    ├── NoEndpointError      nothing can serve it now (503)
    └── UpstreamError        the providers failed it (502/504, or 429 when all are
                             rate-limited)

`OPENAI_ERRORS` renders `{"error": {"message", "type", "param", "code"}}` (the
OpenAI APIs: chat, completions, embeddings, responses, models);
`ANTHROPIC_ERRORS` renders `{"type": "error", "error": {"type", "message"}}`
(`/v1/messages`). Each keeps the status code, so each official SDK raises its
own exception class (`BadRequestError`, `RateLimitError`, …).
"""

from __future__ import annotations

import orjson
from aiohttp import web


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",  # noqa: A002 - OpenAI's field name
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        close: bool = False,
    ) -> None:
        super().__init__(message)
        self.close = close  # end the connection after answering (its request could not be read whole)
        self.status = status
        self.message = message
        self.type = type    # OpenAI's error type; the Anthropic shape derives its own from the status
        self.param = param
        self.code = code
        self.headers = headers or {}


class ClientError(ApiError):
    """The caller's request is wrong: a 4xx that no other endpoint would answer differently."""


class BudgetError(ApiError):
    """A budget or model quota refuses the request."""


class NoEndpointError(ApiError):
    """Nothing can serve the request right now."""


class UpstreamError(ApiError):
    """Every attempt failed upstream (502, 504, or 429 when all were rate-limited)."""


class OpenAIErrors:
    """The OpenAI APIs' error shape."""

    def body(self, error: ApiError) -> bytes:
        return error_body(error.message, error.type, error.param, error.code)

    def response(self, error: ApiError) -> web.Response:
        return _response(error, self.body(error))


# Anthropic's documented error types by HTTP status (docs.anthropic.com "Errors").
_ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
                    403: "permission_error", 404: "not_found_error", 413: "request_too_large",
                    429: "rate_limit_error", 504: "timeout_error", 529: "overloaded_error"}


def anthropic_error_type(status: int) -> str:
    return _ANTHROPIC_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")


class AnthropicErrors:
    """The Anthropic Messages API's error shape. Anthropic has no `param`: the field is named
    in the message, as Anthropic's own messages do ("max_tokens: Field required"), and kept
    in an extra `param` member for tools that read it."""

    def body(self, error: ApiError) -> bytes:
        message = error.message
        if error.param and error.param not in message:
            message = f"{error.param}: {message}"
        inner = {"type": anthropic_error_type(error.status), "message": message}
        if error.param:
            inner["param"] = error.param
        return orjson.dumps({"type": "error", "error": inner})

    def response(self, error: ApiError) -> web.Response:
        return _response(error, self.body(error))


OPENAI_ERRORS = OpenAIErrors()
ANTHROPIC_ERRORS = AnthropicErrors()
ErrorFormat = OpenAIErrors | AnthropicErrors


def error_format_for(path: str) -> ErrorFormat:
    """The shape of an error for a request to `path` when no handler chose one (the HTTP
    layer's own errors: malformed requests, unknown URLs)."""
    return ANTHROPIC_ERRORS if path.startswith("/v1/messages") else OPENAI_ERRORS


def _response(error: ApiError, body: bytes) -> web.Response:
    response = web.Response(status=error.status, body=body, content_type="application/json",
                            headers=error.headers)
    if error.close:
        response.force_close()
    return response


def error_body(message: str, type: str, param: str | None = None, code: str | None = None) -> bytes:  # noqa: A002
    return orjson.dumps({"error": {"message": message, "type": type, "param": param, "code": code}})


def bad_request(message: str, param: str | None = None, code: str | None = None) -> ClientError:
    return ClientError(400, message, param=param, code=code)


def model_not_found(model: str) -> ClientError:
    return ClientError(
        404,
        f"The model '{model}' does not exist or you do not have access to it.",
        param="model",
        code="model_not_found",
    )
