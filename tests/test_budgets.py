"""Budgets: the ledger's windows and leases, and fleet-wide enforcement
across three proxies under concurrency, with a documented overshoot bound."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import aiohttp
import openai
import pytest

from controlplane.budgets import BudgetLedger, window_of
from controlplane.repository import BUDGETS
from controlplane.store import open_store
from megarouter.resources import Budget
from megarouter.v1 import admin_pb2, budgets_pb2, routing_pb2
from tests.conftest import ORG_TREE, System, build_system
from tests.harness import eventually, restart

KEY_SECRET = "sk-mr-budget-key-0123456789"
LIMIT_USD = 0.002


def _at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


async def test_windows_roll_over_at_utc_midnight_and_month_end(tmp_path) -> None:
    now = [_at("2026-11-30T23:59:30")]
    store = await open_store(str(tmp_path))
    try:
        budget = Budget(name="daily", node="acme", window="daily", unit="requests", limit=10)
        await store.put(BUDGETS.key("daily"), BUDGETS.encode(budget))
        ledger = BudgetLedger(store, clock=lambda: now[0])
        grant = await ledger.acquire("p1", "daily", 10)
        assert (grant.window, grant.granted, grant.remaining) == ("2026-11-30", 10, 0)
        await ledger.settle("p1", budgets_pb2.Settlement(budget="daily", window="2026-11-30", consumed=10))
        assert (await ledger.acquire("p1", "daily", 1)).granted == 0  # spent for today
        now[0] = _at("2026-12-01T00:00:01")
        grant = await ledger.acquire("p1", "daily", 4)
        assert (grant.window, grant.granted, grant.remaining) == ("2026-12-01", 4, 6)
        # Late settlement for the closed window does not leak into the new one.
        await ledger.settle("p1", budgets_pb2.Settlement(budget="daily", window="2026-11-30", consumed=3))
        status = {s.budget: s for s in await ledger.status()}["daily"]
        assert (status.window, status.spent, status.leased) == ("2026-12-01", 0, 4)
    finally:
        await store.close()
    assert window_of("monthly", _at("2026-02-28T12:00:00")) == ("2026-02", int(_at("2026-03-01T00:00:00") * 1000))
    assert window_of("total", 0) == ("total", 0)


async def test_unsettled_leases_of_a_vanished_proxy_are_reclaimed(tmp_path) -> None:
    now = [1_000_000.0]
    store = await open_store(str(tmp_path))
    try:
        await store.put(BUDGETS.key("b"), BUDGETS.encode(
            Budget(name="b", node="acme", window="total", unit="usd", limit=1.0)))
        ledger = BudgetLedger(store, clock=lambda: now[0])
        assert (await ledger.acquire("dead-proxy", "b", 0.8)).granted == pytest.approx(0.8)
        assert (await ledger.acquire("live-proxy", "b", 0.5)).granted == pytest.approx(0.2)
        now[0] += 60  # the dead proxy never settled within the lease TTL
        assert (await ledger.acquire("live-proxy", "b", 0.5)).granted == pytest.approx(0.5)
    finally:
        await store.close()


async def test_the_leader_sweep_reclaims_rolls_over_and_forgets_deleted_budgets(tmp_path) -> None:
    """What the sweep does without any request touching the budgets: the status an operator
    reads is current, and records of deleted budgets do not pile up."""
    now = [_at("2026-11-30T23:59:00")]
    store = await open_store(str(tmp_path))
    try:
        for name, window in (("daily", "daily"), ("forever", "total"), ("doomed", "total")):
            await store.put(BUDGETS.key(name), BUDGETS.encode(
                Budget(name=name, node="acme", window=window, unit="usd", limit=1.0)))
        ledger = BudgetLedger(store, clock=lambda: now[0])
        await ledger.acquire("p1", "daily", 0.3)
        await ledger.settle("p1", budgets_pb2.Settlement(budget="daily", window="2026-11-30", consumed=0.2))
        await ledger.acquire("vanished", "forever", 0.6)
        await ledger.acquire("p1", "doomed", 0.1)
        assert await ledger.sweep() == 0  # nothing is stale yet
        await store.delete(BUDGETS.key("doomed"))
        now[0] = _at("2026-12-01T00:00:30")  # a new day, and the lease TTL has passed
        records_before = (await store.revision())
        assert await ledger.sweep() == 3
        assert await store.revision() == records_before + 3
        status = {s.budget: s for s in await ledger.status()}
        assert (status["daily"].window, status["daily"].spent, status["daily"].leased) == ("2026-12-01", 0, 0)
        assert (status["forever"].spent, status["forever"].leased) == (0, 0)
        assert await store.get("/megarouter/ledger/doomed") is None
        assert await ledger.sweep() == 0  # and a second sweep has nothing to do
    finally:
        await store.close()


async def _seed_budgets(system: System) -> int:
    await system.admin.CreateApiKey(admin_pb2.CreateApiKeyRequest(name="a-key", node="team-a", secret=KEY_SECRET))
    await system.admin.PutBudget(routing_pb2.Budget(
        name="acme-daily", node="acme", window="daily", unit="usd", limit=LIMIT_USD, action="pause"))
    await system.admin.PutBudget(routing_pb2.Budget(
        name="team-b-only", node="team-b", window="daily", unit="requests", limit=1, action="pause"))
    put = await system.admin.PutBudget(routing_pb2.Budget(
        name="acme-watch", node="acme", window="monthly", unit="requests", limit=100, action="alert"))
    return put.revision


@pytest.fixture
async def fleet(tmp_path) -> AsyncIterator[System]:
    system = await build_system(tmp_path, proxies=3, sim_flags=("--latency-ms", "30"), manifest_extra=ORG_TREE,
                                seed=_seed_budgets)
    try:
        yield system
    finally:
        await system.close()


async def _one(session: aiohttp.ClientSession, url: str) -> tuple[int, float, str]:
    async with session.post(url, headers={"Authorization": f"Bearer {KEY_SECRET}"}, json={
        "model": "demo-small", "max_tokens": 16, "messages": [{"role": "user", "content": "hello there"}],
    }) as response:
        body = await response.json()
        cost = float(response.headers.get("x-megarouter-cost-usd", 0))
        return response.status, cost, (body.get("error") or {}).get("code") or ""


async def _status(system: System, name: str) -> admin_pb2.BudgetStatus:
    statuses = await system.admin.ListBudgetStatus(admin_pb2.ListRequest())
    return next(s for s in statuses.items if s.budget == name)


async def test_fleet_spend_never_exceeds_the_limit_by_more_than_one_request(fleet: System) -> None:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        calls = [_one(session, fleet.base_url(i) + "/chat/completions") for i in range(3) for _ in range(200)]
        results = await asyncio.gather(*calls)
    served = [cost for status, cost, _ in results if status == 200]
    refused = [(status, code) for status, _, code in results if status != 200]
    # One request's worst case: ~40 prompt tokens at $0.15/M + 16 output at $0.60/M.
    worst_case = (40 * 0.15 + 16 * 0.60) / 1e6
    spent = sum(served)
    assert spent <= LIMIT_USD + worst_case, (spent, len(served))
    assert spent >= LIMIT_USD * 0.5  # leases must not strand most of the budget
    assert refused and set(refused) == {(429, "budget_exceeded")}

    # Every served request reached the ledger (proxies settle in the background).
    async def settled() -> bool:
        return abs((await _status(fleet, "acme-daily")).spent - spent) < 1e-9
    await eventually(settled, what="the ledger to record every served request's cost")
    watch = await _status(fleet, "acme-watch")
    assert watch.spent == len(served) and watch.action == "alert"  # alert-only budgets count, never refuse

    # A control-plane restart loses no recorded spend, and the limit still holds.
    await fleet.controlplane.stop()
    fleet.controlplane = await restart(fleet.controlplane, fleet.tmp / "logs")
    assert abs((await _status(fleet, "acme-daily")).spent - spent) < 1e-9
    async with aiohttp.ClientSession() as session:
        status, _, code = await _one(session, fleet.base_url(0) + "/chat/completions")
    assert (status, code) == (429, "budget_exceeded")


async def test_budget_error_names_the_budget_and_its_reset(fleet: System) -> None:
    await fleet.admin.PutBudget(routing_pb2.Budget(
        name="acme-daily", node="acme", window="daily", unit="usd", limit=1e-9, action="pause"))
    table = await fleet.admin.GetRoutingTable(admin_pb2.GetRoutingTableRequest())
    await fleet.wait_proxy_version(table.version)
    async with aiohttp.ClientSession() as session:
        async with session.post(fleet.base_url() + "/chat/completions",
                                headers={"Authorization": f"Bearer {KEY_SECRET}"},
                                json={"model": "chat", "messages": [{"role": "user", "content": "x"}]}) as response:
            body = await response.json()
            assert response.status == 429 and int(response.headers["Retry-After"]) > 0
    error = body["error"]
    assert error["code"] == "budget_exceeded" and "acme-daily" in error["message"] and "resets" in error["message"]


def test_which_budgets_cover_a_request() -> None:
    from dataplane.budgets import BudgetRule
    from dataplane.table import KeyInfo

    key = KeyInfo("svc", "p", None, nodes=("search", "ml", "acme"))
    rules = {
        "org": BudgetRule("org", "acme", "", "usd", 1, "", "", "pause"),
        "other-team": BudgetRule("other-team", "sales", "", "usd", 1, "", "", "pause"),
        "this-key": BudgetRule("this-key", "", "svc", "tokens", 1, "", "", "pause"),
        "other-key": BudgetRule("other-key", "", "bot", "tokens", 1, "", "", "pause"),
        "chat-task": BudgetRule("chat-task", "ml", "", "requests", 1, "", "chat", "pause"),
        "gpt-only": BudgetRule("gpt-only", "ml", "", "usd", 1, "gpt-4o", "", "pause"),
    }
    assert {name for name, rule in rules.items() if rule.covers(key, "chat")} == {
        "org", "this-key", "chat-task", "gpt-only"}
    assert not rules["chat-task"].covers(key, "batch")


async def test_requests_per_minute_across_proxies(fleet: System) -> None:
    import time as clock

    put = await fleet.admin.PutBudget(routing_pb2.Budget(
        name="a-key-rpm", key="a-key", window="minute", unit="requests", limit=5, action="pause"))
    for index in range(3):
        await fleet.wait_proxy_version(put.revision, index)
    minute = int(clock.time() // 60)
    outcomes = []
    async with aiohttp.ClientSession() as session:
        for i in range(12):
            async with session.post(fleet.base_url(i % 3) + "/chat/completions",
                                    headers={"Authorization": f"Bearer {KEY_SECRET}"},
                                    json={"model": "demo-small", "max_tokens": 4,
                                          "messages": [{"role": "user", "content": "hi"}]}) as response:
                body = await response.json()
                outcomes.append((response.status, dict(response.headers), body))
    windows = int(clock.time() // 60) - minute + 1  # the minute may turn during the test
    served = [headers for status, headers, _ in outcomes if status == 200]
    limited = [(headers, body) for status, headers, body in outcomes if status == 429]
    assert 0 < len(served) <= 5 * windows and len(served) + len(limited) == 12
    assert all(body["error"]["code"] == "rate_limit_exceeded" and int(headers["Retry-After"]) <= 60
               for headers, body in limited)
    assert served[0]["x-ratelimit-limit-requests"] == "5"
    assert int(served[0]["x-ratelimit-remaining-requests"]) <= 4
    assert served[0]["x-ratelimit-reset-requests"].endswith("s")


async def test_legacy_completions_are_charged_too(fleet: System) -> None:
    put = await fleet.admin.PutBudget(routing_pb2.Budget(
        name="a-key-two", key="a-key", window="daily", unit="requests", limit=2, action="pause"))
    await fleet.wait_proxy_version(put.revision)
    statuses = []
    async with aiohttp.ClientSession() as session:
        for _ in range(3):
            async with session.post(fleet.base_url() + "/completions",
                                    headers={"Authorization": f"Bearer {KEY_SECRET}"},
                                    json={"model": "demo-small", "prompt": "Once", "max_tokens": 3}) as response:
                statuses.append((response.status, (await response.json()).get("error", {}).get("code")))
    assert statuses == [(200, None), (200, None), (429, "budget_exceeded")]


async def test_control_plane_restart_mid_load_loses_no_spend(fleet: System) -> None:
    """Load runs while the control plane is stopped and restarted: every
    served request's cost reaches the persisted ledger (proxies keep and
    retry their settlements), and nothing is counted twice."""
    costs: list[float] = []
    stop = asyncio.Event()

    async def load(index: int) -> None:
        async with aiohttp.ClientSession() as session:
            while not stop.is_set():
                status, cost, _ = await _one(session, fleet.base_url(index) + "/chat/completions")
                if status == 200:
                    costs.append(cost)

    workers = [asyncio.create_task(load(i % 3)) for i in range(6)]

    async def served_at_least(count: int) -> bool:
        return len(costs) >= count
    await eventually(lambda: served_at_least(20), what="load to start")
    await fleet.controlplane.stop()
    down = len(costs)
    fleet.controlplane = await restart(fleet.controlplane, fleet.tmp / "logs")
    await eventually(lambda: served_at_least(down + 20), what="load to continue after the restart")
    stop.set()
    await asyncio.gather(*workers)

    async def settled() -> bool:
        return abs((await _status(fleet, "acme-daily")).spent - sum(costs)) < 1e-9
    await eventually(settled, timeout=20, what="the ledger to hold every served request's cost")


async def test_a_spent_model_quota_moves_traffic_to_the_routes_other_models(tmp_path) -> None:
    """A pause budget on one model takes that model out of plans once spent: route `auto`
    (demo-medium, then demo-small) goes on serving from demo-small; only a request that can
    use nothing but demo-medium is refused, naming the budget."""
    async def seed(system: System) -> int:
        await system.admin.CreateApiKey(admin_pb2.CreateApiKeyRequest(name="q-key", node="team-a", secret=KEY_SECRET))
        put = await system.admin.PutBudget(routing_pb2.Budget(
            name="medium-quota", node="acme", model="demo-medium", window="daily", unit="requests", limit=2,
            action="pause"))
        return put.revision

    system = await build_system(tmp_path, manifest_extra=ORG_TREE, seed=seed)
    try:
        client = openai.AsyncOpenAI(base_url=system.base_url(), api_key=KEY_SECRET, max_retries=0)

        async def served_by(model: str) -> str:
            raw = await client.chat.completions.with_raw_response.create(
                model=model, max_tokens=8, messages=[{"role": "user", "content": "hi"}])
            return raw.headers["x-megarouter-model"]

        assert [await served_by("auto") for _ in range(2)] == ["demo-medium", "demo-medium"]
        assert [await served_by("auto") for _ in range(3)] == ["demo-small"] * 3  # quota spent: next tier
        explained = await client.chat.completions.with_raw_response.create(
            model="auto", max_tokens=8, messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-megarouter-explain": "1"})
        candidates = json.loads(explained.headers["x-megarouter-explain"])["candidates"]
        assert {c["model"]: c.get("excluded", "") for c in candidates}["demo-medium"] == "model quota spent"
        with pytest.raises(openai.RateLimitError) as refused:
            await served_by("demo-medium")
        assert refused.value.code == "budget_exceeded" and "medium-quota" in refused.value.message
        assert await served_by("chat") == "demo-small"  # routes without the model are untouched

        async def ledger_shows_two() -> bool:
            statuses = await system.admin.ListBudgetStatus(admin_pb2.ListRequest())
            return next(s for s in statuses.items if s.budget == "medium-quota").spent == 2
        await eventually(ledger_shows_two, what="the ledger to count the two demo-medium requests")
    finally:
        await system.close()
