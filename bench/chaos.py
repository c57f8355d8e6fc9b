#!/usr/bin/env python3
"""`make chaos`: failover under injected faults, as clients see it.

Starts three simulated providers (`megarouter sim`), one control plane and
two proxies connected to it, seeds one route whose degradation path is
tier 1 [m-a, m-b] -> tier 2 [m-c], then for each scenario (fresh services
every time) sends a fixed, paced load of mixed JSON and streaming chat
requests split evenly over the two proxies while a scheduler flips faults
on the simulators at fixed points of the run:

    baseline  no faults
    outage    provider A drops every connection (outage: reset) from 20% to 60% of the run
    errors    provider B answers 20% 503s and 10% 429s (Retry-After: 1) in that window
    slow      provider B 5x slower (latency and TTFT) in that window, with two 1 s stalls
              (at 20% and 45%) in which it sends nothing for 30 s
    all       all of the above at once, A's outage as HTTP 503s

Reports, per scenario, the client-seen success rate, failures by kind,
attempts per request, latency and TTFT percentiles, upstream load
amplification (requests the simulators saw / client requests) and which
endpoints served, and checks them against the target: >= 99.9% success
with amplification <= 1.2x wherever one tier of the path stays healthy.

    .venv/bin/python bench/chaos.py [--quick | --requests N] [--rate R] [--scenarios a,b] [--json PATH]

See bench/README.md ("Chaos") for the set-up and what is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import importlib.metadata
import json
import math
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

from proxy_bench import Service, Services, _git_commit, _table, proc_status  # noqa: E402

API_KEY = "sk-mr-chaos-0123456789abcdef"
# The control plane's bootstrap admin token (given to it on first start), for seeding.
ADMIN_TOKEN = "mr-admin-chaos-0123456789abcdef0123"
PROXY_TOKEN = "mr-proxy-chaos-0123456789abcdef0123"
ROUTE = "chaos"
CHAT_PATH = "/v1/chat/completions"
PROXIES = 2
READY_TIMEOUT_S = 30.0
SEED_TIMEOUT_S = 60.0

# The target, for every scenario in which at least one tier of the
# degradation path stays healthy (here: all of them).
TARGET_SUCCESS_PCT = 99.9
TARGET_AMPLIFICATION = 1.2

# Fault window, as fractions of the run's scheduled duration.
WINDOW = (0.2, 0.6)
# Stall bursts inside the slow provider's window: start (fraction of the run) and length.
# The first one starts with the window: the provider hangs before the proxies
# have measured it as slow (later, latency routing may send it nothing at all).
STALL_AT = (0.2, 0.45)
STALL_S = 1.0
STALL_MS = 30_000  # longer than any timeout of the route: the proxy must give up and move on


@dataclass(frozen=True)
class Sim:
    key: str            # a, b, c
    model: str          # the catalog model it serves (its one endpoint's model)
    tier: int           # 1 or 2 on the route's degradation path
    latency_ms: float   # JSON: whole response
    ttft_ms: float      # streams: before the first byte of the body
    tokens_per_second: float

    @property
    def endpoint(self) -> str:
        return f"e-{self.key}"

    @property
    def baseline(self) -> dict:
        return {"latency_ms": self.latency_ms, "ttft_ms": self.ttft_ms,
                "tokens_per_second": self.tokens_per_second}


# A and B are near enough in latency (within the latency strategy's 1.25x
# band) that tier 1 spreads its load over both; C is the slower fallback.
# Streams carry 16 tokens: ~ttft + 15 / tokens_per_second = 190-250 ms.
SIMS = (
    Sim("a", "m-a", 1, 40, 40, 100),
    Sim("b", "m-b", 1, 45, 45, 100),
    Sim("c", "m-c", 2, 60, 60, 80),
)
SIM_BY_KEY = {s.key: s for s in SIMS}
# What the simulator settings return to when a fault ends (besides each sim's baseline).
SIM_DEFAULTS = {"error_rate": 0.0, "error_status": 500, "rate_limit_rate": 0.0, "retry_after_s": 1.0,
                "outage": "none"}


@dataclass(frozen=True)
class Fault:
    sim: str
    settings: dict
    stalls: bool = False   # plus stall bursts (STALL_AT) while it lasts
    what: str = ""


OUTAGE_RESET = Fault("a", {"outage": "reset"}, what="A down: every connection reset")
OUTAGE_503 = Fault("a", {"outage": "503"}, what="A down: every request 503")
ERRORS = Fault("b", {"error_rate": 0.2, "error_status": 503, "rate_limit_rate": 0.1, "retry_after_s": 1.0},
               what="B: 20% 503 + 10% 429 (Retry-After: 1)")
SLOW = Fault("b", {"latency_ms": SIM_BY_KEY["b"].latency_ms * 5, "ttft_ms": SIM_BY_KEY["b"].ttft_ms * 5},
             stalls=True, what=f"B: 5x latency and TTFT, two {STALL_S:g} s stalls")


@dataclass(frozen=True)
class Scenario:
    name: str
    faults: tuple[Fault, ...]
    # Does at least one tier of the path stay healthy throughout? Then the
    # target applies. A slow provider still answers, so it counts as healthy.
    healthy_tier: bool = True

    @property
    def description(self) -> str:
        return "; ".join(f.what for f in self.faults) or "no faults"


SCENARIOS = {s.name: s for s in (
    Scenario("baseline", ()),
    Scenario("outage", (OUTAGE_RESET,)),
    Scenario("errors", (ERRORS,)),
    Scenario("slow", (SLOW,)),
    # Tier 1 is entirely unhealthy in the window (A down, B failing and slow); tier 2 (C) is healthy.
    Scenario("all", (OUTAGE_503, ERRORS, SLOW)),
)}

ROUTE_RETRY = {"max_attempts": 3, "per_try_timeout_s": 5, "total_timeout_s": 20, "ttft_timeout_s": 1,
               "stall_timeout_s": 2}


def log(message: str) -> None:
    """Progress goes to stderr so stdout holds only the report."""
    print(f"[chaos] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ the system

def manifest(ports: dict[str, int]) -> str:
    caps = "{streaming: true}"
    providers = "\n".join(
        f"  - {{name: p-{s.key}, kind: openai, base_url: 'http://127.0.0.1:{ports[s.key]}/v1', region: local}}"
        for s in SIMS)
    models = "\n".join(
        f"  - {{name: {s.model}, input_price_per_mtok: 0.5, output_price_per_mtok: 1.5, context_window: 128000, "
        f"quality_tier: 3, capabilities: {caps}}}" for s in SIMS)
    endpoints = "\n".join(f"  - {{name: {s.endpoint}, model: {s.model}, provider: p-{s.key}}}" for s in SIMS)
    tiers = ", ".join("{models: [" + ", ".join(s.model for s in SIMS if s.tier == t) + "]}" for t in (1, 2))
    retry = ", ".join(f"{k}: {v}" for k, v in ROUTE_RETRY.items())
    return f"""
