"""The routing table as the proxy uses it on the request path.

`RuntimeTable.load` turns a pushed `RoutingTable` proto into plain, frozen
objects with every lookup precomputed, or raises `TableError` — which the
discovery client turns into a NACK, keeping the previous table. Provider
secrets are resolved here from their references (environment variable or
file) and live only in this process's memory.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass

from dataplane.failover.policy import DEFAULT_POLICY, FailoverPolicy
from dataplane.providers import Adapter, adapter_for
from dataplane.providers.base import RequestSigner
from megarouter.catalog import PriceTier, Pricing
from megarouter.resources import DEFAULT_PROVIDER_TIMEOUT_S
from megarouter.v1 import routing_pb2

log = logging.getLogger("megarouter.proxy.table")

_KEY_HASH = re.compile(r"[0-9a-f]{64}")


class TableError(ValueError):
    """The table cannot be served; the message says why."""


@dataclass(frozen=True, slots=True)
class ProviderRuntime:
    name: str
    kind: str
    adapter: Adapter
    base_url: str
    region: str
    headers: dict[str, str]     # static + auth headers, ready to send
    options: dict[str, str]     # adapter-specific settings
    timeout_s: float
    unusable_reason: str        # non-empty: e.g. its secret is missing here
    # Signs each request when auth depends on the request itself (Bedrock's SigV4); None
    # when the static headers above authenticate.
    signer: RequestSigner | None = None


@dataclass(frozen=True, slots=True)
class EndpointRuntime:
    name: str
    model: str
    upstream_model: str
    region: str
    provider: ProviderRuntime
    chat_url: str
    chat_stream_url: str
    embeddings: bool            # the model is an embeddings model
    native_completions: bool    # the model serves /v1/completions itself
    pricing: Pricing
    capabilities: frozenset[str]   # of the model: tools, vision, json_mode, streaming, reasoning, ...
    context_window: int
    max_output_tokens: int
    quality_tier: int           # 0 = unrated


@dataclass(frozen=True, slots=True)
class Weights:
    """Balanced-strategy weights, normalised to sum to 1."""

    cost: float = 0.3
    latency: float = 0.3
    quality: float = 0.2
    availability: float = 0.2

    @classmethod
    def from_proto(cls, weights: routing_pb2.BalancedWeights) -> Weights | None:
        total = weights.cost + weights.latency + weights.quality + weights.availability
        if total <= 0:
            return None
        return cls(weights.cost / total, weights.latency / total, weights.quality / total,
                   weights.availability / total)


DEFAULT_WEIGHTS = Weights()


@dataclass(frozen=True, slots=True)
class Target:
    """What a request's `model` resolved to: candidates by tier, and limits.

    A route's tiers are its degradation path; a model id is one tier of its
    endpoints. Strategies order candidates within a tier; tiers keep their
    order, so the last tier stays the fallback.
    """

    name: str
    kind: str                   # "route" or "model"
    tiers: tuple[tuple[EndpointRuntime, ...], ...]
    policy: FailoverPolicy = DEFAULT_POLICY
    strategy: str = ""          # "" = not set here
    quality_floor: int = 0
    weights: Weights | None = None
    allowed_regions: frozenset[str] | None = None
    prefer_local_region: bool = False
    # Cost strategy: keep at least this share of the flagship's quality (0 = not set; a route's
    # setting, model ids have none). A request's x-megarouter-quality-target overrides it.
    cost_quality_target: float = 0.0
    cascade: bool = False             # cost_mode: cascade (cost strategy, non-streaming requests)

    @property
    def endpoints(self) -> tuple[EndpointRuntime, ...]:
        return tuple(endpoint for tier in self.tiers for endpoint in tier)

    def tier_of(self, endpoint: EndpointRuntime) -> int:
        for index, tier in enumerate(self.tiers):
            if endpoint in tier:
                return index
        return 0


@dataclass(frozen=True, slots=True)
class KeyInfo:
    name: str
    principal: str
    allowed: frozenset[str] | None   # None: every route and model
    default_strategy: str = ""       # the key's, else its nearest node's; "" = neither sets one
    nodes: tuple[str, ...] = ()      # the key's node and its ancestors, nearest first
    expires_at_unix_ms: int = 0      # 0: never
    tasks: frozenset[str] = frozenset()  # x-megarouter-task values it may set

    def may_use(self, target: str) -> bool:
        return self.allowed is None or target in self.allowed


SecretReader = Callable[[routing_pb2.CredentialRef], str | None]


def read_secret(ref: routing_pb2.CredentialRef) -> str | None:
    """The secret a reference points at, or None if it is not available here."""
    source = ref.WhichOneof("source")
    if source == "env":
        return os.environ.get(ref.env) or None
    if source == "file":
        try:
            with open(ref.file, encoding="utf-8") as handle:
                return handle.read().strip() or None
        except OSError:
            return None
    return None


@dataclass(frozen=True)
class RuntimeTable:
    version: int
    keys: dict[str, KeyInfo]            # sha256 hex of the secret -> key
    targets: dict[str, Target]          # route names and model names
    route_names: tuple[str, ...]
    model_names: tuple[str, ...]
    proto: routing_pb2.RoutingTable
    default_strategy: str = "balanced"
    default_weights: Weights = DEFAULT_WEIGHTS

    def resolve(self, name: str) -> Target | None:
        return self.targets.get(name)

    @classmethod
    def load(cls, table: routing_pb2.RoutingTable, secrets: SecretReader = read_secret) -> RuntimeTable:
        if table.version <= 0:
            # Every compiled table has the revision of a configuration change; version 0 is what an
            # empty or truncated file parses as. Serving it would answer every request with a 401.
            raise TableError("table version 0 is not a table (empty or truncated?)")
        providers = _load_providers(table, secrets)
        models = _unique(table.models, "model")
        pricings = {name: _pricing(model) for name, model in models.items()}
        endpoints_by_model: dict[str, list[EndpointRuntime]] = {name: [] for name in models}
        for endpoint in _unique(table.endpoints, "endpoint").values():
            provider = providers.get(endpoint.provider)
            if provider is None:
                raise TableError(f"endpoint {endpoint.name!r} names unknown provider {endpoint.provider!r}")
            if endpoint.model not in models:
                raise TableError(f"endpoint {endpoint.name!r} names unknown model {endpoint.model!r}")
            if provider.unusable_reason:
                continue
            upstream = endpoint.upstream_model or endpoint.model
            capabilities = models[endpoint.model].capabilities
            endpoints_by_model[endpoint.model].append(
                EndpointRuntime(
                    name=endpoint.name,
                    model=endpoint.model,
                    upstream_model=upstream,
                    region=endpoint.region or provider.region,
                    provider=provider,
                    chat_url=provider.adapter.chat_url(provider.base_url, provider.options, upstream, False),
                    chat_stream_url=provider.adapter.chat_url(provider.base_url, provider.options, upstream, True),
                    embeddings=capabilities.embeddings and provider.adapter.supports_embeddings,
                    native_completions=capabilities.completions and provider.adapter.supports_completions,
                    pricing=pricings[endpoint.model],
                    capabilities=frozenset(
                        field.name for field, on in capabilities.ListFields() if on is True
                    ),
                    context_window=models[endpoint.model].context_window,
                    max_output_tokens=models[endpoint.model].max_output_tokens,
                    quality_tier=models[endpoint.model].quality_tier,
                )
            )

        targets: dict[str, Target] = {}
        for name, eps in endpoints_by_model.items():
            targets[name] = Target(
                name=name,
                kind="model",
                tiers=(tuple(eps),),
            )
        routes = _unique(table.routes, "route")
        for name, route in routes.items():
            if name in models:
                raise TableError(f"route {name!r} has the same name as a model")
            if not route.tiers:
                raise TableError(f"route {name!r} has an empty degradation path")
            if route.cost_mode not in ("", "cascade"):
                raise TableError(f"route {name!r} has cost_mode {route.cost_mode!r}; expected '' or 'cascade'")
            if not 0 <= route.cost_quality_target <= 1:  # NaN fails
                raise TableError(f"route {name!r} has cost_quality_target {route.cost_quality_target!r}; "
                                 "expected 0 (not set) or a number in (0, 1]")
            tiers: list[tuple[EndpointRuntime, ...]] = []
            for tier in route.tiers:
                members: list[EndpointRuntime] = []
                for model in tier.models:
                    if model not in models:
                        raise TableError(f"route {name!r} names unknown model {model!r}")
                    members.extend(endpoints_by_model[model])
                tiers.append(tuple(members))
            targets[name] = Target(
                name=name,
                kind="route",
                tiers=tuple(tiers),
                policy=FailoverPolicy.from_proto(route.retry),
                strategy=strategy_name(route.strategy),
                quality_floor=route.quality_floor,
                weights=Weights.from_proto(route.weights),
                allowed_regions=frozenset(route.allowed_regions) or None,
                prefer_local_region=route.prefer_local_region,
                cost_quality_target=route.cost_quality_target,
                cascade=route.cost_mode == "cascade",
            )

        chains = _node_chains(table)
        node_strategies = {node.name: strategy_name(node.default_strategy) for node in table.nodes
                           if node.default_strategy}
        keys: dict[str, KeyInfo] = {}
        for entry in table.api_keys:
            if not _KEY_HASH.fullmatch(entry.key_hash):
                raise TableError(f"API key {entry.name!r} has a malformed hash")
            if entry.node and entry.node not in chains:
                raise TableError(f"API key {entry.name!r} names unknown node {entry.node!r}")
            allowed = frozenset(entry.allowed_models) if entry.allowed_models else None
            chain = chains.get(entry.node, ())
            strategy = strategy_name(entry.default_strategy) or next(
                (node_strategies[node] for node in chain if node in node_strategies), "")
            keys[entry.key_hash] = KeyInfo(entry.name, entry.principal, allowed, strategy, chain,
                                           entry.expires_at_unix_ms, frozenset(entry.tasks))

        return cls(
            version=table.version,
            keys=keys,
            targets=targets,
            route_names=tuple(sorted(routes)),
            model_names=tuple(sorted(models)),
            proto=table,
            default_strategy=strategy_name(table.defaults.strategy) or "balanced",
            default_weights=Weights.from_proto(table.defaults.weights) or DEFAULT_WEIGHTS,
        )


def _load_providers(table: routing_pb2.RoutingTable, secrets: SecretReader) -> dict[str, ProviderRuntime]:
    providers: dict[str, ProviderRuntime] = {}
    for name, provider in _unique(table.providers, "provider").items():
        kind = routing_pb2.ProviderKind.Name(provider.kind).removeprefix("PROVIDER_KIND_").lower()
        adapter = adapter_for(kind, provider.preset, provider.options)
        if adapter is None:
            what = f"preset {provider.preset!r}" if provider.preset else f"kind {kind!r}"
            raise TableError(f"provider {name!r} has {what}, which this proxy cannot serve")
        if not provider.base_url.startswith(("http://", "https://")):
            raise TableError(f"provider {name!r} has an invalid base_url")
        unusable = ""
        secret = None
        if provider.HasField("credential"):
            secret = secrets(provider.credential)
            if secret is None:
                where = provider.credential.env or provider.credential.file
                unusable = f"credential {where!r} is not available on this proxy"
                # The reference is named, never the secret.
                log.warning("provider %s skipped: %s", name, unusable)
        make_signer = getattr(adapter, "request_signer", None)
        base_url = provider.base_url.rstrip("/")
        providers[name] = ProviderRuntime(
            name=name,
            kind=kind,
            adapter=adapter,
            base_url=base_url,
            region=provider.region,
            headers={**provider.headers, **adapter.auth_headers(secret), "Content-Type": "application/json"},
            options=dict(provider.options),
            timeout_s=provider.timeout_s or DEFAULT_PROVIDER_TIMEOUT_S,
            unusable_reason=unusable,
            signer=make_signer(name, base_url, provider.options, secret) if make_signer is not None else None,
        )
    return providers


def _node_chains(table: routing_pb2.RoutingTable) -> dict[str, tuple[str, ...]]:
    """Each org node's path to its root, nearest first; each node walked once."""
    parents = {node.name: node.parent for node in _unique(table.nodes, "node").values()}
    chains: dict[str, tuple[str, ...]] = {}
    for name in parents:
        path: list[str] = []
        current = name
        while current not in chains:
            if current in path:
                raise TableError(f"node {current!r} is part of a cycle")
            path.append(current)
            parent = parents[current]
            if not parent:
                base: tuple[str, ...] = ()
                break
            if parent not in parents:
                raise TableError(f"node {current!r} names unknown parent {parent!r}")
            current = parent
        else:
            base = chains[current]
        for node in reversed(path):
            base = (node, *base)
            chains[node] = base
    return chains


def strategy_name(value: int) -> str:
    """'cost', 'latency', ... for a Strategy enum value; '' when unspecified."""
    try:
        name = routing_pb2.Strategy.Name(value).removeprefix("STRATEGY_").lower()
    except ValueError:
        raise TableError(f"unknown strategy value {value}") from None
    return "" if name == "unspecified" else name


def _pricing(model: routing_pb2.Model) -> Pricing:
    def tier(threshold: int, source) -> PriceTier:
        cached = source.cached_input_price_per_mtok if source.HasField("cached_input_price_per_mtok") else None
        return PriceTier(threshold, source.input_price_per_mtok, source.output_price_per_mtok, cached)

    return Pricing(tier(0, model), tuple(tier(t.min_prompt_tokens, t) for t in model.price_tiers))


def _unique(items, what: str) -> dict:
    out = {}
    for item in items:
        if not item.name:
            raise TableError(f"a {what} has no name")
        if item.name in out:
            raise TableError(f"duplicate {what} {item.name!r}")
        out[item.name] = item
    return out
