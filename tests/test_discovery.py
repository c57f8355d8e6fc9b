"""Tables flow from the control plane to proxies: push, ACK/NACK, cache, outage."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import aiohttp
import openai
import pytest

from megarouter.v1 import admin_pb2, admin_pb2_grpc, routing_pb2
from tests.conftest import API_KEY, System
from tests.harness import eventually, restart


async def _served_model(system: System, model: str = "chat", index: int = 0) -> str:
    client = openai.AsyncOpenAI(base_url=system.base_url(index), api_key=API_KEY, max_retries=0)
    raw = await client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": "which model?"}]
    )
    return raw.headers["x-megarouter-model"]


async def _proxy_status(system: System, node_id: str) -> admin_pb2.ProxyStatus:
    response = await system.admin.ListProxies(admin_pb2.ListProxiesRequest())
    return next(p for p in response.proxies if p.node_id == node_id)


def _ctl(system: System, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "megarouter.ctl", "--server", system.admin_address, *args],
        input=stdin, capture_output=True, text=True, timeout=60,
    )


async def test_route_change_reaches_running_proxy(fresh_system: System) -> None:
    system = fresh_system
    assert await _served_model(system) == "demo-small"
    route = await system.admin.GetRoute(admin_pb2.GetRequest(name="chat"))
    del route.tiers[:]
    route.tiers.add(models=["demo-medium"])
    put = await system.admin.PutRoute(route)
    assert put.changed
    await system.wait_proxy_version(put.revision)
    assert await _served_model(system) == "demo-medium"
    # The proxy ACKed exactly the version that carries the change.
    status = await _proxy_status(system, system.proxies[0].name)
    assert status.acked_version >= put.revision and not status.last_nack


async def test_ctl_apply_changes_routing_and_proxies_shows_ack(fresh_system: System, tmp_path) -> None:
    system = fresh_system
    manifest = tmp_path / "route.yaml"
    manifest.write_text("route:\n  name: chat\n  tiers:\n    - models: [demo-medium]\n")
    applied = await asyncio.to_thread(_ctl, system, "apply", "-f", str(manifest))
    assert applied.returncode == 0, applied.stderr
    assert "route/chat configured" in applied.stdout
    again = await asyncio.to_thread(_ctl, system, "apply", "-f", str(manifest))
    assert "route/chat unchanged" in again.stdout

    table = await system.admin.GetRoutingTable(admin_pb2.GetRoutingTableRequest())
    await system.wait_proxy_version(table.version)
    assert await _served_model(system) == "demo-medium"

    async def acked() -> bool:
        return (await _proxy_status(system, system.proxies[0].name)).acked_version == table.version
    await eventually(acked, what="the proxy's ACK to reach the control plane")
    listing = await asyncio.to_thread(_ctl, system, "proxies")
    assert listing.returncode == 0, listing.stderr
    assert f"control plane table version: {table.version}" in listing.stdout
    row = next(line for line in listing.stdout.splitlines() if line.startswith(system.proxies[0].name))
    assert row.split()[1:5] == ["default", str(table.version), str(table.version), "yes"]


async def test_ctl_reports_validation_errors(system: System, tmp_path) -> None:
    bad_field = tmp_path / "bad.yaml"
    bad_field.write_text("route:\n  name: broken\n  tiers: []\n")
    result = await asyncio.to_thread(_ctl, system, "apply", "-f", str(bad_field))
    assert result.returncode == 1
    assert "INVALID_ARGUMENT" in result.stderr and "tiers" in result.stderr

    unknown_model = tmp_path / "ref.yaml"
    unknown_model.write_text("route:\n  name: broken\n  tiers: [{models: [gpt-nonexistent]}]\n")
    result = await asyncio.to_thread(_ctl, system, "apply", "-f", str(unknown_model))
    assert result.returncode == 1
    assert "FAILED_PRECONDITION" in result.stderr and "gpt-nonexistent" in result.stderr

    typo = tmp_path / "typo.yaml"
    typo.write_text("route:\n  name: broken\n  teirs: [{models: [demo-small]}]\n")
    result = await asyncio.to_thread(_ctl, system, "apply", "-f", str(typo))
    assert result.returncode == 1 and "teirs" in result.stderr

    listed = await asyncio.to_thread(_ctl, system, "get", "routes", "-o", "json")
    assert listed.returncode == 0 and "broken" not in listed.stdout


async def test_invalid_table_is_nacked_and_old_one_kept(fresh_system: System) -> None:
    system = fresh_system
    node = system.proxies[0].name
    good_version = await system.proxy_version()
    bad = routing_pb2.RoutingTable()
    bad.CopyFrom(await system.admin.GetRoutingTable(admin_pb2.GetRoutingTableRequest()))
    bad.version = good_version + 1000
    bad.routes.add(name="dangling", tiers=[routing_pb2.Tier(models=["no-such-model"])])
    await admin_pb2_grpc.TestHooksStub(system.channel).PushRawTable(bad)

    async def nacked() -> bool:
        return "no-such-model" in (await _proxy_status(system, node)).last_nack
    await eventually(nacked, what="the proxy to NACK the invalid table")
    status = await _proxy_status(system, node)
    assert status.pushed_version == bad.version
    assert status.acked_version == good_version
    assert await system.proxy_version() == good_version
    assert await _served_model(system) == "demo-small"


async def test_proxy_survives_control_plane_outage_and_restarts_from_cache(fresh_system: System) -> None:
    system = fresh_system
    version = await system.proxy_version()
    await system.controlplane.stop()
    # Control plane gone: the running proxy keeps serving its table.
    assert await _served_model(system) == "demo-small"

    # A proxy restarted while the control plane is down serves from its cache.
    proxy = system.proxies[0]
    await proxy.stop()
    system.proxies[0] = await restart(proxy, system.tmp / "logs")
    assert await system.proxy_version() == version
    assert await _served_model(system) == "demo-small"

    # When the control plane returns (same store), the proxy reconnects.
    system.controlplane = await restart(system.controlplane, system.tmp / "logs")
    route = await system.admin.GetRoute(admin_pb2.GetRequest(name="chat"))
    route.description = "changed after restart"
    put = await system.admin.PutRoute(route)
    await system.wait_proxy_version(put.revision)


async def test_two_proxies_receive_every_change(fresh_system: System) -> None:
    system = fresh_system
    await system.start_proxy()
    model = await system.admin.GetModel(admin_pb2.GetRequest(name="demo-small"))
    model.output_price_per_mtok = 0.7
    put = await system.admin.PutModel(model)
    await asyncio.gather(system.wait_proxy_version(put.revision, 0), system.wait_proxy_version(put.revision, 1))
    listing = await system.admin.ListProxies(admin_pb2.ListProxiesRequest())
    assert len(listing.proxies) == 2


async def test_key_revocation_reaches_every_proxy(fresh_system: System) -> None:
    system = fresh_system
    await system.start_proxy()
    secret = "sk-mr-revoke-me-0123456789"
    created = await system.admin.CreateApiKey(admin_pb2.CreateApiKeyRequest(name="short-lived", secret=secret))
    for index in range(2):
        await system.wait_proxy_version(created.revision, index)
        client = openai.AsyncOpenAI(base_url=system.base_url(index), api_key=secret, max_retries=0)
        await client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "x"}])
    deleted = await system.admin.DeleteApiKey(admin_pb2.DeleteRequest(name="short-lived"))
    for index in range(2):
        await system.wait_proxy_version(deleted.revision, index)
        client = openai.AsyncOpenAI(base_url=system.base_url(index), api_key=secret, max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            await client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "x"}])


@pytest.mark.parametrize("cache", [b"", routing_pb2.RoutingTable(generated_at_unix_ms=5).SerializeToString()],
                         ids=["empty", "version-0"])
async def test_an_empty_or_version_0_cache_is_not_a_table(fresh_system: System, cache: bytes) -> None:
    """A proxy starting while the control plane is down, with a cache file that is empty (or
    holds a version-0 table), used to say ready and answer every request with a 401."""
    system = fresh_system
    await system.controlplane.stop()
    proxy = system.proxies[0]
    await proxy.stop()
    cache_file = system.tmp / f"{proxy.name}.table"
    cache_file.write_bytes(cache)
    system.proxies[0] = await restart(proxy, system.tmp / "logs")
    async with aiohttp.ClientSession() as session:
        base = system.base_url()
        async with session.get(base.removesuffix("/v1") + "/readyz") as ready:
            status = await ready.json()
        assert ready.status == 503 and "cached table" in status["status"]
        async with session.post(base + "/chat/completions", headers={"Authorization": f"Bearer {API_KEY}"},
                                json={"model": "chat", "messages": [{"role": "user", "content": "x"}]}) as reply:
            body = await reply.json()
        assert reply.status == 503 and body["error"]["code"] == "not_ready"
    # Once the control plane is back, the proxy is ready.
    system.controlplane = await restart(system.controlplane, system.tmp / "logs")
    await system.wait_proxy_version(1)
