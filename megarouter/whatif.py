"""What-if inputs: the workload to replay and the models to route it among.

    megarouterctl whatif --profile support-chat
    megarouterctl whatif --log usage.jsonl --models gpt-4o,gpt-4o-mini,gemini-2.5-flash
    megarouterctl --server cp:50051 whatif --profile coding-assistant --route auto

A workload is a usage log (`read_log`, `parse_log`) or a built-in profile
(`load_profile`, `parse_profile`; the YAML files in megarouter/workloads)
sampled with a seeded RNG (`profile_workload`). The pool is catalog models
(`catalog_pool`) or a route and its models as the control plane has them
(`route_pool`).

This module needs no plane. The replay itself — through the data plane's
router over a synthetic routing table, the per-strategy costs and their
rendering, and `megarouterctl whatif`'s `run` — is `dataplane.whatif_replay`;
it also passes the data plane's complexity estimator to `parse_log` for log
lines with prompt text.
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from megarouter.catalog import CatalogModel, load_catalog, to_model_resource
from megarouter.resources import Model, resource_to_proto
from megarouter.v1 import routing_pb2

__all__ = [
    "DEFAULT_POOL",
    "TASKS",
    "PoolModel",
    "Profile",
    "ProfileError",
    "Request",
    "WhatIfError",
    "Workload",
    "catalog_pool",
    "default_flagship",
    "load_profile",
    "parse_log",
    "parse_profile",
    "profile_names",
    "profile_workload",
    "read_log",
    "route_pool",
]

TASKS = ("chat", "summarisation", "classification", "extraction", "code", "maths", "reasoning")
# Needed quality tier of a logged request with neither prompt text nor an
# explicit `needed_quality`: an illustrative default per task, not a measurement.
TASK_DEFAULT_QUALITY = {
    "classification": 2, "extraction": 2, "chat": 3, "summarisation": 3, "code": 4, "maths": 4, "reasoning": 5,
}
# A cross-provider pool of widely used models (all in the catalog), in the
# order the latency and availability strategies' priors fall back to.
DEFAULT_POOL = (
    "gpt-4o", "gpt-4o-mini", "claude-sonnet-4-5", "claude-haiku-4-5", "gemini-2.5-pro", "gemini-2.5-flash",
    "deepseek-chat",
)
DEFAULT_SAMPLES = 10_000
DEFAULT_SEED = 1
DAYS_PER_MONTH = 30
# A profile's declared input_share must agree with what its token
# distributions produce to within this (absolute).
INPUT_SHARE_TOLERANCE = 0.03
_SHARE_TOLERANCE = 0.01
_Z90 = 1.2815515655446004   # standard normal 90th percentile
WORKLOADS_DIR = Path(__file__).resolve().parent / "workloads"


class WhatIfError(ValueError):
    """Bad input or an impossible comparison; the message says what and where."""


class ProfileError(WhatIfError):
    pass


# --------------------------------------------------------------------------- workloads


@dataclass(frozen=True, slots=True)
class Request:
    prompt_tokens: int
    completion_tokens: int
    task: str
    needed_quality: int               # 0 = anything will do
    capabilities: frozenset[str]      # of: tools, vision, streaming
    weight: float                     # real requests per month this one stands for


@dataclass
class Workload:
    source: str                       # "profile support-chat", "log usage.jsonl"
    description: str
    requests: list[Request]
    assumptions: list[str] = field(default_factory=list)
    stated: dict[str, Any] = field(default_factory=dict)   # the volume as the profile states it

    @property
    def requests_per_month(self) -> float:
        return sum(r.weight for r in self.requests)

    @property
    def input_tokens_per_month(self) -> float:
        return sum(r.prompt_tokens * r.weight for r in self.requests)

    @property
    def output_tokens_per_month(self) -> float:
        return sum(r.completion_tokens * r.weight for r in self.requests)


@dataclass(frozen=True, slots=True)
class TokenDist:
    """Tokens per request: fixed, log-normal (median and p90) or uniform; clipped to [low, high]."""

    kind: str                         # "fixed" | "lognormal" | "uniform"
    a: float                          # fixed value | median | low
    b: float = 0.0                    # p90 | high
    low: int = 1
    high: int | None = None

    def sample(self, rng: random.Random) -> int:
        if self.kind == "fixed":
            return int(self.a)
        if self.kind == "uniform":
            return rng.randint(int(self.a), int(self.b))
        sigma = math.log(self.b / self.a) / _Z90
        value = round(rng.lognormvariate(math.log(self.a), sigma))
        value = max(self.low, value)
        return min(self.high, value) if self.high is not None else value

    def describe(self) -> str:
        if self.kind == "fixed":
            return str(int(self.a))
        if self.kind == "uniform":
            return f"uniform {int(self.a)}-{int(self.b)}"
        text = f"median {_n(self.a)}, p90 {_n(self.b)}"
        return text + (f", max {_n(self.high)}" if self.high is not None else "")


@dataclass(frozen=True, slots=True)
class TaskMix:
    task: str
    share: float                      # of requests
    prompt_tokens: TokenDist
    completion_tokens: TokenDist
    needed_quality: tuple[tuple[int, float], ...]   # (tier, probability)
    tools: float = 0.0
    vision: float = 0.0
    stream: float = 0.0


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    source: str                       # where the numbers come from
    tasks: tuple[TaskMix, ...]
    tokens_per_month: float | None = None
    requests_per_month: float | None = None
    input_share: float | None = None  # declared; checked against the distributions
    expected_input_share: float = 0.0
    origin: str = ""


def profile_names() -> list[str]:
    return sorted(path.stem for path in WORKLOADS_DIR.glob("*.yaml"))


def load_profile(name_or_path: str) -> Profile:
    """A built-in profile by name, or a profile YAML file by path."""
    if name_or_path.endswith((".yaml", ".yml")) or os.sep in name_or_path or "/" in name_or_path:
        path = Path(name_or_path)
    else:
        path = WORKLOADS_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            raise ProfileError(f"unknown profile {name_or_path!r}; built-in: {', '.join(profile_names())} "
                               "(or give the path of a .yaml profile)")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ProfileError(f"cannot read profile {path}: {exc.strerror}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ProfileError(f"{path.name}: not valid YAML: {exc}") from None
    return parse_profile(doc, path.name, default_name=path.stem)


_PROFILE_KEYS = {"name", "description", "source", "tokens_per_month", "requests_per_month", "input_share", "tasks"}
_TASK_KEYS = {"share", "prompt_tokens", "completion_tokens", "needed_quality", "tools", "vision", "stream"}


def parse_profile(doc: Any, origin: str = "<profile>", default_name: str = "") -> Profile:
    """Validate a profile document; errors name the file and the field."""
    def fail(where: str, message: str) -> ProfileError:
        return ProfileError(f"{origin}: {where}: {message}" if where else f"{origin}: {message}")

    if not isinstance(doc, dict):
        raise fail("", "a profile is a mapping with name, description, source, a volume and tasks")
    unknown = sorted(set(doc) - _PROFILE_KEYS)
    if unknown:
        raise fail(unknown[0], f"unknown field; expected some of {', '.join(sorted(_PROFILE_KEYS))}")
    name = doc.get("name", default_name)
    if not isinstance(name, str) or not name:
        raise fail("name", "must be a non-empty string")
    texts = {}
    for key in ("description", "source"):
        value = doc.get(key)
        if not isinstance(value, str) or not value.strip():
            raise fail(key, "is required: say what the workload is and where its numbers come from")
        texts[key] = " ".join(value.split())

    tokens, requests = doc.get("tokens_per_month"), doc.get("requests_per_month")
    if (tokens is None) == (requests is None):
        raise fail("", "give exactly one of tokens_per_month and requests_per_month")
    for key, value in (("tokens_per_month", tokens), ("requests_per_month", requests)):
        if value is not None and (not _is_number(value) or value <= 0):
            raise fail(key, f"must be a positive number, got {value!r}")
    input_share = doc.get("input_share")
    if input_share is not None:
        if requests is not None:
            raise fail("input_share", "goes with tokens_per_month")
        if not _is_number(input_share) or not 0 < input_share < 1:
            raise fail("input_share", f"must be a number between 0 and 1, got {input_share!r}")

    raw_tasks = doc.get("tasks")
    if not isinstance(raw_tasks, dict) or not raw_tasks:
        raise fail("tasks", f"must map task names ({', '.join(TASKS)}) to their share and distributions")
    tasks = []
    for task, spec in raw_tasks.items():
        where = f"tasks.{task}"
        if task not in TASKS:
            raise fail(where, f"unknown task; expected one of {', '.join(TASKS)}")
        if not isinstance(spec, dict):
            raise fail(where, "must be a mapping")
        unknown = sorted(set(spec) - _TASK_KEYS)
        if unknown:
            raise fail(f"{where}.{unknown[0]}", f"unknown field; expected some of {', '.join(sorted(_TASK_KEYS))}")
        share = spec.get("share")
        if not _is_number(share) or not 0 < share <= 1:
            raise fail(f"{where}.share", f"must be a number in (0, 1], got {share!r}")
        for key in ("prompt_tokens", "completion_tokens", "needed_quality"):
            if key not in spec:
                raise fail(f"{where}.{key}", "is required")
        probabilities = {}
        for key in ("tools", "vision", "stream"):
            value = spec.get(key, 0.0)
            if not _is_number(value) or not 0 <= value <= 1:
                raise fail(f"{where}.{key}", f"must be a probability between 0 and 1, got {value!r}")
            probabilities[key] = float(value)
        tasks.append(TaskMix(
            task=task,
            share=float(share),
            prompt_tokens=_token_dist(spec["prompt_tokens"], f"{where}.prompt_tokens", fail),
            completion_tokens=_token_dist(spec["completion_tokens"], f"{where}.completion_tokens", fail),
            needed_quality=_quality_dist(spec["needed_quality"], f"{where}.needed_quality", fail),
            **probabilities,
        ))
    total = sum(t.share for t in tasks)
    if abs(total - 1) > _SHARE_TOLERANCE:
        raise fail("tasks", f"shares must add up to 1, they add up to {total:g}")
    tasks = [TaskMix(t.task, t.share / total, t.prompt_tokens, t.completion_tokens, t.needed_quality,
                     t.tools, t.vision, t.stream) for t in tasks]

    expected = _expected_input_share(tasks)
    if input_share is not None and abs(expected - input_share) > INPUT_SHARE_TOLERANCE:
        raise fail("input_share", f"{input_share:g} disagrees with the task mix, whose token distributions give "
                   f"{expected:.2f} (tolerance {INPUT_SHARE_TOLERANCE}); make them agree")
    return Profile(
        name=name, description=texts["description"], source=texts["source"], tasks=tuple(tasks),
        tokens_per_month=float(tokens) if tokens is not None else None,
        requests_per_month=float(requests) if requests is not None else None,
        input_share=float(input_share) if input_share is not None else None,
        expected_input_share=expected, origin=origin,
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _token_dist(spec: Any, where: str, fail: Callable[[str, str], ProfileError]) -> TokenDist:
    shape = "an integer, {median: N, p90: N[, min: N, max: N]} or {uniform: [low, high]}"
    if _is_count(spec):
        return TokenDist("fixed", spec)
    if not isinstance(spec, dict):
        raise fail(where, f"must be {shape}, got {spec!r}")
    if "uniform" in spec:
        bounds = spec["uniform"]
        if set(spec) != {"uniform"} or not isinstance(bounds, list) or len(bounds) != 2 \
                or not all(_is_count(b) for b in bounds) or bounds[0] > bounds[1]:
            raise fail(where, "uniform must be [low, high] with integers 0 <= low <= high and nothing else")
        return TokenDist("uniform", bounds[0], bounds[1])
    unknown = sorted(set(spec) - {"median", "p90", "min", "max"})
    if unknown or "median" not in spec or "p90" not in spec:
        raise fail(where, f"must be {shape}")
    median, p90 = spec["median"], spec["p90"]
    low, high = spec.get("min", 1), spec.get("max")
    if not _is_number(median) or median < 1:
        raise fail(f"{where}.median", f"must be a number >= 1, got {median!r}")
    if not _is_number(p90) or p90 <= median:
        raise fail(f"{where}.p90", f"must be a number above the median ({median}), got {p90!r}")
    if not _is_count(low):
        raise fail(f"{where}.min", f"must be a non-negative integer, got {low!r}")
    if high is not None and (not _is_count(high) or high < max(low, median)):
        raise fail(f"{where}.max", f"must be an integer at least the median and min, got {high!r}")
    return TokenDist("lognormal", float(median), float(p90), low, high)


def _quality_dist(spec: Any, where: str, fail: Callable[[str, str], ProfileError]) -> tuple[tuple[int, float], ...]:
    if isinstance(spec, int) and not isinstance(spec, bool):
        spec = {spec: 1.0}
    if not isinstance(spec, dict) or not spec:
        raise fail(where, "must be a tier (0-5) or map tiers to shares, e.g. {2: 0.3, 3: 0.7}")
    items = []
    for tier, share in spec.items():
        if not isinstance(tier, int) or isinstance(tier, bool) or not 0 <= tier <= 5:
            raise fail(where, f"tiers are integers 0-5, got {tier!r}")
        if not _is_number(share) or share <= 0:
            raise fail(f"{where}.{tier}", f"must be a positive share, got {share!r}")
        items.append((tier, float(share)))
    total = sum(share for _, share in items)
    if abs(total - 1) > _SHARE_TOLERANCE:
        raise fail(where, f"shares must add up to 1, they add up to {total:g}")
    return tuple(sorted((tier, share / total) for tier, share in items))


def _expected_input_share(tasks: Iterable[TaskMix], draws: int = 4000) -> float:
    rng = random.Random(0)
    prompt = completion = 0.0
    for task in tasks:
        prompt += task.share * sum(task.prompt_tokens.sample(rng) for _ in range(draws)) / draws
        completion += task.share * sum(task.completion_tokens.sample(rng) for _ in range(draws)) / draws
    return prompt / (prompt + completion) if prompt + completion else 0.0


def _allocate(shares: list[float], total: int) -> list[int]:
    """Split `total` in proportion to `shares` (largest remainder): deterministic, sums exactly."""
    exact = [share * total for share in shares]
    counts = [math.floor(x) for x in exact]
    order = sorted(range(len(shares)), key=lambda i: exact[i] - counts[i], reverse=True)
    for i in order[: total - sum(counts)]:
        counts[i] += 1
    return counts


def profile_workload(profile: Profile, samples: int = DEFAULT_SAMPLES, seed: int = DEFAULT_SEED) -> Workload:
    """`samples` simulated requests drawn with a seeded RNG (tasks stratified by share), each weighted so
    the total matches the profile's monthly volume."""
    if samples < len(profile.tasks):
        raise WhatIfError(f"--samples must be at least {len(profile.tasks)} (one per task)")
    rng = random.Random(seed)
    drawn: list[tuple[int, int, str, int, frozenset[str]]] = []
    for task, count in zip(profile.tasks, _allocate([t.share for t in profile.tasks], samples), strict=True):
        tiers = [tier for tier, _ in task.needed_quality]
        odds = [share for _, share in task.needed_quality]
        for _ in range(count):
            caps = {name for name, p in (("tools", task.tools), ("vision", task.vision),
                                         ("streaming", task.stream)) if rng.random() < p}
            drawn.append((task.prompt_tokens.sample(rng), task.completion_tokens.sample(rng), task.task,
                          rng.choices(tiers, odds)[0], frozenset(caps)))
    if profile.tokens_per_month is not None:
        tokens = sum(p + c for p, c, *_ in drawn)
        if tokens == 0:
            raise WhatIfError(f"profile {profile.name}: its requests have no tokens")
        weight = profile.tokens_per_month / tokens
    else:
        weight = profile.requests_per_month / len(drawn)
    requests = [Request(p, c, task, q, caps, weight) for p, c, task, q, caps in drawn]

    if profile.tokens_per_month is not None:
        volume = f"{_n(profile.tokens_per_month)} tokens/month"
        if profile.input_share is not None:
            volume += f", {profile.input_share:.0%} input / {1 - profile.input_share:.0%} output"
    else:
        volume = f"{_n(profile.requests_per_month)} requests/month"
    assumptions = [f"profile {profile.name} ({profile.origin}): {volume}", f"source: {profile.source}"]
    for task in profile.tasks:
        quality = ", ".join(f"{tier}: {share:.0%}" for tier, share in task.needed_quality)
        extras = ", ".join(f"{name} {p:.0%}" for name, p in (("tools", task.tools), ("vision", task.vision),
                                                               ("stream", task.stream)) if p)
        assumptions.append(
            f"{task.task} {task.share:.0%} of requests: prompt {task.prompt_tokens.describe()}; completion "
            f"{task.completion_tokens.describe()}; needed quality (assumed by the profile, not measured) {quality}"
            + (f"; {extras}" if extras else ""))
    stated = {"tokens_per_month": profile.tokens_per_month, "requests_per_month": profile.requests_per_month,
              "input_share": profile.input_share}
    return Workload(f"profile {profile.name}", profile.description, requests, assumptions,
                    {k: v for k, v in stated.items() if v is not None})