providers:
{providers}
---
models:
{models}
---
endpoints:
{endpoints}
---
routes:
  - name: {ROUTE}
    strategy: latency
    tiers: [{tiers}]
    retry: {{{retry}}}
"""


# Run in a child process so that this one never loads gRPC: later scenarios
# fork new services, which a process with gRPC's threads should not do.
SEED_SCRIPT = """
import asyncio, json, sys
import grpc
from megarouter.manifest import apply_resources, describe_rpc_error, parse_manifest
from megarouter.v1 import admin_pb2, admin_pb2_grpc

def channel_to(address, token):
    try:
        from megarouter.admin_client import admin_channel
    except ImportError:  # a control plane without admin tokens
        return grpc.aio.insecure_channel(address)
    return admin_channel(address, token)

async def seed(address, text, secret, token):
    async with channel_to(address, token) as channel:
        admin = admin_pb2_grpc.AdminStub(channel)
        await apply_resources(admin, parse_manifest(text))
        created = await admin.CreateApiKey(
            admin_pb2.CreateApiKeyRequest(name="chaos", principal="chaos", secret=secret))
        return created.revision

try:
    print(json.dumps({"revision": asyncio.run(seed(*sys.argv[1:5]))}))
except grpc.aio.AioRpcError as exc:
    print(describe_rpc_error(exc), file=sys.stderr)
    sys.exit(1)
"""


async def seed_control_plane(admin_address: str, text: str) -> int:
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SEED_SCRIPT, admin_address, text, API_KEY, ADMIN_TOKEN,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=BENCH_DIR.parent)
    try:
        out, err = await asyncio.wait_for(child.communicate(), SEED_TIMEOUT_S)
    except TimeoutError:
        child.kill()
        await child.wait()
        raise RuntimeError(f"seeding the control plane took over {SEED_TIMEOUT_S:g}s") from None
    if child.returncode != 0:
        raise RuntimeError(f"seeding the control plane failed: {err.decode(errors='replace').strip()}")
    return int(json.loads(out)["revision"])


async def wait_for_table(session: aiohttp.ClientSession, proxy: Service, revision: int) -> None:
    """Poll /readyz until the proxy runs the seeded table (the only way to
    observe another process's table version)."""
    url = f"http://127.0.0.1:{proxy.port}/readyz"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + READY_TIMEOUT_S
    while loop.time() < deadline:
        try:
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as response:
                if response.status == 200 and (await response.json()).get("table_version", 0) >= revision:
                    return
        except (aiohttp.ClientError, TimeoutError, ValueError):
            pass
        await asyncio.sleep(0.05)
    raise RuntimeError(f"{proxy.name} did not install table revision {revision} within {READY_TIMEOUT_S:g}s")


@dataclass
class System:
    sims: dict[str, Service]
    controlplane: Service
    proxies: list[Service]


def start_system(services: Services, log_dir: Path, seed: int) -> System:
    python = sys.executable
    sims = {}
    for index, sim in enumerate(SIMS):
        sims[sim.key] = services.start(f"sim-{sim.key}", [
            python, "-m", "megarouter", "sim", "--port", "0", "--name", f"sim-{sim.key}", "--models", sim.model,
            "--latency-ms", str(sim.latency_ms), "--ttft-ms", str(sim.ttft_ms),
            "--tokens-per-second", str(sim.tokens_per_second), "--seed", str(seed + index),
        ], None)
    # `env` execs the control plane (same pid) with its bootstrap admin token.
    controlplane = services.start("controlplane", [
        "env", f"MEGAROUTER_ADMIN_TOKEN={ADMIN_TOKEN}", f"MEGAROUTER_PROXY_TOKEN={PROXY_TOKEN}",
        python, "-m", "megarouter", "controlplane",
        "--listen", "127.0.0.1:0", "--store", str(log_dir / "store"), "--metrics-listen", "127.0.0.1:0",
    ], None)
    proxies = [services.start(f"proxy-{n}", [
        "env", f"MEGAROUTER_PROXY_TOKEN={PROXY_TOKEN}", python, "-m", "megarouter", "proxy", "--listen", "127.0.0.1:0",
        "--control-plane", f"127.0.0.1:{controlplane.port}", "--node-id", f"chaos-proxy-{n}",
        "--cache-file", str(log_dir / f"proxy-{n}.table"),
    ], None) for n in range(1, PROXIES + 1)]
    return System(sims, controlplane, proxies)


# ------------------------------------------------------------------ the client

def request_body(stream: bool) -> bytes:
    payload: dict = {"model": ROUTE, "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Give me three tips for writing clear commit messages."},
    ]}
    if stream:
        payload.update(stream=True, stream_options={"include_usage": True})
    return json.dumps(payload).encode()


