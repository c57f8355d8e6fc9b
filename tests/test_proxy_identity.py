"""Proxy identity: Discovery, Telemetry and Budgets need a proxy credential, the admin API
refuses one, and what proxies report or settle is range checked — each attack a reviewer
ran against the open services, replayed against real processes."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator

import aiohttp
import grpc
import pytest

from megarouter.admin_client import admin_channel
from megarouter.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    budgets_pb2,
    budgets_pb2_grpc,
    discovery_pb2,
    discovery_pb2_grpc,
    routing_pb2,
    telemetry_pb2,
    telemetry_pb2_grpc,
)
from tests.conftest import ADMIN_TOKEN, ORG_TREE, PROXY_TOKEN, System, build_system
from tests.harness import eventually, start_service

OTHER_PROXY_TOKEN = "mr-proxy-other-region-0123456789abcdef"
NO_TOKEN = None
UNKNOWN_TOKEN = "mr-proxy-not-a-real-token-0123456789"


async def _seed(system: System) -> int:
    await system.admin.CreateApiKey(admin_pb2.CreateApiKeyRequest(name="a-key", node="team-a"))
    await system.admin.CreateAdminToken(admin_pb2.CreateAdminTokenRequest(name="eu-proxies",
                                                                          secret=OTHER_PROXY_TOKEN))
    await system.admin.PutRoleBinding(admin_pb2.RoleBinding(name="eu-proxies", token="eu-proxies", role="proxy"))
    put = await system.admin.PutBudget(routing_pb2.Budget(
        name="team-a-daily", node="team-a", window="daily", unit="usd", limit=1.0, action="pause"))
    return put.revision


@pytest.fixture(scope="module")
async def system(tmp_path_factory) -> AsyncIterator[System]:
    built = await build_system(tmp_path_factory.mktemp("identity"), manifest_extra=ORG_TREE, seed=_seed)
    try:
        yield built
    finally:
        await built.close()


def _metadata(token: str | None) -> tuple:
    return (("authorization", f"Bearer {token}"),) if token else ()


async def _code(call) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def _stream_tables(address: str, token: str | None) -> grpc.StatusCode:
    async with grpc.aio.insecure_channel(address) as channel:
        call = discovery_pb2_grpc.DiscoveryStub(channel).StreamRoutingTables(metadata=_metadata(token))
        try:
            await call.write(discovery_pb2.DiscoveryRequest(node=discovery_pb2.Node(id="intruder")))
            response = await call.read()
            assert response.table.version > 0  # only reached with a proxy credential
            call.cancel()
        except grpc.aio.AioRpcError:
            # A write racing the server's refusal fails with INTERNAL; the call's status is the answer.
            return await call.code()
    return grpc.StatusCode.OK


async def _report(address: str, token: str | None, report: telemetry_pb2.StatsReport) -> grpc.aio.AioRpcError | None:
    async with grpc.aio.insecure_channel(address) as channel:
        call = telemetry_pb2_grpc.TelemetryStub(channel).ReportStats(metadata=_metadata(token))
        try:
            await call.write(report)
            await call.done_writing()
            await call
        except grpc.aio.AioRpcError:
            # As above: the status of the call, not of a write that raced the refusal.
            try:
                await call
            except grpc.aio.AioRpcError as exc:
                return exc
    return None


def _forged_report() -> telemetry_pb2.StatsReport:
    """The reviewer's forgery: $12,345.67 of usage on a key, and an ejection."""
    return telemetry_pb2.StatsReport(
        node=discovery_pb2.Node(id="intruder"),
        endpoints=[telemetry_pb2.EndpointStats(endpoint="small-sim", requests=1, ejected=True)],
        usage=[telemetry_pb2.UsageRecord(key="a-key", node="team-a", model="demo-small", route="chat",
                                         day="2026-12-07", requests=1, cost_usd=12345.67)],
    )


