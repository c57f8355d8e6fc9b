"""Role-based access control for every gRPC service of the control plane.

Callers authenticate with bearer tokens (stored as SHA-256 hashes). Role
bindings grant a token a role over the subtree of an org node ("" = the
whole system). A server interceptor authenticates every call to a protected
service and checks that the token holds the permission the method needs
somewhere; handlers then check *where* (`require`, `require_change`): a
viewer of team A may read team A's keys, not team B's. Denials are
PERMISSION_DENIED naming the missing permission; a missing or unknown token
is UNAUTHENTICATED. Tokens are never logged.

Two planes, two kinds of credential: operators' tokens (admin, operator,
viewer, billing, developer) reach only the Admin API; proxies' tokens (role `proxy`)
reach only Discovery, Telemetry and Budgets. Neither is accepted by the
other's services, so a leaked proxy credential cannot change configuration
and an operator token cannot forge spend or health.

People (users, keyed by email) hold bindings like tokens and act through
sessions (see `controlplane.identity`); a session resolves to its user's
bindings plus the grants its IdP groups gave it at sign-in. The console's
own credential (role `console`) may only trade a verified ID token for a
session: by itself it reads and changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import inspect
import logging
import secrets
import time
from dataclasses import dataclass

import grpc
from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict, Field

from controlplane import identity
from controlplane.repository import CONFIG_GUARD_KEY, Collection
from controlplane.store import CasConflict, LeaseNotFound, Store
from megarouter.resources import NAME_PATTERN

log = logging.getLogger("megarouter.controlplane.rbac")

REFUSED = Counter("megarouter_cp_refused_calls_total",
                  "Calls refused: by plane (admin, proxy) and reason (permission, range, foreign_lease, ...)",
                  ["plane", "reason"])

ROLES: dict[str, frozenset[str]] = {
    "admin": frozenset({"config.read", "config.write", "nodes.read", "nodes.write", "keys.read", "keys.write",
                        "access.admin", "usage.read", "budgets.read", "budgets.write"}),
    "operator": frozenset({"config.read", "config.write", "nodes.read", "nodes.write", "keys.read", "keys.write",
                           "usage.read", "budgets.read"}),
    "viewer": frozenset({"config.read", "nodes.read", "keys.read", "usage.read", "budgets.read"}),
    "billing": frozenset({"config.read", "nodes.read", "keys.read", "usage.read", "budgets.read",
                          "budgets.write"}),
    # A team's engineer (and the console's self-service sign-up): create and revoke API keys in
    # the bound subtree and read its nodes, usage and budgets — change nothing else.
    "developer": frozenset({"nodes.read", "keys.read", "keys.write", "usage.read", "budgets.read"}),
    # What a data-plane proxy does: stream tables, report stats and usage, lease budgets.
    "proxy": frozenset({"proxy.discovery", "proxy.telemetry", "proxy.budgets"}),
    # The console's service credential: trade an ID token the control plane verifies for a
    # session of the person it names. Nothing else — every page runs with that session.
    "console": frozenset({"sessions.exchange"}),
}
PROXY_PERMISSIONS = ROLES["proxy"]
# Roles of services rather than people: a store holding only these still needs its bootstrap
# admin, and they cannot be traded for a session.
SERVICE_ROLES = frozenset({"proxy", "console"})
# Permissions over system-wide resources: only a binding with scope "" grants them.
GLOBAL_PERMISSIONS = frozenset({"config.read", "config.write", "access.admin", "sessions.exchange",
                                *PROXY_PERMISSIONS})

# The permission each Admin method needs (checked by the interceptor);
# methods on org-scoped resources check the scope again in the handler.
METHOD_PERMISSIONS: dict[str, str | None] = {
    **{f"{verb}{kind}": "config.read" for verb in ("Get", "List")
       for kind in ("Provider", "Providers", "Model", "Models", "Endpoint", "Endpoints", "Route", "Routes")},
    **{f"{verb}{kind}": "config.write" for verb in ("Put", "Delete")
       for kind in ("Provider", "Model", "Endpoint", "Route")},
    "GetDefaults": "config.read", "PutDefaults": "config.write",
    "ListProxies": "config.read", "GetFleetHealth": "config.read", "GetFleetHealthHistory": "config.read",
    "GetRoutingTable": "config.read",
    "ListControlPlanes": "config.read",
    "GetNode": "nodes.read", "ListNodes": "nodes.read", "PutNode": "nodes.write", "DeleteNode": "nodes.write",
    "GetApiKey": "keys.read", "ListApiKeys": "keys.read", "CreateApiKey": "keys.write", "DeleteApiKey": "keys.write",
    **{name: "access.admin" for name in ("CreateAdminToken", "ListAdminTokens", "DeleteAdminToken",
                                         "PutRoleBinding", "ListRoleBindings", "DeleteRoleBinding",
                                         "PutUser", "GetUser", "ListUsers", "DeleteUser")},
    "ExchangeIdToken": "sessions.exchange", "GetSignInOptions": "sessions.exchange",
    # Any person's credential: trade one's own token for a session, end one's own session.
    "CreateSession": None, "EndSession": None,
    "PutBudget": "budgets.write", "DeleteBudget": "budgets.write",
    "GetBudget": "budgets.read", "ListBudgets": "budgets.read", "ListBudgetStatus": "budgets.read",
    "QueryUsage": "usage.read",
    "WhoAmI": None,          # any authenticated token
    "PushRawTable": "config.write",
}
ADMIN_SERVICES = ("/megarouter.v1.Admin/", "/megarouter.v1.TestHooks/")
# The proxies' services: every method needs its permission, held globally.
PROXY_METHOD_PERMISSIONS: dict[str, str] = {
    "/megarouter.v1.Discovery/StreamRoutingTables": "proxy.discovery",
    "/megarouter.v1.Telemetry/ReportStats": "proxy.telemetry",
    "/megarouter.v1.Budgets/Acquire": "proxy.budgets",
    "/megarouter.v1.Budgets/Settle": "proxy.budgets",
}
PROXY_SERVICES = ("/megarouter.v1.Discovery/", "/megarouter.v1.Telemetry/", "/megarouter.v1.Budgets/")


class AdminTokenRecord(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(pattern=NAME_PATTERN)
    token_hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    prefix: str
    created_at_unix_ms: int = 0


class RoleBindingRecord(BaseModel):
    """Grants `role` over `scope` to a token or to a user — exactly one of the two."""
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(pattern=NAME_PATTERN)
    token: str = Field("", pattern=f"(^$)|({NAME_PATTERN})")
    role: str
    scope: str = ""
    user: str = Field("", pattern=f"(^$)|({identity.EMAIL_PATTERN})")

    def model_post_init(self, _context) -> None:
        if self.role not in ROLES:
            raise ValueError(f"role: unknown role {self.role!r} (use one of {', '.join(ROLES)})")
        if bool(self.token) == bool(self.user):
            raise ValueError("token: set exactly one of token and user")
        if self.user and self.role in SERVICE_ROLES:
            raise ValueError(f"role: {self.role!r} is a service credential's role, not a person's")


TOKENS = Collection("admintokens", "admin token", AdminTokenRecord)
BINDINGS = Collection("rolebindings", "role binding", RoleBindingRecord)


def hash_token(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_token_secret() -> str:
    return "mr-admin-" + secrets.token_urlsafe(32)


def new_console_token_secret() -> str:
    return "mr-console-" + secrets.token_urlsafe(32)


def new_proxy_token_secret() -> str:
    return "mr-proxy-" + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Principal:
    token: str                                   # "" for a user
    bindings: tuple[RoleBindingRecord, ...]
    user: str = ""                               # the user's email, "" for a token
    display_name: str = ""
    session: identity.SessionRecord | None = None  # the session the call was made with

    @property
    def describe(self) -> str:
        """Who, for messages: "token 'ci'" or "user 'ann@example.com'"."""
        return f"user {self.user!r}" if self.user else f"token {self.token!r}"

    @property
    def service(self) -> bool:
        """A service's credential (proxy, console), not a person's."""
        return bool(self.bindings) and all(binding.role in SERVICE_ROLES for binding in self.bindings)

    def permissions(self) -> frozenset[str]:
        return frozenset().union(*(ROLES[b.role] for b in self.bindings)) if self.bindings else frozenset()

    def usable_permissions(self) -> frozenset[str]:
        """The permissions the caller can use somewhere: a system-wide one only if some binding
        holds it over everything (a viewer of team A holds config.read in name only)."""
        return frozenset(p for p in self.permissions() if p not in GLOBAL_PERMISSIONS or self.allows(p, None))

    @property
    def operator(self) -> bool:
        """A caller of the admin plane: a person (whatever roles they hold, none included), or a
        token holding some role other than `proxy`."""
        return bool(self.user) or any(binding.role != "proxy" for binding in self.bindings)

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
    """Tokens, users and bindings, read from the store and cached until the configuration
    guard moves: every write of a token, user or binding (through the admin API or a
    bootstrap) moves it, while ledger and usage writes — several per second under traffic —
    do not, so authenticating a proxy's budget call costs one key read, and a revoked token
    is refused from the next call on.

    Sessions are not cached: each call with one reads its record (one key), so a sign-out on
    any replica ends it everywhere at once. `clock` (seconds) is for tests of the time-outs."""

    def __init__(self, store: Store, *, clock=time.time) -> None:
        self._store = store
        self._clock = clock
        self._revision = -1
        self._tokens: dict[str, AdminTokenRecord] = {}      # by hash
        self._token_names: dict[str, str] = {}              # name -> hash
        self._users: dict[str, identity.UserRecord] = {}    # by email
        self._bindings: dict[str, list[RoleBindingRecord]] = {}       # by token name
        self._user_bindings: dict[str, list[RoleBindingRecord]] = {}  # by email

    async def _refresh(self) -> None:
        guard = await self._store.get(CONFIG_GUARD_KEY)
        revision = guard.mod_revision if guard is not None else 0
        if revision == self._revision:
            return
        tokens, _ = await self._store.list(TOKENS.prefix)
        users, _ = await self._store.list(identity.USERS.prefix)
        bindings, _ = await self._store.list(BINDINGS.prefix)
        self._tokens = {t.token_hash: t for t in (TOKENS.decode(kv) for kv in tokens)}
        self._token_names = {t.name: t.token_hash for t in self._tokens.values()}
        self._users = {u.email: u for u in (identity.USERS.decode(kv) for kv in users)}
        by_token: dict[str, list[RoleBindingRecord]] = {}
        by_user: dict[str, list[RoleBindingRecord]] = {}
        for binding in (BINDINGS.decode(kv) for kv in bindings):
            if binding.user:
                by_user.setdefault(binding.user, []).append(binding)
            else:
                by_token.setdefault(binding.token, []).append(binding)
        self._bindings, self._user_bindings = by_token, by_user
        self._revision = revision

    async def authenticate(self, authorization: str | None) -> Principal | None:
        if not authorization:
            return None
        scheme, _, secret = authorization.partition(" ")
        secret = secret.strip()
        if scheme.lower() != "bearer" or not secret:
            return None
        if secret.startswith(identity.SESSION_PREFIX):
            return await self._session_principal(secret)
        await self._refresh()
        token = self._tokens.get(hash_token(secret))
        if token is None:
            return None
        return Principal(token.name, tuple(self._bindings.get(token.name, ())))

    async def user(self, email: str) -> identity.UserRecord | None:
        await self._refresh()
        return self._users.get(email)

    async def _session_principal(self, secret: str) -> Principal | None:
        kv = await self._store.get(identity.SESSIONS.key(hash_token(secret)))
        if kv is None:
            return None
        session = identity.SESSIONS.decode(kv)
        now_ms = int(self._clock() * 1000)
        if now_ms >= session.expires_at_unix_ms or now_ms - session.last_seen_unix_ms > session.idle_timeout_s * 1000:
            await end_session(self._store, session)
            return None
        await self._refresh()
        if session.user:
            user = self._users.get(session.user)
            if user is None or user.disabled or session.subject_check != user_check(user):
                return None
            grants = tuple(RoleBindingRecord(name=f"group-{index}", user=user.email, role=grant.role, scope=grant.scope)
                           for index, grant in enumerate(session.grants))
            principal = Principal("", (*self._user_bindings.get(user.email, ()), *grants), user=user.email,
                                  display_name=user.display_name, session=session)
        else:
            if self._token_names.get(session.token) != session.subject_check:
                return None  # the token it was traded for has been deleted (or re-created)
            principal = Principal(session.token, tuple(self._bindings.get(session.token, ())), session=session)
        if now_ms - session.last_seen_unix_ms >= identity.TOUCH_INTERVAL_S * 1000:
            touched = session.model_copy(update={"last_seen_unix_ms": now_ms})
            # Lost to a concurrent touch or an ending: either way nothing to do.
            with contextlib.suppress(CasConflict, LeaseNotFound):
                await self._store.put(kv.key, identity.SESSIONS.encode(touched), expected_revision=kv.mod_revision,
                                      lease=session.lease)
        return principal

    async def has_operator_tokens(self) -> bool:
        """Whether anyone can operate the system already: a token that is not only a service
        credential (proxy, console), or a user with a role. A store with only service tokens
        still needs its bootstrap admin; one whose admins are people signing in with SSO does
        not, and must not get a bootstrap token back after it was deleted."""
        await self._refresh()
        service_only = {name for name, bindings in self._bindings.items()
                        if bindings and all(binding.role in SERVICE_ROLES for binding in bindings)}
        if any(bindings for email, bindings in self._user_bindings.items() if email in self._users):
            return True
        return any(token.name not in service_only for token in self._tokens.values())


async def start_session(store: Store, *, user: str = "", token: str = "", ttl_s: int, idle_timeout_s: int,
                        subject_check: str, grants: tuple[identity.SessionGrant, ...] = (), clock=time.time,
                        ) -> tuple[str, identity.SessionRecord]:
    """A new session for `user` or `token`: its secret (returned once, stored as a hash) and
    record, under a store lease that deletes it at its absolute end."""
    secret = identity.new_session_secret()
    lease = await store.grant_lease(ttl_s)
    now_ms = int(clock() * 1000)
    record = identity.SessionRecord(
        session_hash=hash_token(secret), user=user, token=token, lease=lease, issued_at_unix_ms=now_ms,
        expires_at_unix_ms=now_ms + ttl_s * 1000, idle_timeout_s=idle_timeout_s, last_seen_unix_ms=now_ms,
        grants=grants, subject_check=subject_check)
    await store.put(identity.SESSIONS.key(record.session_hash), identity.SESSIONS.encode(record),
                    expected_revision=0, lease=lease)
    return secret, record


def user_check(user: identity.UserRecord) -> str:
    """A session's `subject_check` for a user: their creation time, new with each re-creation."""
    return f"user@{user.created_at_unix_ms}"


