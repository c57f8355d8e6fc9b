"""Provider adapters: one module per upstream wire format.

An adapter knows how to address a provider (URL, auth headers) and how to
translate between OpenAI's shape and the provider's. `adapter_for` picks the
adapter for a provider's kind (and, for OpenAI-compatible services, its
preset; for Vertex AI, its publisher); a routing table naming a kind this proxy
lacks is NACKed.

The cloud adapters are imported when a table first names their kind: botocore
(Bedrock) and google-auth (Vertex) cost a proxy that uses neither ~10 MB and
startup time for nothing.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping

from dataplane.providers.anthropic import AnthropicAdapter
from dataplane.providers.azure_openai import AzureOpenAIAdapter
from dataplane.providers.base import Adapter
from dataplane.providers.gemini import GeminiAdapter
from dataplane.providers.openai import OpenAIAdapter
from megarouter.presets import PRESETS

ADAPTERS: dict[str, Adapter] = {
    "openai": OpenAIAdapter(),
    "azure_openai": AzureOpenAIAdapter(),
    "anthropic": AnthropicAdapter(),
    "gemini": GeminiAdapter(),
}
# kind -> (module, the adapter's name in it), loaded on first use.
_LAZY_ADAPTERS = {"bedrock": ("dataplane.providers.bedrock", "ADAPTER")}

_PRESET_ADAPTERS: dict[str, Adapter] = {
    name: OpenAIAdapter(stream_options=not preset.no_stream_options) for name, preset in PRESETS.items()
}


def adapter_for(kind: str, preset: str = "", options: Mapping[str, str] | None = None) -> Adapter | None:
    if kind == "openai" and preset:
        return _PRESET_ADAPTERS.get(preset)
    if kind == "vertex":  # one provider per publisher, each on its publisher's wire
        return importlib.import_module("dataplane.providers.vertex").vertex_adapter(options or {})
    if kind not in ADAPTERS and kind in _LAZY_ADAPTERS:
        module, name = _LAZY_ADAPTERS[kind]
        ADAPTERS[kind] = getattr(importlib.import_module(module), name)
    return ADAPTERS.get(kind)


__all__ = ["ADAPTERS", "Adapter", "adapter_for"]
