"""The quality target's data path: a route's `cost_quality_target` and the
`x-megarouter-quality-target` header, from YAML/admin API to the proxy's Target
and Controls. (What the cost strategy decides with them is tested elsewhere.)"""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys
import textwrap

import aiohttp
import grpc
import pytest
import yaml
from pydantic import ValidationError

from dataplane.errors import OPENAI_ERRORS, ApiError
from dataplane.routing.controls import NO_CONTROLS, QUALITY_TARGET_HEADER, Controls, read_controls
from dataplane.table import RuntimeTable, TableError
from megarouter import ctl
from megarouter.manifest import ManifestError, parse_manifest
from megarouter.resources import Route, proto_to_dict, resource_to_proto
from megarouter.v1 import admin_pb2, routing_pb2
from tests.conftest import API_KEY, System

INVALID_HEADER_VALUES = ["0", "-0.1", "1.01", "abc", "nan", "inf", "", "-1", "1.5", "0.0", "1e-1", " ", "0x1",
                         "Infinity", "+0.5", "0,5", "\u0660.\u0665"]
INVALID_ROUTE_VALUES = [-0.1, 1.5, math.nan, math.inf, -math.inf, "high", "0.9", True, False, None]
_BASE_ROUTE = {"name": "r", "tiers": [{"models": ["m1"]}]}


def _fake_calibration(target: float) -> dict:
    return {"cost_quality_target": target, "score_threshold": 0.41, "calibrated_target": 0.95,
            "measured": {"chat": {"quality_share": 0.96, "strong_share": 0.5},
                         "mmlu": {"quality_share": 0.95, "strong_share": 0.6}}}


# ------------------------------------------------------------------- header

@pytest.mark.parametrize(("value", "expected"), [("0.95", 0.95), ("1", 1.0), ("1.0", 1.0), (" 0.5 ", 0.5),
                                                 (".9", 0.9), ("0.001", 0.001), ("1.", 1.0)])
def test_header_reads_a_share_of_the_flagships_quality(value: str, expected: float) -> None:
    controls = read_controls({QUALITY_TARGET_HEADER: value})
    assert controls == Controls(quality_target=expected)
    both = read_controls({QUALITY_TARGET_HEADER: value, "x-megarouter-strategy": "cost"})
    assert (both.strategy, both.quality_target) == ("cost", expected)


def test_no_headers_take_the_fast_path() -> None:
    assert read_controls({}) is NO_CONTROLS
    assert NO_CONTROLS.quality_target == 0.0
    assert read_controls({"x-megarouter-strategy": "cost"}).quality_target == 0.0


@pytest.mark.parametrize("value", INVALID_HEADER_VALUES)
def test_invalid_header_is_a_400_naming_it(value: str) -> None:
    with pytest.raises(ApiError) as caught:
        read_controls({QUALITY_TARGET_HEADER: value})
    error = caught.value
    assert error.status == 400 and error.param == QUALITY_TARGET_HEADER
    body = json.loads(OPENAI_ERRORS.body(error))["error"]
    assert body["param"] == QUALITY_TARGET_HEADER and body["type"] == "invalid_request_error"
    assert body["message"] == (f"invalid {QUALITY_TARGET_HEADER} {value!r}: use a number greater than 0 and at "
                               "most 1 (0.95 keeps 95% of the flagship's quality)")


# -------------------------------------------------------------------- route

@pytest.mark.parametrize("value", INVALID_ROUTE_VALUES)
def test_route_rejects_a_bad_cost_quality_target_naming_it(value) -> None:
    with pytest.raises(ValidationError) as caught:
        Route.model_validate({**_BASE_ROUTE, "cost_quality_target": value})
    (error,) = caught.value.errors()
    assert error["loc"] == ("cost_quality_target",)
    assert "cost_quality_target must be a number in (0, 1]" in error["msg"]
    assert "0.95 keeps 95% of the flagship's quality" in error["msg"]


@pytest.mark.parametrize(("value", "expected"), [(0, 0.0), (0.0, 0.0), (0.95, 0.95), (1, 1.0), (0.001, 0.001)])
def test_route_accepts_unset_or_a_share(value, expected: float) -> None:
    route = Route.model_validate({**_BASE_ROUTE, "cost_quality_target": value})
    assert route.cost_quality_target == expected and isinstance(route.cost_quality_target, float)
    assert Route.model_validate(_BASE_ROUTE).cost_quality_target == 0.0


def test_route_round_trips_through_proto_and_store_json() -> None:
    route = Route.model_validate({**_BASE_ROUTE, "cost_quality_target": 0.95})
    message = resource_to_proto(route, routing_pb2.Route)
    assert isinstance(message, routing_pb2.Route) and message.cost_quality_target == 0.95
    assert Route.model_validate(proto_to_dict(message)) == route       # what the admin API validates
    assert Route.model_validate_json(route.model_dump_json()) == route  # what the store keeps
    # A route stored before the field existed reads as "not set".
    assert Route.model_validate_json('{"name": "r", "tiers": [{"models": ["m1"]}]}').cost_quality_target == 0.0