@pytest.mark.parametrize("token,expected", [
    (NO_TOKEN, grpc.StatusCode.UNAUTHENTICATED),
    (UNKNOWN_TOKEN, grpc.StatusCode.UNAUTHENTICATED),
    (ADMIN_TOKEN, grpc.StatusCode.PERMISSION_DENIED),   # an admin token is not a proxy credential
    (PROXY_TOKEN, grpc.StatusCode.OK),
])
async def test_proxy_services_need_a_proxy_credential(system: System, token, expected) -> None:
    address = system.admin_address
    assert await _stream_tables(address, token) == expected
    failure = await _report(address, token, telemetry_pb2.StatsReport(node=discovery_pb2.Node(id="intruder")))
    assert (failure.code() if failure else grpc.StatusCode.OK) == expected
    async with grpc.aio.insecure_channel(address) as channel:
        budgets = budgets_pb2_grpc.BudgetsStub(channel)
        assert await _code(budgets.Acquire(budgets_pb2.AcquireRequest(
            node_id="intruder", budget="team-a-daily", want=0.01), metadata=_metadata(token))) == expected
        assert await _code(budgets.Settle(budgets_pb2.SettleRequest(
            node_id="intruder", settlements=[budgets_pb2.Settlement(budget="team-a-daily", window="2000-01-01")]),
            metadata=_metadata(token))) == expected


async def test_forged_usage_and_health_are_refused_without_a_credential(system: System) -> None:
    failure = await _report(system.admin_address, NO_TOKEN, _forged_report())
    assert failure is not None and failure.code() == grpc.StatusCode.UNAUTHENTICATED
    health = await system.admin.GetFleetHealth(admin_pb2.GetFleetHealthRequest())
    assert not any(endpoint.ejected_by for endpoint in health.endpoints)


async def test_the_admin_api_refuses_proxy_credentials(system: System) -> None:
    async with admin_channel(system.admin_address, PROXY_TOKEN) as channel:
        admin = admin_pb2_grpc.AdminStub(channel)
        for call in (admin.ListRoutes(admin_pb2.ListRequest()), admin.WhoAmI(admin_pb2.WhoAmIRequest()),
                     admin.GetRoutingTable(admin_pb2.GetRoutingTableRequest())):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "proxy credential" in refused.value.details()


