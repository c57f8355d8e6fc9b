"""Every API through the official SDKs, with every backend kind behind it.

The `openai` SDK (chat completions, completions, embeddings, Responses —
streamed and not) and the `anthropic` SDK (messages.create, messages.stream,
count_tokens, tools) call one proxy; behind it are simulated OpenAI, Azure
OpenAI, Anthropic and Gemini providers, each requiring its own credential.
A client changes only its base URL.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import aiohttp
import anthropic
import openai
import pytest

from megarouter.admin_client import admin_channel
from megarouter.v1 import admin_pb2
from tests.conftest import API_KEY, System, start_controlplane
from tests.harness import start_service

SECRETS = {"TEST_AZURE_KEY": "azure-sdk-secret-1", "TEST_ANTHROPIC_KEY": "sk-ant-sdk-secret-2",
           "TEST_GEMINI_KEY": "gemini-sdk-secret-3"}
# The model id a client names -> the backend kind serving it.
CHAT_MODELS = {"gpt-sim": "openai", "azure-sim": "azure_openai", "claude-sim": "anthropic", "gemini-sim": "gemini"}
EMBEDDING_MODELS = ("openai-embed", "azure-embed", "gemini-embed")
# ... and the OpenAI endpoint that serves /v1/responses natively (provider option responses_api: native).
RESPONSES_MODELS = (*CHAT_MODELS, "gpt-responses-sim")
WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


def manifest(ports: list[int]) -> str:
    openai_port, azure_port, anthropic_port, gemini_port = ports
    caps = "{tools: true, vision: true, json_mode: true, streaming: true}"
    return f"""
providers:
  - {{name: oai, kind: openai, base_url: 'http://127.0.0.1:{openai_port}/v1'}}
  - {{name: oai-native, kind: openai, base_url: 'http://127.0.0.1:{openai_port}/v1',
     options: {{responses_api: native}}}}
  - {{name: az, kind: azure_openai, base_url: 'http://127.0.0.1:{azure_port}', credential: {{env: TEST_AZURE_KEY}},
     options: {{api_version: '2024-10-21'}}}}
  - {{name: anth, kind: anthropic, base_url: 'http://127.0.0.1:{anthropic_port}/v1',
     credential: {{env: TEST_ANTHROPIC_KEY}}}}
  - {{name: gem, kind: gemini, base_url: 'http://127.0.0.1:{gemini_port}/v1beta', credential: {{env: TEST_GEMINI_KEY}}}}
---
models:
  - {{name: gpt-sim, context_window: 128000, capabilities: {caps}}}
  - {{name: gpt-responses-sim, context_window: 128000, capabilities: {caps}}}
  - {{name: gpt-instruct-sim, context_window: 4096, capabilities: {{completions: true, streaming: true}}}}
  - {{name: azure-sim, context_window: 128000, capabilities: {caps}}}
  - {{name: claude-sim, context_window: 200000, capabilities: {caps}}}
  - {{name: gemini-sim, context_window: 1000000, capabilities: {caps}}}
  - {{name: openai-embed, context_window: 8192, capabilities: {{embeddings: true}}}}
  - {{name: azure-embed, context_window: 8192, capabilities: {{embeddings: true}}}}
  - {{name: gemini-embed, context_window: 2048, capabilities: {{embeddings: true}}}}
---
endpoints:
  - {{name: gpt-oai, model: gpt-sim, provider: oai, upstream_model: gpt-4o-mini}}
  - {{name: gpt-native, model: gpt-responses-sim, provider: oai-native, upstream_model: gpt-4o-mini}}
  - {{name: instruct-oai, model: gpt-instruct-sim, provider: oai, upstream_model: gpt-3.5-turbo-instruct}}
  - {{name: gpt-az, model: azure-sim, provider: az, upstream_model: gpt4o-prod}}
  - {{name: claude-anth, model: claude-sim, provider: anth, upstream_model: claude-sonnet-4-5}}
  - {{name: gemini-gem, model: gemini-sim, provider: gem, upstream_model: gemini-2.5-flash}}
  - {{name: embed-oai, model: openai-embed, provider: oai, upstream_model: text-embedding-3-small}}
  - {{name: embed-az, model: azure-embed, provider: az, upstream_model: ada-prod}}
  - {{name: embed-gem, model: gemini-embed, provider: gem, upstream_model: text-embedding-004}}
