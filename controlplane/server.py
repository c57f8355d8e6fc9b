"""`megarouter controlplane`: the gRPC control plane process."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import time
from pathlib import Path

import grpc
from aiohttp import web
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from controlplane import rbac
from controlplane.admin import AdminService, TestHooksService
from controlplane.budgets import LEASE_TTL_S, BudgetLedger, BudgetsService
from controlplane.discovery import DiscoveryService, ProxyRegistry, SnapshotCache, share_proxies
from controlplane.fleet import FleetView, HealthHistory
from controlplane.identity import IDLE_TIMEOUT_S, MAX_SESSION_S, SsoConfigError, load_sso_settings
from controlplane.people import SessionPolicy
from controlplane.replicas import ReplicaSet
from controlplane.snapshot import follow_store
from controlplane.store import StoreError, open_store
from controlplane.telemetry import TelemetryService, publish_fleet_health
from controlplane.tracing_interceptor import TracingInterceptor
from controlplane.usage import FLUSH_INTERVAL_S, UsageAggregator
from megarouter import tracing
from megarouter.grpc_tls import TlsConfigError, server_credentials
from megarouter.runtime import announce_ready, env_default, setup_logging, stop_event
from megarouter.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    budgets_pb2,
    budgets_pb2_grpc,
    discovery_pb2,
    discovery_pb2_grpc,
    telemetry_pb2,
    telemetry_pb2_grpc,
)

log = logging.getLogger("megarouter.controlplane")

# Routing tables for large catalogs exceed gRPC's 4 MiB default.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
SERVER_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    # Proxies ping every few seconds to notice a dead control plane quickly.
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 2000),
    ("grpc.http2.max_ping_strikes", 0),
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--listen", default=env_default("CP_LISTEN", "127.0.0.1:50051"),
                        help="gRPC address (host:port; port 0 picks one) [MEGAROUTER_CP_LISTEN]")
    parser.add_argument("--store", default=env_default("STORE", "./.megarouter"),
                        help="store URL or data directory [MEGAROUTER_STORE]")
    parser.add_argument("--metrics-listen", default=env_default("CP_METRICS_LISTEN", "127.0.0.1:9464"),
                        help="HTTP address for /metrics and /healthz [MEGAROUTER_CP_METRICS_LISTEN]")
    parser.add_argument("--advertise", default=env_default("CP_ADVERTISE", ""),
                        help="host:port other replicas and operators reach this replica at "
                             "(default: the listen address) [MEGAROUTER_CP_ADVERTISE]")
    parser.add_argument("--replica-id", default=env_default("CP_REPLICA_ID", ""),
                        help="this replica's name in the cluster (default: random) [MEGAROUTER_CP_REPLICA_ID]")
    parser.add_argument("--tls-cert", default=env_default("CP_TLS_CERT", ""),
                        help="serve gRPC over TLS with this certificate (PEM) [MEGAROUTER_CP_TLS_CERT]")
    parser.add_argument("--tls-key", default=env_default("CP_TLS_KEY", ""),
                        help="the certificate's key [MEGAROUTER_CP_TLS_KEY]")
    parser.add_argument("--tls-client-ca", default=env_default("CP_TLS_CLIENT_CA", ""),
                        help="require every client (proxies, megarouterctl) to present a certificate "
                             "signed by this CA [MEGAROUTER_CP_TLS_CLIENT_CA]")
    parser.add_argument("--enable-test-hooks", action="store_true",
                        default=env_default("ENABLE_TEST_HOOKS", "") == "1",
                        help="register the TestHooks service (tests only)")
    parser.add_argument("--health-push-interval", type=float,
                        default=float(env_default("HEALTH_PUSH_INTERVAL", 1.0)),
                        help="seconds between fleet-health pushes to proxies [MEGAROUTER_HEALTH_PUSH_INTERVAL]")
    parser.add_argument("--health-history-step-s", type=float, default=30.0,
                        help="one point of the fleet health history (the console's sparklines) per this many "
                             "seconds; 60 points are kept")
    parser.add_argument("--usage-flush-interval", type=float,
                        default=float(env_default("USAGE_FLUSH_INTERVAL", FLUSH_INTERVAL_S)),
                        help="seconds between writes of usage analytics to the store "
                             "[MEGAROUTER_USAGE_FLUSH_INTERVAL]")
    parser.add_argument("--admin-token-file", default=env_default("ADMIN_TOKEN_FILE", ""),
                        help="bootstrap admin token file, read (or written, if absent) on first start "
                             "[MEGAROUTER_ADMIN_TOKEN_FILE; default <store dir>/admin-token]")
    parser.add_argument("--proxy-token-file", default=env_default("PROXY_TOKEN_FILE", ""),
                        help="the fleet's proxy credential, read (or written, if absent) at start and installed "
                             "as token 'proxies' if no such token exists [MEGAROUTER_PROXY_TOKEN or "
                             "MEGAROUTER_PROXY_TOKEN_FILE; default <store dir>/proxy-token]")
    parser.add_argument("--console-token-file", default=env_default("CONSOLE_TOKEN_FILE", ""),
                        help="the console's service credential (role console: it may only trade verified ID "
                             "tokens for sessions), read or written like the proxy token and installed as token "
                             "'console' [MEGAROUTER_CONSOLE_TOKEN or MEGAROUTER_CONSOLE_TOKEN_FILE; default "
                             "<store dir>/console-token]")
    parser.add_argument("--sso-config", default=env_default("SSO_CONFIG", ""),
                        help="YAML file enabling OIDC single sign-on: issuer, client_id, allowed_domains, "
                             "group_bindings, signup (see README) [MEGAROUTER_SSO_CONFIG]")
    parser.add_argument("--session-max-s", type=int, default=int(env_default("SESSION_MAX_S", MAX_SESSION_S)),
                        help="the longest a console session lives [MEGAROUTER_SESSION_MAX_S]")
    parser.add_argument("--session-idle-timeout-s", type=int,
                        default=int(env_default("SESSION_IDLE_TIMEOUT_S", IDLE_TIMEOUT_S)),
                        help="a session unused this long ends [MEGAROUTER_SESSION_IDLE_TIMEOUT_S]")
    parser.add_argument("--otel-endpoint", default=env_default("OTEL_ENDPOINT", ""), metavar="URL",
                        help="export OpenTelemetry traces of admin calls over OTLP/HTTP to this URL; also on with "
                             "OTEL_EXPORTER_OTLP_ENDPOINT [MEGAROUTER_OTEL_ENDPOINT]")
    parser.add_argument("--budget-lease-ttl-s", type=float,
                        default=float(env_default("BUDGET_LEASE_TTL_S", LEASE_TTL_S)),
                        help="a proxy's budget lease not kept alive this long is reclaimed and counted as "
                             "spent [MEGAROUTER_BUDGET_LEASE_TTL_S]")
    parser.add_argument("--log-level", default=None)


def run(args: argparse.Namespace) -> int:
    from megarouter.runtime import run_service

    setup_logging(args.log_level)
    return run_service(serve(args))


async def serve(args: argparse.Namespace) -> int:
    stop = stop_event()
    try:
        store = await open_store(args.store)
    except StoreError as exc:
        raise SystemExit(f"megarouter controlplane: cannot open the store: {exc}") from None
    if not 1 <= args.health_history_step_s <= 3600:
        raise SystemExit("megarouter controlplane: --health-history-step-s must be between 1 and 3600")
    snapshots = SnapshotCache(HealthHistory(step_s=args.health_history_step_s))
    registry = ProxyRegistry()

    directory = rbac.AccessDirectory(store)
    await _bootstrap_admin_token(store, directory, args)
    await _bootstrap_proxy_token(store, args)
    await _bootstrap_console_token(store, args)
    try:
        sso = load_sso_settings(args.sso_config) if args.sso_config else None
    except SsoConfigError as exc:
        raise SystemExit(f"megarouter controlplane: --sso-config: {exc}") from None
    if not 120 <= args.session_max_s <= MAX_SESSION_S or not 60 <= args.session_idle_timeout_s <= args.session_max_s:
        raise SystemExit(f"megarouter controlplane: --session-max-s must be 120..{MAX_SESSION_S} and "
                         "--session-idle-timeout-s 60..--session-max-s")
    session_policy = SessionPolicy(max_s=args.session_max_s, idle_timeout_s=args.session_idle_timeout_s)
    tracing.configure("megarouter-controlplane", args.otel_endpoint)
    # Tracing first: a refused call is part of the trace too.
    server = grpc.aio.server(options=SERVER_OPTIONS,
                             interceptors=[TracingInterceptor(), rbac.AuthInterceptor(directory)])
    if not 3 <= args.budget_lease_ttl_s <= 3600:
        raise SystemExit("megarouter controlplane: --budget-lease-ttl-s must be between 3 and 3600")
    ledger = BudgetLedger(store, clock=_ledger_clock(args), lease_ttl_s=args.budget_lease_ttl_s)
    # Replicas elect a leader through a store lease; it alone sweeps the budget ledger.
    replicas = ReplicaSet(store, jobs=[ledger.sweep_forever], replica_id=args.replica_id or None)
    admin_pb2_grpc.add_AdminServicer_to_server(
        AdminService(store, snapshots, registry, ledger, replicas, sso=sso, session_policy=session_policy), server)
    budgets_pb2_grpc.add_BudgetsServicer_to_server(BudgetsService(ledger), server)
    discovery_pb2_grpc.add_DiscoveryServicer_to_server(DiscoveryService(snapshots, registry), server)
    fleet = FleetView()
    usage = UsageAggregator(store)
    telemetry_pb2_grpc.add_TelemetryServicer_to_server(
        TelemetryService(fleet, usage, known_endpoints=snapshots.endpoint_names), server)
    service_names = [
        admin_pb2.DESCRIPTOR.services_by_name["Admin"].full_name,
        discovery_pb2.DESCRIPTOR.services_by_name["Discovery"].full_name,
        telemetry_pb2.DESCRIPTOR.services_by_name["Telemetry"].full_name,
        budgets_pb2.DESCRIPTOR.services_by_name["Budgets"].full_name,
    ]
    if args.enable_test_hooks:
        log.warning("test hooks enabled: TestHooks.PushRawTable bypasses validation")
        admin_pb2_grpc.add_TestHooksServicer_to_server(TestHooksService(snapshots, registry), server)
        service_names.append(admin_pb2.DESCRIPTOR.services_by_name["TestHooks"].full_name)

    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection([*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)

    if args.tls_cert or args.tls_key or args.tls_client_ca:
        try:
            credentials = server_credentials(args.tls_cert, args.tls_key, args.tls_client_ca or None)
        except TlsConfigError as exc:
            raise SystemExit(f"megarouter controlplane: {exc}") from None
        port = server.add_secure_port(args.listen, credentials)
    else:
        port = server.add_insecure_port(args.listen)
    if port == 0:
        raise SystemExit(f"cannot listen on {args.listen}")
    await server.start()
    await replicas.start(args.advertise or f"{args.listen.rsplit(':', 1)[0]}:{port}")

    publisher = asyncio.create_task(follow_store(store, snapshots), name="follow-store")
    health_pusher = asyncio.create_task(
        publish_fleet_health(fleet, snapshots, args.health_push_interval, replicas), name="fleet-health"
    )
    usage_flusher = asyncio.create_task(usage.run(args.usage_flush_interval), name="usage-flush")
    proxy_sharer = asyncio.create_task(share_proxies(registry, replicas), name="share-proxies")
    await snapshots.next_after(0)  # serve nothing until the first table exists
    for name in ["", *service_names]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)

    metrics_runner, metrics_port = await _start_metrics(args.metrics_listen)
    host = args.listen.rsplit(":", 1)[0]
    log.info("control plane listening grpc=%s:%d metrics=%d store=%s replica=%s", host, port, metrics_port,
             args.store, replicas.replica_id)
    announce_ready("controlplane", port=port, metrics_port=metrics_port, replica_id=replicas.replica_id)

    stopped = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait({publisher, stopped}, return_when=asyncio.FIRST_COMPLETED)
    exit_code = 0
    if publisher in done and publisher.exception() is not None:
        log.error("store watch failed: %s", publisher.exception())
        exit_code = 1
    log.info("control plane stopping")
    await health_servicer.enter_graceful_shutdown()
    await replicas.stop()  # hand leadership over at once
    await server.stop(grace=2)
    publisher.cancel()
    health_pusher.cancel()
    usage_flusher.cancel()
    proxy_sharer.cancel()
    stopped.cancel()
    try:
        await usage.flush()  # what proxies reported since the last flush
    except Exception:
        log.exception("usage could not be persisted at shutdown")
    await metrics_runner.cleanup()
    await store.close()
    tracing.shutdown()
    return exit_code


def _ledger_clock(args: argparse.Namespace):
    """The ledger's clock: wall time — shifted by MEGAROUTER_TEST_LEDGER_CLOCK_OFFSET_S only with
    --enable-test-hooks, so tests can put a calendar-minute edge where they need it."""
    offset = os.environ.get("MEGAROUTER_TEST_LEDGER_CLOCK_OFFSET_S", "")
    if not offset or not args.enable_test_hooks:
        return time.time
    shift = float(offset)
    log.warning("test hooks: the budget ledger's clock runs %+.1fs off wall time", shift)
    return lambda: time.time() + shift


async def _bootstrap_admin_token(store, directory: rbac.AccessDirectory, args: argparse.Namespace) -> None:
    """First start: install the operator's bootstrap admin token.

    From MEGAROUTER_ADMIN_TOKEN or --admin-token-file; with neither, one is
    generated and written (mode 0600) to the token file, whose path — never
    the token — is logged.
    """
    if await directory.has_operator_tokens():
        return
    token_file = Path(args.admin_token_file) if args.admin_token_file else _default_token_file(args.store, "admin")
    secret = _token_secret("MEGAROUTER_ADMIN_TOKEN", token_file, rbac.new_token_secret)
    if secret is None:
        raise SystemExit("no admin token: set MEGAROUTER_ADMIN_TOKEN or --admin-token-file for a new etcd store")
    await rbac.bootstrap(store, secret)


async def _bootstrap_proxy_token(store, args: argparse.Namespace) -> None:
    """Install the fleet's proxy credential (token `proxies`, role proxy) unless it exists.

    From MEGAROUTER_PROXY_TOKEN or --proxy-token-file; with neither, one is generated into
    the token file next to the store (mode 0600), where `megarouter up` hands it to its
    proxy. An etcd store with neither configured gets no proxy token: proxies are refused
    until an operator creates one (`megarouterctl tokens create NAME --role proxy`)."""
    token_file = Path(args.proxy_token_file) if args.proxy_token_file else _default_token_file(args.store, "proxy")
    secret = _token_secret("MEGAROUTER_PROXY_TOKEN", token_file, rbac.new_proxy_token_secret)
    if secret is None:
        if await store.get(rbac.TOKENS.key(rbac.PROXY_TOKEN_NAME)) is None:
            log.warning("no proxy credential configured (MEGAROUTER_PROXY_TOKEN or --proxy-token-file): proxies "
                        "are refused until a token with role proxy exists")
        return
    await rbac.bootstrap_proxy_token(store, secret)


async def _bootstrap_console_token(store, args: argparse.Namespace) -> None:
    """Install the console's service credential (token `console`, role console) unless it
    exists; from MEGAROUTER_CONSOLE_TOKEN, else --console-token-file, else generated next to
    the store like the proxy token (an etcd store with neither gets none)."""
    token_file = (Path(args.console_token_file) if args.console_token_file
                  else _default_token_file(args.store, "console"))
    secret = _token_secret("MEGAROUTER_CONSOLE_TOKEN", token_file, rbac.new_console_token_secret)
    if secret is not None:
        await rbac.bootstrap_service_token(store, rbac.CONSOLE_TOKEN_NAME, secret, "console")


def _token_secret(env: str, token_file: Path | None, generate) -> str | None:
    """A token secret from the environment, else from `token_file`, else generated into it
    (mode 0600; its path — never the secret — is logged); None with no file to write."""
    secret = os.environ.get(env, "").strip()
    if secret:
        return secret
    if token_file is None:
        return None
    if token_file.exists():
        secret = token_file.read_text().strip()
        if secret:
            return secret
    secret = generate()
    token_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secret + "\n")
    log.warning("generated a token; it is in %s", token_file)
    return secret


def _default_token_file(store_url: str, kind: str) -> Path | None:
    if store_url.startswith("etcd://"):
        return None
    return Path(store_url.removeprefix("sqlite://")) / f"{kind}-token"


async def _start_metrics(listen: str) -> tuple[web.AppRunner, int]:
    async def metrics(_request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    host, _, port = listen.rpartition(":")
    site = web.TCPSite(runner, host or "127.0.0.1", int(port))
    await site.start()
    bound_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, bound_port
