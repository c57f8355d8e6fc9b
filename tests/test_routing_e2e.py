"""Strategies against simulated providers with different speeds and prices."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import openai
import pytest

from megarouter.admin_client import admin_channel
from megarouter.v1 import admin_pb2, routing_pb2
from tests.conftest import API_KEY, System, start_controlplane
from tests.harness import start_service

# name, simulated latency (ms), price in/out per M tokens, quality tier
POOL = [("fast", 20, 10.0, 30.0, 4), ("mid", 90, 2.0, 8.0, 3), ("cheap", 180, 0.1, 0.4, 2)]


@pytest.fixture
async def pool(tmp_path) -> AsyncIterator[System]:
    sims = [await start_service(f"sim-{name}", ["sim", "--port", "0", "--models", f"up-{name}",
                                                "--latency-ms", str(latency)], tmp_path / "logs")
            for name, latency, *_ in POOL]
    system = System(tmp=tmp_path, controlplane=await start_controlplane(tmp_path), sims=sims)
    providers = "\n".join(f"  - {{name: p-{name}, kind: openai, base_url: 'http://127.0.0.1:{sim.port}/v1'}}"
                          for (name, *_), sim in zip(POOL, sims, strict=True))
    models = "\n".join(f"  - {{name: m-{n}, input_price_per_mtok: {pi}, output_price_per_mtok: {po}, "
                       f"context_window: 100000, quality_tier: {q}, capabilities: {{streaming: true}}}}"
                       for n, _, pi, po, q in POOL)
    endpoints = "\n".join(f"  - {{name: e-{n}, model: m-{n}, provider: p-{n}, upstream_model: up-{n}}}"
                          for n, *_ in POOL)
    try:
        system.channel = admin_channel(system.admin_address)
        await system.apply(f"providers:\n{providers}\n---\nmodels:\n{models}\n---\nendpoints:\n{endpoints}\n---\n"
                           "route: {name: pool, tiers: [{models: [m-fast, m-mid, m-cheap]}]}\n")
        created = await system.admin.CreateApiKey(admin_pb2.CreateApiKeyRequest(name="k", secret=API_KEY))
        await system.start_proxy()
        await system.wait_proxy_version(created.revision)
        yield system
    finally:
        await system.close()


async def _served(client: openai.AsyncOpenAI, strategy: str, count: int, **headers: str) -> list[str]:
    served = []
    for _ in range(count):
        raw = await client.chat.completions.with_raw_response.create(
            model="pool", messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-megarouter-strategy": strategy, **headers},
        )
        assert raw.headers["x-megarouter-strategy"] == strategy
        served.append(raw.headers["x-megarouter-endpoint"])
    return served


async def test_latency_converges_on_fastest_and_moves_when_it_degrades(pool: System) -> None:
    client = openai.AsyncOpenAI(base_url=pool.base_url(), api_key=API_KEY, max_retries=0)
    # An unmeasured endpoint counts as fast as the best measured one, so it is explored only
    # when power-of-two-choices draws it; until then it can take a request in the checked
    # window. Simulating this router with these latencies (20,000 runs each): 15 requests
    # failed the check 6 % of the time, 20 requests 0.17 %, 25 requests once, 30 never.
    served = await _served(client, "latency", 30)
    assert served[-8:] == ["e-fast"] * 8, served
    await pool.set_sim(0, latency_ms=600)  # the fastest degrades at run time
    served = await _served(client, "latency", 10)
    assert served[-5:] == ["e-mid"] * 5, served


async def test_cost_picks_cheapest_meeting_the_floor(pool: System) -> None:
    client = openai.AsyncOpenAI(base_url=pool.base_url(), api_key=API_KEY, max_retries=0)
    assert set(await _served(client, "cost", 3)) == {"e-cheap"}
    assert set(await _served(client, "cost", 3, **{"x-megarouter-min-quality": "3"})) == {"e-mid"}
    assert set(await _served(client, "cost", 3, **{"x-megarouter-min-quality": "4"})) == {"e-fast"}


async def test_strategy_set_on_route_and_globally(pool: System) -> None:
    client = openai.AsyncOpenAI(base_url=pool.base_url(), api_key=API_KEY, max_retries=0)
    defaults = await pool.admin.PutDefaults(routing_pb2.Defaults(strategy=routing_pb2.STRATEGY_COST))  # STRATEGY_COST
    await pool.wait_proxy_version(defaults.revision)
    raw = await client.chat.completions.with_raw_response.create(model="pool", messages=[{"role": "user",
                                                                                          "content": "hi"}])
    assert raw.headers["x-megarouter-strategy"] == "cost"
    assert raw.headers["x-megarouter-endpoint"] == "e-cheap"
    route = await pool.admin.GetRoute(admin_pb2.GetRequest(name="pool"))
    route.strategy = routing_pb2.STRATEGY_AVAILABILITY  # overrides the global default
    put = await pool.admin.PutRoute(route)
    await pool.wait_proxy_version(put.revision)
    raw = await client.chat.completions.with_raw_response.create(model="pool", messages=[{"role": "user",
                                                                                          "content": "hi"}])
    assert raw.headers["x-megarouter-strategy"] == "availability"

    # Teams (any org node) set a default for their keys, which beats the route's; the nearest
    # node that sets one wins, and a key's own beats its nodes'.
    await pool.apply("""