---
routes:
  - {{name: auto, tiers: [{{models: [claude-sim]}}, {{models: [gpt-sim]}}]}}
  - {{name: gpt-first, tiers: [{{models: [gpt-sim]}}, {{models: [claude-sim]}}]}}
"""


@pytest.fixture(scope="module")
async def gateway(tmp_path_factory) -> AsyncIterator[System]:
    tmp = tmp_path_factory.mktemp("sdk-apis")
    logs = tmp / "logs"
    sims = [
        await start_service("sim-openai", ["sim", "--port", "0", "--wire", "openai", "--models",
                                           "gpt-4o-mini,gpt-3.5-turbo-instruct,text-embedding-3-small"], logs),
        await start_service("sim-azure", ["sim", "--port", "0", "--wire", "azure", "--models", "gpt4o-prod,ada-prod",
                                          "--api-key", SECRETS["TEST_AZURE_KEY"]], logs),
        await start_service("sim-anthropic", ["sim", "--port", "0", "--wire", "anthropic", "--models",
                                              "claude-sonnet-4-5", "--api-key", SECRETS["TEST_ANTHROPIC_KEY"]], logs),
        await start_service("sim-gemini", ["sim", "--port", "0", "--wire", "gemini", "--models",
                                           "gemini-2.5-flash,text-embedding-004",
                                           "--api-key", SECRETS["TEST_GEMINI_KEY"]], logs),
    ]
    system = System(tmp=tmp, controlplane=await start_controlplane(tmp), sims=sims)
    try:
        system.channel = admin_channel(system.admin_address)
        await system.apply(manifest([sim.port for sim in sims]))
        created = await system.admin.CreateApiKey(admin_pb2.CreateApiKeyRequest(name="t", secret=API_KEY))
        await system.start_proxy(env=SECRETS)
        await system.wait_proxy_version(created.revision)
        yield system
    finally:
        await system.close()


@pytest.fixture
async def oai(gateway: System) -> AsyncIterator[openai.AsyncOpenAI]:
    client = openai.AsyncOpenAI(base_url=gateway.base_url(), api_key=API_KEY, max_retries=0)
    yield client
    await client.close()


@pytest.fixture
async def claude(gateway: System) -> AsyncIterator[anthropic.AsyncAnthropic]:
    # The Anthropic SDK's base URL has no /v1: it appends /v1/messages itself.
    client = anthropic.AsyncAnthropic(base_url=gateway.base_url().removesuffix("/v1"), api_key=API_KEY,
                                      max_retries=0)
    yield client
    await client.close()


# ------------------------------------------------------------------ the OpenAI SDK


@pytest.mark.parametrize("model", CHAT_MODELS)
async def test_openai_chat_completions_json_and_stream(oai: openai.AsyncOpenAI, model: str) -> None:
    messages = [{"role": "user", "content": "Say hello"}]
    whole = await oai.chat.completions.create(model=model, messages=messages, max_tokens=30)
    assert whole.choices[0].message.content and whole.choices[0].finish_reason == "stop"
    stream = await oai.chat.completions.create(model=model, messages=messages, max_tokens=30, stream=True,
                                               stream_options={"include_usage": True})
    text, usage = "", None
    async for chunk in stream:
        text += "".join(choice.delta.content or "" for choice in chunk.choices)
        usage = chunk.usage or usage
    assert text == whole.choices[0].message.content
    assert usage is not None and usage.completion_tokens == whole.usage.completion_tokens


@pytest.mark.parametrize("model", [*CHAT_MODELS, "gpt-instruct-sim"])
async def test_openai_completions_json_and_stream(oai: openai.AsyncOpenAI, model: str) -> None:
    whole = await oai.completions.create(model=model, prompt="Once upon a time", max_tokens=12)
    assert whole.object == "text_completion" and whole.choices[0].text
    assert whole.usage.prompt_tokens > 0 and whole.usage.completion_tokens > 0
    stream = await oai.completions.create(model=model, prompt="Once upon a time", max_tokens=12, stream=True)
    text = "".join([chunk.choices[0].text async for chunk in stream if chunk.choices])
    assert text == whole.choices[0].text


@pytest.mark.parametrize("model", EMBEDDING_MODELS)
async def test_openai_embeddings(oai: openai.AsyncOpenAI, model: str) -> None:
    answer = await oai.embeddings.create(model=model, input=["first text", "second text"])
    assert [item.index for item in answer.data] == [0, 1]
    assert len(answer.data[0].embedding) > 1 and answer.data[0].embedding != answer.data[1].embedding


@pytest.mark.parametrize("model", RESPONSES_MODELS)
async def test_openai_responses_json_and_stream(oai: openai.AsyncOpenAI, model: str) -> None:
    raw = await oai.responses.with_raw_response.create(model=model, instructions="Be brief.", input="Say hello",
                                                       max_output_tokens=30)
    response = raw.parse()
    assert raw.headers["x-megarouter-model"] == model
    assert response.status == "completed" and response.output_text
    assert response.store is False   # zero data retention
    assert response.usage.input_tokens > 0 and response.usage.output_tokens > 0
    events = []
    async with oai.responses.stream(model=model, instructions="Be brief.", input="Say hello",
                                    max_output_tokens=30) as stream:
        async for event in stream:
            events.append(event.type)
        final = await stream.get_final_response()
    assert events[0] == "response.created" and events[-1] == "response.completed"
    assert "response.output_text.delta" in events
    assert final.output_text == response.output_text


@pytest.mark.parametrize("model", RESPONSES_MODELS)
async def test_openai_responses_function_calling_round_trip(oai: openai.AsyncOpenAI, model: str) -> None:
    tools = [{"type": "function", "name": "get_weather", "description": "Weather in a city", "parameters": WEATHER}]
    first = await oai.responses.create(model=model, input="Weather in Paris?", tools=tools)
    calls = [item for item in first.output if item.type == "function_call"]
    assert calls and calls[0].name == "get_weather"
    assert "city" in json.loads(calls[0].arguments)
    second = await oai.responses.create(model=model, tools=tools, input=[
        {"role": "user", "content": "Weather in Paris?"},
        {"type": "function_call", "call_id": calls[0].call_id, "name": "get_weather", "arguments": calls[0].arguments},
        {"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny, 21 C"},
    ])
    assert second.output_text


async def test_responses_pass_through_to_a_native_endpoint_without_storing(gateway: System,
                                                                         oai: openai.AsyncOpenAI) -> None:
    """An OpenAI provider with `responses_api: native` gets /v1/responses as sent — with `store`
    forced off, so the provider keeps nothing either — and answers what translation would."""
    before = await gateway.sim_stats(0)
    native = await oai.responses.create(model="gpt-responses-sim", instructions="Be brief.", input="Say hello",
                                        store=True)
    translated = await oai.responses.create(model="gpt-sim", instructions="Be brief.", input="Say hello")
    assert native.output_text == translated.output_text and native.store is False
    async with oai.responses.stream(model="gpt-responses-sim", input="Say hello") as stream:
        async for _ in stream:
            pass
        streamed = await stream.get_final_response()
    assert streamed.status == "completed" and streamed.usage.output_tokens > 0
    after = await gateway.sim_stats(0)
    assert after.get("responses_requests", 0) - before.get("responses_requests", 0) == 2
    assert after.get("responses_stored", 0) == before.get("responses_stored", 0)


async def test_responses_that_need_a_stored_response_are_refused(oai: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        await oai.responses.create(model="gpt-sim", input="and then?", previous_response_id="resp_123")
    assert refused.value.body["param"] == "previous_response_id"
    assert "retain" in refused.value.message
    with pytest.raises(openai.NotFoundError):
        await oai.responses.retrieve("resp_123")


# ------------------------------------------------------------------ the Anthropic SDK


@pytest.mark.parametrize("model", CHAT_MODELS)
async def test_anthropic_messages_create_and_stream(claude: anthropic.AsyncAnthropic, model: str) -> None:
    message = await claude.messages.create(model=model, max_tokens=30, system="Be brief.",
                                           messages=[{"role": "user", "content": "Say hello"}])
    assert message.type == "message" and message.role == "assistant"
    assert message.content[0].type == "text" and message.content[0].text
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    async with claude.messages.stream(model=model, max_tokens=30, system="Be brief.",
                                      messages=[{"role": "user", "content": "Say hello"}]) as stream:
        text = "".join([piece async for piece in stream.text_stream])
        final = await stream.get_final_message()
    assert text == message.content[0].text
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == message.usage.output_tokens


@pytest.mark.parametrize("model", CHAT_MODELS)
async def test_anthropic_tool_use_round_trip(claude: anthropic.AsyncAnthropic, model: str) -> None:
    tools = [{"name": "get_weather", "description": "Weather in a city", "input_schema": WEATHER}]
    ask = {"role": "user", "content": "Weather in Paris?"}
    first = await claude.messages.create(model=model, max_tokens=100, tools=tools, messages=[ask])
    assert first.stop_reason == "tool_use"
    use = next(block for block in first.content if block.type == "tool_use")
    assert use.name == "get_weather" and isinstance(use.input, dict) and "city" in use.input
    async with claude.messages.stream(model=model, max_tokens=100, tools=tools, messages=[ask]) as stream:
        streamed = await stream.get_final_message()
    assert [b.type for b in streamed.content if b.type == "tool_use"] == ["tool_use"]
    second = await claude.messages.create(model=model, max_tokens=100, tools=tools, messages=[
        ask, {"role": "assistant", "content": [block.model_dump(exclude_none=True) for block in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny, 21 C"}]},
    ])
    assert second.stop_reason == "end_turn" and second.content[0].text


@pytest.mark.parametrize("model", CHAT_MODELS)
async def test_anthropic_count_tokens(claude: anthropic.AsyncAnthropic, model: str) -> None:
    raw = await claude.messages.with_raw_response.count_tokens(
        model=model, system="Be brief.", messages=[{"role": "user", "content": "Say hello to everyone here"}])
    counted = await raw.parse()
    assert counted.input_tokens > 0
    # Anthropic counts exactly; the other providers have no counting API, so the gateway estimates.
    assert raw.headers["x-megarouter-count"] == ("exact" if CHAT_MODELS[model] == "anthropic" else "estimated")


async def test_anthropic_sdk_authenticates_with_a_bearer_token_too(gateway: System) -> None:
    """Claude Code with ANTHROPIC_AUTH_TOKEN sends `Authorization: Bearer`, not `x-api-key`."""
    client = anthropic.AsyncAnthropic(base_url=gateway.base_url().removesuffix("/v1"), auth_token=API_KEY,
                                      max_retries=0)
    try:
        message = await client.messages.create(model="auto", max_tokens=20,
                                               messages=[{"role": "user", "content": "Hi"}])
        assert message.content[0].text
    finally:
        await client.close()


async def test_anthropic_errors_are_anthropic_shaped(gateway: System, claude: anthropic.AsyncAnthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as bad:
        await claude.messages.create(model="claude-sim", max_tokens=20, extra_body={"temperature": 5},
                                     messages=[{"role": "user", "content": "Hi"}])
    assert bad.value.body["type"] == "error"
    assert bad.value.body["error"]["type"] == "invalid_request_error"
    assert "temperature" in bad.value.body["error"]["message"]
    with pytest.raises(anthropic.NotFoundError):
        await claude.messages.create(model="no-such-model", max_tokens=20, messages=[{"role": "user", "content": "x"}])
    wrong = anthropic.AsyncAnthropic(base_url=gateway.base_url().removesuffix("/v1"), api_key="sk-wrong",
                                     max_retries=0)
    try:
        with pytest.raises(anthropic.AuthenticationError) as denied:
            await wrong.messages.create(model="auto", max_tokens=20, messages=[{"role": "user", "content": "x"}])
        assert denied.value.body["error"]["type"] == "authentication_error"
    finally:
        await wrong.close()


async def test_messages_with_betas_pass_through_to_an_anthropic_endpoint(
        gateway: System, claude: anthropic.AsyncAnthropic) -> None:
    """(That the beta header is forwarded is checked on the translator, in test_contract.)"""
    raw = await claude.messages.with_raw_response.create(
        model="claude-sim", max_tokens=20, messages=[{"role": "user", "content": "Hi"}],
        extra_headers={"anthropic-beta": "prompt-caching-2024-07-31"})
    assert raw.headers["x-megarouter-endpoint"] == "claude-anth"
    assert (await raw.parse()).content[0].text


async def test_what_only_anthropic_can_do_goes_only_to_anthropic(gateway: System,
                                                                 claude: anthropic.AsyncAnthropic) -> None:
    """A server tool cannot be expressed through chat: on a route, the Anthropic endpoints serve
    it; on a model with no Anthropic endpoint it is a 400 naming the tool."""
    tools = [{"type": "web_search_20250305", "name": "web_search", "max_uses": 1}]
    ask = [{"role": "user", "content": "Weather in Paris?"}]
    with pytest.raises(anthropic.BadRequestError) as refused:
        await claude.messages.create(model="gpt-sim", max_tokens=50, tools=tools, messages=ask)
    assert refused.value.body["error"]["param"] == "tools[0].type"
    raw = await claude.messages.with_raw_response.create(model="gpt-first", max_tokens=50, tools=tools,
                                                         messages=ask, extra_headers={"x-megarouter-explain": "1"})
    assert raw.headers["x-megarouter-endpoint"] == "claude-anth"
    explained = json.loads(raw.headers["x-megarouter-explain"])
    assert any("only through chat" in c.get("excluded", "") for c in explained["candidates"]), explained


async def test_legacy_echo_goes_only_to_a_native_completions_model(oai: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        await oai.completions.create(model="gpt-sim", prompt="x", echo=True, max_tokens=5)
    assert refused.value.body["param"] == "echo"
    answer = await oai.completions.with_raw_response.create(model="gpt-instruct-sim", prompt="x", echo=True,
                                                            max_tokens=5)
    assert answer.headers["x-megarouter-endpoint"] == "instruct-oai"


async def test_claude_code_with_both_key_headers(gateway: System) -> None:
    """Claude Code sends x-api-key and Authorization when both of its variables are set, one
    often a placeholder: the one valid key is used; two different valid keys are a 400."""
    url = gateway.base_url() + "/messages"
    body = {"model": "claude-sim", "max_tokens": 10, "messages": [{"role": "user", "content": "Hi"}]}
    second = "sk-mr-second-key-for-both-headers-0001"
    created = await gateway.admin.CreateApiKey(admin_pb2.CreateApiKeyRequest(name="t2", secret=second))
    await gateway.wait_proxy_version(created.revision)
    async with aiohttp.ClientSession() as session:
        for headers, status in (({"x-api-key": "placeholder", "Authorization": f"Bearer {API_KEY}"}, 200),
                                ({"x-api-key": API_KEY, "Authorization": "Bearer placeholder"}, 200),
                                ({"x-api-key": API_KEY, "Authorization": f"Bearer {API_KEY}"}, 200),
                                ({"x-api-key": API_KEY, "Authorization": f"Bearer {second}"}, 400),
                                ({"x-api-key": "nope-1", "Authorization": "Bearer nope-2"}, 401)):
            async with session.post(url, json=body, headers=headers) as answer:
                assert answer.status == status, (headers, await answer.text())
                if status != 200:
                    assert (await answer.json())["type"] == "error"
