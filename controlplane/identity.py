"""People and their sessions: users, session credentials, and single sign-on.

**Users** are keyed by email and hold role bindings exactly as tokens do. They have no
secret of their own: a person acts only through a **session**, a short-lived bearer
credential (`mr-session-…`) that the control plane issues and resolves, on every call, to
the user (or token) it stands for. Sessions live in the store under a lease that ends
with the session's absolute lifetime, so every replica sees them and a sign-out (or a
deleted or disabled user) takes effect on the next call everywhere. Only the sha256 of a
session secret is stored.

**Single sign-on** is verified *here*, not in the console: the console runs the OIDC
authorization-code flow and hands over the ID token it got; this module checks that
token's signature against the issuer's published keys and its claims (issuer, audience,
expiry, nonce) with `joserfc`, a maintained JOSE implementation, rather than hand-written
JWT code. So the console's own credential can only relay what the identity provider
asserted: it cannot sign anybody in by itself, and a leaked console token is worth
nothing without a fresh ID token minted by the issuer for this client.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
import time
from pathlib import Path
from typing import Any, Literal

import httpx
import yaml
from joserfc import jws, jwt
from joserfc.errors import BadSignatureError, InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from controlplane.repository import Collection
from megarouter.resources import NAME_PATTERN, validation_message

EMAIL_PATTERN = r"^[a-z0-9._%+'-]+@[a-z0-9-]+(\.[a-z0-9-]+)+$"
SESSION_PREFIX = "mr-session-"
# The longest a session may live, and how long an unused one survives (the console's
# sign-in defaults); a control plane can shorten both.
MAX_SESSION_S = 12 * 3600
IDLE_TIMEOUT_S = 30 * 60
# A session's last-use time is written back at most this often (a write per call would
# turn every page view into store traffic); the idle clock is therefore this coarse.
TOUCH_INTERVAL_S = 60
# Roles a person may hold. `proxy` and `console` are service credentials' roles.
PERSON_ROLES = ("admin", "operator", "viewer", "billing", "developer")


class UserRecord(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    email: str = Field(pattern=EMAIL_PATTERN, max_length=254)
    display_name: str = Field("", max_length=200)
    disabled: bool = False
    created_at_unix_ms: int = 0
    created_by: Literal["admin", "signup"] = "admin"
    # The issuer's `sub` for this person, recorded at the first SSO sign-in. Later sign-ins
    # must match it, so an email address the IdP reassigns to someone else does not inherit
    # the first person's access.
    oidc_subject: str = ""

    @property
    def name(self) -> str:  # the store's key for it, like every other resource's name
        return self.email

    @field_validator("email", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value


class SessionGrant(BaseModel):
    """A role a session holds for the groups the IdP said its person belongs to."""
    model_config = ConfigDict(extra="forbid", frozen=True)
    role: str
    scope: str = ""
    group: str


class SessionRecord(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    session_hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    user: str = ""                  # exactly one of user and token
    token: str = ""
    lease: int                      # the store lease that ends it
    issued_at_unix_ms: int
    expires_at_unix_ms: int
    idle_timeout_s: int
    last_seen_unix_ms: int
    grants: tuple[SessionGrant, ...] = ()
    # Which incarnation of its user or token the session belongs to (the token's hash, the
    # user's creation time): one deleted and re-created under the same name does not inherit it,
    # even if ending the old sessions failed half way.
    subject_check: str = ""

    @property
    def name(self) -> str:
        return self.session_hash


USERS = Collection("users", "user", UserRecord)
SESSIONS = Collection("sessions", "session", SessionRecord)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_session_secret() -> str:
    return SESSION_PREFIX + secrets.token_urlsafe(32)


# ----------------------------------------------------------------------------- settings


class GroupBinding(BaseModel):
    """Members of IdP group `group` hold `role` over `scope` for as long as they sign in
    with that group: the grant is the session's, re-read from the ID token at each sign-in,
    so leaving the group in the IdP ends it at the next sign-in."""
    model_config = ConfigDict(extra="forbid")
    group: str = Field(min_length=1)
    role: str
    scope: str = ""

    @field_validator("role")
    @classmethod
    def _person_role(cls, role: str) -> str:
        if role not in PERSON_ROLES:
            raise ValueError(f"unknown role {role!r} (use one of {', '.join(PERSON_ROLES)})")
        return role


class StarterBudget(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    limit_usd: float = Field(gt=0)
    window: Literal["daily", "monthly", "total"] = "monthly"


class SignUp(BaseModel):
    """Self-service sign-up: a person from one of `domains` signing in for the first time
    gets a user, a `node_kind` node of their own under `parent`, `role` on it, and
    optionally a starter budget — all in one commit, with no operator involved."""
    model_config = ConfigDict(extra="forbid")
    domains: list[str] = Field(min_length=1)
    parent: str = Field(pattern=NAME_PATTERN)
    node_kind: Literal["team", "project"] = "project"
    role: str = "developer"
    budget: StarterBudget | None = None

    @field_validator("role")
    @classmethod
    def _person_role(cls, role: str) -> str:
        return GroupBinding._person_role(role)


class SsoSettings(BaseModel):
    """The control plane's `--sso-config` file."""
    model_config = ConfigDict(extra="forbid")
    issuer: str = Field(pattern=r"^https?://[^\s]+$")
    client_id: str = Field(min_length=1)
    scopes: list[str] = ["openid", "email", "profile"]
    # Only people whose (verified) email is in one of these domains may sign in at all.
    allowed_domains: list[str] = Field(min_length=1)
    require_verified_email: bool = True
    group_claim: str = "groups"
    group_bindings: list[GroupBinding] = []
    signup: SignUp | None = None
    # Accepted clock difference between the issuer and us when checking exp/iat.
    leeway_s: int = Field(60, ge=0, le=600)

    @field_validator("allowed_domains")
    @classmethod
    def _domains(cls, domains: list[str]) -> list[str]:
        return [d.strip().lower() for d in domains]

    @model_validator(mode="after")
    def _signup_domains_allowed(self) -> SsoSettings:
        if "openid" not in self.scopes:
            raise ValueError("scopes: must include 'openid'")
        if self.signup is not None:
            self.signup.domains = [d.strip().lower() for d in self.signup.domains]
            outside = [d for d in self.signup.domains if d not in self.allowed_domains]
            if outside:
                raise ValueError(f"signup.domains: {outside} are not in allowed_domains")
        return self


