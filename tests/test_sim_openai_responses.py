"""Simulator, OpenAI wire: the Responses API (``POST /v1/responses``), against a real sim process.

The official SDK talks straight to the sim; every JSON answer is checked with
``Response.model_validate`` and every stream event with the SDK's
``ResponseStreamEvent`` union, and answers are compared with what the same
process says through chat completions for the same question.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from tests.harness import Service, start_service

KEY = "sk-sim-responses-0123456789"
MODEL = "sim-small"
EVENTS = TypeAdapter(ResponseStreamEvent)

WEATHER = {
    "type": "function", "name": "get_weather", "description": "Weather for a place",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                       "days": {"type": "integer", "minimum": 1, "maximum": 14}},
        "required": ["city", "unit"],
    },
}
SEARCH = {"type": "function", "name": "search",
          "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}}


def chat_tool(tool: dict) -> dict:
    """The chat form of a Responses function tool, as a translating gateway sends it."""
    return {"type": "function", "function": {k: tool[k] for k in ("name", "description", "parameters")
                                             if k in tool}}


@pytest.fixture(scope="module")
async def sim(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Service]:
    service = await start_service("sim", [
        "sim", "--port", "0", "--name", "responses-sim", "--models", "sim-small,sim-medium",
        "--api-key", KEY,
    ], tmp_path_factory.mktemp("sim-responses") / "logs")
    try:
        yield service
    finally:
        assert await service.stop() == 0


def url(sim: Service, path: str) -> str:
    return f"http://127.0.0.1:{sim.port}{path}"


@pytest.fixture
async def http(sim: Service) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {KEY}"}) as session:
        # Each test starts from zeroed counters and the default settings.
        await session.post(url(sim, "/_sim/reset"))
        yield session
        async with session.put(url(sim, "/_sim/config"), json={
                "error_rate": 0, "error_status": 500, "rate_limit_rate": 0, "outage": "none",
                "latency_ms": 0, "ttft_ms": 0, "stall_after_chunks": -1, "reply_tokens": 16}) as resp:
            assert resp.status == 200


@pytest.fixture
async def client(sim: Service) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=url(sim, "/v1"), api_key=KEY, max_retries=0) as sdk:
        yield sdk


async def post(http: aiohttp.ClientSession, sim: Service, body: dict) -> tuple[int, dict]:
    async with http.post(url(sim, "/v1/responses"), json={"model": MODEL, **body}) as resp:
        return resp.status, await resp.json()


async def stats(http: aiohttp.ClientSession, sim: Service) -> dict:
    async with http.get(url(sim, "/_sim/stats")) as resp:
        return await resp.json()


async def configure(http: aiohttp.ClientSession, sim: Service, **changes: Any) -> None:
    async with http.put(url(sim, "/_sim/config"), json=changes) as resp:
        assert resp.status == 200, await resp.text()


async def raw_stream(http: aiohttp.ClientSession, sim: Service, body: dict) -> list[dict]:
    """A stream's events, each checked against its `event:` line and the SDK's event union."""
    async with http.post(url(sim, "/v1/responses"), json={"model": MODEL, "stream": True, **body}) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        raw = (await resp.read()).decode()
    assert raw.endswith("\n\n")
    events = []
    for block in raw.split("\n\n")[:-1]:
        name, data = block.split("\n")
        assert name.startswith("event: ") and data.startswith("data: ")
        event = json.loads(data[len("data: "):])
        assert event["type"] == name[len("event: "):]
        EVENTS.validate_python(event)
        events.append(event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    return events


# ------------------------------------------------------------ text answers

async def test_create_matches_chat_and_validates(sim, http, client):
    question = {"instructions": "Answer briefly.", "input": "How does a hash map handle collisions?"}
    status, body = await post(http, sim, question)
    assert status == 200
    response = Response.model_validate(body)
    assert response.object == "response" and response.status == "completed"
    assert response.id.startswith("resp_") and response.model == MODEL
    assert response.incomplete_details is None and response.error is None
    assert response.instructions == "Answer briefly." and response.tool_choice == "auto"
    assert body["store"] is True  # the API's default, echoed
    (item,) = response.output
    assert item.type == "message" and item.role == "assistant" and item.status == "completed"
    assert item.id.startswith("msg_") and [p.type for p in item.content] == ["output_text"]

    sdk = await client.responses.create(model=MODEL, **question)
    chat = await client.chat.completions.create(model=MODEL, messages=[
        {"role": "system", "content": question["instructions"]},
        {"role": "user", "content": question["input"]}])
    answer = chat.choices[0].message.content
    assert sdk.output_text == response.output_text == answer and len(answer.split()) == 16
    usage = sdk.usage
    assert usage.input_tokens == chat.usage.prompt_tokens > 0
    assert usage.output_tokens == chat.usage.completion_tokens == 16
    assert usage.total_tokens == chat.usage.total_tokens
    assert usage.input_tokens_details.cached_tokens == 0
    assert usage.output_tokens_details.reasoning_tokens == 0

    counted = await stats(http, sim)
    assert counted["responses_requests"] == 2 and counted["responses_stored"] == 2
    assert counted["chat_requests"] == 1 and counted["by_status"] == {"200": 3}


async def test_message_items_and_images_count_like_chat(sim, http, client):
    image = "data:image/png;base64,iVBORw0KGgo="
    items = [
        {"role": "developer", "content": "Be terse."},
        {"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "What is in this picture?"},
            {"type": "input_image", "image_url": image, "detail": "low"}]},
        {"role": "assistant", "content": [{"type": "output_text", "text": "A cat."}]},
        {"role": "user", "content": "And its colour?"},
    ]
    sdk = await client.responses.create(model=MODEL, input=items)
    chat = await client.chat.completions.create(model=MODEL, messages=[
        {"role": "developer", "content": "Be terse."},
        {"role": "user", "content": [{"type": "text", "text": "What is in this picture?"},
                                     {"type": "image_url", "image_url": {"url": image, "detail": "low"}}]},
        {"role": "assistant", "content": "A cat."},
        {"role": "user", "content": "And its colour?"}])
    assert sdk.output_text == chat.choices[0].message.content
    assert sdk.usage.input_tokens == chat.usage.prompt_tokens


async def test_store_false_is_echoed_and_not_counted(sim, http):
    fresh = await stats(http, sim)
    assert "responses_requests" not in fresh and "responses_stored" not in fresh
    status, body = await post(http, sim, {"input": "hi", "store": False})
    assert status == 200 and body["store"] is False
    Response.model_validate(body)
    counted = await stats(http, sim)
    assert counted["responses_requests"] == 1 and "responses_stored" not in counted
    status, body = await post(http, sim, {"input": "hi", "store": True})
    assert status == 200 and body["store"] is True
    assert (await stats(http, sim))["responses_stored"] == 1
    # Nothing is kept, stored or not: it cannot be fetched or continued from.
    async with http.get(url(sim, f"/v1/responses/{body['id']}")) as resp:
        assert resp.status == 404
    status, err = await post(http, sim, {"input": "more", "previous_response_id": body["id"]})
    assert status == 400 and err["error"]["param"] == "previous_response_id"


async def test_max_output_tokens_makes_it_incomplete(sim, http, client):
    sdk = await client.responses.create(model=MODEL, input="hi", max_output_tokens=4)
    chat = await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}],
                                                max_tokens=4)
    assert sdk.status == "incomplete" and sdk.incomplete_details.reason == "max_output_tokens"
    assert sdk.max_output_tokens == 4 and sdk.output[0].status == "incomplete"
    assert sdk.output_text == chat.choices[0].message.content and len(sdk.output_text.split()) == 4
    assert sdk.usage.output_tokens == 4

    events = await raw_stream(http, sim, {"input": "hi", "max_output_tokens": 4})
    assert events[-1]["type"] == "response.incomplete"
    final = Response.model_validate(events[-1]["response"])
    assert final.status == "incomplete" and final.output_text == sdk.output_text


async def test_structured_output_matches_chat(sim, client):
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "n": {"type": "integer"}},
              "required": ["name", "n"], "additionalProperties": False}
    sdk = await client.responses.create(model=MODEL, input="give me json", text={
        "format": {"type": "json_schema", "name": "thing", "schema": schema, "strict": True}})
    chat = await client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "give me json"}],
        response_format={"type": "json_schema", "json_schema": {"name": "thing", "schema": schema}})
    assert sdk.output_text == chat.choices[0].message.content
    assert set(json.loads(sdk.output_text)) == {"name", "n"}
    assert sdk.text.format.type == "json_schema"


# ----------------------------------------------------------------- streams

async def test_stream_events_shape_and_text(sim, http, client):
    events = await raw_stream(http, sim, {"input": "Hello there", "instructions": "Be kind."})
    types = [e["type"] for e in events]
    assert types == ["response.created", "response.in_progress", "response.output_item.added",
                     "response.content_part.added", *["response.output_text.delta"] * 16,
                     "response.output_text.done", "response.content_part.done",
                     "response.output_item.done", "response.completed"]
    assert events[0]["response"]["status"] == "in_progress" and events[0]["response"]["output"] == []
    item_id = events[2]["item"]["id"]
    assert {e["item_id"] for e in events[3:-2]} == {item_id} == {events[-2]["item"]["id"]}
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert events[-4]["text"] == text and events[-3]["part"]["text"] == text
    final = Response.model_validate(events[-1]["response"])
    assert final.status == "completed" and final.output_text == text and final.output[0].id == item_id

    plain = await client.responses.create(model=MODEL, input="Hello there", instructions="Be kind.")
    assert text == plain.output_text
    assert final.usage.model_dump() == plain.usage.model_dump()

    async with client.responses.stream(model=MODEL, input="Hello there", instructions="Be kind.") as stream:
        deltas = [e.delta async for e in stream if e.type == "response.output_text.delta"]
        done = await stream.get_final_response()
    assert "".join(deltas) == done.output_text == text and done.usage.output_tokens == 16

    created = await client.responses.create(model=MODEL, input="Hello there", instructions="Be kind.",
                                            stream=True)
    seen = [event.type async for event in created]
    assert seen == types
    counted = await stats(http, sim)
    assert counted["stream_requests"] == 3 and counted["responses_requests"] == 4


async def test_stream_stall_applies(sim, http):
    await configure(http, sim, stall_after_chunks=2)
    async with http.post(url(sim, "/v1/responses"),
                         json={"model": MODEL, "input": "hi", "stream": True}) as resp:
        assert resp.status == 200
        received = b""
        while received.count(b"\n\n") < 6:  # 4 opening events + 2 deltas
            received += await resp.content.readany()
        assert received.count(b"\n\n") == 6 and received.count(b"response.output_text.delta") == 4
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(resp.content.readany(), 0.3)
    assert b"response.completed" not in received


async def test_latency_and_ttft_apply(sim, http):
    await configure(http, sim, latency_ms=200, ttft_ms=200)
    start = time.monotonic()
    status, _ = await post(http, sim, {"input": "hi"})
    assert status == 200 and time.monotonic() - start >= 0.2
    start = time.monotonic()
    await raw_stream(http, sim, {"input": "hi"})
    assert time.monotonic() - start >= 0.2


# ------------------------------------------------------------ function calls

async def test_function_call_round_trip(sim, http, client):
    first = await client.responses.create(model=MODEL, input="Weather in Paris?", tools=[WEATHER, SEARCH])
    (call,) = first.output
    assert call.type == "function_call" and call.name == "get_weather" and call.status == "completed"
    assert call.call_id.startswith("call_") and call.id.startswith("fc_")
    args = json.loads(call.arguments)
    assert set(args) >= {"city", "unit"} and args["unit"] in ("celsius", "fahrenheit")
    assert first.status == "completed" and first.output_text == ""
    assert [t.name for t in first.tools] == ["get_weather", "search"]

    messages: list[dict] = [{"role": "user", "content": "Weather in Paris?"}]
    chat_tools = [chat_tool(WEATHER), chat_tool(SEARCH)]
    chat = await client.chat.completions.create(model=MODEL, messages=messages, tools=chat_tools)
    (chat_call,) = chat.choices[0].message.tool_calls
    assert chat_call.function.name == call.name and chat_call.function.arguments == call.arguments
    assert first.usage.output_tokens == chat.usage.completion_tokens
    assert first.usage.input_tokens == chat.usage.prompt_tokens

    # Send the call back with its result: the model answers in text.
    second = await client.responses.create(model=MODEL, tools=[WEATHER, SEARCH], input=[
        {"role": "user", "content": "Weather in Paris?"},
        {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21C"}])
    assert second.output[0].type == "message" and second.output_text
    chat_second = await client.chat.completions.create(model=MODEL, tools=chat_tools, messages=[
        *messages,
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": call.call_id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}]},
        {"role": "tool", "tool_call_id": call.call_id, "content": "sunny, 21C"}])
    assert second.output_text == chat_second.choices[0].message.content
    assert second.usage.input_tokens == chat_second.usage.prompt_tokens > first.usage.input_tokens


async def test_tool_choice_forced_and_none(sim, http, client):
    forced = await client.responses.create(model=MODEL, input="find it", tools=[WEATHER, SEARCH],
                                           tool_choice={"type": "function", "name": "search"})
    assert forced.output[0].name == "search" and set(json.loads(forced.output[0].arguments)) >= {"query"}
    assert forced.tool_choice.name == "search"
    none = await client.responses.create(model=MODEL, input="find it", tools=[WEATHER], tool_choice="none")
    assert none.output[0].type == "message" and none.output_text
    status, err = await post(http, sim, {"input": "x", "tools": [WEATHER],
                                         "tool_choice": {"type": "function", "name": "nope"}})
    assert status == 400 and err["error"]["param"] == "tool_choice"


async def test_function_call_stream(sim, http):
    events = await raw_stream(http, sim, {"input": "Weather?", "tools": [WEATHER]})
    types = [e["type"] for e in events]
    deltas = types.count("response.function_call_arguments.delta")
    assert deltas > 1
    assert types == ["response.created", "response.in_progress", "response.output_item.added",
                     *["response.function_call_arguments.delta"] * deltas,
                     "response.function_call_arguments.done", "response.output_item.done", "response.completed"]
    added, done = events[2]["item"], events[-2]["item"]
    assert added["type"] == "function_call" and added["arguments"] == "" and added["status"] == "in_progress"
    arguments = "".join(e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta")
    assert events[-3]["arguments"] == done["arguments"] == arguments
    assert done["call_id"] == added["call_id"] and done["id"] == added["id"]
    final = Response.model_validate(events[-1]["response"])
    assert final.output[0].arguments == arguments and final.usage.output_tokens == deltas


# ------------------------------------------------------------------ errors

async def test_unknown_model_is_404(sim, http, client):
    with pytest.raises(openai.NotFoundError) as caught:
        await client.responses.create(model="no-such-model", input="hi")
    assert caught.value.code == "model_not_found"
    status, body = await post(http, sim, {"model": "no-such-model", "input": "hi"})
    assert status == 404 and body["error"]["type"] == "invalid_request_error"
    assert set(body["error"]) == {"message", "type", "param", "code"}


@pytest.mark.parametrize(("body", "param"), [
    ({}, "input"),
    ({"input": 5}, "input"),
    ({"input": ""}, "input"),
    ({"input": []}, "input"),
    ({"input": [{"role": "robot", "content": "hi"}]}, "input[0].role"),
    ({"input": [{"role": "user"}]}, "input[0].content"),
    ({"input": [{"role": "user", "content": [{"type": "output_text", "text": "x"}]}]}, "input[0].content[0].type"),
    ({"input": [{"role": "user", "content": [{"type": "input_text", "text": 3}]}]}, "input[0].content[0].text"),
    ({"input": [{"type": "function_call", "call_id": "c1", "name": "f"}]}, "input[0].arguments"),
    ({"input": [{"type": "function_call_output", "call_id": "c9", "output": "x"}]}, "input[0].call_id"),
    ({"input": [{"type": "web_search_call"}]}, "input[0].type"),
    ({"input": "hi", "tools": [{"type": "web_search"}]}, "tools[0].type"),
    ({"input": "hi", "tools": [{"type": "function"}]}, "tools[0].name"),
    ({"input": "hi", "tool_choice": "required"}, "tool_choice"),
    ({"input": "hi", "max_output_tokens": 0}, "max_output_tokens"),
    ({"input": "hi", "text": {"format": {"type": "yaml"}}}, "text.format.type"),
    ({"input": "hi", "text": {"format": {"type": "json_schema", "name": "x"}}}, "text.format.schema"),
    ({"input": "hi", "text": {"verbosity": "loud"}}, "text.verbosity"),
    ({"input": "hi", "store": "yes"}, "store"),
    ({"input": "hi", "model": 7}, "model"),
])
async def test_malformed_request_is_400_naming_the_param(sim, http, body, param):
    status, err = await post(http, sim, body)
    assert status == 400, err
    assert err["error"]["type"] == "invalid_request_error" and err["error"]["param"] == param
    assert err["error"]["message"]


async def test_malformed_input_through_the_sdk(sim, client):
    with pytest.raises(openai.BadRequestError) as caught:
        await client.responses.create(model=MODEL, input=[{"role": "robot", "content": "hi"}])
    assert caught.value.param == "input[0].role"


async def test_not_json_is_400(sim, http):
    async with http.post(url(sim, "/v1/responses"), data=b"{nope",
                         headers={"Content-Type": "application/json"}) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"]["type"] == "invalid_request_error"


async def test_error_rate_gives_5xx(sim, http, client):
    await configure(http, sim, error_rate=1)
    with pytest.raises(openai.InternalServerError) as caught:
        await client.responses.create(model=MODEL, input="hi")
    assert caught.value.status_code == 500
    async with http.post(url(sim, "/v1/responses"),
                         json={"model": MODEL, "input": "hi", "stream": True}) as resp:
        assert resp.status == 500 and (await resp.json())["error"]["type"] == "server_error"
    await configure(http, sim, error_status=503)
    status, body = await post(http, sim, {"input": "hi"})
    assert status == 503 and body["error"]["type"] == "server_error"
    counted = await stats(http, sim)
    assert counted["responses_requests"] == 3 and counted["by_status"] == {"500": 2, "503": 1}
    assert "responses_stored" not in counted  # nothing was answered, so nothing stored


async def test_rate_limit_and_outage_apply(sim, http):
    await configure(http, sim, rate_limit_rate=1)
    async with http.post(url(sim, "/v1/responses"), json={"model": MODEL, "input": "hi"}) as resp:
        assert resp.status == 429 and resp.headers["Retry-After"] == "1"
        assert (await resp.json())["error"]["code"] == "rate_limit_exceeded"
    await configure(http, sim, rate_limit_rate=0, outage="503")
    status, _ = await post(http, sim, {"input": "hi"})
    assert status == 503
    assert (await stats(http, sim))["responses_requests"] == 2


async def test_api_key_required(sim):
    async with aiohttp.ClientSession() as session:
        async with session.post(url(sim, "/v1/responses"), json={"model": MODEL, "input": "hi"},
                                headers={"Authorization": "Bearer wrong"}) as resp:
            assert resp.status == 401
            assert (await resp.json())["error"]["code"] == "invalid_api_key"


def test_log_has_no_content(sim):
    # Zero retention: the sim writes nothing about requests or replies.
    log = Path(sim.log_path).read_text() if Path(sim.log_path).exists() else ""
    assert "Paris" not in log and "Traceback" not in log
