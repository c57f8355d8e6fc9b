"""No prompt or completion content reaches logs, metrics, the store or caches."""

from __future__ import annotations

import uuid

import aiohttp
import openai

from tests.conftest import API_KEY, System


async def test_canary_never_leaves_memory(fresh_system: System) -> None:
    system = fresh_system
    canary = f"CANARY-{uuid.uuid4().hex}"
    client = openai.AsyncOpenAI(base_url=system.base_url(), api_key=API_KEY, max_retries=0)
    messages = [{"role": "system", "content": f"secret {canary}"}, {"role": "user", "content": canary}]
    await client.chat.completions.create(model="auto", messages=messages)
    stream = await client.chat.completions.create(model="chat", messages=messages, stream=True)
    async for _ in stream:
        pass
    # A failing request too: errors must not echo content into logs either.
    await system.set_sim(error_rate=1.0, error_status=500)
    try:
        await client.chat.completions.create(model="chat", messages=messages)
    except openai.APIStatusError:
        pass
    await system.set_sim(error_rate=0.0)

    async with aiohttp.ClientSession() as session:
        for url in (system.base_url().removesuffix("/v1") + "/metrics",
                    f"http://127.0.0.1:{system.controlplane.ready['metrics_port']}/metrics"):
            async with session.get(url) as response:
                assert canary not in await response.text()
    for service in (*system.proxies, system.controlplane, *system.sims):
        await service.stop()  # flush everything they would write
    searched = 0
    for path in system.tmp.rglob("*"):
        if path.is_file():
            searched += 1
            assert canary.encode() not in path.read_bytes(), f"canary found in {path}"
    assert searched >= 5  # logs of every service, the store, the proxy's table cache