HEADERS = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
BODIES = {False: request_body(False), True: request_body(True)}


@dataclass(slots=True)
class Outcome:
    index: int
    proxy: int
    stream: bool
    due_s: float                  # scheduled start, seconds after the run began
    lag_s: float = 0.0            # how late it really started (concurrency bound)
    ok: bool = False
    kind: str = ""                # failure kind; "" when ok
    status: int = 0
    attempts: int | None = None   # x-megarouter-attempts
    endpoint: str = ""            # x-megarouter-endpoint
    latency_s: float = 0.0
    ttft_s: float | None = None   # streams: first SSE event
    message: str = ""


def _error_message(raw: bytes) -> str:
    try:
        body = json.loads(raw)
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            return f"{error.get('code') or error.get('type')}: {error.get('message')}"
    except ValueError:
        pass
    return raw[:300].decode(errors="replace")


async def send(session: aiohttp.ClientSession, base_url: str, out: Outcome, timeout_s: float) -> None:
    """One request, fully read and judged; fills `out` in place."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        async with session.post(base_url + CHAT_PATH, data=BODIES[out.stream], headers=HEADERS,
                                timeout=aiohttp.ClientTimeout(total=timeout_s)) as response:
            out.status = response.status
            attempts = response.headers.get("x-megarouter-attempts")
            out.attempts = int(attempts) if attempts and attempts.isdigit() else None
            out.endpoint = response.headers.get("x-megarouter-endpoint", "")
            if response.status != 200:
                out.kind, out.message = f"HTTP {response.status}", _error_message(await response.read())
            elif not out.stream:
                raw = await response.read()
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = None
                if isinstance(body, dict) and body.get("choices") and isinstance(body.get("usage"), dict):
                    out.ok = True
                else:
                    out.kind, out.message = "bad JSON body", raw[:300].decode(errors="replace")
            else:
                await _read_stream(response, out, started)
    except TimeoutError:
        out.kind, out.message = "client timeout", f"no complete answer within {timeout_s:g}s"
    except aiohttp.ClientPayloadError as exc:
        out.kind, out.message = "stream broken", f"{type(exc).__name__}: {exc}"
    except aiohttp.ClientError as exc:
        out.kind, out.message = "connection error", f"{type(exc).__name__}: {exc}"
    out.latency_s = loop.time() - started


async def _read_stream(response: aiohttp.ClientResponse, out: Outcome, started: float) -> None:
    """A stream succeeds only if it ends with `data: [DONE]` and carries no error event."""
    loop = asyncio.get_running_loop()
    done = False
    error = ""
    async for line in response.content:
        line = line.strip()
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if out.ttft_s is None:
            out.ttft_s = loop.time() - started
        if data == b"[DONE]":
            done = True
            continue
        if done:
            error = error or "data after [DONE]"
        if b'"error"' in data:
            try:
                event = json.loads(data)
            except ValueError:
                event = None
            if isinstance(event, dict) and event.get("error"):
                problem = event["error"]
                error = (f"{problem.get('code')}: {problem.get('message')}" if isinstance(problem, dict)
                         else str(problem))
    if error:
        out.kind, out.message = "stream error event", error
    elif not done:
        out.kind, out.message = "stream without [DONE]", "the stream ended without data: [DONE]"
    else:
        out.ok = True


async def preflight(session: aiohttp.ClientSession, system: System, timeout_s: float) -> None:
    """One JSON and one streaming request through each proxy must succeed
    before anything is counted: a run of fast 401s would be worse than none."""
    for n, proxy in enumerate(system.proxies):
        for stream in (False, True):
            out = Outcome(-1, n, stream, 0.0)
            await send(session, f"http://127.0.0.1:{proxy.port}", out, timeout_s)
            if not out.ok:
                raise RuntimeError(f"preflight via {proxy.name} ({'stream' if stream else 'json'}) failed: "
                                   f"{out.kind}: {out.message}")


# ------------------------------------------------------------------ faults

@dataclass(frozen=True)
class Flip:
    at_s: float
    sim: str
    settings: dict
    label: str


def fault_timeline(scenario: Scenario, duration_s: float) -> list[Flip]:
    """Every change to a simulator's settings, at its time in the run."""
    start, end = WINDOW[0] * duration_s, WINDOW[1] * duration_s
    flips: list[Flip] = []
    during: dict[str, dict] = collections.defaultdict(dict)   # per sim: settings in the window
    for fault in scenario.faults:
        during[fault.sim].update(fault.settings)
    for key, settings in during.items():
        sim = SIM_BY_KEY[key]
        restore = {name: {**SIM_DEFAULTS, **sim.baseline}[name] for name in settings}
        flips.append(Flip(start, key, dict(settings), "fault on"))
        flips.append(Flip(end, key, restore, "fault off"))
    for fault in scenario.faults:
        if not fault.stalls:
            continue
        back = {name: during[fault.sim].get(name, SIM_BY_KEY[fault.sim].baseline[name])
                for name in ("latency_ms", "ttft_ms")}
        for at in STALL_AT:
            flips.append(Flip(at * duration_s, fault.sim, {"latency_ms": STALL_MS, "ttft_ms": STALL_MS}, "stall on"))
            flips.append(Flip(min(at * duration_s + STALL_S, end), fault.sim, back, "stall off"))
    # One PUT per simulator and instant (two at once could land in either
    # order); at the same instant, later entries win.
    merged: dict[tuple[float, str], Flip] = {}
    for flip in flips:
        key = (round(flip.at_s, 6), flip.sim)
        if key in merged:
            first = merged[key]
            flip = Flip(first.at_s, flip.sim, {**first.settings, **flip.settings}, f"{first.label} + {flip.label}")
        merged[key] = flip
    return sorted(merged.values(), key=lambda f: f.at_s)