async def end_session(store: Store, session: identity.SessionRecord) -> None:
    """Delete the session now (its lease, which deletes the record; the record itself if the
    lease is already gone)."""
    try:
        await store.revoke_lease(session.lease)
    except LeaseNotFound:
        await store.delete(identity.SESSIONS.key(session.session_hash))


async def _install_token(store: Store, name: str, secret: str, role: str) -> bool:
    """Create token `name` for `secret`, bound to `role` over everything, in one commit that
    moves the configuration guard (so every replica's directory rereads). False if the token
    already exists — another replica installed it, or an earlier start did."""
    token = AdminTokenRecord(name=name, token_hash=hash_token(secret), prefix=secret[:13],
                             created_at_unix_ms=int(time.time() * 1000))
    binding = RoleBindingRecord(name=f"{name}-{role}", token=name, role=role, scope="")
    try:
        await store.commit(
            [(TOKENS.key(name), 0), (BINDINGS.key(binding.name), 0)],
            [(BINDINGS.key(binding.name), BINDINGS.encode(binding)), (TOKENS.key(name), TOKENS.encode(token)),
             (CONFIG_GUARD_KEY, f"bootstrap {name}".encode())],
        )
    except CasConflict:
        return False
    return True


async def bootstrap(store: Store, secret: str) -> None:
    """On first start: make `secret` the admin token `bootstrap`, bound to
    the admin role over everything. Does nothing once any operator token exists."""
    directory = AccessDirectory(store)
    if await directory.has_operator_tokens():
        return
    if await _install_token(store, "bootstrap", secret, "admin"):
        log.info("bootstrap admin token installed (its secret is not logged)")
    else:
        log.info("admin token 'bootstrap' already exists: another replica bootstrapped")


