"""The console's aiohttp application: configuration, middlewares, the signed-in viewer,
and rendering. Pages live in `console.pages`, sign-in in `console.auth`.

Each request that needs a person resolves their session cookie to a `Viewer` with one
`WhoAmI` call — which is also how an ended, idle or revoked session is noticed — and every
admin call the page makes runs with that same credential.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import jinja2
from aiohttp import web

from console import security
from console.admin import AdminError, AdminGateway
from console.oidc import SsoClient
from megarouter import __version__
from megarouter.v1 import admin_pb2

log = logging.getLogger("megarouter.console")

HERE = Path(__file__).parent
STATIC = HERE / "static"


@dataclass
class ConsoleConfig:
    public_url: str                      # how browsers reach the console, e.g. https://console.example.com
    proxy_url: str = ""                  # the OpenAI base URL shown in snippets (…/v1)
    console_token: str = ""              # the console's service credential (SSO sign-in only)
    sso_client_secret: str = ""
    signin_limit: int = 5                # failed sign-ins per address or account …
    signin_window_s: float = 300.0       # … within this window, then refused until it passes
    forwarded_for_hops: int = 0          # trusted proxies in front that append to X-Forwarded-For

    @property
    def secure_cookies(self) -> bool:
        return urlsplit(self.public_url).scheme == "https"


@dataclass
class Viewer:
    """The signed-in person (or token holder) this request acts for."""
    credential: str
    token: str
    user: str
    display_name: str
    permissions: frozenset[str]
    bindings: list[Any]
    session_expires_at_unix_ms: int
    csrf: str

    @property
    def name(self) -> str:
        return self.display_name or self.user or f"token {self.token}"

    def can(self, permission: str) -> bool:
        return permission in self.permissions

    @property
    def global_roles(self) -> set[str]:
        return {b.role for b in self.bindings if not b.scope}


@dataclass
class ConsoleState:
    config: ConsoleConfig
    admin: AdminGateway
    templates: jinja2.Environment
    limiter: security.FailureLimiter
    signer: security.StateSigner
    sso: SsoClient | None = None
    extra: dict[str, Any] = field(default_factory=dict)


STATE = web.AppKey("console_state", ConsoleState)


def templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=jinja2.select_autoescape(["html"], default=True),
        undefined=jinja2.StrictUndefined,  # a misspelt variable fails the page rather than showing blank
        trim_blocks=True, lstrip_blocks=True,
    )
    env.filters["usd"] = lambda value: f"${value:,.4f}" if 0 < abs(value) < 1 else f"${value:,.2f}"
    env.filters["count"] = lambda value: f"{int(value):,}"
    env.filters["pct"] = lambda value: f"{100 * value:.1f}%"
    env.filters["ms"] = lambda value: f"{value:,.0f} ms" if value else "—"
    env.filters["ms_date"] = _ms_date
    env.filters["urlquote"] = lambda value: quote(str(value), safe="")
    return env


def _ms_date(ms: int, with_time: bool = True) -> str:
    if not ms:
        return "—"
    try:
        moment = dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
    except (ValueError, OverflowError, OSError):  # beyond the calendar: never let one row break a page
        return "—"
    return moment.strftime("%Y-%m-%d %H:%M UTC" if with_time else "%Y-%m-%d")


def state_of(request: web.Request) -> ConsoleState:
    return request.app[STATE]


def render(request: web.Request, template: str, status: int = 200, **context: Any) -> web.Response:
    state = state_of(request)
    viewer: Viewer | None = request.get("viewer")
    body = state.templates.get_template(template).render(
        viewer=viewer, csrf=viewer.csrf if viewer else request.get("presession_csrf", ""),
        path=request.path, version=__version__, sso_enabled=state.sso is not None, **context)
    return web.Response(text=body, status=status, content_type="text/html", charset="utf-8")


def error_page(request: web.Request, status: int, title: str, message: str) -> web.Response:
    return render(request, "error.html", status=status, title=title, message=message)


async def form_fields(request: web.Request) -> dict[str, str]:
    """A submitted form's text fields (a file where text was expected counts as absent);
    a body that is not UTF-8 is a 400, not a stack trace."""
    try:
        form = await request.post()
    except (UnicodeDecodeError, ValueError):
        raise web.HTTPBadRequest(text="the form is not valid UTF-8 form data\n") from None
    return {name: value for name, value in form.items() if isinstance(value, str)}


async def admin_call(request: web.Request, method: str, message: Any) -> Any:
    """An admin call as the viewer."""
    viewer: Viewer = request["viewer"]
    return await state_of(request).admin.call(method, message, viewer.credential)


async def resolve_viewer(request: web.Request) -> Viewer | None:
    credential = request.cookies.get(security.SESSION_COOKIE, "")
    if not credential:
        return None
    try:
        me = await state_of(request).admin.call("WhoAmI", admin_pb2.WhoAmIRequest(), credential)
    except AdminError as exc:
        if exc.signed_out or exc.denied:  # ended — or a credential the admin API no longer takes
            return None
        raise
    return Viewer(credential=credential, token=me.token, user=me.user, display_name=me.display_name,
                  permissions=frozenset(me.permissions), bindings=list(me.bindings),
                  session_expires_at_unix_ms=me.session_expires_at_unix_ms,
                  csrf=security.csrf_for_session(credential))


# Paths a person reaches without signing in.
PUBLIC_PREFIXES = ("/signin", "/static/", "/healthz", "/readyz")


@web.middleware
async def security_headers(request: web.Request, handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        response = exc
    response.headers.update(security.SECURITY_HEADERS)
    response.headers["Server"] = "megarouter"  # not aiohttp's version banner
    if not request.path.startswith("/static/"):
        response.headers["Cache-Control"] = "no-store"
    if isinstance(response, web.HTTPException):
        raise response
    return response


@web.middleware
async def signed_in(request: web.Request, handler) -> web.StreamResponse:
    """Resolve the viewer; send people who are not signed in to the sign-in page; check the
    CSRF token of every request that could change something."""
    public = request.path.startswith(PUBLIC_PREFIXES)
    try:
        viewer = None if request.path.startswith(("/static/", "/healthz", "/readyz")) else \
            await resolve_viewer(request)
    except AdminError as exc:
        log.warning("control plane unavailable for a page: %s", exc.code.name)
        return error_page(request, 503, "Control plane unavailable",
                          "The console cannot reach the control plane right now. Try again in a moment.")
    if viewer is None and not public:
        if request.cookies.get(security.SESSION_COOKIE):
            response = web.HTTPSeeOther(f"/signin?next={quote(request.path_qs, safe='')}&expired=1")
            response.del_cookie(security.SESSION_COOKIE, path="/")
            raise response
        if request.method != "GET" or request.headers.get("HX-Request"):
            return error_page(request, 401, "Signed out", "Sign in again to continue.")
        raise web.HTTPSeeOther(f"/signin?next={quote(request.path_qs, safe='')}")
    request["viewer"] = viewer
    # Sign-in forms carry their own pre-session token (console.auth checks it).
    if request.method not in ("GET", "HEAD", "OPTIONS") and viewer is not None and not public:
        given = request.headers.get(security.CSRF_HEADER)
        if given is None and request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
            given = (await form_fields(request)).get(security.CSRF_FIELD)
        if not security.csrf_matches(viewer.csrf, given if isinstance(given, str) else None):
            return error_page(request, 403, "Request refused",
                              "This form has expired or did not come from this console. Reload the page and try "
                              "again.")
    try:
        return await handler(request)
    except AdminError as exc:
        if exc.signed_out:
            response = web.HTTPSeeOther(f"/signin?next={quote(request.path_qs, safe='')}&expired=1")
            response.del_cookie(security.SESSION_COOKIE, path="/")
            raise response from None
        if exc.denied:
            return error_page(request, 403, "Not allowed", exc.message)
        if exc.code.name == "NOT_FOUND":
            return error_page(request, 404, "Not found", exc.message)
        if exc.invalid:
            return error_page(request, 400, "Refused", exc.message)
        log.warning("admin call failed for a page: %s", exc.code.name)
        return error_page(request, 503, "Control plane unavailable",
                          "The console cannot reach the control plane right now. Try again in a moment.")


def set_session_cookie(response: web.StreamResponse, config: ConsoleConfig, secret: str, max_age_s: int) -> None:
    response.set_cookie(security.SESSION_COOKIE, secret, path="/", httponly=True, samesite="Lax",
                        secure=config.secure_cookies, max_age=max_age_s)


def build_app(config: ConsoleConfig, admin: AdminGateway, sso: SsoClient | None = None) -> web.Application:
    from console import auth, pages

    app = web.Application(middlewares=[security_headers, signed_in], client_max_size=2 * 1024 * 1024)
    app[STATE] = ConsoleState(
        config=config, admin=admin, templates=templates(),
        limiter=security.FailureLimiter(limit=config.signin_limit, window_s=config.signin_window_s),
        signer=security.StateSigner(config.console_token or config.public_url), sso=sso)
    auth.add_routes(app)
    pages.add_routes(app)
    app.router.add_static("/static/", STATIC, append_version=False)
    app.router.add_get("/healthz", lambda _request: web.Response(text="ok\n"))
    app.router.add_get("/readyz", _ready)
    return app


async def _ready(request: web.Request) -> web.Response:
    """Ready when the control plane answers (with the console's own credential, if any)."""
    state = state_of(request)
    if not state.config.console_token:
        return web.Response(text="ready\n")
    try:
        await state.admin.call("WhoAmI", admin_pb2.WhoAmIRequest(), state.config.console_token)
    except AdminError as exc:
        return web.Response(status=503, text=f"control plane: {exc.code.name}\n")
    return web.Response(text="ready\n")
