"""Google's OAuth 2.0 token endpoint, as far as service accounts use it: the JWT-bearer grant.

A client holding a service-account key file (``google.oauth2.service_account.Credentials``
in google-auth) signs a JWT with the key's private half and trades it at the file's
``token_uri`` for a short-lived access token (RFC 7523). Pointing ``token_uri`` at the
simulator's ``POST /token`` makes it that endpoint: it verifies the assertion with the
public half of the same key file (``vertex_service_account_file``) and grants a random
bearer token, which the Vertex wire then accepts until it expires.

What google-auth sends (``google.oauth2._client.jwt_grant``): a form-encoded body
``grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=<JWT>``; the JWT has
header ``{"typ": "JWT", "alg": "RS256", "kid": <private_key_id>}`` and claims ``iss``
(client_email), ``aud`` (always ``https://oauth2.googleapis.com/token``, whatever the
file's token_uri says), ``scope`` (space-separated), ``iat`` and ``exp`` (iat + 3600).

Checks, in the order Google's endpoint makes them, each refusal a 400 in OAuth's error
shape ``{"error": <code>, "error_description": <text>}``: the grant type; a well-formed JWT;
``iss`` names the key file's account; the RS256 signature (and ``kid``, when both the JWT
and the file carry one); ``aud`` is Google's token URI (or this endpoint's own URL, or the
file's token_uri); ``iat``/``exp`` describe a lifetime of at most an hour that has not
ended; ``scope`` is not empty. The scopes are remembered with the token: the Vertex wire
refuses a token without ``cloud-platform`` as Google does (403 on the call, not here).

Zero data retention: assertions are never logged; tokens live in memory only.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import os
import re
import secrets
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from megarouter.sim.common import STATE, json_response

TOKEN_PATH = "/token"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"
CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
# Audiences Google's endpoint has answered to; google-auth sends the first.
_GOOGLE_AUDIENCES = (GOOGLE_TOKEN_URI, "https://www.googleapis.com/oauth2/v4/token",
                     "https://accounts.google.com/o/oauth2/token")
_MAX_LIFETIME_S = 3600    # Google refuses assertions meant to live longer than an hour
_CLOCK_SKEW_S = 300
_SWEEP_AT = 10_000        # grants remembered before long-expired ones are dropped
_SEGMENT = re.compile(r"[A-Za-z0-9_-]*")
_NO_STORE = {"Cache-Control": "no-cache, no-store, max-age=0, must-revalidate", "Pragma": "no-cache"}


class GrantError(Exception):
    """A refused grant: the OAuth error code and Google's description."""

    def __init__(self, code: str, description: str) -> None:
        super().__init__(description)
        self.code = code
        self.description = description


# ------------------------------------------------------------ the key file

@dataclass(frozen=True)
class ServiceAccount:
    """What the simulator needs of a service-account key file (never the private key itself)."""

    client_email: str
    private_key_id: str | None
    project_id: str | None
    token_uri: str | None
    public_key: rsa.RSAPublicKey


def load_service_account(path: str) -> ServiceAccount:
    """The account in a Google service-account JSON key file; ValueError says what is wrong.

    Parsed once per version of the file (its modification time and size), so a key file
    rewritten on disk is picked up, and repeated checks cost a ``stat``.
    """
    try:
        info = os.stat(path)
    except OSError as exc:
        raise ValueError(f"cannot read service account key file {path!r}: {exc.strerror}") from None
    return _parse_key_file(path, info.st_mtime_ns, info.st_size)


@functools.lru_cache(maxsize=16)
def _parse_key_file(path: str, mtime_ns: int, size: int) -> ServiceAccount:
    try:
        with open(path, "rb") as handle:
            data = json.loads(handle.read())
    except OSError as exc:
        raise ValueError(f"cannot read service account key file {path!r}: {exc.strerror}") from None
    except ValueError:
        raise ValueError(f"service account key file {path!r} is not JSON") from None
    if not isinstance(data, dict) or data.get("type", "service_account") != "service_account":
        raise ValueError(f"{path!r} is not a service account key file (type must be service_account)")
    email, pem = data.get("client_email"), data.get("private_key")
    if not isinstance(email, str) or not email or not isinstance(pem, str):
        raise ValueError(f"service account key file {path!r} needs client_email and private_key")
    try:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ValueError(f"the private_key in {path!r} is not an unencrypted PEM private key") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError(f"the private_key in {path!r} is not an RSA key (RS256 needs one)")

    def text(name: str) -> str | None:
        value = data.get(name)
        return value if isinstance(value, str) and value else None

    return ServiceAccount(email, text("private_key_id"), text("project_id"), text("token_uri"), key.public_key())


# --------------------------------------------------------------- the JWT

