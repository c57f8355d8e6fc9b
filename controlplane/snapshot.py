"""Snapshot compiler: store contents -> one immutable RoutingTable.

The table is versioned by the revision of the newest configuration change
(`StoreContents.config_revision`), so a version names exactly one state of the
configuration, and every control-plane replica gives that state the same
version whatever else was written to the store meanwhile. Only what proxies need goes
in: key hashes (not keys), credential references (not secrets).
"""

from __future__ import annotations

import asyncio
import time

from controlplane.catalog_models import effective_models
from controlplane.discovery import SnapshotCache
from controlplane.repository import ROOT, StoreContents, read_all
from controlplane.store import Store
from megarouter.resources import (
    PROTO_TYPES,
    Endpoint,
    Model,
    resource_to_proto,
    strategy_enum,
)
from megarouter.v1 import routing_pb2

# Longest pause between two compiles (pushes stay well within a second).
MAX_COMPILE_PAUSE_S = 0.5


def compile_table(contents: StoreContents) -> routing_pb2.RoutingTable:
    table = routing_pb2.RoutingTable(
        version=contents.config_revision,
        generated_at_unix_ms=int(time.time() * 1000),
        defaults=resource_to_proto(contents.defaults, routing_pb2.Defaults),
    )
    for provider in _sorted(contents.providers):
        table.providers.append(resource_to_proto(provider, PROTO_TYPES[type(provider)]))
    for model in _referenced_models(contents):
        table.models.append(resource_to_proto(model, PROTO_TYPES[type(model)]))
    for endpoint in _sorted(contents.endpoints):
        table.endpoints.append(_endpoint(endpoint, contents))
    for route in _sorted(contents.routes):
        table.routes.append(resource_to_proto(route, PROTO_TYPES[type(route)]))
    for key in _sorted(contents.api_keys):
        table.api_keys.append(
            routing_pb2.ApiKeyEntry(
                key_hash=key.key_hash,
                name=key.name,
                principal=key.principal,
                allowed_models=key.allowed_models,
                default_strategy=strategy_enum(key.default_strategy),
                node=key.node,
                expires_at_unix_ms=key.expires_at_unix_ms,
                tasks=key.tasks,
            )
        )
    for node in _sorted(contents.nodes):
        table.nodes.append(routing_pb2.OrgNode(name=node.name, parent=node.parent, kind=node.kind,
                                               default_strategy=strategy_enum(node.default_strategy)))
    for budget in _sorted(contents.budgets):
        table.budgets.append(resource_to_proto(budget, routing_pb2.Budget))
    return table


def _referenced_models(contents: StoreContents) -> list[Model]:
    """Admin-managed models, plus the catalog models endpoints or routes use."""
    models = effective_models(contents)
    names = set(contents.models)
    names.update(endpoint.model for endpoint in contents.endpoints.values())
    names.update(model for route in contents.routes.values() for model in route.models)
    return [models[name] for name in sorted(names) if name in models]


def _endpoint(endpoint: Endpoint, contents: StoreContents) -> routing_pb2.Endpoint:
    # Resolve the defaults here so proxies never have to.
    provider = contents.providers[endpoint.provider]
    return routing_pb2.Endpoint(
        name=endpoint.name,
        model=endpoint.model,
        provider=endpoint.provider,
        upstream_model=endpoint.upstream_model or endpoint.model,
        region=endpoint.region or provider.region,
        weight=endpoint.weight,
    )


def _sorted(resources: dict) -> list:
    return [resources[name] for name in sorted(resources)]


async def follow_store(store: Store, snapshots: SnapshotCache) -> None:
    """Publish a fresh table whenever the store changes.

    Bursts coalesce: each compile reads the latest state, events at or below
    the compiled revision are then skipped, and after a compile the next one
    waits as long as this one took — so with a large configuration (a
    10,000-node org tree) compiling takes at most half the process's time
    and admin writes keep flowing, while a small one is pushed at once.
    """
    loop = asyncio.get_running_loop()
    contents = await read_all(store)
    await snapshots.publish(compile_table(contents))
    compiled = contents.revision
    async for event in store.watch(ROOT, compiled + 1):
        if event.revision <= compiled:
            continue
        started = loop.time()
        contents = await read_all(store)
        await snapshots.publish(compile_table(contents))
        compiled = contents.revision
        await asyncio.sleep(min(MAX_COMPILE_PAUSE_S, loop.time() - started))
