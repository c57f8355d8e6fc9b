"""The Admin gRPC service: validated CRUD over the store.

Every write is validated by the pydantic resource model (INVALID_ARGUMENT
naming the field), checked for dangling references (FAILED_PRECONDITION)
and written with compare-and-swap, under one lock so the reference check
and the write see the same state.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from typing import Any, NoReturn

import grpc
from pydantic import BaseModel, ValidationError

from controlplane.catalog_models import catalog_models, effective_models
from controlplane.discovery import ProxyRegistry, SnapshotCache
from controlplane.references import blocking_references, missing_references
from controlplane.repository import (
    API_KEYS,
    DEFAULTS_KEY,
    ENDPOINTS,
    MODELS,
    NODES,
    PROVIDERS,
    ROUTES,
    SETTINGS,
    Collection,
    read_all,
)
from controlplane.store import CasConflict, Store
from megarouter.resources import (
    PROTO_TYPES,
    ApiKey,
    CreateApiKey,
    Defaults,
    Model,
    api_key_public,
    proto_to_dict,
    resource_to_proto,
)
from megarouter.v1 import admin_pb2, admin_pb2_grpc, discovery_pb2, routing_pb2

API_KEY_PREFIX = "sk-mr-"


def validation_message(kind: str, error: ValidationError) -> str:
    """'invalid provider: base_url: must be ...' — one clause per bad field."""
    clauses = []
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"]) or "(body)"
        message = item["msg"].removeprefix("Value error, ")
        clauses.append(f"{field}: {message}")
    return f"invalid {kind}: " + "; ".join(clauses)


async def _abort(context: grpc.aio.ServicerContext, code: grpc.StatusCode, message: str) -> NoReturn:
    await context.abort(code, message)
    raise AssertionError("unreachable")  # context.abort always raises


async def _validate(
    model: type[BaseModel], kind: str, data: dict[str, Any], context: grpc.aio.ServicerContext
) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as error:
        await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, validation_message(kind, error))


def _crud(collection: Collection, list_response: type):
    """Put/Get/List/Delete handlers for one collection."""
    proto_type = PROTO_TYPES[collection.model]

    async def put(self: AdminService, request, context):
        resource = await _validate(collection.model, collection.kind, proto_to_dict(request), context)
        return await self.put_resource(collection, resource, context)

    async def get(self: AdminService, request, context):
        resource = await self.get_resource(collection, request.name, context)
        return resource_to_proto(resource, proto_type)

    async def list_(self: AdminService, request, context):
        items, revision = await self.store.list(collection.prefix)
        return list_response(
            items=[resource_to_proto(collection.decode(kv), proto_type) for kv in items],
            revision=revision,
        )

    async def delete(self: AdminService, request, context):
        return await self.delete_resource(collection, request.name, context)

    return put, get, list_, delete


class AdminService(admin_pb2_grpc.AdminServicer):
    def __init__(self, store: Store, snapshots: SnapshotCache, registry: ProxyRegistry) -> None:
        self.store = store
        self._snapshots = snapshots
        self._registry = registry
        # Serialises reference checks with writes. One control plane owns an
        # embedded store; a replicated one will need a store transaction.
        self._write_lock = asyncio.Lock()

    # ------------------------------------------------------------ generic

    async def put_resource(self, collection: Collection, resource: BaseModel, context) -> admin_pb2.PutResponse:
        async with self._write_lock:
            contents = await read_all(self.store)
            problems = missing_references(resource, contents)
            if problems:
                await _abort(context, grpc.StatusCode.FAILED_PRECONDITION, "; ".join(problems))
            key = collection.key(resource.name)
            existing = await self.store.get(key)
            encoded = collection.encode(resource)
            if existing is not None and existing.value == encoded:
                return admin_pb2.PutResponse(revision=contents.revision, created=False, changed=False)
            revision = await self._write(key, encoded, existing.mod_revision if existing else 0, context)
            return admin_pb2.PutResponse(revision=revision, created=existing is None, changed=True)

    async def get_resource(self, collection: Collection, name: str, context) -> Any:
        kv = await self.store.get(collection.key(name)) if name else None
        if kv is None:
            await _abort(context, grpc.StatusCode.NOT_FOUND, f"{collection.kind} {name!r} not found")
        return collection.decode(kv)

    async def delete_resource(self, collection: Collection, name: str, context) -> admin_pb2.DeleteResponse:
        async with self._write_lock:
            contents = await read_all(self.store)
            users = blocking_references(collection.name, name, contents)
            if users:
                await _abort(
                    context,
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"{collection.kind} {name!r} is still used by " + ", ".join(users),
                )
            revision = await self.store.delete(collection.key(name)) if name else None
            if revision is None:
                await _abort(context, grpc.StatusCode.NOT_FOUND, f"{collection.kind} {name!r} not found")
            return admin_pb2.DeleteResponse(revision=revision)

    async def _write(self, key: str, value: bytes, expected_revision: int, context) -> int:
        try:
            return await self.store.put(key, value, expected_revision=expected_revision)
        except CasConflict:
            # Only reachable if something outside this lock wrote the key.
            await _abort(context, grpc.StatusCode.ABORTED, f"{key} changed concurrently; retry")

    # ---------------------------------------------------------- resources

    PutProvider, GetProvider, ListProviders, DeleteProvider = _crud(
        PROVIDERS, admin_pb2.ListProvidersResponse
    )
    PutModel, _GetStoredModel, _ListStoredModels, DeleteModel = _crud(MODELS, admin_pb2.ListModelsResponse)

    # Models are the built-in catalog overlaid by admin-managed ones.
    async def GetModel(self, request, context):
        stored = await self.store.get(MODELS.key(request.name)) if request.name else None
        if stored is not None:
            return _model_proto(MODELS.decode(stored), "admin")
        model = catalog_models().get(request.name)
        if model is None:
            await _abort(context, grpc.StatusCode.NOT_FOUND, f"model {request.name!r} not found")
        return _model_proto(model, "catalog")

    async def ListModels(self, request, context):
        contents = await read_all(self.store)
        items = [_model_proto(model, "admin" if name in contents.models else "catalog")
                 for name, model in sorted(effective_models(contents).items())]
        return admin_pb2.ListModelsResponse(items=items, revision=contents.revision)
    PutEndpoint, GetEndpoint, ListEndpoints, DeleteEndpoint = _crud(
        ENDPOINTS, admin_pb2.ListEndpointsResponse
    )
    PutRoute, GetRoute, ListRoutes, DeleteRoute = _crud(ROUTES, admin_pb2.ListRoutesResponse)
    PutNode, GetNode, ListNodes, DeleteNode = _crud(NODES, admin_pb2.ListNodesResponse)

    # ----------------------------------------------------------- API keys

    async def CreateApiKey(self, request, context):
        spec: CreateApiKey = await _validate(CreateApiKey, "API key", proto_to_dict(request), context)
        secret = spec.secret or API_KEY_PREFIX + secrets.token_urlsafe(32)
        key_hash = hashlib.sha256(secret.encode()).hexdigest()
        stored = ApiKey(
            name=spec.name,
            key_hash=key_hash,
            prefix=secret[: len(API_KEY_PREFIX) + 4],
            principal=spec.principal or f"key:{spec.name}",
            allowed_models=spec.allowed_models,
            created_at_unix_ms=int(time.time() * 1000),
            default_strategy=spec.default_strategy,
            node=spec.node,
            expires_at_unix_ms=spec.expires_at_unix_ms,
            metadata=spec.metadata,
        )
        async with self._write_lock:
            contents = await read_all(self.store)
            if spec.name in contents.api_keys:
                await _abort(context, grpc.StatusCode.ALREADY_EXISTS, f"API key {spec.name!r} already exists")
            if any(k.key_hash == key_hash for k in contents.api_keys.values()):
                await _abort(context, grpc.StatusCode.ALREADY_EXISTS, "that secret is already in use by another key")
            problems = missing_references(stored, contents)
            if problems:
                await _abort(context, grpc.StatusCode.FAILED_PRECONDITION, "; ".join(problems))
            revision = await self._write(API_KEYS.key(spec.name), API_KEYS.encode(stored), 0, context)
        return admin_pb2.CreateApiKeyResponse(key=api_key_public(stored), secret=secret, revision=revision)

    async def GetApiKey(self, request, context):
        return api_key_public(await self.get_resource(API_KEYS, request.name, context))

    async def ListApiKeys(self, request, context):
        items, revision = await self.store.list(API_KEYS.prefix)
        return admin_pb2.ListApiKeysResponse(
            items=[api_key_public(API_KEYS.decode(kv)) for kv in items], revision=revision
        )

    async def DeleteApiKey(self, request, context):
        return await self.delete_resource(API_KEYS, request.name, context)

    # ----------------------------------------------------------- defaults

    async def GetDefaults(self, request, context):
        stored = await self.store.get(DEFAULTS_KEY)
        return resource_to_proto(SETTINGS.decode(stored) if stored else Defaults(), routing_pb2.Defaults)

    async def PutDefaults(self, request, context):
        defaults = await _validate(Defaults, "defaults", proto_to_dict(request), context)
        async with self._write_lock:
            existing = await self.store.get(DEFAULTS_KEY)
            encoded = SETTINGS.encode(defaults)
            if existing is not None and existing.value == encoded:
                return admin_pb2.PutResponse(revision=await self.store.revision(), created=False, changed=False)
            revision = await self._write(DEFAULTS_KEY, encoded, existing.mod_revision if existing else 0, context)
            return admin_pb2.PutResponse(revision=revision, created=existing is None, changed=True)

    # ------------------------------------------------------------ fleet

    async def ListProxies(self, request, context):
        current = self._snapshots.current
        return admin_pb2.ListProxiesResponse(
            proxies=self._registry.statuses(),
            current_version=current.version if current is not None else 0,
        )

    async def GetFleetHealth(self, request, context):
        return self._snapshots.fleet_health or discovery_pb2.FleetHealth()

    async def GetRoutingTable(self, request, context):
        current = self._snapshots.current
        if current is None:
            await _abort(context, grpc.StatusCode.UNAVAILABLE, "no routing table compiled yet")
        return current


def _model_proto(model: Model, source: str) -> routing_pb2.Model:
    message = resource_to_proto(model, routing_pb2.Model)
    message.source = source
    return message


class TestHooksService(admin_pb2_grpc.TestHooksServicer):
    """Pushes arbitrary tables; registered only with --enable-test-hooks."""

    def __init__(self, snapshots: SnapshotCache, registry: ProxyRegistry) -> None:
        self._snapshots = snapshots
        self._registry = registry

    async def PushRawTable(self, request: routing_pb2.RoutingTable, context):
        await self._snapshots.publish(request)
        return admin_pb2.PushRawTableResponse(proxies=len(self._registry.statuses()))