async def test_settlements_and_leases_are_range_checked(system: System) -> None:
    """Negative consumption erased spend, releases reset it, huge wants starved a team."""
    before = {s.budget: s for s in (await system.admin.ListBudgetStatus(admin_pb2.ListRequest())).items}
    async with grpc.aio.insecure_channel(system.admin_address) as channel:
        budgets = budgets_pb2_grpc.BudgetsStub(channel)
        auth = _metadata(PROXY_TOKEN)

        async def settle(**fields) -> budgets_pb2.SettleAck:
            return await budgets.Settle(budgets_pb2.SettleRequest(
                node_id="range-proxy", settlements=[budgets_pb2.Settlement(budget="team-a-daily", **fields)]),
                metadata=auth)

        grant = await budgets.Acquire(budgets_pb2.AcquireRequest(node_id="range-proxy", budget="team-a-daily",
                                                                 want=0.25), metadata=auth)
        assert grant.granted == pytest.approx(0.25)
        assert not (await settle(window=grant.window, consumed=0.1)).refused
        for bad, field in (({"consumed": -5.0}, "consumed"), ({"released": math.nan}, "released"),
                           ({"consumed": math.inf}, "consumed")):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await settle(window=grant.window, **bad)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert f"settlements[0].{field}" in refused.value.details()
        # Releasing more than the node holds: refused, and spend stays where it was.
        ack = await settle(window=grant.window, released=10.0)
        assert [r.reason for r in ack.refused] == ["release exceeds lease"]
        for want in (-1.0, math.inf, 1e9):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await budgets.Acquire(budgets_pb2.AcquireRequest(node_id="range-proxy", budget="team-a-daily",
                                                                 want=want), metadata=auth)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "want" in refused.value.details()
        # Another proxy credential cannot touch this node's lease.
        with pytest.raises(grpc.aio.AioRpcError) as foreign:
            await budgets.Acquire(budgets_pb2.AcquireRequest(node_id="range-proxy", budget="team-a-daily", want=0.1),
                                  metadata=_metadata(OTHER_PROXY_TOKEN))
        assert foreign.value.code() == grpc.StatusCode.PERMISSION_DENIED
        ack = await budgets.Settle(budgets_pb2.SettleRequest(node_id="range-proxy", settlements=[
            budgets_pb2.Settlement(budget="team-a-daily", window=grant.window, released=0.15)]),
            metadata=_metadata(OTHER_PROXY_TOKEN))
        assert ack.refused and "another proxy credential" in ack.refused[0].reason
    status = {s.budget: s for s in (await system.admin.ListBudgetStatus(admin_pb2.ListRequest())).items}
    assert status["team-a-daily"].spent - before["team-a-daily"].spent == pytest.approx(0.1)
    assert status["team-a-daily"].leased - before["team-a-daily"].leased == pytest.approx(0.15)
    metrics_port = system.controlplane.ready["metrics_port"]
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{metrics_port}/metrics") as response:
            text = await response.text()
    refused = {line.split("{")[1].split("}")[0]: float(line.rsplit(" ", 1)[1])
               for line in text.splitlines() if line.startswith("megarouter_cp_refused_calls_total{")}
    assert refused['plane="proxy",reason="range"'] >= 7
    assert refused['plane="proxy",reason="foreign_lease"'] >= 2
    assert refused['plane="proxy",reason="unauthenticated"'] >= 1


async def test_impossible_reports_are_refused_and_unknown_endpoints_dropped(system: System) -> None:
    bad = _forged_report()
    bad.usage[0].cost_usd = -12345.67
    failure = await _report(system.admin_address, PROXY_TOKEN, bad)
    assert failure is not None and failure.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "usage[0].cost_usd" in failure.details()
    invented = telemetry_pb2.StatsReport(node=discovery_pb2.Node(id="intruder"), endpoints=[
        telemetry_pb2.EndpointStats(endpoint=f"invented-{n}", requests=1, successes=1) for n in range(50)])
    assert await _report(system.admin_address, PROXY_TOKEN, invented) is None
    health = await system.admin.GetFleetHealth(admin_pb2.GetFleetHealthRequest())
    assert not any(endpoint.endpoint.startswith("invented-") for endpoint in health.endpoints)


async def test_a_proxy_without_a_credential_says_so_and_one_with_a_wrong_one_stays_unready(
        system: System, tmp_path) -> None:
    with pytest.raises(RuntimeError) as missing:
        await start_service("no-credential", [
            "proxy", "--listen", "127.0.0.1:0", "--control-plane", system.admin_address,
            "--cache-file", "", "--proxy-token-file", str(tmp_path / "absent"),
        ], tmp_path / "logs", env={"MEGAROUTER_PROXY_TOKEN": ""})
    assert "no proxy credential" in str(missing.value) and "MEGAROUTER_PROXY_TOKEN" in str(missing.value)
    wrong = await start_service("wrong-credential", [
        "proxy", "--listen", "127.0.0.1:0", "--control-plane", system.admin_address, "--cache-file", "",
        "--node-id", "wrong-credential",
    ], tmp_path / "logs", env={"MEGAROUTER_PROXY_TOKEN": UNKNOWN_TOKEN})
    try:
        async def refused_logged() -> bool:
            return "UNAUTHENTICATED" in wrong.log_text()
        await eventually(refused_logged, what="the proxy to log its refusal")
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{wrong.port}/readyz") as response:
                assert response.status == 503
    finally:
        await wrong.stop()
    assert UNKNOWN_TOKEN not in wrong.log_text()
