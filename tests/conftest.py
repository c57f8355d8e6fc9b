"""Fixtures that start the real system: simulators, control plane, proxies."""

from __future__ import annotations

import hashlib
import itertools
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import grpc
import pytest

from megarouter.admin_client import admin_channel
from megarouter.manifest import apply_resources, parse_manifest
from megarouter.v1 import admin_pb2, admin_pb2_grpc
from tests.harness import Service, eventually, start_service

API_KEY = "sk-mr-test-0123456789abcdef"
# Every control plane a test starts bootstraps with this admin token, and
# every admin client (admin_channel, megarouterctl) sends it.
ADMIN_TOKEN = "mr-admin-test-token-0123456789abcdef"
os.environ["MEGAROUTER_ADMIN_TOKEN"] = ADMIN_TOKEN
# Likewise the proxies' credential: every control plane installs it as token `proxies`
# (role proxy), and every proxy presents it.
PROXY_TOKEN = "mr-proxy-test-token-0123456789abcdef"
os.environ["MEGAROUTER_PROXY_TOKEN"] = PROXY_TOKEN
# And the console's service credential (token `console`, role console).
CONSOLE_TOKEN = "mr-console-test-token-0123456789abcdef"
os.environ["MEGAROUTER_CONSOLE_TOKEN"] = CONSOLE_TOKEN
_names = itertools.count(1)


def demo_manifest(sim_port: int, models: tuple[str, ...] = ("demo-small", "demo-medium")) -> str:
    """A provider backed by one simulator, two models, and routes over them."""
    return f"""
provider: {{name: sim, kind: openai, base_url: 'http://127.0.0.1:{sim_port}/v1', region: local}}
---
models:
  - {{name: demo-small, input_price_per_mtok: 0.15, output_price_per_mtok: 0.6, context_window: 128000,
     quality_tier: 2, capabilities: {{tools: true, streaming: true, json_mode: true}}}}
  - {{name: demo-medium, input_price_per_mtok: 2.5, output_price_per_mtok: 10, context_window: 128000,
     quality_tier: 4, capabilities: {{tools: true, vision: true, streaming: true, json_mode: true}}}}
---
endpoints:
  - {{name: small-sim, model: demo-small, provider: sim}}
  - {{name: medium-sim, model: demo-medium, provider: sim}}
---
routes:
  - {{name: auto, tiers: [{{models: [demo-medium]}}, {{models: [demo-small]}}]}}
  - {{name: chat, tiers: [{{models: [demo-small]}}]}}
"""


@dataclass
class System:
    """One control plane, its simulator(s) and proxies, and an admin client."""

    tmp: Path
    controlplane: Service
    sims: list[Service]
    proxies: list[Service] = field(default_factory=list)
    channel: grpc.aio.Channel | None = None

    @property
    def admin_address(self) -> str:
        return f"127.0.0.1:{self.controlplane.port}"

    @property
    def admin(self) -> admin_pb2_grpc.AdminStub:
        assert self.channel is not None
        return admin_pb2_grpc.AdminStub(self.channel)

    def base_url(self, index: int = 0) -> str:
        return f"http://127.0.0.1:{self.proxies[index].port}/v1"

    def sim_url(self, index: int = 0) -> str:
        return f"http://127.0.0.1:{self.sims[index].port}"

    async def start_proxy(self, *extra: str, node_id: str | None = None, env: dict[str, str] | None = None) -> Service:
        node_id = node_id or f"proxy-{next(_names)}"
        proxy = await start_service(node_id, [
            "proxy", "--listen", "127.0.0.1:0", "--control-plane", self.admin_address,
            "--node-id", node_id, "--cache-file", str(self.tmp / f"{node_id}.table"),
            "--telemetry-interval", "1", "--log-level", "debug", *extra,
        ], self.tmp / "logs", env=env)
        self.proxies.append(proxy)
        return proxy

    async def proxy_version(self, index: int = 0) -> int:
        async with aiohttp.ClientSession() as session:
            async with session.get(self.base_url(index).removesuffix("/v1") + "/readyz") as response:
                if response.status != 200:
                    return 0
                return int((await response.json())["table_version"])

    async def wait_proxy_version(self, at_least: int, index: int = 0) -> None:
        async def reached() -> bool:
            return await self.proxy_version(index) >= at_least
        await eventually(reached, what=f"proxy {index} to run table version >= {at_least}")

    async def apply(self, manifest: str) -> int:
        results = await apply_resources(self.admin, parse_manifest(manifest))
        return max(result.revision for result in results)

    async def set_sim(self, index: int = 0, **settings) -> None:
        async with aiohttp.ClientSession() as session:
            async with session.put(self.sim_url(index) + "/_sim/config", json=settings) as response:
                assert response.status == 200, await response.text()

    async def sim_stats(self, index: int = 0) -> dict:
        async with aiohttp.ClientSession() as session:
            async with session.get(self.sim_url(index) + "/_sim/stats") as response:
                return await response.json()

    async def close(self) -> None:
        for service in [*self.proxies, self.controlplane, *self.sims]:
            await service.stop()
        if self.channel is not None:
            await self.channel.close()


