"""Provider adapters: one module per upstream wire format.

An adapter knows how to address a provider (URL, auth headers) and how to
translate between OpenAI's shape and the provider's. `ADAPTERS` maps a
provider kind to its adapter; a routing table naming a kind missing here is
NACKed.
"""

from dataplane.providers.base import Adapter
from dataplane.providers.openai import OpenAIAdapter

ADAPTERS: dict[str, Adapter] = {
    "openai": OpenAIAdapter(),
}

__all__ = ["ADAPTERS", "Adapter"]
