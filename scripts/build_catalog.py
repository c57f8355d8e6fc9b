#!/usr/bin/env python3
"""Build the model catalog, `megarouter/catalog/models.json`, offline.

Inputs:
  * the price data bundled inside the installed `genai-prices` package
    (`genai_prices/data.py`, a list of `Provider` objects). Its online update
    (`UpdatePrices`) is never used: the build reads only what is installed.
  * the hand-reviewed table `megarouter/catalog/curated.yaml`: which providers
    and model families to take, and per family the context window, max output,
    capabilities and quality tier that genai-prices does not carry.

The output is deterministic: models sorted by (provider, id), keys sorted, one
model per line, no build time. Its header records the genai-prices version,
the SHA-256 of its data file and of the curated table, so
`tests/test_catalog.py` can rebuild and compare byte for byte.

    .venv/bin/python scripts/build_catalog.py            # write models.json
    .venv/bin/python scripts/build_catalog.py --check    # exit 1 if stale
    .venv/bin/python scripts/build_catalog.py --report   # matches, skips, notes
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
CURATED_PATH = ROOT / "megarouter" / "catalog" / "curated.yaml"
OUTPUT_PATH = ROOT / "megarouter" / "catalog" / "models.json"
SCHEMA = 1

CAPABILITIES = frozenset({"tools", "vision", "json_mode", "streaming", "reasoning", "embeddings"})
# Same pattern as megarouter.resources.MODEL_NAME_PATTERN (kept here so the build
# does not import the gRPC stubs); a catalog id must be usable as a Model name.
MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}$")
PRICE_KEYS = {"input_mtok": "input", "output_mtok": "output", "cache_read_mtok": "cached"}


class BuildError(Exception):
    pass


# --------------------------------------------------------------------------- curated table


@dataclass(frozen=True)
class Family:
    index: int
    match: re.Pattern[str]
    providers: frozenset[str] | None
    context_window: int | None
    max_output_tokens: int
    capabilities: tuple[str, ...]
    quality_tier: int
    quality_source: str


@dataclass(frozen=True)
class Exclusion:
    match: re.Pattern[str]
    providers: frozenset[str] | None
    why: str
    fall_through: bool   # drop its match rule too, so refs reach the provider's fallbacks


@dataclass(frozen=True)
class ProviderSpec:
    id: str
    source: str
    aliases: tuple[str, ...]


@dataclass
class Curated:
    prices_as_of: date
    providers: list[ProviderSpec]
    quality_sources: dict[str, str]
    exclusions: list[Exclusion]
    families: list[Family]
    sha256: str


def _providers_field(raw: Any, known: set[str], where: str) -> frozenset[str] | None:
    if raw is None:
        return None
    names = frozenset(raw if isinstance(raw, list) else [raw])
    unknown = names - known
    if unknown:
        raise BuildError(f"{where}: unknown provider(s) {sorted(unknown)}")
    return names


def load_curated(path: Path = CURATED_PATH) -> Curated:
    raw_bytes = path.read_bytes()
    doc = yaml.safe_load(raw_bytes)
    if doc.get("schema") != SCHEMA:
        raise BuildError(f"{path}: schema must be {SCHEMA}")
    as_of = doc["prices_as_of"]
    if not isinstance(as_of, date):
        as_of = date.fromisoformat(str(as_of))

    providers = [
        ProviderSpec(id=p["id"], source=p["source"], aliases=tuple(p.get("aliases") or ()))
        for p in doc["providers"]
    ]
    ids = [p.id for p in providers]
    if len(set(ids)) != len(ids):
        raise BuildError("providers: duplicate id")
    known = set(ids)
    quality_sources = {str(k): str(v).strip() for k, v in doc["quality_sources"].items()}

    exclusions = []
    for i, ex in enumerate(doc.get("exclude") or ()):
        exclusions.append(Exclusion(
            match=re.compile(ex["match"]),
            providers=_providers_field(ex.get("providers"), known, f"exclude[{i}]"),
            why=str(ex.get("why", "")),
            fall_through=bool(ex.get("fall_through", False)),
        ))

    families = []
    for i, fam in enumerate(doc["families"]):
        where = f"families[{i}] ({fam.get('match')!r})"
        extra = set(fam) - {"match", "providers", "ctx", "out", "caps", "q", "src"}
        if extra:
            raise BuildError(f"{where}: unknown keys {sorted(extra)}")
        caps = tuple(sorted(set(fam["caps"])))
        if not set(caps) <= CAPABILITIES:
            raise BuildError(f"{where}: unknown capabilities {sorted(set(caps) - CAPABILITIES)}")
        quality = int(fam["q"])
        if not 1 <= quality <= 5:
            raise BuildError(f"{where}: quality tier must be 1..5")
        src = fam.get("src", "arena")
        if src not in quality_sources:
            raise BuildError(f"{where}: unknown quality source {src!r}")
        ctx = fam.get("ctx")
        families.append(Family(
            index=i,
            match=re.compile(fam["match"]),
            providers=_providers_field(fam.get("providers"), known, where),
            context_window=int(ctx) if ctx is not None else None,
            max_output_tokens=int(fam["out"]),
            capabilities=caps,
            quality_tier=quality,
            quality_source=src,
        ))

    return Curated(
        prices_as_of=as_of,
        providers=providers,
        quality_sources=quality_sources,
        exclusions=exclusions,
        families=families,
        sha256=hashlib.sha256(raw_bytes).hexdigest(),
    )


# --------------------------------------------------------------------------- genai-prices


def _genai_prices() -> tuple[str, list[Any], Path, Any]:
    """The bundled provider list (never the online update), its version and file."""
    from importlib.metadata import version

    from genai_prices import data as gp_data
    from genai_prices import types as gp_types

    return version("genai-prices"), gp_data.providers, Path(gp_data.__file__), gp_types


def _price_view(model_price: Any) -> dict[str, Any]:
    return {key: value for key, value in model_price.__dict__.items()
            if not key.startswith("_") and value is not None}


def _base_rate(value: Any, gp_types: Any) -> Decimal:
    return value.base if isinstance(value, gp_types.TieredPrices) else value


def resolve_prices(model: Any, as_of: date, gp_types: Any) -> tuple[dict[str, Any], list[str]]:
    """The model's price set in force on `as_of`, plus human-readable notes.

    genai-prices tries conditional prices last to first and takes the first
    whose constraint holds. Date constraints are evaluated at `as_of`. Time of
    day constraints (e.g. DeepSeek's peak/off-peak hours) cannot be expressed by
    a flat catalog: we take the highest of the candidate rates so that budgets
    never under-count, and say so in the notes.
    """
    prices = model.prices
    if isinstance(prices, gp_types.ModelPrice):
        return _price_view(prices), []
    notes: list[str] = []
    dated = [c for c in prices if not isinstance(c.constraint, gp_types.TimeOfDateConstraint)]
    timed = [c for c in prices if isinstance(c.constraint, gp_types.TimeOfDateConstraint)]
    base = prices[0]
    for cond in reversed(dated):
        if cond.constraint is None or cond.constraint.start_date <= as_of:
            base = cond
            break
    for cond in dated:
        if cond.constraint is not None and cond.constraint.start_date > as_of:
            view = _price_view(cond.prices)
            summary = ", ".join(f"{PRICE_KEYS[k]} {_base_rate(v, gp_types)}" for k, v in sorted(view.items())
                                if k in PRICE_KEYS)
            notes.append(f"scheduled price change on {cond.constraint.start_date}: {summary} (not applied)")
    chosen = base
    if timed:
        def rank(cond: Any) -> tuple[Decimal, Decimal]:
            view = _price_view(cond.prices)
            return (_base_rate(view.get("input_mtok", Decimal(0)), gp_types),
                    _base_rate(view.get("output_mtok", Decimal(0)), gp_types))
        chosen = max([base, *timed], key=rank)
        notes.append("time-of-day pricing upstream: catalog uses the highest rate of the day")
    return _price_view(chosen.prices), notes


def flatten_prices(view: dict[str, Any], gp_types: Any) -> tuple[dict[str, float | None], list[dict[str, Any]]]:
    """Base rates and merged threshold tiers for input / output / cached input.

    genai-prices tiers apply when the request's total input tokens are
    *greater than* `start`, to the whole request; a catalog tier's
    `min_prompt_tokens` is therefore `start + 1`.
    """
    keys = {name: view.get(key) for key, name in PRICE_KEYS.items()}
    base = {name: (float(_base_rate(v, gp_types)) if v is not None else None) for name, v in keys.items()}
    starts = sorted({t.start for v in keys.values() if isinstance(v, gp_types.TieredPrices) for t in v.tiers})
    tiers = []
    for start in starts:
        rates: dict[str, float | None] = {}
        for name, value in keys.items():
            if value is None:
                rates[name] = None
            elif isinstance(value, gp_types.TieredPrices):
                rate = value.base
                for tier in value.tiers:
                    if tier.start <= start:
                        rate = tier.price
                rates[name] = float(rate)
            else:
                rates[name] = float(value)
        tiers.append({
            "min_prompt_tokens": start + 1,
            "input_per_mtok": rates["input"],
            "output_per_mtok": rates["output"],
            "cached_input_per_mtok": rates["cached"],
        })
    return base, tiers


def clause_json(clause: Any, gp_types: Any) -> list[Any]:
    """A genai-prices match clause as compact JSON for the runtime matcher.

    ["eq"|"sw"|"ew"|"in", text] (text lower-cased, as genai-prices compares
    lower-cased), ["re", pattern], ["or"|"and", clause...].
    """
    simple = {
        gp_types.ClauseEquals: ("eq", "equals"),
        gp_types.ClauseStartsWith: ("sw", "starts_with"),
        gp_types.ClauseEndsWith: ("ew", "ends_with"),
        gp_types.ClauseContains: ("in", "contains"),
    }
    for cls, (op, attr) in simple.items():
        if isinstance(clause, cls):
            return [op, getattr(clause, attr).lower()]
    if isinstance(clause, gp_types.ClauseRegex):
        re.compile(clause.regex)
        return ["re", clause.regex]
    if isinstance(clause, gp_types.ClauseOr):
        return ["or", *(clause_json(sub, gp_types) for sub in clause.or_)]
    if isinstance(clause, gp_types.ClauseAnd):
        return ["and", *(clause_json(sub, gp_types) for sub in clause.and_)]
    raise BuildError(f"unsupported genai-prices match clause {clause!r}")


# --------------------------------------------------------------------------- build


@dataclass
class BuildResult:
    content: str
    models: list[dict[str, Any]]
    skipped: list[tuple[str, str, str]] = field(default_factory=list)   # (provider, id, why)
    family_hits: dict[int, list[str]] = field(default_factory=dict)


def _matches(pattern: re.Pattern[str], providers: frozenset[str] | None, provider: str, model_id: str) -> bool:
    return (providers is None or provider in providers) and pattern.search(model_id.lower()) is not None


def build(curated_path: Path = CURATED_PATH) -> BuildResult:
    curated = load_curated(curated_path)
    gp_version, gp_providers, gp_data_file, gp_types = _genai_prices()
    by_source = {p.id: p for p in gp_providers}
    source_to_id = {spec.source: spec.id for spec in curated.providers}

    models: list[dict[str, Any]] = []
    skipped: list[tuple[str, str, str]] = []
    family_hits: dict[int, list[str]] = {}
    # Per provider, every genai-prices model's match clause in genai-prices'
    # order, with the catalog id it resolves to (null: known upstream but not
    # in the catalog, so such refs do not fall through to another model).
    matchers: dict[str, list[list[Any]]] = {}

    for spec in curated.providers:
        gp_provider = by_source.get(spec.source)
        if gp_provider is None:
            raise BuildError(f"provider {spec.source!r} is not in genai-prices {gp_version}")
        seen: set[str] = set()
        provider_matchers = matchers[spec.id] = []
        for gp_model in gp_provider.models:
            model_id = gp_model.id
            key = model_id.lower()
            if key in seen:
                raise BuildError(f"{spec.id}: duplicate model id {model_id!r}")
            seen.add(key)

            def skip(why: str, provider: str = spec.id, model_id: str = model_id) -> None:
                skipped.append((provider, model_id, why))

            provider_matchers.append([clause_json(gp_model.match, gp_types), None])

            exclusion = next((ex for ex in curated.exclusions
                              if _matches(ex.match, ex.providers, spec.id, model_id)), None)
            if exclusion is not None:
                skip(f"excluded: {exclusion.why}")
                if exclusion.fall_through:
                    provider_matchers.pop()
                continue
            family = next((fam for fam in curated.families
                           if _matches(fam.match, fam.providers, spec.id, model_id)), None)
            if family is None:
                skip("no curated family")
                continue
            if not MODEL_NAME_RE.match(model_id):
                skip("id is not a valid gateway model name")
                continue

            view, notes = resolve_prices(gp_model, curated.prices_as_of, gp_types)
            if view.get("requests_kcount"):
                notes.append(f"upstream also bills ${view['requests_kcount']} per 1,000 requests "
                             "(not in the token prices)")
            base, tiers = flatten_prices(view, gp_types)
            embeddings = "embeddings" in family.capabilities
            if base["input"] is None:
                skip("no input token price")
                continue
            if embeddings:
                if base["output"]:
                    notes.append(f"upstream lists an output price ({base['output']}); embeddings bill input only")
                base["output"] = 0.0
                for tier in tiers:
                    tier["output_per_mtok"] = 0.0
            elif base["output"] is None:
                skip("no output token price")
                continue

            if gp_model.context_window:
                context_window, ctx_source = int(gp_model.context_window), "genai-prices"
            elif family.context_window:
                context_window, ctx_source = family.context_window, "curated"
            else:
                raise BuildError(f"{spec.id}/{model_id}: no context window (add ctx to its family)")
            max_output = min(family.max_output_tokens, context_window)

            entry: dict[str, Any] = {
                "id": model_id,
                "provider": spec.id,
                "name": gp_model.name or model_id,
                "context_window": context_window,
                "context_window_source": ctx_source,
                "max_output_tokens": max_output,
                "input_per_mtok": base["input"],
                "output_per_mtok": base["output"],
                "cached_input_per_mtok": base["cached"],
                "tiers": tiers,
                "capabilities": list(family.capabilities),
                "quality_tier": family.quality_tier,
                "quality_source": family.quality_source,
                "family": family.match.pattern,
            }
            if notes:
                entry["notes"] = notes
            if gp_model.deprecated:
                entry["deprecated"] = True
            _check_entry(entry)
            models.append(entry)
            provider_matchers[-1][1] = model_id
            family_hits.setdefault(family.index, []).append(f"{spec.id}/{model_id}")

    models.sort(key=lambda m: (m["provider"], m["id"]))
    provider_ids = [spec.id for spec in curated.providers]
    present = {m["provider"] for m in models}
    header = {
        "schema": SCHEMA,
        "generator": "scripts/build_catalog.py",
        "sources": {
            "genai_prices": {
                "package": "genai-prices",
                "version": gp_version,
                "license": "MIT",
                "data_file": f"genai_prices/{gp_data_file.name}",
                "data_sha256": hashlib.sha256(gp_data_file.read_bytes()).hexdigest(),
            },
            "curated": {
                "file": "megarouter/catalog/curated.yaml",
                "sha256": curated.sha256,
            },
            "prices_as_of": curated.prices_as_of.isoformat(),
        },
        "counts": {
            "models": len(models),
            "providers": len(present),
            "embeddings": sum("embeddings" in m["capabilities"] for m in models),
            "tiered": sum(bool(m["tiers"]) for m in models),
        },
        "providers": [
            {
                "id": spec.id,
                "source": spec.source,
                "aliases": sorted(spec.aliases),
                "fallback": [source_to_id[s] for s in (by_source[spec.source].fallback_model_providers or ())
                             if s in source_to_id],
                "model_match": (clause_json(by_source[spec.source].model_match, gp_types)
                                if by_source[spec.source].model_match is not None else None),
            }
            for spec in curated.providers if spec.id in present
        ],
        "provider_priority": [p for p in provider_ids if p in present],
        "quality_sources": dict(sorted(curated.quality_sources.items())),
    }
    matchers = {p: m for p, m in matchers.items() if p in present}
    content = render(header, models, matchers)
    return BuildResult(content=content, models=models, skipped=skipped, family_hits=family_hits)


def _check_entry(entry: dict[str, Any]) -> None:
    where = f"{entry['provider']}/{entry['id']}"
    if entry["context_window"] <= 0:
        raise BuildError(f"{where}: context window must be positive")
    rates = [entry["input_per_mtok"], entry["output_per_mtok"], entry["cached_input_per_mtok"]]
    for tier in entry["tiers"]:
        rates += [tier["input_per_mtok"], tier["output_per_mtok"], tier["cached_input_per_mtok"]]
    if any(r is not None and r < 0 for r in rates):
        raise BuildError(f"{where}: negative price")


def render(header: dict[str, Any], models: list[dict[str, Any]], matchers: dict[str, list[list[Any]]]) -> str:
    """Stable text: pretty header, one sorted-key JSON object per model line, one matcher list per provider."""
    def compact(value: Any) -> str:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    head = json.dumps(header, indent=2, sort_keys=True, ensure_ascii=False)
    model_lines = ",\n".join(compact(m) for m in models)
    matcher_lines = ",\n".join(f"{compact(p)}:{compact(matchers[p])}" for p in sorted(matchers))
    return ('{\n"header": ' + head + ',\n"models": [\n' + model_lines + '\n],\n"matchers": {\n'
            + matcher_lines + "\n}\n}\n")


def report(result: BuildResult, curated: Curated) -> str:
    out = []
    for fam in curated.families:
        hits = result.family_hits.get(fam.index, [])
        out.append(f"[{fam.index:3}] {fam.match.pattern!r} q={fam.quality_tier} -> {len(hits)}")
        out.extend(f"        {h}" for h in hits)
    out.append("")
    out.append("skipped:")
    out.extend(f"  {p}/{m}: {why}" for p, m, why in sorted(result.skipped))
    out.append("")
    out.append("notes:")
    for m in result.models:
        for note in m.get("notes", ()):
            out.append(f"  {m['provider']}/{m['id']}: {note}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--curated", type=Path, default=CURATED_PATH)
    parser.add_argument("--output", type=Path, default=OUTPUT_PATH)
    parser.add_argument("--check", action="store_true", help="do not write; exit 1 if the output is stale")
    parser.add_argument("--report", action="store_true", help="print family matches, skips and price notes")
    args = parser.parse_args(argv)

    try:
        result = build(args.curated)
    except BuildError as exc:
        print(f"build_catalog: {exc}", file=sys.stderr)
        return 2
    if args.report:
        print(report(result, load_curated(args.curated)))
    counts = json.loads(result.content)["header"]["counts"]
    summary = f"{counts['models']} models from {counts['providers']} providers"
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
        if current != result.content:
            print(f"build_catalog: {args.output} is stale; run scripts/build_catalog.py", file=sys.stderr)
            return 1
        print(f"build_catalog: {args.output} is up to date ({summary})")
        return 0
    args.output.write_text(result.content, encoding="utf-8")
    print(f"build_catalog: wrote {args.output} ({summary}, {len(result.content.encode())} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