async def put_config(session: aiohttp.ClientSession, sim: Service, settings: dict) -> None:
    url = f"http://127.0.0.1:{sim.port}/_sim/config"
    async with session.put(url, json=settings, timeout=aiohttp.ClientTimeout(total=5)) as response:
        if response.status != 200:
            raise RuntimeError(f"PUT {url} {settings}: HTTP {response.status} {await response.text()}")


async def sim_stats(session: aiohttp.ClientSession, system: System, only: str | None = None) -> dict[str, dict]:
    stats = {}
    for key, sim in system.sims.items():
        if only is not None and key != only:
            continue
        async with session.get(f"http://127.0.0.1:{sim.port}/_sim/stats",
                               timeout=aiohttp.ClientTimeout(total=5)) as response:
            stats[key] = await response.json()
    return stats


class FaultScheduler:
    """Flips faults at their times relative to the run's start (loop timers,
    not sleeps), and records when each flip really took effect."""

    def __init__(self, session: aiohttp.ClientSession, system: System, flips: list[Flip]) -> None:
        self._session, self._system, self._flips = session, system, flips
        self._handles: list[asyncio.TimerHandle] = []
        self._tasks: set[asyncio.Task] = set()
        self.applied: list[dict] = []
        self.errors: list[str] = []

    def start(self, t0: float) -> None:
        loop = asyncio.get_running_loop()
        for flip in self._flips:
            self._handles.append(loop.call_at(t0 + flip.at_s, self._fire, flip, t0))

    def _fire(self, flip: Flip, t0: float) -> None:
        task = asyncio.create_task(self._apply(flip, t0))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _apply(self, flip: Flip, t0: float) -> None:
        loop = asyncio.get_running_loop()
        try:
            await put_config(self._session, self._system.sims[flip.sim], flip.settings)
        except (aiohttp.ClientError, TimeoutError, RuntimeError) as exc:
            self.errors.append(f"{flip.label} sim-{flip.sim} at {flip.at_s:.1f}s: {exc}")
            return
        done = loop.time() - t0
        # What the simulator had seen by then: requests per interval between flips.
        seen = None
        try:
            seen = (await sim_stats(self._session, self._system, flip.sim))[flip.sim]["requests"]
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            self.errors.append(f"stats of sim-{flip.sim} at {flip.at_s:.1f}s: {exc}")
        self.applied.append({"at_s": round(done, 3), "scheduled_s": round(flip.at_s, 3), "sim": flip.sim,
                             "label": flip.label, "settings": flip.settings, "sim_requests": seen})
        log(f"  t={done:6.1f}s  sim-{flip.sim} {flip.label}: {flip.settings}")

    async def stop(self) -> None:
        for handle in self._handles:
            handle.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


# ------------------------------------------------------------------ one scenario

