"""Failover against simulator faults: each error class, streams, ejection,
recovery and the retry budget. Route `r` tries endpoint `e-a` (simulator A)
first and `e-b` (simulator B) second; route `pool` has both in one tier."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from collections.abc import AsyncIterator

import aiohttp
import openai
import pytest

from megarouter.admin_client import admin_channel
from megarouter.v1 import admin_pb2
from tests.conftest import API_KEY, System, start_controlplane
from tests.harness import eventually, start_service

SIM_A_KEY = "sk-sim-a-real-key-000000"
MESSAGES = [{"role": "user", "content": "hello"}]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def manifest(port_a: int, port_b: int, dead_port: int) -> str:
    caps = "{streaming: true, tools: true}"
    return f"""
providers:
  - {{name: pa, kind: openai, base_url: 'http://127.0.0.1:{port_a}/v1', credential: {{env: SIM_A_KEY}}}}
  - {{name: pb, kind: openai, base_url: 'http://127.0.0.1:{port_b}/v1'}}
  - {{name: dead, kind: openai, base_url: 'http://127.0.0.1:{dead_port}/v1'}}
---
models:
  - {{name: m-a, context_window: 100000, capabilities: {caps}}}
  - {{name: m-b, context_window: 200000, capabilities: {caps}}}
  - {{name: m-dead, context_window: 100000, capabilities: {caps}}}
---
endpoints:
  - {{name: e-a, model: m-a, provider: pa, upstream_model: up}}
  - {{name: e-b, model: m-b, provider: pb, upstream_model: up}}
  - {{name: e-dead, model: m-dead, provider: dead, upstream_model: up}}
---
routes:
  - name: r
    tiers: [{{models: [m-a]}}, {{models: [m-b]}}]
    retry: {{max_attempts: 3, per_try_timeout_s: 0.5, total_timeout_s: 5, ttft_timeout_s: 0.5}}
  - name: via-dead
    tiers: [{{models: [m-dead]}}, {{models: [m-b]}}]
  - name: pool
    tiers: [{{models: [m-a, m-b]}}]
    retry: {{max_attempts: 3, per_try_timeout_s: 0.5, total_timeout_s: 5}}
