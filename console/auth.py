"""Signing in and out: single sign-on (OIDC), operator tokens, sign-out.

Every failure a person sees is the same sentence, whatever went wrong — a wrong token, a
domain that may not sign in, an unknown user, a refused ID token — and failures are rate
limited per client address and per account. What actually went wrong is in the control
plane's log, for the operator.
"""

from __future__ import annotations

import hashlib
import logging
import time

from aiohttp import web

from console import security
from console.admin import AdminError
from console.app import form_fields, render, set_session_cookie, state_of
from console.oidc import SsoError
from megarouter.v1 import admin_pb2

log = logging.getLogger("megarouter.console.auth")

GENERIC_FAILURE = "Sign-in failed. Check what you entered, or ask your administrator for access."
TOO_MANY = "Too many failed sign-ins. Wait a few minutes, then try again."


def add_routes(app: web.Application) -> None:
    app.router.add_get("/signin", signin_page)
    app.router.add_post("/signin/token", signin_token)
    app.router.add_get("/signin/sso", signin_sso)
    app.router.add_get("/signin/callback", signin_callback)
    app.router.add_post("/signout", signout)


def _client_address(request: web.Request) -> str:
    hops = state_of(request).config.forwarded_for_hops
    return "addr:" + security.client_address(request.remote, request.headers.get("X-Forwarded-For"), hops)


def _signin(request: web.Request, *, status: int = 200, error: str = "", notice: str = "") -> web.Response:
    """The sign-in page with a fresh pre-session CSRF token (in a cookie and in the form)."""
    token = security.new_presession_token()
    request["presession_csrf"] = token
    next_path = security.safe_return_path(request.query.get("next") or request.get("next_path"))
    if not notice and request.query.get("expired"):
        notice = "Your session has ended. Sign in again."
    if not notice and request.query.get("signed_out"):
        notice = "You have signed out."
    response = render(request, "signin.html", status=status, error=error, notice=notice, next_path=next_path)
    response.set_cookie(security.PRESESSION_COOKIE, token, path="/signin", httponly=True, samesite="Strict",
                        secure=state_of(request).config.secure_cookies, max_age=3600)
    return response


async def signin_page(request: web.Request) -> web.Response:
    if request.get("viewer") is not None:
        raise web.HTTPSeeOther(security.safe_return_path(request.query.get("next")))
    return _signin(request)


async def signin_token(request: web.Request) -> web.Response:
    form = await form_fields(request)
    request["next_path"] = form.get("next", "/")
    if not security.csrf_matches(request.cookies.get(security.PRESESSION_COOKIE, ""), form.get(security.CSRF_FIELD)):
        return _signin(request, status=403, error="The sign-in form expired. Try again.")
    state = state_of(request)
    token = str(form.get("token", "")).strip()
    account = "token:" + hashlib.sha256(token.encode()).hexdigest()[:16] if token else ""
    keys = (_client_address(request), account)
    if state.limiter.blocked(*keys):
        return _signin(request, status=429, error=TOO_MANY)
    state.limiter.attempt(*keys)
    try:
        session = await state.admin.call("CreateSession", admin_pb2.CreateSessionRequest(), token)
    except AdminError as exc:
        if exc.code.name == "UNAVAILABLE":
            state.limiter.forgive(*keys)  # not the person's fault
            return _signin(request, status=503, error="The control plane is unavailable. Try again in a moment.")
        log.info("token sign-in refused (%s)", exc.code.name)
        return _signin(request, status=401, error=GENERIC_FAILURE)
    state.limiter.forgive(*keys)
    response = web.HTTPSeeOther(security.safe_return_path(str(form.get("next", "/"))))
    set_session_cookie(response, state.config, session.secret, _seconds_left(session))
    response.del_cookie(security.PRESESSION_COOKIE, path="/signin")
    raise response


async def signin_sso(request: web.Request) -> web.Response:
    state = state_of(request)
    if state.sso is None:
        return _signin(request, status=404, error="Single sign-on is not configured.")
    if state.limiter.blocked(_client_address(request)):
        return _signin(request, status=429, error=TOO_MANY)
    try:
        url, pending = await state.sso.start()
    except SsoError as exc:
        log.warning("SSO sign-in could not start: %s", exc)
        return _signin(request, status=503, error="The identity provider is unavailable. Try again in a moment.")
    pending["next"] = security.safe_return_path(request.query.get("next"))
    response = web.HTTPFound(url)
    response.set_cookie(security.SSO_STATE_COOKIE, state.signer.sign(pending), path="/signin", httponly=True,
                        samesite="Lax", secure=state.config.secure_cookies, max_age=600)
    raise response


async def signin_callback(request: web.Request) -> web.Response:
    state = state_of(request)
    pending = state.signer.verify(request.cookies.get(security.SSO_STATE_COOKIE))
    address = _client_address(request)
    if state.sso is None or pending is None or request.query.get("state") != pending.get("state"):
        # Not counted against the address: it costs nothing to send, so counting it would let
        # anyone lock everyone behind the same proxy out. Nothing is attempted either.
        log.info("SSO callback refused: no matching sign-in in flight")
        return _signin(request, status=400, error=GENERIC_FAILURE)
    request["next_path"] = pending.get("next", "/")
    if state.limiter.blocked(address):
        return _signin(request, status=429, error=TOO_MANY)
    if "error" in request.query:  # the IdP refused or the person cancelled: not a guess, not counted
        log.info("the identity provider returned error %r", request.query.get("error", "")[:100])
        return _signin(request, status=401, error=GENERIC_FAILURE)
    state.limiter.attempt(address)
    try:
        id_token, nonce = await state.sso.finish(state.config.public_url.rstrip("/") + request.path_qs, pending)
        session = await state.admin.call(
            "ExchangeIdToken", admin_pb2.ExchangeIdTokenRequest(id_token=id_token, nonce=nonce),
            state.config.console_token)
    except SsoError as exc:
        log.info("SSO sign-in failed: %s", exc)
        return _signin(request, status=401, error=GENERIC_FAILURE)
    except AdminError as exc:
        if exc.code.name == "UNAVAILABLE":
            state.limiter.forgive(address)
            return _signin(request, status=503, error="The control plane is unavailable. Try again in a moment.")
        log.info("SSO sign-in refused by the control plane (%s)", exc.code.name)
        return _signin(request, status=401, error=GENERIC_FAILURE)
    state.limiter.forgive(address)
    target = "/keys?welcome=1" if session.signed_up else security.safe_return_path(pending.get("next"))
    response = web.HTTPSeeOther(target)
    set_session_cookie(response, state.config, session.secret, _seconds_left(session))
    response.del_cookie(security.SSO_STATE_COOKIE, path="/signin")
    raise response


async def signout(request: web.Request) -> web.Response:
    viewer = request["viewer"]
    try:
        await state_of(request).admin.call("EndSession", admin_pb2.EndSessionRequest(), viewer.credential)
    except AdminError as exc:
        if not exc.signed_out:
            raise
    response = web.HTTPSeeOther("/signin?signed_out=1")
    response.del_cookie(security.SESSION_COOKIE, path="/")
    raise response


def _seconds_left(session: admin_pb2.SessionResponse) -> int:
    """The cookie lives as long as the session can (the control plane may end it sooner)."""
    return max(60, session.expires_at_unix_ms // 1000 - int(time.time()))
