"""Simulator, OpenAI wire: embeddings and legacy text completions."""

from __future__ import annotations

import base64
import json
import math
import struct
from typing import Any

import openai
import pytest
from aiohttp.test_utils import TestClient, TestServer

from megarouter.sim import SimSettings, build_app

EMBED = "/v1/embeddings"
COMPLETE = "/v1/completions"


@pytest.fixture
async def make_client():
    clients: list[TestClient] = []

    async def make(settings: SimSettings | None = None, *, api_key: str | None = None) -> TestClient:
        app = build_app(settings or SimSettings(), "simtest", ["sim-small"], api_key)
        client = TestClient(TestServer(app))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


async def post(client: TestClient, path: str, **body: Any) -> tuple[int, dict]:
    body.setdefault("model", "sim-small")
    resp = await client.post(path, json=body)
    return resp.status, await resp.json()


def sse_events(raw: str) -> list[Any]:
    assert raw.endswith("\n\n")
    events = []
    for block in raw.split("\n\n")[:-1]:
        assert block.startswith("data: ")
        data = block[len("data: "):]
        events.append(data if data == "[DONE]" else json.loads(data))
    return events


# ---------------------------------------------------------------- embeddings

async def test_embeddings_shape_determinism_and_dimensions(make_client):
    client = await make_client()
    status, body = await post(client, EMBED, input=["hello", "world", "hello"])
    assert status == 200
    assert body["object"] == "list" and body["model"] == "sim-small"
    assert [d["index"] for d in body["data"]] == [0, 1, 2]
    assert {d["object"] for d in body["data"]} == {"embedding"}
    hello, world, hello_again = (d["embedding"] for d in body["data"])
    assert len(hello) == 1536
    assert math.isclose(math.fsum(v * v for v in hello), 1.0, rel_tol=1e-5)
    assert hello == hello_again and hello != world
    assert body["usage"] == {"prompt_tokens": 2 + 2 + 2, "total_tokens": 6}

    # Same text in a later single-input request: the same vector (no state kept).
    _, single = await post(client, EMBED, input="hello")
    assert single["data"][0]["embedding"] == hello

    _, short = await post(client, EMBED, input="hello", dimensions=64)
    vector = short["data"][0]["embedding"]
    assert len(vector) == 64
    assert math.isclose(math.fsum(v * v for v in vector), 1.0, rel_tol=1e-5)


async def test_embeddings_base64_matches_float(make_client):
    client = await make_client()
    _, floats = await post(client, EMBED, input="abc", dimensions=8)
    _, encoded = await post(client, EMBED, input="abc", dimensions=8, encoding_format="base64")
    decoded = struct.unpack("<8f", base64.b64decode(encoded["data"][0]["embedding"]))
    assert list(decoded) == floats["data"][0]["embedding"]


async def test_embeddings_with_openai_sdk(make_client):
    # The SDK asks for base64 by default and decodes it: a real compatibility check.
    client = await make_client()
    sdk = openai.AsyncOpenAI(base_url=str(client.make_url("/v1")), api_key="x", max_retries=0)
    async with sdk:
        result = await sdk.embeddings.create(model="sim-small", input=["a", "b"], dimensions=32)
    assert [len(d.embedding) for d in result.data] == [32, 32]
    assert result.data[0].embedding != result.data[1].embedding
    assert result.usage.prompt_tokens == 2


async def test_embeddings_validation_and_faults(make_client):
    client = await make_client()
    cases = [({"input": ""}, "input"), ({"input": []}, "input"), ({"input": [1, "a"]}, "input"),
             ({"input": "a", "dimensions": 0}, "dimensions"),
             ({"input": "a", "encoding_format": "hex"}, "encoding_format"),
             ({"model": 5, "input": "a"}, "model")]
    for payload, param in cases:
        status, body = await post(client, EMBED, **payload)
        assert status == 400, payload
        assert body["error"]["param"] == param, payload
    status, body = await post(client, EMBED, model="nope", input="a")
    assert status == 404 and body["error"]["code"] == "model_not_found"

    await client.put("/_sim/config", json={"error_rate": 1, "error_status": 503})
    status, body = await post(client, EMBED, input="a")
    assert status == 503 and body["error"]["type"] == "server_error"

    stats = await (await client.get("/_sim/stats")).json()
    assert stats["embedding_requests"] == len(cases) + 2
    assert stats["requests"] == len(cases) + 2 and stats["chat_requests"] == 0


