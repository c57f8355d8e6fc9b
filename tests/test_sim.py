"""Tests for the provider simulator (megarouter.sim)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp.test_utils import TestClient, TestServer

from megarouter.sim import SimSettings, add_arguments, build_app
from megarouter.sim.schema_fake import fake_from_schema
from megarouter.sim.server import settings_from_args

REPO_ROOT = Path(__file__).resolve().parents[1]
CHAT = "/v1/chat/completions"
HELLO = [{"role": "user", "content": "Hello there"}]

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a place",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 14},
                "hourly": {"type": "boolean"},
                "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2},
                "where": {
                    "type": "object",
                    "properties": {
                        "lat": {"type": "number"},
                        "lon": {"type": "number"},
                        "label": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                    },
                    "required": ["lat", "lon"],
                },
                "kind": {"oneOf": [{"type": "integer"}, {"type": "string"}]},
                "note": {"description": "no type given"},
            },
            "required": ["city", "unit", "where", "tags"],
        },
    },
}
SEARCH_TOOL = {
    "type": "function",
    "function": {
        "name": "search",
        "parameters": {
            "type": "object",
            "properties": {"query": {"type": "string"}, "limit": {"type": "integer"}},
            "required": ["query"],
        },
    },
}


def conforms(value: Any, schema: dict) -> bool:
    """A small JSON-schema check covering what the tests' schemas use."""
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return any(conforms(value, option) for option in schema[key])
    if "enum" in schema and value not in schema["enum"]:
        return False
    kind = schema.get("type", "string" if "properties" not in schema else "object")
    if kind == "object":
        props = schema.get("properties", {})
        return (isinstance(value, dict)
                and all(k in value for k in schema.get("required", []))
                and all(conforms(v, props[k]) for k, v in value.items() if k in props))
    if kind == "array":
        return (isinstance(value, list) and len(value) >= schema.get("minItems", 0)
                and all(conforms(v, schema.get("items", {})) for v in value))
    if kind == "integer":
        return (isinstance(value, int) and not isinstance(value, bool)
                and schema.get("minimum", value) <= value <= schema.get("maximum", value))
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "null":
        return value is None
    return isinstance(value, str)


@pytest.fixture
async def make_client():
    clients: list[TestClient] = []

    async def make(settings: SimSettings | None = None, *, models: list[str] | None = None,
                   api_key: str | None = None) -> TestClient:
        app = build_app(settings or SimSettings(), "simtest", models or ["sim-small"], api_key)
        client = TestClient(TestServer(app))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


async def chat(client: TestClient, **body: Any) -> tuple[int, dict]:
    body.setdefault("model", "sim-small")
    body.setdefault("messages", HELLO)
    resp = await client.post(CHAT, json=body)
    return resp.status, await resp.json()


async def read_sse(resp: aiohttp.ClientResponse) -> list[Any]:
    """Events of an SSE body, JSON-decoded except the final '[DONE]'."""
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    raw = (await resp.read()).decode()
    assert raw.endswith("\n\n")
    events = []
    for block in raw.split("\n\n")[:-1]:
        assert block.startswith("data: ")
        data = block[len("data: "):]
        events.append(data if data == "[DONE]" else json.loads(data))
    return events


# ------------------------------------------------------------- text replies

async def test_models_list(make_client):
    client = await make_client(models=["m-a", "m-b"])
    resp = await client.get("/v1/models")
    body = await resp.json()
    assert resp.status == 200
    assert body["object"] == "list"
    assert [m["id"] for m in body["data"]] == ["m-a", "m-b"]
    assert all(m["object"] == "model" and m["owned_by"] == "simtest"
               and isinstance(m["created"], int) for m in body["data"])


async def test_text_reply_shape_and_determinism(make_client):
    client = await make_client()
    status, body = await chat(client)
    assert status == 200
    assert body["id"].startswith("chatcmpl-")
    assert body["object"] == "chat.completion"
    assert body["model"] == "sim-small"
    assert body["system_fingerprint"] is None
    assert isinstance(body["created"], int)
    (choice,) = body["choices"]
    assert choice["index"] == 0 and choice["logprobs"] is None
    assert choice["finish_reason"] == "stop"
    message = choice["message"]
    assert message["role"] == "assistant" and message["refusal"] is None
    assert len(message["content"].split()) == 16
    usage = body["usage"]
    assert usage["completion_tokens"] == 16
    assert usage["total_tokens"] == usage["prompt_tokens"] + 16

    _, again = await chat(client)
    assert again["choices"][0]["message"]["content"] == message["content"]
    assert again["id"] != body["id"]


