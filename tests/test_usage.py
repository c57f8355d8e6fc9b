"""Usage analytics: proxies count per key, node, model, route and day; the
control plane persists the counters and answers scoped QueryUsage calls."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import grpc
import openai
import pytest

from controlplane.store import open_store
from controlplane.usage import USAGE_PREFIX, UsageAggregator, decode_rows, document_key
from dataplane.telemetry_client import _send
from dataplane.usage import UsageLedger
from megarouter.admin_client import admin_channel
from megarouter.v1 import admin_pb2, admin_pb2_grpc, telemetry_pb2
from tests.conftest import ADMIN_TOKEN, ORG_TREE, System, build_system
from tests.harness import eventually, restart

A_SECRET = "sk-mr-usage-team-a-0123456789"
B_SECRET = "sk-mr-usage-team-b-0123456789"
VIEWER_SECRET = "mr-admin-usage-viewer-a-0000000000"
CANARY = f"CANARY-{uuid.uuid4().hex}"
PRICES = {"demo-small": (0.15, 0.6), "demo-medium": (2.5, 10.0)}  # USD per million tokens (demo_manifest)


def _today() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d")


# ------------------------------------------------------------------ unit


def test_undelivered_usage_is_kept_and_merged_not_queued() -> None:
    ledger = UsageLedger()
    for _ in range(3):
        ledger.account("k", ("team-a", "acme"), "chat").served("demo-small", False, 10, 5, 0.001)
    ledger.account("k", ("team-a", "acme"), "chat").failed()

    class Broken:
        async def write(self, report) -> None:
            raise grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, None, None)

    with pytest.raises(grpc.aio.AioRpcError):
        asyncio.run(_send(Broken(), ledger, telemetry_pb2.StatsReport()))
    ledger.account("k", ("team-a", "acme"), "chat").served("demo-small", False, 1, 1, 0.0001)
    usage = ledger.drain()
    # Merged by key: one entry per distinct (key, node, model, route, day), not one per failed report.
    assert len(usage) == 2
    served = next(c for k, c in usage.items() if k[2] == "demo-small")
    failed = next(c for k, c in usage.items() if k[2] == "")
    assert (served.requests, served.errors, served.prompt_tokens, served.completion_tokens) == (4, 0, 31, 16)
    assert served.cost_usd == pytest.approx(0.0031)
    assert (failed.requests, failed.errors) == (1, 1)


def test_an_account_counts_a_request_once() -> None:
    ledger = UsageLedger()
    account = ledger.account("k", (), "auto")
    account.served("demo-medium", False, 3, 4, 0.5)
    account.failed()  # e.g. an error raised after the relay counted it
    ((key, counters),) = ledger.drain().items()
    assert key[:4] == ("k", "", "demo-medium", "auto")
    assert (counters.requests, counters.errors) == (1, 0)


async def test_control_planes_merge_into_the_stored_totals(tmp_path) -> None:
    store = await open_store(str(tmp_path))
    try:
        record = telemetry_pb2.UsageRecord(key="k", node="n", model="m", route="r", day="2026-11-01",
                                           requests=2, errors=1, prompt_tokens=10, completion_tokens=20,
                                           cost_usd=0.25)
        first, second = UsageAggregator(store), UsageAggregator(store)   # e.g. two control planes
        first.add([record])
        second.add([record, record])
        # Neither a path escape nor a malformed day is accepted.
        assert second.add([telemetry_pb2.UsageRecord(key="../x", day="2026-11-01", requests=1),
                           telemetry_pb2.UsageRecord(key="k", day="today", requests=1)]) == 0
        await asyncio.gather(first.flush(), second.flush())
        kv = await store.get(document_key("2026-11-01", "k"))
        ((slot, counters),) = decode_rows(kv.value).items()
        assert slot == ("n", "m", "r")
        assert (counters.requests, counters.errors, counters.prompt_tokens, counters.completion_tokens) == (
            6, 3, 30, 60)
        assert counters.cost_usd == pytest.approx(0.75)
        assert first.pending == second.pending == 0
    finally:
        await store.close()


async def test_usage_that_cannot_be_written_stays_pending(tmp_path) -> None:
    store = await open_store(str(tmp_path))
    aggregator = UsageAggregator(store)
    aggregator.add([telemetry_pb2.UsageRecord(key="k", day="2026-11-01", requests=1)])
    await store.close()
    await aggregator.flush()          # the store is gone: kept for the next flush
    assert aggregator.pending == 1
    store = await open_store(str(tmp_path))
    try:
        aggregator._store = store
        await aggregator.flush()
        items, _ = await store.list(USAGE_PREFIX)
        assert [kv.key for kv in items] == [document_key("2026-11-01", "k")] and aggregator.pending == 0
    finally:
        await store.close()


# ----------------------------------------------------------- integration


@dataclass
class Seen:
    """What the clients saw, per (key, node, model, route)."""

    rows: dict[tuple[str, str, str, str], list[float]] = field(default_factory=dict)

    def add(self, key: str, node: str, model: str, route: str, prompt: int = 0, completion: int = 0,
            cost: float = 0.0, error: bool = False) -> None:
        row = self.rows.setdefault((key, node, model, route), [0, 0, 0, 0, 0.0])
        row[0] += 1
        row[1] += int(error)
        row[2] += prompt
        row[3] += completion
        row[4] += cost

    def by(self, *dimensions: str) -> dict[tuple[str, ...], list[float]]:
        index = {"key": 0, "node": 1, "model": 2, "route": 3}
        out: dict[tuple[str, ...], list[float]] = {}
        for slot, row in self.rows.items():
            group = tuple(slot[index[d]] for d in dimensions)
            total = out.setdefault(group, [0, 0, 0, 0, 0.0])
            for i, value in enumerate(row):
                total[i] += value
        return out


async def _seed_keys_and_viewer(system: System) -> int:
    await system.admin.CreateApiKey(admin_pb2.CreateApiKeyRequest(name="a-key", node="team-a", secret=A_SECRET))
    created = await system.admin.CreateApiKey(
        admin_pb2.CreateApiKeyRequest(name="b-key", node="team-b", secret=B_SECRET, tasks=["summarise"]))
    await system.admin.CreateAdminToken(admin_pb2.CreateAdminTokenRequest(name="viewer-a", secret=VIEWER_SECRET))
    await system.admin.PutRoleBinding(admin_pb2.RoleBinding(name="viewer-a", token="viewer-a", role="viewer",
                                                            scope="team-a"))
    return created.revision


@pytest.fixture
async def fleet(tmp_path) -> AsyncIterator[System]:
    system = await build_system(tmp_path, proxies=2, manifest_extra=ORG_TREE, seed=_seed_keys_and_viewer)
    try:
        yield system
    finally:
        await system.close()


async def _chat(seen: Seen, base_url: str, secret: str, key: str, node: str, model: str,
                task: str | None = None, stream: bool = False, counted_as: str | None = None) -> None:
    """One request; `counted_as`: the task it counts under when not `task` (a label its key
    may not set counts under the route or model it named)."""
    label = counted_as or task or model
    client = openai.AsyncOpenAI(base_url=base_url, api_key=secret, max_retries=0)
    messages = [{"role": "user", "content": f"summarise this {CANARY} please"}]
    headers = {"x-megarouter-task": task} if task else None
    if stream:
        chunks = await client.chat.completions.create(model=model, messages=messages, max_tokens=20, stream=True,
                                                      stream_options={"include_usage": True}, extra_headers=headers)
        usage, served = None, ""
        async for chunk in chunks:
            served = chunk.model or served
            usage = chunk.usage or usage
        assert usage is not None
        input_price, output_price = PRICES[served]  # streams carry no cost header: catalog prices
        cost = (usage.prompt_tokens * input_price + usage.completion_tokens * output_price) / 1e6
        seen.add(key, node, served, label, usage.prompt_tokens, usage.completion_tokens, cost)
        return
    raw = await client.chat.completions.with_raw_response.create(model=model, messages=messages, max_tokens=20,
                                                                 extra_headers=headers)
    reply = raw.parse()
    if task:
        assert raw.headers["x-megarouter-task"] == label  # what it counted under, said back
    seen.add(key, node, raw.headers["x-megarouter-model"], label, reply.usage.prompt_tokens,
             reply.usage.completion_tokens, float(raw.headers["x-megarouter-cost-usd"]))


async def _traffic(fleet: System, seen: Seen) -> None:
    a = (A_SECRET, "a-key", "team-a")
    b = (B_SECRET, "b-key", "team-b")
    for _ in range(3):
        await _chat(seen, fleet.base_url(0), *a, "chat")
    for _ in range(2):
        await _chat(seen, fleet.base_url(1), *a, "demo-medium")
    await _chat(seen, fleet.base_url(1), *a, "chat", stream=True)
    for _ in range(2):
        await _chat(seen, fleet.base_url(1), *b, "auto")
    await _chat(seen, fleet.base_url(0), *b, "demo-small", task="summarise")
    # A label a-key may not set counts under the route: clients cannot invent usage dimensions.
    await _chat(seen, fleet.base_url(0), *a, "chat", task="invented-label-1", counted_as="chat")
    # Errors: counted once each, under the route or model asked for, with no served model —
    # a name that resolves to nothing under one label, however many are invented.
    client = openai.AsyncOpenAI(base_url=fleet.base_url(0), api_key=B_SECRET, max_retries=0)
    for invented in ("no-such-model", "no-such-model-2"):
        with pytest.raises(openai.NotFoundError):
            await client.chat.completions.create(model=invented, messages=[{"role": "user", "content": CANARY}])
        seen.add("b-key", "team-b", "", "(unknown)", error=True)
    with pytest.raises(openai.BadRequestError):
        await client.chat.completions.create(model="chat", messages=[])
    seen.add("b-key", "team-b", "", "chat", error=True)


async def _query(channel: grpc.aio.Channel, *group_by: str, **filters) -> dict[tuple[str, ...], list[float]]:
    response = await admin_pb2_grpc.AdminStub(channel).QueryUsage(
        admin_pb2.QueryUsageRequest(group_by=list(group_by), **filters))
    costs = [row.cost_usd for row in response.rows]
    assert costs == sorted(costs, reverse=True)
    return {tuple(row.dimensions[d] for d in group_by): [row.requests, row.errors, row.prompt_tokens,
                                                         row.completion_tokens, row.cost_usd]
            for row in response.rows}


def _assert_same(got: dict, want: dict) -> None:
    assert set(got) == set(want), (got, want)
    for group, row in want.items():
        assert got[group][:4] == row[:4], (group, got[group], row)
        # Cost headers carry 8 decimals; the stored cost is the unrounded float.
        assert got[group][4] == pytest.approx(row[4], abs=1e-8 * max(1, row[0])), group


async def test_usage_is_counted_persisted_scoped_and_content_free(fleet: System) -> None:
    seen = Seen()
    day = _today()
    await _traffic(fleet, seen)
    total_requests = sum(row[0] for row in seen.rows.values())
    assert total_requests == 13

    async def persisted() -> bool:
        rows = await _query(fleet.channel)
        return bool(rows) and rows[()][0] == total_requests
    await eventually(persisted, timeout=20, what="every request's usage to be persisted")

    _assert_same(await _query(fleet.channel, "model"), seen.by("model"))
    _assert_same(await _query(fleet.channel, "node"), seen.by("node"))
    _assert_same(await _query(fleet.channel, "key", "route"), seen.by("key", "route"))
    by_model = await _query(fleet.channel, "model")
    assert by_model[("",)][:2] == [3, 3]            # the three error responses: nothing served
    by_day = await _query(fleet.channel, "day")
    if day == _today():                             # (not run across UTC midnight)
        assert list(by_day) == [(day,)] and by_day[(day,)][0] == total_requests
    # A node includes its subtree; a team only its own keys.
    _assert_same(await _query(fleet.channel, "key", node="acme"), seen.by("key"))
    _assert_same(await _query(fleet.channel, "key", node="team-a"), {("a-key",): seen.by("key")[("a-key",)]})
    _assert_same(await _query(fleet.channel, "model", key="b-key"),
                 {k[1:]: v for k, v in seen.by("key", "model").items() if k[0] == "b-key"})
    assert await _query(fleet.channel, "key", since_unix_ms=int((time.time() + 3 * 86400) * 1000)) == {}

    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await fleet.admin.QueryUsage(admin_pb2.QueryUsageRequest(group_by=["model", "colour"]))
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "group_by" in bad.value.details()

    # RBAC: a viewer of team A sees team A's usage only, even when asking for the whole org.
    async with admin_channel(fleet.admin_address, VIEWER_SECRET) as viewer:
        _assert_same(await _query(viewer, "key"), {("a-key",): seen.by("key")[("a-key",)]})
        _assert_same(await _query(viewer, "node", node="acme"), {("team-a",): seen.by("node")[("team-a",)]})
        for denied in (admin_pb2.QueryUsageRequest(node="team-b"), admin_pb2.QueryUsageRequest(key="b-key")):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await admin_pb2_grpc.AdminStub(viewer).QueryUsage(denied)
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED

    # megarouterctl usage: by cost, highest first, and a total.
    def ctl(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "megarouter.ctl", "--server", fleet.admin_address, *args],
                              capture_output=True, text=True, timeout=60,
                              env={**os.environ, "MEGAROUTER_ADMIN_TOKEN": ADMIN_TOKEN})
    shown = await asyncio.to_thread(ctl, "usage", "--node", "acme", "--by", "model")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].split() == ["MODEL", "REQUESTS", "ERRORS", "PROMPT_TOKENS", "COMPLETION_TOKENS", "COST_USD"]
    table = {line.split()[0]: line.split()[1:] for line in lines[1:]}
    want = seen.by("model")
    assert [line.split()[0] for line in lines[1:]] == ["demo-medium", "demo-small", "-", "TOTAL"]
    for (model,), row in want.items():
        assert table[model or "-"][:4] == [str(int(v)) for v in row[:4]]
    assert table["TOTAL"][0] == str(total_requests) and table["TOTAL"][1] == "3"
    assert float(table["TOTAL"][4]) == pytest.approx(sum(row[4] for row in want.values()), abs=1e-6)
    as_json = await asyncio.to_thread(ctl, "usage", "--by", "key,day", "--since", "1d", "-o", "json")
    assert as_json.returncode == 0 and f'"requests": {total_requests}' in as_json.stdout
    # `usage --key NAME` as the README shows it (the TLS key flag used to take the value).
    by_key = await asyncio.to_thread(ctl, "usage", "--key", "b-key", "--by", "model", "-o", "json")
    assert by_key.returncode == 0, by_key.stderr
    assert sum(row["requests"] for row in json.loads(by_key.stdout)["rows"]) == sum(
        row[0] for slot, row in seen.rows.items() if slot[0] == "b-key")
    invalid = await asyncio.to_thread(ctl, "usage", "--by", "colour")
    assert invalid.returncode == 1 and "group_by" in invalid.stderr

    # A control-plane restart keeps the history, and new usage adds to it.
    await fleet.controlplane.stop()
    fleet.controlplane = await restart(fleet.controlplane, fleet.tmp / "logs")
    await fleet.channel.close()
    fleet.channel = admin_channel(fleet.admin_address)
    _assert_same(await _query(fleet.channel, "key", "model"), seen.by("key", "model"))
    await _chat(seen, fleet.base_url(0), A_SECRET, "a-key", "team-a", "chat")

    async def added() -> bool:
        return (await _query(fleet.channel))[()][0] == total_requests + 1
    await eventually(added, timeout=20, what="usage after the restart to add to the history")
    _assert_same(await _query(fleet.channel, "key", "model", "route", "node"),
                 seen.by("key", "model", "route", "node"))
    # A proxy that stops sends what it counted since its last report.
    await _chat(seen, fleet.base_url(1), B_SECRET, "b-key", "team-b", "auto")
    assert await fleet.proxies[1].stop() == 0

    async def final_report() -> bool:
        return (await _query(fleet.channel))[()][0] == total_requests + 2
    await eventually(final_report, timeout=20, what="a stopping proxy's last usage to be persisted")
    _assert_same(await _query(fleet.channel, "key", "model", "route", "node"),
                 seen.by("key", "model", "route", "node"))

    # Zero data retention: no prompt content in usage output or in the store.
    assert CANARY not in shown.stdout + as_json.stdout
    for service in (*fleet.proxies, fleet.controlplane):
        await service.stop()
    store_files = [path for path in (fleet.tmp / "store").rglob("*") if path.is_file()]
    assert store_files
    for path in store_files:
        data = path.read_bytes()
        assert CANARY.encode() not in data, path
    assert any(USAGE_PREFIX.encode() in path.read_bytes() for path in store_files)  # usage was stored there
