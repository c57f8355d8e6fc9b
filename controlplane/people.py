"""The Admin API's people and sessions: users, session credentials, single sign-on and
self-service sign-up (a mixin of `AdminService`; the rules are in `controlplane.identity`).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import TYPE_CHECKING, NoReturn

import grpc
from pydantic import ValidationError

from controlplane import identity, rbac
from controlplane.identity import USERS, SignInRefused, SsoSettings, UserRecord
from controlplane.repository import BUDGETS, CONFIG_GUARD_KEY, NODES, StoreContents
from controlplane.store import CasConflict
from megarouter.resources import Budget, OrgNode, validation_message
from megarouter.v1 import admin_pb2

if TYPE_CHECKING:
    from controlplane.admin import AdminService

log = logging.getLogger("megarouter.controlplane.people")


@dataclasses.dataclass(frozen=True)
class SessionPolicy:
    max_s: int = identity.MAX_SESSION_S
    idle_timeout_s: int = identity.IDLE_TIMEOUT_S


def _user_proto(user: UserRecord) -> admin_pb2.User:
    return admin_pb2.User(email=user.email, display_name=user.display_name, disabled=user.disabled,
                          created_at_unix_ms=user.created_at_unix_ms, created_by=user.created_by)


async def _abort(context, code: grpc.StatusCode, message: str) -> NoReturn:
    await context.abort(code, message)
    raise AssertionError("unreachable")


class PeopleAdmin:
    """Users, sessions and sign-in. Mixed into AdminService, whose store, guarded writes and
    configuration cache it uses."""

    # Set by AdminService.__init__.
    sso: SsoSettings | None
    verifier: identity.IdTokenVerifier | None
    session_policy: SessionPolicy

    # ------------------------------------------------------------------ users

    async def PutUser(self: AdminService, request, context):
        try:
            user = UserRecord(email=request.email, display_name=request.display_name, disabled=request.disabled)
        except ValidationError as exc:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, validation_message("user", exc))

        async def write() -> admin_pb2.PutResponse:
            contents = await self.contents()
            existing_kv = await self.store.get(USERS.key(user.email))
            existing = USERS.decode(existing_kv) if existing_kv else None
            # What the control plane owns is kept: when and how the user came to be, their IdP subject.
            stored = user.model_copy(update={
                "created_at_unix_ms": existing.created_at_unix_ms if existing else int(time.time() * 1000),
                "created_by": existing.created_by if existing else "admin",
                "oidc_subject": existing.oidc_subject if existing else "",
            })
            encoded = USERS.encode(stored)
            if existing_kv is not None and existing_kv.value == encoded:
                return admin_pb2.PutResponse(revision=contents.config_revision, created=False, changed=False)
            revision = await self._commit(contents, USERS.key(user.email), encoded,
                                          existing_kv.mod_revision if existing_kv else 0)
            return admin_pb2.PutResponse(revision=revision, created=existing is None, changed=True)
        response = await self._guarded(write, context)
        if user.disabled:
            await self._end_sessions(user=user.email)
        return response

    async def GetUser(self: AdminService, request, context):
        kv = await self.store.get(USERS.key(request.name.strip().lower())) if request.name else None
        if kv is None:
            await _abort(context, grpc.StatusCode.NOT_FOUND, f"user {request.name!r} not found")
        return _user_proto(USERS.decode(kv))

    async def ListUsers(self: AdminService, request, context):
        items, revision = await self.store.list(USERS.prefix)
        return admin_pb2.ListUsersResponse(items=[_user_proto(USERS.decode(kv)) for kv in items], revision=revision)

    async def DeleteUser(self: AdminService, request, context):
        email = request.name.strip().lower()

        async def binding_users() -> str:
            bindings, _ = await self.store.list(rbac.BINDINGS.prefix)
            users = [b.name for b in (rbac.BINDINGS.decode(kv) for kv in bindings) if b.user == email]
            return f"role bindings {users}" if users else ""
        response = await self.delete_resource(USERS, email, context, blocked_by=binding_users)
        # A user re-created under the same email later must not inherit these sessions.
        await self._end_sessions(user=email)
        return response

    async def _has_bindings(self: AdminService, email: str) -> bool:
        bindings, _ = await self.store.list(rbac.BINDINGS.prefix)
        return any(rbac.BINDINGS.decode(kv).user == email for kv in bindings)

    async def _end_sessions(self: AdminService, *, user: str = "", token: str = "") -> None:
        items, _ = await self.store.list(identity.SESSIONS.prefix)
        for session in (identity.SESSIONS.decode(kv) for kv in items):
            if (user and session.user == user) or (token and session.token == token):
                await rbac.end_session(self.store, session)

    # --------------------------------------------------------------- sessions

    async def _session_ttl(self: AdminService, requested: int, context) -> int:
        policy = self.session_policy
        if requested == 0:
            return policy.max_s
        if not 60 <= requested <= policy.max_s:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT,
                         f"ttl_s: between 60 and {policy.max_s} seconds (0: {policy.max_s})")
        return requested

    def _session_response(self: AdminService, secret: str, session: identity.SessionRecord,
                          signed_up: bool = False) -> admin_pb2.SessionResponse:
        return admin_pb2.SessionResponse(secret=secret, expires_at_unix_ms=session.expires_at_unix_ms,
                                         idle_timeout_s=session.idle_timeout_s, user=session.user,
                                         token=session.token, signed_up=signed_up)

    async def CreateSession(self: AdminService, request, context):
        principal = rbac.current_principal.get()
        assert principal is not None  # the interceptor authenticated the call
        if principal.session is not None:
            await _abort(context, grpc.StatusCode.FAILED_PRECONDITION,
                         "this call is made with a session already; sessions are created from a token")
        if principal.service:
            await _abort(context, grpc.StatusCode.PERMISSION_DENIED,
                         f"{principal.describe} is a service credential; sessions are for people")
        ttl = await self._session_ttl(request.ttl_s, context)
        token = await self.store.get(rbac.TOKENS.key(principal.token))
        if token is None:  # deleted between authenticating this call and here
            await _abort(context, grpc.StatusCode.UNAUTHENTICATED, f"token {principal.token!r} no longer exists")
        secret, session = await rbac.start_session(self.store, token=principal.token, ttl_s=ttl,
                                                   idle_timeout_s=self.session_policy.idle_timeout_s,
                                                   subject_check=rbac.TOKENS.decode(token).token_hash)
        log.info("session started for token %r", principal.token)
        return self._session_response(secret, session)

    async def EndSession(self: AdminService, request, context):
        principal = rbac.current_principal.get()
        if principal is None or principal.session is None:
            await _abort(context, grpc.StatusCode.FAILED_PRECONDITION,
                         "this call is not made with a session: send the session credential to end it")
        await rbac.end_session(self.store, principal.session)
        return admin_pb2.EndSessionResponse()

    async def GetSignInOptions(self: AdminService, request, context):
        if self.sso is None:
            return admin_pb2.SignInOptions(sso_enabled=False)
        return admin_pb2.SignInOptions(sso_enabled=True, issuer=self.sso.issuer, client_id=self.sso.client_id,
                                       scopes=self.sso.scopes)

    async def ExchangeIdToken(self: AdminService, request, context):
        if self.sso is None or self.verifier is None:
            await _abort(context, grpc.StatusCode.FAILED_PRECONDITION,
                         "single sign-on is not configured on the control plane (--sso-config)")
        ttl = await self._session_ttl(request.ttl_s, context)
        try:
            claims = await self.verifier.verify(request.id_token, request.nonce)
            email = identity.sign_in_email(self.sso, claims)
            user, signed_up = await self._sign_in_user(email, claims, context)
        except SignInRefused as refused:
            log.info("SSO sign-in refused: %s", refused)
            await _abort(context, grpc.StatusCode.PERMISSION_DENIED, f"sign-in refused: {refused}")
        grants = identity.group_grants(self.sso, claims, set((await self.contents()).nodes))
        if not grants and not await self._has_bindings(user.email):
            log.info("SSO sign-in refused: %s has no role (bind one, or map one of their groups)", user.email)
            await _abort(context, grpc.StatusCode.PERMISSION_DENIED, f"sign-in refused: {user.email} has no role")
        secret, session = await rbac.start_session(self.store, user=user.email, ttl_s=ttl,
                                                   idle_timeout_s=self.session_policy.idle_timeout_s, grants=grants,
                                                   subject_check=rbac.user_check(user))
        log.info("SSO sign-in of %s%s%s", user.email, " (signed up)" if signed_up else "",
                 f" with groups {sorted({g.group for g in grants})}" if grants else "")
        return self._session_response(secret, session, signed_up)

    async def _sign_in_user(self: AdminService, email: str, claims: dict, context) -> tuple[UserRecord, bool]:
        """The user signing in, recording their IdP subject at their first sign-in, or
        signed up if they are new and their domain has self-service sign-up."""
        subject = f"{self.sso.issuer}#{claims['sub']}"
        display_name = claims.get("name") if isinstance(claims.get("name"), str) else ""

        async def write() -> tuple[UserRecord, bool]:
            contents = await self.contents()
            kv = await self.store.get(USERS.key(email))
            if kv is not None:
                user = USERS.decode(kv)
                if user.disabled:
                    raise SignInRefused(f"{email}: the user is disabled")
                if user.oidc_subject and user.oidc_subject != subject:
                    raise SignInRefused(f"{email}: the issuer's subject differs from the one this user first "
                                        "signed in with (an email address reassigned to someone else?)")
                if not user.oidc_subject:
                    user = user.model_copy(update={"oidc_subject": subject})
                    await self._commit(contents, USERS.key(email), USERS.encode(user), kv.mod_revision)
                return user, False
            signup = self.sso.signup
            if signup is None or email.rpartition("@")[2] not in signup.domains:
                raise SignInRefused(f"{email}: no such user, and the domain has no self-service sign-up")
            return await self._sign_up(contents, email, display_name[:200], subject, context), True
        return await self._guarded(write, context)

    async def _sign_up(self: AdminService, contents: StoreContents, email: str, display_name: str, subject: str,
                       context) -> UserRecord:
        """One commit: the user, a node of their own under the sign-up parent, their role on it
        and the starter budget — all or nothing, and only if nothing else changed meanwhile."""
        signup = self.sso.signup
        if signup.parent not in contents.nodes:
            log.error("self-service sign-up is misconfigured: parent node %r does not exist", signup.parent)
            raise SignInRefused(f"sign-up parent node {signup.parent!r} does not exist")
        node_name = identity.signup_node_name(email, signup.parent, set(contents.nodes))
        user = UserRecord(email=email, display_name=display_name, created_at_unix_ms=int(time.time() * 1000),
                          created_by="signup", oidc_subject=subject)
        node = OrgNode(name=node_name, parent=signup.parent, kind=signup.node_kind,
                       display_name=(display_name or email)[:200], metadata={"owner": email})
        binding = rbac.RoleBindingRecord(name=f"{node_name}-{signup.role}"[:63], user=email, role=signup.role,
                                         scope=node_name)
        writes = [(USERS.key(email), USERS.encode(user)), (NODES.key(node.name), NODES.encode(node)),
                  (rbac.BINDINGS.key(binding.name), rbac.BINDINGS.encode(binding))]
        if signup.budget is not None:
            budget = Budget(name=f"{node_name}-starter"[:63], node=node_name, window=signup.budget.window,
                            unit="usd", limit=signup.budget.limit_usd)
            writes.append((BUDGETS.key(budget.name), BUDGETS.encode(budget)))
        checks = [(CONFIG_GUARD_KEY, contents.config_guard), *((key, 0) for key, _ in writes)]
        try:
            await self.store.commit(checks, [*writes, (CONFIG_GUARD_KEY, f"signup {email}".encode())])
        except CasConflict as exc:
            if exc.key != CONFIG_GUARD_KEY:
                log.error("self-service sign-up of %s: %s already exists", email, exc.key)
                raise SignInRefused(f"sign-up: {exc.key.rsplit('/', 2)[-2]} {exc.key.rsplit('/', 1)[-1]!r} "
                                    "already exists") from None
            from controlplane.admin import _ConfigChanged
            raise _ConfigChanged from exc
        self._cache = None  # several collections changed: reread
        return user