class SsoConfigError(Exception):
    pass


def load_sso_settings(path: str) -> SsoSettings:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise SsoConfigError(f"cannot read {path}: {exc}") from None
    try:
        return SsoSettings.model_validate(data or {})
    except ValidationError as exc:
        raise SsoConfigError(validation_message(path, exc)) from None


# ------------------------------------------------------------------------ ID tokens


class SignInRefused(Exception):
    """The ID token or the person it names may not sign in; the message says why (for the
    operator's logs — the console shows people one generic failure)."""


class IdTokenVerifier:
    """Checks ID tokens from one issuer: signature by a key in the issuer's JWKS (found
    through its discovery document and cached), then iss, aud (and azp when there are several
    audiences), exp, iat, sub and nonce. A signature that no cached key verifies re-fetches the
    JWKS — at most once a minute — and tries again, which is how an issuer's key rotation is
    followed (many issuers omit `kid`, so the key id alone cannot tell a rotation)."""

    REFRESH_MIN_INTERVAL_S = 60
    # Asymmetric algorithms only: never `none`, never an HMAC keyed with something public.
    ASYMMETRIC = ("RS", "PS", "ES", "Ed")

    def __init__(self, settings: SsoSettings, *, client: httpx.AsyncClient | None = None) -> None:
        self._settings = settings
        self._issuer = settings.issuer.rstrip("/")
        self._client = client or httpx.AsyncClient(timeout=5.0)
        self._jwks_uri = ""
        self._algorithms = ["RS256"]
        self._keys: KeySet | None = None
        self._fetched_at = -float("inf")
        self._lock = asyncio.Lock()

    async def _key_set(self, *, refresh: bool = False) -> KeySet:
        async with self._lock:
            recent = time.monotonic() - self._fetched_at < self.REFRESH_MIN_INTERVAL_S
            if self._keys is not None and (not refresh or recent):
                return self._keys
            try:
                if not self._jwks_uri:
                    response = await self._client.get(f"{self._issuer}/.well-known/openid-configuration")
                    discovery = response.raise_for_status().json()
                    if str(discovery.get("issuer", "")).rstrip("/") != self._issuer:
                        raise SignInRefused(f"the discovery document names issuer {discovery.get('issuer')!r}, "
                                            f"not the configured {self._settings.issuer!r}")
                    self._jwks_uri = discovery["jwks_uri"]
                    offered = discovery.get("id_token_signing_alg_values_supported") or ["RS256"]
                    self._algorithms = [a for a in offered if a.startswith(self.ASYMMETRIC)] or ["RS256"]
                jwks = (await self._client.get(self._jwks_uri)).raise_for_status().json()
                self._keys = KeySet.import_key_set(jwks)
            except (httpx.HTTPError, ValueError, KeyError, TypeError, JoseError) as exc:
                raise SignInRefused(f"cannot read the issuer's signing keys: {exc}") from None
            self._fetched_at = time.monotonic()
            return self._keys

    async def verify(self, id_token: str, nonce: str) -> dict[str, Any]:
        if not nonce:
            raise SignInRefused("nonce: required (the one sent in the authorization request)")
        try:
            kid = jws.extract_compact(id_token.encode()).headers().get("kid")
        except (JoseError, ValueError) as exc:
            raise SignInRefused(f"id_token: not a JWT: {exc}") from None
        try:
            try:
                token = self._decode(id_token, kid, await self._key_set())
            except (BadSignatureError, InvalidKeyIdError):
                token = self._decode(id_token, kid, await self._key_set(refresh=True))
            jwt.JWTClaimsRegistry(
                leeway=self._settings.leeway_s,
                iss={"essential": True, "value": self._settings.issuer},
                aud={"essential": True, "value": self._settings.client_id},
                exp={"essential": True}, iat={"essential": True}, sub={"essential": True},
                nonce={"essential": True, "value": nonce},
            ).validate(token.claims)
        except (JoseError, ValueError) as exc:
            raise SignInRefused(f"id_token: {exc.__class__.__name__}: {exc}") from None
        audience = token.claims["aud"]
        azp = token.claims.get("azp")
        if (isinstance(audience, list) and len(audience) > 1 and azp != self._settings.client_id) or (
                azp is not None and azp != self._settings.client_id):
            raise SignInRefused("id_token: azp (the party it was issued to) is not this client")
        return token.claims

    def _decode(self, id_token: str, kid: str | None, keys: KeySet):
        """Verify the signature with the key `kid` names — or, for a token without one and a
        JWKS with several keys, with each key in turn (joserfc alone would refuse it)."""
        if kid is not None or len(keys.keys) <= 1:
            return jwt.decode(id_token, keys, algorithms=self._algorithms)
        failure: Exception = BadSignatureError()
        for key in keys.keys:
            try:
                return jwt.decode(id_token, key, algorithms=self._algorithms)
            except (JoseError, ValueError) as exc:
                failure = exc
        raise failure

    async def close(self) -> None:
        await self._client.aclose()


