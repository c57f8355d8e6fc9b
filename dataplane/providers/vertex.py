"""Google Vertex AI: Gemini models (`publisher: google`, the default) and Anthropic's Claude
(`publisher: anthropic`), each on its publisher's wire — one provider per publisher.

    {base}/v1/projects/{project}/locations/{location}/publishers/google/models/{model}:generateContent
                                                                               :streamGenerateContent?alt=sse
                                                                               :predict   (text embeddings)
    {base}/v1/projects/{project}/locations/{location}/publishers/anthropic/models/{model}:rawPredict
                                                                                  :streamRawPredict

`base_url` is `https://{location}-aiplatform.googleapis.com`, or `https://aiplatform.googleapis.com`
for the `global` location; `options.project` is required, `options.location` defaults to the
one in the host name (else `global`). Auth is an OAuth 2 access token from google-auth
(`google_auth.GoogleTokenSigner`): the provider's credential names a service-account key
file; without one, Application Default Credentials apply.

The translation is the Gemini API's (`gemini`) and Anthropic's (`anthropic`): the bodies are
the same on Vertex, except that a Claude request carries `anthropic_version:
vertex-2023-10-16` in the body and no `model` (it is in the URL), and embeddings use Vertex's
`:predict` shape (`instances[].content` -> `predictions[].embeddings.values`). Errors from
Vertex itself come in Google's shape (`{"error": {"code", "message", "status"}}`) on both
publishers, and are classified like the Gemini API's; Claude's own errors keep Anthropic's.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlsplit

import orjson

from dataplane.errors import ApiError, bad_request
from dataplane.providers.anthropic import AnthropicAdapter, messages_body
from dataplane.providers.base import ProviderError, Usage
from dataplane.providers.gemini import GeminiAdapter, classify_google_error, estimate_tokens, google_error
from dataplane.providers.google_auth import GoogleTokenSigner, signer_for

VERTEX_ANTHROPIC_VERSION = "vertex-2023-10-16"
_REGIONAL_HOST = re.compile(r"^([a-z0-9-]+)-aiplatform\.googleapis\.com$")


def vertex_location(base_url: str, options: Mapping[str, str]) -> str:
    if options.get("location"):
        return options["location"]
    match = _REGIONAL_HOST.match(urlsplit(base_url).hostname or "")
    return match.group(1) if match else "global"


def _model_base(base_url: str, options: Mapping[str, str], publisher: str, upstream_model: str) -> str:
    project = quote(options.get("project", ""), safe="")
    location = quote(vertex_location(base_url, options), safe="")
    return (f"{base_url}/v1/projects/{project}/locations/{location}/publishers/{publisher}/models/"
            f"{quote(upstream_model, safe='@.-_')}")


class _VertexAuth:
    """What both publishers share: the token signer, and no static auth header."""

    supports_completions = False

    def auth_headers(self, secret: str | None) -> dict[str, str]:
        return {}  # the access token is the signer's, per request

    def request_signer(self, provider: str, base_url: str, options: Mapping[str, str],
                       secret: str | None) -> GoogleTokenSigner:
        # The credential reference's content is the service-account key file's JSON.
        return signer_for(provider, secret)


class VertexGeminiAdapter(_VertexAuth, GeminiAdapter):
    kind = "vertex"
    supports_embeddings = True

    def chat_url(self, base_url: str, options: Mapping[str, str], upstream_model: str, stream: bool) -> str:
        method = "streamGenerateContent?alt=sse" if stream else "generateContent"
        return f"{_model_base(base_url, options, 'google', upstream_model)}:{method}"

    def embeddings_request(
        self, base_url: str, options: Mapping[str, str], payload: dict[str, Any], upstream_model: str
    ) -> tuple[str, bytes]:
        inputs = payload.get("input")
        texts = [inputs] if isinstance(inputs, str) else inputs
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise bad_request("Vertex embeddings take 'input' as a string or an array of strings.", "input")
        if len(texts) > 250:
            raise bad_request("Vertex embeds at most 250 inputs per request.", "input")
        if payload.get("encoding_format") not in (None, "float", "base64"):
            raise bad_request("'encoding_format' must be float or base64", "encoding_format")
        body: dict[str, Any] = {"instances": [{"content": text} for text in texts]}
        dimensions = payload.get("dimensions")
        if dimensions is not None:
            if not isinstance(dimensions, int) or isinstance(dimensions, bool) or dimensions < 1:
                raise bad_request("'dimensions' must be a positive integer", "dimensions")
            body["parameters"] = {"outputDimensionality": dimensions}
        return f"{_model_base(base_url, options, 'google', upstream_model)}:predict", orjson.dumps(body)

    def embeddings_response(self, body: bytes, model: str, payload: Mapping[str, Any] | None = None
                            ) -> tuple[bytes, Usage]:
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            data = None
        if not isinstance(data, dict):
            raise ApiError(502, "the upstream returned a response that is not an embeddings answer",
                           type="server_error", code="upstream_error")
        vectors, tokens = [], 0
        for prediction in data.get("predictions") or []:
            embeddings = prediction.get("embeddings") if isinstance(prediction, dict) else None
            if isinstance(embeddings, dict):
                vectors.append(embeddings.get("values") or [])
                statistics = embeddings.get("statistics") or {}
                tokens += statistics.get("token_count", 0) if isinstance(statistics.get("token_count"), int) else 0
        if not tokens and payload is not None:
            tokens = estimate_tokens(payload)
        response = {"object": "list", "model": model,
                    "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)],
                    "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
        return orjson.dumps(response), Usage(prompt_tokens=tokens)


class VertexAnthropicAdapter(_VertexAuth, AnthropicAdapter):
    kind = "vertex"
    supports_embeddings = False

    def chat_url(self, base_url: str, options: Mapping[str, str], upstream_model: str, stream: bool) -> str:
        method = "streamRawPredict" if stream else "rawPredict"
        return f"{_model_base(base_url, options, 'anthropic', upstream_model)}:{method}"

    def chat_request(self, payload: dict[str, Any], upstream_model: str) -> bytes:
        body = messages_body(payload, upstream_model)
        del body["model"]  # Vertex names the model in the URL
        body["anthropic_version"] = VERTEX_ANTHROPIC_VERSION
        return orjson.dumps(body)

    def classify_error(self, status: int, headers: Mapping[str, str], body: bytes) -> ProviderError:
        google = google_error(body) or {}
        if google.get("status") or google.get("code"):  # refused by Vertex itself (auth, quota, routing)
            return classify_google_error(status, headers, google)
        return super().classify_error(status, headers, body)


GEMINI = VertexGeminiAdapter()
ANTHROPIC = VertexAnthropicAdapter()


def vertex_adapter(options: Mapping[str, str]):
    publisher = options.get("publisher", "google")
    return ANTHROPIC if publisher == "anthropic" else GEMINI if publisher == "google" else None