nodes:
  - {name: acme, kind: org, default_strategy: cost}
  - {name: ml, kind: team, parent: acme, default_strategy: latency}
  - {name: ml-search, kind: project, parent: ml}
""")
    secrets = {"k-project": "sk-mr-project-key-0123456789", "k-org": "sk-mr-org-key-0123456789abc",
               "k-own": "sk-mr-own-key-0123456789abcd"}
    revision = 0
    for name, node, own in (("k-project", "ml-search", ""), ("k-org", "acme", ""), ("k-own", "ml-search", "balanced")):
        created = await pool.admin.CreateApiKey(admin_pb2.CreateApiKeyRequest(
            name=name, secret=secrets[name], node=node,
            default_strategy=routing_pb2.Strategy.Value(f"STRATEGY_{own.upper()}") if own else 0))
        revision = created.revision
    await pool.wait_proxy_version(revision)
    for name, expected in (("k-project", "latency"), ("k-org", "cost"), ("k-own", "balanced")):
        keyed = openai.AsyncOpenAI(base_url=pool.base_url(), api_key=secrets[name], max_retries=0)
        raw = await keyed.chat.completions.with_raw_response.create(
            model="pool", messages=[{"role": "user", "content": "hi"}])
        assert raw.headers["x-megarouter-strategy"] == expected, name


async def test_explain_lists_scored_candidates_without_content(pool: System) -> None:
    client = openai.AsyncOpenAI(base_url=pool.base_url(), api_key=API_KEY, max_retries=0)
    raw = await client.chat.completions.with_raw_response.create(
        model="pool", messages=[{"role": "user", "content": "SECRET-PROMPT"}],
        extra_headers={"x-megarouter-explain": "1", "x-megarouter-strategy": "cost"},
    )
    header = raw.headers["x-megarouter-explain"]
    assert "SECRET-PROMPT" not in header
    explained = json.loads(header)
    assert explained["strategy"] == "cost"
    assert [c["endpoint"] for c in explained["candidates"]][0] == raw.headers["x-megarouter-endpoint"]
    assert {"score", "cost_usd", "latency_ms", "p_success", "quality"} <= set(explained["candidates"][0])


async def test_invalid_controls_are_400_naming_the_allowed_values(pool: System) -> None:
    client = openai.AsyncOpenAI(base_url=pool.base_url(), api_key=API_KEY, max_retries=0)
    with pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(model="pool", messages=[{"role": "user", "content": "x"}],
                                             extra_headers={"x-megarouter-strategy": "fastest"})
    assert caught.value.param == "x-megarouter-strategy"
    assert all(name in caught.value.message for name in ("cost", "latency", "balanced", "availability"))
    with pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(model="pool", messages=[{"role": "user", "content": "x"}],
                                             extra_headers={"x-megarouter-min-quality": "9"})
    assert caught.value.param == "x-megarouter-min-quality"


async def test_balanced_weights_are_configurable_per_route(pool: System) -> None:
    client = openai.AsyncOpenAI(base_url=pool.base_url(), api_key=API_KEY, max_retries=0)
    route = await pool.admin.GetRoute(admin_pb2.GetRequest(name="pool"))
    route.weights.cost, route.weights.quality = 1.0, 0.0
    put = await pool.admin.PutRoute(route)
    await pool.wait_proxy_version(put.revision)
    assert set(await _served(client, "balanced", 3)) == {"e-cheap"}
    route.weights.cost, route.weights.quality = 0.0, 1.0
    put = await pool.admin.PutRoute(route)
    await pool.wait_proxy_version(put.revision)
    assert set(await _served(client, "balanced", 3)) == {"e-fast"}  # the highest quality tier
