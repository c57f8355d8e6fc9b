"""The Admin gRPC service: validated CRUD over the store.

Every write is validated by the pydantic resource model (INVALID_ARGUMENT
naming the field), checked for dangling references (FAILED_PRECONDITION)
and written with compare-and-swap, under one lock so the reference check
and the write see the same state.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import grpc
from pydantic import BaseModel, ValidationError

from controlplane import identity, rbac, usage
from controlplane.budgets import BudgetLedger
from controlplane.catalog_models import catalog_models, effective_models
from controlplane.discovery import ProxyRegistry, SnapshotCache, fleet_proxies
from controlplane.people import PeopleAdmin, SessionPolicy
from controlplane.references import blocking_references, missing_references
from controlplane.replicas import ReplicaSet
from controlplane.repository import (
    API_KEYS,
    BUDGETS,
    CONFIG_GUARD_KEY,
    DEFAULTS_KEY,
    ENDPOINTS,
    MODELS,
    NODES,
    PROVIDERS,
    ROUTES,
    SETTINGS,
    Collection,
    StoreContents,
    read_all,
)
from controlplane.store import CasConflict, Store
from megarouter.resources import (
    NAME_PATTERN,
    PROTO_TYPES,
    ApiKey,
    Budget,
    CreateApiKey,
    Defaults,
    Model,
    OrgNode,
    api_key_public,
    proto_to_dict,
    resource_to_proto,
    validation_message,
)
from megarouter.v1 import admin_pb2, admin_pb2_grpc, discovery_pb2, routing_pb2

API_KEY_PREFIX = "sk-mr-"
# Rounds of "another replica changed the configuration meanwhile" before a write gives up.
_GUARDED_ATTEMPTS = 8
T = TypeVar("T")
# Checks a write against the state it commits on and the resource it replaces (None: new).
Authorize = Callable[[StoreContents, Any], Awaitable[None]]


class _ConfigChanged(Exception):
    """A guarded commit lost to a concurrent configuration change: read and check again."""


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


class AdminService(PeopleAdmin, admin_pb2_grpc.AdminServicer):
    def __init__(self, store: Store, snapshots: SnapshotCache, registry: ProxyRegistry,
                 ledger: BudgetLedger | None = None, replicas: ReplicaSet | None = None, *,
                 sso: identity.SsoSettings | None = None, session_policy: SessionPolicy | None = None) -> None:
        self.store = store
        self.sso = sso
        self.verifier = identity.IdTokenVerifier(sso) if sso is not None else None
        self.session_policy = session_policy or SessionPolicy()
        self._replicas = replicas
        self._ledger = ledger or BudgetLedger(store)
        self._snapshots = snapshots
        self._registry = registry
        # Serialises this replica's writes; the configuration guard (see _commit) serialises
        # them with other replicas'.
        self._write_lock = asyncio.Lock()
        self._cache: StoreContents | None = None

    async def contents(self) -> StoreContents:
        """All configuration, cached: reread only when the configuration guard moved (another
        replica, or a write this one could not apply to its cache), so a large org tree does
        not cost every write a full read, and ledger or usage writes cost nothing."""
        guard = await self.store.get(CONFIG_GUARD_KEY)
        if self._cache is None or self._cache.config_guard != (guard.mod_revision if guard else 0):
            self._cache = await read_all(self.store)
        return self._cache

    async def _guarded(self, write: Callable[[], Awaitable[T]], context) -> T:
        """Run `write` (read contents, check, `_commit`) under the local lock, and again from
        the start when another replica changed the configuration between its read and its
        commit — so reference checks hold across replicas, not only within this one."""
        async with self._write_lock:
            for _ in range(_GUARDED_ATTEMPTS):
                try:
                    return await write()
                except _ConfigChanged:
                    self._cache = None
            await _abort(context, grpc.StatusCode.ABORTED, "the configuration kept changing concurrently; retry")

    async def _commit(self, contents: StoreContents, key: str, value: bytes | None, expected_revision: int) -> int:
        """Write (or delete, value None) one key if neither it nor any other configuration
        changed since `contents` was read, moving the guard; returns the revision. Only
        inside `_guarded`."""
        try:
            revision = await self.store.commit(
                [(CONFIG_GUARD_KEY, contents.config_guard), (key, expected_revision)],
                [(key, value), (CONFIG_GUARD_KEY, key.encode())],
            )
        except CasConflict as exc:
            raise _ConfigChanged from exc
        # Nothing else changed in between, so the cache plus this write is exact.
        self._cache = dataclasses.replace(contents, revision=revision, config_revision=revision, config_guard=revision)
        return revision

    def _remember(self, collection: Collection, name: str, resource: BaseModel | None) -> None:
        """Apply our own committed write to the cached contents."""
        attribute = _CONTENTS_ATTRIBUTES.get(collection.name)
        if self._cache is not None and attribute is not None:
            bucket = getattr(self._cache, attribute)
            if resource is None:
                bucket.pop(name, None)
            else:
                bucket[name] = resource

    # ------------------------------------------------------------ generic

    async def put_resource(self, collection: Collection, resource: BaseModel, context,
                           authorize: Authorize | None = None) -> admin_pb2.PutResponse:
        """Create or replace. `authorize(contents, existing)` runs inside the guarded write, on
        the same state the write commits against, with the resource it replaces (None: new)."""
        async def write() -> admin_pb2.PutResponse:
            contents = await self.contents()
            key = collection.key(resource.name)
            existing = await self.store.get(key)
            if authorize is not None:
                await authorize(contents, collection.decode(existing) if existing else None)
            problems = missing_references(resource, contents)
            if problems:
                await _abort(context, grpc.StatusCode.FAILED_PRECONDITION, "; ".join(problems))
            encoded = collection.encode(resource)
            if existing is not None and existing.value == encoded:
                return admin_pb2.PutResponse(revision=contents.config_revision, created=False, changed=False)
            revision = await self._commit(contents, key, encoded, existing.mod_revision if existing else 0)
            self._remember(collection, resource.name, resource)
            return admin_pb2.PutResponse(revision=revision, created=existing is None, changed=True)
        return await self._guarded(write, context)

    async def get_resource(self, collection: Collection, name: str, context) -> Any:
        kv = await self.store.get(collection.key(name)) if name else None
        if kv is None:
            await _abort(context, grpc.StatusCode.NOT_FOUND, f"{collection.kind} {name!r} not found")
        return collection.decode(kv)

    async def delete_resource(self, collection: Collection, name: str, context,
                              blocked_by: Callable[[], Awaitable[str]] | None = None,
                              authorize: Authorize | None = None) -> admin_pb2.DeleteResponse:
        """Delete unless something still uses it: `blocking_references`, or what `blocked_by`
        says; `authorize(contents, existing)` as for puts. All inside one guarded write."""
        async def write() -> admin_pb2.DeleteResponse:
            contents = await self.contents()
            key = collection.key(name)
            existing = await self.store.get(key) if name else None
            if existing is None:
                await _abort(context, grpc.StatusCode.NOT_FOUND, f"{collection.kind} {name!r} not found")
            if authorize is not None:
                await authorize(contents, collection.decode(existing))
            users = ", ".join(blocking_references(collection.name, name, contents))
            if not users and blocked_by is not None:
                users = await blocked_by()
            if users:
                await _abort(context, grpc.StatusCode.FAILED_PRECONDITION,
                             f"{collection.kind} {name!r} is still used by {users}")
            revision = await self._commit(contents, key, None, existing.mod_revision)
            self._remember(collection, name, None)
            return admin_pb2.DeleteResponse(revision=revision)
        return await self._guarded(write, context)

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
        contents = await self.contents()
        items = [_model_proto(model, "admin" if name in contents.models else "catalog")
                 for name, model in sorted(effective_models(contents).items())]
        return admin_pb2.ListModelsResponse(items=items, revision=contents.revision)
    PutEndpoint, GetEndpoint, ListEndpoints, DeleteEndpoint = _crud(
        ENDPOINTS, admin_pb2.ListEndpointsResponse
    )
    PutRoute, GetRoute, ListRoutes, DeleteRoute = _crud(ROUTES, admin_pb2.ListRoutesResponse)
    # ------------------------------------------------------- org tree (scoped)

    async def _parents(self) -> dict[str, str]:
        return {node.name: node.parent for node in (await self.contents()).nodes.values()}

    async def PutNode(self, request, context):
        node = await _validate(OrgNode, "node", proto_to_dict(request), context)

        async def authorize(contents: StoreContents, existing: OrgNode | None) -> None:
            before, after = rbac.node_change(node, existing, _parents_of(contents))
            await rbac.require_change(context, "nodes.write", before, after)
        return await self.put_resource(NODES, node, context, authorize)

    async def GetNode(self, request, context):
        node = await self.get_resource(NODES, request.name, context)
        await rbac.require(context, "nodes.read", rbac.node_chain(node.name, await self._parents()))
        return resource_to_proto(node, routing_pb2.OrgNode)

    async def ListNodes(self, request, context):
        items, revision = await self.store.list(NODES.prefix)
        nodes = [NODES.decode(kv) for kv in items]
        visible = _visible("nodes.read", {n.name: n.parent for n in nodes})
        return admin_pb2.ListNodesResponse(
            items=[resource_to_proto(n, routing_pb2.OrgNode) for n in nodes if visible(n.name)], revision=revision
        )

    async def DeleteNode(self, request, context):
        async def authorize(contents: StoreContents, existing: OrgNode) -> None:
            before, _ = rbac.node_change(None, existing, _parents_of(contents))
            await rbac.require_change(context, "nodes.write", before, rbac.ABSENT)

        async def binding_users() -> str:
            # A binding outliving its scope node would hand whoever re-creates the name its role.
            bindings, _ = await self.store.list(rbac.BINDINGS.prefix)
            users = [b.name for b in (rbac.BINDINGS.decode(kv) for kv in bindings) if b.scope == request.name]
            return f"role bindings {users}" if users else ""
        return await self.delete_resource(NODES, request.name, context, blocked_by=binding_users,
                                          authorize=authorize)

    # ----------------------------------------------------------- API keys

    async def CreateApiKey(self, request, context):
        spec: CreateApiKey = await _validate(CreateApiKey, "API key", proto_to_dict(request), context)
        if spec.expires_at_unix_ms and spec.expires_at_unix_ms <= time.time() * 1000:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT,
                         "invalid API key: expires_at_unix_ms: already in the past (a key that never works)")
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
            tasks=spec.tasks,
        )
        async def write() -> int:
            contents = await self.contents()
            parents = _parents_of(contents)
            existing = contents.api_keys.get(spec.name)
            await rbac.require_change(
                context, "keys.write", rbac.node_chain(existing.node, parents) if existing else rbac.ABSENT,
                rbac.node_chain(spec.node, parents))
            if existing is not None:
                await _abort(context, grpc.StatusCode.ALREADY_EXISTS, f"API key {spec.name!r} already exists")
            if any(k.key_hash == key_hash for k in contents.api_keys.values()):
                await _abort(context, grpc.StatusCode.ALREADY_EXISTS, "that secret is already in use by another key")
            problems = missing_references(stored, contents)
            if problems:
                await _abort(context, grpc.StatusCode.FAILED_PRECONDITION, "; ".join(problems))
            revision = await self._commit(contents, API_KEYS.key(spec.name), API_KEYS.encode(stored), 0)
            self._remember(API_KEYS, spec.name, stored)
            return revision
        revision = await self._guarded(write, context)
        return admin_pb2.CreateApiKeyResponse(key=api_key_public(stored), secret=secret, revision=revision)

    async def GetApiKey(self, request, context):
        key = await self.get_resource(API_KEYS, request.name, context)
        await rbac.require(context, "keys.read", rbac.node_chain(key.node, await self._parents()))
        return api_key_public(key)

    async def ListApiKeys(self, request, context):
        items, revision = await self.store.list(API_KEYS.prefix)
        visible = _visible("keys.read", await self._parents())
        keys = [API_KEYS.decode(kv) for kv in items]
        return admin_pb2.ListApiKeysResponse(
            items=[api_key_public(key) for key in keys if visible(key.node)], revision=revision
        )

    async def DeleteApiKey(self, request, context):
        async def authorize(contents: StoreContents, existing: ApiKey) -> None:
            await rbac.require_change(context, "keys.write", rbac.node_chain(existing.node, _parents_of(contents)),
                                      rbac.ABSENT)
        return await self.delete_resource(API_KEYS, request.name, context, authorize=authorize)

    # ------------------------------------------------------------ budgets

    async def _budget_chain(self, budget: Budget) -> tuple[str, ...]:
        parents = await self._parents()
        node = budget.node
        if budget.key:
            kv = await self.store.get(API_KEYS.key(budget.key))
            node = API_KEYS.decode(kv).node if kv else ""
        return rbac.node_chain(node, parents)

    async def PutBudget(self, request, context):
        budget = await _validate(Budget, "budget", proto_to_dict(request), context)

        async def authorize(contents: StoreContents, existing: Budget | None) -> None:
            # Replacing a budget by name is a change where it was too, not only where it lands.
            await rbac.require_change(context, "budgets.write",
                                      _budget_scope(existing, contents) if existing else rbac.ABSENT,
                                      _budget_scope(budget, contents))
        return await self.put_resource(BUDGETS, budget, context, authorize)

    async def GetBudget(self, request, context):
        budget = await self.get_resource(BUDGETS, request.name, context)
        await rbac.require(context, "budgets.read", await self._budget_chain(budget))
        return resource_to_proto(budget, routing_pb2.Budget)

    async def ListBudgets(self, request, context):
        items, revision = await self.store.list(BUDGETS.prefix)
        visible = []
        for budget in (BUDGETS.decode(kv) for kv in items):
            principal = rbac.current_principal.get()
            if principal is not None and principal.allows("budgets.read", await self._budget_chain(budget)):
                visible.append(resource_to_proto(budget, routing_pb2.Budget))
        return admin_pb2.ListBudgetsResponse(items=visible, revision=revision)

    async def DeleteBudget(self, request, context):
        async def authorize(contents: StoreContents, existing: Budget) -> None:
            await rbac.require_change(context, "budgets.write", _budget_scope(existing, contents), rbac.ABSENT)
        return await self.delete_resource(BUDGETS, request.name, context, authorize=authorize)

    async def ListBudgetStatus(self, request, context):
        principal = rbac.current_principal.get()
        statuses = []
        for status in await self._ledger.status():
            kv = await self.store.get(BUDGETS.key(status.budget))
            if kv and principal is not None and principal.allows(
                    "budgets.read", await self._budget_chain(BUDGETS.decode(kv))):
                statuses.append(status)
        return admin_pb2.ListBudgetStatusResponse(items=statuses)

    # ------------------------------------------------------------ access

    async def CreateAdminToken(self, request, context):
        invalid = grpc.StatusCode.INVALID_ARGUMENT
        if not re.fullmatch(NAME_PATTERN, request.name):
            await _abort(context, invalid, "invalid admin token: name: must be a DNS-like name")
        if request.secret and len(request.secret) < 24:
            await _abort(context, invalid, "invalid admin token: secret: at least 24 characters")
        secret = request.secret or rbac.new_token_secret()
        record = rbac.AdminTokenRecord(name=request.name, token_hash=rbac.hash_token(secret), prefix=secret[:13],
                                       created_at_unix_ms=int(time.time() * 1000))
        async def write() -> int:
            contents = await self.contents()
            await rbac.require_change(context, "access.admin", rbac.ABSENT, ())
            if await self.store.get(rbac.TOKENS.key(record.name)) is not None:
                await _abort(context, grpc.StatusCode.ALREADY_EXISTS, f"admin token {record.name!r} already exists")
            return await self._commit(contents, rbac.TOKENS.key(record.name), rbac.TOKENS.encode(record), 0)
        revision = await self._guarded(write, context)
        return admin_pb2.CreateAdminTokenResponse(token=_token_proto(record), secret=secret, revision=revision)

    async def ListAdminTokens(self, request, context):
        items, revision = await self.store.list(rbac.TOKENS.prefix)
        return admin_pb2.ListAdminTokensResponse(
            items=[_token_proto(rbac.TOKENS.decode(kv)) for kv in items], revision=revision)

    async def DeleteAdminToken(self, request, context):
        async def binding_users() -> str:
            bindings, _ = await self.store.list(rbac.BINDINGS.prefix)
            users = [b.name for b in (rbac.BINDINGS.decode(kv) for kv in bindings) if b.token == request.name]
            return f"role bindings {users}" if users else ""
        async def authorize(_contents, _existing) -> None:
            await rbac.require_change(context, "access.admin", (), rbac.ABSENT)
        response = await self.delete_resource(rbac.TOKENS, request.name, context, blocked_by=binding_users,
                                              authorize=authorize)
        # A token re-created under the same name later must not inherit these sessions.
        await self._end_sessions(token=request.name)
        return response

    async def PutRoleBinding(self, request, context):
        binding = await _validate(rbac.RoleBindingRecord, "role binding", proto_to_dict(request), context)
        problems = []
        if binding.token and await self.store.get(rbac.TOKENS.key(binding.token)) is None:
            problems.append(f"unknown admin token {binding.token!r}")
        if binding.user and await self.store.get(identity.USERS.key(binding.user)) is None:
            problems.append(f"unknown user {binding.user!r}")
        if binding.scope and await self.store.get(NODES.key(binding.scope)) is None:
            problems.append(f"unknown scope node {binding.scope!r}")
        if problems:
            await _abort(context, grpc.StatusCode.FAILED_PRECONDITION, "; ".join(problems))

        async def authorize(contents: StoreContents, existing: rbac.RoleBindingRecord | None) -> None:
            if existing is not None and (existing.token, existing.user) != (binding.token, binding.user):
                # Re-pointing a binding at someone else by reusing its name would silently take
                # the role from its holder: a new holder gets a new binding.
                who = f"user {existing.user!r}" if existing.user else f"token {existing.token!r}"
                await _abort(context, grpc.StatusCode.ALREADY_EXISTS,
                             f"role binding {binding.name!r} already binds {who}; delete it first or use another name")
            parents = _parents_of(contents)
            await rbac.require_change(context, "access.admin",
                                      rbac.node_chain(existing.scope, parents) if existing else rbac.ABSENT,
                                      rbac.node_chain(binding.scope, parents))
        return await self.put_resource(rbac.BINDINGS, binding, context, authorize)

    async def ListRoleBindings(self, request, context):
        items, revision = await self.store.list(rbac.BINDINGS.prefix)
        return admin_pb2.ListRoleBindingsResponse(
            items=[admin_pb2.RoleBinding(**rbac.BINDINGS.decode(kv).model_dump()) for kv in items], revision=revision)

    async def DeleteRoleBinding(self, request, context):
        async def authorize(contents: StoreContents, existing: rbac.RoleBindingRecord) -> None:
            await rbac.require_change(context, "access.admin", rbac.node_chain(existing.scope, _parents_of(contents)),
                                      rbac.ABSENT)
        return await self.delete_resource(rbac.BINDINGS, request.name, context, authorize=authorize)

    async def WhoAmI(self, request, context):
        principal = rbac.current_principal.get()
        assert principal is not None  # the interceptor authenticated the call
        return admin_pb2.WhoAmIResponse(
            token=principal.token,
            bindings=[admin_pb2.RoleBinding(**b.model_dump()) for b in principal.bindings],
            permissions=sorted(principal.usable_permissions()),
            user=principal.user,
            display_name=principal.display_name,
            session_expires_at_unix_ms=principal.session.expires_at_unix_ms if principal.session else 0,
        )

    # ----------------------------------------------------------- defaults

    async def GetDefaults(self, request, context):
        stored = await self.store.get(DEFAULTS_KEY)
        return resource_to_proto(SETTINGS.decode(stored) if stored else Defaults(), routing_pb2.Defaults)

    async def PutDefaults(self, request, context):
        defaults = await _validate(Defaults, "defaults", proto_to_dict(request), context)
        async def write() -> admin_pb2.PutResponse:
            contents = await self.contents()
            existing = await self.store.get(DEFAULTS_KEY)
            encoded = SETTINGS.encode(defaults)
            if existing is not None and existing.value == encoded:
                return admin_pb2.PutResponse(revision=contents.config_revision, created=False, changed=False)
            revision = await self._commit(contents, DEFAULTS_KEY, encoded, existing.mod_revision if existing else 0)
            if self._cache is not None:
                self._cache = dataclasses.replace(self._cache, defaults=defaults)
            return admin_pb2.PutResponse(revision=revision, created=existing is None, changed=True)
        return await self._guarded(write, context)

    # ------------------------------------------------------------ fleet

    async def ListProxies(self, request, context):
        current = self._snapshots.current
        return admin_pb2.ListProxiesResponse(
            proxies=fleet_proxies(self._registry, self._replicas),
            current_version=current.version if current is not None else 0,
        )

    async def GetFleetHealth(self, request, context):
        return self._snapshots.fleet_health or discovery_pb2.FleetHealth()

    async def GetFleetHealthHistory(self, request, context):
        history = self._snapshots.health_history
        return admin_pb2.FleetHealthHistory(step_s=history.step_s, endpoints=[
            admin_pb2.EndpointHealthSeries(
                endpoint=endpoint, at_unix_ms=[p[0] for p in points], success_rate=[p[1] for p in points],
                latency_ms=[p[2] for p in points], requests=[p[3] for p in points])
            for endpoint, points in sorted(history.series().items())])

    async def ListControlPlanes(self, request, context):
        replicas = self._replicas
        if replicas is None:  # an in-process test server without membership
            return admin_pb2.ListControlPlanesResponse()
        return admin_pb2.ListControlPlanesResponse(
            replicas=[
                admin_pb2.ControlPlaneReplica(
                    replica_id=info.replica_id, address=info.address,
                    started_at_unix_ms=info.started_at_unix_ms, leader=info.replica_id == replicas.leader_id,
                )
                for info in sorted(replicas.replicas.values(), key=lambda info: info.started_at_unix_ms)
            ],
            leader_id=replicas.leader_id,
            answered_by=replicas.replica_id,
        )

    async def GetRoutingTable(self, request, context):
        current = self._snapshots.current
        if current is None:
            await _abort(context, grpc.StatusCode.UNAVAILABLE, "no routing table compiled yet")
        return current

    # ------------------------------------------------------------ usage

    async def QueryUsage(self, request, context):
        """Persisted usage of the keys the caller may read usage of (scoped by `usage.read`)."""
        principal = rbac.current_principal.get()
        try:
            return await usage.query(self.store, request, principal)
        except usage.QueryError as exc:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except usage.QueryDenied as exc:
            who = principal.describe if principal else "this caller"
            await _abort(context, grpc.StatusCode.PERMISSION_DENIED, f"{who} {exc}")


# Which StoreContents field holds each collection (the cache updates it in place).
_CONTENTS_ATTRIBUTES = {
    "providers": "providers", "models": "models", "endpoints": "endpoints", "routes": "routes",
    "apikeys": "api_keys", "nodes": "nodes", "budgets": "budgets",
}


def _parents_of(contents: StoreContents) -> dict[str, str]:
    return {node.name: node.parent for node in contents.nodes.values()}


def _budget_scope(budget: Budget, contents: StoreContents) -> tuple[str, ...]:
    """The node chain a budget lives in: its node's, or its key's node's."""
    node = budget.node
    if budget.key:
        key = contents.api_keys.get(budget.key)
        node = key.node if key is not None else ""
    return rbac.node_chain(node, _parents_of(contents))


def _token_proto(record: rbac.AdminTokenRecord) -> admin_pb2.AdminToken:
    return admin_pb2.AdminToken(name=record.name, prefix=record.prefix, created_at_unix_ms=record.created_at_unix_ms)


def _visible(permission: str, parents: dict[str, str]):
    """A filter: may the caller see a resource owned by this node ('' = none)?"""
    principal = rbac.current_principal.get()
    scopes = principal.scopes(permission) if principal is not None else set()

    def visible(node: str) -> bool:
        if scopes is None:
            return True
        return bool(node) and not scopes.isdisjoint(rbac.node_chain(node, parents))

    return visible


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
