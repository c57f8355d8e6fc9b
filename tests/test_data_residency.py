"""Data residency: a route limited to one region never sends traffic elsewhere —
for every API, in normal operation and when the allowed region is failing
(failover must not leave the region either).

Two OpenAI-wire simulators (EU, US) serve chat, completions and embeddings;
two Anthropic-wire simulators (EU, US) serve `/v1/messages` natively. The US
ones are where a region-blind path would go: they serve the same models, and
when the EU ones fail they are the only healthy endpoints left.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from megarouter.admin_client import admin_channel
from megarouter.v1 import admin_pb2
from tests.conftest import API_KEY, System, start_controlplane
from tests.harness import start_service

ANTHROPIC_SECRET = "sk-ant-residency-0003"
SIMS = ("oai-eu", "oai-us", "ant-eu", "ant-us")


def manifest(ports: dict[str, int]) -> str:
    return f"""
providers:
  - {{name: oai-eu, kind: openai, base_url: 'http://127.0.0.1:{ports["oai-eu"]}/v1', region: eu-west}}
  - {{name: oai-us, kind: openai, base_url: 'http://127.0.0.1:{ports["oai-us"]}/v1', region: us-east}}
  - {{name: ant-eu, kind: anthropic, base_url: 'http://127.0.0.1:{ports["ant-eu"]}/v1', region: eu-west,
     credential: {{env: TEST_ANTHROPIC_KEY}}}}
  - {{name: ant-us, kind: anthropic, base_url: 'http://127.0.0.1:{ports["ant-us"]}/v1', region: us-east,
     credential: {{env: TEST_ANTHROPIC_KEY}}}}
---
models:
  - {{name: chat-m, context_window: 128000, capabilities: {{tools: true, streaming: true}}}}
  - {{name: embed-m, context_window: 8192, capabilities: {{embeddings: true}}}}
  - {{name: claude-m, context_window: 200000, capabilities: {{tools: true, streaming: true}}}}
---
endpoints:
  - {{name: chat-eu, model: chat-m, provider: oai-eu, upstream_model: gpt-4o-mini}}
  - {{name: chat-us, model: chat-m, provider: oai-us, upstream_model: gpt-4o-mini}}
  - {{name: embed-eu, model: embed-m, provider: oai-eu, upstream_model: text-embedding-3-small}}
  - {{name: embed-us, model: embed-m, provider: oai-us, upstream_model: text-embedding-3-small}}
  - {{name: claude-eu, model: claude-m, provider: ant-eu, upstream_model: claude-sonnet-4-5}}
  - {{name: claude-us, model: claude-m, provider: ant-us, upstream_model: claude-sonnet-4-5}}
---
routes:
  - {{name: eu-only, allowed_regions: [eu-west], tiers: [{{models: [chat-m, embed-m]}}],
     retry: {{max_attempts: 4}}}}
  - {{name: eu-claude, allowed_regions: [eu-west], tiers: [{{models: [claude-m]}}], retry: {{max_attempts: 4}}}}
"""


@pytest.fixture(scope="module")
async def regions(tmp_path_factory) -> AsyncIterator[System]:
    tmp = tmp_path_factory.mktemp("residency")
    logs = tmp / "logs"
    sims = []
    for name in SIMS:
        wire = "anthropic" if name.startswith("ant") else "openai"
        models = "claude-sonnet-4-5" if wire == "anthropic" else "gpt-4o-mini,text-embedding-3-small"
        extra = ["--api-key", ANTHROPIC_SECRET] if wire == "anthropic" else []
        sims.append(await start_service(name, ["sim", "--port", "0", "--name", name, "--wire", wire,
                                               "--models", models, *extra], logs))
    system = System(tmp=tmp, controlplane=await start_controlplane(tmp), sims=sims)
    try:
        system.channel = admin_channel(system.admin_address)
        await system.apply(manifest({name: sim.port for name, sim in zip(SIMS, sims, strict=True)}))
        created = await system.admin.CreateApiKey(admin_pb2.CreateApiKeyRequest(name="t", secret=API_KEY))
        await system.start_proxy(env={"TEST_ANTHROPIC_KEY": ANTHROPIC_SECRET})
        await system.wait_proxy_version(created.revision)
        yield system
    finally:
        await system.close()


# Each operation: path, body, and the simulator pair (EU, US) that serves it.
OPERATIONS = {
    "chat": ("/chat/completions", {"model": "eu-only", "messages": [{"role": "user", "content": "Hi"}]}, "oai"),
    "completions": ("/completions", {"model": "eu-only", "prompt": "Once upon", "max_tokens": 8}, "oai"),
    "embeddings": ("/embeddings", {"model": "eu-only", "input": ["a European customer's text"]}, "oai"),
    "responses": ("/responses", {"model": "eu-only", "input": "Hi"}, "oai"),
    "messages": ("/messages", {"model": "eu-only", "max_tokens": 16,
                               "messages": [{"role": "user", "content": "Hi"}]}, "oai"),
    "messages-native": ("/messages", {"model": "eu-claude", "max_tokens": 16,
                                      "messages": [{"role": "user", "content": "Hi"}]}, "ant"),
}


async def _requests(system: System, sim: str) -> int:
    return (await system.sim_stats(SIMS.index(sim)))["requests"]


@pytest.mark.parametrize("operation", list(OPERATIONS))
async def test_a_region_limited_route_never_leaves_its_region(regions: System, operation: str) -> None:
    path, body, family = OPERATIONS[operation]
    eu, us = f"{family}-eu", f"{family}-us"
    us_before, eu_before = await _requests(regions, us), await _requests(regions, eu)
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with aiohttp.ClientSession() as session:
        for stream in (False, True) if operation != "embeddings" else (False,):
            for strategy in ("balanced", "latency", "cost", "availability"):
                async with session.post(regions.base_url() + path, json={**body, "stream": stream} if stream
                                        else body, headers={**headers, "x-megarouter-strategy": strategy}) as answer:
                    await answer.read()
                    assert answer.status == 200, await answer.text()
        assert await _requests(regions, eu) > eu_before
        # The allowed region fails: failover stays in it, and the request fails rather than leave.
        await regions.set_sim(SIMS.index(eu), error_rate=1.0)
        try:
            for _ in range(3):
                async with session.post(regions.base_url() + path, json=body, headers=headers) as answer:
                    await answer.read()
                    assert answer.status >= 500
        finally:
            await regions.set_sim(SIMS.index(eu), error_rate=0.0)
    assert await _requests(regions, us) == us_before
