"""Simulator, Gemini wire (``--wire gemini``): generateContent, streaming, embeddings, faults."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from megarouter.sim import SimSettings, build_app
from tests.test_sim import conforms

BASE = "/v1beta/models/gemini-sim"
GENERATE = BASE + ":generateContent"
STREAM = BASE + ":streamGenerateContent?alt=sse"
HELLO = [{"role": "user", "parts": [{"text": "Hello there"}]}]
# Gemini declarations use OpenAPI-style schemas with upper-case type names.
WEATHER = {
    "name": "get_weather",
    "description": "Weather for a place",
    "parameters": {
        "type": "OBJECT",
        "properties": {
            "city": {"type": "STRING"},
            "unit": {"type": "STRING", "enum": ["celsius", "fahrenheit"]},
            "days": {"type": "INTEGER", "minimum": 1, "maximum": 14},
            "tags": {"type": "ARRAY", "items": {"type": "STRING"}, "minItems": 2},
        },
        "required": ["city", "unit", "tags"],
    },
}
SEARCH = {"name": "search", "parametersJsonSchema": {"type": "object", "properties": {"q": {"type": "string"}},
                                                     "required": ["q"]}}


def lower(schema: Any) -> Any:
    """A schema with Gemini's type names lower-cased, for the JSON-schema checker."""
    if isinstance(schema, dict):
        return {k: (v.lower() if k == "type" and isinstance(v, str) else lower(v)) for k, v in schema.items()}
    if isinstance(schema, list):
        return [lower(v) for v in schema]
    return schema


@pytest.fixture
async def make_client():
    clients: list[TestClient] = []

    async def make(settings: SimSettings | None = None, *, api_key: str | None = None) -> TestClient:
        app = build_app(settings or SimSettings(), "simtest", ["gemini-sim"], api_key, wire="gemini")
        client = TestClient(TestServer(app))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


async def call(client: TestClient, path: str, **body: Any) -> tuple[int, dict]:
    resp = await client.post(path, json=body)
    return resp.status, await resp.json()


async def generate(client: TestClient, path: str = GENERATE, **body: Any) -> tuple[int, dict]:
    body.setdefault("contents", HELLO)
    return await call(client, path, **body)


def sse(raw: str) -> list[dict]:
    """Gemini SSE events: ``data: <json>`` separated by CRLF blank lines, no end marker."""
    assert raw.endswith("\r\n\r\n")
    blocks = raw.split("\r\n\r\n")[:-1]
    assert all(b.startswith("data: ") for b in blocks)
    return [json.loads(b[len("data: "):]) for b in blocks]


def assert_error(status: int, body: dict, code: int, name: str) -> str:
    assert status == code
    assert set(body) == {"error"}
    error = body["error"]
    assert error["code"] == code and error["status"] == name and isinstance(error["message"], str)
    return error["message"]


def text_of(response: dict) -> str:
    return "".join(p.get("text", "") for p in response["candidates"][0]["content"]["parts"])


# ------------------------------------------------------------------ replies

async def test_text_reply_and_usage(make_client):
    client = await make_client()
    status, body = await generate(client)
    assert status == 200
    (candidate,) = body["candidates"]
    assert candidate["content"]["role"] == "model" and candidate["index"] == 0
    assert candidate["finishReason"] == "STOP"
    assert len(text_of(body).split()) == 16
    usage = body["usageMetadata"]
    assert usage["candidatesTokenCount"] == 16
    assert usage["totalTokenCount"] == usage["promptTokenCount"] + 16
    assert body["modelVersion"] == "gemini-sim" and body["responseId"]

    _, longer = await generate(client, contents=[{"role": "user", "parts": [{"text": "Hello there" + "x" * 400}]}])
    assert longer["usageMetadata"]["promptTokenCount"] - usage["promptTokenCount"] == 100
    # snake_case field names work like the real API's; an image counts as prompt.
    image = {"inline_data": {"mime_type": "image/png", "data": "AA=="}}
    _, snake = await generate(client, system_instruction={"parts": [{"text": "Be brief."}]},
                              contents=[{"role": "user", "parts": [{"text": "Hello there"}, image]}])
    # One more turn (4), an image (85) and the system text (11 + 9 chars: 5 tokens instead of 3).
    assert snake["usageMetadata"]["promptTokenCount"] == usage["promptTokenCount"] + 4 + 85 + 2