async def test_reply_tokens_setting_and_max_tokens_cut(make_client):
    client = await make_client(SimSettings(reply_tokens=5))
    _, body = await chat(client)
    assert len(body["choices"][0]["message"]["content"].split()) == 5
    assert body["choices"][0]["finish_reason"] == "stop"

    _, body = await chat(client, max_tokens=3)
    assert len(body["choices"][0]["message"]["content"].split()) == 3
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 3

    _, body = await chat(client, max_completion_tokens=2)
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 2

    # A limit above the natural length does not cut.
    _, body = await chat(client, max_tokens=50)
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["completion_tokens"] == 5


async def test_prompt_token_estimate(make_client):
    client = await make_client()
    _, short = await chat(client, messages=[{"role": "user", "content": "x"}])
    _, long = await chat(client, messages=[{"role": "user", "content": "x" * 401}])
    # ~4 characters per token.
    assert long["usage"]["prompt_tokens"] - short["usage"]["prompt_tokens"] == 100

    _, two = await chat(client, messages=[{"role": "system", "content": "x"},
                                          {"role": "user", "content": "x"}])
    extra_message = two["usage"]["prompt_tokens"] - short["usage"]["prompt_tokens"]
    assert 3 <= extra_message <= 6

    parts = [{"type": "text", "text": "x" * 401},
             {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]
    _, multi = await chat(client, messages=[{"role": "user", "content": parts}])
    assert multi["usage"]["prompt_tokens"] == long["usage"]["prompt_tokens"] + 85


async def test_json_response_formats(make_client):
    client = await make_client()
    _, body = await chat(client, response_format={"type": "json_object"})
    assert isinstance(json.loads(body["choices"][0]["message"]["content"]), dict)

    schema = WEATHER_TOOL["function"]["parameters"]
    fmt = {"type": "json_schema", "json_schema": {"name": "weather", "schema": schema}}
    _, body = await chat(client, response_format=fmt)
    content = json.loads(body["choices"][0]["message"]["content"])
    assert conforms(content, schema)
    assert body["choices"][0]["finish_reason"] == "stop"


# ---------------------------------------------------------------- tool calls

async def test_tool_call_arguments_follow_schema(make_client):
    client = await make_client()
    status, body = await chat(client, tools=[WEATHER_TOOL, SEARCH_TOOL])
    assert status == 200
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert call["id"].startswith("call_") and call["type"] == "function"
    assert call["function"]["name"] == "get_weather"
    args = json.loads(call["function"]["arguments"])
    assert conforms(args, WEATHER_TOOL["function"]["parameters"])
    assert args["unit"] == "celsius"
    assert 1 <= args["days"] <= 14
    assert len(args["tags"]) >= 2
    assert isinstance(args["where"]["lat"], float)
    assert body["usage"]["completion_tokens"] >= len(call["function"]["arguments"]) // 4


async def test_forced_tool_choice_and_none(make_client):
    client = await make_client()
    forced = {"type": "function", "function": {"name": "search"}}
    _, body = await chat(client, tools=[WEATHER_TOOL, SEARCH_TOOL], tool_choice=forced)
    call = body["choices"][0]["message"]["tool_calls"][0]
    assert call["function"]["name"] == "search"
    assert conforms(json.loads(call["function"]["arguments"]),
                    SEARCH_TOOL["function"]["parameters"])

    _, body = await chat(client, tools=[WEATHER_TOOL], tool_choice="none")
    assert body["choices"][0]["finish_reason"] == "stop"
    assert "tool_calls" not in body["choices"][0]["message"]

    status, body = await chat(client, tools=[WEATHER_TOOL],
                              tool_choice={"type": "function", "function": {"name": "nope"}})
    assert status == 400 and body["error"]["param"] == "tool_choice"


async def test_tool_round_trip_ends_in_text(make_client):
    client = await make_client()
    _, first = await chat(client, tools=[WEATHER_TOOL])
    call = first["choices"][0]["message"]["tool_calls"][0]
    messages = HELLO + [
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": "sunny"},
    ]
    _, second = await chat(client, tools=[WEATHER_TOOL], messages=messages)
    choice = second["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert isinstance(choice["message"]["content"], str) and choice["message"]["content"]
    assert "tool_calls" not in choice["message"]
    # The earlier call and the tool definitions count as prompt.
    assert second["usage"]["prompt_tokens"] > first["usage"]["prompt_tokens"]


# ----------------------------------------------------------------- streaming

async def test_stream_text_with_usage(make_client):
    client = await make_client(SimSettings(reply_tokens=6))
    _, plain = await chat(client)
    resp = await client.post(CHAT, json={"model": "sim-small", "messages": HELLO,
                                         "stream": True,
                                         "stream_options": {"include_usage": True}})
    assert resp.status == 200
    events = await read_sse(resp)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert len(chunks) == 1 + 6 + 1 + 1  # role, tokens, finish, usage
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({(c["id"], c["created"], c["model"]) for c in chunks}) == 1
    assert chunks[0]["id"].startswith("chatcmpl-") and chunks[0]["model"] == "sim-small"

    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    tokens = chunks[1:7]
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:7])
    text = "".join(c["choices"][0]["delta"]["content"] for c in tokens)
    assert text == plain["choices"][0]["message"]["content"]

    finish = chunks[7]["choices"][0]
    assert finish["delta"] == {} and finish["finish_reason"] == "stop"
    assert all(c["usage"] is None for c in chunks[:-1])
    last = chunks[-1]
    assert last["choices"] == []
    assert last["usage"]["completion_tokens"] == 6
    assert last["usage"]["prompt_tokens"] == plain["usage"]["prompt_tokens"]


