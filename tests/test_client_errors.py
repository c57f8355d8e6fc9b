"""The caller's mistakes are 400s naming the field — never a 500, never a 503 the SDKs
would retry, never an upstream call that could count against a provider's health."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import aiohttp
import openai
import pytest

from tests.conftest import API_KEY, System, build_system

IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
MIXED_MODELS = """
---
models:
  - {name: tiny-window, input_price_per_mtok: 0.1, output_price_per_mtok: 0.1, context_window: 64,
     quality_tier: 2, capabilities: {vision: true, streaming: true}}
  - {name: text-only, input_price_per_mtok: 0.1, output_price_per_mtok: 0.1, context_window: 128000,
     quality_tier: 2, capabilities: {streaming: true}}
---
endpoints:
  - {name: tiny-window-sim, model: tiny-window, provider: sim}
  - {name: text-only-sim, model: text-only, provider: sim}
---
route: {name: mixed, tiers: [{models: [tiny-window, text-only]}]}
"""


@pytest.fixture(scope="module")
async def system(tmp_path_factory) -> AsyncIterator[System]:
    built = await build_system(tmp_path_factory.mktemp("client-errors"), manifest_extra=MIXED_MODELS)
    try:
        yield built
    finally:
        await built.close()


def _nested(depth: int) -> str:
    """`depth` levels of objects, as JSON text (the stdlib's encoder cannot write 1,000)."""
    return '{"a":' * depth + "{}" + "}" * depth


def _chat(**fields) -> dict:
    return {"model": "chat", "messages": [{"role": "user", "content": "hi"}], **fields}


CHAT_CASES = {
    "tool_calls that is not an array, beside an image": (
        {"model": "auto", "messages": [{"role": "user", "content": [IMAGE], "tool_calls": 5}]},
        "messages[0].tool_calls"),
    "a temperature that is not a number": (_chat(temperature="hot"), "temperature"),
    "a temperature out of range": (_chat(temperature=7), "temperature"),
    "a message without content": ({"model": "chat", "messages": [{"role": "user"}]}, "messages[0].content"),
    "content that is a number": ({"model": "chat", "messages": [{"role": "user", "content": 5}]},
                                 "messages[0].content"),
    "a text part whose text is a number": (
        {"model": "chat", "messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]},
        "messages[0].content[0].text"),
    "an unknown role": ({"model": "chat", "messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role"),
    "a tool message without its call id": (
        {"model": "chat", "messages": [{"role": "tool", "content": "42"}]}, "messages[0].tool_call_id"),
    "stream_options that is not an object": (_chat(stream=True, stream_options=5), "stream_options"),
    "tools that are not objects": (_chat(tools=[5]), "tools[0]"),
    "a tool_choice that is neither a mode nor a function": (_chat(tool_choice="sometimes"), "tool_choice"),
    "a response_format without a type": (_chat(response_format={}), "response_format.type"),
    "a stop list of numbers": (_chat(stop=[1, 2]), "stop"),
    "max_tokens as a string": (_chat(max_tokens="10"), "max_tokens"),
}


@pytest.mark.parametrize("case", list(CHAT_CASES))
async def test_malformed_chat_requests_are_400s_naming_the_field_and_never_go_upstream(system: System, case) -> None:
    payload, param = CHAT_CASES[case]
    before = (await system.sim_stats())["requests"]
    client = openai.AsyncOpenAI(base_url=system.base_url(), api_key=API_KEY, max_retries=0)
    with pytest.raises(openai.BadRequestError) as refused:
        await client.chat.completions.create(**payload)
    assert refused.value.status_code == 400
    assert refused.value.body["param"] == param, refused.value.body
    assert (await system.sim_stats())["requests"] == before  # nothing reached a provider


async def test_stream_options_that_is_not_an_object_on_completions(system: System) -> None:
    client = openai.AsyncOpenAI(base_url=system.base_url(), api_key=API_KEY, max_retries=0)
    with pytest.raises(openai.BadRequestError) as refused:
        await client.completions.create(model="chat", prompt="hi", stream=True, stream_options=5)
    assert refused.value.body["param"] == "stream_options"


@pytest.mark.parametrize("depth", [200, 254, 300, 1000, 1100])
async def test_deeply_nested_json_is_a_400_at_every_depth(system: System, depth: int) -> None:
    """orjson reads up to 1024 levels but writes at most 254; between the two was a 500."""
    marker = '"PARAMETERS"'
    payload = json.dumps(_chat(tools=[{"type": "function", "function": {"name": "f", "parameters": "PARAMETERS"}}]))
    payload = payload.replace(marker, _nested(depth))
    async with aiohttp.ClientSession() as session:
        async with session.post(system.base_url() + "/chat/completions", data=payload,
                                headers={"Authorization": f"Bearer {API_KEY}",
                                         "Content-Type": "application/json"}) as response:
            body = await response.json()
    if depth <= 250:
        assert response.status == 200
    else:
        assert response.status == 400, body
        assert body["error"]["type"] == "invalid_request_error"
        if depth <= 1000:  # (beyond orjson's read limit the body is not JSON at all: no field to name)
            assert body["error"]["param"] == "tools", body


async def test_candidates_excluded_for_mixed_reasons_are_a_400_not_a_503(system: System) -> None:
    """One model lacks vision, the other's window is too small: retrying cannot help."""
    client = openai.AsyncOpenAI(base_url=system.base_url(), api_key=API_KEY, max_retries=2)
    with pytest.raises(openai.BadRequestError) as refused:
        await client.chat.completions.create(model="mixed", messages=[
            {"role": "user", "content": [{"type": "text", "text": "describe this " * 100}, IMAGE]}])
    error = refused.value.body
    assert error["code"] == "model_not_capable" and error["param"] == "model"
    assert "tiny-window-sim" in error["message"] and "text-only-sim" in error["message"]


CHAT_CASES_MORE = {
    "n below 1": (_chat(n=0), "n"),
    "five stop sequences": (_chat(stop=["a", "b", "c", "d", "e"]), "stop"),
    "a tool_choice naming an undeclared tool": (
        _chat(tools=[{"type": "function", "function": {"name": "lookup"}}],
              tool_choice={"type": "function", "function": {"name": "delete_everything"}}),
        "tool_choice.function.name"),
    "a logit_bias out of range": (_chat(logit_bias={"50256": 101}), "logit_bias.50256"),
    "a logit_bias keyed by a word": (_chat(logit_bias={"hello": 1}), "logit_bias"),
}

# Each API's malformed requests: (SDK call, the param the 400 must name).
COMPLETIONS_CASES = {
    "a temperature that is not a number": ({"prompt": "x", "temperature": "hot"}, "temperature"),
    "max_tokens below 1": ({"prompt": "x", "max_tokens": 0}, "max_tokens"),
    "a prompt that is a number": ({"prompt": 5}, "prompt"),
    "top_p above 1": ({"prompt": "x", "top_p": 1.5}, "top_p"),
}
EMBEDDINGS_CASES = {
    "an empty input": ({"input": ""}, "input"),
    "an input of mixed types": ({"input": ["a", 1]}, "input"),
    "an unknown encoding": ({"input": "a", "encoding_format": "hex"}, "encoding_format"),
    "zero dimensions": ({"input": "a", "dimensions": 0}, "dimensions"),
}
RESPONSES_CASES = {
    "a temperature that is not a number": ({"input": "x", "temperature": "hot"}, "temperature"),
    "max_output_tokens of zero": ({"input": "x", "max_output_tokens": 0}, "max_output_tokens"),
    "an input that is a number": ({"input": 5}, "input"),
    "a web search tool": ({"input": "x", "tools": [{"type": "web_search"}]}, "tools[0].type"),
    "a tool_choice naming an undeclared tool": (
        {"input": "x", "tools": [{"type": "function", "name": "lookup", "parameters": {"type": "object"}}],
         "tool_choice": {"type": "function", "name": "other"}}, "tool_choice.name"),
    "an output for a call never made": (
        {"input": [{"type": "function_call_output", "call_id": "call_9", "output": "42"}]}, "input[0].call_id"),
}


@pytest.mark.parametrize("case", list(CHAT_CASES_MORE))
async def test_more_malformed_chat_requests(system: System, case) -> None:
    payload, param = CHAT_CASES_MORE[case]
    await _refused(system, lambda client: client.chat.completions.create(**payload), param)


@pytest.mark.parametrize(("api", "case"), [("completions", c) for c in COMPLETIONS_CASES]
                         + [("embeddings", c) for c in EMBEDDINGS_CASES] + [("responses", c) for c in RESPONSES_CASES])
async def test_malformed_requests_to_every_openai_api_are_400s_naming_the_field(system: System, api, case) -> None:
    cases = {"completions": COMPLETIONS_CASES, "embeddings": EMBEDDINGS_CASES, "responses": RESPONSES_CASES}[api]
    fields, param = cases[case]
    model = "chat"  # validation comes before resolution: the model's kind does not matter here
    # The SDK's required arguments get placeholders; extra_body (merged last) sends the real,
    # malformed values, which the SDK's own type checks would otherwise keep from the gateway.
    required = {"completions": {"prompt": "x"}, "embeddings": {"input": "x"}, "responses": {}}[api]
    await _refused(system, lambda client: getattr(client, api).create(model=model, **required, extra_body=fields),
                   param)


async def _refused(system: System, call, param: str) -> None:
    before = (await system.sim_stats())["requests"]
    client = openai.AsyncOpenAI(base_url=system.base_url(), api_key=API_KEY, max_retries=0)
    with pytest.raises(openai.BadRequestError) as refused:
        await call(client)
    assert refused.value.status_code == 400
    assert refused.value.body["param"] == param, refused.value.body
    assert (await system.sim_stats())["requests"] == before  # nothing reached a provider


MESSAGES_CASES = {
    "no max_tokens": ({"messages": [{"role": "user", "content": "hi"}]}, "max_tokens"),
    "a temperature that is not a number": ({"max_tokens": 5, "temperature": "hot",
                                            "messages": [{"role": "user", "content": "hi"}]}, "temperature"),
    "a system role in messages": ({"max_tokens": 5, "messages": [{"role": "system", "content": "hi"}]},
                                  "messages[0].role"),
    "an unknown block type": ({"max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "video"}]}]},
                              "messages[0].content[0].type"),
    "a tool_choice naming an undeclared tool": (
        {"max_tokens": 5, "messages": [{"role": "user", "content": "hi"}],
         "tools": [{"name": "lookup", "input_schema": {"type": "object"}}],
         "tool_choice": {"type": "tool", "name": "other"}}, "tool_choice.name"),
}


@pytest.mark.parametrize("case", list(MESSAGES_CASES))
async def test_malformed_messages_requests_are_anthropic_400s_naming_the_field(system: System, case) -> None:
    fields, param = MESSAGES_CASES[case]
    before = (await system.sim_stats())["requests"]
    async with aiohttp.ClientSession() as session:
        async with session.post(system.base_url() + "/messages", json={"model": "chat", **fields},
                                headers={"x-api-key": API_KEY, "anthropic-version": "2023-06-01"}) as answer:
            body = await answer.json()
    assert answer.status == 400
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert body["error"]["param"] == param and param in body["error"]["message"]
    assert (await system.sim_stats())["requests"] == before