async def run_load(sessions: list[aiohttp.ClientSession], system: System, args: argparse.Namespace,
                   t0: float) -> list[Outcome]:
    """args.requests requests at args.rate per second (open loop), alternating
    proxies, at most args.concurrency in flight; returns when all are done."""
    loop = asyncio.get_running_loop()
    rng = random.Random(args.seed)
    gate = asyncio.Semaphore(args.concurrency)
    outcomes: list[Outcome] = []
    tasks: set[asyncio.Task] = set()
    bases = [f"http://127.0.0.1:{p.port}" for p in system.proxies]
    progress_every = max(1, args.requests // 10)

    async def one(out: Outcome) -> None:
        try:
            await send(sessions[out.proxy], bases[out.proxy], out, args.timeout)
        finally:
            gate.release()

    try:
        for index in range(args.requests):
            due = index / args.rate
            delay = t0 + due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)  # pacing the load, not waiting for anything
            await gate.acquire()
            out = Outcome(index, index % PROXIES, rng.random() < args.stream_fraction, due)
            out.lag_s = max(0.0, loop.time() - t0 - due)
            outcomes.append(out)
            task = asyncio.create_task(one(out))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            if (index + 1) % progress_every == 0:
                failed = sum(1 for o in outcomes if o.kind)
                log(f"  t={loop.time() - t0:6.1f}s  {index + 1:,} sent, {failed:,} failed so far")
        if tasks:
            await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
    return outcomes


async def proxy_metrics(session: aiohttp.ClientSession, proxy: Service) -> dict[str, float]:
    """The failover counters of one proxy's /metrics, `name{labels}` -> value."""
    wanted = ("megarouter_retry_budget_exhausted_total", "megarouter_endpoint_ejections_total",
              "megarouter_upstream_requests_total", "megarouter_requests_total")
    async with session.get(f"http://127.0.0.1:{proxy.port}/metrics",
                           timeout=aiohttp.ClientTimeout(total=5)) as response:
        text = await response.text()
    values = {}
    for line in text.splitlines():
        if line.startswith(wanted):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


async def run_scenario(scenario: Scenario, args: argparse.Namespace, log_dir: Path, machine: dict) -> dict:
    """Fresh services, seed, preflight, the load with its faults, the numbers;
    the services are stopped whatever happens. Fills `machine` on first use."""
    services = Services(log_dir)
    try:
        system = start_system(services, log_dir, args.seed)
        if not machine:
            machine.update(machine_description(system.proxies[0]))
        return await _run_scenario(scenario, args, log_dir, system)
    finally:
        services.stop_all()


async def _run_scenario(scenario: Scenario, args: argparse.Namespace, log_dir: Path, system: System) -> dict:
    duration_s = args.requests / args.rate
    limit = aiohttp.TCPConnector(limit=args.concurrency)
    async with aiohttp.ClientSession(connector=limit) as control:
        revision = await seed_control_plane(f"127.0.0.1:{system.controlplane.port}",
                                            manifest({k: s.port for k, s in system.sims.items()}))
        for proxy in system.proxies:
            await wait_for_table(control, proxy, revision)
        sessions = [aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=args.concurrency))
                    for _ in system.proxies]
        try:
            await preflight(control, system, args.timeout)
            before = await sim_stats(control, system)
            scheduler = FaultScheduler(control, system, fault_timeline(scenario, duration_s))
            loop = asyncio.get_running_loop()
            t0 = loop.time() + 0.05
            scheduler.start(t0)
            try:
                outcomes = await asyncio.wait_for(run_load(sessions, system, args, t0),
                                                  duration_s + args.timeout + 60)
            finally:
                await scheduler.stop()
            wall_s = loop.time() - t0
        finally:
            for session in sessions:
                await session.close()
        if scheduler.errors:
            raise RuntimeError(f"{scenario.name}: fault flips failed: {'; '.join(scheduler.errors)}")
        after = await sim_stats(control, system)
        metrics = [await proxy_metrics(control, proxy) for proxy in system.proxies]
    result = summarize(scenario, outcomes, before, after, duration_s, wall_s)
    result["faults_applied"] = scheduler.applied
    result["sim_intervals"] = sim_intervals(scheduler.applied, before, after, wall_s)
    result["proxy_metrics"] = metrics
    result["proxy_ports"] = [p.port for p in system.proxies]
    failures_path = log_dir / "client-failures.jsonl"
    with open(failures_path, "w") as handle:
        for out in outcomes:
            if not out.ok:
                handle.write(json.dumps(asdict(out)) + "\n")
    result["failures_file"] = str(failures_path)
    return result


# ------------------------------------------------------------------ numbers

def sim_intervals(applied: list[dict], before: dict, after: dict, wall_s: float) -> dict[str, list[dict]]:
    """Per faulted simulator: the requests it saw between consecutive flips
    (so a stall that no request reached shows as 0)."""
    intervals = {}
    for key in sorted({flip["sim"] for flip in applied}):
        points = [(0.0, "start", before[key]["requests"])]
        points += [(f["at_s"], f["label"], f["sim_requests"]) for f in sorted(applied, key=lambda f: f["at_s"])
                   if f["sim"] == key and f["sim_requests"] is not None]
        points.append((wall_s, "end", after[key]["requests"]))
        intervals[key] = [{"from_s": round(a[0], 1), "to_s": round(b[0], 1), "after": a[1], "requests": b[2] - a[2]}
                          for a, b in zip(points, points[1:], strict=False)]
    return intervals


