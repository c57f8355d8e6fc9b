"""What-if replay: what a workload would cost per month under each routing strategy.

    megarouterctl whatif --profile support-chat
    megarouterctl whatif --log usage.jsonl --models gpt-4o,gpt-4o-mini,gemini-2.5-flash
    megarouterctl --server cp:50051 whatif --profile coding-assistant --route auto

A workload — a usage log, or a built-in profile sampled with a seeded RNG —
is replayed through the real router (`dataplane.routing.router.plan`) over a
synthetic routing table loaded with `RuntimeTable.load`: one endpoint per
model of the pool and one route with the pool in one tier (or, with
`--route`, that route's tiers, floor and weights as the control plane has
them). Each request is charged at catalog (or admin) prices for the model
the router picks first, and the monthly totals are compared with sending
everything to the flagship.

No network unless `--route` is given. There is no live health: the latency
and availability strategies fall back to their priors (`--latency-ms` models
speeds). Every request is assumed to succeed on its first pick (no retries).
"""

from __future__ import annotations

import json
import math
import os
import random
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dataplane.health import PRIOR_FAILURES, PRIOR_SUCCESSES, HealthRegistry
from dataplane.routing.needs import Needs
from dataplane.routing.router import NoCandidate, plan
from dataplane.table import DEFAULT_WEIGHTS, RuntimeTable, TableError, Target, Weights
from megarouter.catalog import CatalogModel, cost_usd, load_catalog, to_model_resource
from megarouter.resources import Model, resource_to_proto
from megarouter.v1 import routing_pb2

