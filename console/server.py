"""`megarouter console`: the web console, an aiohttp service in front of the admin API."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web

from console.admin import AdminError, AdminGateway
from console.app import STATE, ConsoleConfig, build_app
from console.oidc import SsoClient
from megarouter.runtime import announce_ready, env_default, run_service, setup_logging, stop_event
from megarouter.v1 import admin_pb2

log = logging.getLogger("megarouter.console")

# How often the console asks the control plane for its sign-in options until it gets them
# (the control plane may start after the console).
OPTIONS_RETRY_S = 2.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--listen", default=env_default("CONSOLE_LISTEN", "127.0.0.1:8090"),
                        help="host:port to serve on [MEGAROUTER_CONSOLE_LISTEN]")
    parser.add_argument("--control-plane", default=env_default("CONTROL_PLANE", "127.0.0.1:50051"),
                        help="the admin API's address [MEGAROUTER_CONTROL_PLANE]")
    parser.add_argument("--public-url", default=env_default("CONSOLE_PUBLIC_URL", ""),
                        help="how browsers reach the console (https://… in production: it decides the "
                             "cookies' Secure flag and the SSO redirect URI) [MEGAROUTER_CONSOLE_PUBLIC_URL; "
                             "default http://<listen>]")
    parser.add_argument("--proxy-url", default=env_default("CONSOLE_PROXY_URL", ""),
                        help="the OpenAI base URL shown in key snippets, e.g. https://llm.example.com/v1 "
                             "[MEGAROUTER_CONSOLE_PROXY_URL]")
    parser.add_argument("--console-token-file", default=env_default("CONSOLE_TOKEN_FILE", ""),
                        help="the console's service credential, for SSO sign-in [MEGAROUTER_CONSOLE_TOKEN or "
                             "MEGAROUTER_CONSOLE_TOKEN_FILE]; without it only token sign-in is offered")
    parser.add_argument("--oidc-client-secret-env", default="MEGAROUTER_OIDC_CLIENT_SECRET",
                        help="environment variable holding the OIDC client secret (default %(default)s)")
    parser.add_argument("--oidc-client-secret-file", default=env_default("OIDC_CLIENT_SECRET_FILE", ""),
                        help="file holding the OIDC client secret [MEGAROUTER_OIDC_CLIENT_SECRET_FILE]")
    parser.add_argument("--signin-limit", type=int, default=int(env_default("CONSOLE_SIGNIN_LIMIT", 5)),
                        help="failed sign-ins per client address or account within 5 minutes before further "
                             "attempts are refused [MEGAROUTER_CONSOLE_SIGNIN_LIMIT]")
    parser.add_argument("--forwarded-for-hops", type=int, default=int(env_default("CONSOLE_FORWARDED_FOR_HOPS", 0)),
                        help="reverse proxies in front of the console that append the client's address to "
                             "X-Forwarded-For (for per-client sign-in limits; 0: use the peer address) "
                             "[MEGAROUTER_CONSOLE_FORWARDED_FOR_HOPS]")
    parser.add_argument("--log-level", default=None)


def run(args: argparse.Namespace) -> int:
    setup_logging(args.log_level)
    return run_service(serve(args))


def _read_secret(env: str, path: str) -> str:
    value = os.environ.get(env, "").strip() if env else ""
    if value or not path:
        return value
    try:
        return Path(path).read_text().strip()
    except OSError as exc:
        raise SystemExit(f"megarouter console: cannot read {path}: {exc.strerror}") from None


async def load_sign_in_options(app: web.Application, config: ConsoleConfig, admin: AdminGateway) -> None:
    """Ask the control plane (as the console) whether SSO is on, and with which issuer; keep
    asking until it answers. SSO needs the console token and a client secret."""
    while True:
        try:
            options = await admin.call("GetSignInOptions", admin_pb2.GetSignInOptionsRequest(), config.console_token)
        except AdminError as exc:
            if exc.code.name in ("UNAVAILABLE", "DEADLINE_EXCEEDED"):
                await asyncio.sleep(OPTIONS_RETRY_S)
                continue
            log.error("the control plane refused the console's credential (%s): SSO is off", exc.code.name)
            return
        if not options.sso_enabled:
            log.info("single sign-on is not configured on the control plane: token sign-in only")
            return
        if not config.sso_client_secret:
            log.error("the control plane offers SSO (issuer %s) but the console has no client secret "
                      "(--oidc-client-secret-env / --oidc-client-secret-file): SSO is off", options.issuer)
            return
        app[STATE].sso = SsoClient(
            issuer=options.issuer, client_id=options.client_id, client_secret=config.sso_client_secret,
            redirect_uri=config.public_url.rstrip("/") + "/signin/callback", scopes=tuple(options.scopes))
        log.info("single sign-on through %s", options.issuer)
        return


async def serve(args: argparse.Namespace) -> int:
    host, _, port = args.listen.rpartition(":")
    if not host or not port.isdigit():
        raise SystemExit(f"megarouter console: --listen: expected host:port, got {args.listen!r}")
    public_url = args.public_url or f"http://{args.listen}"
    if urlsplit(public_url).scheme not in ("http", "https"):
        raise SystemExit(f"megarouter console: --public-url: expected http(s)://…, got {public_url!r}")
    console_token = _read_secret("MEGAROUTER_CONSOLE_TOKEN", args.console_token_file)
    config = ConsoleConfig(public_url=public_url, proxy_url=args.proxy_url, console_token=console_token,
                           sso_client_secret=_read_secret(args.oidc_client_secret_env, args.oidc_client_secret_file),
                           signin_limit=args.signin_limit, forwarded_for_hops=max(0, args.forwarded_for_hops))
    if args.signin_limit < 1:
        raise SystemExit("megarouter console: --signin-limit must be at least 1")
    if urlsplit(public_url).scheme == "http" and urlsplit(public_url).hostname not in ("127.0.0.1", "localhost", "::1"):
        log.warning("the console is served over plain http at %s: session cookies cross the network unencrypted; "
                    "put it behind TLS and pass --public-url https://…", public_url)
    stop = stop_event()
    admin = AdminGateway(args.control_plane)
    app = build_app(config, admin)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, int(port))
    await site.start()
    bound = site._server.sockets[0].getsockname()[1] if site._server and site._server.sockets else int(port)
    if not args.public_url:
        # Port 0 picked a port: the public URL must name the real one.
        config.public_url = f"http://{host}:{bound}"
    options = asyncio.create_task(load_sign_in_options(app, config, admin)) if console_token else None
    log.info("console listening on %s (public URL %s, control plane %s)", args.listen, config.public_url,
             args.control_plane)
    announce_ready("console", port=bound, url=config.public_url)
    await stop.wait()
    if options is not None:
        options.cancel()
    await runner.cleanup()
    await admin.close()
    return 0