def percentile(values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile of unsorted values (None if empty)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 1)


def summarize(scenario: Scenario, outcomes: list[Outcome], before: dict, after: dict,
              duration_s: float, wall_s: float) -> dict:
    total = len(outcomes)
    ok = [o for o in outcomes if o.ok]
    failed = [o for o in outcomes if not o.ok]
    window = (WINDOW[0] * duration_s, WINDOW[1] * duration_s) if scenario.faults else None

    def phase(o: Outcome) -> str:
        if window is None:
            return "no window"
        return "before" if o.due_s < window[0] else "during" if o.due_s < window[1] else "after"

    streams_ok = [o for o in ok if o.stream]
    attempts = collections.Counter(o.attempts for o in ok if o.attempts)
    upstream = {k: after[k]["requests"] - before[k]["requests"] for k in after}
    by_status = {k: {s: n - before[k]["by_status"].get(s, 0) for s, n in after[k]["by_status"].items()
                     if n - before[k]["by_status"].get(s, 0)} for k in after}
    messages = collections.Counter(f"{o.kind}: {o.message[:200]}" for o in failed)
    success_pct = 100.0 * len(ok) / total if total else 0.0
    amplification = sum(upstream.values()) / total if total else 0.0
    return {
        "scenario": scenario.name,
        "faults": scenario.description,
        "target_applies": scenario.healthy_tier,
        "requests": total,
        "streams": sum(1 for o in outcomes if o.stream),
        "succeeded": len(ok),
        "success_pct": success_pct,
        "failed_by_kind": dict(collections.Counter(o.kind for o in failed).most_common()),
        "failed_by_phase": dict(collections.Counter(phase(o) for o in failed)),
        "failed_by_proxy": dict(collections.Counter(f"proxy-{o.proxy + 1}" for o in failed)),
        "failure_messages": dict(messages.most_common(8)),
        "attempts_mean": sum(n * c for n, c in attempts.items()) / sum(attempts.values()) if attempts else None,
        "attempts_distribution": {str(n): attempts[n] for n in sorted(attempts)},
        "latency_ms": {"p50": _ms(percentile([o.latency_s for o in ok], 50)),
                       "p99": _ms(percentile([o.latency_s for o in ok], 99)),
                       "max": _ms(max((o.latency_s for o in ok), default=None))},
        "json_latency_ms": {"p50": _ms(percentile([o.latency_s for o in ok if not o.stream], 50)),
                            "p99": _ms(percentile([o.latency_s for o in ok if not o.stream], 99))},
        "stream_latency_ms": {"p50": _ms(percentile([o.latency_s for o in streams_ok], 50)),
                              "p99": _ms(percentile([o.latency_s for o in streams_ok], 99))},
        "ttft_ms": {"p50": _ms(percentile([o.ttft_s for o in streams_ok if o.ttft_s is not None], 50)),
                    "p99": _ms(percentile([o.ttft_s for o in streams_ok if o.ttft_s is not None], 99))},
        "upstream_requests": upstream,
        "upstream_by_status": by_status,
        "amplification": amplification,
        "served_by": dict(collections.Counter(o.endpoint for o in ok).most_common()),
        "served_by_phase": {p: dict(sorted(collections.Counter(o.endpoint for o in ok if phase(o) == p).items()))
                            for p in ("before", "during", "after")} if window else {},
        "scheduled_s": duration_s,
        "wall_s": wall_s,
        "max_start_lag_s": max((o.lag_s for o in outcomes), default=0.0),
        "pass": success_pct >= TARGET_SUCCESS_PCT and amplification <= TARGET_AMPLIFICATION,
    }


# ------------------------------------------------------------------ report

def machine_description(proxy: Service) -> dict:
    cpu_model = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        platform.processor() or "unknown",
    )
    try:
        maps = Path(f"/proc/{proxy.pid}/maps").read_text()
    except OSError:
        maps = ""
    uvloop = (f"yes, {importlib.metadata.version('uvloop')} (loaded in the proxy process)" if "uvloop" in maps
              else "no (asyncio's default loop)")
    return {
        "CPU": cpu_model,
        "cores": os.cpu_count(),
        "usable by this script": proc_status(os.getpid(), "Cpus_allowed_list"),
        "kernel": f"{platform.system()} {platform.release()}",
        "Python": f"{platform.python_implementation()} {platform.python_version()}",
        "aiohttp": importlib.metadata.version("aiohttp"),
        "uvloop": uvloop,
        "commit": _git_commit(),
    }


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.0f}%" if whole else "-"


def _num(value: float | None, spec: str = ".0f") -> str:
    return "-" if value is None else format(value, spec)


