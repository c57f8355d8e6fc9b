"""One application, three wire formats: the official `openai` SDK through the
proxy to simulated OpenAI-, Anthropic- and Gemini-speaking providers.

The simulators require their provider's own auth header with a secret the
proxy reads from its environment, so these tests also prove credentials are
resolved from references and sent the way each provider expects.
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

ANTHROPIC_SECRET = "sk-ant-test-secret-0001"
GEMINI_SECRET = "gemini-test-secret-0002"
TOOL = {
    "type": "function",
    "function": {
        "name": "lookup_order",
        "description": "Find an order",
        "parameters": {
            "type": "object",
            "properties": {"order_id": {"type": "string"}, "include_items": {"type": "boolean"}},
            "required": ["order_id"],
        },
    },
}
MODELS = ("gpt-sim", "claude-sim", "gemini-sim")


def manifest(openai_port: int, anthropic_port: int, gemini_port: int) -> str:
    caps = "{tools: true, vision: true, json_mode: true, streaming: true}"
    return f"""
providers:
  - {{name: oai, kind: openai, base_url: 'http://127.0.0.1:{openai_port}/v1'}}
  - {{name: anth, kind: anthropic, base_url: 'http://127.0.0.1:{anthropic_port}/v1',
     credential: {{env: TEST_ANTHROPIC_KEY}}}}
  - {{name: gem, kind: gemini, base_url: 'http://127.0.0.1:{gemini_port}/v1beta',
     credential: {{env: TEST_GEMINI_KEY}}}}
---
models:
  - {{name: gpt-sim, context_window: 128000, capabilities: {caps}}}
  - {{name: gpt-instruct-sim, context_window: 4096, capabilities: {{completions: true}}}}
  - {{name: claude-sim, context_window: 200000, capabilities: {caps}}}
  - {{name: gemini-sim, context_window: 1000000, capabilities: {caps}}}
  - {{name: gemini-embed-sim, context_window: 2048, capabilities: {{embeddings: true}}}}
  - {{name: openai-embed-sim, context_window: 8192, capabilities: {{embeddings: true}}}}
---
endpoints:
  - {{name: gpt-oai, model: gpt-sim, provider: oai, upstream_model: gpt-4o-mini}}
  - {{name: instruct-oai, model: gpt-instruct-sim, provider: oai, upstream_model: gpt-3.5-turbo-instruct}}
  - {{name: claude-anth, model: claude-sim, provider: anth, upstream_model: claude-sonnet-4-5}}
  - {{name: gemini-gem, model: gemini-sim, provider: gem, upstream_model: gemini-2.5-flash}}
  - {{name: gemini-embed-gem, model: gemini-embed-sim, provider: gem, upstream_model: text-embedding-004}}
  - {{name: openai-embed-oai, model: openai-embed-sim, provider: oai, upstream_model: text-embedding-3-small}}
---
routes:
  - {{name: claude-then-gemini, tiers: [{{models: [claude-sim]}}, {{models: [gemini-sim]}}]}}
  - {{name: embed, tiers: [{{models: [gemini-embed-sim]}}, {{models: [openai-embed-sim]}}]}}
