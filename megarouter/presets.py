"""Known OpenAI-compatible services.

A provider with `kind: openai` and `preset: groq` gets Groq's base URL when
it names none, and the proxy applies the service's quirks — the places where
it departs from OpenAI's wire format.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Preset:
    base_url: str
    # The service rejects or ignores `stream_options`, so the proxy must not
    # add it (usage then comes only when the service sends it unasked).
    no_stream_options: bool = False
    # Requests need no credential (local servers).
    keyless: bool = False


PRESETS: dict[str, Preset] = {
    "openai": Preset("https://api.openai.com/v1"),
    "deepseek": Preset("https://api.deepseek.com/v1"),
    "xai": Preset("https://api.x.ai/v1"),
    "mistral": Preset("https://api.mistral.ai/v1", no_stream_options=True),
    "groq": Preset("https://api.groq.com/openai/v1"),
    "together": Preset("https://api.together.xyz/v1"),
    "fireworks": Preset("https://api.fireworks.ai/inference/v1"),
    "openrouter": Preset("https://openrouter.ai/api/v1"),
    "perplexity": Preset("https://api.perplexity.ai", no_stream_options=True),
    "vllm": Preset("http://127.0.0.1:8000/v1", keyless=True),
    "ollama": Preset("http://127.0.0.1:11434/v1", keyless=True),
}
