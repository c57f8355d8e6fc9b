"""Typed access to resources in the store.

Keys are `/megarouter/v1/<collection>/<name>`; values are the pydantic
model's JSON. This is the only module that knows the key layout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

import orjson
from pydantic import BaseModel

from controlplane.store import KeyValue, Store
from megarouter.resources import ApiKey, Budget, Defaults, Endpoint, Model, OrgNode, Provider, Route

ROOT = "/megarouter/v1/"

R = TypeVar("R", bound=BaseModel)


@dataclass(frozen=True)
class Collection(Generic[R]):
    """One kind of resource and where it lives in the store."""

    name: str          # plural, used in keys and messages: "providers"
    kind: str          # singular, used in messages: "provider"
    model: type[R]

    @property
    def prefix(self) -> str:
        return f"{ROOT}{self.name}/"

    def key(self, name: str) -> str:
        return self.prefix + name

    def decode(self, kv: KeyValue) -> R:
        return self.model.model_validate_json(kv.value)

    @staticmethod
    def encode(resource: BaseModel) -> bytes:
        return orjson.dumps(resource.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)


PROVIDERS = Collection("providers", "provider", Provider)
MODELS = Collection("models", "model", Model)
ENDPOINTS = Collection("endpoints", "endpoint", Endpoint)
ROUTES = Collection("routes", "route", Route)
API_KEYS = Collection("apikeys", "API key", ApiKey)
NODES = Collection("nodes", "node", OrgNode)
BUDGETS = Collection("budgets", "budget", Budget)
# A singleton: the one resource is stored under the name "defaults".
SETTINGS = Collection("settings", "settings", Defaults)
DEFAULTS_KEY = SETTINGS.key("defaults")
# The configuration guard: every admin write commits together with a rewrite of this key,
# on the condition that it has not moved since the writer read the configuration. Checks
# that span keys (references, unique secrets) thereby hold across control-plane replicas, and
# its mod_revision is the revision of the newest configuration change, deletes included.
CONFIG_GUARD_KEY = SETTINGS.key("guard")

COLLECTIONS = (PROVIDERS, MODELS, ENDPOINTS, ROUTES, API_KEYS, NODES, BUDGETS)


@dataclass(frozen=True)
class StoreContents:
    """Every resource at one store revision."""

    revision: int
    # The newest configuration change (any write under ROOT; the guard's for deletes): what
    # every control-plane replica reading the same configuration agrees on, unlike
    # `revision`, which moves with every write to the store (ledger, usage, replicas' shares).
    config_revision: int
    config_guard: int  # CONFIG_GUARD_KEY's mod_revision (0: never written)
    providers: dict[str, Provider]
    models: dict[str, Model]
    endpoints: dict[str, Endpoint]
    routes: dict[str, Route]
    api_keys: dict[str, ApiKey]
    defaults: Defaults
    nodes: dict[str, OrgNode]
    budgets: dict[str, Budget]


async def read_all(store: Store) -> StoreContents:
    """All resources, read in one list call so they share a revision."""
    items, revision = await store.list(ROOT)
    buckets: dict[str, dict] = {c.name: {} for c in COLLECTIONS}
    by_prefix = {c.prefix: c for c in COLLECTIONS}
    defaults = Defaults()
    config_revision = config_guard = 0
    for kv in items:
        config_revision = max(config_revision, kv.mod_revision)
        if kv.key == CONFIG_GUARD_KEY:
            config_guard = kv.mod_revision
            continue
        if kv.key == DEFAULTS_KEY:
            defaults = SETTINGS.decode(kv)
            continue
        collection = by_prefix.get(kv.key[: kv.key.find("/", len(ROOT)) + 1])
        if collection is None:
            continue  # a key written by a newer version; ignore rather than fail
        resource = collection.decode(kv)
        buckets[collection.name][resource.name] = resource
    return StoreContents(
        revision=revision,
        config_revision=config_revision,
        config_guard=config_guard,
        providers=buckets["providers"],
        models=buckets["models"],
        endpoints=buckets["endpoints"],
        routes=buckets["routes"],
        api_keys=buckets["apikeys"],
        defaults=defaults,
        nodes=buckets["nodes"],
        budgets=buckets["budgets"],
    )
