"""The request log (`--request-log`): one JSON line per request with the fields an audit
pipeline needs — for success, failover and each error class — that agree with usage
analytics, rotate by size, and never carry content (a canary sent in prompts is in no line)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import openai
import pytest

from megarouter.v1 import admin_pb2, routing_pb2
from tests.conftest import API_KEY, System, build_system, degrading_route_manifest, start_sim
from tests.harness import eventually

CANARY = "CANARY-request-log-3b9f"
SECRET_B = "sk-mr-test-request-log-budget-000000"
FIELDS = {"time", "proxy", "request_id", "api", "key", "node", "route", "route_kind", "task", "strategy", "stream",
          "status", "model", "endpoint", "provider", "region", "attempts", "failovers", "error_class", "error_code",
          "prompt_tokens", "completion_tokens", "cached_tokens", "cost_usd", "latency_ms", "ttft_ms"}


SLOW_ROUTE = """
---
route: {name: slow, tiers: [{models: [demo-small]}], retry: {max_attempts: 1, per_try_timeout_s: 0.5}}
"""


async def _seed(system: System) -> int:
    await system.admin.CreateApiKey(admin_pb2.CreateApiKeyRequest(name="capped", secret=SECRET_B))
    put = await system.admin.PutBudget(routing_pb2.Budget(name="capped-requests", key="capped", window="minute",
                                                          unit="requests", limit=1, action="pause"))
    return put.revision


@pytest.fixture(scope="module")
async def logged(tmp_path_factory) -> AsyncIterator[tuple[System, Path]]:
    tmp = tmp_path_factory.mktemp("request-log")
    flaky = await start_sim(tmp, "flaky", "--error-rate", "1.0", "--error-status", "503")
    system = None
    try:
        system = await build_system(tmp, proxies=0, manifest_extra=degrading_route_manifest(flaky.port) + SLOW_ROUTE,
                                    seed=_seed)
        system.sims.append(flaky)
        log = tmp / "requests.jsonl"
        await system.start_proxy("--request-log", str(log))
        await system.wait_proxy_version(1)
        yield system, log
    finally:
        if system is not None:
            await system.close()
        else:
            await flaky.stop()


async def _lines(log: Path, count: int) -> list[dict]:
    async def written() -> bool:
        return log.exists() and len(log.read_text().splitlines()) >= count
    await eventually(written, what=f"{count} request-log lines")  # written by a background thread
    return [json.loads(line) for line in log.read_text().splitlines()]


async def _line_for(log: Path, request_id: str) -> dict:
    """The line of the request sent with this x-request-id (lines are written by a background
    thread, in no order the test could count on)."""
    async def written() -> bool:
        return log.exists() and f'"request_id":"{request_id}"' in log.read_text()
    await eventually(written, what=f"the request-log line of {request_id}")
    return next(line for line in map(json.loads, log.read_text().splitlines()) if line["request_id"] == request_id)


def _rid(name: str) -> dict[str, str]:
    return {"x-request-id": f"{name}-{uuid.uuid4().hex[:12]}"}


async def test_a_served_request_and_a_stream(logged) -> None:
    system, log = logged
    client = openai.AsyncOpenAI(base_url=system.base_url(), api_key=API_KEY, max_retries=0)
    raw = await client.chat.completions.with_raw_response.create(
        model="chat", messages=[{"role": "user", "content": f"hello {CANARY}"}],
        extra_headers={"x-request-id": "abc-1"})
    line = await _line_for(log, "abc-1")
    assert set(line) == FIELDS
    reply = raw.parse()
    assert raw.headers["x-request-id"] == "abc-1"
    assert line["request_id"] == "abc-1" and line["api"] == "chat" and line["key"] == "test"
    assert (line["route"], line["route_kind"], line["status"], line["error_class"]) == ("chat", "route", 200, "")
    assert (line["model"], line["endpoint"], line["provider"], line["attempts"]) == (
        "demo-small", "small-sim", "sim", 1)
    assert line["prompt_tokens"] == reply.usage.prompt_tokens
    assert line["completion_tokens"] == reply.usage.completion_tokens
    assert line["cost_usd"] == pytest.approx(float(raw.headers["x-megarouter-cost-usd"]), abs=1e-8)
    assert line["latency_ms"] > 0 and line["stream"] is False
    stream = await client.chat.completions.with_raw_response.create(
        model="chat", stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": f"story {CANARY}"}])
    generated = stream.headers["x-request-id"]
    async for _chunk in stream.parse():
        pass
    assert generated.startswith("req_")  # generated when the client sent none
    line = await _line_for(log, generated)
    assert line["stream"] is True and line["ttft_ms"] is not None and line["ttft_ms"] <= line["latency_ms"]


async def test_failover_is_recorded_attempt_by_attempt(logged) -> None:
    system, log = logged
    client = openai.AsyncOpenAI(base_url=system.base_url(), api_key=API_KEY, max_retries=0)
    headers = _rid("failover")
    await client.chat.completions.create(model="degrade", messages=[{"role": "user", "content": CANARY}],
                                         extra_headers=headers)
    line = await _line_for(log, headers["x-request-id"])
    assert line["status"] == 200 and line["endpoint"] == "small-sim" and line["attempts"] == 2
    assert line["failovers"] == [{"endpoint": "large-flaky", "error_class": "retryable"}]


@pytest.mark.parametrize(("case", "status", "error_class"), [
    ("bad-request", 400, "invalid_request"), ("unknown-model", 404, "invalid_request"),
    ("rate-limited", 429, "rate_limited"), ("timeout", 504, "timeout"), ("budget", 429, "budget"),
])
async def test_each_error_class_is_recorded(logged, case: str, status: int, error_class: str) -> None:
    system, log = logged
    client = openai.AsyncOpenAI(base_url=system.base_url(), api_key=API_KEY, max_retries=0)
    messages = [{"role": "user", "content": CANARY}]
    headers = _rid(case)
    try:
        if case == "bad-request":
            await client.chat.completions.create(model="chat", messages=[], extra_headers=headers)
        elif case == "unknown-model":
            await client.chat.completions.create(model="no-such-model", messages=messages, extra_headers=headers)
        elif case == "rate-limited":
            await system.set_sim(0, rate_limit_rate=1.0)
            try:
                await client.chat.completions.create(model="chat", messages=messages, extra_headers=headers)
            finally:
                await system.set_sim(0, rate_limit_rate=0.0)
        elif case == "timeout":
            await system.set_sim(0, latency_ms=1500)
            try:
                await client.chat.completions.create(model="slow", messages=messages, extra_headers=headers)
            finally:
                await system.set_sim(0, latency_ms=0)
        else:
            capped = openai.AsyncOpenAI(base_url=system.base_url(), api_key=SECRET_B, max_retries=0)
            try:  # the minute's one request (refused already if an earlier run of this test took it)
                await capped.chat.completions.create(model="chat", messages=messages)
            except openai.RateLimitError:
                pass
            await capped.chat.completions.create(model="chat", messages=messages, extra_headers=headers)
    except openai.APIStatusError as exc:
        assert exc.status_code == status
    else:
        pytest.fail("the request succeeded")
    line = await _line_for(log, headers["x-request-id"])
    assert (line["status"], line["error_class"]) == (status, error_class), line
    assert line["error_code"]


async def test_the_log_agrees_with_usage_and_never_holds_content(logged) -> None:
    system, log = logged

    async def agree() -> bool:  # both settle a moment after the requests: the log's thread, the usage flush
        lines = [line for line in map(json.loads, log.read_text().splitlines()) if line["key"] == "test"]
        rows = (await system.admin.QueryUsage(admin_pb2.QueryUsageRequest(key="test"))).rows
        return bool(rows) and bool(lines) and (rows[0].requests, rows[0].prompt_tokens, rows[0].completion_tokens) \
            == (len(lines), sum(x["prompt_tokens"] for x in lines), sum(x["completion_tokens"] for x in lines))
    await eventually(agree, timeout=20, what="the request log and usage to agree")
    text = log.read_text()
    assert CANARY not in text and API_KEY not in text
    for service in [*system.proxies, system.controlplane, *system.sims]:
        assert CANARY not in service.log_path.read_text(), service.name


async def test_the_log_file_rotates_by_size(tmp_path, logged) -> None:
    system, _ = logged
    log = tmp_path / "small.jsonl"
    proxy = await system.start_proxy("--request-log", str(log), "--request-log-max-bytes", "2048",
                                     "--request-log-backups", "2")
    index = len(system.proxies) - 1
    await system.wait_proxy_version(1, index)
    client = openai.AsyncOpenAI(base_url=system.base_url(index), api_key=API_KEY, max_retries=0)
    for _ in range(12):
        await client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}])

    async def rotated() -> bool:
        return (tmp_path / "small.jsonl.1").exists()
    await eventually(rotated, what="the request log to rotate")
    files = sorted(tmp_path.glob("small.jsonl*"))
    assert len(files) <= 3 and all(f.stat().st_size <= 2048 + 1024 for f in files)
    for file in files:
        for line in file.read_text().splitlines():
            assert set(json.loads(line)) == FIELDS
    await proxy.stop()
    system.proxies.remove(proxy)