# --------------------------------------------------------- legacy completions

async def test_completions_json(make_client):
    client = await make_client(SimSettings(reply_tokens=5))
    status, body = await post(client, COMPLETE, prompt="Say something" + "x" * 7)
    assert status == 200
    assert body["id"].startswith("cmpl-") and body["object"] == "text_completion"
    (choice,) = body["choices"]
    assert choice["index"] == 0 and choice["logprobs"] is None
    assert choice["finish_reason"] == "stop" and len(choice["text"].split()) == 5
    assert body["usage"] == {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10}

    # Several prompts and n: one choice per (prompt, n); prompts count once.
    _, many = await post(client, COMPLETE, prompt=["abcd", "efgh"], n=2, max_tokens=3)
    assert [c["index"] for c in many["choices"]] == [0, 1, 2, 3]
    assert {c["finish_reason"] for c in many["choices"]} == {"length"}
    assert many["usage"] == {"prompt_tokens": 2, "completion_tokens": 12, "total_tokens": 14}

    # Token-array prompts count one token per id; stop sequences cut the text.
    _, tokens = await post(client, COMPLETE, prompt=[1, 2, 3], stop=" charlie")
    assert tokens["usage"]["prompt_tokens"] == 3
    assert tokens["choices"][0]["text"] == "alpha bravo" and tokens["choices"][0]["finish_reason"] == "stop"


async def test_completions_default_max_tokens_is_16(make_client):
    client = await make_client(SimSettings(reply_tokens=40))
    _, body = await post(client, COMPLETE, prompt="hi")
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 16


async def test_completions_stream(make_client):
    client = await make_client(SimSettings(reply_tokens=4))
    _, plain = await post(client, COMPLETE, prompt="hi")
    resp = await client.post(COMPLETE, json={"model": "sim-small", "prompt": "hi", "stream": True,
                                             "stream_options": {"include_usage": True}})
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
    events = sse_events(await resp.text())
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert len(chunks) == 4 + 1 + 1  # tokens, finish, usage
    assert {c["object"] for c in chunks} == {"text_completion"}
    assert len({c["id"] for c in chunks}) == 1
    text = "".join(c["choices"][0]["text"] for c in chunks[:4])
    assert text == plain["choices"][0]["text"]
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:4])
    assert chunks[4]["choices"][0]["finish_reason"] == "stop"
    assert chunks[5]["choices"] == [] and chunks[5]["usage"]["completion_tokens"] == 4

    stats = await (await client.get("/_sim/stats")).json()
    assert stats["completion_requests"] == 2 and stats["stream_requests"] == 1


async def test_completions_with_openai_sdk_and_validation(make_client):
    client = await make_client(api_key="k")
    sdk = openai.AsyncOpenAI(base_url=str(client.make_url("/v1")), api_key="k", max_retries=0)
    async with sdk:
        result = await sdk.completions.create(model="sim-small", prompt="hi", max_tokens=2)
        assert result.choices[0].finish_reason == "length"
        assert result.choices[0].text == "alpha bravo"
        stream = await sdk.completions.create(model="sim-small", prompt="hi", max_tokens=3, stream=True)
        assert "".join([c.choices[0].text async for c in stream if c.choices]) == "alpha bravo charlie"

    headers = {"Authorization": "Bearer k"}
    for payload, param in [({"model": "sim-small"}, "prompt"),
                           ({"model": "sim-small", "prompt": "a", "max_tokens": 0}, "max_tokens"),
                           ({"model": "sim-small", "prompt": "a", "n": 0}, "n"),
                           ({"model": "sim-small", "prompt": "a", "stop": [1]}, "stop")]:
        resp = await client.post(COMPLETE, json=payload, headers=headers)
        assert resp.status == 400, payload
        assert (await resp.json())["error"]["param"] == param
    assert (await client.post(COMPLETE, json={"model": "sim-small", "prompt": "a"})).status == 401
