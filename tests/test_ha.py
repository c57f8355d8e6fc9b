"""High availability with real processes: two control-plane replicas on a three-member etcd,
two proxies (each preferring a different replica), a simulator, and steady client load.

Under that load the control-plane leader is SIGKILLed, then an etcd member: not one client
request may fail, the survivor must become leader, policy changes made through it must reach
both proxies, and the budget ledger must count every request served across all of it.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import aiohttp

from megarouter.admin_client import admin_channel
from megarouter.manifest import apply_resources, parse_manifest
from megarouter.v1 import admin_pb2, admin_pb2_grpc
from tests.conftest import ORG_TREE, demo_manifest, start_sim
from tests.etcd_cluster import free_port, start_or_skip
from tests.harness import Service, eventually, start_service

KEY = "sk-mr-ha-test-0123456789abcdef"
BUDGET_REQUESTS = 100_000  # large: leases of 2,000 requests, refilled during the test
WORKERS_PER_PROXY = 3



class Load:
    """Clients sending chat requests to every proxy until stopped; every outcome is counted."""

    def __init__(self, bases: list[str]) -> None:
        self.bases = bases
        self.outcomes: Counter[str] = Counter()
        self.served_by_proxy: Counter[int] = Counter()
        self.failures: list[str] = []
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self, session: aiohttp.ClientSession) -> None:
        for index in range(len(self.bases)):
            for worker in range(WORKERS_PER_PROXY):
                self._tasks.append(asyncio.create_task(self._run(session, index, stream=worker == 0)))

    async def _run(self, session: aiohttp.ClientSession, index: int, stream: bool) -> None:
        body = {"model": "auto", "messages": [{"role": "user", "content": "hello"}], "stream": stream}
        headers = {"Authorization": f"Bearer {KEY}"}
        while not self._stop.is_set():
            try:
                async with session.post(f"{self.bases[index]}/chat/completions", json=body, headers=headers) as r:
                    text = await r.text()
                    ok = r.status == 200 and (not stream or text.rstrip().endswith("data: [DONE]"))
            except aiohttp.ClientError as exc:
                ok, text = False, f"{type(exc).__name__}: {exc}"
            if ok:
                self.outcomes["ok"] += 1
                self.served_by_proxy[index] += 1
            else:
                self.outcomes["failed"] += 1
                self.failures.append(f"proxy {index}: {text[:300]}")

    async def served(self, at_least: int) -> None:
        """Wait until each proxy has served `at_least` more requests than now."""
        marks = dict(self.served_by_proxy)

        async def progressed() -> bool:
            return all(self.served_by_proxy[i] >= marks.get(i, 0) + at_least for i in range(len(self.bases)))
        await eventually(progressed, timeout=30, what=f"every proxy to serve {at_least} more requests")

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)


async def proxy_version(session: aiohttp.ClientSession, proxy: Service) -> int:
    async with session.get(f"http://127.0.0.1:{proxy.port}/readyz") as response:
        return int((await response.json()).get("table_version", 0)) if response.status == 200 else 0


async def test_leader_and_etcd_member_deaths_under_load_fail_no_request(tmp_path: Path) -> None:
    cluster = start_or_skip(3)
    logs = tmp_path / "logs"
    services: list[Service] = []
    store = "etcd://" + ",".join(cluster.endpoints)
    try:
        sim = await start_sim(tmp_path)
        services.append(sim)
        controlplanes: dict[str, Service] = {}
        for name in ("cp-1", "cp-2"):  # one after the other: the first bootstraps the admin token
            controlplanes[name] = await start_service(name, [
                "controlplane", "--listen", "127.0.0.1:0", "--store", store, "--replica-id", name,
                "--metrics-listen", "127.0.0.1:0", "--health-push-interval", "0.5", "--log-level", "debug",
            ], logs)
            services.append(controlplanes[name])
        address = {name: f"127.0.0.1:{cp.port}" for name, cp in controlplanes.items()}

        async with admin_channel(address["cp-1"]) as channel:
            admin = admin_pb2_grpc.AdminStub(channel)
            manifest = demo_manifest(sim.port) + ORG_TREE + f"""