# ----------------------------------------------------------------------------- usage logs

_LOG_KEYS_NOTE = ("prompt_tokens, completion_tokens; optional task, count, prompt, needed_quality, "
                  "tools, vision, stream")
Estimator = Callable[[dict[str, Any]], Any]


def read_log(path: str, log_days: float = DAYS_PER_MONTH, estimator: Estimator | None = None) -> Workload:
    """`path` "-" reads standard input (the console pipes an upload in, so it never touches disk)."""
    try:
        if path == "-":
            lines = sys.stdin.buffer.read().decode("utf-8").splitlines(keepends=True)
            path = "<stdin>"
        else:
            with open(path, encoding="utf-8") as handle:
                lines = handle.readlines()
    except OSError as exc:
        raise WhatIfError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise WhatIfError(f"{path}: not UTF-8 text") from None
    return parse_log(lines, origin=path, log_days=log_days, estimator=estimator)


def parse_log(lines: Iterable[str], origin: str = "<log>", log_days: float = DAYS_PER_MONTH,
              estimator: Estimator | None = None) -> Workload:
    """One JSON object per line (blank lines skipped). Errors name the line: `usage.jsonl:17: ...`.

    Lines with prompt text need `estimator` (the data plane's complexity estimator,
    dataplane.routing.complexity.estimate, as `dataplane.whatif_replay` passes it)."""
    if not _is_number(log_days) or log_days <= 0:
        raise WhatIfError("--log-days must be a positive number")
    scale = DAYS_PER_MONTH / log_days
    merged: dict[tuple, float] = {}
    estimated = 0
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{origin}:{lineno}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise WhatIfError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(row, dict):
            raise WhatIfError(f"{where}: expected a JSON object with {_LOG_KEYS_NOTE}")
        key, weight, was_estimated = _log_row(row, where, estimator)
        estimated += was_estimated
        merged[key] = merged.get(key, 0.0) + weight * scale
    if not merged:
        raise WhatIfError(f"{origin}: no requests (expected one JSON object per line with {_LOG_KEYS_NOTE})")
    requests = [Request(p, c, task, q, caps, w) for (p, c, task, q, caps), w in merged.items()]
    total = sum(r.weight for r in requests) / scale
    assumptions = [
        f"log {origin}: {_n(total)} requests, taken to cover {log_days:g} days and scaled to {DAYS_PER_MONTH}"
        + (" (--log-days sets the period)" if log_days == DAYS_PER_MONTH else ""),
        "needed quality: from the complexity estimator for lines with prompt text"
        + (f" ({estimated} here)" if estimated else "")
        + ", else the line's needed_quality, else its task's default ("
        + ", ".join(f"{t} {q}" for t, q in TASK_DEFAULT_QUALITY.items()) + "; lines without a task count as chat)",
    ]
    return Workload(f"log {origin}", f"usage log {origin}", requests, assumptions)


