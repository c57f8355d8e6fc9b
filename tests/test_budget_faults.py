"""Budgets under unlucky conditions, with real processes: requests longer than the lease
TTL, a proxy killed with spend unreported, the control plane gone, and a rate limit
across a calendar-minute edge.

The control plane runs with a 6 s lease TTL (production: 30 s) so the TTL's effects fit in
a test; the proxies take their heartbeat and safety margin from the TTL the ledger grants."""

from __future__ import annotations

import asyncio
import math
import signal
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest

from megarouter.v1 import admin_pb2, routing_pb2
from tests.conftest import ORG_TREE, System, build_system, start_sim
from tests.harness import eventually, restart

KEY = "sk-mr-budget-faults-0123456789"
TTL_S = 6.0
SLOW_S = 2.5 * TTL_S
SLOW_MODEL = """
---
provider: {name: slow-sim, kind: openai, base_url: 'http://127.0.0.1:SLOW_PORT/v1'}
---
model: {name: slow-model, input_price_per_mtok: 1, output_price_per_mtok: 1, context_window: 128000,
        quality_tier: 3, capabilities: {streaming: true}}
---
endpoint: {name: slow-model-sim, model: slow-model, provider: slow-sim, upstream_model: demo-small}
"""


async def _seed_key(system: System) -> int:
    created = await system.admin.CreateApiKey(admin_pb2.CreateApiKeyRequest(name="k", node="team-a", secret=KEY))
    return created.revision


@pytest.fixture
async def fleet(tmp_path) -> AsyncIterator[System]:
    slow = await start_sim(tmp_path, "slow-sim", "--latency-ms", str(int(SLOW_S * 1000)))
    try:
        system = await build_system(
            tmp_path, proxies=3, manifest_extra=ORG_TREE + SLOW_MODEL.replace("SLOW_PORT", str(slow.port)),
            seed=_seed_key, controlplane_flags=("--budget-lease-ttl-s", str(TTL_S)))
    except BaseException:
        await slow.stop()
        raise
    system.sims.append(slow)
    try:
        yield system
    finally:
        await system.close()


async def _put_budget(system: System, **fields) -> None:
    put = await system.admin.PutBudget(routing_pb2.Budget(node="team-a", action="pause", **fields))
    for index in range(len(system.proxies)):
        if system.proxies[index].running:
            await system.wait_proxy_version(put.revision, index)


async def _chat(session: aiohttp.ClientSession, url: str, model: str = "chat") -> tuple[int, dict, dict]:
    async with session.post(url + "/chat/completions", headers={"Authorization": f"Bearer {KEY}"},
                            json={"model": model, "max_tokens": 8,
                                  "messages": [{"role": "user", "content": "hi"}]}) as response:
        return response.status, dict(response.headers), await response.json()


async def _status(system: System, name: str) -> admin_pb2.BudgetStatus:
    statuses = await system.admin.ListBudgetStatus(admin_pb2.ListRequest())
    return next(status for status in statuses.items if status.budget == name)


async def test_requests_longer_than_the_lease_ttl_keep_their_lease(fleet: System) -> None:
    """15 requests of 45 s plus fast traffic elsewhere spent 135% of a budget: the ledger
    reclaimed the long requests' lease after 30 s of silence and granted it again. Now the
    proxy heartbeats while it holds reservations, and the limit holds."""
    limit = 12
    await _put_budget(fleet, name="team-a-requests", window="daily", unit="requests", limit=limit)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=4 * SLOW_S)) as session:
        slow = [asyncio.create_task(_chat(session, fleet.base_url(0), "slow-model")) for _ in range(8)]

        async def reserved() -> bool:
            return (await _status(fleet, "team-a-requests")).leased >= 8
        await eventually(reserved, what="the slow requests to hold their reservations")
        fast: list[int] = []
        started = time.monotonic()
        while time.monotonic() - started < SLOW_S + 1:   # past two TTLs, while the slow ones run
            for index in (1, 2):
                fast.append((await _chat(session, fleet.base_url(index)))[0])
            await asyncio.sleep(0.2)
        slow_statuses = [status for status, _, _ in await asyncio.gather(*slow)]
    served = slow_statuses.count(200) + fast.count(200)
    assert slow_statuses == [200] * 8
    assert served == limit, (slow_statuses, fast)
    assert set(fast) == {200, 429}
    status = await _status(fleet, "team-a-requests")
    assert status.spent <= limit
    # And the live proxy's lease was never reclaimed: it is reclaimed only once a proxy is gone.
    assert await _reclaimed(fleet, "team-a-requests") == 0


async def _reclaimed(system: System, budget: str) -> float:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{system.controlplane.ready['metrics_port']}/metrics") as response:
            text = await response.text()
    prefix = f'megarouter_budget_reclaimed_total{{budget="{budget}"}} '
    return sum(float(line.removeprefix(prefix)) for line in text.splitlines() if line.startswith(prefix))