__all__ = [
    "DEFAULT_POOL",
    "STRATEGY_ORDER",
    "TASKS",
    "PoolModel",
    "Profile",
    "ProfileError",
    "Report",
    "Request",
    "StrategyResult",
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
    "render_table",
    "report_dict",
    "route_pool",
    "run",
    "simulate",
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
STRATEGY_ORDER = ("cost", "balanced", "latency", "availability")
FLAGSHIP_ONLY = "flagship-only"
DEFAULT_SAMPLES = 10_000
DEFAULT_SEED = 1
DAYS_PER_MONTH = 30
# A profile's declared input_share must agree with what its token
# distributions produce to within this (absolute).
INPUT_SHARE_TOLERANCE = 0.03
_SHARE_TOLERANCE = 0.01
_SYNTHETIC_ROUTE = "whatif/pool"
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


def read_log(path: str, log_days: float = DAYS_PER_MONTH) -> Workload:
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.readlines()
    except OSError as exc:
        raise WhatIfError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise WhatIfError(f"{path}: not UTF-8 text") from None
    return parse_log(lines, origin=path, log_days=log_days)


def parse_log(lines: Iterable[str], origin: str = "<log>", log_days: float = DAYS_PER_MONTH,
              estimator: Estimator | None = None) -> Workload:
    """One JSON object per line (blank lines skipped). Errors name the line: `usage.jsonl:17: ...`."""
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
        key, weight, used_estimator = _log_row(row, where, estimator)
        if used_estimator:
            estimator = used_estimator
            estimated += 1
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


def _log_row(row: dict[str, Any], where: str, estimator: Estimator | None) -> tuple[tuple, float, Estimator | None]:
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
    used = None
    if prompt is not None:
        used = estimator or _complexity_estimator(where)
        payload: dict[str, Any] = {"model": "whatif", "messages": [{"role": "user", "content": prompt}]}
        if row["completion_tokens"]:
            payload["max_tokens"] = row["completion_tokens"]
        if "streaming" in caps:
            payload["stream"] = True
        try:
            result = used(payload)
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
    return (prompt_tokens, row["completion_tokens"], task, needed, frozenset(caps)), float(count), used


def _complexity_estimator(where: str) -> Estimator:
    try:
        from dataplane.routing.complexity import estimate
    except ImportError:
        raise WhatIfError(
            f"{where}: has prompt text, which needs the complexity estimator (dataplane.routing.complexity), "
            "and it is not available in this install; drop `prompt` or give `task`/`needed_quality`"
        ) from None
    return estimate


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


# ------------------------------------------------------------------------------- simulation


@dataclass
class StrategyResult:
    strategy: str
    cost_usd: float = 0.0             # per month
    served: float = 0.0               # requests per month
    unserved: float = 0.0
    below_needed: float = 0.0
    quality_sum: float = 0.0
    by_model: Counter = field(default_factory=Counter)          # requests per month
    unserved_reasons: Counter = field(default_factory=Counter)

    @property
    def requests(self) -> float:
        return self.served + self.unserved

    @property
    def avg_quality(self) -> float:
        return self.quality_sum / self.served if self.served else 0.0

    def share(self, amount: float) -> float:
        return amount / self.requests if self.requests else 0.0


@dataclass
class Report:
    workload: Workload
    pool: list[PoolModel]
    in_pool: list[str]                # the route's models (the flagship may be outside)
    flagship: str
    results: list[StrategyResult]     # flagship-only first, then STRATEGY_ORDER
    weights: Weights
    latency_ms: dict[str, float]
    notes: list[str]
    seed: int
    route: str = ""                   # set when the pool came from the control plane

    def result(self, strategy: str) -> StrategyResult:
        return next(r for r in self.results if r.strategy == strategy)

    def saving(self, result: StrategyResult) -> float:
        """Percent saved against flagship-only (negative: costs more)."""
        base = self.result(FLAGSHIP_ONLY).cost_usd
        return (base - result.cost_usd) / base * 100 if base else 0.0


def build_table(pool: list[PoolModel], route: routing_pb2.Route | None = None,
                in_pool: Iterable[str] | None = None) -> tuple[RuntimeTable, str]:
    """A routing table with one endpoint per model and one route over the pool (one tier, or `route`'s
    tiers, floor and weights), loaded by the proxy's own loader."""
    table = routing_pb2.RoutingTable(version=1)
    for provider in sorted({m.provider for m in pool}):
        table.providers.add(name=provider, kind=routing_pb2.PROVIDER_KIND_OPENAI,
                            base_url="https://whatif.invalid/v1", region="whatif")
    for model in pool:
        table.models.append(model.proto)
        table.endpoints.add(name=model.name, model=model.name, provider=model.provider)
    if route is not None:
        synthetic = table.routes.add()
        synthetic.CopyFrom(route)
        del synthetic.allowed_regions[:]   # synthetic endpoints have no real regions
        name = route.name
    else:
        names = list(in_pool) if in_pool is not None else [m.name for m in pool]
        name = _SYNTHETIC_ROUTE
        table.routes.add(name=name).tiers.add(models=names)
    try:
        return RuntimeTable.load(table, secrets=lambda ref: None), name
    except TableError as exc:
        raise WhatIfError(f"cannot build the routing table: {exc}") from None


def simulate(workload: Workload, pool: list[PoolModel], *, flagship: str | None = None,
             in_pool: Iterable[str] | None = None, route: routing_pb2.Route | None = None,
             latency_ms: Mapping[str, float] | None = None, seed: int = DEFAULT_SEED) -> Report:
    """Replay `workload` through the router for each strategy and for flagship-only."""
    names = [m.name for m in pool]
    if route is not None:
        members = [model for tier in route.tiers for model in tier.models]
    else:
        members = list(in_pool) if in_pool is not None else names
    flagship = flagship or default_flagship([m for m in pool if m.name in members])
    if flagship not in names:
        raise WhatIfError(f"flagship {flagship!r} is not among the models ({', '.join(names)})")
    table, route_name = build_table(pool, route, members)
    target = table.resolve(route_name)
    flagship_target = table.resolve(flagship)
    assert target is not None and flagship_target is not None
    weights = target.weights or DEFAULT_WEIGHTS
    latency_ms = dict(latency_ms or {})

    # Neutral health: every endpoint known, with no successes or failures (so the prior success
    # probability) and no latency unless --latency-ms gives one (an average, not success evidence).
    health = HealthRegistry(clock=lambda: 0.0)
    for model in names:
        health.get(model).latency_s = latency_ms[model] / 1000 if model in latency_ms else None

    results = [_replay(FLAGSHIP_ONLY, flagship_target, "cost", workload, health, weights, seed)]
    results += [_replay(s, target, s, workload, health, weights, seed) for s in STRATEGY_ORDER]

    prior = PRIOR_SUCCESSES / (PRIOR_SUCCESSES + PRIOR_FAILURES)
    first = members[0] if members else ""
    notes = ["no live health: every request is taken to succeed on the router's first pick (no retries or "
             "fallbacks), and each request's max_tokens is taken to be its completion length"]
    if latency_ms:
        unset = [n for n in members if n not in latency_ms]
        notes.append("latency: modelled with --latency-ms " + ", ".join(f"{m}={v:g}ms" for m, v in latency_ms.items())
                     + (f"; {', '.join(unset)} unmeasured, so assumed as fast as the fastest given (the router's "
                        "treatment of unmeasured endpoints)" if unset else ""))
    else:
        notes.append(f"latency: no measurements, so the router's prior applies — every endpoint looks equally "
                     f"fast and the first eligible in pool order wins ({first} when it qualifies); "
                     "--latency-ms model=ms,... models speeds")
    notes.append(f"availability: no measurements, so every endpoint has the prior success probability "
                 f"{prior:.0%}; the first eligible in pool order wins, then the chain prefers other providers")
    notes.append(f"balanced weights: cost {weights.cost:.2f}, latency {weights.latency:.2f}, quality "
                 f"{weights.quality:.2f}, availability {weights.availability:.2f}"
                 + (" (the route's)" if target.weights else " (defaults)"))
    if route is not None:
        if route.allowed_regions:
            notes.append(f"route {route.name}: allowed_regions ({', '.join(route.allowed_regions)}) not modelled")
        if target.quality_floor:
            notes.append(f"route {route.name}: quality floor {target.quality_floor} applies")
        if target.strategy:
            notes.append(f"route {route.name} is configured with strategy {target.strategy}")
    if flagship not in members:
        notes.append(f"flagship {flagship} is outside the routed pool; it is only used for flagship-only")
    if results[0].unserved:
        notes.append(f"flagship {flagship} cannot serve {results[0].share(results[0].unserved):.1%} of requests; "
                     "savings compare different sets of requests")
    return Report(workload, pool, members, flagship, results, weights, latency_ms, notes, seed,
                  route.name if route is not None else "")


def _replay(label: str, target: Target, strategy: str, workload: Workload, health: HealthRegistry,
            weights: Weights, seed: int) -> StrategyResult:
    rng = random.Random(seed)
    result = StrategyResult(label)
    for request in workload.requests:
        needs = Needs(request.capabilities, request.prompt_tokens, request.completion_tokens, 0,
                      request.needed_quality)
        try:
            chosen = plan(target, needs, strategy, health, weights, rng).endpoints[0]
        except NoCandidate as exc:
            result.unserved += request.weight
            result.unserved_reasons[exc.code] += request.weight
            continue
        result.served += request.weight
        result.cost_usd += cost_usd(chosen.pricing, request.prompt_tokens, request.completion_tokens) * request.weight
        result.quality_sum += chosen.quality_tier * request.weight
        result.by_model[chosen.model] += request.weight
        if chosen.quality_tier < request.needed_quality:
            result.below_needed += request.weight
    return result


# ---------------------------------------------------------------------------------- output


def _n(value: float | None) -> str:
    """1_000_000_000 -> "1B", 2_500_000 -> "2.5M", 1234 -> "1,234"."""
    if value is None:
        return ""
    for size, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M")):
        if abs(value) >= size:
            return f"{value / size:.3g}{suffix}"
    return f"{value:,.0f}"


def _pct(share: float) -> str:
    if 0 < share < 0.0005:
        return "<0.1%"
    return f"{share:.1%}"


def _mix(result: StrategyResult) -> str:
    parts = []
    for model, amount in sorted(result.by_model.items(), key=lambda kv: (-kv[1], kv[0])):
        share = result.share(amount)
        parts.append(f"{model} {'<1' if share < 0.005 else f'{share:.0%}'.rstrip('%')}%")
    if result.unserved:
        parts.append(f"unserved {result.share(result.unserved):.0%}")
    return ", ".join(parts)


def _table(columns: list[str], rows: list[list[str]]) -> list[str]:
    """Columns as `megarouterctl get` prints them."""
    cells = [[c.upper() for c in columns]] + rows
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in cells]


