"""Azure OpenAI addressing; bodies are OpenAI's (see test_openai.py)."""

from __future__ import annotations

import orjson

from dataplane.providers.azure_openai import DEFAULT_API_VERSION, AzureOpenAIAdapter
from dataplane.providers.base import ErrorClass

ADAPTER = AzureOpenAIAdapter()
BASE = "https://contoso.openai.azure.com"


def test_deployment_urls_and_api_version() -> None:
    assert ADAPTER.chat_url(BASE, {}, "gpt4o-prod", stream=True) == (
        f"{BASE}/openai/deployments/gpt4o-prod/chat/completions?api-version={DEFAULT_API_VERSION}"
    )
    assert ADAPTER.chat_url(BASE, {"api_version": "2025-01-01-preview"}, "d", stream=False).endswith(
        "/openai/deployments/d/chat/completions?api-version=2025-01-01-preview"
    )
    url, body = ADAPTER.embeddings_request(BASE, {}, {"model": "emb", "input": "hi"}, "ada-deploy")
    assert url == f"{BASE}/openai/deployments/ada-deploy/embeddings?api-version={DEFAULT_API_VERSION}"
    assert orjson.loads(body) == {"model": "ada-deploy", "input": "hi"}


def test_key_goes_in_api_key_header() -> None:
    assert ADAPTER.auth_headers("secret") == {"api-key": "secret"}
    assert ADAPTER.auth_headers(None) == {}


def test_content_filter_error_is_classified() -> None:
    body = b'{"error": {"message": "filtered", "code": "content_filter", "status": 400}}'
    assert ADAPTER.classify_error(400, {}, body).error_class is ErrorClass.CONTENT_FILTER