PROXY_TOKEN_NAME = "proxies"
CONSOLE_TOKEN_NAME = "console"


async def bootstrap_service_token(store: Store, name: str, secret: str, role: str) -> None:
    """Make `secret` the service credential `name` (role `role`, over everything) unless that
    token exists. A stored token with another secret is kept — rotating it is an admin
    action — and the mismatch is logged, since the service given `secret` will be refused."""
    if await _install_token(store, name, secret, role):
        log.info("%s token %r installed (its secret is not logged)", role, name)
        return
    kv = await store.get(TOKENS.key(name))
    if kv is not None and TOKENS.decode(kv).token_hash != hash_token(secret):
        log.warning("token %r already exists with a different secret than the configured %s token: "
                    "a service using the configured one will be refused (delete the token to re-install it)",
                    name, role)


async def bootstrap_proxy_token(store: Store, secret: str) -> None:
    """The fleet's proxy credential: token `proxies`, role proxy."""
    await bootstrap_service_token(store, PROXY_TOKEN_NAME, secret, "proxy")


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Authenticates and authorises every call to the Admin API and to the proxies'
    services (Discovery, Telemetry, Budgets); health checks and reflection stay open."""

    def __init__(self, directory: AccessDirectory) -> None:
        self._directory = directory

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None:
            return handler
        method_path = details.method
        if method_path.startswith(ADMIN_SERVICES):
            method = method_path.rsplit("/", 1)[1]
            permission = METHOD_PERMISSIONS.get(method, "access.admin")  # unknown methods: admins only
            plane = "admin"
        elif method_path.startswith(PROXY_SERVICES):
            method = method_path.rsplit("/", 1)[1]
            permission = PROXY_METHOD_PERMISSIONS.get(method_path, "proxy.unknown")  # unknown: nobody
            plane = "proxy"
        else:
            return handler
        authorization = _single_authorization(details.invocation_metadata)
        directory = self._directory

        async def authorize() -> Principal:
            """The caller's principal, or _Refused."""
            if authorization is _DUPLICATE:
                raise _Refused(plane, "duplicate_credential", grpc.StatusCode.UNAUTHENTICATED,
                               "more than one authorization header")
            principal = await directory.authenticate(authorization)
            if principal is None:
                what = "admin token" if plane == "admin" else "proxy token"
                raise _Refused(plane, "unauthenticated", grpc.StatusCode.UNAUTHENTICATED,
                               f"missing or unknown {what}: send 'authorization: Bearer <token>'")
            if plane == "admin" and not principal.operator:
                raise _Refused(plane, "proxy_credential", grpc.StatusCode.PERMISSION_DENIED,
                               f"token {principal.token!r} is a proxy credential; the admin API refuses it")
            # System-wide permissions need a global binding; org-scoped ones
            # are checked here for being held somewhere, and by the handler for where.
            held = (principal.allows(permission, None) if permission in GLOBAL_PERMISSIONS
                    else permission in principal.permissions()) if permission is not None else True
            if not held:
                raise _Refused(plane, "permission", grpc.StatusCode.PERMISSION_DENIED,
                               f"{principal.describe} lacks permission {permission!r} for {method}")
            return principal

        return _guarded_handler(handler, authorize)