def _price(model: routing_pb2.Model) -> str:
    text = f"{model.input_price_per_mtok:g} / {model.output_price_per_mtok:g}"
    if model.price_tiers:
        tier = model.price_tiers[0]
        text += f" (>{_n(tier.min_prompt_tokens - 1)} prompt: {tier.input_price_per_mtok:g} / " \
                f"{tier.output_price_per_mtok:g})"
    return text


def _capabilities(model: routing_pb2.Model) -> str:
    return ",".join(f.name for f, on in model.capabilities.ListFields() if on is True and f.name != "completions")


def render_table(report: Report) -> str:
    w = report.workload
    lines = [f"What-if replay: {w.source} — {w.description}"]
    volume = (f"  volume: {_n(w.requests_per_month)} requests/month, {_n(w.input_tokens_per_month)} input + "
              f"{_n(w.output_tokens_per_month)} output tokens")
    total = w.input_tokens_per_month + w.output_tokens_per_month
    if total:
        volume += f" ({w.input_tokens_per_month / total:.0%} input)"
    if w.source.startswith("profile"):
        lines.append(volume)
        lines.append(f"  replayed: {len(w.requests):,} sampled requests through the router (seed {report.seed}), "
                     f"each standing for {_n(w.requests_per_month / len(w.requests))} requests a month")
    else:
        lines += [volume, f"  replayed: {len(w.requests):,} distinct logged requests through the router"]
    if report.route:
        lines.append(f"  pool: route {report.route} from the control plane")
    lines.append("")

    flagship_mark = {report.flagship: " (flagship)"}
    rows = [[m.name + flagship_mark.get(m.name, ""), m.provider, _price(m.proto), str(m.proto.quality_tier),
             _n(m.proto.context_window), _capabilities(m.proto), m.source] for m in report.pool]
    lines += _table(["model", "provider", "usd/mtok in / out", "quality", "context", "capabilities", "prices"],
                    rows)
    lines.append("")

    rows = []
    for result in report.results:
        rows.append([result.strategy, f"${result.cost_usd:,.2f}",
                     f"{report.saving(result):.1f}%",
                     f"{result.avg_quality:.2f}", _pct(result.share(result.below_needed)),
                     _pct(result.share(result.unserved)), _mix(result)])
    lines += _table(["strategy", "usd/month", "saved vs flagship", "avg quality", "below needed", "unserved",
                     "models (share of requests)"], rows)
    lines.append("")
    lines.append("Assumptions:")
    catalog = load_catalog().version
    source = catalog.get("genai_prices", {})
    lines.append(f"  - prices: list prices in USD per million tokens from the MegaRouter catalog (as of "
                 f"{catalog.get('prices_as_of', '?')}, genai-prices {source.get('version', '?')})"
                 + (" or the control plane's admin models" if report.route else "")
                 + "; no cached-input, batch or negotiated discounts; long-context tiers apply above their threshold")
    lines += [f"  - {text}" for text in w.assumptions + report.notes]
    lines += ["", *measured_quality_target(report)]
    return "\n".join(lines)