def _log_row(row: dict[str, Any], where: str, estimator: Estimator | None) -> tuple[tuple, float, bool]:
    def field_error(name: str, expected: str) -> WhatIfError:
        return WhatIfError(f"{where}: {name} must be {expected}, got {json.dumps(row[name])}")

    for name in ("prompt_tokens", "completion_tokens"):
        if name in row and not _is_count(row[name]):
            raise field_error(name, "a non-negative integer")
    if "completion_tokens" not in row:
        raise WhatIfError(f"{where}: completion_tokens is required")
    prompt = row.get("prompt")
    if prompt is not None and not isinstance(prompt, str):
        raise field_error("prompt", "a string")
    if "prompt_tokens" not in row and prompt is None:
        raise WhatIfError(f"{where}: prompt_tokens is required (or prompt text to estimate it from)")
    task = row.get("task")
    if task is not None and task not in TASKS:
        raise field_error("task", f"one of {', '.join(TASKS)}")
    count = row.get("count", 1)
    if not _is_number(count) or count <= 0:
        raise field_error("count", "a positive number")
    caps = set()
    for name, capability in (("tools", "tools"), ("vision", "vision"), ("stream", "streaming")):
        value = row.get(name, False)
        if not isinstance(value, bool):
            raise field_error(name, "true or false")
        if value:
            caps.add(capability)
    needed = row.get("needed_quality")
    if needed is not None and (not _is_count(needed) or needed > 5):
        raise field_error("needed_quality", "an integer 0-5")

    prompt_tokens = row.get("prompt_tokens")
    if prompt is not None:
        if estimator is None:
            raise WhatIfError(f"{where}: has prompt text, which needs the complexity estimator (the data plane's, "
                              "which `megarouterctl whatif` passes); drop `prompt` or give `task`/`needed_quality`")
        payload: dict[str, Any] = {"model": "whatif", "messages": [{"role": "user", "content": prompt}]}
        if row["completion_tokens"]:
            payload["max_tokens"] = row["completion_tokens"]
        if "streaming" in caps:
            payload["stream"] = True
        try:
            result = estimator(payload)
        except Exception as exc:  # the estimator is someone else's code: name the line, no traceback
            raise WhatIfError(f"{where}: the complexity estimator failed on this prompt: {exc}") from None
        if needed is None:
            needed = int(result.needed_quality)
        if task is None and getattr(result, "task", None) in TASKS:
            task = result.task
        if prompt_tokens is None:
            prompt_tokens = int(result.prompt_tokens)
    task = task or "chat"
    if needed is None:
        needed = TASK_DEFAULT_QUALITY[task]
    return (prompt_tokens, row["completion_tokens"], task, needed, frozenset(caps)), float(count), prompt is not None