def results_table(results: list[dict]) -> list[str]:
    header = ["scenario", "requests", "success %", "failed (by kind)", "attempts mean", "attempts 1/2/3",
              "p50 ms", "p99 ms", "TTFT p50 ms", "TTFT p99 ms", "amplification", "served by", "result"]
    rows = []
    for r in results:
        dist = r["attempts_distribution"]
        failed = ", ".join(f"{n} {kind}" for kind, n in r["failed_by_kind"].items()) or "0"
        served = ", ".join(f"{e} {_pct(n, r['succeeded'])}" for e, n in sorted(r["served_by"].items()))
        rows.append([
            r["scenario"], f"{r['requests']:,}", f"{r['success_pct']:.2f}", failed, _num(r["attempts_mean"], ".3f"),
            "/".join(str(dist.get(str(n), 0)) for n in (1, 2, 3)),
            _num(r["latency_ms"]["p50"]), _num(r["latency_ms"]["p99"]),
            _num(r["ttft_ms"]["p50"]), _num(r["ttft_ms"]["p99"]),
            f"{r['amplification']:.3f}x", served,
            ("PASS" if r["pass"] else "FAIL") if r["target_applies"] else "n/a",
        ])
    return _table(header, rows, numeric=frozenset({1, 2, 4, 6, 7, 8, 9, 10}))


def details(r: dict) -> list[str]:
    lines = [f"### {r['scenario']}: {r['faults']}", ""]
    upstream = ", ".join(f"sim-{k} {n:,} {r['upstream_by_status'].get(k, {})}"
                         for k, n in r["upstream_requests"].items())
    lines.append(f"- upstream requests (simulators' /_sim/stats deltas, by status): {upstream}")
    lines.append(f"- latency p50/p99 ms: JSON {_num(r['json_latency_ms']['p50'])}/{_num(r['json_latency_ms']['p99'])}, "
                 f"streams {_num(r['stream_latency_ms']['p50'])}/{_num(r['stream_latency_ms']['p99'])}, "
                 f"max {_num(r['latency_ms']['max'])}")
    lines.append(f"- run: {r['scheduled_s']:.0f} s scheduled, {r['wall_s']:.1f} s until the last answer; "
                 f"latest start {r['max_start_lag_s'] * 1000:.0f} ms behind schedule")
    for flip in r["faults_applied"]:
        lines.append(f"- t={flip['at_s']:.1f}s sim-{flip['sim']} {flip['label']}: {flip['settings']}")
    for key, spans in r["sim_intervals"].items():
        lines.append(f"- sim-{key} requests between flips: " + ", ".join(
            f"{s['from_s']:g}-{s['to_s']:g}s ({s['after']}) {s['requests']:,}" for s in spans))
    if r["served_by_phase"]:
        lines.append("- served by, before / during / after the fault window: " + " / ".join(
            ", ".join(f"{e} {n:,}" for e, n in served.items()) or "-" for served in r["served_by_phase"].values()))
    counters = collections.defaultdict(float)
    for metrics in r["proxy_metrics"]:
        for name, value in metrics.items():
            if name.startswith(("megarouter_retry_budget_exhausted_total", "megarouter_endpoint_ejections_total")):
                counters[name] += value
    if counters:
        shown = ", ".join(f"{name} {value:g}" for name, value in sorted(counters.items()))
        lines.append(f"- proxies' counters (both, summed): {shown}")
    if r["failed_by_kind"]:
        lines.append(f"- failed by phase of the fault window: {r['failed_by_phase']}; by proxy: {r['failed_by_proxy']}")
        lines.append("- failure messages (most common):")
        lines += [f"    - {n} x {message}" for message, n in r["failure_messages"].items()]
        lines.append(f"- every failed request: {r['failures_file']}")
    return lines + [""]


def report(machine: dict, settings: dict, results: list[dict]) -> str:
    lines = ["## Machine", ""]
    lines += [f"- {key}: {value}" for key, value in machine.items()]
    lines += ["", "## Settings", ""]
    lines += [f"- {key}: {value}" for key, value in settings.items()]
    lines += ["", "## Results", ""]
    lines += results_table(results)
    lines += ["", "p50/p99: successful requests, whole answer (streams: until [DONE]); TTFT: streams, first SSE "
                  "event. Attempts 1/2/3: successful requests by x-megarouter-attempts.", "", "## Details", ""]
    for result in results:
        lines += details(result)
    lines += ["## Target", ""]
    checked = [r for r in results if r["target_applies"]]
    rows = [[r["scenario"], f">= {TARGET_SUCCESS_PCT}% succeed, amplification <= {TARGET_AMPLIFICATION:g}x",
             f"{r['success_pct']:.2f}%, {r['amplification']:.3f}x", "PASS" if r["pass"] else "FAIL"]
            for r in checked]
    lines += _table(["scenario", "required", "measured", "result"], rows)
    verdict = "PASS" if checked and all(r["pass"] for r in checked) else "FAIL"
    lines += ["", f"Overall: **{verdict}** ({sum(r['pass'] for r in checked)}/{len(checked)} scenarios)"]
    return "\n".join(lines)


