"""Azure OpenAI end to end: the official `openai` SDK through the proxy to a
simulator speaking Azure's wire (deployment URLs, `api-version`, `api-key`,
the prompt-annotation chunk that opens every stream).

The simulator only answers with the right key in the `api-key` header and an
`api-version` in the query, and only for deployments it has, so a passing
call proves the proxy addressed Azure the way Azure wants.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import openai
import pytest

from megarouter.admin_client import admin_channel
from megarouter.v1 import admin_pb2
from tests.conftest import API_KEY, System, start_controlplane
from tests.harness import start_service
from tests.test_e2e_providers import TOOL

AZURE_SECRET = "azure-test-secret-0003"
DEPLOYMENTS = "gpt4o-prod,ada-prod"
HELLO = [{"role": "user", "content": "Hello there"}]


def manifest(port: int) -> str:
    return f"""
providers:
  - {{name: az, kind: azure_openai, base_url: 'http://127.0.0.1:{port}',
     credential: {{env: TEST_AZURE_KEY}}, options: {{api_version: '2024-10-21'}}}}
---
models:
  - {{name: gpt-4o-azure, context_window: 128000,
     capabilities: {{tools: true, streaming: true, json_mode: true}}}}
  - {{name: ada-azure, context_window: 8192, capabilities: {{embeddings: true}}}}
---
endpoints:
  - {{name: gpt4o-az, model: gpt-4o-azure, provider: az, upstream_model: gpt4o-prod}}
  - {{name: ada-az, model: ada-azure, provider: az, upstream_model: ada-prod}}