# ------------------------------------------------------------------------------- model pools


@dataclass(frozen=True)
class PoolModel:
    name: str
    provider: str                     # for the availability strategy's provider diversity
    proto: routing_pb2.Model          # prices, limits, capabilities, quality
    source: str = "catalog"           # "catalog" | "admin"


def _catalog_proto(entry: CatalogModel) -> routing_pb2.Model:
    """The control plane's Model resource for a catalog entry (as controlplane.catalog_models builds it)."""
    data = to_model_resource(entry)
    if entry.cached_input_per_mtok is not None:
        data["cached_input_price_per_mtok"] = entry.cached_input_per_mtok
    data["price_tiers"] = [
        {"min_prompt_tokens": t.min_prompt_tokens, "input_price_per_mtok": t.input_per_mtok,
         "output_price_per_mtok": t.output_per_mtok,
         **({"cached_input_price_per_mtok": t.cached_input_per_mtok} if t.cached_input_per_mtok is not None else {})}
        for t in entry.tiers
    ]
    return resource_to_proto(Model.model_validate(data), routing_pb2.Model)


def catalog_pool(refs: Iterable[str]) -> list[PoolModel]:
    catalog = load_catalog()
    pool: list[PoolModel] = []
    for ref in refs:
        entry = catalog.get(ref)
        if entry is None:
            raise WhatIfError(f"model {ref!r} is not in the catalog")
        if entry.max_output_tokens == 0 or "embeddings" in entry.capabilities:
            raise WhatIfError(f"model {ref!r} is an embeddings model, not a chat model")
        if any(m.name == entry.id for m in pool):
            raise WhatIfError(f"model {entry.id!r} is in the pool twice")
        pool.append(PoolModel(entry.id, entry.provider, _catalog_proto(entry)))
    if not pool:
        raise WhatIfError("the model pool is empty")
    return pool


