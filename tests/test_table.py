"""Loading a pushed table: what a proxy accepts, what it NACKs, and why."""

from __future__ import annotations

import pytest

from dataplane.table import RuntimeTable, TableError
from megarouter.v1 import routing_pb2
from tests.conftest import key_hash


def _table(**overrides) -> routing_pb2.RoutingTable:
    table = routing_pb2.RoutingTable(
        version=7,
        providers=[
            routing_pb2.Provider(name="a", kind=routing_pb2.PROVIDER_KIND_OPENAI, base_url="http://a/v1/",
                                 credential=routing_pb2.CredentialRef(env="MR_TEST_SECRET_A")),
            routing_pb2.Provider(name="b", kind=routing_pb2.PROVIDER_KIND_OPENAI, base_url="http://b/v1"),
        ],
        models=[routing_pb2.Model(name="m1", context_window=10), routing_pb2.Model(name="m2", context_window=10)],
        endpoints=[
            routing_pb2.Endpoint(name="m1-a", model="m1", provider="a", upstream_model="up-m1"),
            routing_pb2.Endpoint(name="m2-b", model="m2", provider="b"),
            routing_pb2.Endpoint(name="m1-b", model="m1", provider="b"),
        ],
        routes=[routing_pb2.Route(name="r", tiers=[routing_pb2.Tier(models=["m2"]), routing_pb2.Tier(models=["m1"])],
                                  retry=routing_pb2.RetryPolicy(max_attempts=4))],
        api_keys=[routing_pb2.ApiKeyEntry(key_hash=key_hash("secret-1"), name="k", principal="p",
                                          allowed_models=["r"])],
    )
    for field, value in overrides.items():
        getattr(table, field).append(value)
    return table


def test_route_orders_endpoints_by_tier_and_resolves_secrets() -> None:
    secrets = {"MR_TEST_SECRET_A": "sk-a"}
    table = RuntimeTable.load(_table(), secrets=lambda ref: secrets.get(ref.env))
    route = table.resolve("r")
    assert route is not None and route.kind == "route" and route.policy.max_attempts == 4
    assert [e.name for e in route.endpoints] == ["m2-b", "m1-a", "m1-b"]
    m1a = route.endpoints[1]
    assert m1a.upstream_model == "up-m1"
    assert m1a.chat_url == "http://a/v1/chat/completions"
    assert m1a.provider.headers["Authorization"] == "Bearer sk-a"
    assert "Authorization" not in route.endpoints[0].provider.headers
    key = table.keys[key_hash("secret-1")]
    assert key.may_use("r") and not key.may_use("m1")


def test_provider_without_its_secret_is_left_out_not_nacked() -> None:
    table = RuntimeTable.load(_table(), secrets=lambda ref: None)
    assert [e.name for e in table.resolve("m1").endpoints] == ["m1-b"]


@pytest.mark.parametrize(
    ("field", "bad", "message"),
    [
        ("routes", routing_pb2.Route(name="x", tiers=[routing_pb2.Tier(models=["ghost"])]), "unknown model 'ghost'"),
        ("routes", routing_pb2.Route(name="x"), "empty degradation path"),
        ("routes", routing_pb2.Route(name="m1", tiers=[routing_pb2.Tier(models=["m1"])]), "same name as a model"),
        ("endpoints", routing_pb2.Endpoint(name="e", model="m1", provider="ghost"), "unknown provider"),
        ("endpoints", routing_pb2.Endpoint(name="m1-a", model="m1", provider="a"), "duplicate endpoint"),
        ("providers", routing_pb2.Provider(name="g", kind=routing_pb2.PROVIDER_KIND_UNSPECIFIED, base_url="http://g"),
         "cannot serve"),
        ("api_keys", routing_pb2.ApiKeyEntry(key_hash="not-a-hash", name="bad"), "malformed hash"),
    ],
)
def test_invalid_tables_are_rejected_with_a_reason(field, bad, message) -> None:
    with pytest.raises(TableError, match=message):
        RuntimeTable.load(_table(**{field: bad}), secrets=lambda ref: "x")


def test_key_is_charged_up_its_node_chain() -> None:
    table = _table()
    table.nodes.add(name="acme", kind="org")
    table.nodes.add(name="ml", parent="acme", kind="team")
    table.nodes.add(name="ml-search", parent="ml", kind="project")
    table.api_keys[0].node = "ml-search"
    key = RuntimeTable.load(table, secrets=lambda ref: "x").keys[key_hash("secret-1")]
    assert key.nodes == ("ml-search", "ml", "acme")


def test_a_key_without_a_strategy_takes_its_nearest_nodes() -> None:
    table = _table()
    table.nodes.add(name="acme", kind="org", default_strategy=routing_pb2.STRATEGY_COST)
    table.nodes.add(name="ml", parent="acme", kind="team", default_strategy=routing_pb2.STRATEGY_LATENCY)
    table.nodes.add(name="ml-search", parent="ml", kind="project")
    table.nodes.add(name="ops", parent="acme", kind="team")
    table.nodes.add(name="solo", kind="org")
    table.api_keys[0].node = "ml-search"
    for secret, node, own in (("s-ops", "ops", 0), ("s-own", "ml-search", routing_pb2.STRATEGY_AVAILABILITY),
                              ("s-solo", "solo", 0), ("s-none", "", 0)):
        table.api_keys.add(key_hash=key_hash(secret), name=secret, principal="p", node=node, default_strategy=own)
    keys = RuntimeTable.load(table, secrets=lambda ref: "x").keys
    assert keys[key_hash("secret-1")].default_strategy == "latency"   # from its team, the nearest
    assert keys[key_hash("s-ops")].default_strategy == "cost"         # from the org
    assert keys[key_hash("s-own")].default_strategy == "availability"  # its own
    assert keys[key_hash("s-solo")].default_strategy == ""            # nobody sets one: the route decides
    assert keys[key_hash("s-none")].default_strategy == ""


def test_deep_trees_load_and_cycles_are_rejected() -> None:
    table = _table()
    table.nodes.add(name="n0", kind="org")
    for depth in range(1, 3000):  # deeper than Python's recursion limit
        table.nodes.add(name=f"n{depth}", parent=f"n{depth - 1}", kind="team")
    table.api_keys[0].node = "n2999"
    assert len(RuntimeTable.load(table, secrets=lambda ref: "x").keys[key_hash("secret-1")].nodes) == 3000
    cyclic = _table()
    cyclic.nodes.add(name="a", parent="b", kind="team")
    cyclic.nodes.add(name="b", parent="a", kind="team")
    with pytest.raises(TableError, match="cycle"):
        RuntimeTable.load(cyclic, secrets=lambda ref: "x")
