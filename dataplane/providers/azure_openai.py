"""Azure OpenAI: OpenAI's wire format behind deployment-based URLs.

The provider's `base_url` is the resource endpoint
(`https://<resource>.openai.azure.com`); the endpoint's `upstream_model` is
the *deployment* name; `options.api_version` picks the API version (default
the GA data-plane release below). The key goes in the `api-key` header.
Bodies, streams and errors are OpenAI's, so everything else is inherited —
including Azure's content-filter errors (`code: content_filter`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import orjson

from dataplane.providers.openai import OpenAIAdapter

DEFAULT_API_VERSION = "2024-10-21"  # latest GA inference API when written


class AzureOpenAIAdapter(OpenAIAdapter):
    kind = "azure_openai"

    def auth_headers(self, secret: str | None) -> dict[str, str]:
        return {"api-key": secret} if secret else {}

    def _url(self, base_url: str, options: Mapping[str, str], deployment: str, operation: str) -> str:
        version = options.get("api_version") or DEFAULT_API_VERSION
        return f"{base_url}/openai/deployments/{quote(deployment, safe='')}/{operation}?api-version={version}"

    def chat_url(self, base_url: str, options: Mapping[str, str], upstream_model: str, stream: bool) -> str:
        return self._url(base_url, options, upstream_model, "chat/completions")

    def completions_url(self, base_url: str, options: Mapping[str, str], upstream_model: str) -> str:
        return self._url(base_url, options, upstream_model, "completions")

    def embeddings_request(
        self, base_url: str, options: Mapping[str, str], payload: dict[str, Any], upstream_model: str
    ) -> tuple[str, bytes]:
        # The deployment in the URL selects the model; Azure ignores `model`.
        return (self._url(base_url, options, upstream_model, "embeddings"),
                orjson.dumps({**payload, "model": upstream_model}))