async def route_pool(stub: Any, name: str, extra: Iterable[str] = ()) -> tuple[routing_pb2.Route, list[PoolModel]]:
    """A route and its models as the control plane has them (GetRoute, GetModel); `extra`
    models (a flagship outside the route) are fetched too."""
    from megarouter.v1 import admin_pb2

    route = await stub.GetRoute(admin_pb2.GetRequest(name=name))
    names = [model for tier in route.tiers for model in tier.models]
    names += [model for model in extra if model not in names]
    catalog = load_catalog()
    pool = []
    for model_name in names:
        model = await stub.GetModel(admin_pb2.GetRequest(name=model_name))
        entry = catalog.get(model_name)
        pool.append(PoolModel(model_name, entry.provider if entry is not None else model_name, model,
                              model.source or "admin"))
    return route, pool


def default_flagship(pool: Iterable[PoolModel]) -> str:
    """The highest quality tier in the pool, then the most expensive (output, then input price)."""
    best = max(pool, key=lambda m: (m.proto.quality_tier, m.proto.output_price_per_mtok,
                                    m.proto.input_price_per_mtok))
    return best.name


def _parse_latency(spec: str | None, names: Iterable[str]) -> dict[str, float]:
    if not spec:
        return {}
    known = set(names)
    latency = {}
    for item in spec.split(","):
        if not item.strip():
            continue
        model, sep, value = item.partition("=")
        model = model.strip()
        try:
            ms = float(value)
        except ValueError:
            ms = -1.0
        if not sep or not math.isfinite(ms) or ms <= 0:
            raise WhatIfError(f"--latency-ms: expected model=milliseconds, got {item.strip()!r}")
        if model not in known:
            raise WhatIfError(f"--latency-ms: {model!r} is not in the pool ({', '.join(sorted(known))})")
        latency[model] = ms
    return latency


def _n(value: float | None) -> str:
    """1_000_000_000 -> "1B", 2_500_000 -> "2.5M", 1234 -> "1,234"."""
    if value is None:
        return ""
    for size, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M")):
        if abs(value) >= size:
            return f"{value / size:.3g}{suffix}"
    return f"{value:,.0f}"