def _segment(part: str) -> bytes:
    if not _SEGMENT.fullmatch(part):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _seconds(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def verify_assertion(assertion: str, account: ServiceAccount, audiences: set[str], now: float) -> dict[str, Any]:
    """The claims of a valid JWT-bearer assertion by ``account``; GrantError otherwise."""
    parts = assertion.split(".")
    try:
        if len(parts) != 3:
            raise ValueError("not three segments")
        header, claims = json.loads(_segment(parts[0])), json.loads(_segment(parts[1]))
        signature = _segment(parts[2])
    except (ValueError, binascii.Error):
        raise GrantError("invalid_grant", "Invalid JWT: the assertion is not a signed JWT.") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise GrantError("invalid_grant", "Invalid JWT: the assertion is not a signed JWT.")
    if claims.get("iss") != account.client_email:
        raise GrantError("invalid_grant", "Invalid grant: account not found")
    kid = header.get("kid")
    if header.get("alg") != "RS256" or (kid is not None and account.private_key_id and kid != account.private_key_id):
        raise GrantError("invalid_grant", "Invalid JWT Signature.")
    try:
        account.public_key.verify(signature, f"{parts[0]}.{parts[1]}".encode(), padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        raise GrantError("invalid_grant", "Invalid JWT Signature.") from None
    if claims.get("aud") not in audiences:
        raise GrantError("invalid_grant", f"Invalid JWT: Failed audience check. The right audience is "
                                          f"{GOOGLE_TOKEN_URI}")
    iat, exp = claims.get("iat"), claims.get("exp")
    if (not _seconds(iat) or not _seconds(exp) or not iat < exp <= iat + _MAX_LIFETIME_S
            or iat > now + _CLOCK_SKEW_S or exp <= now - _CLOCK_SKEW_S):
        raise GrantError("invalid_grant", "Invalid JWT: Token must be a short-lived token (60 minutes) and in a "
                                          "reasonable timeframe. Check your iat and exp values in the JWT claim.")
    scope = claims.get("scope")
    if not isinstance(scope, str) or not scope.split():
        raise GrantError("invalid_scope", "Empty or missing scope not allowed.")
    return claims


# ------------------------------------------------------------------ tokens

# What a bearer token is, to the resource server.
VALID = "valid"
EXPIRED = "expired"
UNKNOWN = "unknown"
NO_SCOPE = "insufficient_scope"


@dataclass
class _Grant:
    expires: float            # time.monotonic()
    scopes: frozenset[str]


class TokenStore:
    """Access tokens granted by ``/token``: random strings, their expiry and scopes, nothing else."""

    def __init__(self) -> None:
        self._grants: dict[str, _Grant] = {}

    def issue(self, ttl_s: int, scopes: frozenset[str]) -> str:
        now = time.monotonic()
        if len(self._grants) >= _SWEEP_AT:
            # Expired tokens are kept a while to answer ACCESS_TOKEN_EXPIRED; then forgotten.
            self._grants = {t: g for t, g in self._grants.items() if g.expires > now - _MAX_LIFETIME_S}
        token = "ya29.sim-" + secrets.token_urlsafe(48)
        self._grants[token] = _Grant(now + ttl_s, scopes)
        return token

    def check(self, token: str, scope: str = CLOUD_PLATFORM_SCOPE) -> str:
        """VALID, EXPIRED, UNKNOWN (never issued, or revoked) or NO_SCOPE."""
        grant = self._grants.get(token)
        if grant is None:
            return UNKNOWN
        if time.monotonic() >= grant.expires:
            return EXPIRED
        return VALID if scope in grant.scopes else NO_SCOPE

    def revoke_all(self) -> None:
        self._grants.clear()


TOKENS = web.AppKey("megarouter_sim_google_tokens", TokenStore)


def install(app: web.Application) -> None:
    """Serve ``POST /token`` on ``app`` (outside the provider gate: faults and auth do not apply)."""
    app[TOKENS] = TokenStore()
    app.router.add_post(TOKEN_PATH, _token_endpoint)


def _oauth_error(code: str, description: str, status: int = 400) -> web.Response:
    return json_response({"error": code, "error_description": description}, status, _NO_STORE)


async def _token_endpoint(request: web.Request) -> web.Response:
    state = request.app[STATE]
    try:
        grant = await _grant(request)
    except GrantError as exc:
        state.token_refusals += 1
        return _oauth_error(exc.code, exc.description)
    state.token_grants += 1
    return json_response(grant, headers=_NO_STORE)


async def _grant(request: web.Request) -> dict[str, Any]:
    state = request.app[STATE]
    raw = await request.read()
    if request.content_type == "application/json":
        # Google's endpoint also takes the parameters as a JSON object.
        try:
            data = json.loads(raw)
        except ValueError:
            data = None
        form = {k: v for k, v in data.items() if isinstance(v, str)} if isinstance(data, dict) else {}
    else:
        form = dict(urllib.parse.parse_qsl(raw.decode("utf-8", "replace")))
    grant_type = form.get("grant_type")
    if grant_type is None:
        raise GrantError("invalid_request", "Missing required parameter: grant_type")
    if grant_type != JWT_BEARER:
        raise GrantError("unsupported_grant_type", f"Invalid grant_type: {grant_type}")
    assertion = form.get("assertion")
    if not assertion:
        raise GrantError("invalid_request", "Missing required parameter: assertion")
    path = state.settings.vertex_service_account_file
    if not path:
        raise GrantError("invalid_grant", "Invalid grant: account not found")
    try:
        account = load_service_account(path)
    except ValueError:
        # The file was valid when configured (settings check it); it changed since.
        raise GrantError("invalid_grant", "Invalid grant: account not found") from None
    audiences = set(_GOOGLE_AUDIENCES) | {str(request.url.with_query(None))}
    if account.token_uri:
        audiences.add(account.token_uri)
    claims = verify_assertion(assertion, account, audiences, time.time())
    ttl = state.settings.vertex_token_ttl_s
    token = request.app[TOKENS].issue(ttl, frozenset(claims["scope"].split()))
    return {"access_token": token, "expires_in": ttl, "token_type": "Bearer"}
