"""Provider adapters: one module per upstream wire format.

An adapter knows how to address a provider (URL, auth headers) and how to
translate between OpenAI's shape and the provider's. `adapter_for` picks the
adapter for a provider's kind (and, for OpenAI-compatible services, its
preset); a routing table naming a kind this proxy lacks is NACKed.
"""

from __future__ import annotations

from dataplane.providers.anthropic import AnthropicAdapter
from dataplane.providers.azure_openai import AzureOpenAIAdapter
from dataplane.providers.base import Adapter
from dataplane.providers.bedrock import BedrockAdapter
from dataplane.providers.gemini import GeminiAdapter
from dataplane.providers.openai import OpenAIAdapter
from megarouter.presets import PRESETS

ADAPTERS: dict[str, Adapter] = {
    "openai": OpenAIAdapter(),
    "azure_openai": AzureOpenAIAdapter(),
    "anthropic": AnthropicAdapter(),
    "gemini": GeminiAdapter(),
    "bedrock": BedrockAdapter(),
}

_PRESET_ADAPTERS: dict[str, Adapter] = {
    name: OpenAIAdapter(stream_options=not preset.no_stream_options) for name, preset in PRESETS.items()
}


def adapter_for(kind: str, preset: str = "") -> Adapter | None:
    if kind == "openai" and preset:
        return _PRESET_ADAPTERS.get(preset)
    return ADAPTERS.get(kind)


__all__ = ["ADAPTERS", "Adapter", "adapter_for"]