async def test_stream_without_usage_and_length(make_client):
    client = await make_client()
    resp = await client.post(CHAT, json={"model": "sim-small", "messages": HELLO,
                                         "stream": True, "max_tokens": 2})
    events = await read_sse(resp)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all("usage" not in c for c in chunks)
    assert len(chunks) == 1 + 2 + 1
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


async def test_stream_tool_call(make_client):
    client = await make_client()
    resp = await client.post(CHAT, json={"model": "sim-small", "messages": HELLO,
                                         "tools": [WEATHER_TOOL], "stream": True})
    events = await read_sse(resp)
    assert events[-1] == "[DONE]"
    deltas = [c["choices"][0]["delta"] for c in events[:-1]]
    assert deltas[0]["role"] == "assistant"
    header = deltas[1]["tool_calls"][0]
    assert header["index"] == 0 and header["id"].startswith("call_")
    assert header["type"] == "function"
    assert header["function"] == {"name": "get_weather", "arguments": ""}
    fragments = deltas[2:-1]
    assert len(fragments) > 1
    assert all(d["tool_calls"][0]["index"] == 0 and "id" not in d["tool_calls"][0]
               for d in fragments)
    args = "".join(d["tool_calls"][0]["function"]["arguments"] for d in fragments)
    assert conforms(json.loads(args), WEATHER_TOOL["function"]["parameters"])
    assert events[-2]["choices"][0]["finish_reason"] == "tool_calls"


async def test_stream_stalls_after_chunks_and_client_can_leave(make_client, caplog):
    client = await make_client(SimSettings(stall_after_chunks=2))
    resp = await client.post(CHAT, json={"model": "sim-small", "messages": HELLO,
                                         "stream": True})
    assert resp.status == 200
    received = b""
    while received.count(b"\n\n") < 3:  # role chunk + 2 tokens
        received += await resp.content.readany()
    assert received.count(b"\n\n") == 3
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(resp.content.readany(), 0.3)
    resp.close()
    stats = await (await client.get("/_sim/stats")).json()
    assert stats["stream_requests"] == 1
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_latency_and_ttft_delay(make_client):
    client = await make_client(SimSettings(latency_ms=150, ttft_ms=150))
    start = time.monotonic()
    status, _ = await chat(client)
    assert status == 200 and time.monotonic() - start >= 0.14

    start = time.monotonic()
    resp = await client.post(CHAT, json={"model": "sim-small", "messages": HELLO,
                                         "stream": True})
    first = await resp.content.readline()
    assert first.startswith(b"data: ") and time.monotonic() - start >= 0.14
    await resp.read()


