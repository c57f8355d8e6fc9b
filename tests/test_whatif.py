"""What-if replay: profiles, usage logs (megarouter.whatif), cost numbers through the real router
(dataplane.whatif_replay), and the CLI."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from dataplane import whatif_replay
from dataplane.whatif_replay import simulate
from megarouter import whatif
from megarouter.admin_client import admin_channel
from megarouter.v1 import routing_pb2
from megarouter.whatif import (
    DEFAULT_POOL,
    PoolModel,
    ProfileError,
    Request,
    WhatIfError,
    Workload,
    catalog_pool,
    load_profile,
    parse_log,
    parse_profile,
    profile_names,
    profile_workload,
)

ROOT = Path(__file__).resolve().parent.parent
BUILT_IN = ("support-chat", "rag-summarise", "coding-assistant", "mixed-enterprise")
ALL_CHAT = routing_pb2.Capabilities(tools=True, vision=True, json_mode=True, streaming=True)


def pool_model(name: str, provider: str, price_in: float, price_out: float, quality: int) -> PoolModel:
    proto = routing_pb2.Model(name=name, input_price_per_mtok=price_in, output_price_per_mtok=price_out,
                              context_window=100_000, max_output_tokens=8_000, capabilities=ALL_CHAT,
                              quality_tier=quality)
    return PoolModel(name, provider, proto)


def request(prompt: int, completion: int, needed: int, weight: float, caps=()) -> Request:
    return Request(prompt, completion, "chat", needed, frozenset(caps), weight)


def minimal_profile(**overrides) -> dict:
    doc = {
        "name": "tiny",
        "description": "a test workload",
        "source": "made up for a test",
        "tokens_per_month": 1_000_000,
        "tasks": {"chat": {"share": 1.0, "prompt_tokens": 300, "completion_tokens": 100,
                           "needed_quality": {3: 1.0}}},
    }
    doc.update(overrides)
    return doc


# ------------------------------------------------------------------------------ profiles


def test_built_in_profiles_load_and_say_where_their_numbers_come_from() -> None:
    assert set(BUILT_IN) <= set(profile_names())
    for name in BUILT_IN:
        profile = load_profile(name)
        assert profile.name == name
        assert "illustrative" in profile.source.lower()
        assert abs(sum(t.share for t in profile.tasks) - 1) < 1e-9
        assert profile.tokens_per_month and profile.input_share is not None
        assert abs(profile.expected_input_share - profile.input_share) <= whatif.INPUT_SHARE_TOLERANCE


def test_profile_workload_matches_the_stated_volume_and_is_deterministic() -> None:
    profile = load_profile("support-chat")
    workload = profile_workload(profile, samples=2_000, seed=5)
    assert len(workload.requests) == 2_000
    total = workload.input_tokens_per_month + workload.output_tokens_per_month
    assert total == pytest.approx(profile.tokens_per_month)
    assert workload.input_tokens_per_month / total == pytest.approx(profile.input_share, abs=0.03)
    # Tasks are stratified by share.
    chat = sum(1 for r in workload.requests if r.task == "chat")
    assert chat == round(2_000 * next(t.share for t in profile.tasks if t.task == "chat"))
    assert profile_workload(profile, samples=2_000, seed=5).requests == workload.requests
    assert profile_workload(profile, samples=2_000, seed=6).requests != workload.requests


@pytest.mark.parametrize(("change", "message"), [
    ({"tasks": {"poetry": {"share": 1.0, "prompt_tokens": 1, "completion_tokens": 1, "needed_quality": 3}}},
     "tasks.poetry: unknown task"),
    ({"source": ""}, "source: is required"),
    ({"requests_per_month": 1000}, "exactly one of tokens_per_month and requests_per_month"),
    ({"tokens_per_month": -5}, "tokens_per_month: must be a positive number"),
    ({"input_share": 1.5}, "input_share: must be a number between 0 and 1"),
    ({"input_share": 0.25}, "input_share: 0.25 disagrees with the task mix"),
    ({"colour": "blue"}, "colour: unknown field"),
    ({"tasks": {"chat": {"share": 0.5, "prompt_tokens": 1, "completion_tokens": 1, "needed_quality": 3}}},
     "tasks: shares must add up to 1"),
    ({"tasks": {"chat": {"share": 1, "prompt_tokens": {"median": 500, "p90": 400}, "completion_tokens": 1,
                         "needed_quality": 3}}}, "tasks.chat.prompt_tokens.p90: must be a number above the median"),
    ({"tasks": {"chat": {"share": 1, "prompt_tokens": "lots", "completion_tokens": 1, "needed_quality": 3}}},
     "tasks.chat.prompt_tokens: must be an integer"),
    ({"tasks": {"chat": {"share": 1, "prompt_tokens": 1, "completion_tokens": 1, "needed_quality": {7: 1.0}}}},
     "tasks.chat.needed_quality: tiers are integers 0-5"),
    ({"tasks": {"chat": {"share": 1, "prompt_tokens": 1, "completion_tokens": 1,
                         "needed_quality": {2: 0.5, 3: 0.2}}}}, "tasks.chat.needed_quality: shares must add up"),
    ({"tasks": {"chat": {"share": 1, "prompt_tokens": 1, "completion_tokens": 1, "needed_quality": 3,
                         "tools": 2}}}, "tasks.chat.tools: must be a probability"),
    ({"tasks": {"chat": {"share": 1, "prompt_tokens": 1, "needed_quality": 3}}},
     "tasks.chat.completion_tokens: is required"),
])
def test_profile_validation_names_the_field(change: dict, message: str) -> None:
    with pytest.raises(ProfileError) as info:
        parse_profile(minimal_profile(**change), "tiny.yaml")
    assert str(info.value).startswith("tiny.yaml: ")
    assert message in str(info.value)


def test_profile_distribution_forms_and_files(tmp_path: Path) -> None:
    doc = minimal_profile(input_share=0.75, tasks={"code": {
        "share": 1, "prompt_tokens": {"uniform": [200, 400]},
        "completion_tokens": {"median": 80, "p90": 150, "min": 50, "max": 200}, "needed_quality": 4}})
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(doc))
    profile = load_profile(str(path))
    workload = profile_workload(profile, samples=500)
    assert all(200 <= r.prompt_tokens <= 400 and 50 <= r.completion_tokens <= 200 for r in workload.requests)
    assert {r.needed_quality for r in workload.requests} == {4}


def test_unknown_and_unreadable_profiles() -> None:
    with pytest.raises(ProfileError, match="unknown profile 'nope'; built-in: .*support-chat"):
        load_profile("nope")
    with pytest.raises(ProfileError, match="cannot read profile"):
        load_profile("/nonexistent/dir/x.yaml")


# ------------------------------------------------------------------------------ usage logs


def test_log_lines_are_parsed_weighted_and_merged() -> None:
    lines = [
        '{"prompt_tokens": 1000, "completion_tokens": 200, "task": "code", "tools": true, "stream": true}\n',
        "\n",
        '{"prompt_tokens": 1000, "completion_tokens": 200, "task": "code", "tools": true, "stream": true,'
        ' "count": 3, "model": "ignored"}\n',
        '{"prompt_tokens": 50, "completion_tokens": 5, "task": "classification", "needed_quality": 1}\n',
        '{"prompt_tokens": 10, "completion_tokens": 10}\n',
    ]
    workload = parse_log(lines, "u.jsonl", log_days=15)
    by_task = {r.task: r for r in workload.requests}
    code = by_task["code"]
    assert code.weight == 8   # (1 + 3) requests in 15 days -> 8 a month
    assert code.capabilities == frozenset({"tools", "streaming"})
    assert code.needed_quality == whatif.TASK_DEFAULT_QUALITY["code"]
    assert by_task["classification"].needed_quality == 1
    assert by_task["chat"].needed_quality == whatif.TASK_DEFAULT_QUALITY["chat"]   # no task: chat
    assert workload.requests_per_month == 12


@pytest.mark.parametrize(("bad", "message"), [
    ('{"prompt_tokens": 10, "completion_tokens": ', "not valid JSON"),
    ('[1, 2]', "expected a JSON object"),
    ('{"prompt_tokens": "10", "completion_tokens": 5}', 'prompt_tokens must be a non-negative integer, got "10"'),
    ('{"prompt_tokens": 10, "completion_tokens": -1}', "completion_tokens must be a non-negative integer"),
    ('{"prompt_tokens": 10}', "completion_tokens is required"),
    ('{"completion_tokens": 10}', "prompt_tokens is required"),
    ('{"prompt_tokens": 1, "completion_tokens": 1, "task": "poetry"}', "task must be one of chat"),
    ('{"prompt_tokens": 1, "completion_tokens": 1, "count": 0}', "count must be a positive number"),
    ('{"prompt_tokens": 1, "completion_tokens": 1, "tools": "yes"}', "tools must be true or false"),
    ('{"prompt_tokens": 1, "completion_tokens": 1, "needed_quality": 9}', "needed_quality must be an integer 0-5"),
])
def test_a_bad_log_line_is_reported_with_its_number(bad: str, message: str) -> None:
    lines = ['{"prompt_tokens": 10, "completion_tokens": 5}\n', "\n", bad + "\n"]
    with pytest.raises(WhatIfError) as info:
        parse_log(lines, "usage.jsonl")
    assert str(info.value).startswith("usage.jsonl:3: ")
    assert message in str(info.value)


def test_empty_log_and_bad_period() -> None:
    with pytest.raises(WhatIfError, match="no requests"):
        parse_log(["\n"], "empty.jsonl")
    with pytest.raises(WhatIfError, match="--log-days"):
        parse_log(['{"prompt_tokens": 1, "completion_tokens": 1}'], log_days=0)


def test_prompt_text_goes_through_the_complexity_estimator() -> None:
    seen = []

    def estimate(payload):
        seen.append(payload)
        return SimpleNamespace(score=0.9, task="maths", prompt_tokens=42, needed_quality=5)

    workload = parse_log(['{"prompt": "prove it", "completion_tokens": 30, "stream": true}'], estimator=estimate)
    (only,) = workload.requests
    assert (only.prompt_tokens, only.task, only.needed_quality) == (42, "maths", 5)
    assert seen[0]["messages"] == [{"role": "user", "content": "prove it"}] and seen[0]["stream"] is True


def test_prompt_text_without_the_estimator_is_a_clear_error() -> None:
    # megarouter.whatif has no estimator of its own (it is the data plane's): the caller passes one.
    with pytest.raises(WhatIfError, match=r"log.jsonl:1: has prompt text, which needs the complexity estimator"):
        parse_log(['{"prompt": "hi", "prompt_tokens": 3, "completion_tokens": 3}'], "log.jsonl")


def test_the_replay_passes_the_data_plane_estimator() -> None:
    from dataplane.routing.complexity import estimate

    line = '{"prompt": "Prove that there are infinitely many primes.", "completion_tokens": 300}'
    (only,) = parse_log([line], estimator=whatif_replay.estimate_complexity).requests
    expected = estimate({"model": "whatif", "max_tokens": 300,
                         "messages": [{"role": "user", "content": "Prove that there are infinitely many primes."}]})
    assert only.needed_quality == expected.needed_quality and only.prompt_tokens == expected.prompt_tokens > 0


# ------------------------------------------------------------------------------ simulation


def test_costs_of_a_hand_computable_workload() -> None:
    # big: $10 / $30 per Mtok, tier 5; small: $1 / $2 per Mtok, tier 3.
    pool = [pool_model("big", "pa", 10, 30, 5), pool_model("small", "pb", 1, 2, 3)]
    workload = Workload("test", "hand-computed", [
        request(1_000, 500, needed=3, weight=100),   # big $0.025 each, small $0.002
        request(2_000, 1_000, needed=5, weight=10),  # big $0.05 each, small $0.004
    ])
    report = simulate(workload, pool)
    assert report.flagship == "big"   # highest tier

    flagship = report.result("flagship-only")
    assert flagship.cost_usd == pytest.approx(100 * 0.025 + 10 * 0.05)    # $3.00
    assert report.saving(flagship) == 0
    assert flagship.avg_quality == 5 and flagship.below_needed == 0

    # Cost: the cheapest model meeting each request's needed tier.
    cost = report.result("cost")
    assert cost.cost_usd == pytest.approx(100 * 0.002 + 10 * 0.05)        # $0.70
    assert report.saving(cost) == pytest.approx((3.0 - 0.7) / 3.0 * 100)  # 76.67 %
    assert dict(cost.by_model) == {"small": 100, "big": 10}
    assert cost.avg_quality == pytest.approx((3 * 100 + 5 * 10) / 110)
    assert cost.below_needed == 0

    # Balanced (default weights): small scores 0.3*0.08 + 0.2*(1-3/5) = 0.104 < big's 0.3 for both requests.
    balanced = report.result("balanced")
    assert balanced.cost_usd == pytest.approx(100 * 0.002 + 10 * 0.004)   # $0.24
    assert balanced.share(balanced.below_needed) == pytest.approx(10 / 110)

    # No live health: latency and availability keep pool order, so "big" (first) gets everything.
    for name in ("latency", "availability"):
        assert report.result(name).cost_usd == pytest.approx(3.0)
        assert report.saving(report.result(name)) == pytest.approx(0)

    # Reordering the pool changes only the priors' pick.
    swapped = simulate(workload, list(reversed(pool)))
    assert swapped.result("latency").cost_usd == pytest.approx(100 * 0.002 + 10 * 0.004)
    assert swapped.result("cost").cost_usd == pytest.approx(0.7)


def test_latency_ms_models_speeds() -> None:
    pool = [pool_model("big", "pa", 10, 30, 5), pool_model("small", "pb", 1, 2, 3)]
    workload = Workload("test", "t", [request(1_000, 500, needed=3, weight=1)])
    report = simulate(workload, pool, latency_ms={"big": 2_000, "small": 300})
    assert dict(report.result("latency").by_model) == {"small": 1}
    with pytest.raises(WhatIfError, match="not in the pool"):
        whatif._parse_latency("huge=5", ["big", "small"])
    with pytest.raises(WhatIfError, match="model=milliseconds"):
        whatif._parse_latency("big=fast", ["big", "small"])


@pytest.mark.parametrize("name", BUILT_IN)
def test_cost_never_serves_below_the_needed_quality_when_a_model_qualifies(name: str) -> None:
    workload = profile_workload(load_profile(name), samples=1_500)
    report = simulate(workload, catalog_pool(DEFAULT_POOL))
    cost = report.result("cost")
    assert cost.below_needed == 0 and cost.unserved == 0
    assert report.saving(report.result("flagship-only")) == 0
    assert report.saving(cost) > 0
    for result in report.results:
        assert result.requests == pytest.approx(workload.requests_per_month)
        assert sum(result.by_model.values()) + result.unserved == pytest.approx(result.requests)


def test_cost_falls_short_only_where_no_model_qualifies() -> None:
    pool = [pool_model("mid", "pa", 3, 9, 4), pool_model("small", "pb", 1, 2, 3)]
    workload = Workload("test", "t", [request(100, 100, needed=5, weight=2), request(100, 100, needed=4, weight=3),
                                      request(100, 100, needed=2, weight=5)])
    cost = simulate(workload, pool).result("cost")
    assert cost.below_needed == 2                     # only the tier-5 requests: nothing qualifies
    assert dict(cost.by_model) == {"mid": 5, "small": 5}


def test_unservable_requests_are_counted_not_crashed() -> None:
    no_vision = pool_model("text-only", "pa", 1, 2, 3)
    no_vision.proto.capabilities.vision = False
    pool = [no_vision, pool_model("seeing", "pb", 5, 10, 4)]
    workload = Workload("test", "t", [request(100, 100, 3, 1, caps=("vision",)), request(100, 100, 3, 1)])
    report = simulate(workload, pool, flagship="text-only")
    flagship = report.result("flagship-only")
    assert flagship.unserved == 1 and dict(flagship.unserved_reasons) == {"model_not_capable": 1}
    assert any("cannot serve" in note for note in report.notes)


def test_flagship_choice_and_validation() -> None:
    pool = catalog_pool(["gpt-4o-mini", "gemini-2.5-pro", "claude-sonnet-4-5"])
    assert whatif.default_flagship(pool) == "claude-sonnet-4-5"   # tier 5 and priciest
    with pytest.raises(WhatIfError, match="not in the catalog"):
        catalog_pool(["gpt-4o", "no-such-model-xyz"])
    with pytest.raises(WhatIfError, match="twice"):
        catalog_pool(["gpt-4o", "gpt-4o"])
    workload = Workload("test", "t", [request(100, 100, 3, 1)])
    with pytest.raises(WhatIfError, match="flagship 'o3' is not among"):
        simulate(workload, pool, flagship="o3")


async def test_a_route_from_the_control_plane_keeps_its_tiers_and_floor() -> None:
    class FakeStub:
        def __init__(self) -> None:
            self.models = {m.name: m.proto for m in [pool_model("a-big", "x", 10, 30, 5),
                                                     pool_model("a-mid", "x", 2, 4, 4),
                                                     pool_model("a-small", "x", 1, 2, 2)]}

        async def GetRoute(self, request):   # noqa: N802 - gRPC method name
            return routing_pb2.Route(name=request.name, quality_floor=3, tiers=[
                routing_pb2.Tier(models=["a-mid", "a-small"]), routing_pb2.Tier(models=["a-big"])])

        async def GetModel(self, request):   # noqa: N802 - gRPC method name
            return self.models[request.name]

    route, pool = await whatif.route_pool(FakeStub(), "auto")
    assert [m.name for m in pool] == ["a-mid", "a-small", "a-big"]
    workload = Workload("test", "t", [request(1_000, 1_000, needed=2, weight=1)])
    report = simulate(workload, pool, route=route)
    assert report.flagship == "a-big" and report.route == "auto"
    # a-small is below the route's floor; a-mid is in the first tier, so every strategy picks it.
    for name in whatif_replay.STRATEGY_ORDER:
        assert dict(report.result(name).by_model) == {"a-mid": 1}


# ------------------------------------------------------------------------------ CLI


def ctl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "megarouter.ctl", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_cli_prints_the_table() -> None:
    result = ctl("whatif", "--profile", "support-chat")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "STRATEGY" in out and "USD/MONTH" in out and "SAVED VS FLAGSHIP" in out
    for row in ("flagship-only", "cost", "balanced", "latency", "availability"):
        assert f"\n{row} " in out
    assert "claude-sonnet-4-5 (flagship)" in out
    assert "Illustrative assumptions" in out and "prior" in out


def test_cli_json_output_parses() -> None:
    result = ctl("whatif", "--profile", "rag-summarise", "--models", "gpt-4o,gpt-4o-mini,gemini-2.5-pro",
                 "--samples", "2000", "-o", "json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["flagship"] == "gemini-2.5-pro"
    results = {r["strategy"]: r for r in report["results"]}
    assert list(results) == ["flagship-only", "cost", "balanced", "latency", "availability"]
    assert results["flagship-only"]["saving_vs_flagship_pct"] == 0
    assert results["cost"]["below_needed_quality_share"] == 0
    assert results["cost"]["cost_usd_per_month"] < results["flagship-only"]["cost_usd_per_month"]
    assert sum(results["cost"]["model_share"].values()) == pytest.approx(1, abs=1e-4)
    assert {m["name"] for m in report["models"]} == {"gpt-4o", "gpt-4o-mini", "gemini-2.5-pro"}


def test_cli_reports_a_bad_log_line_without_a_traceback(tmp_path: Path) -> None:
    log = tmp_path / "usage.jsonl"
    log.write_text('{"prompt_tokens": 10, "completion_tokens": 5, "task": "code"}\n{"prompt_tokens": 10}\n')
    result = ctl("whatif", "--log", str(log))
    assert result.returncode == 1
    assert f"error: {log}:2: completion_tokens is required" in result.stderr
    assert "Traceback" not in result.stderr
    good = tmp_path / "good.jsonl"
    good.write_text('{"prompt_tokens": 1000, "completion_tokens": 500, "task": "code", "count": 40}\n')
    result = ctl("whatif", "--log", str(good), "--flagship", "gpt-4o", "-o", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["workload"]["requests_per_month"] == 40


def test_cli_estimates_log_lines_with_prompt_text(tmp_path: Path) -> None:
    log = tmp_path / "prompts.jsonl"
    log.write_text('{"prompt": "Prove that there are infinitely many primes.", "completion_tokens": 300}\n'
                   '{"prompt_tokens": 100, "completion_tokens": 20, "task": "classification"}\n')
    result = ctl("whatif", "--log", str(log), "-o", "json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["workload"]["requests_per_month"] == 2
    assumptions = report["workload"]["assumptions"]
    assert any("complexity estimator for lines with prompt text (1 here)" in text for text in assumptions)


def test_cli_unknown_profile_is_an_error() -> None:
    result = ctl("whatif", "--profile", "nope")
    assert result.returncode == 1 and "unknown profile 'nope'" in result.stderr and "Traceback" not in result.stderr


async def test_cli_route_from_a_running_control_plane(tmp_path: Path) -> None:
    from megarouter.manifest import apply_resources, parse_manifest
    from megarouter.v1 import admin_pb2_grpc
    from tests.conftest import start_controlplane

    controlplane = await start_controlplane(tmp_path)
    try:
        address = f"127.0.0.1:{controlplane.port}"
        async with admin_channel(address) as channel:
            await apply_resources(admin_pb2_grpc.AdminStub(channel), parse_manifest("""