async def test_max_output_tokens_stop_sequences_and_candidates(make_client):
    client = await make_client()
    _, body = await generate(client, generationConfig={"maxOutputTokens": 3})
    assert body["candidates"][0]["finishReason"] == "MAX_TOKENS"
    assert text_of(body) == "alpha bravo charlie"
    assert body["usageMetadata"]["candidatesTokenCount"] == 3

    _, body = await generate(client, generation_config={"stop_sequences": [" charlie"]})
    assert body["candidates"][0]["finishReason"] == "STOP" and text_of(body) == "alpha bravo"

    _, body = await generate(client, generationConfig={"candidateCount": 2, "maxOutputTokens": 2})
    assert [c["index"] for c in body["candidates"]] == [0, 1]
    assert body["usageMetadata"]["candidatesTokenCount"] == 4


async def test_json_mode_and_response_schema(make_client):
    client = await make_client()
    _, body = await generate(client, generationConfig={"responseMimeType": "application/json"})
    assert isinstance(json.loads(text_of(body)), dict)
    schema = WEATHER["parameters"]
    _, body = await generate(client, generationConfig={"responseMimeType": "application/json",
                                                       "responseSchema": schema})
    assert conforms(json.loads(text_of(body)), lower(schema))


async def test_function_call_args_follow_declaration(make_client):
    client = await make_client()
    tools = [{"functionDeclarations": [WEATHER, SEARCH]}]
    status, body = await generate(client, tools=tools)
    assert status == 200
    candidate = body["candidates"][0]
    assert candidate["finishReason"] == "STOP"
    (part,) = candidate["content"]["parts"]
    call = part["functionCall"]
    assert call["name"] == "get_weather"
    assert conforms(call["args"], lower(WEATHER["parameters"]))
    assert call["args"]["unit"] == "celsius" and len(call["args"]["tags"]) >= 2

    config = {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["search"]}}
    _, body = await generate(client, tools=tools, toolConfig=config)
    call = body["candidates"][0]["content"]["parts"][0]["functionCall"]
    assert call["name"] == "search" and conforms(call["args"], SEARCH["parametersJsonSchema"])

    _, body = await generate(client, tools=tools, toolConfig={"functionCallingConfig": {"mode": "NONE"}})
    assert len(text_of(body).split()) == 16


async def test_function_round_trip_ends_in_text(make_client):
    client = await make_client()
    tools = [{"functionDeclarations": [WEATHER]}]
    _, first = await generate(client, tools=tools)
    call = first["candidates"][0]["content"]["parts"][0]
    contents = HELLO + [
        {"role": "model", "parts": [call]},
        {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"sky": "sunny"}}}]},
    ]
    _, second = await generate(client, tools=tools, contents=contents)
    assert "functionCall" not in second["candidates"][0]["content"]["parts"][0]
    assert text_of(second) and second["candidates"][0]["finishReason"] == "STOP"
    assert second["usageMetadata"]["promptTokenCount"] > first["usageMetadata"]["promptTokenCount"]


# ---------------------------------------------------------------- streaming

async def test_stream_sse_events(make_client):
    client = await make_client(SimSettings(reply_tokens=6))
    _, plain = await generate(client)
    resp = await client.post(STREAM, json={"contents": HELLO})
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
    events = sse(await resp.text())
    assert len(events) == 6
    assert "".join(text_of(e) for e in events) == text_of(plain)
    assert len({e["responseId"] for e in events}) == 1
    for event in events[:-1]:
        assert "finishReason" not in event["candidates"][0] and "usageMetadata" not in event
    last = events[-1]
    assert last["candidates"][0]["finishReason"] == "STOP"
    assert last["usageMetadata"] == plain["usageMetadata"]


async def test_stream_without_alt_is_a_json_array(make_client):
    client = await make_client(SimSettings(reply_tokens=3))
    resp = await client.post(BASE + ":streamGenerateContent", json={"contents": HELLO})
    assert resp.headers["Content-Type"].startswith("application/json")
    chunks = json.loads(await resp.text())
    assert [text_of(c) for c in chunks] == ["alpha", " bravo", " charlie"]
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"


async def test_stream_function_call_and_length(make_client):
    client = await make_client()
    resp = await client.post(STREAM, json={"contents": HELLO, "tools": [{"functionDeclarations": [WEATHER]}]})
    (event,) = sse(await resp.text())
    assert event["candidates"][0]["content"]["parts"][0]["functionCall"]["name"] == "get_weather"
    assert event["candidates"][0]["finishReason"] == "STOP" and "usageMetadata" in event

    resp = await client.post(STREAM, json={"contents": HELLO, "generationConfig": {"maxOutputTokens": 2}})
    events = sse(await resp.text())
    assert len(events) == 2 and events[-1]["candidates"][0]["finishReason"] == "MAX_TOKENS"


