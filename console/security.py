"""Web security for the console: cookies, CSRF, response headers, return URLs, sign-in
rate limits and the signed state of an SSO sign-in in flight.

- **The session cookie** holds the control plane's session credential. It is HttpOnly (no
  script reads it), SameSite=Lax (sent on the IdP's redirect back, not on cross-site POSTs),
  Path=/, and Secure whenever the console is served over https. The session itself is
  server-side — in the control plane's store — so signing out ends it for every replica.
- **CSRF.** Every state-changing request carries a token: a hidden `csrf` field in forms,
  or the `X-CSRF-Token` header from scripts. For a signed-in person it is an HMAC of their
  session credential, so it needs no storage and cannot be computed without the cookie; before
  sign-in it is a random value doubled in a cookie ("double submit"), which is enough to stop
  a login CSRF because another site can neither read nor set our cookies.
- **Headers.** A strict Content-Security-Policy (no inline script or style anywhere, so the
  templates keep all script and style in files under /static), no framing, no sniffing, no
  referrer to other sites, and no caching of pages (a page can show a key's secret once).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections import deque
from dataclasses import dataclass, field

import orjson

SESSION_COOKIE = "mr_console_session"
PRESESSION_COOKIE = "mr_console_pre"
SSO_STATE_COOKIE = "mr_console_sso"
CSRF_FIELD = "csrf"
CSRF_HEADER = "X-CSRF-Token"

CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                           "connect-src 'self'; font-src 'self'; object-src 'none'; frame-ancestors 'none'; "
                           "base-uri 'none'; form-action 'self'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}


def csrf_for_session(session_secret: str) -> str:
    return hmac.new(session_secret.encode(), b"megarouter-console-csrf", hashlib.sha256).hexdigest()


def csrf_matches(expected: str, given: str | None) -> bool:
    return bool(expected) and bool(given) and hmac.compare_digest(expected.encode(), given.encode())


def new_presession_token() -> str:
    return secrets.token_urlsafe(32)


def safe_return_path(candidate: str | None) -> str:
    """Where to go after sign-in: a path on this console, else "/". Anything with a scheme,
    a host (`//evil.example`), a backslash (which browsers read as a slash) or a control
    character could leave the site, so it is refused rather than repaired."""
    if not candidate or not candidate.startswith("/") or candidate.startswith("//"):
        return "/"
    if "\\" in candidate or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in candidate):
        return "/"
    if candidate.startswith(("/signin", "/signout")):
        return "/"
    return candidate


class StateSigner:
    """Signs the short-lived state of an SSO sign-in in flight (state, nonce, PKCE verifier,
    return path) into a cookie, so any console replica can finish what another started. The
    key is derived from the console's service credential, which every replica shares."""

    def __init__(self, key_material: str) -> None:
        self._key = hashlib.sha256(b"megarouter-console-state:" + key_material.encode()).digest()

    def sign(self, payload: dict, ttl_s: int = 600) -> str:
        body = base64.urlsafe_b64encode(orjson.dumps({**payload, "exp": int(time.time()) + ttl_s})).decode()
        return f"{body}.{self._mac(body)}"

    def verify(self, value: str | None) -> dict | None:
        if not value or "." not in value:
            return None
        body, _, mac = value.rpartition(".")
        if not hmac.compare_digest(mac, self._mac(body)):
            return None
        try:
            payload = orjson.loads(base64.urlsafe_b64decode(body.encode()))
        except ValueError:
            return None
        if not isinstance(payload, dict) or payload.get("exp", 0) < time.time():
            return None
        return payload

    def _mac(self, body: str) -> str:
        return hmac.new(self._key, body.encode(), hashlib.sha256).hexdigest()


@dataclass
class FailureLimiter:
    """Failed sign-ins per client address and per account: after `limit` failures within
    `window_s`, further attempts are refused until the oldest failure ages out. In memory
    per replica (a burst spread over N replicas gets N × limit tries, still far too few to
    guess a 256-bit token); `clock` is for tests.

    An attempt counts as a failure from the moment it starts (`attempt`) and is forgiven if it
    succeeds, so N guesses sent in parallel cannot all pass the check before any is counted."""

    limit: int = 5
    window_s: float = 300.0
    clock: object = time.monotonic
    max_keys: int = 100_000
    _failures: dict[str, deque[float]] = field(default_factory=dict)

    def _recent(self, key: str) -> int:
        failures = self._failures.get(key)
        if failures is None:
            return 0
        now = self.clock()
        while failures and now - failures[0] > self.window_s:
            failures.popleft()
        if not failures:
            del self._failures[key]
        return len(failures)

    def blocked(self, *keys: str) -> bool:
        return any(self._recent(key) >= self.limit for key in keys if key)

    def record_failure(self, *keys: str) -> None:
        now = self.clock()
        for key in keys:
            if not key:
                continue
            failures = self._failures.get(key)
            if failures is None:
                if len(self._failures) >= self.max_keys:  # a flood of distinct keys: forget the stalest
                    for stale in list(self._failures)[: self.max_keys // 2]:
                        del self._failures[stale]
                failures = self._failures[key] = deque(maxlen=self.limit)
            failures.append(now)

    attempt = record_failure  # counted until forgiven

    def forgive(self, *keys: str) -> None:
        """The attempt succeeded: take back the failure `attempt` counted."""
        for key in keys:
            failures = self._failures.get(key)
            if failures:
                failures.pop()
                if not failures:
                    del self._failures[key]


def client_address(remote: str | None, forwarded_for: str | None, trusted_hops: int) -> str:
    """The client's address for rate limits: the peer's, or — behind `trusted_hops` proxies
    that each append to X-Forwarded-For — the entry the outermost trusted proxy added. Entries
    further left were written by the client and are not believed."""
    if trusted_hops > 0 and forwarded_for:
        hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
        if len(hops) >= trusted_hops:
            return hops[-trusted_hops]
    return remote or "?"
