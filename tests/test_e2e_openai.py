"""The official `openai` SDK against a real control plane + proxy + simulator."""

from __future__ import annotations

import json

import aiohttp
import openai
import pytest

from tests.conftest import API_KEY, System
from tests.harness import eventually

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer"},
            },
            "required": ["city", "unit"],
        },
    },
}


@pytest.fixture
def client(system: System) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=system.base_url(), api_key=API_KEY, max_retries=0)


async def test_chat_completion_through_route(client: openai.AsyncOpenAI) -> None:
    raw = await client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "Say hello"}]
    )
    completion = raw.parse()
    assert completion.choices[0].message.content
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.prompt_tokens > 0
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
    # `auto` tries demo-medium first; the headers say what served the call.
    assert raw.headers["x-megarouter-model"] == "demo-medium"
    assert raw.headers["x-megarouter-endpoint"] == "medium-sim"
    assert raw.headers["x-megarouter-attempts"] == "1"
    assert raw.headers["x-megarouter-route"] == "auto"
    # demo-medium costs $2.50 / $10 per million input / output tokens.
    usage = completion.usage
    expected = (usage.prompt_tokens * 2.5 + usage.completion_tokens * 10) / 1e6
    assert float(raw.headers["x-megarouter-cost-usd"]) == pytest.approx(expected, abs=1e-8)


async def test_chat_completion_by_model_id(client: openai.AsyncOpenAI) -> None:
    raw = await client.chat.completions.with_raw_response.create(
        model="demo-small", messages=[{"role": "user", "content": "hi"}], max_tokens=3
    )
    completion = raw.parse()
    assert raw.headers["x-megarouter-model"] == "demo-small"
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None and completion.usage.completion_tokens == 3


async def test_streaming_reassembles_content_and_reports_usage(client: openai.AsyncOpenAI) -> None:
    messages = [{"role": "user", "content": "Tell me something"}]
    whole = await client.chat.completions.create(model="chat", messages=messages)
    stream = await client.chat.completions.create(
        model="chat", messages=messages, stream=True, stream_options={"include_usage": True}
    )
    parts, finish_reasons, usage = [], [], None
    async for chunk in stream:
        for choice in chunk.choices:
            parts.append(choice.delta.content or "")
            if choice.finish_reason:
                finish_reasons.append(choice.finish_reason)
        if chunk.usage is not None:
            usage = chunk.usage
    assert "".join(parts) == whole.choices[0].message.content
    assert finish_reasons == ["stop"]
    assert usage is not None and usage.completion_tokens == whole.usage.completion_tokens