async def start_controlplane(tmp: Path, store_dir: Path | None = None, *extra: str,
                             env: dict[str, str] | None = None) -> Service:
    return await start_service("controlplane", [
        "controlplane", "--listen", "127.0.0.1:0", "--store", str(store_dir or tmp / "store"),
        "--metrics-listen", "127.0.0.1:0", "--enable-test-hooks", "--log-level", "debug", *extra,
    ], tmp / "logs", env=env)


async def start_sim(tmp: Path, name: str = "sim", *flags: str) -> Service:
    return await start_service(name, [
        "sim", "--port", "0", "--name", name, "--models", "demo-small,demo-medium", *flags,
    ], tmp / "logs")


def degrading_route_manifest(flaky_port: int) -> str:
    """A provider that always fails (a simulator with --error-rate 1) serving demo-large, and
    route `degrade` from it down to demo-small: one failover per request, for the tests that
    follow attempts (request log, traces)."""
    return f"""
---
provider: {{name: flaky, kind: openai, base_url: 'http://127.0.0.1:{flaky_port}/v1', region: elsewhere}}
---
models:
  - {{name: demo-large, input_price_per_mtok: 15, output_price_per_mtok: 60, context_window: 200000, quality_tier: 5,
     capabilities: {{tools: true, streaming: true}}}}
---
endpoints:
  - {{name: large-flaky, model: demo-large, provider: flaky, upstream_model: demo-small}}
---
routes:
  - {{name: degrade, tiers: [{{models: [demo-large]}}, {{models: [demo-small]}}]}}
"""


ORG_TREE = """
---
nodes:
  - {name: acme, kind: org}
  - {name: team-a, kind: team, parent: acme}
  - {name: team-b, kind: team, parent: acme}
"""

# Seeds test-specific resources once the base config exists; returns the
# store revision the proxies must reach before the system is handed over.
Seed = Callable[["System"], Awaitable[int]]


async def build_system(tmp: Path, proxies: int = 1, sim_flags: tuple[str, ...] = (), manifest_extra: str = "",
                       seed: Seed | None = None, controlplane_flags: tuple[str, ...] = (),
                       controlplane_env: dict[str, str] | None = None) -> System:
    """A simulator, a control plane with the demo config (plus `manifest_extra`
    and whatever `seed` adds) and the test key, and `proxies` proxies running
    the resulting table."""
    sim = await start_sim(tmp, "sim", *sim_flags)
    try:
        controlplane = await start_controlplane(tmp, None, *controlplane_flags, env=controlplane_env)
    except BaseException:
        await sim.stop()
        raise
    system = System(tmp=tmp, controlplane=controlplane, sims=[sim])
    try:
        system.channel = admin_channel(system.admin_address)
        await system.apply(demo_manifest(sim.port) + manifest_extra)
        created = await system.admin.CreateApiKey(
            admin_pb2.CreateApiKeyRequest(name="test", principal="team-test", secret=API_KEY)
        )
        revision = max(created.revision, await seed(system) if seed is not None else 0)
        for _ in range(proxies):
            await system.start_proxy()
        for index in range(proxies):
            await system.wait_proxy_version(revision, index)
    except BaseException:
        await system.close()  # a half-built system must not outlive the test
        raise
    return system


@pytest.fixture(scope="module")
async def system(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[System]:
    """A shared system for tests that do not change its configuration."""
    built = await build_system(tmp_path_factory.mktemp("system"))
    try:
        yield built
    finally:
        await built.close()


@pytest.fixture
async def fresh_system(tmp_path: Path) -> AsyncIterator[System]:
    """A system of the test's own, for tests that change or break it."""
    built = await build_system(tmp_path)
    try:
        yield built
    finally:
        await built.close()


def key_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()
