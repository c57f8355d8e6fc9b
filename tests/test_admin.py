"""The admin API against a real control plane: validation, references, keys."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator

import aiohttp
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from megarouter.admin_client import admin_channel
from megarouter.v1 import admin_pb2, admin_pb2_grpc, routing_pb2
from tests.conftest import key_hash, start_controlplane
from tests.harness import Service, eventually, restart


@pytest.fixture(scope="module")
async def controlplane(tmp_path_factory) -> AsyncIterator[Service]:
    service = await start_controlplane(tmp_path_factory.mktemp("admin"))
    try:
        yield service
    finally:
        await service.stop()


@pytest.fixture
async def admin(controlplane: Service) -> AsyncIterator[admin_pb2_grpc.AdminStub]:
    async with admin_channel(f"127.0.0.1:{controlplane.port}") as channel:
        yield admin_pb2_grpc.AdminStub(channel)


def _provider(name: str = "p1", **fields) -> routing_pb2.Provider:
    fields.setdefault("base_url", "http://127.0.0.1:9/v1")
    return routing_pb2.Provider(name=name, kind=routing_pb2.PROVIDER_KIND_OPENAI, **fields)


async def _expect(code: grpc.StatusCode, call) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == code, caught.value.details()
    return caught.value.details()


async def test_put_get_list_and_idempotence(admin) -> None:
    created = await admin.PutProvider(_provider("idem", region="eu-west"))
    assert created.created and created.changed and created.revision > 0
    again = await admin.PutProvider(_provider("idem", region="eu-west"))
    assert not again.created and not again.changed
    updated = await admin.PutProvider(_provider("idem", region="us-east"))
    assert updated.changed and updated.revision > created.revision
    got = await admin.GetProvider(admin_pb2.GetRequest(name="idem"))
    assert got.region == "us-east" and got.timeout_s == 60  # documented default
    listed = await admin.ListProviders(admin_pb2.ListRequest())
    assert "idem" in [p.name for p in listed.items]


async def test_invalid_fields_name_the_field(admin) -> None:
    details = await _expect(grpc.StatusCode.INVALID_ARGUMENT, admin.PutProvider(_provider("Bad Name")))
    assert "name" in details
    details = await _expect(grpc.StatusCode.INVALID_ARGUMENT, admin.PutProvider(_provider(base_url="ftp://x")))
    assert "base_url" in details
    details = await _expect(
        grpc.StatusCode.INVALID_ARGUMENT, admin.PutProvider(_provider(headers={"Authorization": "Bearer sk"}))
    )
    assert "headers" in details and "credential" in details
    details = await _expect(
        grpc.StatusCode.INVALID_ARGUMENT,
        admin.PutProvider(routing_pb2.Provider(name="unsup", base_url="http://x/v1")),
    )
    assert "kind" in details
    details = await _expect(
        grpc.StatusCode.INVALID_ARGUMENT,
        admin.PutModel(routing_pb2.Model(name="m", context_window=1000, input_price_per_mtok=-1)),
    )
    assert "input_price_per_mtok" in details
    details = await _expect(grpc.StatusCode.INVALID_ARGUMENT, admin.PutModel(routing_pb2.Model(name="m")))
    assert "context_window" in details
    details = await _expect(
        grpc.StatusCode.INVALID_ARGUMENT,
        admin.PutRoute(routing_pb2.Route(name="r", retry=routing_pb2.RetryPolicy(max_attempts=50),
                                         tiers=[routing_pb2.Tier(models=["m"])])),
    )
    assert "retry.max_attempts" in details
    details = await _expect(grpc.StatusCode.INVALID_ARGUMENT,
                            admin.PutProvider(_provider(options={"responses_api": "sometimes"})))
    assert "options.responses_api" in details
    details = await _expect(grpc.StatusCode.INVALID_ARGUMENT, admin.PutProvider(routing_pb2.Provider(
        name="anth", kind=routing_pb2.PROVIDER_KIND_ANTHROPIC, base_url="http://127.0.0.1:9/v1",
        options={"responses_api": "native"})))
    assert "options.responses_api" in details


async def test_references_are_enforced(admin) -> None:
    await admin.PutProvider(_provider("ref-p"))
    await admin.PutModel(routing_pb2.Model(name="ref-m", context_window=8192))
    details = await _expect(
        grpc.StatusCode.FAILED_PRECONDITION,
        admin.PutEndpoint(routing_pb2.Endpoint(name="ref-e", model="ref-m", provider="nope")),
    )
    assert "unknown provider 'nope'" in details
    details = await _expect(
        grpc.StatusCode.FAILED_PRECONDITION,
        admin.PutRoute(routing_pb2.Route(name="ref-r", tiers=[routing_pb2.Tier(models=["ref-m", "ghost"])])),
    )
    assert "unknown model 'ghost'" in details

    await admin.PutEndpoint(routing_pb2.Endpoint(name="ref-e", model="ref-m", provider="ref-p"))
    await admin.PutRoute(routing_pb2.Route(name="ref-r", tiers=[routing_pb2.Tier(models=["ref-m"])]))
    details = await _expect(
        grpc.StatusCode.FAILED_PRECONDITION, admin.DeleteModel(admin_pb2.DeleteRequest(name="ref-m"))
    )
    assert "endpoint 'ref-e'" in details and "route 'ref-r'" in details
    await _expect(grpc.StatusCode.FAILED_PRECONDITION, admin.DeleteProvider(admin_pb2.DeleteRequest(name="ref-p")))

    await admin.DeleteRoute(admin_pb2.DeleteRequest(name="ref-r"))
    await admin.DeleteEndpoint(admin_pb2.DeleteRequest(name="ref-e"))
    await admin.DeleteModel(admin_pb2.DeleteRequest(name="ref-m"))
    await _expect(grpc.StatusCode.NOT_FOUND, admin.GetModel(admin_pb2.GetRequest(name="ref-m")))
    await _expect(grpc.StatusCode.NOT_FOUND, admin.DeleteModel(admin_pb2.DeleteRequest(name="ref-m")))


async def test_api_keys_store_only_a_hash(admin) -> None:
    created = await admin.CreateApiKey(admin_pb2.CreateApiKeyRequest(name="svc-a", principal="team-a"))
    secret = created.secret
    assert secret.startswith("sk-mr-") and len(secret) > 30
    assert created.key.prefix == secret[:10]
    await _expect(grpc.StatusCode.ALREADY_EXISTS,
                  admin.CreateApiKey(admin_pb2.CreateApiKeyRequest(name="svc-a")))
    listed = await admin.ListApiKeys(admin_pb2.ListRequest())
    assert "svc-a" in [k.name for k in listed.items]
    assert secret not in str(listed)
    async def compiled() -> bool:
        table = await admin.GetRoutingTable(admin_pb2.GetRoutingTableRequest())
        return table.version >= created.revision
    await eventually(compiled, what="the key to reach the table")
    table = await admin.GetRoutingTable(admin_pb2.GetRoutingTableRequest())
    entry = next(k for k in table.api_keys if k.name == "svc-a")
    assert entry.key_hash == key_hash(secret) and entry.principal == "team-a"
    assert secret not in str(table)
    await _expect(
        grpc.StatusCode.FAILED_PRECONDITION,
        admin.CreateApiKey(admin_pb2.CreateApiKeyRequest(name="svc-b", allowed_models=["ghost"])),
    )
    deleted = await admin.DeleteApiKey(admin_pb2.DeleteRequest(name="svc-a"))

    async def gone() -> bool:
        table = await admin.GetRoutingTable(admin_pb2.GetRoutingTableRequest())
        return table.version >= deleted.revision and "svc-a" not in [k.name for k in table.api_keys]
    await eventually(gone, what="the deleted key to leave the table")


async def test_table_tracks_store_revision(admin) -> None:
    put = await admin.PutModel(routing_pb2.Model(name="rev-m", context_window=4096))
    # The table is recompiled from the store watch (push latency is measured in bench/, not here).
    async def compiled() -> bool:
        table = await admin.GetRoutingTable(admin_pb2.GetRoutingTableRequest())
        return table.version >= put.revision and "rev-m" in [m.name for m in table.models]
    await eventually(compiled, what="the table to include the write")


async def test_health_reflection_and_metrics(controlplane: Service) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{controlplane.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "megarouter.v1.Admin", "megarouter.v1.Discovery"):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        names: list[str] = []
        async for reply in stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])):
            names += [s.name for s in reply.list_services_response.service]
        assert {"megarouter.v1.Admin", "megarouter.v1.Discovery", "megarouter.v1.Telemetry"} <= set(names)
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{controlplane.ready['metrics_port']}/metrics") as r:
            assert r.status == 200
            assert "megarouter_cp_table_version" in await r.text()


async def test_a_second_control_plane_on_the_same_embedded_store_is_refused(tmp_path) -> None:
    service = await start_controlplane(tmp_path)
    try:
        second = await asyncio.to_thread(subprocess.run, [
            sys.executable, "-m", "megarouter", "controlplane", "--listen", "127.0.0.1:0",
            "--metrics-listen", "127.0.0.1:0", "--store", str(tmp_path / "store"),
        ], capture_output=True, text=True, timeout=60)
        assert second.returncode == 1
        assert f"in use by pid {service.process.pid}" in second.stderr and "etcd" in second.stderr
        assert "Traceback" not in second.stderr
        async with admin_channel(f"127.0.0.1:{service.port}") as channel:  # the first is unharmed
            await admin_pb2_grpc.AdminStub(channel).PutModel(routing_pb2.Model(name="m", context_window=10))
    finally:
        await service.stop()


async def test_store_survives_restart(tmp_path) -> None:
    service = await start_controlplane(tmp_path)
    try:
        async with admin_channel(f"127.0.0.1:{service.port}") as channel:
            put = await admin_pb2_grpc.AdminStub(channel).PutModel(
                routing_pb2.Model(name="durable", context_window=1000)
            )
        await service.stop()
        service = await restart(service, tmp_path / "logs")
        async with admin_channel(f"127.0.0.1:{service.port}") as channel:
            admin = admin_pb2_grpc.AdminStub(channel)
            assert (await admin.GetModel(admin_pb2.GetRequest(name="durable"))).context_window == 1000
            table = await admin.GetRoutingTable(admin_pb2.GetRoutingTableRequest())
            # The version is the newest configuration change's revision, whatever else
            # (this replica's registration, its leader key) was written since.
            assert table.version == put.revision
    finally:
        await service.stop()


async def test_org_tree_rules(admin) -> None:
    await admin.PutNode(routing_pb2.OrgNode(name="acme", kind="org"))
    await admin.PutNode(routing_pb2.OrgNode(name="acme-ml", kind="team", parent="acme"))
    await admin.PutNode(routing_pb2.OrgNode(name="acme-ml-search", kind="project", parent="acme-ml"))
    details = await _expect(grpc.StatusCode.INVALID_ARGUMENT,
                            admin.PutNode(routing_pb2.OrgNode(name="orphan", kind="team")))
    assert "parent" in details
    details = await _expect(grpc.StatusCode.FAILED_PRECONDITION,
                            admin.PutNode(routing_pb2.OrgNode(name="lost", kind="team", parent="ghost")))
    assert "unknown parent 'ghost'" in details
    # Moving a team under its own descendant would make a cycle.
    details = await _expect(grpc.StatusCode.FAILED_PRECONDITION,
                            admin.PutNode(routing_pb2.OrgNode(name="acme-ml", kind="team", parent="acme-ml-search")))
    assert "cycle" in details
    await admin.CreateApiKey(admin_pb2.CreateApiKeyRequest(name="search-bot", node="acme-ml-search"))
    details = await _expect(grpc.StatusCode.FAILED_PRECONDITION,
                            admin.DeleteNode(admin_pb2.DeleteRequest(name="acme-ml")))
    assert "node 'acme-ml-search'" in details
    details = await _expect(grpc.StatusCode.FAILED_PRECONDITION,
                            admin.DeleteNode(admin_pb2.DeleteRequest(name="acme-ml-search")))
    assert "API key 'search-bot'" in details
    await _expect(grpc.StatusCode.FAILED_PRECONDITION,
                  admin.CreateApiKey(admin_pb2.CreateApiKeyRequest(name="nobody-bot", node="ghost")))
    key = await admin.GetApiKey(admin_pb2.GetRequest(name="search-bot"))
    assert key.node == "acme-ml-search"
