"""Provider simulator: OpenAI, Azure OpenAI, Anthropic, Gemini, Bedrock or Vertex AI wire format, scriptable faults.

Integration tests, the local demo and benchmarks point MegaRouter at this
instead of a real provider. Faults (latency, error rates, 429s, outages,
stalled streams) are changed at run time through ``/_sim/config``.

This module assembles the app: one wire module (``wire_openai``, ``wire_azure``,
``wire_anthropic``, ``wire_gemini``, ``wire_bedrock`` or ``wire_vertex``) supplies the model routes and its
provider's error and auth conventions; the gate here applies stats, outages
and auth to them; the control API and ``run`` are the same for every wire.

Zero data retention: nothing here logs or prints request or reply content.
The only output is the one ``ready`` line on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import json
import signal
import sys
from types import ModuleType
from typing import Any

from aiohttp import web

from megarouter.sim import faults, wire_openai
from megarouter.sim.common import STATE, SimState, json_response, read_json
from megarouter.sim.settings import (
    DEFAULT_MODELS,
    WIRES,
    SettingError,
    SimSettings,
    add_arguments,
    settings_from_args,
)

__all__ = ["STATE", "SimSettings", "add_arguments", "build_app", "run", "settings_from_args"]

# Each wire module provides: PREFIXES (paths it gates), add_routes(app),
# kind_of(path) for stats, check_auth(request, state), status_error(status,
# settings) for scripted failures and http_error(status, reason) for aiohttp's.
# check_auth may be a coroutine function (Bedrock's SigV4 signs the body, so it
# must read it); a wire with state of its own may provide reset(app), called by
# /_sim/reset, and configure(app), called after each /_sim/config update (to act on
# one-shot settings such as Vertex's vertex_revoke_tokens).
#
# Wires are imported when chosen: the Bedrock wire needs botocore (its SigV4
# signer), the Vertex wire cryptography (its JWT checks), and the other wires
# must run where they are not installed.
_WIRE_MODULES: dict[str, str] = {"openai": "megarouter.sim.wire_openai", "azure": "megarouter.sim.wire_azure",
                                 "anthropic": "megarouter.sim.wire_anthropic",
                                 "gemini": "megarouter.sim.wire_gemini", "bedrock": "megarouter.sim.wire_bedrock",
                                 "vertex": "megarouter.sim.wire_vertex"}
_WIRE = web.AppKey("megarouter_sim_wire", ModuleType)


# --------------------------------------------------------------- middleware

@web.middleware
async def _gate(request: web.Request, handler: Any) -> web.StreamResponse:
    """Stats, outages and auth for the provider surface; control endpoints skip it."""
    wire = request.app[_WIRE]
    if not request.path.startswith(wire.PREFIXES):
        return await handler(request)
    state = request.app[STATE]
    state.requests += 1
    state.count_kind(wire.kind_of(request.path))
    try:
        resp = await _admit(request, state, wire)
        trigger = state.settings.fail_on_text
        if resp is None and trigger and trigger.encode() in await request.read():
            resp = wire.status_error(500, state.settings)
        if resp is None:
            resp = await handler(request)
    except web.HTTPException as exc:
        # Unknown routes, wrong methods, oversized bodies: keep the provider's shape.
        if exc.status < 400:
            raise
        resp = wire.http_error(exc.status, exc.reason)
    state.count("reset" if isinstance(resp, faults.Dropped) else str(resp.status))
    return resp


async def _admit(request: web.Request, state: SimState, wire: ModuleType) -> web.StreamResponse | None:
    outage = state.settings.outage
    if outage == "503":
        return wire.status_error(503, state.settings)
    if outage == "reset":
        return faults.drop_connection(request)
    verdict = wire.check_auth(request, state)
    if inspect.isawaitable(verdict):
        verdict = await verdict
    return verdict


# ---------------------------------------------------------- control routes

def _invalid_config(message: str, field: str | None = None) -> web.Response:
    # The control API answers in one (OpenAI-style) shape whatever the wire,
    # so test harnesses need not know which provider a simulator plays.
    return wire_openai.invalid(message, field)


async def _healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def _get_config(request: web.Request) -> web.Response:
    return json_response(request.app[STATE].settings.to_dict())


async def _put_config(request: web.Request) -> web.Response:
    state = request.app[STATE]
    changes = await read_json(request)
    if not isinstance(changes, dict):
        return _invalid_config("config update must be a JSON object")
    try:
        state.settings = state.settings.updated(changes)
    except SettingError as exc:
        return _invalid_config(str(exc), exc.field)
    if "seed" in changes:
        state.rng.seed(state.settings.seed)
    configure_wire = getattr(request.app[_WIRE], "configure", None)
    if configure_wire is not None:
        configure_wire(request.app)
    return json_response(state.settings.to_dict())


async def _get_stats(request: web.Request) -> web.Response:
    return json_response(request.app[STATE].stats())


async def _reset_stats(request: web.Request) -> web.Response:
    state = request.app[STATE]
    state.reset_stats()
    # Restarting the random sequence lets a test replay a seeded fault pattern.
    state.rng.seed(state.settings.seed)
    reset_wire = getattr(request.app[_WIRE], "reset", None)
    if reset_wire is not None:
        reset_wire(request.app)
    return await _get_stats(request)


async def _on_shutdown(app: web.Application) -> None:
    app[STATE].closing = True  # releases stalled streams so shutdown is prompt


def build_app(settings: SimSettings | None = None, name: str = "sim",
              models: list[str] | None = None, api_key: str | None = None,
              wire: str = "openai") -> web.Application:
    """The simulator as an aiohttp app, for in-process use (tests) or ``run``."""
    if wire not in _WIRE_MODULES:
        raise ValueError(f"wire must be one of {', '.join(WIRES)}, got {wire!r}")
    if models is None:
        models = DEFAULT_MODELS.split(",")
    # Multimodal prompts carry base64 images: allow bodies well past 1 MiB.
    app = web.Application(middlewares=[_gate], client_max_size=64 * 1024 * 1024)
    app[STATE] = SimState(settings or SimSettings(), name, models, api_key, wire)
    module = importlib.import_module(_WIRE_MODULES[wire])
    app[_WIRE] = module
    module.add_routes(app)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/_sim/config", _get_config)
    app.router.add_put("/_sim/config", _put_config)
    app.router.add_post("/_sim/config", _put_config)
    app.router.add_get("/_sim/stats", _get_stats)
    app.router.add_post("/_sim/reset", _reset_stats)
    app.on_shutdown.append(_on_shutdown)
    return app


# -------------------------------------------------------------------- run

def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM; prints one JSON ``ready`` line once listening."""
    try:
        settings = settings_from_args(args)
    except SettingError as exc:
        print(f"megarouter.sim: {exc}", file=sys.stderr)
        return 2
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    # Namespaces built by older callers may predate --wire.
    wire = getattr(args, "wire", "openai")
    app = build_app(settings, args.name, models, args.api_key, wire)
    try:
        import uvloop
    except ImportError:
        return asyncio.run(_serve(app, args.host, args.port, args.name, wire))
    return uvloop.run(_serve(app, args.host, args.port, args.name, wire))


async def _serve(app: web.Application, host: str, port: int, name: str, wire: str) -> int:
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        ready = {"event": "ready", "service": "sim", "name": name,
                 "port": runner.addresses[0][1], "wire": wire}
        sys.stdout.write(json.dumps(ready) + "\n")
        sys.stdout.flush()
        await stop.wait()
    finally:
        await runner.cleanup()
    return 0