async def test_tokens_per_second_paces_stream(make_client):
    client = await make_client(SimSettings(tokens_per_second=100, reply_tokens=11))
    start = time.monotonic()
    resp = await client.post(CHAT, json={"model": "sim-small", "messages": HELLO,
                                         "stream": True})
    events = await read_sse(resp)
    # 11 tokens at 100/s: the last leaves 10 intervals after the first.
    assert time.monotonic() - start >= 0.095
    assert len(events) == 1 + 11 + 1 + 1


# ------------------------------------------------------------------- faults

async def test_rate_limit_429_with_retry_after(make_client):
    client = await make_client(SimSettings(rate_limit_rate=1, retry_after_s=1.2))
    resp = await client.post(CHAT, json={"model": "sim-small", "messages": HELLO})
    assert resp.status == 429
    assert resp.headers["Retry-After"] == "2"
    error = (await resp.json())["error"]
    assert error["type"] == "requests" and error["code"] == "rate_limit_exceeded"
    assert set(error) == {"message", "type", "param", "code"}


async def test_error_rate_uses_error_status(make_client):
    client = await make_client(SimSettings(error_rate=1, error_status=502))
    status, body = await chat(client)
    assert status == 502
    assert body["error"]["type"] == "server_error"


async def test_seeded_fault_pattern_is_reproducible(make_client):
    async def pattern(client: TestClient) -> list[int]:
        return [(await chat(client))[0] for _ in range(24)]

    settings = SimSettings(error_rate=0.5, seed=7)
    first = await pattern(await make_client(settings))
    second = await pattern(await make_client(settings))
    assert first == second
    assert set(first) == {200, 500}


async def test_outage_503(make_client):
    client = await make_client(SimSettings(outage="503"))
    status, body = await chat(client)
    assert status == 503 and body["error"]["type"] == "server_error"
    assert (await client.get("/v1/models")).status == 503
    assert (await client.get("/healthz")).status == 200


async def test_outage_reset_disconnects_without_traceback(make_client, caplog):
    client = await make_client(SimSettings(outage="reset"))
    with pytest.raises(aiohttp.ClientConnectionError):
        await client.post(CHAT, json={"model": "sim-small", "messages": HELLO})
    stats = await (await client.get("/_sim/stats")).json()
    assert stats["by_status"] == {"reset": 1}
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]

    # Ending the outage at run time restores service.
    await client.put("/_sim/config", json={"outage": "none"})
    assert (await chat(client))[0] == 200


# ---------------------------------------------------------- request checks

async def test_bad_requests_name_the_param(make_client):
    client = await make_client()
    resp = await client.post(CHAT, data=b"{not json",
                             headers={"Content-Type": "application/json"})
    body = await resp.json()
    assert resp.status == 400 and body["error"]["type"] == "invalid_request_error"

    cases = [
        ({"messages": HELLO}, "model"),
        ({"model": 3, "messages": HELLO}, "model"),
        ({"model": "sim-small"}, "messages"),
        ({"model": "sim-small", "messages": []}, "messages"),
        ({"model": "sim-small", "messages": [{"content": "hi"}]}, "messages"),
        ({"model": "sim-small", "messages": ["hi"]}, "messages"),
        ({"model": "sim-small", "messages": HELLO, "max_tokens": 0}, "max_tokens"),
    ]
    for payload, param in cases:
        resp = await client.post(CHAT, json=payload)
        body = await resp.json()
        assert resp.status == 400, payload
        assert body["error"]["param"] == param, payload


async def test_unknown_model_404(make_client):
    client = await make_client()
    status, body = await chat(client, model="gpt-nope")
    assert status == 404
    assert body["error"]["code"] == "model_not_found"
    assert "gpt-nope" in body["error"]["message"]


async def test_api_key_required(make_client):
    client = await make_client(api_key="s3cret")
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        resp = await client.post(CHAT, json={"model": "sim-small", "messages": HELLO},
                                 headers=headers)
        assert resp.status == 401
        assert (await resp.json())["error"]["code"] == "invalid_api_key"
    resp = await client.post(CHAT, json={"model": "sim-small", "messages": HELLO},
                             headers={"Authorization": "Bearer s3cret"})
    assert resp.status == 200
    # Control endpoints stay open.
    assert (await client.get("/_sim/config")).status == 200


# ----------------------------------------------------------- control plane

