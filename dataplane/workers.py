"""`megarouter proxy --workers N`: N proxy processes sharing one listening port.

One Python process serves one core. With `--workers N` (or `auto`: one per CPU) the
command becomes a supervisor: it reserves the port, starts N workers that each bind it
with SO_REUSEPORT — the kernel spreads new connections across them — and restarts any
that dies (with backoff), until it is told to stop, which it passes on.

Each worker is a full fleet member: its own node id (`<node-id>-w<i>`), its own
discovery, telemetry and budget-lease streams, so budgets and fleet health stay exact.
Prometheus metrics are aggregated across the workers with prometheus_client's
multiprocess mode (the library's supported way: each process writes its samples to
files in a directory the supervisor owns, and whichever worker answers `/metrics` sums
them), so a scrape sees the whole process group whichever worker takes the connection.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
from dataclasses import dataclass

from megarouter.runtime import announce_ready, child_env, stop_event

log = logging.getLogger("megarouter.proxy.workers")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
READY_TIMEOUT_S = 60.0
RESTART_BACKOFF_S = (0.5, 30.0)
# A worker that ran this long before dying restarts without delay (not a crash loop).
STABLE_AFTER_S = 60.0


def parse_workers(value: str) -> int:
    if value == "auto":
        return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    try:
        workers = int(value)
    except ValueError:
        workers = 0
    if not 1 <= workers <= 256:
        raise SystemExit(f"megarouter proxy: --workers must be a number from 1 to 256 or 'auto', got {value!r}")
    return workers


def reserve_port(listen: str) -> tuple[str, int, socket.socket]:
    """Bind (not listen) the address with SO_REUSEPORT: port 0 becomes a real port that
    the workers then share, and the supervisor holds it while they restart."""
    host, _, port = listen.rpartition(":")
    host = host or "127.0.0.1"
    holder = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        holder.bind((host, int(port)))
    except OSError as exc:
        holder.close()
        raise SystemExit(f"megarouter proxy: cannot bind {listen}: {exc.strerror}") from None
    return host, holder.getsockname()[1], holder


@dataclass
class _Worker:
    index: int
    node_id: str
    argv: list[str]
    process: asyncio.subprocess.Process | None = None
    started_at: float = 0.0
    restarts: int = 0


async def supervise(args: argparse.Namespace, count: int) -> int:
    stop = stop_event()
    host, port, holder = reserve_port(args.listen)
    metrics_dir = tempfile.mkdtemp(prefix="megarouter-proxy-metrics-")
    base = [arg for arg in getattr(args, "command_argv", sys.argv[2:])]
    workers = [
        _Worker(index, f"{args.node_id}-w{index}", [
            "proxy", *base, "--workers", "1", "--listen", f"{host}:{port}", "--reuse-port",
            "--node-id", f"{args.node_id}-w{index}"])
        for index in range(count)
    ]
    loop = asyncio.get_running_loop()
    try:
        await asyncio.gather(*(_start(worker, metrics_dir, loop) for worker in workers))
        log.info("proxy %s: %d workers listening on http://%s:%d/v1", args.node_id, count, host, port)
        announce_ready("proxy", port=port, node_id=args.node_id, workers=[w.node_id for w in workers])
        waits = {asyncio.create_task(w.process.wait()): w for w in workers}  # type: ignore[union-attr]
        stopping = asyncio.create_task(stop.wait())
        while True:
            done, _ = await asyncio.wait({stopping, *waits}, return_when=asyncio.FIRST_COMPLETED)
            if stopping in done:
                break
            for task in done:
                worker = waits.pop(task)
                await _restart(worker, metrics_dir, loop, stop)
                if stop.is_set():
                    break
                waits[asyncio.create_task(worker.process.wait())] = worker  # type: ignore[union-attr]
        return 0
    except RuntimeError as exc:
        print(f"megarouter proxy: {exc}", file=sys.stderr)
        return 1
    finally:
        await _stop_all(workers)
        holder.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)


async def _start(worker: _Worker, metrics_dir: str, loop: asyncio.AbstractEventLoop) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "megarouter", *worker.argv, stdout=asyncio.subprocess.PIPE,
        env=child_env({MULTIPROC_ENV: metrics_dir}))
    worker.process = process
    worker.started_at = loop.time()
    assert process.stdout is not None

    async def ready() -> None:
        while True:
            line = await process.stdout.readline()
            if not line:
                raise RuntimeError(f"worker {worker.node_id} exited ({await process.wait()}) before it was ready")
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and event.get("event") == "ready":
                return

    try:
        await asyncio.wait_for(ready(), READY_TIMEOUT_S)
    except TimeoutError:
        process.kill()
        raise RuntimeError(f"worker {worker.node_id} was not ready within {READY_TIMEOUT_S:g}s") from None
    loop.create_task(_drain(process.stdout))


async def _drain(stream: asyncio.StreamReader) -> None:
    while await stream.read(65536):
        pass


async def _restart(worker: _Worker, metrics_dir: str, loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """A worker died: forget its live metrics, wait out the backoff, start it again."""
    from prometheus_client import multiprocess

    assert worker.process is not None
    code = worker.process.returncode
    multiprocess.mark_process_dead(worker.process.pid, metrics_dir)
    ran = loop.time() - worker.started_at
    worker.restarts = 0 if ran >= STABLE_AFTER_S else worker.restarts + 1
    delay = 0.0 if not worker.restarts else min(RESTART_BACKOFF_S[1], RESTART_BACKOFF_S[0] * 2 ** (worker.restarts - 1))
    log.error("proxy worker %s exited with code %s after %.0fs; restarting in %.1fs", worker.node_id, code, ran, delay)
    try:
        await asyncio.wait_for(stop.wait(), delay)
        return  # told to stop meanwhile
    except TimeoutError:
        pass
    while not stop.is_set():
        try:
            await _start(worker, metrics_dir, loop)
            return
        except RuntimeError as exc:
            log.error("%s; retrying", exc)
            await asyncio.sleep(RESTART_BACKOFF_S[1])


async def _stop_all(workers: list[_Worker]) -> None:
    running = [w.process for w in workers if w.process is not None and w.process.returncode is None]
    for process in running:
        process.send_signal(signal.SIGTERM)
    for process in running:
        try:
            await asyncio.wait_for(process.wait(), 15)
        except TimeoutError:
            process.kill()
            await process.wait()
