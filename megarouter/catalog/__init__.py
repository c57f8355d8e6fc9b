"""The model catalog: prices, limits, capabilities and quality tiers.

`models.json` beside this file is generated offline by
`scripts/build_catalog.py` from the price data bundled in the `genai-prices`
package (MIT) and the hand-reviewed `curated.yaml`. At run time the catalog is
read from that file only, once, on first use: no network, no genai-prices.

    from megarouter.catalog import cost_usd, load_catalog

    model = load_catalog().get("gpt-4o-mini")          # or "openai/gpt-4o-mini"
    cost_usd(model, prompt_tokens=1200, completion_tokens=300, cached_prompt_tokens=1024)

Prices are USD per million tokens. A model may have price tiers: a request
whose prompt (cached tokens included) reaches a tier's `min_prompt_tokens` is
billed entirely at that tier's rates, as the providers bill long-context
requests.
"""

from __future__ import annotations

import functools
import json
import re
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = [
    "CAPABILITIES",
    "Catalog",
    "CatalogModel",
    "PriceTier",
    "cost_usd",
    "load_catalog",
    "to_model_resource",
]

# In the order of the admin API's Capabilities resource.
CAPABILITIES: tuple[str, ...] = ("tools", "vision", "json_mode", "streaming", "reasoning", "embeddings")
_CAPABILITY_SET = frozenset(CAPABILITIES)
_DATA_FILE = "models.json"
_MEMO_LIMIT = 4096
_COMPACT_DATE = re.compile(r"-(20\d{2})(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])(?=-|:|$)")


@dataclass(frozen=True, slots=True)
class PriceTier:
    """Rates for requests whose prompt has at least `min_prompt_tokens` tokens."""

    min_prompt_tokens: int
    input_per_mtok: float
    output_per_mtok: float
    cached_input_per_mtok: float | None


@dataclass(frozen=True, slots=True)
class CatalogModel:
    id: str                      # the provider's model id, e.g. "gpt-4o-mini"
    provider: str                # gateway provider name, e.g. "openai", "bedrock"
    name: str                    # display name
    context_window: int
    max_output_tokens: int       # 0 for embedding models
    input_per_mtok: float
    output_per_mtok: float
    cached_input_per_mtok: float | None   # None: cached tokens bill at the input rate
    tiers: tuple[PriceTier, ...]          # extra tiers above thresholds, ascending; empty if flat
    capabilities: frozenset[str]          # subset of CAPABILITIES
    quality_tier: int                     # 1 (minimal) .. 5 (frontier)
    quality_source: str                   # provenance of the tier: "<key>: <description>"

    @property
    def key(self) -> str:
        """Unique catalog key, "provider/id"."""
        return f"{self.provider}/{self.id}"

    def supports(self, *capabilities: str) -> bool:
        return all(cap in self.capabilities for cap in capabilities)

    def rates(self, prompt_tokens: int) -> PriceTier:
        """The rates that apply to a request with this many prompt tokens."""
        base = PriceTier(0, self.input_per_mtok, self.output_per_mtok, self.cached_input_per_mtok)
        return select_rates(base, self.tiers, prompt_tokens)


def select_rates(base: PriceTier, tiers: tuple[PriceTier, ...], prompt_tokens: int) -> PriceTier:
    """The tier whose threshold the prompt reaches (tiers ascending), else `base`."""
    chosen = base
    for tier in tiers:
        if prompt_tokens < tier.min_prompt_tokens:
            break
        chosen = tier
    return chosen


@dataclass(frozen=True, slots=True)
class Pricing:
    """Just the prices of a model, as the proxy gets them in its routing table."""

    base: PriceTier
    tiers: tuple[PriceTier, ...] = ()

    def rates(self, prompt_tokens: int) -> PriceTier:
        return select_rates(self.base, self.tiers, prompt_tokens)


def cost_usd(
    model: CatalogModel | Pricing, prompt_tokens: int, completion_tokens: int, cached_prompt_tokens: int = 0
) -> float:
    """Cost in USD of one request.

    `prompt_tokens` counts all prompt tokens, cached ones included (as OpenAI's
    usage does); it selects the price tier. The `cached_prompt_tokens` part is
    billed at the cached-input rate (the input rate when the model has none)
    and not again at the input rate.
    """
    if prompt_tokens < 0 or completion_tokens < 0 or cached_prompt_tokens < 0:
        raise ValueError("token counts must not be negative")
    cached = min(cached_prompt_tokens, prompt_tokens)
    rates = model.rates(prompt_tokens)
    cached_rate = rates.cached_input_per_mtok if rates.cached_input_per_mtok is not None else rates.input_per_mtok
    return (
        (prompt_tokens - cached) * rates.input_per_mtok
        + cached * cached_rate
        + completion_tokens * rates.output_per_mtok
    ) / 1_000_000