async def test_config_get_put_and_validation(make_client):
    client = await make_client()
    config = await (await client.get("/_sim/config")).json()
    assert config["error_status"] == 500 and config["outage"] == "none"

    resp = await client.put("/_sim/config", json={"error_rate": 1, "error_status": 418})
    updated = await resp.json()
    assert resp.status == 200
    assert updated["error_rate"] == 1 and updated["error_status"] == 418
    assert updated["reply_tokens"] == 16  # untouched fields stay
    assert (await chat(client))[0] == 418

    resp = await client.post("/_sim/config", json={"error_rate": 0})
    assert resp.status == 200 and (await chat(client))[0] == 200

    bad = [({"latency_ms": "fast"}, "latency_ms"), ({"bogus": 1}, "bogus"),
           ({"error_rate": 2}, "error_rate"), ({"outage": "maybe"}, "outage"),
           ({"reply_tokens": 1.5}, "reply_tokens"), ({"seed": True}, "seed")]
    for payload, field in bad:
        resp = await client.put("/_sim/config", json=payload)
        error = (await resp.json())["error"]
        assert resp.status == 400, payload
        assert field in error["message"] and error["param"] == field

    # A failed update changes nothing, even for its valid fields.
    await client.put("/_sim/config", json={"latency_ms": 5, "bogus": 1})
    assert (await (await client.get("/_sim/config")).json())["latency_ms"] == 0
    assert (await client.put("/_sim/config", data=b"[1]")).status == 400


async def test_context_window(make_client):
    client = await make_client()
    _, free = await chat(client)
    prompt = free["usage"]["prompt_tokens"]

    def exceeded(message: str) -> dict:
        return {"error": {"message": message, "type": "invalid_request_error", "param": "messages",
                          "code": "context_length_exceeded"}}

    # Prompt plus requested output exactly filling the window still fits.
    resp = await client.put("/_sim/config", json={"context_window": prompt + 5})
    assert resp.status == 200 and (await resp.json())["context_window"] == prompt + 5
    status, body = await chat(client, max_tokens=5)
    assert status == 200 and body["usage"]["prompt_tokens"] == prompt
    assert (await chat(client))[0] == 200  # no max_tokens: only the prompt counts

    # The requested output tips it over: OpenAI's "you requested" wording.
    status, body = await chat(client, max_tokens=6)
    assert status == 400
    assert body == exceeded(f"This model's maximum context length is {prompt + 5} tokens. However, you "
                            f"requested {prompt + 6} tokens ({prompt} in the messages, 6 in the completion). "
                            "Please reduce the length of the messages or completion.")
    # max_completion_tokens counts the same way (the smaller of the two limits is the request's).
    assert (await chat(client, max_completion_tokens=6))[0] == 400
    assert (await chat(client, max_tokens=6, max_completion_tokens=5))[0] == 200

    # The prompt alone is too long.
    await client.put("/_sim/config", json={"context_window": prompt - 1})
    message = (f"This model's maximum context length is {prompt - 1} tokens. However, your messages "
               f"resulted in {prompt} tokens. Please reduce the length of the messages.")
    for extra in ({}, {"max_tokens": 3}):
        status, body = await chat(client, **extra)
        assert (status, body) == (400, exceeded(message))
    # A stream is refused before it starts, as plain JSON.
    resp = await client.post(CHAT, json={"model": "sim-small", "messages": HELLO, "stream": True})
    assert resp.status == 400 and await resp.json() == exceeded(message)

    stats = await (await client.get("/_sim/stats")).json()
    assert stats["by_status"] == {"200": 4, "400": 5}

    await client.put("/_sim/config", json={"context_window": 0})  # 0: unlimited again
    assert (await chat(client, messages=[{"role": "user", "content": "x" * 40_000}], max_tokens=10**6))[0] == 200

    for value in (-1, 1.5, True, "8k"):
        resp = await client.put("/_sim/config", json={"context_window": value})
        assert resp.status == 400 and (await resp.json())["error"]["param"] == "context_window"


async def test_stats_count_and_reset(make_client):
    client = await make_client()
    await chat(client)
    await chat(client, model="nope")
    await client.get("/v1/models")
    resp = await client.post(CHAT, json={"model": "sim-small", "messages": HELLO,
                                         "stream": True})
    await resp.read()
    assert (await client.get("/healthz")).status == 200

    stats = await (await client.get("/_sim/stats")).json()
    assert stats == {"requests": 4, "chat_requests": 3,
                     "by_status": {"200": 3, "404": 1}, "stream_requests": 1}

    await client.post("/_sim/reset")
    stats = await (await client.get("/_sim/stats")).json()
    assert stats == {"requests": 0, "chat_requests": 0, "by_status": {}, "stream_requests": 0}