provider: {name: openai, kind: openai, base_url: 'https://api.openai.com/v1'}
---
models:
  - {name: house-model, input_price_per_mtok: 0.01, output_price_per_mtok: 0.02, context_window: 500000,
     quality_tier: 3, capabilities: {tools: true, vision: true, streaming: true, json_mode: true}}
---
endpoints:
  - {name: mini, model: gpt-4o-mini, provider: openai}
  - {name: house, model: house-model, provider: openai}
  - {name: big, model: gpt-4o, provider: openai}
---
routes:
  - {name: auto, quality_floor: 2, tiers: [{models: [gpt-4o-mini, house-model]}, {models: [gpt-4o]}]}
"""))
        result = await asyncio.to_thread(ctl, "--server", address, "whatif", "--profile", "support-chat",
                                         "--route", "auto", "--samples", "1000", "-o", "json")
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert report["route"] == "auto" and report["flagship"] == "gpt-4o"
        prices = {m["name"]: (m["input_price_per_mtok"], m["prices_from"]) for m in report["models"]}
        assert prices == {"gpt-4o-mini": (0.15, "catalog"), "house-model": (0.01, "admin"), "gpt-4o": (2.5, "catalog")}
        cost = next(r for r in report["results"] if r["strategy"] == "cost")
        assert set(cost["model_share"]) <= {"gpt-4o-mini", "house-model"}   # the first tier serves
        missing = await asyncio.to_thread(ctl, "--server", address, "whatif", "--profile", "support-chat",
                                          "--route", "nope")
        assert missing.returncode == 1 and "not found" in missing.stderr
    finally:
        await controlplane.stop()


def test_the_seed_example_profile_and_the_measured_quality_target_savings() -> None:
    from dataplane.routing.complexity import quality_calibration

    profile = whatif.load_profile("seed-example")
    assert profile.tokens_per_month == 1_000_000_000 and profile.input_share == 0.25
    workload = profile_workload(profile, samples=2_000)
    assert "needed quality (assumed by the profile, not measured)" in "\n".join(workload.assumptions)

    # Hand-computable: big $10 / $30, small $1 / $2 per Mtok; one request of 1,000 + 500 tokens, weight 100.
    pool = [pool_model("big", "pa", 10, 30, 5), pool_model("small", "pb", 1, 2, 3)]
    report = simulate(Workload("test", "hand-computed", [request(1_000, 500, needed=3, weight=100)]), pool)
    lines = whatif_replay.measured_quality_target(report, 0.95)
    measured = quality_calibration(0.95)["measured"]
    assert set(measured) == {"chat", "mmlu", "gsm8k"}
    flagship, cheap = 100 * 0.025, 100 * 0.002
    for dataset, values in measured.items():
        (line,) = [text for text in lines if f"traffic like {dataset}:" in text]
        cost = values["strong_share"] * flagship + (1 - values["strong_share"]) * cheap
        assert f"${cost:,.2f}/month" in line
        assert f"{(1 - cost / flagship) * 100:.1f}% saved" in line
    assert "between big and small" in lines[0]
    assert "measured" in lines[-1] and "not assumed" in lines[-1]
