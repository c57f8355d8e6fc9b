"""`megarouter proxy`: the data-plane process."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
from pathlib import Path

from aiohttp import web

from dataplane.app import DEFAULT_MAX_BODY_BYTES, ProxyState, build_app
from dataplane.control_plane import ControlPlaneLink, CredentialError, resolve_proxy_token
from dataplane.discovery_client import DiscoveryClient, load_cached_table
from dataplane.failover.outlier import BASE_EJECTION_S
from dataplane.http_server import HardenedAppRunner, HttpLimits
from dataplane.request_log import RequestLog
from dataplane.routing import cascade, complexity
from dataplane.telemetry_client import report_stats
from dataplane.workers import parse_workers, supervise
from megarouter import __version__, tracing
from megarouter.grpc_tls import TlsConfigError, add_client_tls_arguments, client_tls_from_args
from megarouter.runtime import announce_ready, env_default, run_service, setup_logging, stop_event
from megarouter.v1 import discovery_pb2

log = logging.getLogger("megarouter.proxy")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--listen", default=env_default("PROXY_LISTEN", "127.0.0.1:8080"),
                        help="HTTP address (host:port; port 0 picks one) [MEGAROUTER_PROXY_LISTEN]")
    parser.add_argument("--control-plane", default=env_default("CONTROL_PLANE", "127.0.0.1:50051"),
                        help="comma-separated control-plane gRPC addresses [MEGAROUTER_CONTROL_PLANE]")
    add_client_tls_arguments(parser, "control-plane-")
    parser.add_argument("--proxy-token-file", default=env_default("PROXY_TOKEN_FILE", ""),
                        help="file holding this proxy's credential for the control plane (a token with role "
                             "proxy) [MEGAROUTER_PROXY_TOKEN, or MEGAROUTER_PROXY_TOKEN_FILE; default "
                             "./.megarouter/proxy-token or ./.megarouter/store/proxy-token]")
    parser.add_argument("--node-id", default=env_default("NODE_ID", f"{socket.gethostname()}-{os.getpid()}"),
                        help="this proxy's name in the fleet [MEGAROUTER_NODE_ID]")
    parser.add_argument("--region", default=env_default("REGION", "default"), help="[MEGAROUTER_REGION]")
    parser.add_argument("--cache-file", default=env_default("CACHE_FILE", "./.megarouter/proxy-table.pb"),
                        help="last good routing table, used when the control plane is unreachable; "
                             "'' disables [MEGAROUTER_CACHE_FILE]")
    parser.add_argument("--max-body-bytes", type=int,
                        default=int(env_default("MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES)),
                        help="largest accepted request body [MEGAROUTER_MAX_BODY_BYTES]")
    parser.add_argument("--telemetry-interval", type=float,
                        default=float(env_default("TELEMETRY_INTERVAL", 2.0)),
                        help="seconds between stats and usage reports; a killed proxy loses at most this long of usage "
                             "analytics [MEGAROUTER_TELEMETRY_INTERVAL]")
    parser.add_argument("--ejection-base-s", type=float,
                        default=float(env_default("EJECTION_BASE_S", BASE_EJECTION_S)),
                        help="first outlier ejection lasts this long; each repeat doubles it "
                             "[MEGAROUTER_EJECTION_BASE_S]")
    parser.add_argument("--workers", default=env_default("PROXY_WORKERS", "1"),
                        help="worker processes sharing the port (SO_REUSEPORT), each a fleet member with "
                             "node id <node-id>-w<i>, restarted if they die; 'auto' = one per CPU "
                             "[MEGAROUTER_PROXY_WORKERS]")
    parser.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)  # set for workers
    parser.add_argument("--complexity-model", default=env_default("COMPLEXITY_MODEL", ""),
                        help="weights of the cost strategy's complexity estimate (default: the shipped "
                             "dataplane/routing/complexity_model.json; retrain with scripts/train_complexity.py) "
                             "[MEGAROUTER_COMPLEXITY_MODEL]")
    limits = HttpLimits()
    parser.add_argument("--header-timeout-s", type=float,
                        default=float(env_default("HEADER_TIMEOUT_S", limits.header_timeout_s)),
                        help="a request's head must arrive within this long of its first byte "
                             "[MEGAROUTER_HEADER_TIMEOUT_S]")
    parser.add_argument("--body-timeout-s", type=float,
                        default=float(env_default("BODY_TIMEOUT_S", limits.body_timeout_s)),
                        help="longest pause while a request body arrives (then 408) [MEGAROUTER_BODY_TIMEOUT_S]")
    parser.add_argument("--keepalive-timeout-s", type=float,
                        default=float(env_default("KEEPALIVE_TIMEOUT_S", limits.keepalive_timeout_s)),
                        help="idle client connections are closed after this long [MEGAROUTER_KEEPALIVE_TIMEOUT_S]")
    parser.add_argument("--max-header-bytes", type=int,
                        default=int(env_default("MAX_HEADER_BYTES", limits.max_field_bytes)),
                        help="longest request line or header (then 431) [MEGAROUTER_MAX_HEADER_BYTES]")
    parser.add_argument("--otel-endpoint", default=env_default("OTEL_ENDPOINT", ""), metavar="URL",
                        help="export OpenTelemetry traces over OTLP/HTTP to this URL (e.g. http://collector:4318/"
                             "v1/traces); also on with OTEL_EXPORTER_OTLP_ENDPOINT [MEGAROUTER_OTEL_ENDPOINT]")
    parser.add_argument("--request-log", default=env_default("REQUEST_LOG", ""), metavar="stdout|FILE",
                        help="write one JSON line per request (names, counts, outcomes; never content) to stdout "
                             "or a file rotated by size [MEGAROUTER_REQUEST_LOG]")
    parser.add_argument("--request-log-max-bytes", type=int,
                        default=int(env_default("REQUEST_LOG_MAX_BYTES", 100 * 1024 * 1024)),
                        help="rotate the request-log file at this size [MEGAROUTER_REQUEST_LOG_MAX_BYTES]")
    parser.add_argument("--request-log-backups", type=int, default=int(env_default("REQUEST_LOG_BACKUPS", 5)),
                        help="rotated request-log files kept [MEGAROUTER_REQUEST_LOG_BACKUPS]")
    parser.add_argument("--max-headers", type=int, default=int(env_default("MAX_HEADERS", limits.max_headers)),
                        help="most headers in one request (then 431) [MEGAROUTER_MAX_HEADERS]")
    parser.add_argument("--log-level", default=None)


def http_limits(args: argparse.Namespace) -> HttpLimits:
    for name in ("header_timeout_s", "body_timeout_s", "keepalive_timeout_s"):
        if not getattr(args, name) > 0:
            raise SystemExit(f"megarouter proxy: --{name.replace('_', '-')} must be positive")
    if args.max_header_bytes < 1024 or args.max_headers < 16:
        raise SystemExit("megarouter proxy: --max-header-bytes must be at least 1024 and --max-headers at least 16")
    return HttpLimits(header_timeout_s=args.header_timeout_s, body_timeout_s=args.body_timeout_s,
                      keepalive_timeout_s=args.keepalive_timeout_s, max_line_bytes=args.max_header_bytes,
                      max_field_bytes=args.max_header_bytes, max_headers=args.max_headers)


def run(args: argparse.Namespace) -> int:
    setup_logging(args.log_level)
    # Read (and check) the complexity weights before serving: a broken file is a start-up error
    # with what to fix, never a silent fallback on the first cost-routed request.
    try:
        complexity.use_model(args.complexity_model or None)
        cascade.use_model()
    except (complexity.ModelError, cascade.CascadeModelError) as exc:
        raise SystemExit(f"megarouter proxy: {exc}") from None
    workers = parse_workers(args.workers)
    if workers > 1 and args.request_log not in ("", "stdout"):
        # Several processes rotating one file would lose or duplicate lines.
        raise SystemExit("megarouter proxy: --request-log FILE needs --workers 1 (or use --request-log stdout)")
    if args.request_log_max_bytes < 1024 or args.request_log_backups < 0:
        raise SystemExit("megarouter proxy: --request-log-max-bytes must be at least 1024, --request-log-backups >= 0")
    if workers > 1:
        return run_service(supervise(args, workers))
    return run_service(serve(args))


async def serve(args: argparse.Namespace) -> int:
    stop = stop_event()
    addresses = [a.strip() for a in args.control_plane.split(",") if a.strip()]
    try:
        link = ControlPlaneLink(tuple(addresses), resolve_proxy_token(args.proxy_token_file),
                                client_tls_from_args(args, "control-plane-"))
    except (TlsConfigError, CredentialError, ValueError) as exc:
        raise SystemExit(f"megarouter proxy: {exc}") from None
    tracing.configure("megarouter-proxy", args.otel_endpoint)
    state = ProxyState(link, ejection_base_s=args.ejection_base_s, node_id=args.node_id, region=args.region)
    if args.request_log:
        try:
            state.pipeline.request_log = RequestLog(args.request_log, max_bytes=args.request_log_max_bytes,
                                                    backups=args.request_log_backups, node_id=args.node_id)
        except OSError as exc:
            raise SystemExit(f"megarouter proxy: --request-log: cannot open {args.request_log}: {exc.strerror}") \
                from None
    cache_path = Path(args.cache_file) if args.cache_file else None
    if cache_path is not None:
        cached, state.not_ready_reason = load_cached_table(cache_path)
        if cached is not None:
            state.install(cached)
            log.info("serving cached table version=%d until the control plane answers", cached.version)

    node = discovery_pb2.Node(id=args.node_id, region=args.region, version=__version__)
    discovery = DiscoveryClient(link, node, lambda: state.table, state.install, cache_path,
                                on_fleet_health=state.stats.health.set_fleet)

    limits = http_limits(args)
    app = build_app(state, args.max_body_bytes, limits)
    # handler_cancellation: a client that disconnects cancels its upstream call.
    runner = HardenedAppRunner(app, limits, access_log=None, handler_cancellation=True)
    await runner.setup()
    host, _, port = args.listen.rpartition(":")
    site = web.TCPSite(runner, host or "127.0.0.1", int(port), backlog=1024, reuse_address=True,
                       reuse_port=args.reuse_port or None)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    tasks = [
        asyncio.create_task(discovery.run(), name="discovery"),
        asyncio.create_task(report_stats(link, node, state.stats, state.usage, args.telemetry_interval),
                            name="telemetry"),
        asyncio.create_task(state.budgets.run(), name="budgets"),
    ]
    log.info("proxy %s listening on http://%s:%d/v1", args.node_id, host, bound)
    announce_ready("proxy", port=bound, node_id=args.node_id)
    await stop.wait()
    log.info("proxy stopping")
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await runner.cleanup()
    await state.budgets.close()  # report the last consumption before exiting
    if state.pipeline.request_log is not None:
        state.pipeline.request_log.close()
    tracing.shutdown()
    return 0