"""


@pytest.fixture
async def pair(tmp_path) -> AsyncIterator[System]:
    logs = tmp_path / "logs"
    sims = [
        await start_service("sim-a", ["sim", "--port", "0", "--models", "up", "--api-key", SIM_A_KEY], logs),
        await start_service("sim-b", ["sim", "--port", "0", "--models", "up"], logs),
    ]
    system = System(tmp=tmp_path, controlplane=await start_controlplane(tmp_path), sims=sims)
    try:
        system.channel = admin_channel(system.admin_address)
        await system.apply(manifest(sims[0].port, sims[1].port, _free_port()))
        created = await system.admin.CreateApiKey(admin_pb2.CreateApiKeyRequest(name="k", secret=API_KEY))
        await system.start_proxy("--ejection-base-s", "0.5", env={"SIM_A_KEY": SIM_A_KEY})
        await system.wait_proxy_version(created.revision)
        yield system
    finally:
        await system.close()


def _client(system: System, index: int = 0) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=system.base_url(index), api_key=API_KEY, max_retries=0)


async def _call(system: System, model: str = "r", index: int = 0, **kwargs) -> tuple[str, int]:
    raw = await _client(system, index).chat.completions.with_raw_response.create(
        model=model, messages=MESSAGES, **kwargs)
    raw.parse()
    return raw.headers["x-megarouter-endpoint"], int(raw.headers["x-megarouter-attempts"])


async def _requests(system: System, sim: int) -> int:
    return (await system.sim_stats(sim))["requests"]


@pytest.mark.parametrize("status", [500, 503, 529])
async def test_provider_errors_fail_over(pair: System, status: int) -> None:
    await pair.set_sim(0, error_rate=1.0, error_status=status)
    assert await _call(pair) == ("e-b", 2)


async def test_rate_limit_fails_over_and_cools_the_endpoint_down(pair: System) -> None:
    await pair.set_sim(0, rate_limit_rate=1.0, retry_after_s=30)
    assert await _call(pair) == ("e-b", 2)
    before = await _requests(pair, 0)
    # A said "retry after 30s": until then it is skipped, not hammered.
    for _ in range(3):
        assert await _call(pair) == ("e-b", 1)
    assert await _requests(pair, 0) == before


async def test_connection_refused_fails_over(pair: System) -> None:
    assert await _call(pair, "via-dead") == ("e-b", 2)


async def test_timeout_before_headers_fails_over(pair: System) -> None:
    await pair.set_sim(0, latency_ms=3000)
    assert await _call(pair) == ("e-b", 2)


async def test_stream_failure_before_first_chunk_fails_over_invisibly(pair: System) -> None:
    await pair.set_sim(0, ttft_ms=3000)
    raw = await _client(pair).chat.completions.with_raw_response.create(model="r", messages=MESSAGES, stream=True)
    assert raw.headers["x-megarouter-endpoint"] == "e-b" and raw.headers["x-megarouter-attempts"] == "2"
    text = "".join([c.choices[0].delta.content or "" async for c in raw.parse() if c.choices])
    assert text.strip()


async def test_context_too_long_moves_to_a_larger_model(pair: System) -> None:
    await pair.set_sim(0, context_window=20)
    long = [{"role": "user", "content": "word " * 200}]
    raw = await _client(pair).chat.completions.with_raw_response.create(model="r", messages=long)
    assert (raw.headers["x-megarouter-endpoint"], raw.headers["x-megarouter-attempts"]) == ("e-b", "2")
    # No larger model behind `m-a` alone: the caller learns its prompt is too long.
    with pytest.raises(openai.BadRequestError) as caught:
        await _client(pair).chat.completions.create(model="m-a", messages=long)
    assert caught.value.code == "context_length_exceeded"


async def test_invalid_request_is_not_retried(pair: System) -> None:
    await pair.set_sim(0, error_rate=1.0, error_status=400)
    before_b = await _requests(pair, 1)
    with pytest.raises(openai.BadRequestError):
        await _call(pair)
    assert await _requests(pair, 1) == before_b


async def test_bad_credential_is_the_endpoints_fault_and_gets_it_ejected(pair: System) -> None:
    # Proxy 2 has the wrong secret for A: A answers 401 to it.
    await pair.start_proxy("--ejection-base-s", "60", env={"SIM_A_KEY": "sk-wrong-key-0000000000"})
    table = await pair.admin.GetRoutingTable(admin_pb2.GetRoutingTableRequest())
    await pair.wait_proxy_version(table.version, 1)
    for _ in range(5):
        assert await _call(pair, index=1) == ("e-b", 2)
    before = await _requests(pair, 0)
    for _ in range(3):  # ejected after 5 consecutive failures: straight to B
        assert await _call(pair, index=1) == ("e-b", 1)
    assert await _requests(pair, 0) == before
    async with aiohttp.ClientSession() as session:
        async with session.get(pair.base_url(1).removesuffix("/v1") + "/metrics") as response:
            metrics = await response.text()
    assert 'megarouter_endpoint_ejections_total{endpoint="e-a",reason="consecutive_failures"} 1.0' in metrics


async def test_ejected_endpoint_recovers_through_a_probe(pair: System) -> None:
    await pair.set_sim(0, outage="503")
    for _ in range(5):
        assert await _call(pair) == ("e-b", 2)
    assert await _call(pair) == ("e-b", 1)  # ejected
    await pair.set_sim(0, outage="none")

    async def served_by_a_again() -> bool:
        return (await _call(pair))[0] == "e-a"
    # The ejection (0.5 s here) runs out; live traffic probes A and it is back.
    await eventually(served_by_a_again, timeout=10, interval=0.1, what="A to be probed and restored")
    assert await _call(pair) == ("e-a", 1)


async def test_last_endpoint_is_never_ejected_away(pair: System) -> None:
    await pair.set_sim(0, outage="503")
    await pair.set_sim(1, outage="503")
    for _ in range(6):
        with pytest.raises(openai.APIStatusError):
            await _call(pair)
    # Both are ejected now; the path still tries them rather than giving up.
    await pair.set_sim(1, outage="none")
    assert (await _call(pair))[0] == "e-b"


async def test_retry_budget_caps_extra_load(pair: System) -> None:
    await pair.set_sim(0, outage="503")
    await pair.set_sim(1, outage="503")
    before = await _requests(pair, 0) + await _requests(pair, 1)
    requests = 60
    for _ in range(requests):
        with pytest.raises(openai.APIStatusError):
            await _call(pair, "pool")
    upstream = await _requests(pair, 0) + await _requests(pair, 1) - before
    async with aiohttp.ClientSession() as session:
        async with session.get(pair.base_url().removesuffix("/v1") + "/metrics") as response:
            metrics = await response.text()
    probes = float(next(line.split()[1] for line in metrics.splitlines()
                        if line.startswith("megarouter_probe_retries_total ")))
    # Without a budget every request would try both (2x). Retries may add 20% on top of the
    # route's first attempts, plus the bucket of 20 — and a retry after a failed probe is free,
    # but probes are rare: one per endpoint per ejection (or per 2 s in panic mode).
    assert upstream <= requests * 1.2 + 20 + probes, (upstream, probes)
    assert probes <= 6, probes


async def test_faults_seen_by_one_proxy_steer_the_other(pair: System) -> None:
    await pair.start_proxy("--ejection-base-s", "60", env={"SIM_A_KEY": SIM_A_KEY})
    table = await pair.admin.GetRoutingTable(admin_pb2.GetRoutingTableRequest())
    await pair.wait_proxy_version(table.version, 1)
    await pair.set_sim(0, outage="503")
    for _ in range(5):  # only proxy 0 sees A fail, and ejects it
        assert await _call(pair, index=0) == ("e-b", 2)

    async def fleet_knows() -> bool:
        view = await pair.admin.GetFleetHealth(admin_pb2.GetFleetHealthRequest())
        return any(e.endpoint == "e-a" and e.ejected_by >= 1 for e in view.endpoints)
    await eventually(fleet_knows, what="the control plane's fleet view to show e-a ejected")
    generation = (await pair.admin.GetFleetHealth(admin_pb2.GetFleetHealthRequest())).generation

    async def pushed() -> bool:
        async with aiohttp.ClientSession() as session:
            async with session.get(pair.base_url(1).removesuffix("/v1") + "/readyz") as response:
                return (await response.json())["fleet_health_generation"] >= generation
    await eventually(pushed, what="proxy 1 to receive the fleet view")
    before = await _requests(pair, 0)
    # Proxy 1 never saw A fail itself, yet goes straight to B.
    assert await _call(pair, index=1) == ("e-b", 1)
    assert await _requests(pair, 0) == before

    listing = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "megarouter.ctl", "--server", pair.admin_address, "health"],
        capture_output=True, text=True, timeout=60)
    assert listing.returncode == 0, listing.stderr
    row = next(line.split() for line in listing.stdout.splitlines() if line.startswith("e-a "))
    assert row[-1] == "1"  # ejected by one proxy
    assert "connected by region: default 2" in listing.stdout


async def test_a_request_that_breaks_every_provider_ejects_none_of_them(pair: System) -> None:
    """A malformed request that makes providers answer 5xx was retried on each and counted
    against their health, so a client could eject healthy endpoints. Now its failures on
    several providers wait for each provider's next outcome, and one that goes on serving
    other requests is not charged."""
    poison = "POISON-7e1a"
    for index in (0, 1):
        await pair.set_sim(index, fail_on_text=poison)
    for model in ("m-a", "m-b"):  # both endpoints serve ordinary traffic (the model ids name one each)
        await _call(pair, model)
    for round_ in range(8):
        with pytest.raises(openai.APIStatusError) as failed:
            await _client(pair).chat.completions.create(
                model="pool", messages=[{"role": "user", "content": f"{poison} {round_}"}])
        assert failed.value.status_code == 502 and "may be malformed" in failed.value.message
        for model in ("m-a", "m-b"):  # and ordinary traffic is served at the first attempt, on both
            assert (await _call(pair, model))[1] == 1
    async with aiohttp.ClientSession() as session:
        async with session.get(pair.base_url().removesuffix("/v1") + "/metrics") as response:
            metrics = await response.text()
    assert "megarouter_endpoint_ejections_total{" not in metrics
    dropped = float(next(line.split()[1] for line in metrics.splitlines()
                         if line.startswith("megarouter_suspect_failures_total ")))
    assert dropped == 16  # 8 requests, each failing on both providers
