"""Role-based access control for the admin API.

Operators authenticate with bearer tokens (stored as SHA-256 hashes). Role
bindings grant a token a role over the subtree of an org node ("" = the
whole system). A server interceptor authenticates every Admin call and
checks that the token holds the permission the method needs somewhere;
handlers then check *where* (`require`): a viewer of team A may read team
A's keys, not team B's. Denials are PERMISSION_DENIED naming the missing
permission; a missing or unknown token is UNAUTHENTICATED. Tokens are never
logged.
"""

from __future__ import annotations

import contextvars
import hashlib
import logging
import secrets
import time
from dataclasses import dataclass

import grpc
from pydantic import BaseModel, ConfigDict, Field

from controlplane.repository import Collection
from controlplane.store import CasConflict, Store
from megarouter.resources import NAME_PATTERN

log = logging.getLogger("megarouter.controlplane.rbac")

ROLES: dict[str, frozenset[str]] = {
    "admin": frozenset({"config.read", "config.write", "nodes.read", "nodes.write", "keys.read", "keys.write",
                        "access.admin", "usage.read", "budgets.read", "budgets.write"}),
    "operator": frozenset({"config.read", "config.write", "nodes.read", "nodes.write", "keys.read", "keys.write",
                           "usage.read", "budgets.read"}),
    "viewer": frozenset({"config.read", "nodes.read", "keys.read", "usage.read", "budgets.read"}),
    "billing": frozenset({"config.read", "nodes.read", "keys.read", "usage.read", "budgets.read",
                          "budgets.write"}),
}
# Permissions over system-wide resources: only a binding with scope "" grants them.
GLOBAL_PERMISSIONS = frozenset({"config.read", "config.write", "access.admin"})

# The permission each Admin method needs (checked by the interceptor);
# methods on org-scoped resources check the scope again in the handler.
METHOD_PERMISSIONS: dict[str, str | None] = {
    **{f"{verb}{kind}": "config.read" for verb in ("Get", "List")
       for kind in ("Provider", "Providers", "Model", "Models", "Endpoint", "Endpoints", "Route", "Routes")},
    **{f"{verb}{kind}": "config.write" for verb in ("Put", "Delete")
       for kind in ("Provider", "Model", "Endpoint", "Route")},
    "GetDefaults": "config.read", "PutDefaults": "config.write",
    "ListProxies": "config.read", "GetFleetHealth": "config.read", "GetRoutingTable": "config.read",
    "ListControlPlanes": "config.read",
    "GetNode": "nodes.read", "ListNodes": "nodes.read", "PutNode": "nodes.write", "DeleteNode": "nodes.write",
    "GetApiKey": "keys.read", "ListApiKeys": "keys.read", "CreateApiKey": "keys.write", "DeleteApiKey": "keys.write",
    **{name: "access.admin" for name in ("CreateAdminToken", "ListAdminTokens", "DeleteAdminToken",
                                         "PutRoleBinding", "ListRoleBindings", "DeleteRoleBinding")},
    "PutBudget": "budgets.write", "DeleteBudget": "budgets.write",
    "GetBudget": "budgets.read", "ListBudgets": "budgets.read", "ListBudgetStatus": "budgets.read",
    "QueryUsage": "usage.read",
    "WhoAmI": None,          # any authenticated token
    "PushRawTable": "config.write",
}
PROTECTED_SERVICES = ("/megarouter.v1.Admin/", "/megarouter.v1.TestHooks/")