# Kept for readers of older code: the interceptor covers more than Admin now.
AdminAuthInterceptor = AuthInterceptor

_DUPLICATE = object()


def _single_authorization(metadata) -> object:
    """The one `authorization` value, None if absent, _DUPLICATE if sent twice (a caller
    whose second header would silently win is refused rather than guessed at)."""
    values = [value for key, value in (metadata or ()) if key == "authorization"]
    if len(values) > 1:
        return _DUPLICATE
    return values[0] if values else None


class _Refused(Exception):
    def __init__(self, plane: str, reason: str, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.plane, self.reason, self.code, self.message = plane, reason, code, message


# A refused streaming caller's first message is awaited this long before the refusal is sent.
_REFUSAL_DRAIN_S = 1.0


def _guarded_handler(handler, authorize):
    """The same RPC handler with `authorize()` run first and the principal set in
    `current_principal` for the handler's whole run, for each of the four RPC shapes."""
    serializers = {"request_deserializer": handler.request_deserializer,
                   "response_serializer": handler.response_serializer}
    request_streaming = handler.request_streaming

    async def admit(request, context) -> Principal:
        try:
            return await authorize()
        except _Refused as refused:
            REFUSED.labels(refused.plane, refused.reason).inc()
            if request_streaming:
                # A client stream writes first (a proxy's hello, a report). Refused before that
                # write lands, the client's write fails and grpc reports "Internal error from
                # Core" instead of the refusal: take the first message, then refuse.
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(anext(aiter(request)), _REFUSAL_DRAIN_S)
            await context.abort(refused.code, refused.message)
            raise AssertionError("unreachable") from None  # abort always raises

    def wrap(behavior):
        if inspect.isasyncgenfunction(behavior):
            async def streaming(request, context):
                reset = current_principal.set(await admit(request, context))
                try:
                    async for response in behavior(request, context):
                        yield response
                finally:
                    current_principal.reset(reset)
            return streaming

        async def unary(request, context):
            reset = current_principal.set(await admit(request, context))
            try:
                return await behavior(request, context)
            finally:
                current_principal.reset(reset)
        return unary

    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(wrap(handler.stream_stream), **serializers)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(wrap(handler.stream_unary), **serializers)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(wrap(handler.unary_stream), **serializers)
    return grpc.unary_unary_rpc_method_handler(wrap(handler.unary_unary), **serializers)


async def require(context: grpc.aio.ServicerContext, permission: str, node_chain: tuple[str, ...] | None) -> None:
    """Abort with PERMISSION_DENIED unless the caller holds `permission` over the resource."""
    principal = current_principal.get()
    if principal is None or not principal.allows(permission, node_chain):
        where = f"node {node_chain[0]!r}" if node_chain else "system-wide resources"
        who = principal.describe if principal else "this caller"
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, f"{who} lacks permission {permission!r} on {where}")