@pytest.mark.parametrize("value", [1.5, -0.1, math.nan, math.inf])
def test_route_proto_with_a_bad_value_fails_validation(value: float) -> None:
    message = routing_pb2.Route(name="r", tiers=[routing_pb2.Tier(models=["m1"])], cost_quality_target=value)
    with pytest.raises(ValidationError, match="cost_quality_target"):
        Route.model_validate(proto_to_dict(message))


@pytest.mark.parametrize("value", ["true", "'0.9'", ".nan", ".inf", "1.5", "-0.1", "high", "[0.9]"])
def test_manifest_rejects_a_bad_value_naming_the_field(value: str) -> None:
    with pytest.raises(ManifestError, match=r"cost_quality_target") as caught:
        parse_manifest(f"route:\n  name: r\n  cost_quality_target: {value}\n  tiers: [{{models: [m1]}}]\n",
                       "routes.yaml")
    assert str(caught.value).startswith("routes.yaml document 1: ")


def test_manifest_reads_the_field_and_ignores_the_calibration_block() -> None:
    (resource,) = parse_manifest("route:\n  name: r\n  cost_quality_target: 0.95\n  tiers: [{models: [m1]}]\n"
                                 "  calibration: {cost_quality_target: 0.95, score_threshold: 0.41}\n")
    assert resource.message == routing_pb2.Route(name="r", tiers=[routing_pb2.Tier(models=["m1"])],
                                                 cost_quality_target=0.95)


# -------------------------------------------------------------------- table

def _table(*routes: routing_pb2.Route) -> routing_pb2.RoutingTable:
    return routing_pb2.RoutingTable(
        version=3,
        providers=[routing_pb2.Provider(name="p", kind=routing_pb2.PROVIDER_KIND_OPENAI, base_url="http://p/v1")],
        models=[routing_pb2.Model(name="m1", context_window=10, quality_tier=2),
                routing_pb2.Model(name="m2", context_window=10, quality_tier=5)],
        endpoints=[routing_pb2.Endpoint(name="m1-p", model="m1", provider="p"),
                   routing_pb2.Endpoint(name="m2-p", model="m2", provider="p")],
        routes=list(routes),
    )


def test_route_target_carries_cost_quality_target_and_model_ids_do_not() -> None:
    tiers = [routing_pb2.Tier(models=["m2", "m1"])]
    table = RuntimeTable.load(_table(routing_pb2.Route(name="keep", tiers=tiers, cost_quality_target=0.95),
                                     routing_pb2.Route(name="plain", tiers=tiers)), secrets=lambda ref: None)
    assert table.resolve("keep").cost_quality_target == 0.95
    assert table.resolve("plain").cost_quality_target == 0.0
    assert table.resolve("m1").kind == "model" and table.resolve("m1").cost_quality_target == 0.0


@pytest.mark.parametrize("value", [1.5, -0.1, math.nan, math.inf])
def test_table_with_a_bad_cost_quality_target_is_nacked(value: float) -> None:
    route = routing_pb2.Route(name="bad", tiers=[routing_pb2.Tier(models=["m1"])], cost_quality_target=value)
    with pytest.raises(TableError, match="route 'bad' has cost_quality_target"):
        RuntimeTable.load(_table(route), secrets=lambda ref: None)


# ---------------------------------------------------------- ctl rendering

def test_get_yaml_adds_a_read_only_calibration_block(monkeypatch) -> None:
    import dataplane.routing.complexity as complexity
    asked: list[float] = []

    def fake(target: float) -> dict:
        asked.append(target)
        return _fake_calibration(target)
    monkeypatch.setattr(complexity, "quality_calibration", fake)
    keep = routing_pb2.Route(name="keep", tiers=[routing_pb2.Tier(models=["m1"])], cost_quality_target=0.95)
    with_target = proto_to_dict(keep, keep_output_only=True)
    without = proto_to_dict(routing_pb2.Route(name="plain", tiers=[routing_pb2.Tier(models=["m1"])]),
                            keep_output_only=True)
    text = ctl.routes_yaml([with_target, without])
    assert asked == [0.95]  # only routes that set a target are calibrated
    assert "calibration:  # from the shipped complexity model, not stored" in text
    first, second = yaml.safe_load_all(text)
    assert first["cost_quality_target"] == 0.95
    assert first["calibration"] == _fake_calibration(0.95)
    assert "calibration" not in second and second["cost_quality_target"] == 0.0
    # The output, put under `route:`, applies as the same route: the block is dropped.
    documents = text.split("---\n")
    (resource,) = parse_manifest("route:\n" + textwrap.indent(documents[0], "  "))
    assert resource.message == keep


# ------------------------------------------------- against a running system

# `system` (tests/conftest.py) is module-scoped: the routes these tests add stay in this module's system.