async def test_a_killed_proxys_unreported_spend_is_counted(fleet: System) -> None:
    """SIGKILL loses what the proxy had not yet settled. The ledger counts what it had leased
    as spent once its lease times out, so the ledger never shows less than clients paid."""
    await _put_budget(fleet, name="team-a-usd", window="daily", unit="usd", limit=1.0)
    observed = 0.0
    served = 0
    async with aiohttp.ClientSession() as session:
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            batch = await asyncio.gather(*(_chat(session, fleet.base_url(0)) for _ in range(8)))
            for status, headers, _ in batch:
                if status == 200:
                    observed += float(headers["x-megarouter-cost-usd"])
                    served += 1
        await fleet.proxies[0].stop(signal.SIGKILL)
    assert served > 0

    async def reclaimed() -> bool:
        status = await _status(fleet, "team-a-usd")
        return status.leased == 0
    await eventually(reclaimed, timeout=4 * TTL_S, what="the dead proxy's lease to be reclaimed")
    status = await _status(fleet, "team-a-usd")
    assert status.spent >= observed - 1e-9, (status.spent, observed)
    assert await _reclaimed(fleet, "team-a-usd") > 0
    # The over-count is bounded by the unused part of the dead proxy's lease.
    assert status.spent <= observed + 0.05


async def test_usage_analytics_of_a_killed_proxy_lose_at_most_its_last_interval(fleet: System) -> None:
    """Usage rides the telemetry stream every interval (1 s here, default 2 s): a SIGKILL loses
    what was counted since the last report, and nothing older."""
    sent = 0
    async with aiohttp.ClientSession() as session:
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            sent += sum(status == 200 for status, _, _ in await asyncio.gather(
                *(_chat(session, fleet.base_url(0)) for _ in range(5))))
        rate = sent / 4
        await fleet.proxies[0].stop(signal.SIGKILL)

    async def persisted() -> int:
        usage = await fleet.admin.QueryUsage(admin_pb2.QueryUsageRequest(key="k"))
        return sum(row.requests for row in usage.rows)

    async def settled() -> bool:
        first = await persisted()
        await asyncio.sleep(2.5)  # past the control plane's 2 s flush: nothing more is coming
        return await persisted() == first
    await eventually(settled, timeout=20, what="usage to stop changing")
    lost = sent - await persisted()
    assert 0 <= lost <= math.ceil(rate * 1.5) + 5, (sent, lost, rate)


async def test_the_control_plane_gone_is_a_503_with_a_short_retry_after(fleet: System) -> None:
    """Budgeted requests fail closed when no lease can be had — but said the budget was
    exhausted until midnight (Retry-After: 30628 for a budget 26% used)."""
    await _put_budget(fleet, name="team-a-day", window="daily", unit="requests", limit=40)
    async with aiohttp.ClientSession() as session:
        assert (await _chat(session, fleet.base_url(0)))[0] == 200
        await fleet.controlplane.stop()
        outcomes = []
        for _ in range(3):  # the lease it holds runs out (one request's chunk), then nothing can cover more
            status, headers, body = await _chat(session, fleet.base_url(0))
            outcomes.append((status, body.get("error", {}).get("code"), headers.get("Retry-After")))
        refused = [outcome for outcome in outcomes if outcome[0] != 200]
        assert refused and all(status == 503 and code == "budget_unavailable" and 0 < int(retry) <= 5
                               for status, code, retry in refused), outcomes
        fleet.controlplane = await restart(fleet.controlplane, fleet.tmp / "logs")

        async def served_again() -> bool:
            return (await _chat(session, fleet.base_url(0)))[0] == 200
        await eventually(served_again, timeout=15, what="budgeted requests to be served again")


async def test_a_rate_limit_holds_across_a_calendar_minute_edge(tmp_path) -> None:
    """Calendar minutes let 119 requests through in 60 s under a limit of 60: a burst just
    before :00 and another just after. The ledger's clock is shifted (a test hook) so the
    edge falls two seconds into the test."""
    now = time.time()
    offset = (60 - now % 60) - 2.0   # ledger time = two seconds before the next minute
    system = await build_system(tmp_path, proxies=2, manifest_extra=ORG_TREE, seed=_seed_key,
                                controlplane_env={"MEGAROUTER_TEST_LEDGER_CLOCK_OFFSET_S": f"{offset:.3f}"})
    try:
        limit = 6
        await _put_budget(system, name="team-a-rpm", window="minute", unit="requests", limit=limit)
        started = time.time()
        async with aiohttp.ClientSession() as session:
            before = [await _chat(session, system.base_url(n % 2)) for n in range(limit)]
            assert time.time() - started < 2.0, "the first burst must end before the ledger's minute turns"
            await asyncio.sleep(2.5 - (time.time() - started))  # the calendar minute turns meanwhile
            after = [await _chat(session, system.base_url(n % 2)) for n in range(limit)]
        assert [status for status, _, _ in before] == [200] * limit
        assert all(status == 429 and body["error"]["code"] == "rate_limit_exceeded" for status, _, body in after)
        retry_after = [int(headers["Retry-After"]) for _, headers, _ in after]
        assert all(50 <= seconds <= 62 for seconds in retry_after), retry_after
    finally:
        await system.close()