def sign_in_email(settings: SsoSettings, claims: dict[str, Any]) -> str:
    """The person's email from verified claims, if their domain may sign in."""
    email = claims.get("email")
    if not isinstance(email, str) or not re.fullmatch(EMAIL_PATTERN, email.strip().lower()):
        raise SignInRefused("the ID token carries no usable email claim (request the 'email' scope)")
    email = email.strip().lower()
    if settings.require_verified_email and claims.get("email_verified") is not True:
        raise SignInRefused(f"{email}: the issuer does not say the email is verified")
    if email.rpartition("@")[2] not in settings.allowed_domains:
        raise SignInRefused(f"{email}: the domain may not sign in")
    return email


def group_grants(settings: SsoSettings, claims: dict[str, Any], known_nodes: set[str]) -> tuple[SessionGrant, ...]:
    """The roles the person's IdP groups give them (grants on nodes that do not exist are
    skipped: they would cover nothing today and whatever is created under the name later)."""
    groups = claims.get(settings.group_claim) or []
    if isinstance(groups, str):
        groups = [groups]
    member = {g for g in groups if isinstance(g, str)}
    return tuple(SessionGrant(role=b.role, scope=b.scope, group=b.group) for b in settings.group_bindings
                 if b.group in member and (not b.scope or b.scope in known_nodes))


def signup_node_name(email: str, parent: str, taken: set[str]) -> str:
    """A node name of the person's own under `parent`: `<parent>-<local part>`, made a valid
    name, with a short hash of the email appended when that is taken (alice@a.com and
    alice@b.com both signing up)."""
    local = re.sub(r"[^a-z0-9-]+", "-", email.partition("@")[0]).strip("-") or "user"
    base = f"{parent}-{local}"[:50].rstrip("-._")
    for candidate in (base, f"{base}-{hashlib.sha256(email.encode()).hexdigest()[:8]}"):
        if candidate not in taken:
            return candidate
    # Both taken — someone signed up as the predictable fallback: a random suffix cannot be squatted.
    return f"{base}-{secrets.token_hex(4)}"


def now_ms() -> int:
    return int(time.time() * 1000)