MEASURED_TARGET = 0.95


def measured_quality_target(report: Report, target: float = MEASURED_TARGET) -> list[str]:
    """What a route with `cost_quality_target` would save on this workload's volume if its traffic
    looked like each evaluation set: the share of requests the calibrated router sent to the
    flagship there (measured, not assumed) applied to the flagship and the cheapest pool model."""
    from dataplane.routing.complexity import quality_calibration

    calibration = quality_calibration(target)
    requests = report.workload.requests
    table, _ = build_table(report.pool)

    def monthly(model: PoolModel) -> float:
        pricing = table.resolve(model.name).endpoints[0].pricing
        return sum(cost_usd(pricing, r.prompt_tokens, r.completion_tokens) * r.weight for r in requests)

    flagship_cost = report.result(FLAGSHIP_ONLY).cost_usd
    cheapest = min(report.pool, key=monthly)
    cheap_cost = monthly(cheapest)
    lines = [f"Measured: a cost route with cost_quality_target {target} between {report.flagship} and "
             f"{cheapest.name} (the cheapest pool model for these requests), at this workload's volume:"]
    for dataset, measured in calibration["measured"].items():
        share = measured["strong_share"]
        cost = share * flagship_cost + (1 - share) * cheap_cost
        saved = (1 - cost / flagship_cost) * 100 if flagship_cost else 0.0
        lines.append(f"  - traffic like {dataset}: flagship serves {share:.0%}, ${cost:,.2f}/month, {saved:.1f}% "
                     f"saved vs flagship-only, {measured['quality_share']:.1%} of the flagship's quality kept")
    lines.append(f"  (shares measured by the shipped complexity model on the evaluation data — "
                 f"{calibration['measured_on']}; quality as defined there — not assumed by the profile; the "
                 "strategy rows above use the profile's assumed needed-quality mix instead)")
    return lines


