"""A real OpenID Connect issuer for the console's SSO tests: oidc-provider-mock, run in-process.

    with oidc_issuer() as issuer:
        issuer.add_user("alice", email="alice@example.com", groups=["admins"])
        ...  # point the console at issuer.url; sign in with issuer.authorize_with_http(url, "alice")

What the mock (0.3.4) does and does not do, which the tests must keep in mind:

- The issuer is whatever host the request named (`flask.request.host_url`), so every party must
  reach it as ``http://127.0.0.1:<port>`` (``issuer.url``), never ``localhost``, or ``iss`` differs.
- Any client_id/secret is accepted unless ``require_client_registration=True``; then clients come
  from ``register_client`` and their redirect URIs are matched exactly. Token endpoint client auth:
  ``client_secret_basic`` or ``client_secret_post`` (not ``none``).
- It ignores PKCE: ``code_challenge`` is dropped and ``code_verifier`` never checked. This helper
  puts a small WSGI middleware in front that does check S256 (``enforce_pkce=True``, the default),
  so a console that gets PKCE wrong fails its tests.
- ID tokens are RS256, ``aud`` is ``[client_id]``, ``nonce`` is echoed when sent. Claims set with
  ``add_user`` land in the ID token (and userinfo): non-standard ones (``groups``) always, standard
  ones by scope (``email``/``email_verified`` need ``email``, ``name`` needs ``profile``).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import authlib.deprecate
import httpx
import werkzeug.serving

with warnings.catch_warnings():
    # The mock imports the deprecated `authlib.jose`; not ours to fix. (authlib.deprecate, imported
    # above, installs an "always" filter for its warnings at import time; this one goes in front.)
    warnings.simplefilter("ignore", authlib.deprecate.AuthlibDeprecationWarning)
    import oidc_provider_mock

# Each ID token the mock signs goes through authlib's legacy `get_jwt_config` hook, which warns.
# The warning is raised in the issuer's server thread; under `-W error` it would fail the token
# request with a 500. Ignore exactly that message (pytest's own per-test filters take precedence).
warnings.filterwarnings("ignore", message=r"get_jwt_config\(self, grant\) is deprecated", category=DeprecationWarning)

_HOST = "127.0.0.1"

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


@dataclass
class Issuer:
    """A running issuer. ``url`` is the issuer identifier (no trailing slash) and base URL."""

    url: str

    @property
    def discovery_url(self) -> str:
        return f"{self.url}/.well-known/openid-configuration"

    @property
    def authorization_endpoint(self) -> str:
        return f"{self.url}/oauth2/authorize"

    @property
    def token_endpoint(self) -> str:
        return f"{self.url}/oauth2/token"

    @property
    def jwks_uri(self) -> str:
        return f"{self.url}/jwks"

    def add_user(
        self,
        sub: str,
        *,
        email: str,
        name: str | None = None,
        groups: list[str] | None = None,
        email_verified: bool = True,
    ) -> None:
        """Define (or replace: the mock stores the body wholesale) the user ``sub`` and its claims."""
        claims: dict[str, object] = {"email": email, "email_verified": email_verified}
        if name is not None:
            claims["name"] = name
        if groups is not None:
            claims["groups"] = list(groups)
        response = httpx.put(f"{self.url}/users/{sub}", json=claims)
        response.raise_for_status()  # 204 No Content

    def register_client(
        self, redirect_uris: list[str], *, token_endpoint_auth_method: str = "client_secret_basic"
    ) -> tuple[str, str]:
        """Register a client (needed only with ``require_client_registration=True``): (id, secret)."""
        response = httpx.post(
            f"{self.url}/oauth2/clients",
            json={"redirect_uris": redirect_uris, "token_endpoint_auth_method": token_endpoint_auth_method},
        )
        response.raise_for_status()
        body = response.json()
        return body["client_id"], body["client_secret"]

    def authorize_with_http(self, authorize_url: str, sub: str) -> str:
        """Sign in as ``sub`` on the authorization page without a browser.

        Does what the page's form does (POST ``sub=<sub>`` to the same URL, query string included)
        and returns the redirect it answers with: the client's callback URL with ``code`` and
        ``state`` (or ``error`` if the issuer refused). The redirect is not followed. A ``sub``
        that was never added becomes a user whose only claim is ``email=<sub>``.
        """
        with httpx.Client(follow_redirects=False) as client:
            page = client.get(authorize_url)  # validates client_id / redirect_uri / scope / nonce first
            if page.status_code == 302:  # refused, with an error sent back to the client's redirect_uri
                return page.headers["location"]
            if page.status_code != 200 or 'name="sub"' not in page.text:
                raise AssertionError(f"authorize page refused ({page.status_code}): {page.text[:500]}")
            response = client.post(authorize_url, data={"sub": sub})
        if response.status_code != 302 or "location" not in response.headers:
            raise AssertionError(f"authorize did not redirect ({response.status_code}): {response.text[:500]}")
        return response.headers["location"]


class _PkceEnforcer:
    """WSGI middleware giving the mock the RFC 7636 (S256) check it lacks.

    On a completed authorization (POST /oauth2/authorize answered with a redirect carrying a
    ``code``) it remembers the request's ``code_challenge``; on the code's token request it
    requires ``BASE64URL(SHA256(code_verifier)) == code_challenge`` and otherwise answers
    ``invalid_grant`` itself, before the mock sees (and would accept) the code.
    """

    def __init__(self, app: WSGIApp) -> None:
        self._app = app
        self._challenges: dict[str, tuple[str | None, str | None]] = {}  # code -> (challenge, method)
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path, method = environ.get("PATH_INFO", ""), environ.get("REQUEST_METHOD", "")
        if path == "/oauth2/token" and method == "POST":
            body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
            environ["wsgi.input"] = io.BytesIO(body)  # let the mock read it again
            error = self._check_token_request(parse_qs(body.decode()))
            if error:
                start_response(
                    "400 BAD REQUEST",
                    [("Content-Type", "application/json"), ("Cache-Control", "no-store")],
                )
                return [json.dumps({"error": "invalid_grant", "error_description": error}).encode()]
            return self._app(environ, start_response)
        if path == "/oauth2/authorize" and method == "POST":
            query = parse_qs(environ.get("QUERY_STRING", ""))

            def remember_code(status: str, headers: list[tuple[str, str]], *exc_info: Any) -> Any:
                location = dict((k.lower(), v) for k, v in headers).get("location", "")
                code = parse_qs(urlsplit(location).query).get("code")
                if code:
                    with self._lock:
                        self._challenges[code[0]] = (
                            query.get("code_challenge", [None])[0],
                            query.get("code_challenge_method", [None])[0],
                        )
                return start_response(status, headers, *exc_info)

            return self._app(environ, remember_code)
        return self._app(environ, start_response)

    def _check_token_request(self, form: dict[str, list[str]]) -> str | None:
        if form.get("grant_type") != ["authorization_code"]:
            return None
        code = form.get("code", [""])[0]
        with self._lock:
            if code not in self._challenges:
                return None  # never issued, or already redeemed: the mock rejects it (invalid_grant)
            challenge, method = self._challenges.pop(code)
        if challenge is None:
            return "PKCE required: the authorization request had no code_challenge"
        if method != "S256":
            return f"PKCE code_challenge_method must be S256, was {method}"
        verifier = form.get("code_verifier", [""])[0]
        if not verifier:
            return "missing code_verifier"
        digest = hashlib.sha256(verifier.encode("ascii")).digest()
        if base64.urlsafe_b64encode(digest).rstrip(b"=").decode() != challenge:
            return "code_verifier does not match code_challenge"
        return None


class _QuietRequestHandler(werkzeug.serving.WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass  # no access log line per request; errors are still logged


@contextmanager
def oidc_issuer(
    *,
    enforce_pkce: bool = True,
    require_nonce: bool = False,
    require_client_registration: bool = False,
) -> Iterator[Issuer]:
    """Run the mock issuer on 127.0.0.1 on a free port for the duration of the block.

    Each issuer has its own users, clients and RSA signing key (new per run).
    ``run_server_in_thread`` is not used because it binds the name "localhost" (which may be ::1).
    """
    mock = oidc_provider_mock.app(require_client_registration=require_client_registration, require_nonce=require_nonce)
    pkce = _PkceEnforcer(mock) if enforce_pkce else None
    server = werkzeug.serving.make_server(_HOST, 0, pkce or mock, threaded=True, request_handler=_QuietRequestHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        issuer = Issuer(url=f"http://{_HOST}:{server.server_port}")
        advertised = httpx.get(issuer.discovery_url).json()["issuer"]
        assert advertised == issuer.url, (advertised, issuer.url)
        yield issuer
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
