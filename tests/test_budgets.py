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

from controlplane.budgets import SLIDING_SPAN_S, BudgetLedger, LedgerRefusal, window_of
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


async def _ledger(tmp_path, now: list[float], *budgets: Budget):
    store = await open_store(str(tmp_path))
    for budget in budgets:
        await store.put(BUDGETS.key(budget.name), BUDGETS.encode(budget))
    return store, BudgetLedger(store, clock=lambda: now[0])


async def test_a_vanished_proxys_lease_is_counted_as_spent_while_a_live_ones_is_kept(tmp_path) -> None:
    """A crash must never undercount: what the dead proxy held is spent on reclaim. A proxy
    that heartbeats (settles nothing) while holding a long request keeps its lease."""
    now = [1_000_000.0]
    store, ledger = await _ledger(tmp_path, now, Budget(name="b", node="acme", window="total", unit="usd", limit=1.0))
    try:
        assert (await ledger.acquire("dead-proxy", "b", 0.5)).granted == pytest.approx(0.5)
        assert (await ledger.acquire("live-proxy", "b", 0.3)).granted == pytest.approx(0.3)
        for _ in range(6):  # 60 s of heartbeats every 10 s from the live proxy only
            now[0] += 10
            assert await ledger.settle("live-proxy", budgets_pb2.Settlement(budget="b", window="total")) == ""
        status = {s.budget: s for s in await ledger.status()}["b"]
        assert (status.spent, status.leased) == (pytest.approx(0.5), pytest.approx(0.3))
        grant = await ledger.acquire("live-proxy", "b", 0.5)
        assert grant.granted == pytest.approx(0.2)  # 1.0 - 0.5 counted for the dead - 0.3 leased
    finally:
        await store.close()


async def test_a_proxy_back_from_a_partition_is_not_counted_twice(tmp_path) -> None:
    """Reclaimed lease is a credit: what the proxy later settles or releases against it is
    matched, so spent ends exactly at what was consumed."""
    now = [1_000_000.0]
    store, ledger = await _ledger(tmp_path, now, Budget(name="b", node="acme", window="total", unit="usd", limit=1.0))
    try:
        await ledger.acquire("p1", "b", 0.4)
        now[0] += 31  # cut off past the TTL: reclaimed, 0.4 counted as spent
        await ledger.sweep()
        assert {s.budget: s for s in await ledger.status()}["b"].spent == pytest.approx(0.4)
        # Back: it had consumed 0.1 and gives the unused 0.3 back.
        assert await ledger.settle("p1", budgets_pb2.Settlement(budget="b", window="total", consumed=0.1,
                                                                  released=0.3)) == ""
        status = {s.budget: s for s in await ledger.status()}["b"]
        assert (status.spent, status.leased) == (pytest.approx(0.1), 0)
        # Releasing more than it holds is refused (and changes nothing).
        assert await ledger.settle("p1", budgets_pb2.Settlement(budget="b", window="total", released=0.5)) \
            == "release exceeds lease"
        assert {s.budget: s for s in await ledger.status()}["b"].spent == pytest.approx(0.1)
    finally:
        await store.close()


async def test_a_nodes_lease_answers_only_to_the_token_that_took_it(tmp_path) -> None:
    now = [1_000_000.0]
    store, ledger = await _ledger(tmp_path, now, Budget(name="b", node="acme", window="total", unit="usd", limit=1.0))
    try:
        await ledger.acquire("p1", "b", 0.4, token="eu-proxies")
        with pytest.raises(LedgerRefusal) as refused:
            await ledger.acquire("p1", "b", 0.4, token="us-proxies")
        assert refused.value.reason == "foreign_lease"
        with pytest.raises(LedgerRefusal):
            await ledger.settle("p1", budgets_pb2.Settlement(budget="b", window="total", released=0.4),
                                token="us-proxies")
        with pytest.raises(LedgerRefusal) as too_much:
            await ledger.acquire("p2", "b", 1.5, token="us-proxies")
        assert too_much.value.reason == "range" and "want" in too_much.value.message
        status = {s.budget: s for s in await ledger.status()}["b"]
        assert (status.spent, status.leased) == (0, pytest.approx(0.4))
    finally:
        await store.close()


