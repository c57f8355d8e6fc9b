"""A route's quality target decides flagship or cheapest by the calibrated threshold, end to end
through a control plane, a proxy and the simulator; the explanation says why."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import aiohttp
import pytest

from dataplane.routing import complexity
from megarouter.v1 import admin_pb2, routing_pb2
from tests.conftest import API_KEY, System, build_system

EASY = "hi there!"
WORD_PROBLEM = ("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
                "How many clips did she sell altogether in April and May?")
CANDIDATES = [
    "Write a persuasive essay arguing that cities should replace car lanes with bike lanes, with counterarguments.",
    "I need to plan a 10-day trip through Japan in spring on a budget. Suggest an itinerary and explain the choices.",
    "Explain the difference between a mutex and a semaphore, with an example of a deadlock and how to avoid it.",
    "What are some good names for a golden retriever puppy?",
    "Give me three synonyms for happy.",
]


def _payload(text: str) -> dict:
    return {"model": "qt", "messages": [{"role": "user", "content": text}]}


@pytest.fixture(scope="module")
async def system(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[System]:
    built = await build_system(tmp_path_factory.mktemp("quality-decision"))
    try:
        route = routing_pb2.Route(name="qt", strategy=routing_pb2.STRATEGY_COST, cost_quality_target=0.95,
                                  tiers=[routing_pb2.Tier(models=["demo-small", "demo-medium"])])
        await built.admin.PutRoute(route)
        table = await built.admin.GetRoutingTable(admin_pb2.GetRoutingTableRequest())
        await built.wait_proxy_version(table.version)
        yield built
    finally:
        await built.close()


async def _ask(system: System, text: str, **headers: str) -> tuple[str, dict]:
    async with aiohttp.ClientSession() as session:
        async with session.post(system.base_url() + "/chat/completions", json=_payload(text),
                                headers={"Authorization": f"Bearer {API_KEY}", "x-megarouter-explain": "1",
                                         **headers}) as response:
            assert response.status == 200, await response.text()
            return response.headers["x-megarouter-model"], json.loads(response.headers["x-megarouter-explain"])


async def test_easy_goes_cheap_and_hard_goes_to_the_flagship(system: System) -> None:
    threshold = complexity.quality_calibration(0.95)["score_threshold"]
    scored = {text: complexity.estimate(_payload(text)).score for text in CANDIDATES}
    hard = max(scored, key=scored.get)
    assert complexity.estimate(_payload(EASY)).score < threshold <= scored[hard]

    model, explained = await _ask(system, EASY)
    assert model == "demo-small"
    decision = explained["quality_target"]
    assert decision["target"] == 0.95 and decision["decision"] == "cheapest"
    assert decision["threshold"] == round(threshold, 4)
    assert decision["predicted_win_rate"] == 1.0 - decision["score"]

    model, explained = await _ask(system, hard)
    assert model == "demo-medium"
    decision = explained["quality_target"]
    assert decision["decision"] == "flagship" and decision["predicted_win_rate"] == 1.0
    assert decision["score"] == round(scored[hard], 4)


async def test_a_request_header_overrides_the_route_target(system: System) -> None:
    problem = WORD_PROBLEM
    score = complexity.estimate(_payload(problem)).score
    strict = complexity.quality_calibration(0.95)["score_threshold"]
    # The loosest calibrated target whose threshold is above this prompt's score.
    loose = next(row["target"] for row in complexity.load_model().quality_targets if row["threshold"] > score)
    assert strict <= score
    model, explained = await _ask(system, problem)                       # the route's 0.95
    assert model == "demo-medium" and explained["quality_target"]["decision"] == "flagship"
    model, explained = await _ask(system, problem, **{"x-megarouter-quality-target": str(loose)})
    assert model == "demo-small"
    assert explained["quality_target"]["target"] == loose and explained["quality_target"]["decision"] == "cheapest"
    # Above every calibrated target, only the flagship keeps that share: even a greeting goes there.
    model, explained = await _ask(system, EASY, **{"x-megarouter-quality-target": "1"})
    assert model == "demo-medium" and explained["quality_target"]["decision"] == "flagship"


async def test_min_quality_still_holds_under_a_quality_target(system: System) -> None:
    model, explained = await _ask(system, EASY, **{"x-megarouter-min-quality": "4"})
    assert model == "demo-medium"
    assert explained["quality_target"]["decision"] == "cheapest"   # cheapest *above the floor*