# ------------------------------------------------------------------ main

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Failover under injected faults (see bench/README.md, Chaos).")
    parser.add_argument("--requests", type=int, default=None, help="requests per scenario (default 10000)")
    parser.add_argument("--rate", type=float, default=100.0, help="requests per second, both proxies together "
                        "(default 100)")
    parser.add_argument("--quick", action="store_true", help="2000 requests per scenario (~20 s each)")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), metavar="NAMES",
                        help=f"comma-separated subset of {', '.join(SCENARIOS)} (default: all)")
    parser.add_argument("--stream-fraction", type=float, default=0.3, help="share of streaming requests (0.3)")
    parser.add_argument("--concurrency", type=int, default=256, help="most requests in flight (256)")
    parser.add_argument("--timeout", type=float, default=30.0, help="client timeout per request, seconds (30)")
    parser.add_argument("--seed", type=int, default=1, help="seeds the request mix and the simulators' faults")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the raw numbers here")
    parser.add_argument("--keep-logs", action="store_true", help="keep the service logs even when all pass")
    args = parser.parse_args(argv)
    if args.requests is None:
        args.requests = 2000 if args.quick else 10000
    chosen = [name.strip() for name in args.scenarios.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in SCENARIOS]
    if unknown or not chosen:
        parser.error(f"--scenarios: unknown {', '.join(unknown) or 'empty list'} (choose from {', '.join(SCENARIOS)})")
    args.scenarios = [s for s in SCENARIOS.values() if s.name in chosen]
    if args.requests < 10 or args.rate <= 0 or args.concurrency < 1 or args.timeout <= 0:
        parser.error("--requests >= 10, --rate > 0, --concurrency >= 1 and --timeout > 0, please")
    if not 0 <= args.stream_fraction <= 1:
        parser.error("--stream-fraction must be between 0 and 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    tmp = Path(tempfile.mkdtemp(prefix="megarouter-chaos-"))
    ok = False
    all_pass = False
    try:
        results, machine = _run(args, tmp)
        settings = describe_settings(args)
        print(report(machine, settings, results), flush=True)
        if args.json:
            args.json.write_text(json.dumps({
                "machine": machine, "settings": settings,
                "targets": {"success_pct": TARGET_SUCCESS_PCT, "amplification": TARGET_AMPLIFICATION},
                "scenarios": results,
            }, indent=2) + "\n")
            log(f"raw numbers written to {args.json}")
        ok = True
        all_pass = all(r["pass"] for r in results if r["target_applies"])
        return 0
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    except (RuntimeError, subprocess.SubprocessError, OSError, TimeoutError, aiohttp.ClientError) as exc:
        log(f"failed: {exc}")
        return 1
    finally:
        if ok and all_pass and not args.keep_logs:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            log(f"service logs kept in {tmp}")


def _run(args: argparse.Namespace, tmp: Path) -> tuple[list[dict], dict]:
    machine: dict = {}

    async def everything() -> list[dict]:
        results = []
        log(f"{len(args.scenarios)} scenario(s) of {args.requests:,} requests at {args.rate:g}/s "
            f"({args.requests / args.rate:.0f} s each, plus start-up); service logs in {tmp}")
        for scenario in args.scenarios:
            log(f"scenario {scenario.name}: {scenario.description}")
            log_dir = tmp / scenario.name
            log_dir.mkdir()
            result = await run_scenario(scenario, args, log_dir, machine)
            results.append(result)
            log(f"{scenario.name}: {result['success_pct']:.2f}% ok, "
                f"{result['requests'] - result['succeeded']:,} failed, amplification "
                f"{result['amplification']:.3f}x -> {'PASS' if result['pass'] else 'FAIL'}")
        return results

    try:
        import uvloop
    except ImportError:
        return asyncio.run(everything()), machine
    return uvloop.run(everything()), machine


def describe_settings(args: argparse.Namespace) -> dict:
    sims = "; ".join(f"sim-{s.key} ({s.endpoint}, {s.model}, tier {s.tier}): JSON {s.latency_ms:g} ms, "
                     f"TTFT {s.ttft_ms:g} ms + 16 tokens at {s.tokens_per_second:g}/s" for s in SIMS)
    return {
        "system": f"3 simulators (megarouter sim, OpenAI wire), 1 control plane, {PROXIES} proxies on it; "
                  "fresh services for every scenario; nothing pinned",
        "simulators": sims,
        "route": f"{ROUTE}: strategy latency, tiers [m-a, m-b] -> [m-c], retry "
                 + ", ".join(f"{k} {v}" for k, v in ROUTE_RETRY.items()) + ", retry budget 20% (default)",
        "load": f"{args.requests:,} requests per scenario at {args.rate:g}/s "
                f"({args.requests / args.rate:.0f} s), alternating proxies, {args.stream_fraction:.0%} streaming "
                f"(include_usage), at most {args.concurrency} in flight, {args.timeout:g} s client timeout, "
                f"aiohttp, seed {args.seed}",
        "fault window": f"{WINDOW[0]:.0%}-{WINDOW[1]:.0%} of each run; stalls at "
                        + ", ".join(f"{a:.0%}" for a in STALL_AT) + f" for {STALL_S:g} s",
        "success": "HTTP 200 and a chat.completion with choices and usage, or a stream with no error event "
                   "ending in data: [DONE]",
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
    }


def _terminate(signum: int, _frame) -> None:
    # SIGTERM unwinds like Ctrl-C, so the `finally` blocks stop the services.
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    sys.exit(main())