async def test_a_rate_limit_holds_over_any_60_seconds_across_a_minute_edge(tmp_path) -> None:
    """Calendar minutes let 2x the limit through around :00; the sliding window does not."""
    now = [_at("2026-12-07T10:00:59.5")]
    store, ledger = await _ledger(tmp_path, now, Budget(name="rpm", node="acme", window="minute", unit="requests",
                                                         limit=10))
    try:
        first = await ledger.acquire("p1", "rpm", 10)
        assert first.granted == 10 and first.window.startswith("s:") and first.use_within_s > 0
        now[0] = _at("2026-12-07T10:01:00.5")  # a new calendar minute, one second later
        assert (await ledger.acquire("p2", "rpm", 5)).granted == 0
        # p1 used 6 and gives 4 back: those are free again at once.
        await ledger.settle("p1", budgets_pb2.Settlement(budget="rpm", window=first.window, consumed=6, released=4))
        again = await ledger.acquire("p2", "rpm", 5)
        assert again.granted == 4
        # Full; the first grant's slot leaves the window 62 s after it (rounding + use-within).
        now[0] = _at("2026-12-07T10:02:00.9")
        assert (await ledger.acquire("p2", "rpm", 1)).granted == 0
        assert again.resets_at_unix_ms == int(_at("2026-12-07T10:02:01") * 1000)
        now[0] = _at("2026-12-07T10:02:01.0")
        assert (await ledger.acquire("p2", "rpm", 10)).granted == 6  # p1's 6; p2's 4 are still counted
        status = {s.budget: s for s in await ledger.status()}["rpm"]
        assert (status.window, status.spent) == ("sliding", 10)
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
        # The vanished proxy's lease is reclaimed as spent (it may have used it all).
        assert (status["forever"].spent, status["forever"].leased) == (pytest.approx(0.6), 0)
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
        name="acme-daily", node="acme", window="daily", unit="requests", limit=1, action="pause"))
    table = await fleet.admin.GetRoutingTable(admin_pb2.GetRoutingTableRequest())
    await fleet.wait_proxy_version(table.version)
    statuses = []
    async with aiohttp.ClientSession() as session:
        for _ in range(2):
            async with session.post(fleet.base_url() + "/chat/completions",
                                    headers={"Authorization": f"Bearer {KEY_SECRET}"},
                                    json={"model": "chat", "messages": [{"role": "user", "content": "x"}]}) as response:
                body = await response.json()
                statuses.append(response.status)
                retry_after = response.headers.get("Retry-After")
    assert statuses == [200, 429] and int(retry_after) > 0
    error = body["error"]
    assert error["code"] == "budget_exceeded" and "acme-daily" in error["message"] and "resets" in error["message"]


async def test_a_request_larger_than_the_whole_budget_says_so(fleet: System) -> None:
    """Retrying after the reset would not help it: the error says why instead of naming one."""
    await fleet.admin.PutBudget(routing_pb2.Budget(
        name="acme-daily", node="acme", window="daily", unit="usd", limit=1e-9, action="pause"))
    table = await fleet.admin.GetRoutingTable(admin_pb2.GetRoutingTableRequest())
    await fleet.wait_proxy_version(table.version)
    async with aiohttp.ClientSession() as session:
        async with session.post(fleet.base_url() + "/chat/completions",
                                headers={"Authorization": f"Bearer {KEY_SECRET}"},
                                json={"model": "chat", "messages": [{"role": "user", "content": "x"}]}) as response:
            body = await response.json()
            assert response.status == 429 and "Retry-After" not in response.headers
    error = body["error"]
    assert error["code"] == "budget_exceeded" and "exceeds the whole limit" in error["message"]
    assert "acme-daily" in error["message"] and "max_tokens" in error["message"]


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
    put = await fleet.admin.PutBudget(routing_pb2.Budget(
        name="a-key-rpm", key="a-key", window="minute", unit="requests", limit=5, action="pause"))
    for index in range(3):
        await fleet.wait_proxy_version(put.revision, index)
    outcomes = []
    async with aiohttp.ClientSession() as session:
        for i in range(12):
            async with session.post(fleet.base_url(i % 3) + "/chat/completions",
                                    headers={"Authorization": f"Bearer {KEY_SECRET}"},
                                    json={"model": "demo-small", "max_tokens": 4,
                                          "messages": [{"role": "user", "content": "hi"}]}) as response:
                body = await response.json()
                outcomes.append((response.status, dict(response.headers), body))
    served = [headers for status, headers, _ in outcomes if status == 200]
    limited = [(headers, body) for status, headers, body in outcomes if status == 429]
    # A sliding window: 5, whether or not a calendar minute turned meanwhile.
    assert len(served) == 5 and len(limited) == 7
    assert all(body["error"]["code"] == "rate_limit_exceeded" and 0 < int(headers["Retry-After"]) <= SLIDING_SPAN_S
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


async def test_a_task_budget_cannot_be_dodged_with_an_invented_task_header(fleet: System) -> None:
    """The budget matched the client-chosen header: `x-megarouter-task: anything-else` escaped
    it. A header now counts only when the key may set that task; otherwise the route does."""
    put = await fleet.admin.PutBudget(routing_pb2.Budget(
        name="a-key-chat", key="a-key", task="chat", window="daily", unit="requests", limit=1, action="pause"))
    await fleet.wait_proxy_version(put.revision)
    outcomes = []
    async with aiohttp.ClientSession() as session:
        for task in (None, "anything-else", "another-one"):
            headers = {"Authorization": f"Bearer {KEY_SECRET}", **({"x-megarouter-task": task} if task else {})}
            async with session.post(fleet.base_url() + "/chat/completions", headers=headers,
                                    json={"model": "chat", "max_tokens": 4,
                                          "messages": [{"role": "user", "content": "hi"}]}) as response:
                body = await response.json()
                outcomes.append((response.status, body.get("error", {}).get("code")))
    assert outcomes == [(200, None), (429, "budget_exceeded"), (429, "budget_exceeded")]
