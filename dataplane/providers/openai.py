"""OpenAI's own wire format: requests and responses pass through unchanged.

Only `model` is rewritten (to the endpoint's upstream id), so everything the
caller sent — tools, response_format, multimodal parts, stream_options —
reaches the provider as it was.
"""

from __future__ import annotations


class OpenAIAdapter:
    kind = "openai"

    def auth_headers(self, secret: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {secret}"} if secret else {}

    def chat_url(self, base_url: str, upstream_model: str) -> str:
        return f"{base_url}/chat/completions"