async def test_stream_stalls_after_chunks(make_client, caplog):
    client = await make_client(SimSettings(stall_after_chunks=2))
    resp = await client.post(STREAM, json={"contents": HELLO})
    received = b""
    while received.count(b"\r\n\r\n") < 2:
        received += await resp.content.readany()
    assert received.count(b"\r\n\r\n") == 2
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(resp.content.readany(), 0.3)
    resp.close()
    assert b"finishReason" not in received
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_tokens_per_second_paces_stream(make_client):
    client = await make_client(SimSettings(tokens_per_second=100, reply_tokens=11, ttft_ms=20))
    start = time.monotonic()
    resp = await client.post(STREAM, json={"contents": HELLO})
    events = sse(await resp.text())
    # ttft, then 11 events 10 ms apart.
    assert time.monotonic() - start >= 0.115 and len(events) == 11


# ------------------------------------------------------------------- faults

async def test_faults_in_gemini_error_shape(make_client):
    client = await make_client(SimSettings(error_rate=1))
    assert_error(*await generate(client, path=STREAM), 500, "INTERNAL")

    await client.put("/_sim/config", json={"error_rate": 0, "rate_limit_rate": 1, "retry_after_s": 3})
    resp = await client.post(GENERATE, json={"contents": HELLO})
    body = await resp.json()
    assert_error(resp.status, body, 429, "RESOURCE_EXHAUSTED")
    assert resp.headers["Retry-After"] == "3"
    assert {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "3s"} in body["error"]["details"]

    await client.put("/_sim/config", json={"rate_limit_rate": 0, "outage": "503"})
    assert_error(*await generate(client), 503, "UNAVAILABLE")
    resp = await client.get("/v1beta/models")
    assert_error(resp.status, await resp.json(), 503, "UNAVAILABLE")

    await client.put("/_sim/config", json={"outage": "reset"})
    with pytest.raises(aiohttp.ClientConnectionError):
        await client.post(GENERATE, json={"contents": HELLO})
    await client.put("/_sim/config", json={"outage": "none"})
    assert (await generate(client))[0] == 200

    stats = await (await client.get("/_sim/stats")).json()
    assert stats["by_status"] == {"500": 1, "429": 1, "503": 2, "reset": 1, "200": 1}
    assert stats["chat_requests"] == 5 and stats["stream_requests"] == 1 and stats["requests"] == 6


async def test_api_key_header_or_query(make_client):
    client = await make_client(api_key="s3cret")
    resp = await client.post(GENERATE, json={"contents": HELLO})
    assert_error(resp.status, await resp.json(), 403, "PERMISSION_DENIED")
    resp = await client.post(GENERATE, json={"contents": HELLO}, headers={"x-goog-api-key": "wrong"})
    message = assert_error(resp.status, await resp.json(), 400, "INVALID_ARGUMENT")
    assert "API key not valid" in message
    resp = await client.post(GENERATE, json={"contents": HELLO}, headers={"x-goog-api-key": "s3cret"})
    assert resp.status == 200
    resp = await client.post(GENERATE + "?key=s3cret", json={"contents": HELLO})
    assert resp.status == 200
    assert (await client.get("/_sim/stats")).status == 200


