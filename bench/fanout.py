#!/usr/bin/env python3
"""Routing-table fan-out: how fast one control plane reaches N proxies.

Starts one control plane, seeds it (the proxy bench's providers, models and
endpoints plus one route), then opens N simulated discovery clients in this
process (grpc.aio, one channel and stream each, like N proxies; they only
ACK, they run no proxy). Once every client has ACKed the seeded table, it
makes M admin writes one after another (`PutRoute` changing the route's
description) and, for each, measures the time from the write's RPC return

  * until the LAST client has received a table of that version (receive
    times recorded in-process with `time.perf_counter()`), and
  * until `ListProxies` (polled every 5 ms) reports every client ACKed it.

Also reports the control plane's CPU time per push (utime+stime delta over
the write phase / (writes x clients)) and its peak RSS (VmHWM). Markdown on
stdout, progress on stderr.

    .venv/bin/python bench/fanout.py [--proxies N] [--writes M] [--json PATH]

See bench/README.md ("Fan-out").
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import os
import platform
import secrets
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

from proxy_bench import MODEL, Services, _git_commit, _table, bench_manifest, cpu_seconds, peak_rss_mb  # noqa: E402

ROUTE = "fanout"
TARGET_S = 1.0            # the target: every proxy has the write within 1 s
POLL_S = 0.005            # ListProxies polling interval
CONNECT_TIMEOUT_S = 60.0  # all clients connected and ACKed the seeded table
WRITE_TIMEOUT_S = 30.0    # per write: all received and all ACKed
PAUSE_S = 0.05            # between writes, so each is measured on its own


def log(message: str) -> None:
    print(f"[fanout] {message}", file=sys.stderr, flush=True)


def manifest() -> str:
    # Upstream ports are never contacted: no proxy runs.
    return bench_manifest(9, 9) + f"""
---
routes:
  - name: {ROUTE}
    description: initial
    tiers: [{{models: [{MODEL}]}}]