async def test_stream_ends_with_done_marker(system: System) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(
            system.base_url() + "/chat/completions",
            headers={"Authorization": f"Bearer {API_KEY}"},
            json={"model": "chat", "messages": [{"role": "user", "content": "x"}], "stream": True},
        ) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/event-stream")
            body = (await response.read()).decode()
    events = [line for line in body.split("\n") if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    assert all(json.loads(e[6:])["object"] == "chat.completion.chunk" for e in events[:-1])


async def test_tool_call_round_trip(client: openai.AsyncOpenAI) -> None:
    messages: list[dict] = [{"role": "user", "content": "What's the weather in Paris?"}]
    first = await client.chat.completions.create(
        model="auto", messages=messages, tools=[WEATHER_TOOL], tool_choice="required"
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather"
    arguments = json.loads(call.function.arguments)
    assert isinstance(arguments["city"], str)
    assert arguments["unit"] in ("celsius", "fahrenheit")

    messages.append(choice.message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": '{"temp_c": 18}'})
    second = await client.chat.completions.create(model="auto", messages=messages, tools=[WEATHER_TOOL])
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content


async def test_streamed_tool_call(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model="auto",
        messages=[{"role": "user", "content": "weather?"}],
        tools=[WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        stream=True,
    )
    name, arguments = "", ""
    async for chunk in stream:
        for choice in chunk.choices:
            for delta in choice.delta.tool_calls or []:
                name += delta.function.name or ""
                arguments += delta.function.arguments or ""
    assert name == "get_weather"
    assert set(json.loads(arguments)) >= {"city", "unit"}


async def test_response_format_and_multimodal_pass_through(client: openai.AsyncOpenAI) -> None:
    completion = await client.chat.completions.create(
        model="auto",
        response_format={"type": "json_object"},
        messages=[{
            "role": "user",
            "content": [
                {"type": "text", "text": "Describe this image as JSON"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
            ],
        }],
    )
    assert isinstance(json.loads(completion.choices[0].message.content), dict)
    # The image part reached the provider: the simulator counts it as tokens.
    assert completion.usage.prompt_tokens >= 85


async def test_models_list_shows_routes_and_models(client: openai.AsyncOpenAI) -> None:
    ids = {model.id async for model in client.models.list()}
    assert ids == {"auto", "chat", "demo-small", "demo-medium"}


async def test_wrong_key_is_authentication_error(system: System) -> None:
    bad = openai.AsyncOpenAI(base_url=system.base_url(), api_key="sk-wrong-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught:
        await bad.chat.completions.create(model="auto", messages=[{"role": "user", "content": "x"}])
    assert caught.value.code == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        await bad.models.list()


async def test_unknown_model_is_not_found(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        await client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    assert caught.value.code == "model_not_found"
    assert "no-such-model" in caught.value.message


async def test_malformed_fields_are_bad_request_naming_the_field(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(model="auto", messages="not a list")  # type: ignore[arg-type]
    assert caught.value.param == "messages"
    with pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "x"}], max_tokens=-5
        )
    assert caught.value.param == "max_tokens"


async def test_malformed_json_and_oversized_bodies(system: System) -> None:
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as session:
        async with session.post(system.base_url() + "/chat/completions", data=b"{not json", headers=headers) as r:
            assert r.status == 400
            error = (await r.json())["error"]
            assert error["type"] == "invalid_request_error" and "JSON" in error["message"]
        huge = b'{"model": "auto", "messages": [{"role": "user", "content": "' + b"a" * (40 << 20) + b'"}]}'
        async with session.post(system.base_url() + "/chat/completions", data=huge, headers=headers) as r:
            assert r.status == 413
            assert (await r.json())["error"]["code"] == "request_too_large"
        async with session.get(system.base_url() + "/no/such/path", headers=headers) as r:
            assert r.status == 404
            assert "error" in await r.json()


async def test_upstream_caller_error_is_passed_back_not_retried(system: System) -> None:
    """A 400 from the provider is the caller's fault: one attempt, same status."""
    before = (await system.sim_stats())["chat_requests"]
    client = openai.AsyncOpenAI(base_url=system.base_url(), api_key=API_KEY, max_retries=0)
    await system.set_sim(error_rate=1.0, error_status=400)
    try:
        with pytest.raises(openai.BadRequestError):
            await client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "x"}])
    finally:
        await system.set_sim(error_rate=0.0, error_status=500)
    assert (await system.sim_stats())["chat_requests"] - before == 1


async def test_health_ready_and_metrics(system: System) -> None:
    root = system.base_url().removesuffix("/v1")
    async with aiohttp.ClientSession() as session:
        async with session.get(root + "/healthz") as r:
            assert r.status == 200
        async with session.get(root + "/readyz") as r:
            assert r.status == 200 and (await r.json())["table_version"] > 0
        async with session.get(root + "/metrics") as r:
            text = await r.text()
    assert "megarouter_upstream_requests_total" in text
    assert 'megarouter_requests_total{api="chat",status="200"}' in text


async def test_proxy_reports_endpoint_stats_to_control_plane(system: System, client: openai.AsyncOpenAI) -> None:
    await client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "x"}])
    url = f"http://127.0.0.1:{system.controlplane.ready['metrics_port']}/metrics"

    async def reported() -> bool:
        async with aiohttp.ClientSession() as session:
            async with session.get(url) as response:
                text = await response.text()
        return 'megarouter_cp_fleet_endpoint_requests_total{endpoint="small-sim"}' in text

    await eventually(reported, what="the proxy's telemetry report for small-sim")


async def test_expired_key_is_refused(system: System) -> None:
    import time

    import grpc

    from megarouter.v1 import admin_pb2
    from tests.harness import eventually

    secret = "sk-mr-expiring-key-0123456789"
    # A key that never works is refused at creation, naming the field.
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await system.admin.CreateApiKey(admin_pb2.CreateApiKeyRequest(
            name="expiring", secret=secret, expires_at_unix_ms=int(time.time() * 1000) - 1))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "expires_at_unix_ms" in refused.value.details()
    created = await system.admin.CreateApiKey(admin_pb2.CreateApiKeyRequest(
        name="expiring", secret=secret, expires_at_unix_ms=int(time.time() * 1000) + 1500))
    await system.wait_proxy_version(created.revision)
    expiring = openai.AsyncOpenAI(base_url=system.base_url(), api_key=secret, max_retries=0)
    await expiring.chat.completions.create(model="chat", messages=[{"role": "user", "content": "x"}])
    codes = []

    async def refused_once_expired() -> bool:
        try:
            await expiring.chat.completions.create(model="chat", messages=[{"role": "user", "content": "x"}])
        except openai.AuthenticationError as exc:
            codes.append(exc.code)
            return True
        return False
    await eventually(refused_once_expired, timeout=10, interval=0.1, what="the key to expire")
    assert codes == ["expired_api_key"]
    await system.admin.DeleteApiKey(admin_pb2.DeleteRequest(name="expiring"))
