"""OpenTelemetry traces, exported over OTLP/HTTP to a receiver this test runs: span names,
parent/child links and attributes for a served request, a failover and an admin call; the
client's W3C traceparent continued and propagated upstream; a canary sent in prompts in no
span; and a collector that is down neither slows nor fails requests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import openai
import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from megarouter.admin_client import admin_channel
from megarouter.v1 import admin_pb2, admin_pb2_grpc
from tests.conftest import API_KEY, System, build_system, degrading_route_manifest, start_sim
from tests.harness import eventually

CANARY = "CANARY-tracing-5d1e"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


@dataclass
class Receiver:
    port: int = 0
    raw: list[bytes] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/traces"

    def spans(self) -> list[dict]:
        out = []
        for body in self.raw:
            request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
            for resource_spans in request.resource_spans:
                service = next((a.value.string_value for a in resource_spans.resource.attributes
                                if a.key == "service.name"), "")
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        out.append({"service": service, "name": span.name, "kind": span.kind,
                                    "trace_id": span.trace_id.hex(), "span_id": span.span_id.hex(),
                                    "parent": span.parent_span_id.hex(), "status": span.status.code,
                                    "attributes": {a.key: _value(a.value) for a in span.attributes}})
        return out


def _value(value):
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


@pytest.fixture(scope="module")
async def receiver() -> AsyncIterator[Receiver]:
    collected = Receiver()

    async def traces(request: web.Request) -> web.Response:
        collected.raw.append(await request.read())
        return web.Response(body=trace_service_pb2.ExportTraceServiceResponse().SerializeToString(),
                            content_type="application/x-protobuf")
    app = web.Application()
    app.router.add_post("/v1/traces", traces)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    collected.port = runner.addresses[0][1]
    try:
        yield collected
    finally:
        await runner.cleanup()


@pytest.fixture(scope="module")
async def traced(tmp_path_factory, receiver: Receiver) -> AsyncIterator[System]:
    tmp = tmp_path_factory.mktemp("tracing")
    flaky = await start_sim(tmp, "flaky", "--error-rate", "1.0", "--error-status", "503")
    system = None
    try:
        system = await build_system(tmp, proxies=0, manifest_extra=degrading_route_manifest(flaky.port),
                                    controlplane_flags=("--otel-endpoint", receiver.url))
        system.sims.append(flaky)
        await system.start_proxy("--otel-endpoint", receiver.url)
        await system.wait_proxy_version(1)
        yield system
    finally:
        if system is not None:
            await system.close()
        else:
            await flaky.stop()


async def _spans_where(receiver: Receiver, predicate, count: int = 1) -> list[dict]:
    async def arrived() -> bool:
        return len([s for s in receiver.spans() if predicate(s)]) >= count
    await eventually(arrived, timeout=20, what="the spans to be exported")  # batched, every second
    return [s for s in receiver.spans() if predicate(s)]


async def test_a_request_is_one_server_span_with_a_client_span_per_attempt(traced, receiver) -> None:
    client = openai.AsyncOpenAI(base_url=traced.base_url(), api_key=API_KEY, max_retries=0)
    await client.chat.completions.create(model="degrade", messages=[{"role": "user", "content": f"hi {CANARY}"}],
                                         extra_headers={"traceparent": TRACEPARENT})
    servers = await _spans_where(receiver, lambda s: s["trace_id"] == TRACE_ID and s["name"] == "chat degrade")
    server = servers[0]
    assert server["service"] == "megarouter-proxy" and server["parent"] == "00f067aa0ba902b7"  # the caller's
    attributes = server["attributes"]
    assert attributes["gen_ai.operation.name"] == "chat" and attributes["gen_ai.request.model"] == "degrade"
    assert attributes["gen_ai.response.model"] == "demo-small" and attributes["gen_ai.usage.output_tokens"] > 0
    assert attributes["megarouter.route"] == "degrade" and attributes["megarouter.attempts"] == 2
    assert attributes["megarouter.endpoint"] == "small-sim" and attributes["http.response.status_code"] == 200
    assert attributes["megarouter.cost_usd"] > 0
    attempts = await _spans_where(receiver, lambda s: s["parent"] == server["span_id"], count=2)
    by_attempt = {s["attributes"]["megarouter.attempt"]: s for s in attempts}
    first, second = by_attempt[1], by_attempt[2]
    assert first["attributes"]["megarouter.endpoint"] == "large-flaky"
    assert first["attributes"]["megarouter.failover_reason"] == "retryable" and first["status"] == 2  # ERROR
    assert first["attributes"]["error.type"] == "retryable"
    assert second["attributes"]["megarouter.endpoint"] == "small-sim" and second["status"] != 2
    assert second["attributes"]["gen_ai.provider.name"] == "openai"
    assert all(s["trace_id"] == TRACE_ID for s in attempts)


async def test_traceparent_is_propagated_upstream(traced, tmp_path) -> None:
    """The simulator records nothing of headers; a tiny upstream of the test's own does."""
    seen: list[str] = []

    async def chat(request: web.Request) -> web.Response:
        seen.append(request.headers.get("traceparent", ""))
        return web.json_response({"id": "c", "object": "chat.completion", "created": 1, "model": "x", "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})
    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        revision = await traced.apply(f"""
provider: {{name: echo, kind: openai, base_url: 'http://127.0.0.1:{port}/v1'}}
---
model: {{name: echo-model, input_price_per_mtok: 1, output_price_per_mtok: 1, context_window: 8000,
        capabilities: {{streaming: true}}}}
---
endpoint: {{name: echo-endpoint, model: echo-model, provider: echo, upstream_model: x}}
""")
        await traced.wait_proxy_version(revision)
        client = openai.AsyncOpenAI(base_url=traced.base_url(), api_key=API_KEY, max_retries=0)
        await client.chat.completions.create(model="echo-model", messages=[{"role": "user", "content": "hi"}],
                                             extra_headers={"traceparent": TRACEPARENT})
        assert len(seen) == 1 and seen[0].startswith(f"00-{TRACE_ID}-") and seen[0] != TRACEPARENT  # our span's
    finally:
        await runner.cleanup()


async def test_admin_calls_are_traced_by_the_control_plane(traced, receiver) -> None:
    async with admin_channel(traced.admin_address) as channel:
        await admin_pb2_grpc.AdminStub(channel).ListRoutes(admin_pb2.ListRequest())
    spans = await _spans_where(receiver, lambda s: s["name"] == "megarouter.v1.Admin/ListRoutes")
    assert spans[0]["service"] == "megarouter-controlplane"
    assert spans[0]["attributes"]["rpc.method"] == "ListRoutes" and spans[0]["attributes"]["rpc.grpc.status_code"] == 0


async def test_no_span_carries_content(traced, receiver) -> None:
    client = openai.AsyncOpenAI(base_url=traced.base_url(), api_key=API_KEY, max_retries=0)
    stream = await client.chat.completions.create(model="chat", stream=True,
                                                  messages=[{"role": "user", "content": f"story {CANARY}"}])
    async for _chunk in stream:
        pass
    await _spans_where(receiver, lambda s: s["name"] == "chat chat")
    exported = b"".join(receiver.raw)
    assert CANARY.encode() not in exported and API_KEY.encode() not in exported
    assert not [s for s in receiver.spans() if any(k.startswith(("gen_ai.input", "gen_ai.output", "gen_ai.prompt",
                                                                  "gen_ai.completion")) for k in s["attributes"])]


async def test_a_collector_that_is_down_fails_no_request(tmp_path) -> None:
    """Export runs in the SDK's own thread with a bounded queue; what it costs when the
    collector is slow or gone is measured in bench/, not here."""
    dead = "http://127.0.0.1:9/v1/traces"  # the discard port: nothing listens
    system = await build_system(tmp_path, proxies=0, controlplane_flags=("--otel-endpoint", dead))
    try:
        await system.start_proxy("--otel-endpoint", dead)
        await system.wait_proxy_version(1)
        client = openai.AsyncOpenAI(base_url=system.base_url(), api_key=API_KEY, max_retries=0)
        replies = [await client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}])
                   for _ in range(20)]
        assert all(reply.choices[0].message.content for reply in replies)
        async with admin_channel(system.admin_address) as channel:
            assert (await admin_pb2_grpc.AdminStub(channel).ListRoutes(admin_pb2.ListRequest())).items
    finally:
        await system.close()