def _ctl(system: System, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "megarouter.ctl", "--server", system.admin_address, *args],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("value", ["0", "-0.1", "1.01", "abc", "nan", "inf", ""])
async def test_proxy_answers_an_invalid_header_with_an_openai_400(system: System, value: str) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(system.base_url() + "/chat/completions",
                                headers={"Authorization": f"Bearer {API_KEY}", QUALITY_TARGET_HEADER: value},
                                json={"model": "auto", "messages": [{"role": "user", "content": "hi"}]}) as response:
            assert response.status == 400
            body = await response.json()
    assert body["error"]["param"] == QUALITY_TARGET_HEADER
    assert body["error"]["type"] == "invalid_request_error"
    assert f"invalid {QUALITY_TARGET_HEADER} {value!r}" in body["error"]["message"]


@pytest.mark.parametrize("value", [1.5, -0.1, math.nan, math.inf])
async def test_admin_put_route_rejects_a_bad_value_naming_the_field(system: System, value: float) -> None:
    route = routing_pb2.Route(name="bad-target", tiers=[routing_pb2.Tier(models=["demo-small"])],
                              cost_quality_target=value)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await system.admin.PutRoute(route)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details().startswith("invalid route: cost_quality_target: cost_quality_target must be")


async def test_ctl_apply_rejects_a_bad_value_naming_the_field(system: System, tmp_path) -> None:
    for value in ("1.5", "true", ".nan"):
        manifest = tmp_path / "bad.yaml"
        manifest.write_text(f"route:\n  name: bad-target\n  cost_quality_target: {value}\n"
                            "  tiers: [{models: [demo-small]}]\n")
        result = await asyncio.to_thread(_ctl, system, "apply", "-f", str(manifest))
        assert result.returncode == 1, result.stdout
        assert "cost_quality_target must be a number in (0, 1]" in result.stderr, result.stderr
    listed = await asyncio.to_thread(_ctl, system, "get", "routes", "-o", "json")
    assert listed.returncode == 0 and "bad-target" not in listed.stdout


async def test_a_valid_target_round_trips_through_apply_get_and_reaches_the_proxy(system: System, tmp_path) -> None:
    manifest = tmp_path / "keep.yaml"
    manifest.write_text("route:\n  name: keep\n  strategy: cost\n  cost_quality_target: 0.95\n"
                        "  tiers: [{models: [demo-medium, demo-small]}]\n")
    applied = await asyncio.to_thread(_ctl, system, "apply", "-f", str(manifest))
    assert applied.returncode == 0 and "route/keep created" in applied.stdout, applied.stderr
    assert (await system.admin.GetRoute(admin_pb2.GetRequest(name="keep"))).cost_quality_target == 0.95

    # get -o yaml shows the field and the calibration of the shipped model; re-applied, it changes nothing.
    got = await asyncio.to_thread(_ctl, system, "get", "route", "keep", "-o", "yaml")
    assert got.returncode == 0, got.stderr
    (shown,) = yaml.safe_load_all(got.stdout)
    assert shown["cost_quality_target"] == 0.95
    assert shown["calibration"]["cost_quality_target"] == 0.95
    assert isinstance(shown["calibration"]["score_threshold"], float)
    assert isinstance(shown["calibration"]["measured"], dict)
    edited = tmp_path / "edited.yaml"
    edited.write_text("route:\n" + textwrap.indent(got.stdout, "  "))
    again = await asyncio.to_thread(_ctl, system, "apply", "-f", str(edited))
    assert again.returncode == 0 and "route/keep unchanged" in again.stdout, again.stderr
    plain = await asyncio.to_thread(_ctl, system, "get", "route", "auto", "-o", "yaml")
    assert "cost_quality_target: 0.0" in plain.stdout and "calibration" not in plain.stdout

    # The table pushed to proxies carries it; the proxy ACKs it and its Target has it.
    table = await system.admin.GetRoutingTable(admin_pb2.GetRoutingTableRequest())
    await system.wait_proxy_version(table.version)
    runtime = RuntimeTable.load(table, secrets=lambda ref: None)
    assert runtime.resolve("keep").cost_quality_target == 0.95
    assert runtime.resolve("auto").cost_quality_target == 0.0

    # The running proxy serves the route with its target, and a request's header overrides it.
    async with aiohttp.ClientSession() as session:
        for headers, expected in (({}, 0.95), ({QUALITY_TARGET_HEADER: "0.5"}, 0.5)):
            async with session.post(system.base_url() + "/chat/completions",
                                    headers={"Authorization": f"Bearer {API_KEY}", "x-megarouter-explain": "1",
                                             **headers},
                                    json={"model": "keep", "messages": [{"role": "user", "content": "hi"}]}) as r:
                assert r.status == 200, await r.text()
                assert r.headers["x-megarouter-strategy"] == "cost"
                explained = json.loads(r.headers["x-megarouter-explain"])
            assert explained["quality_target"]["target"] == expected
