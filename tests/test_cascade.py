"""`cost_mode: cascade` end to end (control plane, proxy, simulator), and the acceptance
check's rules on their own."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import aiohttp
import pytest

from dataplane.routing import cascade, complexity
from megarouter.v1 import admin_pb2, routing_pb2
from tests.conftest import API_KEY, System, build_system

CAPPED_KEY = "sk-cascade-capped-0123456789abcdef"
QUESTION = "Explain how a hash map handles collisions."


@pytest.fixture(scope="module")
async def system(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[System]:
    built = await build_system(tmp_path_factory.mktemp("cascade"))
    try:
        await built.admin.PutRoute(routing_pb2.Route(
            name="cascade", strategy=routing_pb2.STRATEGY_COST, cost_mode="cascade",
            tiers=[routing_pb2.Tier(models=["demo-small", "demo-medium"])]))
        await built.admin.CreateApiKey(admin_pb2.CreateApiKeyRequest(name="capped", principal="team-capped",
                                                                     secret=CAPPED_KEY))
        # The capped key may call the flagship once a day: its second escalation is refused.
        await built.admin.PutBudget(routing_pb2.Budget(name="capped-flagship", key="capped", model="demo-medium",
                                                       window="daily", unit="requests", limit=1, action="pause"))
        table = await built.admin.GetRoutingTable(admin_pb2.GetRoutingTableRequest())
        await built.wait_proxy_version(table.version)
        yield built
    finally:
        await built.close()


async def _post(system: System, body: dict, key: str = API_KEY) -> tuple[int, dict, dict | str]:
    async with aiohttp.ClientSession() as session:
        async with session.post(system.base_url() + "/chat/completions", json={"model": "cascade", **body},
                                headers={"Authorization": f"Bearer {key}"}) as response:
            text = await response.text()
            return response.status, dict(response.headers), (json.loads(text) if text.startswith("{") else text)


async def test_a_structured_answer_that_passes_is_kept(system: System) -> None:
    status, headers, body = await _post(system, {
        "messages": [{"role": "user", "content": "Extract the city as JSON: I live in Lyon."}],
        "response_format": {"type": "json_object"}})
    assert status == 200, body
    assert headers["x-megarouter-cascade"] == "accepted"
    assert headers["x-megarouter-model"] == "demo-small"
    json.loads(body["choices"][0]["message"]["content"])


async def test_a_rejected_answer_escalates_and_both_calls_are_charged(system: System) -> None:
    status, headers, body = await _post(system, {"messages": [{"role": "user", "content": QUESTION}],
                                                 "max_tokens": 4})
    assert status == 200, body
    assert headers["x-megarouter-cascade"] == "escalated"
    assert headers["x-megarouter-cascade-reason"] == "truncated"
    assert headers["x-megarouter-cascade-first-model"] == "demo-small"
    assert headers["x-megarouter-model"] == "demo-medium" and body["model"]
    # The cost header is both calls': the cheap one's plus the flagship's, at catalog prices.
    usage = body["usage"]
    small = (usage["prompt_tokens"] * 0.15 + usage["completion_tokens"] * 0.6) / 1e6
    medium = (usage["prompt_tokens"] * 2.5 + usage["completion_tokens"] * 10) / 1e6
    assert float(headers["x-megarouter-cost-usd"]) == pytest.approx(small + medium, rel=1e-6)


async def test_free_text_is_judged_by_its_length(system: System) -> None:
    status, headers, _ = await _post(system, {"messages": [{"role": "user", "content": QUESTION}]})
    assert status == 200
    # The simulator answers in 16 words; a strong model writes far more for this: escalated.
    verdict = cascade.judge({}, {"choices": [{"finish_reason": "stop", "message": {"content": "word " * 16}}]},
                            complexity.estimate({"messages": [{"role": "user", "content": QUESTION}]}))
    assert not verdict.accepted and verdict.p_worse is not None
    assert headers["x-megarouter-cascade"] == "escalated"
    assert headers["x-megarouter-cascade-reason"] == verdict.reason


async def test_explain_describes_the_call_that_answered(system: System) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(system.base_url() + "/chat/completions",
                                json={"model": "cascade", "max_tokens": 4,
                                      "messages": [{"role": "user", "content": QUESTION}]},
                                headers={"Authorization": f"Bearer {API_KEY}", "x-megarouter-explain": "1"}) as r:
            assert r.status == 200
            explained = json.loads(r.headers["x-megarouter-explain"])
    assert r.headers["x-megarouter-cascade"] == "escalated"
    assert explained["strategy"] == "cost" and explained["needed_quality"] == 4   # the flagship tier
    assert {c["endpoint"] for c in explained["candidates"]} >= {"medium-sim"}


async def test_a_stream_is_served_without_a_cascade_and_says_so(system: System) -> None:
    status, headers, body = await _post(system, {"messages": [{"role": "user", "content": QUESTION}],
                                                 "stream": True})
    assert status == 200
    assert headers["x-megarouter-cascade"] == "skipped (streaming)"
    assert "data: [DONE]" in body


async def test_a_budget_that_refuses_the_escalation_keeps_the_first_answer(system: System) -> None:
    request = {"messages": [{"role": "user", "content": QUESTION}], "max_tokens": 4}
    status, headers, _ = await _post(system, request, key=CAPPED_KEY)
    assert status == 200 and headers["x-megarouter-cascade"] == "escalated"
    status, headers, body = await _post(system, request, key=CAPPED_KEY)
    assert status == 200, body
    assert headers["x-megarouter-cascade"] == "kept (a budget refused the escalation)"
    assert headers["x-megarouter-model"] == "demo-small"


# ------------------------------------------------------------------ the rules


def _answer(content=None, finish="stop", **message) -> dict:
    return {"choices": [{"finish_reason": finish, "message": {"content": content, **message}}]}


EASY = complexity.estimate({"messages": [{"role": "user", "content": "hi"}]})
TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]


@pytest.mark.parametrize(("payload", "answer", "accepted", "reason"), [
    ({}, _answer("x", finish="length"), False, "truncated"),
    ({}, _answer(""), False, "empty"),
    ({}, _answer(None, refusal="no"), False, "refusal"),
    ({}, _answer("I'm sorry, but I can't help with that."), False, "refusal or hedging"),
    ({}, _answer("As an AI language model, I cannot browse."), False, "refusal or hedging"),
    ({"response_format": {"type": "json_object"}}, _answer("{not json"), False, "invalid JSON"),
    ({"response_format": {"type": "json_object"}}, _answer("[1, 2]"), False, "JSON is not an object"),
    ({"response_format": {"type": "json_schema", "json_schema": {"schema": {"required": ["city"]}}}},
     _answer('{"town": "Lyon"}'), False, "JSON lacks required keys"),
    ({"response_format": {"type": "json_schema", "json_schema": {"schema": {"required": ["city"]}}}},
     _answer('{"city": "Lyon"}'), True, "valid JSON"),
    ({"tools": TOOLS}, _answer(None, tool_calls=[{"function": {"name": "other", "arguments": "{}"}}]), False,
     "tool call names no offered tool"),
    ({"tools": TOOLS}, _answer(None, tool_calls=[{"function": {"name": "lookup", "arguments": "{x"}}]), False,
     "tool call arguments are not JSON"),
    ({"tools": TOOLS}, _answer(None, tool_calls=[{"function": {"name": "lookup", "arguments": '{"q": 1}'}}]), True,
     "valid tool calls"),
    ({}, {"choices": []}, False, "no answer"),
])
def test_acceptance_rules(payload: dict, answer: dict, accepted: bool, reason: str) -> None:
    verdict = cascade.judge(payload, answer, EASY)
    assert (verdict.accepted, verdict.reason) == (accepted, reason)


def test_low_logprobs_reject_and_length_decides_free_text() -> None:
    text = "word " * 300
    confident = {"choices": [{"finish_reason": "stop", "message": {"content": text},
                              "logprobs": {"content": [{"logprob": -0.1}] * 5}}]}
    unsure = {"choices": [{"finish_reason": "stop", "message": {"content": text},
                           "logprobs": {"content": [{"logprob": -2.5}] * 5}}]}
    assert cascade.judge({}, unsure, EASY).reason == "low confidence (logprobs)"
    assert cascade.judge({}, confident, EASY).reason != "low confidence (logprobs)"
    model = cascade.load_model()
    # P(worse) rises as the answer falls far short of the expected length (the fitted U-shape's left arm).
    assert model.p_worse(20, EASY) > model.p_worse(1500, EASY)


async def test_an_unknown_cost_mode_is_refused_naming_the_field(system: System) -> None:
    import grpc

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await system.admin.PutRoute(routing_pb2.Route(name="bad-mode", cost_mode="cascad",
                                                      tiers=[routing_pb2.Tier(models=["demo-small"])]))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "cost_mode" in caught.value.details()


def test_a_missing_or_corrupt_acceptance_model_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(cascade.CascadeModelError, match="cannot read the cascade model"):
        cascade.use_model(tmp_path / "absent.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "megarouter-cascade/1"}')
    with pytest.raises(cascade.CascadeModelError, match="corrupt.*scripts/train_cascade.py"):
        cascade.use_model(bad)
    cascade.use_model()   # the shipped one again, for the other tests