"""


class Client:
    """One simulated proxy: opens the stream, records when each table
    version arrives, ACKs every push (table or health-only)."""

    def __init__(self, index: int, address: str) -> None:
        self.node_id = f"fanout-{index:04d}"
        self.address = address
        self.version = 0
        self.received: dict[int, float] = {}   # table version -> perf_counter at receipt
        self.changed = asyncio.Event()
        self.pushes = 0

    async def run(self) -> None:
        import grpc

        from megarouter.v1 import discovery_pb2, discovery_pb2_grpc

        async with grpc.aio.insecure_channel(self.address, options=[
                ("grpc.max_receive_message_length", 64 * 1024 * 1024)]) as channel:
            call = discovery_pb2_grpc.DiscoveryStub(channel).StreamRoutingTables(
                metadata=(("authorization", f"Bearer {os.environ['MEGAROUTER_PROXY_TOKEN']}"),))
            await call.write(discovery_pb2.DiscoveryRequest(
                node=discovery_pb2.Node(id=self.node_id, region="local", version="fanout-bench"),
                version_info=0))
            while True:
                response = await call.read()
                if response is grpc.aio.EOF:
                    return
                now = time.perf_counter()
                self.pushes += 1
                if response.HasField("table"):
                    self.received.setdefault(response.version, now)
                    self.version = response.version
                    self.changed.set()
                await call.write(discovery_pb2.DiscoveryRequest(version_info=self.version,
                                                                response_nonce=response.nonce))

    def received_at(self, version: int) -> float | None:
        """When the first table of at least `version` arrived."""
        times = [t for v, t in self.received.items() if v >= version]
        return min(times) if times else None

    async def wait_for(self, version: int) -> None:
        while self.version < version:
            self.changed.clear()
            await self.changed.wait()


async def all_acked(admin, version: int, n: int) -> bool:
    from megarouter.v1 import admin_pb2

    listed = await admin.ListProxies(admin_pb2.ListProxiesRequest())
    fanout = [p for p in listed.proxies if p.node_id.startswith("fanout-")]
    return len(fanout) == n and all(p.acked_version >= version for p in fanout)


async def poll_acked(admin, version: int, n: int) -> float:
    deadline = time.perf_counter() + WRITE_TIMEOUT_S
    while time.perf_counter() < deadline:
        if await all_acked(admin, version, n):
            return time.perf_counter()
        await asyncio.sleep(POLL_S)
    raise RuntimeError(f"control plane did not report all {n} ACKed version {version} in {WRITE_TIMEOUT_S:g}s")


async def run_bench(address: str, token: str, cp_pid: int, args: argparse.Namespace) -> dict:
    from megarouter.admin_client import admin_channel
    from megarouter.manifest import apply_resources, parse_manifest
    from megarouter.v1 import admin_pb2, admin_pb2_grpc

    async with admin_channel(address, token) as channel:
        admin = admin_pb2_grpc.AdminStub(channel)
        await apply_resources(admin, parse_manifest(manifest()))
        seeded = (await admin.ListProxies(admin_pb2.ListProxiesRequest())).current_version
        log(f"seeded, table version {seeded}; connecting {args.proxies} clients")

        clients = [Client(i, address) for i in range(args.proxies)]
        tasks = [asyncio.create_task(c.run()) for c in clients]
        try:
            started = time.perf_counter()
            await asyncio.wait_for(asyncio.gather(*(c.wait_for(seeded) for c in clients)), CONNECT_TIMEOUT_S)
            await poll_acked(admin, seeded, args.proxies)
            log(f"all {args.proxies} connected and ACKed version {seeded} in {time.perf_counter() - started:.2f}s")

            route = await admin.GetRoute(admin_pb2.GetRequest(name=ROUTE))
            writes = []
            cpu_before = cpu_seconds(cp_pid)
            wall_before = time.perf_counter()
            for i in range(args.writes):
                route.description = f"fanout write {i}"
                issued = time.perf_counter()
                put = await admin.PutRoute(route)
                returned = time.perf_counter()
                version = put.revision
                acked = await poll_acked(admin, version, args.proxies)
                await asyncio.wait_for(asyncio.gather(*(c.wait_for(version) for c in clients)), WRITE_TIMEOUT_S)
                last = max(c.received_at(version) for c in clients)
                first = min(c.received_at(version) for c in clients)
                writes.append({"version": version, "rpc_ms": (returned - issued) * 1000,
                               "first_receive_ms": (first - returned) * 1000,
                               "last_receive_ms": (last - returned) * 1000,
                               "all_acked_ms": (acked - returned) * 1000})
                await asyncio.sleep(PAUSE_S)
            wall = time.perf_counter() - wall_before
            cpu_used = cpu_seconds(cp_pid) - cpu_before
            log(f"{args.writes} writes done in {wall:.2f}s")
            dead = [t for t in tasks if t.done()]
            if dead:
                raise RuntimeError(f"{len(dead)} discovery streams ended during the run")
            return {
                "writes": writes,
                "cpu_ms_per_push": cpu_used * 1000 / (args.writes * args.proxies),
                "cpu_s_write_phase": cpu_used,
                "write_phase_s": wall,
                "peak_rss_mb": peak_rss_mb(cp_pid),
                "pushes_received": sum(c.pushes for c in clients),
            }
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))  # nearest rank
    return ordered[rank]


def machine_description(cp_pid: int) -> dict:
    cpu_model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), platform.processor() or "unknown")
    maps = Path(f"/proc/{cp_pid}/maps").read_text()
    return {
        "CPU": cpu_model,
        "cores": os.cpu_count(),
        "kernel": f"{platform.system()} {platform.release()}",
        "Python": f"{platform.python_implementation()} {platform.python_version()}",
        "grpcio": importlib.metadata.version("grpcio"),
        "uvloop in control plane": "yes" if "uvloop" in maps else "no",
        "commit": _git_commit(),
    }


def report(machine: dict, args: argparse.Namespace, result: dict) -> str:
    writes = result["writes"]
    last = [w["last_receive_ms"] for w in writes]
    acked = [w["all_acked_ms"] for w in writes]
    first = [w["first_receive_ms"] for w in writes]
    rpc = [w["rpc_ms"] for w in writes]
    target_ms = TARGET_S * 1000
    lines = [f"## Fan-out: one control plane, {args.proxies} discovery clients, {args.writes} writes", "",
             "### Machine", ""]
    lines += _table(["machine", "value"], [[k, str(v)] for k, v in machine.items()])
    lines += ["", "### Results (ms after the write's RPC returned)", ""]
    rows = [[name, f"{percentile(v, 50):.1f}", f"{percentile(v, 99):.1f}", f"{max(v):.1f}"]
            for name, v in (("write RPC itself (issue -> return)", rpc),
                            ("write -> first client received", first),
                            ("write -> last client received", last),
                            ("write -> ListProxies all ACKed (5 ms poll)", acked))]
    lines += _table(["measure", "p50", "p99", "max"], rows, numeric=frozenset({1, 2, 3}))
    worst = max(max(last), max(acked))
    lines += ["", "### Control plane", ""]
    lines += _table(["control plane", "value"], [
        ["CPU per push (write phase utime+stime / (writes x clients))", f"{result['cpu_ms_per_push']:.3f} ms"],
        ["CPU over the write phase", f"{result['cpu_s_write_phase']:.2f} s in {result['write_phase_s']:.2f} s"],
        ["peak RSS (VmHWM)", f"{result['peak_rss_mb']:.1f} MB"],
        ["pushes received by the clients (tables + health)", f"{result['pushes_received']:,}"],
    ])
    verdict = "PASS" if worst <= target_ms else "FAIL"
    lines += ["", f"Target: every client has the write within {TARGET_S:g} s: worst {worst:.1f} ms -> **{verdict}**"]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--proxies", type=int, default=100, help="simulated discovery clients (default 100)")
    parser.add_argument("--writes", type=int, default=20, help="admin writes, one after another (default 20)")
    parser.add_argument("--json", type=Path, help="also write the raw numbers here")
    args = parser.parse_args(argv)
    if args.proxies < 1 or args.writes < 1:
        parser.error("--proxies and --writes must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    token = "mr-admin-fanout-" + secrets.token_hex(16)
    # The simulated proxies' credential, installed by the control plane (inherited env).
    os.environ.setdefault("MEGAROUTER_PROXY_TOKEN", "mr-proxy-fanout-" + secrets.token_hex(16))
    with tempfile.TemporaryDirectory(prefix="mr-fanout-") as tmp:
        services = Services(Path(tmp))
        try:
            # Started before this process loads gRPC (no fork after gRPC's threads exist).
            cp = services.start("controlplane", [
                "env", f"MEGAROUTER_ADMIN_TOKEN={token}", sys.executable, "-m", "megarouter", "controlplane",
                "--listen", "127.0.0.1:0", "--store", str(Path(tmp) / "store"),
                "--metrics-listen", "127.0.0.1:0",
            ], None)
            log(f"control plane pid {cp.pid} on 127.0.0.1:{cp.port}")
            result = asyncio.run(run_bench(f"127.0.0.1:{cp.port}", token, cp.pid, args))
            machine = machine_description(cp.pid)
        except Exception as exc:
            log(f"failed: {exc}")
            for service in services.started:
                log(f"see {service.log_path}")
            return 1
        except KeyboardInterrupt:
            return 130
        finally:
            services.stop_all()
    print(report(machine, args, result))
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "settings": vars(args) | {"json": str(args.json)},
                                         **result}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
