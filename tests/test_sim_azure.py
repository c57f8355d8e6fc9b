"""Simulator, Azure OpenAI wire (``--wire azure``): deployment routing, api-version, api-key, faults, streams."""

from __future__ import annotations

import argparse
import json
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp.test_utils import TestClient, TestServer

from megarouter.sim import SimSettings, add_arguments, build_app
from tests.test_sim import WEATHER_TOOL

DEPLOYMENTS = ["gpt4o-prod", "ada-prod"]
VERSION = "2024-10-21"
HELLO = [{"role": "user", "content": "Hello there"}]
NOT_FOUND = {"error": {"code": "404", "message": "Resource not found"}}
SAFE = {"filtered": False, "severity": "safe"}
PROMPT_ANNOTATIONS = {
    "choices": [], "created": 0, "id": "", "model": "", "object": "",
    "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {
        "hate": SAFE, "self_harm": SAFE, "sexual": SAFE, "violence": SAFE}}],
}


def path(deployment: str, operation: str = "chat/completions", version: str | None = VERSION) -> str:
    query = "" if version is None else f"?api-version={version}"
    return f"/openai/deployments/{deployment}/{operation}{query}"


@pytest.fixture
async def make_client():
    clients: list[TestClient] = []

    async def make(settings: SimSettings | None = None, *, api_key: str | None = None,
                   wire: str = "azure") -> TestClient:
        app = build_app(settings or SimSettings(), "simtest", DEPLOYMENTS, api_key, wire=wire)
        client = TestClient(TestServer(app))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


async def post(client: TestClient, url: str, headers: dict[str, str] | None = None,
               **body: Any) -> tuple[int, Any]:
    resp = await client.post(url, json=body, headers=headers)
    return resp.status, await resp.json()


async def chat(client: TestClient, deployment: str = "gpt4o-prod", **body: Any) -> tuple[int, Any]:
    body.setdefault("messages", HELLO)
    return await post(client, path(deployment), **body)


def sse_events(raw: str) -> list[Any]:
    assert raw.endswith("\n\n")
    events = []
    for block in raw.split("\n\n")[:-1]:
        assert block.startswith("data: ")
        data = block[len("data: "):]
        events.append(data if data == "[DONE]" else json.loads(data))
    return events


def without_ids(events: list[Any]) -> list[Any]:
    """Events with the per-response id and timestamp blanked, to compare two streams."""
    return [{**e, "id": "-", "created": 0} if isinstance(e, dict) and e.get("id") else e for e in events]


# ------------------------------------------------------------------ routing

async def test_the_deployment_in_the_path_selects_the_model(make_client):
    client = await make_client()
    # No model in the body, or a different one: Azure goes by the deployment.
    for extra in ({}, {"model": "something-else"}):
        status, body = await chat(client, **extra)
        assert status == 200, body
        assert body["object"] == "chat.completion" and body["model"] == "gpt4o-prod"
        assert body["choices"][0]["message"]["content"]
        assert body["usage"]["total_tokens"] > 0

    status, body = await post(client, path("ada-prod", "embeddings"), input=["a", "b"], dimensions=8)
    assert status == 200 and body["model"] == "ada-prod"
    assert [len(d["embedding"]) for d in body["data"]] == [8, 8]
    status, body = await post(client, path("gpt4o-prod", "completions"), prompt="Once upon", max_tokens=3)
    assert status == 200 and body["object"] == "text_completion" and body["model"] == "gpt4o-prod"
    assert body["usage"]["completion_tokens"] == 3

    for operation in ("chat/completions", "embeddings", "completions"):
        status, body = await post(client, path("nope", operation), messages=HELLO, input="x", prompt="x")
        assert status == 404
        assert body["error"]["code"] == "DeploymentNotFound"
        assert body["error"]["message"].startswith("The API deployment for this resource does not exist.")

    stats = await (await client.get("/_sim/stats")).json()
    assert stats["chat_requests"] == 3 and stats["embedding_requests"] == 2
    assert stats["completion_requests"] == 2
    assert stats["by_status"] == {"200": 4, "404": 3}


async def test_replies_are_the_openai_wires(make_client):
    azure = await make_client()
    plain = await make_client(wire="openai")
    _, a = await chat(azure, max_tokens=7)
    _, o = await post(plain, "/v1/chat/completions", model="gpt4o-prod", messages=HELLO, max_tokens=7)
    assert without_ids([a]) == without_ids([o])
    request = {"messages": HELLO, "tools": [WEATHER_TOOL], "tool_choice": "required"}
    _, a = await chat(azure, **request)
    _, o = await post(plain, "/v1/chat/completions", model="gpt4o-prod", **request)
    a_call, o_call = (r["choices"][0]["message"]["tool_calls"][0] for r in (a, o))
    assert a_call["function"] == o_call["function"] and a["usage"] == o["usage"]

    _, a = await post(azure, path("ada-prod", "embeddings"), input="hello", encoding_format="base64")
    _, o = await post(plain, "/v1/embeddings", model="ada-prod", input="hello", encoding_format="base64")
    assert a == o

    # OpenAI's own validation errors are what Azure returns too.
    status, body = await chat(azure, messages=[])
    assert status == 400 and body["error"]["param"] == "messages"
    resp = await azure.post(path("gpt4o-prod"), data=b"{nope")
    assert resp.status == 400 and (await resp.json())["error"]["type"] == "invalid_request_error"