class AdminTokenRecord(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(pattern=NAME_PATTERN)
    token_hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    prefix: str
    created_at_unix_ms: int = 0


class RoleBindingRecord(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(pattern=NAME_PATTERN)
    token: str = Field(pattern=NAME_PATTERN)
    role: str
    scope: str = ""

    def model_post_init(self, _context) -> None:
        if self.role not in ROLES:
            raise ValueError(f"role: unknown role {self.role!r} (use one of {', '.join(ROLES)})")


TOKENS = Collection("admintokens", "admin token", AdminTokenRecord)
BINDINGS = Collection("rolebindings", "role binding", RoleBindingRecord)


def hash_token(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_token_secret() -> str:
    return "mr-admin-" + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Principal:
    token: str
    bindings: tuple[RoleBindingRecord, ...]

    def permissions(self) -> frozenset[str]:
        return frozenset().union(*(ROLES[b.role] for b in self.bindings)) if self.bindings else frozenset()

    def allows(self, permission: str, node_chain: tuple[str, ...] | None = None) -> bool:
        """`node_chain`: the resource's node and its ancestors (None: a
        system-wide resource, which only global bindings cover)."""
        for binding in self.bindings:
            if permission not in ROLES[binding.role]:
                continue
            if binding.scope == "":
                return True
            if permission in GLOBAL_PERMISSIONS or node_chain is None:
                continue
            if binding.scope in node_chain:
                return True
        return False

    def scopes(self, permission: str) -> set[str] | None:
        """Nodes whose subtrees the permission covers; None = everything."""
        scopes: set[str] = set()
        for binding in self.bindings:
            if permission in ROLES[binding.role]:
                if binding.scope == "":
                    return None
                scopes.add(binding.scope)
        return scopes


current_principal: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("principal", default=None)


class AccessDirectory:
    """Tokens and bindings, read from the store and cached by revision."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._revision = -1
        self._tokens: dict[str, AdminTokenRecord] = {}      # by hash
        self._bindings: dict[str, list[RoleBindingRecord]] = {}  # by token name

    async def _refresh(self) -> None:
        revision = await self._store.revision()
        if revision == self._revision:
            return
        tokens, _ = await self._store.list(TOKENS.prefix)
        bindings, _ = await self._store.list(BINDINGS.prefix)
        self._tokens = {t.token_hash: t for t in (TOKENS.decode(kv) for kv in tokens)}
        grouped: dict[str, list[RoleBindingRecord]] = {}
        for binding in (BINDINGS.decode(kv) for kv in bindings):
            grouped.setdefault(binding.token, []).append(binding)
        self._bindings = grouped
        self._revision = revision

    async def authenticate(self, authorization: str | None) -> Principal | None:
        if not authorization:
            return None
        scheme, _, secret = authorization.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            return None
        await self._refresh()
        token = self._tokens.get(hash_token(secret.strip()))
        if token is None:
            return None
        return Principal(token.name, tuple(self._bindings.get(token.name, ())))

    async def has_tokens(self) -> bool:
        await self._refresh()
        return bool(self._tokens)


async def bootstrap(store: Store, secret: str) -> None:
    """On first start: make `secret` the admin token `bootstrap`, bound to
    the admin role over everything. Does nothing once any token exists."""
    directory = AccessDirectory(store)
    if await directory.has_tokens():
        return
    now = int(time.time() * 1000)
    token = AdminTokenRecord(name="bootstrap", token_hash=hash_token(secret), prefix=secret[:13],
                             created_at_unix_ms=now)
    binding = RoleBindingRecord(name="bootstrap-admin", token="bootstrap", role="admin", scope="")
    # Binding first, token second: a crash in between leaves no token, so the
    # next start bootstraps again. Replicas starting together on an empty
    # store race here; the loser finds the records written (CasConflict).
    for collection, record in ((BINDINGS, binding), (TOKENS, token)):
        try:
            await store.put(collection.key(record.name), collection.encode(record), expected_revision=0)
        except CasConflict:
            log.info("%s %r already exists: another replica bootstrapped", collection.kind, record.name)
            continue
    log.info("bootstrap admin token installed (its secret is not logged)")


class AdminAuthInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, directory: AccessDirectory) -> None:
        self._directory = directory

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None or not details.method.startswith(PROTECTED_SERVICES):
            return handler
        method = details.method.rsplit("/", 1)[1]
        permission = METHOD_PERMISSIONS.get(method, "access.admin")  # unknown methods: admins only
        authorization = dict(details.invocation_metadata or ()).get("authorization")
        behavior = handler.unary_unary
        directory = self._directory

        async def guarded(request, context):
            principal = await directory.authenticate(authorization)
            if principal is None:
                await context.abort(grpc.StatusCode.UNAUTHENTICATED,
                                    "missing or unknown admin token: send 'authorization: Bearer <token>'")
            # System-wide permissions need a global binding; org-scoped ones
            # are checked here for being held somewhere, and by the handler for where.
            held = (principal.allows(permission, None) if permission in GLOBAL_PERMISSIONS
                    else permission in principal.permissions()) if permission is not None else True
            if not held:
                await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                    f"token {principal.token!r} lacks permission {permission!r} for {method}")
            reset = current_principal.set(principal)
            try:
                return await behavior(request, context)
            finally:
                current_principal.reset(reset)

        return grpc.unary_unary_rpc_method_handler(
            guarded, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


async def require(context: grpc.aio.ServicerContext, permission: str, node_chain: tuple[str, ...] | None) -> None:
    """Abort with PERMISSION_DENIED unless the caller holds `permission` over the resource."""
    principal = current_principal.get()
    if principal is None or not principal.allows(permission, node_chain):
        where = f"node {node_chain[0]!r}" if node_chain else "system-wide resources"
        who = f"token {principal.token!r}" if principal else "this caller"
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, f"{who} lacks permission {permission!r} on {where}")


def node_chain(node: str, parents: dict[str, str]) -> tuple[str, ...]:
    """`node` and its ancestors, nearest first ("" → a system-wide resource: ())."""
    chain: list[str] = []
    seen: set[str] = set()
    while node and node not in seen:
        chain.append(node)
        seen.add(node)
        node = parents.get(node, "")
    return tuple(chain)