"""


@pytest.fixture(scope="module")
async def providers(tmp_path_factory) -> AsyncIterator[System]:
    tmp = tmp_path_factory.mktemp("providers")
    logs = tmp / "logs"
    sims = [
        await start_service("sim-openai", ["sim", "--port", "0", "--wire", "openai",
                                           "--models", "gpt-4o-mini,gpt-3.5-turbo-instruct,text-embedding-3-small"],
                            logs),
        await start_service("sim-anthropic", ["sim", "--port", "0", "--wire", "anthropic",
                                              "--models", "claude-sonnet-4-5", "--api-key", ANTHROPIC_SECRET], logs),
        await start_service("sim-gemini", ["sim", "--port", "0", "--wire", "gemini",
                                           "--models", "gemini-2.5-flash,text-embedding-004",
                                           "--api-key", GEMINI_SECRET], logs),
    ]
    system = System(tmp=tmp, controlplane=await start_controlplane(tmp), sims=sims)
    try:
        system.channel = admin_channel(system.admin_address)
        await system.apply(manifest(*(sim.port for sim in sims)))
        created = await system.admin.CreateApiKey(admin_pb2.CreateApiKeyRequest(name="t", secret=API_KEY))
        await system.start_proxy(env={"TEST_ANTHROPIC_KEY": ANTHROPIC_SECRET, "TEST_GEMINI_KEY": GEMINI_SECRET})
        await system.wait_proxy_version(created.revision)
        yield system
    finally:
        await system.close()


@pytest.fixture
def client(providers: System) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=providers.base_url(), api_key=API_KEY, max_retries=0)


@pytest.mark.parametrize("model", MODELS)
async def test_same_code_any_backend(client: openai.AsyncOpenAI, model: str) -> None:
    raw = await client.chat.completions.with_raw_response.create(
        model=model,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}],
        max_tokens=50,
    )
    completion = raw.parse()
    assert raw.headers["x-megarouter-model"] == model
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content
    assert completion.choices[0].finish_reason == "stop"
    usage = completion.usage
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


@pytest.mark.parametrize("model", MODELS)
async def test_streaming_any_backend(client: openai.AsyncOpenAI, model: str) -> None:
    messages = [{"role": "user", "content": "Stream me a story"}]
    whole = await client.chat.completions.create(model=model, messages=messages)
    stream = await client.chat.completions.create(
        model=model, messages=messages, stream=True, stream_options={"include_usage": True}
    )
    text, finish, usage = "", None, None
    async for chunk in stream:
        assert chunk.object == "chat.completion.chunk"
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
        usage = chunk.usage or usage
    assert text == whole.choices[0].message.content
    assert finish == "stop"
    assert usage is not None and usage.completion_tokens == whole.usage.completion_tokens


@pytest.mark.parametrize("model", MODELS)
async def test_tool_round_trip_any_backend(client: openai.AsyncOpenAI, model: str) -> None:
    messages: list[dict] = [{"role": "user", "content": "Where is order 42?"}]
    first = await client.chat.completions.create(model=model, messages=messages, tools=[TOOL], tool_choice="required")
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "lookup_order"
    assert isinstance(json.loads(call.function.arguments)["order_id"], str)
    messages.append(choice.message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": '{"status": "shipped"}'})
    second = await client.chat.completions.create(model=model, messages=messages, tools=[TOOL])
    assert second.choices[0].finish_reason == "stop" and second.choices[0].message.content


@pytest.mark.parametrize("model", ["claude-sim", "gemini-sim"])
async def test_streamed_tool_call_is_reassembled(client: openai.AsyncOpenAI, model: str) -> None:
    stream = await client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "order 7?"}], tools=[TOOL],
        tool_choice={"type": "function", "function": {"name": "lookup_order"}}, stream=True,
    )
    calls: dict[int, dict] = {}
    finish = None
    async for chunk in stream:
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for delta in choice.delta.tool_calls or []:
                call = calls.setdefault(delta.index, {"name": "", "arguments": ""})
                call["name"] += delta.function.name or ""
                call["arguments"] += delta.function.arguments or ""
    assert finish == "tool_calls"
    assert calls[0]["name"] == "lookup_order"
    assert "order_id" in json.loads(calls[0]["arguments"])


async def test_embeddings_through_gemini_and_openai(client: openai.AsyncOpenAI) -> None:
    single = await client.embeddings.with_raw_response.create(model="embed", input="hello world")
    assert single.headers["x-megarouter-endpoint"] == "gemini-embed-gem"
    vectors = single.parse()
    assert len(vectors.data) == 1 and len(vectors.data[0].embedding) > 10
    batch = await client.embeddings.create(model="gemini-embed-sim", input=["a", "b", "a"], dimensions=64)
    assert [item.index for item in batch.data] == [0, 1, 2]
    assert all(len(item.embedding) == 64 for item in batch.data)
    assert batch.data[0].embedding == batch.data[2].embedding != batch.data[1].embedding
    assert batch.usage.prompt_tokens > 0
    direct = await client.embeddings.create(model="openai-embed-sim", input=["x", "y"])
    assert len(direct.data) == 2 and direct.usage.prompt_tokens > 0


async def test_embeddings_to_a_chat_model_is_a_clear_400(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await client.embeddings.create(model="claude-sim", input="x")
    assert caught.value.param == "model"


async def test_legacy_completions_native_and_through_chat(client: openai.AsyncOpenAI) -> None:
    native = await client.completions.with_raw_response.create(model="gpt-instruct-sim", prompt="Once upon")
    assert native.headers["x-megarouter-endpoint"] == "instruct-oai"
    assert native.parse().choices[0].text
    for model in ("claude-sim", "gemini-sim"):
        translated = await client.completions.create(model=model, prompt="Once upon a time", max_tokens=5)
        assert translated.object == "text_completion"
        assert translated.choices[0].text and translated.choices[0].finish_reason == "length"
        assert translated.usage.completion_tokens == 5
        stream = await client.completions.create(model=model, prompt="Once upon a time", stream=True)
        text = "".join([chunk.choices[0].text async for chunk in stream if chunk.choices])
        assert text


async def test_overloaded_anthropic_fails_over_to_gemini(providers: System, client: openai.AsyncOpenAI) -> None:
    await providers.set_sim(1, error_rate=1.0, error_status=529)
    try:
        raw = await client.chat.completions.with_raw_response.create(
            model="claude-then-gemini", messages=[{"role": "user", "content": "hi"}]
        )
    finally:
        await providers.set_sim(1, error_rate=0.0, error_status=500)
    assert raw.headers["x-megarouter-model"] == "gemini-sim"
    assert raw.headers["x-megarouter-attempts"] == "2"


async def test_provider_rejecting_the_credential_is_not_the_callers_fault(
    providers: System, client: openai.AsyncOpenAI
) -> None:
    """A proxy without the Gemini secret leaves Gemini out instead of failing calls."""
    proxy = await providers.start_proxy(env={"TEST_ANTHROPIC_KEY": ANTHROPIC_SECRET})
    index = providers.proxies.index(proxy)
    table = await providers.admin.GetRoutingTable(admin_pb2.GetRoutingTableRequest())
    await providers.wait_proxy_version(table.version, index)
    other = openai.AsyncOpenAI(base_url=providers.base_url(index), api_key=API_KEY, max_retries=0)
    raw = await other.chat.completions.with_raw_response.create(
        model="claude-then-gemini", messages=[{"role": "user", "content": "hi"}]
    )
    assert raw.headers["x-megarouter-model"] == "claude-sim"
    with pytest.raises(openai.APIStatusError) as caught:
        await other.chat.completions.create(model="gemini-sim", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == 503
    log = providers.proxies[index].log_text()
    assert "TEST_GEMINI_KEY" in log  # the warning names the reference...
    assert ANTHROPIC_SECRET not in log and GEMINI_SECRET not in log  # ...never a secret