---
budget: {{name: ha-requests, node: acme, window: daily, unit: requests, limit: {BUDGET_REQUESTS}, action: pause}}
"""
            await apply_resources(admin, parse_manifest(manifest))
            created = await admin.CreateApiKey(admin_pb2.CreateApiKeyRequest(name="ha", node="team-a", secret=KEY))
            seeded = created.revision

        # Each proxy prefers a different replica, so the leader's death moves one of them.
        proxies = [
            await start_service(f"proxy-{i}", [
                "proxy", "--listen", "127.0.0.1:0", "--node-id", f"proxy-{i}",
                "--control-plane", ",".join(order), "--cache-file", str(tmp_path / f"proxy-{i}.table"),
                "--telemetry-interval", "1", "--log-level", "debug",
            ], logs)
            for i, order in enumerate([(address["cp-1"], address["cp-2"]), (address["cp-2"], address["cp-1"])])
        ]
        services.extend(proxies)

        async with aiohttp.ClientSession() as session:
            for proxy in proxies:
                await eventually(lambda p=proxy: _at_least(session, p, seeded), timeout=30,
                                 what=f"{proxy.name} to run the seeded table")

            async def view(name: str) -> admin_pb2.ListControlPlanesResponse:
                async with admin_channel(address[name]) as channel:
                    return await admin_pb2_grpc.AdminStub(channel).ListControlPlanes(
                        admin_pb2.ListControlPlanesRequest())

            async def agreed_leader() -> bool:
                views = [await view(name) for name in controlplanes]
                return all(v.leader_id and v.leader_id == views[0].leader_id and len(v.replicas) == 2 for v in views)
            await eventually(agreed_leader, timeout=30, what="both replicas to agree on a leader")
            leader = (await view("cp-1")).leader_id
            survivor = next(name for name in controlplanes if name != leader)

            load = Load([f"http://127.0.0.1:{proxy.port}/v1" for proxy in proxies])
            load.start(session)
            await load.served(20)

            # Fleet health crosses replicas: each replica's view counts both proxies, although
            # each hears only the one connected to it.
            async def whole_fleet_seen(name: str) -> bool:
                async with admin_channel(address[name]) as channel:
                    health = await admin_pb2_grpc.AdminStub(channel).GetFleetHealth(
                        admin_pb2.GetFleetHealthRequest())
                return health.proxies == 2
            for name in controlplanes:
                await eventually(lambda n=name: whole_fleet_seen(n), timeout=30,
                                 what=f"{name}'s fleet view to include the other replica's proxy")

            # So does the proxy list, and both replicas version the same configuration alike,
            # so "in sync" means the same thing whichever replica a proxy is connected to.
            async def both_listed_in_sync(name: str) -> bool:
                async with admin_channel(address[name]) as channel:
                    listing = await admin_pb2_grpc.AdminStub(channel).ListProxies(admin_pb2.ListProxiesRequest())
                return sorted((p.node_id, p.control_plane, p.acked_version) for p in listing.proxies) == [
                    ("proxy-0", "cp-1", listing.current_version), ("proxy-1", "cp-2", listing.current_version)]
            for name in controlplanes:
                await eventually(lambda n=name: both_listed_in_sync(n), timeout=30,
                                 what=f"{name} to list both proxies, in sync")

            # 1. SIGKILL the leader.
            await controlplanes[leader].stop(signal.SIGKILL)

            async def survivor_leads() -> bool:
                return (await view(survivor)).leader_id == survivor
            await eventually(survivor_leads, timeout=30, what="the surviving replica to become leader")
            await load.served(20)
            # The dead replica's share of fleet health went with its lease; the proxy that was
            # connected to it now reports to the survivor, whose view holds both again.
            await eventually(lambda: whole_fleet_seen(survivor), timeout=30,
                             what="the survivor's fleet view to count both proxies")
            async with admin_channel(address[survivor]) as channel:
                listing = await admin_pb2_grpc.AdminStub(channel).ListProxies(admin_pb2.ListProxiesRequest())
            assert sorted((p.node_id, p.control_plane) for p in listing.proxies) == [
                ("proxy-0", survivor), ("proxy-1", survivor)]

            async def survivor_metric_says_leader() -> bool:
                port = controlplanes[survivor].ready["metrics_port"]
                async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
                    return "megarouter_cp_is_leader 1.0" in await response.text()
            await eventually(survivor_metric_says_leader, timeout=10, what="the survivor's leader gauge")

            listing = await asyncio.to_thread(subprocess.run, [
                sys.executable, "-m", "megarouter.ctl", "--server", address[survivor], "controlplanes",
            ], capture_output=True, text=True, timeout=60)
            assert listing.returncode == 0, listing.stderr
            row = next(line.split() for line in listing.stdout.splitlines() if line.startswith(survivor))
            assert row[2] == "leader" and row[-1] == "yes", listing.stdout
            assert leader not in listing.stdout  # the dead replica's registration expired

            # A policy change made through the survivor reaches both proxies.
            async with admin_channel(address[survivor]) as channel:
                results = await apply_resources(admin_pb2_grpc.AdminStub(channel), parse_manifest(
                    "route: {name: after-leader-loss, tiers: [{models: [demo-small]}]}"))
            changed = max(result.revision for result in results)
            for proxy in proxies:
                await eventually(lambda p=proxy: _at_least(session, p, changed), timeout=30,
                                 what=f"{proxy.name} to get the change made after the leader died")

            # A proxy started now with three control-plane addresses, the first two dead (nothing
            # listening; the killed leader), finds the third.
            late = await start_service("proxy-late", [
                "proxy", "--listen", "127.0.0.1:0", "--node-id", "proxy-late",
                "--control-plane", f"127.0.0.1:{free_port()},{address[leader]},{address[survivor]}",
                "--cache-file", str(tmp_path / "proxy-late.table"), "--log-level", "debug",
            ], logs)
            services.append(late)
            await eventually(lambda: _at_least(session, late, changed), timeout=30,
                             what="a proxy whose first two control planes are dead to get the table")

            # 2. SIGKILL an etcd member: quorum holds and admin writes go on.
            cluster.members[0].kill()

            async def written() -> bool:  # a write whose outcome was unknown is simply retried
                try:
                    async with admin_channel(address[survivor]) as channel:
                        results = await apply_resources(admin_pb2_grpc.AdminStub(channel), parse_manifest(
                            "route: {name: after-etcd-loss, tiers: [{models: [demo-medium]}]}"))
                except Exception:
                    return False
                written.revision = max(result.revision for result in results)  # type: ignore[attr-defined]
                return True
            await eventually(written, timeout=30, interval=0.5, what="an admin write with an etcd member down")
            for proxy in proxies:
                await eventually(lambda p=proxy: _at_least(session, p, written.revision), timeout=30,  # type: ignore[attr-defined]
                                 what=f"{proxy.name} to get the change written with an etcd member down")
            await load.served(20)
            await load.stop()

            assert load.outcomes["failed"] == 0, load.failures[:5]
            assert load.outcomes["ok"] >= 120

            # Every request served was charged to the ledger, across both deaths.
            async def all_charged() -> bool:
                async with admin_channel(address[survivor]) as channel:
                    statuses = await admin_pb2_grpc.AdminStub(channel).ListBudgetStatus(admin_pb2.ListRequest())
                status = next(s for s in statuses.items if s.budget == "ha-requests")
                all_charged.spent = status.spent  # type: ignore[attr-defined]
                return status.spent >= load.outcomes["ok"]
            await eventually(all_charged, timeout=30,
                             what=f"the ledger to count all {load.outcomes['ok']} requests served")
            # Counted twice at most: a settlement the killed replica wrote but never answered,
            # which its proxy then sent again to the survivor (one flush interval's requests).
            assert all_charged.spent - load.outcomes["ok"] <= load.outcomes["ok"] / 10  # type: ignore[attr-defined]
    finally:
        for service in reversed(services):
            await service.stop()
        cluster.stop()


async def _at_least(session: aiohttp.ClientSession, proxy: Service, version: int) -> bool:
    return await proxy_version(session, proxy) >= version