def to_model_resource(model: CatalogModel, *, name: str | None = None) -> dict[str, Any]:
    """The admin API's Model resource (`megarouter.resources.Model`) for a catalog model.

    Flat base rates only: the resource has no tiers or cached-input price.
    `name` overrides the model name (default: the provider's model id).
    """
    return {
        "name": name or model.id,
        "input_price_per_mtok": model.input_per_mtok,
        "output_price_per_mtok": model.output_per_mtok,
        "context_window": model.context_window,
        "max_output_tokens": model.max_output_tokens,
        "capabilities": {cap: cap in model.capabilities for cap in CAPABILITIES},
        "quality_tier": model.quality_tier,
    }


_MISS = object()


class Catalog:
    """Immutable set of catalog models with id lookup.

    `get(ref)` resolves, case-insensitively:

    1. "provider/model", where provider is a gateway provider name or alias
       ("openai", "gemini", "aws", ...): the model's exact id at that
       provider, else genai-prices' match rules for that provider (dated
       snapshots such as "claude-3-5-sonnet-20241022"), else those of the
       provider's fallbacks (azure -> openai, ...);
    2. an exact model id; when several providers serve it, the first in the
       catalog's provider priority (first-party vendors, hosts, then clouds);
    3. genai-prices' match rules of the providers whose model pattern matches
       the ref (e.g. "claude" -> anthropic), in priority order.

    A ref that genai-prices matches to a model the catalog leaves out (audio,
    image, fine-tune variants...) resolves to None rather than to a neighbour.
    """

    __slots__ = ("version", "_models", "_providers", "_priority", "_by_provider", "_bare", "_matchers",
                 "_provider_match", "_provider_names", "_fallback", "_memo")

    def __init__(
        self,
        models: Iterable[CatalogModel],
        *,
        version: Mapping[str, Any] | None = None,
        provider_priority: Iterable[str] = (),
        provider_aliases: Mapping[str, str] | None = None,
        fallback: Mapping[str, Iterable[str]] | None = None,
        matchers: Mapping[str, Iterable[tuple[Any, str | None]]] | None = None,
        provider_match: Mapping[str, Any] | None = None,
    ) -> None:
        """`matchers[provider]`: (match clause, catalog id or None) in match order; `provider_match[provider]`:
        the clause a bare ref must match to be looked up at that provider. Clauses use the JSON form written
        by scripts/build_catalog.py: ["eq"|"sw"|"ew"|"in", text], ["re", pattern], ["or"|"and", clause...].
        """
        self.version: dict[str, Any] = dict(version or {})
        self._models = tuple(sorted(models, key=lambda m: (m.provider, m.id)))
        self._providers = sorted({m.provider for m in self._models})
        priority = [p for p in provider_priority if p in self._providers]
        self._priority = tuple(priority + [p for p in self._providers if p not in priority])

        self._by_provider: dict[str, dict[str, CatalogModel]] = {p: {} for p in self._providers}
        for model in self._models:
            index = self._by_provider[model.provider]
            if model.id.lower() in index:
                raise ValueError(f"duplicate catalog model {model.key!r}")
            index[model.id.lower()] = model
        self._bare: dict[str, CatalogModel] = {}
        for provider in self._priority:
            for key, model in self._by_provider[provider].items():
                self._bare.setdefault(key, model)

        self._matchers: dict[str, list[tuple[Any, CatalogModel | None]]] = {p: [] for p in self._providers}
        for provider, entries in (matchers or {}).items():
            if provider not in self._by_provider:
                continue
            index = self._by_provider[provider]
            for clause, model_id in entries:
                model = index[model_id.lower()] if model_id is not None else None
                self._matchers[provider].append((clause, model))
        self._provider_match = {p: c for p, c in (provider_match or {}).items() if p in self._by_provider and c}
        self._provider_names: dict[str, str] = {p: p for p in self._providers}
        for alias, provider in (provider_aliases or {}).items():
            if provider in self._by_provider:
                self._provider_names.setdefault(alias.lower(), provider)
        self._fallback = {p: tuple(f for f in (fallback or {}).get(p, ()) if f in self._by_provider)
                          for p in self._providers}
        self._memo: dict[str, CatalogModel | None] = {}

    # ------------------------------------------------------------------ loading

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Catalog:
        """Build from the parsed `models.json` document."""
        header = doc["header"]
        descriptions = header.get("quality_sources", {})
        sources: dict[str, str] = {}
        models = []
        for raw in doc["models"]:
            src = raw["quality_source"]
            if src not in sources:
                sources[src] = f"{src}: {descriptions[src]}" if src in descriptions else src
            capabilities = frozenset(raw["capabilities"])
            if not capabilities <= _CAPABILITY_SET:
                raise ValueError(f"{raw['provider']}/{raw['id']}: unknown capabilities {sorted(capabilities)}")
            models.append(CatalogModel(
                id=raw["id"],
                provider=raw["provider"],
                name=raw["name"],
                context_window=raw["context_window"],
                max_output_tokens=raw["max_output_tokens"],
                input_per_mtok=raw["input_per_mtok"],
                output_per_mtok=raw["output_per_mtok"],
                cached_input_per_mtok=raw["cached_input_per_mtok"],
                tiers=tuple(PriceTier(**tier) for tier in raw["tiers"]),
                capabilities=capabilities,
                quality_tier=raw["quality_tier"],
                quality_source=sources[src],
            ))
        providers = header.get("providers", ())
        return cls(
            models,
            version={"schema": header.get("schema"), **header.get("sources", {})},
            provider_priority=header.get("provider_priority", ()),
            provider_aliases={alias: p["id"] for p in providers for alias in p.get("aliases", ())},
            fallback={p["id"]: p.get("fallback", ()) for p in providers},
            matchers={p: [(clause, model_id) for clause, model_id in entries]
                      for p, entries in doc.get("matchers", {}).items()},
            provider_match={p["id"]: p.get("model_match") for p in providers},
        )

    @classmethod
    def from_file(cls, path: str | Path) -> Catalog:
        return cls.from_dict(json.loads(Path(path).read_bytes()))

    # ------------------------------------------------------------------ queries

    def get(self, model_id: str) -> CatalogModel | None:
        key = model_id.lower()
        found = self._memo.get(key, _MISS)
        if found is _MISS:
            found = self._lookup(key)
            if len(self._memo) < _MEMO_LIMIT:
                self._memo[key] = found
        return found  # type: ignore[return-value]

    def all(self) -> list[CatalogModel]:
        """Every model, sorted by provider then id."""
        return list(self._models)

    def providers(self) -> list[str]:
        """Provider names that have models, sorted."""
        return list(self._providers)

    def by_provider(self, provider: str) -> list[CatalogModel]:
        name = self._provider_names.get(provider.lower())
        return [m for m in self._models if m.provider == name]

    def __len__(self) -> int:
        return len(self._models)

    def __iter__(self) -> Iterator[CatalogModel]:
        return iter(self._models)

    def __contains__(self, model_id: object) -> bool:
        return isinstance(model_id, str) and self.get(model_id) is not None

    def __repr__(self) -> str:
        return f"<Catalog {len(self._models)} models, {len(self._providers)} providers>"

    # ------------------------------------------------------------------ lookup internals

    def _lookup(self, key: str) -> CatalogModel | None:
        head, sep, rest = key.partition("/")
        if sep and (provider := self._provider_names.get(head)) is not None:
            if (found := self._by_provider[provider].get(rest)) is not None:
                return found
            found = self._match_at(provider, rest)
            if found is not None:
                return found if found is not _EXCLUDED else None
        if (found := self._bare.get(key)) is not None:
            return found
        for provider in self._priority:
            clause = self._provider_match.get(provider)
            if clause is not None and _clause_matches(clause, key):
                found = self._match_at(provider, key)
                if found is not None:
                    return found if found is not _EXCLUDED else None
        return None

    def _match_at(self, provider: str, key: str) -> Any:
        """genai-prices' Provider.find_model: the first matching model of the provider, then of its
        fallbacks; if none, the same with a compact date made dashed. A model, _EXCLUDED or None."""
        found = self._first_match(provider, key)
        if found is None and (dashed := _dashed_dates(key)) != key:
            found = self._first_match(provider, dashed)
        return found

    def _first_match(self, provider: str, ref: str) -> Any:
        for candidate in (provider, *self._fallback[provider]):
            for clause, model in self._matchers[candidate]:
                if _clause_matches(clause, ref):
                    return model if model is not None else _EXCLUDED
        return None