async def test_validation_errors_name_the_field(make_client):
    client = await make_client()
    resp = await client.post(GENERATE, data=b"{nope")
    assert_error(resp.status, await resp.json(), 400, "INVALID_ARGUMENT")
    cases = [
        ({"contents": []}, "contents"),
        ({"contents": [{"role": "user", "parts": []}]}, "contents[0].parts"),
        ({"contents": [{"role": "assistant", "parts": [{"text": "x"}]}]}, "contents[0].role"),
        ({"generationConfig": {"maxOutputTokens": 0}}, "maxOutputTokens"),
        ({"generationConfig": {"candidateCount": 9}}, "candidateCount"),
        ({"tools": [{"functionDeclarations": [{"description": "no name"}]}]}, "function_declarations[0].name"),
        ({"tools": [{"functionDeclarations": [WEATHER]}],
          "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["nope"]}}},
         "allowed_function_names"),
    ]
    for payload, field in cases:
        status, body = await generate(client, **payload)
        message = assert_error(status, body, 400, "INVALID_ARGUMENT")
        assert field in message, (payload, message)

    status, body = await generate(client, path="/v1beta/models/nope:generateContent")
    assert "models/nope" in assert_error(status, body, 404, "NOT_FOUND")
    status, body = await generate(client, path=BASE + ":fly")
    assert_error(status, body, 404, "NOT_FOUND")


async def test_context_window(make_client):
    client = await make_client()
    _, free = await generate(client)
    prompt = free["usageMetadata"]["promptTokenCount"]

    def too_many(count: int, limit: int) -> dict:
        return {"error": {"code": 400, "message": f"The input token count ({count}) exceeds the maximum number "
                          f"of tokens allowed ({limit}).", "status": "INVALID_ARGUMENT"}}

    resp = await client.put("/_sim/config", json={"context_window": prompt + 5})
    assert resp.status == 200 and (await resp.json())["context_window"] == prompt + 5
    status, body = await generate(client, generationConfig={"maxOutputTokens": 5})
    assert status == 200 and body["usageMetadata"]["promptTokenCount"] == prompt
    assert (await generate(client))[0] == 200

    # maxOutputTokens tipping it over: the count reported is input plus requested output.
    status, body = await generate(client, generationConfig={"maxOutputTokens": 6})
    assert (status, body) == (400, too_many(prompt + 6, prompt + 5))

    await client.put("/_sim/config", json={"context_window": prompt - 1})
    for path in (GENERATE, STREAM, BASE + ":streamGenerateContent"):
        status, body = await generate(client, path, generationConfig={"maxOutputTokens": 3})
        assert (status, body) == (400, too_many(prompt, prompt - 1)), path
    stats = await (await client.get("/_sim/stats")).json()
    assert stats["by_status"] == {"200": 3, "400": 4}

    await client.put("/_sim/config", json={"context_window": 0})
    assert (await generate(client, generationConfig={"maxOutputTokens": 10**6}))[0] == 200


# --------------------------------------------------------------- embeddings

async def test_embed_content_is_deterministic(make_client):
    client = await make_client()

    async def embed(text: str, **extra: Any) -> list[float]:
        status, body = await call(client, BASE + ":embedContent", content={"parts": [{"text": text}]}, **extra)
        assert status == 200, body
        return body["embedding"]["values"]

    first, again, other = await embed("hello"), await embed("hello"), await embed("world")
    assert len(first) == 768 and first == again and first != other
    assert math.isclose(math.fsum(v * v for v in first), 1.0, rel_tol=1e-5)
    assert len(await embed("hello", outputDimensionality=16)) == 16
    assert len(await embed("hello", embedContentConfig={"outputDimensionality": 8})) == 8

    status, body = await call(client, BASE + ":embedContent", content={"parts": []})
    assert "content" in assert_error(status, body, 400, "INVALID_ARGUMENT")


async def test_batch_embed_contents(make_client):
    client = await make_client()
    path = BASE + ":batchEmbedContents"
    requests = [{"model": "models/gemini-sim", "content": {"parts": [{"text": t}]}} for t in ("a", "b", "a")]
    status, body = await call(client, path, requests=requests)
    assert status == 200
    vectors = [e["values"] for e in body["embeddings"]]
    assert len(vectors) == 3 and vectors[0] == vectors[2] != vectors[1]
    _, single = await call(client, BASE + ":embedContent", content={"parts": [{"text": "a"}]})
    assert single["embedding"]["values"] == vectors[0]

    mismatched = [{"model": "models/other", "content": {"parts": [{"text": "a"}]}}]
    status, body = await call(client, path, requests=mismatched)
    assert "model" in assert_error(status, body, 400, "INVALID_ARGUMENT")
    assert_error(*await call(client, path, requests=[]), 400, "INVALID_ARGUMENT")

    stats = await (await client.get("/_sim/stats")).json()
    assert stats["embedding_requests"] == 4 and stats["chat_requests"] == 0


async def test_models_list_and_get(make_client):
    client = await make_client()
    body = await (await client.get("/v1beta/models")).json()
    (model,) = body["models"]
    assert model["name"] == "models/gemini-sim"
    assert "generateContent" in model["supportedGenerationMethods"]
    resp = await client.get("/v1beta/models/gemini-sim")
    assert resp.status == 200 and (await resp.json())["name"] == "models/gemini-sim"
    resp = await client.get("/v1beta/models/nope")
    assert_error(resp.status, await resp.json(), 404, "NOT_FOUND")
