"""The interface every provider adapter implements."""

from __future__ import annotations

from typing import Protocol


class Adapter(Protocol):
    kind: str

    def auth_headers(self, secret: str | None) -> dict[str, str]:
        """Headers that authenticate to the provider (empty without a secret)."""
        ...

    def chat_url(self, base_url: str, upstream_model: str) -> str:
        """Where a chat-completions request for `upstream_model` is sent."""
        ...