_EXCLUDED = object()


@functools.cache
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _clause_matches(clause: Any, text: str) -> bool:
    op = clause[0]
    if op == "eq":
        return text == clause[1]
    if op == "sw":
        return text.startswith(clause[1])
    if op == "in":
        return clause[1] in text
    if op == "ew":
        return text.endswith(clause[1])
    if op == "re":
        return _regex(clause[1]).search(text) is not None
    if op == "or":
        return any(_clause_matches(sub, text) for sub in clause[1:])
    if op == "and":
        return all(_clause_matches(sub, text) for sub in clause[1:])
    raise ValueError(f"unknown match clause {op!r}")


def _dashed_dates(key: str) -> str:
    """"gpt-5.2-20251211" -> "gpt-5.2-2025-12-11" (as genai-prices retries LiteLLM/OpenRouter refs)."""
    def dashed(m: re.Match[str]) -> str:
        try:
            date(int(m[1]), int(m[2]), int(m[3]))
        except ValueError:
            return m[0]
        return f"-{m[1]}-{m[2]}-{m[3]}"

    return _COMPACT_DATE.sub(dashed, key)


_catalog: Catalog | None = None
_catalog_lock = threading.Lock()


def load_catalog() -> Catalog:
    """The packaged catalog, parsed on first call and shared afterwards."""
    global _catalog
    if _catalog is None:
        with _catalog_lock:
            if _catalog is None:
                raw = resources.files(__name__).joinpath(_DATA_FILE).read_bytes()
                _catalog = Catalog.from_dict(json.loads(raw))
    return _catalog
