"""Simulator, Anthropic wire (``--wire anthropic``): the Messages API and its faults."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import time
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from megarouter.sim import SimSettings, add_arguments, build_app
from tests.test_sim import REPO_ROOT, WEATHER_TOOL, conforms

MESSAGES = "/v1/messages"
VERSION = {"anthropic-version": "2023-06-01"}
HELLO = [{"role": "user", "content": "Hello there"}]
WEATHER = {"name": "get_weather", "description": "Weather for a place",
           "input_schema": WEATHER_TOOL["function"]["parameters"]}
SEARCH = {"name": "search", "input_schema": {"type": "object", "properties": {"query": {"type": "string"}},
                                             "required": ["query"]}}
ERROR_KEYS = {"type", "error", "request_id"}


@pytest.fixture
async def make_client():
    clients: list[TestClient] = []

    async def make(settings: SimSettings | None = None, *, api_key: str | None = None) -> TestClient:
        app = build_app(settings or SimSettings(), "simtest", ["claude-sim"], api_key, wire="anthropic")
        client = TestClient(TestServer(app))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


async def send(client: TestClient, headers: dict[str, str] | None = None, **body: Any) -> aiohttp.ClientResponse:
    body.setdefault("model", "claude-sim")
    body.setdefault("max_tokens", 1024)
    body.setdefault("messages", HELLO)
    return await client.post(MESSAGES, json=body, headers=VERSION if headers is None else headers)


async def create(client: TestClient, **body: Any) -> tuple[int, dict]:
    resp = await send(client, **body)
    return resp.status, await resp.json()


def named_events(raw: str) -> list[tuple[str, dict]]:
    """(event name, data) per SSE event; each event's name must match its data's type."""
    assert raw.endswith("\n\n")
    events = []
    for block in raw.split("\n\n")[:-1]:
        name_line, data_line = block.split("\n")
        assert name_line.startswith("event: ") and data_line.startswith("data: ")
        name, data = name_line[len("event: "):], json.loads(data_line[len("data: "):])
        assert data["type"] == name
        events.append((name, data))
    return events


def assert_error(resp_status: int, body: dict, status: int, type_: str) -> None:
    assert resp_status == status
    assert set(body) == ERROR_KEYS and body["type"] == "error"
    assert body["error"]["type"] == type_ and isinstance(body["error"]["message"], str)
    assert body["request_id"].startswith("req_")


# ------------------------------------------------------------------ replies

async def test_text_reply_and_usage(make_client):
    client = await make_client()
    status, body = await create(client)
    assert status == 200
    assert body["id"].startswith("msg_")
    assert (body["type"], body["role"], body["model"]) == ("message", "assistant", "claude-sim")
    (block,) = body["content"]
    assert block["type"] == "text" and len(block["text"].split()) == 16
    assert body["stop_reason"] == "end_turn" and body["stop_sequence"] is None
    usage = body["usage"]
    assert usage["output_tokens"] == 16
    assert usage["cache_creation_input_tokens"] == 0 and usage["cache_read_input_tokens"] == 0

    # ~4 characters per token; a system prompt counts as prompt too.
    _, longer = await create(client, messages=[{"role": "user", "content": "Hello there" + "x" * 400}])
    assert longer["usage"]["input_tokens"] - usage["input_tokens"] == 100
    _, with_system = await create(client, system=[{"type": "text", "text": "Be brief."}])
    assert with_system["usage"]["input_tokens"] > usage["input_tokens"]
    _, again = await create(client)
    assert again["content"] == body["content"] and again["id"] != body["id"]


async def test_max_tokens_and_stop_sequences(make_client):
    client = await make_client()
    _, body = await create(client, max_tokens=3)
    assert body["stop_reason"] == "max_tokens"
    assert body["content"][0]["text"] == "alpha bravo charlie"
    assert body["usage"]["output_tokens"] == 3

    _, body = await create(client, stop_sequences=["nope", " charlie"])
    assert body["stop_reason"] == "stop_sequence" and body["stop_sequence"] == " charlie"
    assert body["content"][0]["text"] == "alpha bravo"


async def test_tool_use_input_follows_schema(make_client):
    client = await make_client()
    status, body = await create(client, tools=[WEATHER, SEARCH])
    assert status == 200 and body["stop_reason"] == "tool_use"
    (block,) = body["content"]
    assert block["type"] == "tool_use" and block["id"].startswith("toolu_")
    assert block["name"] == "get_weather"
    assert conforms(block["input"], WEATHER["input_schema"])

    _, forced = await create(client, tools=[WEATHER, SEARCH], tool_choice={"type": "tool", "name": "search"})
    assert forced["content"][0]["name"] == "search"
    assert conforms(forced["content"][0]["input"], SEARCH["input_schema"])

    _, none = await create(client, tools=[WEATHER], tool_choice={"type": "none"})
    assert none["stop_reason"] == "end_turn" and none["content"][0]["type"] == "text"


async def test_tool_round_trip_ends_in_text(make_client):
    client = await make_client()
    _, first = await create(client, tools=[WEATHER])
    call = first["content"][0]
    messages = HELLO + [
        {"role": "assistant", "content": [call]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call["id"], "content": "sunny"}]},
    ]
    _, second = await create(client, tools=[WEATHER], messages=messages)
    assert second["stop_reason"] == "end_turn"
    assert second["content"][0]["type"] == "text" and second["content"][0]["text"]
    assert second["usage"]["input_tokens"] > first["usage"]["input_tokens"]

    # A user turn that goes on after the tool result asks again.
    messages[-1]["content"].append({"type": "text", "text": "and tomorrow?"})
    _, third = await create(client, tools=[WEATHER], messages=messages)
    assert third["stop_reason"] == "tool_use"


# ---------------------------------------------------------------- streaming

async def test_stream_event_sequence(make_client):
    client = await make_client(SimSettings(reply_tokens=6))
    _, plain = await create(client)
    resp = await send(client, stream=True)
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
    events = named_events(await resp.text())
    names = [name for name, _ in events]
    assert names == (["message_start", "content_block_start", "ping"] + ["content_block_delta"] * 6
                     + ["content_block_stop", "message_delta", "message_stop"])

    message = events[0][1]["message"]
    assert message["id"].startswith("msg_") and message["content"] == []
    assert message["stop_reason"] is None and message["model"] == "claude-sim"
    assert message["usage"]["input_tokens"] == plain["usage"]["input_tokens"]
    assert events[1][1] == {"type": "content_block_start", "index": 0,
                            "content_block": {"type": "text", "text": ""}}
    deltas = [data["delta"] for _, data in events[3:9]]
    assert {d["type"] for d in deltas} == {"text_delta"}
    assert "".join(d["text"] for d in deltas) == plain["content"][0]["text"]
    assert events[9][1] == {"type": "content_block_stop", "index": 0}
    final = events[10][1]
    assert final["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert final["usage"]["output_tokens"] == 6


async def test_stream_tool_use(make_client):
    client = await make_client()
    resp = await send(client, stream=True, tools=[WEATHER], max_tokens=2)
    events = named_events(await resp.text())
    start = events[1][1]["content_block"]
    assert start["type"] == "tool_use" and start["id"].startswith("toolu_")
    assert start["name"] == "get_weather" and start["input"] == {}
    deltas = [data["delta"] for name, data in events if name == "content_block_delta"]
    assert len(deltas) > 1 and {d["type"] for d in deltas} == {"input_json_delta"}
    arguments = json.loads("".join(d["partial_json"] for d in deltas))
    assert conforms(arguments, WEATHER["input_schema"])
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"
    assert events[-2][1]["usage"]["output_tokens"] == len(deltas)


async def test_stream_stalls_after_chunks(make_client, caplog):
    client = await make_client(SimSettings(stall_after_chunks=2))
    resp = await send(client, stream=True)
    assert resp.status == 200
    received = b""
    while received.count(b"\n\n") < 5:  # message_start, block start, ping + 2 deltas
        received += await resp.content.readany()
    assert received.count(b"\n\n") == 5
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(resp.content.readany(), 0.3)
    resp.close()
    assert b"message_stop" not in received
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_latency_applies(make_client):
    client = await make_client(SimSettings(latency_ms=120))
    start = time.monotonic()
    status, _ = await create(client)
    assert status == 200 and time.monotonic() - start >= 0.11


# ------------------------------------------------------------------- faults

async def test_faults_in_anthropic_error_shape(make_client):
    client = await make_client(SimSettings(error_rate=1))
    status, body = await create(client)
    assert_error(status, body, 500, "api_error")

    await client.put("/_sim/config", json={"error_status": 529})
    status, body = await create(client)
    assert_error(status, body, 529, "overloaded_error")

    await client.put("/_sim/config", json={"error_rate": 0, "rate_limit_rate": 1, "retry_after_s": 1.5})
    resp = await send(client)
    assert_error(resp.status, await resp.json(), 429, "rate_limit_error")
    assert resp.headers["retry-after"] == "2"

    await client.put("/_sim/config", json={"rate_limit_rate": 0, "outage": "503"})
    status, body = await create(client)
    assert_error(status, body, 503, "overloaded_error")
    models = await client.get("/v1/models")
    assert_error(models.status, await models.json(), 503, "overloaded_error")

    await client.put("/_sim/config", json={"outage": "reset"})
    with pytest.raises(aiohttp.ClientConnectionError):
        await send(client)
    await client.put("/_sim/config", json={"outage": "none"})
    assert (await create(client))[0] == 200

    stats = await (await client.get("/_sim/stats")).json()
    assert stats["by_status"] == {"500": 1, "529": 1, "429": 1, "503": 2, "reset": 1, "200": 1}
    assert stats["chat_requests"] == 6 and stats["requests"] == 7


async def test_api_key_via_x_api_key(make_client):
    client = await make_client(api_key="s3cret")
    for headers in (VERSION, {**VERSION, "x-api-key": "wrong"},
                    {**VERSION, "Authorization": "Bearer s3cret"}):
        resp = await send(client, headers=headers)
        assert_error(resp.status, await resp.json(), 401, "authentication_error")
    resp = await send(client, headers={**VERSION, "x-api-key": "s3cret"})
    assert resp.status == 200
    assert (await client.get("/_sim/config")).status == 200


async def test_context_window(make_client):
    client = await make_client()
    _, free = await create(client, max_tokens=100)
    prompt = free["usage"]["input_tokens"]

    def too_long(message: str) -> dict:
        return {"type": "error", "error": {"type": "invalid_request_error", "message": message}}

    # max_tokens is required here, so it always counts against the window.
    resp = await client.put("/_sim/config", json={"context_window": prompt + 100})
    assert resp.status == 200 and (await resp.json())["context_window"] == prompt + 100
    status, body = await create(client, max_tokens=100)
    assert status == 200 and body["usage"]["input_tokens"] == prompt

    status, body = await create(client, max_tokens=101)
    assert_error(status, body, 400, "invalid_request_error")
    assert {k: body[k] for k in ("type", "error")} == too_long(
        f"input length and `max_tokens` exceed context limit: {prompt} + 101 > {prompt + 100}, "
        "decrease input length or `max_tokens` and try again")

    await client.put("/_sim/config", json={"context_window": prompt - 1})
    for stream in (False, True):
        status, body = await create(client, max_tokens=1, stream=stream)
        assert_error(status, body, 400, "invalid_request_error")
        assert {k: body[k] for k in ("type", "error")} == too_long(
            f"prompt is too long: {prompt} tokens > {prompt - 1} maximum")
    stats = await (await client.get("/_sim/stats")).json()
    assert stats["by_status"] == {"200": 2, "400": 3}

    await client.put("/_sim/config", json={"context_window": 0})
    assert (await create(client, max_tokens=10**6))[0] == 200


# ---------------------------------------------------------- request checks

async def test_validation_errors_name_the_field(make_client):
    client = await make_client()
    resp = await send(client, headers={})
    body = await resp.json()
    assert_error(resp.status, body, 400, "invalid_request_error")
    assert "anthropic-version" in body["error"]["message"]

    resp = await client.post(MESSAGES, data=b"{nope", headers=VERSION)
    assert_error(resp.status, await resp.json(), 400, "invalid_request_error")

    block = [{"role": "user", "content": [{"text": "no type"}]}]
    cases = [
        ({"model": None}, "model"),
        ({"max_tokens": None}, "max_tokens"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "system", "content": "hi"}]}, "messages.0.role"),
        ({"messages": block}, "messages.0.content.0.type"),
        ({"system": 5}, "system"),
        ({"tools": [{"name": "x"}]}, "tools.0.input_schema"),
        ({"tools": [WEATHER], "tool_choice": {"type": "tool", "name": "nope"}}, "tool_choice.name"),
        ({"tool_choice": {"type": "sometimes"}}, "tool_choice.type"),
        ({"stop_sequences": "END"}, "stop_sequences"),
    ]
    for payload, field in cases:
        body = {"model": "claude-sim", "max_tokens": 10, "messages": HELLO, **payload}
        body = {k: v for k, v in body.items() if v is not None}
        resp = await client.post(MESSAGES, json=body, headers=VERSION)
        error = await resp.json()
        assert_error(resp.status, error, 400, "invalid_request_error")
        assert error["error"]["message"].startswith(field + ":"), (payload, error)

    status, body = await create(client, model="claude-nope")
    assert_error(status, body, 404, "not_found_error")
    assert "claude-nope" in body["error"]["message"]
    resp = await client.get("/v1/nowhere")
    assert_error(resp.status, await resp.json(), 404, "not_found_error")


async def test_models_list(make_client):
    client = await make_client()
    body = await (await client.get("/v1/models")).json()
    assert [m["id"] for m in body["data"]] == ["claude-sim"]
    assert body["data"][0]["type"] == "model" and body["data"][0]["created_at"].endswith("Z")
    assert body["has_more"] is False and body["first_id"] == body["last_id"] == "claude-sim"


# ------------------------------------------------------------------- CLI/env

def test_wire_flag_and_env(monkeypatch):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert parser.parse_args([]).wire == "openai"
    assert parser.parse_args(["--wire", "anthropic"]).wire == "anthropic"
    with pytest.raises(SystemExit):
        parser.parse_args(["--wire", "cohere"])

    monkeypatch.setenv("MEGAROUTER_SIM_WIRE", "gemini")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert parser.parse_args([]).wire == "gemini"
    assert parser.parse_args(["--wire", "openai"]).wire == "openai"

    monkeypatch.setenv("MEGAROUTER_SIM_WIRE", "bogus")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    with pytest.raises(SystemExit):
        parser.parse_args([])
    with pytest.raises(ValueError):
        build_app(wire="bogus")


# --------------------------------------------------------- real process

async def test_process_with_anthropic_wire():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "megarouter.sim", "--port", "0", "--name", "claude-proc",
        "--wire", "anthropic", "--models", "claude-sim", "--api-key", "k",
        cwd=REPO_ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        ready = json.loads(await asyncio.wait_for(proc.stdout.readline(), 30))
        assert ready["event"] == "ready" and ready["service"] == "sim"
        assert ready["wire"] == "anthropic" and ready["name"] == "claude-proc" and ready["port"] > 0

        url = f"http://127.0.0.1:{ready['port']}{MESSAGES}"
        body = {"model": "claude-sim", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}
        async with aiohttp.ClientSession(headers={**VERSION, "x-api-key": "k"}) as session:
            async with session.post(url, json=body) as resp:
                message = await resp.json()
                assert resp.status == 200 and message["stop_reason"] == "max_tokens"
                assert message["usage"]["output_tokens"] == 4
            async with session.post(url, json={**body, "stream": True}) as resp:
                names = [line[len(b"event: "):].strip() async for line in resp.content
                         if line.startswith(b"event: ")]
                assert names[0] == b"message_start" and names[-1] == b"message_stop"
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        rc = await asyncio.wait_for(proc.wait(), 30)
    rest, err = await proc.stdout.read(), await proc.stderr.read()
    assert rc == 0
    assert rest == b""  # exactly one line on stdout, no content anywhere
    assert b"Traceback" not in err and b"hi" not in err


# ------------------------------------------------------------ count_tokens

COUNT_TOKENS = "/v1/messages/count_tokens"


async def test_count_tokens_matches_the_messages_input_tokens(make_client):
    client = await make_client(api_key="k")
    headers = {**VERSION, "x-api-key": "k"}
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
    bodies = [
        {"messages": HELLO},
        {"messages": [{"role": "user", "content": "Hello there" + "x" * 400}]},
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "What is this?"}, image]}],
         "system": [{"type": "text", "text": "Be brief."}], "tools": [WEATHER, SEARCH]},
    ]
    counts = []
    for body in bodies:
        resp = await client.post(COUNT_TOKENS, json={"model": "claude-sim", **body}, headers=headers)
        assert resp.status == 200
        counted = await resp.json()
        assert set(counted) == {"input_tokens"} and isinstance(counted["input_tokens"], int)
        # The same estimate /v1/messages bills, and the same answer every time.
        answered = await client.post(MESSAGES, json={"model": "claude-sim", "max_tokens": 16, **body},
                                     headers=headers)
        assert (await answered.json())["usage"]["input_tokens"] == counted["input_tokens"]
        again = await client.post(COUNT_TOKENS, json={"model": "claude-sim", **body}, headers=headers)
        assert await again.json() == counted
        counts.append(counted["input_tokens"])
    assert counts[1] - counts[0] == 100  # ~4 characters per token
    assert counts[2] > counts[0] + 85  # an image, a system prompt and tool definitions count

    stats = await (await client.get("/_sim/stats")).json()
    assert stats["chat_requests"] == 3 and stats["requests"] == 9  # counting is not a chat request


async def test_count_tokens_checks_auth_and_the_request(make_client):
    client = await make_client(api_key="k")
    body = {"model": "claude-sim", "messages": HELLO}
    for headers in (VERSION, {**VERSION, "x-api-key": "wrong"}):
        resp = await client.post(COUNT_TOKENS, json=body, headers=headers)
        assert_error(resp.status, await resp.json(), 401, "authentication_error")

    headers = {**VERSION, "x-api-key": "k"}
    resp = await client.post(COUNT_TOKENS, json=body, headers={"x-api-key": "k"})
    assert_error(resp.status, await resp.json(), 400, "invalid_request_error")
    for bad, field in (({"messages": []}, "messages"), ({"model": None}, "model"),
                       ({"max_tokens": 0}, "max_tokens"),
                       ({"messages": [{"role": "system", "content": "hi"}]}, "messages.0.role")):
        sent = {k: v for k, v in {**body, **bad}.items() if v is not None}
        resp = await client.post(COUNT_TOKENS, json=sent, headers=headers)
        error = await resp.json()
        assert_error(resp.status, error, 400, "invalid_request_error")
        assert error["error"]["message"].startswith(field + ":"), (bad, error)
    resp = await client.post(COUNT_TOKENS, json={**body, "model": "claude-nope"}, headers=headers)
    assert_error(resp.status, await resp.json(), 404, "not_found_error")
