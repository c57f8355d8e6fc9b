#!/usr/bin/env python3
"""`megarouter proxy --workers N`: JSON throughput of N worker processes against one.

Starts the static upstream and a control plane, then a proxy with `--workers 1` and,
after it, one with `--workers N` (default 2), each measured with wrk (JSON chat
completions, pass-through) at each connection count. Nothing is pinned: on a machine
with as many cores as workers, wrk and the upstream share those cores with the proxy, so
the ratio printed is what the proxy gains *on this machine*, load generator included —
a lower bound for a proxy host that serves remote clients. The proxies' CPU (supervisor
and workers summed) is reported per request, so the ratio can be read next to it.

    .venv/bin/python bench/workers_bench.py [--workers N] [--duration S] [--connections 64,128]

Prints a Markdown report for bench/RESULTS.md on stdout, progress on stderr.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import proxy_bench as pb  # noqa: E402

TARGET_RATIO = 1.8


def _tree_cpu_seconds(pid: int) -> float:
    """CPU of a process and its children (a supervisor and its workers), from /proc."""
    total = pb.cpu_seconds(pid)
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    return total + sum(_tree_cpu_seconds(int(child)) for child in children)


def _measure(proxy: pb.Service, connections: int, args: argparse.Namespace) -> dict:
    workload = pb.WORKLOADS["json"]
    url = f"http://127.0.0.1:{proxy.port}{pb.CHAT_PATH}"
    pb.run_wrk(url, workload.script, workload.model, connections, args.warmup, None)
    before = _tree_cpu_seconds(proxy.pid)
    result = pb.run_wrk(url, workload.script, workload.model, connections, args.duration, None)
    used = _tree_cpu_seconds(proxy.pid) - before
    seconds = result["duration_us"] / 1e6
    requests = result["requests"]
    errors = result["non2xx"] + sum(result[k] for k in ("connect_errors", "read_errors", "write_errors", "timeouts"))
    return {"rps": requests / seconds, "p50_ms": result["latency_us"]["p50"] / 1000,
            "p99_ms": result["latency_us"]["p99"] / 1000, "cpu_ms": used * 1000 / requests if requests else 0.0,
            "cores": used / seconds, "errors": errors}


def _start_proxy(services: pb.Services, name: str, workers: int, admin: str, tmp: Path) -> pb.Service:
    return services.start(name, [
        sys.executable, "-m", "megarouter", "proxy", "--listen", "127.0.0.1:0", "--control-plane", admin,
        "--node-id", name, "--cache-file", str(tmp / f"{name}.table"), "--workers", str(workers),
    ], None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--connections", default="64,128")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("workers_bench: needs wrk (apt-get install -y wrk)", file=sys.stderr)
        return 2
    connections = [int(c) for c in args.connections.split(",")]
    signal.signal(signal.SIGTERM, lambda signum, _frame: (_ for _ in ()).throw(SystemExit(128 + signum)))
    os.environ.setdefault("MEGAROUTER_ADMIN_TOKEN", "mr-admin-bench-" + os.urandom(12).hex())
    os.environ.setdefault("MEGAROUTER_PROXY_TOKEN", "mr-proxy-bench-" + os.urandom(12).hex())
    tmp = Path(tempfile.mkdtemp(prefix="megarouter-workers-bench-"))
    services = pb.Services(tmp)
    try:
        upstream = services.start("upstream", [sys.executable, str(pb.BENCH_DIR / "static_upstream.py"),
                                               "--port", "0"], None)
        controlplane = services.start("controlplane", [
            sys.executable, "-m", "megarouter", "controlplane", "--listen", "127.0.0.1:0",
            "--store", str(tmp / "store"), "--metrics-listen", "127.0.0.1:0"], None)
        admin = f"127.0.0.1:{controlplane.port}"
        proxies = {1: _start_proxy(services, "one-worker", 1, admin, tmp),
                   args.workers: _start_proxy(services, "workers", args.workers, admin, tmp)}
        revision = pb.seed_control_plane(admin, upstream.port, upstream.port)
        results: dict[tuple[int, int], dict] = {}
        for proxy in proxies.values():
            pb.wait_for_table(proxy.port, revision)
            pb.preflight_proxy(f"http://127.0.0.1:{proxy.port}", pb.WORKLOADS["json"])
        for count in connections:
            for workers, proxy in proxies.items():
                pb.log(f"{workers} worker(s), {count} connections")
                results[workers, count] = _measure(proxy, count, args)
        print(_report(args, connections, results), flush=True)
        return 0
    except (RuntimeError, OSError) as exc:
        pb.log(f"failed: {exc}")
        return 1
    finally:
        services.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


def _report(args: argparse.Namespace, connections: list[int], results: dict[tuple[int, int], dict]) -> str:
    machine = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), "unknown CPU")
    lines = [
        f"### proxy --workers {args.workers} vs 1 (`bench/workers_bench.py`, {time.strftime('%Y-%m-%d')})",
        "",
        f"Machine: {machine}, {os.cpu_count()} cores; wrk (1 thread), the static upstream and the proxy share "
        f"them, unpinned. JSON pass-through, {args.duration} s runs after {args.warmup} s warm-ups.",
        "",
        "| workers | connections | req/s | p50 ms | p99 ms | proxy CPU ms/req | proxy cores busy | errors |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for count in connections:
        for workers in sorted({w for w, _ in results}):
            r = results[workers, count]
            lines.append(f"| {workers} | {count} | {r['rps']:,.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
                         f"{r['cpu_ms']:.3f} | {r['cores']:.2f} | {r['errors']} |")
    lines.append("")
    for count in connections:
        ratio = results[args.workers, count]["rps"] / results[1, count]["rps"]
        verdict = "PASS" if ratio >= TARGET_RATIO else "FAIL"
        lines.append(f"- {count} connections: {ratio:.2f}x one worker's throughput "
                     f"(target >= {TARGET_RATIO}x): {verdict}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