# A side of a change that does not exist: nothing before a create, nothing after a delete.
ABSENT: tuple[str, ...] | None = None


async def require_change(context: grpc.aio.ServicerContext, permission: str,
                         before: tuple[str, ...] | None, after: tuple[str, ...] | None) -> None:
    """Every write of a scoped resource goes through here: replacing, moving or deleting one
    needs `permission` where it is now (`before`) *and* where it will be (`after`) — each a
    node chain, () for "no node" (only global bindings cover that), ABSENT for the side that
    does not exist. Checking only the new side let a token scoped to team A overwrite team
    B's budget by reusing its name."""
    for chain in (before, after):
        if chain is not ABSENT:
            await require(context, permission, chain)


def node_change(new, existing, parents: dict[str, str]) -> tuple[tuple[str, ...] | None, tuple[str, ...] | None]:
    """Where a write of an org node happens, as (before, after) chains for `require_change`.

    Creating a node is a change in its parent's subtree; deleting one, moving it to another
    parent or changing its kind, in its old and new parents' subtrees. Only an edit in place
    (display name, metadata, default strategy) is a change at the node itself. So a token
    scoped to a node may edit it but never move, re-kind or delete it — a scope root cannot
    escape its parent's budgets or remove itself.
    """
    if existing is None:
        return ABSENT, node_chain(new.parent, parents)
    if new is None:
        return node_chain(existing.parent, parents), ABSENT
    if new.parent != existing.parent or new.kind != existing.kind:
        return node_chain(existing.parent, parents), node_chain(new.parent, parents)
    here = node_chain(new.name, parents)
    return here, here


def node_chain(node: str, parents: dict[str, str]) -> tuple[str, ...]:
    """`node` and its ancestors, nearest first ("" → a system-wide resource: ())."""
    chain: list[str] = []
    seen: set[str] = set()
    while node and node not in seen:
        chain.append(node)
        seen.add(node)
        node = parents.get(node, "")
    return tuple(chain)
