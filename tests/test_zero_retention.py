"""No prompt or completion content reaches logs, metrics, the store or caches."""

from __future__ import annotations

import uuid

import aiohttp
import anthropic
import openai

from megarouter.v1 import admin_pb2
from tests.conftest import API_KEY, System


async def test_canary_never_leaves_memory(fresh_system: System) -> None:
    system = fresh_system
    await system.start_proxy()  # the whole system: control plane, two proxies, simulator
    table = await system.admin.GetRoutingTable(admin_pb2.GetRoutingTableRequest())
    await system.wait_proxy_version(table.version, 1)
    canary = f"CANARY-{uuid.uuid4().hex}"
    messages = [{"role": "system", "content": f"secret {canary}"}, {"role": "user", "content": canary}]
    for index in range(2):
        client = openai.AsyncOpenAI(base_url=system.base_url(index), api_key=API_KEY, max_retries=0)
        await client.chat.completions.create(model="auto", messages=messages)
        stream = await client.chat.completions.create(model="chat", messages=messages, stream=True)
        async for _ in stream:
            pass
        await client.completions.create(model="chat", prompt=canary, max_tokens=5)
        await client.responses.create(model="chat", instructions=f"secret {canary}", input=canary)
        async with client.responses.stream(model="chat", input=canary) as events:
            async for _ in events:
                pass
        claude = anthropic.AsyncAnthropic(base_url=system.base_url(index).removesuffix("/v1"), api_key=API_KEY,
                                          max_retries=0)
        await claude.messages.create(model="chat", max_tokens=20, system=f"secret {canary}",
                                     messages=[{"role": "user", "content": canary}])
        async with claude.messages.stream(model="chat", max_tokens=20,
                                          messages=[{"role": "user", "content": canary}]) as events:
            await events.get_final_message()
        await claude.messages.count_tokens(model="chat", messages=[{"role": "user", "content": canary}])
        # A malformed request whose field holds the canary: its 400 must not log it either.
        try:
            await claude.messages.create(model="chat", max_tokens=20, messages=[{"role": canary, "content": canary}])
        except anthropic.BadRequestError:
            pass
        await claude.close()
        # A failing request too: errors must not echo content into logs either.
        await system.set_sim(error_rate=1.0, error_status=500)
        try:
            await client.chat.completions.create(model="chat", messages=messages)
        except openai.APIStatusError:
            pass
        await system.set_sim(error_rate=0.0)
    usage = await system.admin.QueryUsage(admin_pb2.QueryUsageRequest(group_by=["model"]))
    assert canary not in str(usage)

    async with aiohttp.ClientSession() as session:
        urls = [system.base_url(i).removesuffix("/v1") + "/metrics" for i in range(2)]
        urls.append(f"http://127.0.0.1:{system.controlplane.ready['metrics_port']}/metrics")
        for url in urls:
            async with session.get(url) as response:
                assert canary not in await response.text()
    for service in (*system.proxies, system.controlplane, *system.sims):
        await service.stop()  # flush everything they would write
    searched = 0
    for path in system.tmp.rglob("*"):
        if path.is_file():
            searched += 1
            assert canary.encode() not in path.read_bytes(), f"canary found in {path}"
    assert searched >= 6  # logs of every service (debug level), the store, both proxies' table caches