"""


@pytest.fixture(scope="module")
async def azure(tmp_path_factory) -> AsyncIterator[System]:
    tmp = tmp_path_factory.mktemp("azure")
    sim = await start_service("sim-azure", ["sim", "--port", "0", "--wire", "azure", "--name", "sim-azure",
                                            "--models", DEPLOYMENTS, "--api-key", AZURE_SECRET], tmp / "logs")
    system = System(tmp=tmp, controlplane=await start_controlplane(tmp), sims=[sim])
    try:
        system.channel = admin_channel(system.admin_address)
        await system.apply(manifest(sim.port))
        created = await system.admin.CreateApiKey(admin_pb2.CreateApiKeyRequest(name="t", secret=API_KEY))
        await system.start_proxy(env={"TEST_AZURE_KEY": AZURE_SECRET})
        await system.wait_proxy_version(created.revision)
        yield system
    finally:
        await system.close()


@pytest.fixture
async def client(azure: System) -> AsyncIterator[openai.AsyncOpenAI]:
    sdk = openai.AsyncOpenAI(base_url=azure.base_url(), api_key=API_KEY, max_retries=0)
    yield sdk
    await sdk.close()


async def test_chat(azure: System, client: openai.AsyncOpenAI) -> None:
    raw = await client.chat.completions.with_raw_response.create(
        model="gpt-4o-azure",
        messages=[{"role": "system", "content": "Be brief."}, *HELLO],
        max_tokens=50,
    )
    completion = raw.parse()
    assert raw.headers["x-megarouter-model"] == "gpt-4o-azure"
    assert raw.headers["x-megarouter-endpoint"] == "gpt4o-az"
    assert completion.object == "chat.completion"
    assert completion.model == "gpt4o-prod"  # the deployment the simulator served
    assert completion.choices[0].message.content and completion.choices[0].finish_reason == "stop"
    usage = completion.usage
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


async def test_streaming_with_usage(client: openai.AsyncOpenAI) -> None:
    messages = [{"role": "user", "content": "Stream me a story"}]
    whole = await client.chat.completions.create(model="gpt-4o-azure", messages=messages)
    stream = await client.chat.completions.create(
        model="gpt-4o-azure", messages=messages, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    # Azure's opening chunk carries the prompt's filter verdict and no choices;
    # it reaches the caller, and the SDK takes it in its stride.
    annotations = [c for c in chunks if getattr(c, "prompt_filter_results", None)]
    assert annotations and annotations[0] is chunks[0] and chunks[0].choices == []
    text, finish, usage = "", None, None
    for chunk in chunks:
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
        usage = chunk.usage or usage
    assert text == whole.choices[0].message.content
    assert finish == "stop"
    assert usage is not None and usage.completion_tokens == whole.usage.completion_tokens
    assert usage.prompt_tokens == whole.usage.prompt_tokens


async def test_streaming_without_usage_hides_it(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(model="gpt-4o-azure", messages=HELLO, stream=True)
    chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert all(c.usage is None for c in chunks)


async def test_tool_call_round_trip(client: openai.AsyncOpenAI) -> None:
    messages: list[dict] = [{"role": "user", "content": "Where is order 42?"}]
    first = await client.chat.completions.create(
        model="gpt-4o-azure", messages=messages, tools=[TOOL], tool_choice="required"
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "lookup_order"
    assert isinstance(json.loads(call.function.arguments)["order_id"], str)
    messages.append(choice.message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": '{"status": "shipped"}'})
    second = await client.chat.completions.create(model="gpt-4o-azure", messages=messages, tools=[TOOL])
    assert second.choices[0].finish_reason == "stop" and second.choices[0].message.content


async def test_embeddings(client: openai.AsyncOpenAI) -> None:
    raw = await client.embeddings.with_raw_response.create(model="ada-azure", input=["a", "b", "a"])
    assert raw.headers["x-megarouter-endpoint"] == "ada-az"
    vectors = raw.parse()
    assert [item.index for item in vectors.data] == [0, 1, 2]
    assert all(len(item.embedding) == 1536 for item in vectors.data)
    assert vectors.data[0].embedding == vectors.data[2].embedding != vectors.data[1].embedding
    assert vectors.usage.prompt_tokens > 0
    small = await client.embeddings.create(model="ada-azure", input="hello", dimensions=64)
    assert len(small.data[0].embedding) == 64


async def test_simulator_saw_only_well_formed_azure_requests(azure: System, client: openai.AsyncOpenAI) -> None:
    await client.chat.completions.create(model="gpt-4o-azure", messages=HELLO)
    await client.embeddings.create(model="ada-azure", input="x")
    stats = await azure.sim_stats()
    assert stats["chat_requests"] > 0 and stats["embedding_requests"] > 0
    # Every call came with the key and an api-version, for a deployment that exists.
    assert set(stats["by_status"]) == {"200"}


async def test_proxy_without_the_secret_leaves_azure_out(azure: System) -> None:
    proxy = await azure.start_proxy()  # no TEST_AZURE_KEY in its environment
    index = azure.proxies.index(proxy)
    table = await azure.admin.GetRoutingTable(admin_pb2.GetRoutingTableRequest())
    await azure.wait_proxy_version(table.version, index)
    before = await azure.sim_stats()
    other = openai.AsyncOpenAI(base_url=azure.base_url(index), api_key=API_KEY, max_retries=0)
    try:
        with pytest.raises(openai.APIStatusError) as caught:
            await other.chat.completions.create(model="gpt-4o-azure", messages=HELLO)
        assert caught.value.status_code == 503
        # The embeddings model is unserved too: a 503, like chat.
        with pytest.raises(openai.APIStatusError) as caught:
            await other.embeddings.create(model="ada-azure", input="x")
        assert caught.value.status_code == 503
    finally:
        await other.close()
    assert (await azure.sim_stats())["requests"] == before["requests"]  # nothing was sent without a key
    log = proxy.log_text()
    assert "TEST_AZURE_KEY" in log  # the warning names the reference...
    for service in (*azure.proxies, azure.controlplane, *azure.sims):
        assert AZURE_SECRET not in service.log_text()  # ...and no log holds the secret
