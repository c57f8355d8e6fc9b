"""What a client sees when the provider fails: OpenAI-shaped 502/504, and
streams that end in an error event instead of a clean, truncated answer."""

from __future__ import annotations

import openai
import pytest

from megarouter.v1 import admin_pb2, routing_pb2
from tests.conftest import API_KEY, System


def _client(system: System) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=system.base_url(), api_key=API_KEY, max_retries=0)


async def _fast_timeouts(system: System, per_try: float, total: float) -> None:
    route = await system.admin.GetRoute(admin_pb2.GetRequest(name="chat"))
    route.retry.CopyFrom(routing_pb2.RetryPolicy(max_attempts=2, per_try_timeout_s=per_try, total_timeout_s=total))
    put = await system.admin.PutRoute(route)
    await system.wait_proxy_version(put.revision)


async def test_provider_outage_is_502_after_the_route_attempts(fresh_system: System) -> None:
    await fresh_system.set_sim(outage="503")
    before = (await fresh_system.sim_stats())["requests"]
    with pytest.raises(openai.InternalServerError) as caught:
        await _client(fresh_system).chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "x"}]
        )
    assert caught.value.status_code == 502
    assert caught.value.code == "upstream_error"
    # `auto` has two tiers (demo-medium, then demo-small): both were tried.
    assert (await fresh_system.sim_stats())["requests"] - before == 2


async def test_connection_reset_fails_over_then_502(fresh_system: System) -> None:
    await fresh_system.set_sim(outage="reset")
    with pytest.raises(openai.InternalServerError) as caught:
        await _client(fresh_system).chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "x"}]
        )
    assert caught.value.status_code == 502
    assert "connection" in caught.value.message


async def test_slow_provider_is_504(fresh_system: System) -> None:
    await _fast_timeouts(fresh_system, per_try=0.3, total=1.0)
    await fresh_system.set_sim(latency_ms=3000)
    with pytest.raises(openai.APIStatusError) as caught:
        await _client(fresh_system).chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "x"}]
        )
    assert caught.value.status_code == 504
    assert caught.value.code == "upstream_timeout"


async def test_stream_stalling_after_first_chunk_ends_with_error_event(fresh_system: System) -> None:
    await _fast_timeouts(fresh_system, per_try=0.5, total=5.0)
    await fresh_system.set_sim(stall_after_chunks=3)
    stream = await _client(fresh_system).chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "x"}], stream=True
    )
    received = []
    with pytest.raises(openai.APIError) as caught:
        async for chunk in stream:
            received.extend(choice.delta.content or "" for choice in chunk.choices)
    assert "incomplete" in caught.value.message
    assert received  # the client had content before the stall: no failover possible


async def test_rate_limited_everywhere_is_429_with_retry_after(fresh_system: System) -> None:
    await fresh_system.set_sim(rate_limit_rate=1.0, retry_after_s=7)
    before = (await fresh_system.sim_stats())["requests"]
    with pytest.raises(openai.RateLimitError) as caught:
        await _client(fresh_system).chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "x"}]
        )
    # Both tiers were tried; every candidate being rate-limited is a 429 for
    # the caller too, with the provider's Retry-After.
    assert (await fresh_system.sim_stats())["requests"] - before == 2
    assert caught.value.response.headers["Retry-After"] == "7"
    assert caught.value.code == "rate_limit_exceeded"