async def test_context_window_gives_openais_error(make_client):
    client = await make_client()
    _, free = await chat(client)
    prompt = free["usage"]["prompt_tokens"]
    resp = await client.put("/_sim/config", json={"context_window": prompt + 5})
    assert resp.status == 200
    assert (await chat(client, max_tokens=5))[0] == 200

    # Azure passes OpenAI's context-length error through unchanged.
    status, body = await chat(client, max_tokens=6)
    assert status == 400
    assert body == {"error": {
        "message": f"This model's maximum context length is {prompt + 5} tokens. However, you requested "
                   f"{prompt + 6} tokens ({prompt} in the messages, 6 in the completion). Please reduce the "
                   "length of the messages or completion.",
        "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}}

    await client.put("/_sim/config", json={"context_window": prompt - 1})
    message = (f"This model's maximum context length is {prompt - 1} tokens. However, your messages resulted "
               f"in {prompt} tokens. Please reduce the length of the messages.")
    # Refused streams get no prompt-annotation prelude: the answer is a plain JSON error.
    for extra in ({}, {"stream": True}):
        status, body = await chat(client, **extra)
        assert status == 400 and body["error"]["message"] == message
        assert body["error"]["code"] == "context_length_exceeded"
    stats = await (await client.get("/_sim/stats")).json()
    assert stats["by_status"] == {"200": 2, "400": 3}


# -------------------------------------------------------------- api-version

async def test_api_version_is_required(make_client):
    client = await make_client()
    for version in (None, "", "latest", "2024-10", "gpt-4o"):
        for operation in ("chat/completions", "embeddings", "completions"):
            status, body = await post(client, path("gpt4o-prod", operation, version), messages=HELLO)
            assert (status, body) == (404, NOT_FOUND), (version, operation)
    status, _ = await post(client, path("gpt4o-prod", version="2025-04-01-preview"), messages=HELLO)
    assert status == 200

    # Paths Azure does not have, and wrong methods, keep Azure's shape.
    status, body = await post(client, path("gpt4o-prod", "images/generations"), prompt="x")
    assert (status, body) == (404, NOT_FOUND)
    resp = await client.get(path("gpt4o-prod"))
    assert resp.status == 405 and (await resp.json())["error"]["code"] == "405"
    # The OpenAI wire's paths are not served.
    resp = await client.post("/v1/chat/completions", json={"model": "gpt4o-prod", "messages": HELLO})
    assert resp.status == 404


# -------------------------------------------------------------------- auth

async def test_api_key_header(make_client):
    client = await make_client(api_key="azure-s3cret")
    for headers in ({}, {"api-key": "wrong"}, {"Authorization": "Bearer azure-s3cret"}):
        for operation in ("chat/completions", "embeddings"):
            status, body = await post(client, path("ada-prod", operation), headers, messages=HELLO, input="x")
            assert status == 401
            assert body["error"]["code"] == "401"
            assert body["error"]["message"].startswith(
                "Access denied due to invalid subscription key or wrong API endpoint.")
    good = {"api-key": "azure-s3cret"}
    status, _ = await post(client, path("gpt4o-prod"), good, messages=HELLO)
    assert status == 200
    # Without an api-version there is no such resource, whatever the key.
    status, body = await post(client, path("gpt4o-prod", version=None), {"api-key": "wrong"}, messages=HELLO)
    assert (status, body) == (404, NOT_FOUND)
    # Keys are checked before deployments; control endpoints need none.
    status, body = await post(client, path("nope"), messages=HELLO)
    assert status == 401
    status, body = await post(client, path("nope"), good, messages=HELLO)
    assert body["error"]["code"] == "DeploymentNotFound"
    assert (await client.get("/_sim/stats")).status == 200


# ------------------------------------------------------------------ faults

async def test_faults_in_azure_shapes(make_client):
    client = await make_client(SimSettings(rate_limit_rate=1.0, retry_after_s=2.5))
    resp = await client.post(path("gpt4o-prod"), json={"messages": HELLO})
    body = await resp.json()
    assert resp.status == 429 and body["error"]["code"] == "429"
    assert body["error"]["message"].startswith(
        f"Requests to the ChatCompletions_Create Operation under Azure OpenAI API version {VERSION} "
        "have exceeded token rate limit")
    assert "Please retry after 3 seconds." in body["error"]["message"]
    assert resp.headers["Retry-After"] == "3" and resp.headers["retry-after-ms"] == "2500"
    status, body = await post(client, path("ada-prod", "embeddings", "2024-06-01"), input="x")
    assert status == 429 and "Embeddings_Create Operation under Azure OpenAI API version 2024-06-01" in (
        body["error"]["message"])

    await client.put("/_sim/config", json={"rate_limit_rate": 0, "error_rate": 1.0, "error_status": 400})
    status, body = await chat(client)
    assert status == 400
    error = body["error"]
    assert error["code"] == "content_filter" and error["param"] == "prompt" and error["status"] == 400
    assert error["innererror"]["code"] == "ResponsibleAIPolicyViolation"
    assert any(v["filtered"] for v in error["innererror"]["content_filter_result"].values())

    await client.put("/_sim/config", json={"error_status": 500})
    status, body = await post(client, path("gpt4o-prod", "completions"), prompt="x")
    assert status == 500 and body["error"]["type"] == "server_error"

    await client.put("/_sim/config", json={"error_rate": 0, "outage": "503"})
    status, body = await chat(client)
    assert status == 503 and body["error"]["type"] == "server_error"
    await client.put("/_sim/config", json={"outage": "reset"})
    with pytest.raises(aiohttp.ClientConnectionError):
        await chat(client)
    await client.put("/_sim/config", json={"outage": "none"})
    assert (await chat(client))[0] == 200

    stats = await (await client.get("/_sim/stats")).json()
    assert stats["by_status"] == {"429": 2, "400": 1, "500": 1, "503": 1, "reset": 1, "200": 1}
    assert stats["requests"] == 7


async def test_seeded_faults_line_up_with_the_openai_wire(make_client):
    settings = SimSettings(error_rate=0.3, rate_limit_rate=0.2, seed=7)
    azure, plain = await make_client(settings), await make_client(settings, wire="openai")
    a = [(await chat(azure))[0] for _ in range(20)]
    o = [(await post(plain, "/v1/chat/completions", model="gpt4o-prod", messages=HELLO))[0] for _ in range(20)]
    assert a == o and {429, 500, 200} <= set(a)


# --------------------------------------------------------------- streaming

async def test_streams_open_with_prompt_annotations(make_client):
    azure, plain = await make_client(), await make_client(wire="openai")
    request = {"messages": HELLO, "stream": True, "stream_options": {"include_usage": True}}
    resp = await azure.post(path("gpt4o-prod"), json=request)
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
    events = sse_events(await resp.text())
    assert events[0] == PROMPT_ANNOTATIONS
    resp = await plain.post("/v1/chat/completions", json={**request, "model": "gpt4o-prod"})
    assert without_ids(events[1:]) == without_ids(sse_events(await resp.text()))
    assert events[-2]["usage"]["completion_tokens"] > 0 and events[-1] == "[DONE]"

    # A streamed tool call and a legacy completion stream open the same way.
    resp = await azure.post(path("gpt4o-prod"), json={**request, "tools": [WEATHER_TOOL],
                                                      "tool_choice": "required"})
    events = sse_events(await resp.text())
    assert events[0] == PROMPT_ANNOTATIONS
    assert events[2]["choices"][0]["delta"]["tool_calls"][0]["function"]["name"] == "get_weather"
    resp = await azure.post(path("gpt4o-prod", "completions"), json={"prompt": "Once", "stream": True})
    events = sse_events(await resp.text())
    assert events[0] == PROMPT_ANNOTATIONS and events[1]["object"] == "text_completion"

    stats = await (await azure.get("/_sim/stats")).json()
    assert stats["stream_requests"] == 3


async def test_stalled_stream_still_sends_its_prelude(make_client):
    client = await make_client(SimSettings(stall_after_chunks=0))
    resp = await client.post(path("gpt4o-prod"), json={"messages": HELLO, "stream": True})
    assert resp.status == 200
    first = await resp.content.readuntil(b"\n\n")
    assert json.loads(first[len(b"data: "):]) == PROMPT_ANNOTATIONS
    resp.close()


async def test_the_openai_sdks_azure_client(make_client):
    client = await make_client(api_key="azure-s3cret")
    sdk = openai.AsyncAzureOpenAI(azure_endpoint=str(client.make_url("/")).rstrip("/"),
                                  api_key="azure-s3cret", api_version=VERSION, max_retries=0)
    whole = await sdk.chat.completions.create(model="gpt4o-prod", messages=HELLO)
    stream = await sdk.chat.completions.create(model="gpt4o-prod", messages=HELLO, stream=True,
                                               stream_options={"include_usage": True})
    chunks = [chunk async for chunk in stream]
    assert chunks[0].choices == [] and chunks[0].prompt_filter_results  # the SDK keeps extra fields
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    vectors = await sdk.embeddings.create(model="ada-prod", input=["x", "y"])
    assert len(vectors.data) == 2 and len(vectors.data[0].embedding) == 1536
    with pytest.raises(openai.NotFoundError):
        await sdk.chat.completions.create(model="missing", messages=HELLO)
    wrong = openai.AsyncAzureOpenAI(azure_endpoint=str(client.make_url("/")).rstrip("/"),
                                    api_key="nope", api_version=VERSION, max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        await wrong.chat.completions.create(model="gpt4o-prod", messages=HELLO)
    await sdk.close()
    await wrong.close()


# -------------------------------------------------------------------- CLI

def test_wire_flag():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert parser.parse_args(["--wire", "azure"]).wire == "azure"
    assert parser.parse_args(["--wire", "AZURE"]).wire == "azure"
