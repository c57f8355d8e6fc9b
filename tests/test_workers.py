"""`megarouter proxy --workers N`: worker processes on one port, each a fleet member,
restarted when they die, metrics summed across them, all stopped with the supervisor."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import aiohttp

from megarouter.v1 import admin_pb2
from tests.conftest import API_KEY, System, build_system
from tests.harness import eventually


def _children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(child) for child in text.split()]


async def _node_ids(system: System) -> list[str]:
    listing = await system.admin.ListProxies(admin_pb2.ListProxiesRequest())
    return sorted(proxy.node_id for proxy in listing.proxies)


async def _serve(session: aiohttp.ClientSession, system: System, count: int) -> list[int]:
    statuses = []
    for _ in range(count):
        async with session.post(system.base_url() + "/chat/completions", headers={"Authorization": f"Bearer {API_KEY}"},
                                json={"model": "chat", "messages": [{"role": "user", "content": "hi"}]}) as response:
            statuses.append(response.status)
    return statuses


async def test_workers_share_a_port_are_fleet_members_and_come_back(tmp_path) -> None:
    system = await build_system(tmp_path, proxies=0)
    try:
        supervisor = await system.start_proxy("--workers", "2", node_id="multi")
        assert supervisor.ready["workers"] == ["multi-w0", "multi-w1"]

        async def both_connected() -> bool:
            return await _node_ids(system) == ["multi-w0", "multi-w1"]
        await eventually(both_connected, what="both workers to join the fleet")
        await system.wait_proxy_version(1)
        workers = _children(supervisor.process.pid)
        assert len(workers) == 2
        # A connection per request: the kernel spreads new connections across the workers, so
        # both serve some (all 20 on one would have odds of 2^-19).
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
            assert await _serve(session, system, 20) == [200] * 20
            async with session.get(system.base_url().removesuffix("/v1") + "/metrics") as response:
                metrics = await response.text()
            served = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                         if line.startswith('megarouter_requests_total{api="chat",status="200"}'))
            assert served == 20  # summed over both workers, whichever answered the scrape

            os.kill(workers[0], signal.SIGKILL)

            async def replaced() -> bool:
                current = _children(supervisor.process.pid)
                return len(current) == 2 and workers[0] not in current
            await eventually(replaced, timeout=20, what="the supervisor to restart the killed worker")
            await eventually(both_connected, what="the restarted worker to rejoin the fleet")
            assert await _serve(session, system, 10) == [200] * 10
        running = _children(supervisor.process.pid)
        assert await supervisor.stop() == 0
        assert _alive(running) == [], "workers outlived their supervisor"
    finally:
        await system.close()


def _alive(pids: list[int]) -> list[int]:
    alive = []
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        alive.append(pid)
    return alive