def report_dict(report: Report) -> dict[str, Any]:
    w = report.workload
    catalog = load_catalog().version
    return {
        "workload": {
            "source": w.source,
            "description": w.description,
            "stated": w.stated,
            "requests_per_month": round(w.requests_per_month, 3),
            "input_tokens_per_month": round(w.input_tokens_per_month),
            "output_tokens_per_month": round(w.output_tokens_per_month),
            "simulated_requests": len(w.requests),
            "seed": report.seed,
            "assumptions": w.assumptions,
        },
        "prices": {"source": "route " + report.route if report.route else "catalog",
                   "catalog_prices_as_of": catalog.get("prices_as_of")},
        "flagship": report.flagship,
        "route": report.route or None,
        "models": [{
            "name": m.name,
            "provider": m.provider,
            "in_pool": m.name in report.in_pool,
            "input_price_per_mtok": m.proto.input_price_per_mtok,
            "output_price_per_mtok": m.proto.output_price_per_mtok,
            "price_tiers": [{"min_prompt_tokens": t.min_prompt_tokens, "input_price_per_mtok": t.input_price_per_mtok,
                             "output_price_per_mtok": t.output_price_per_mtok} for t in m.proto.price_tiers],
            "quality_tier": m.proto.quality_tier,
            "context_window": m.proto.context_window,
            "capabilities": _capabilities(m.proto).split(",") if _capabilities(m.proto) else [],
            "prices_from": m.source,
        } for m in report.pool],
        "results": [{
            "strategy": r.strategy,
            "cost_usd_per_month": round(r.cost_usd, 4),
            "saving_vs_flagship_pct": round(report.saving(r), 3),
            "avg_quality_tier": round(r.avg_quality, 4),
            "below_needed_quality_share": round(r.share(r.below_needed), 6),
            "unserved_share": round(r.share(r.unserved), 6),
            "unserved_reasons": {k: round(r.share(v), 6) for k, v in sorted(r.unserved_reasons.items())},
            "model_share": {m: round(r.share(v), 6) for m, v in sorted(r.by_model.items(), key=lambda kv: -kv[1])},
        } for r in report.results],
        "notes": report.notes,
    }


# -------------------------------------------------------------------------------------- CLI


async def run(stub: Any, args: Any) -> int:
    """`megarouterctl whatif` (its options are in megarouter.ctl); `stub` is only used with --route."""
    seed = DEFAULT_SEED if args.seed is None else args.seed
    if args.log:
        workload = read_log(args.log, DAYS_PER_MONTH if args.log_days is None else args.log_days)
    else:
        samples = DEFAULT_SAMPLES if args.samples is None else args.samples
        workload = profile_workload(load_profile(args.profile), samples, seed)
    route = None
    if args.route:
        extra = [args.flagship] if args.flagship else []
        route, pool = await route_pool(stub, args.route, extra)
        members = None
    else:
        refs = [r.strip() for r in args.models.split(",") if r.strip()] if args.models else list(DEFAULT_POOL)
        pool = catalog_pool(refs)
        members = [m.name for m in pool]
        if args.flagship:
            entry = load_catalog().get(args.flagship)
            if entry is None:
                raise WhatIfError(f"flagship {args.flagship!r} is not in the catalog")
            if entry.id not in members:
                pool += catalog_pool([args.flagship])
    flagship = None
    if args.flagship:
        entry = None if args.route else load_catalog().get(args.flagship)
        flagship = entry.id if entry is not None else args.flagship
    latency = _parse_latency(args.latency_ms, [m.name for m in pool])
    report = simulate(workload, pool, flagship=flagship, in_pool=members, route=route, latency_ms=latency,
                      seed=seed)
    if args.output == "json":
        print(json.dumps(report_dict(report), indent=2))
    elif args.output == "yaml":
        print(yaml.safe_dump(report_dict(report), sort_keys=False), end="")
    else:
        print(render_table(report))
    return 0