# --------------------------------------------------------------- schema fake

def test_schema_fake_refs_and_edge_types():
    schema = {
        "type": "object",
        "$defs": {"Item": {"type": "object", "properties": {"n": {"type": "integer"}},
                           "required": ["n"]}},
        "properties": {
            "items": {"type": "array", "items": {"$ref": "#/$defs/Item"}},
            "maybe": {"type": ["string", "null"]},
            "fixed": {"const": "v1"},
            "short": {"type": "string", "maxLength": 3},
            "price": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
            "merged": {"allOf": [{"properties": {"a": {"type": "boolean"}}},
                                 {"properties": {"b": {"type": "null"}}}]},
        },
        "required": ["extra"],
    }
    value = fake_from_schema(schema)
    assert value["items"] == [{"n": 1}]
    assert isinstance(value["maybe"], str)
    assert value["fixed"] == "v1"
    assert len(value["short"]) <= 3
    assert 0 < value["price"] <= 1
    assert value["merged"] == {"a": True, "b": None}
    assert isinstance(value["extra"], str)
    assert fake_from_schema({}) == "example"
    assert fake_from_schema({"type": "array", "items": {"type": "integer"}, "maxItems": 0}) == []


# ------------------------------------------------------------------- CLI/env

def test_flags_and_env(monkeypatch):
    monkeypatch.setenv("MEGAROUTER_SIM_ERROR_RATE", "0.25")
    monkeypatch.setenv("MEGAROUTER_SIM_NAME", "from-env")
    monkeypatch.setenv("MEGAROUTER_SIM_SEED", "42")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--outage", "503", "--name", "from-flag"])
    settings = settings_from_args(args)
    assert settings.error_rate == 0.25 and settings.seed == 42
    assert settings.outage == "503" and settings.ttft_ms == 0
    assert args.name == "from-flag" and args.port == 0 and args.host == "127.0.0.1"
    assert args.models == "sim-small,sim-medium,sim-large" and args.api_key is None

    assert settings_from_args(parser.parse_args(["--error-rate", "0.5"])).error_rate == 0.5


def test_context_window_flag_and_env(monkeypatch):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert settings_from_args(parser.parse_args([])).context_window == 0
    assert settings_from_args(parser.parse_args(["--context-window", "4096"])).context_window == 4096
    monkeypatch.setenv("MEGAROUTER_SIM_CONTEXT_WINDOW", "8192")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert settings_from_args(parser.parse_args([])).context_window == 8192
    assert settings_from_args(parser.parse_args(["--context-window", "16"])).context_window == 16
    with pytest.raises(ValueError, match="context_window"):
        settings_from_args(parser.parse_args(["--context-window", "-1"]))


# --------------------------------------------------------- real process

async def test_process_with_openai_sdk():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "megarouter.sim", "--port", "0", "--name", "proc",
        cwd=REPO_ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        ready = json.loads(line)
        assert ready["event"] == "ready" and ready["service"] == "sim"
        assert ready["name"] == "proc" and ready["port"] > 0

        client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{ready['port']}/v1",
                                    api_key="x", max_retries=0)
        async with client:
            completion = await client.chat.completions.create(
                model="sim-medium", messages=[{"role": "user", "content": "hi"}],
                max_tokens=4)
            assert completion.choices[0].finish_reason == "length"
            assert len(completion.choices[0].message.content.split()) == 4
            assert completion.usage.completion_tokens == 4

            stream = await client.chat.completions.create(
                model="sim-large", messages=[{"role": "user", "content": "hi"}],
                stream=True, stream_options={"include_usage": True})
            text, usage, finish = "", None, None
            async for chunk in stream:
                if chunk.choices:
                    text += chunk.choices[0].delta.content or ""
                    finish = chunk.choices[0].finish_reason or finish
                if chunk.usage is not None:
                    usage = chunk.usage
            assert len(text.split()) == 16 and finish == "stop"
            assert usage is not None and usage.completion_tokens == 16
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        rc = await asyncio.wait_for(proc.wait(), 30)
    rest, err = await proc.stdout.read(), await proc.stderr.read()
    assert rc == 0
    assert rest == b""  # exactly one line on stdout, no content anywhere
    assert b"Traceback" not in err and b"hi" not in err
