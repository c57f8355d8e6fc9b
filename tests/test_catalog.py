"""The model catalog: offline loading, contents, prices, lookups, and that the
committed megarouter/catalog/models.json is what scripts/build_catalog.py builds."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import pytest

from megarouter.catalog import (
    CAPABILITIES,
    Catalog,
    CatalogModel,
    PriceTier,
    cost_usd,
    load_catalog,
    to_model_resource,
)
from megarouter.resources import MODEL_NAME_PATTERN, Model

ROOT = Path(__file__).resolve().parent.parent
CATALOG_DIR = ROOT / "megarouter" / "catalog"
MODELS_JSON = CATALOG_DIR / "models.json"
CURATED_YAML = CATALOG_DIR / "curated.yaml"
BUILD_SCRIPT = ROOT / "scripts" / "build_catalog.py"


def _no_network(*args: object, **kwargs: object) -> None:
    raise AssertionError("the catalog must not touch the network")


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "socket", _no_network)
    monkeypatch.setattr(socket, "create_connection", _no_network)
    monkeypatch.setattr(socket, "getaddrinfo", _no_network)


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog()


def _model(catalog: Catalog, ref: str) -> CatalogModel:
    model = catalog.get(ref)
    assert model is not None, f"{ref} is not in the catalog"
    return model


# ---------------------------------------------------------------- loading


def test_loads_from_file_without_network(no_network: None) -> None:
    catalog = Catalog.from_file(MODELS_JSON)
    assert len(catalog) >= 200
    assert catalog.get("gpt-4o-mini") is not None


def test_load_catalog_in_a_fresh_interpreter_is_offline_and_does_not_import_genai_prices() -> None:
    code = textwrap.dedent("""
        import socket, sys
        def refuse(*a, **k):
            raise AssertionError("network used")
        socket.socket = socket.create_connection = socket.getaddrinfo = refuse
        from megarouter.catalog import load_catalog
        catalog = load_catalog()
        assert load_catalog() is catalog
        assert catalog.get("anthropic/claude-haiku-4-5") is not None
        assert "genai_prices" not in sys.modules, "runtime imported genai-prices"
        print(len(catalog))
    """)
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) >= 200


def test_load_catalog_is_cached(catalog: Catalog) -> None:
    assert load_catalog() is catalog


# ---------------------------------------------------------------- contents


def test_size_and_providers(catalog: Catalog) -> None:
    models = catalog.all()
    assert len(models) >= 200
    per_provider = {p: len(catalog.by_provider(p)) for p in catalog.providers()}
    real = [p for p, n in per_provider.items() if n >= 5]
    assert len(real) >= 8, per_provider
    for expected in ("openai", "anthropic", "google", "mistral", "deepseek", "xai", "groq", "together",
                     "fireworks", "bedrock", "azure", "cohere", "perplexity"):
        assert expected in per_provider, expected
    assert catalog.providers() == sorted(catalog.providers())
    assert models == sorted(models, key=lambda m: (m.provider, m.id))
    assert len({m.key for m in models}) == len(models)


def test_every_model_is_sane(catalog: Catalog) -> None:
    quality_keys = {"arena", "lineup", "embed"}
    for m in catalog.all():
        where = m.key
        assert m.context_window > 0, where
        assert 0 <= m.max_output_tokens <= m.context_window, where
        assert m.input_per_mtok >= 0 and m.output_per_mtok >= 0, where
        assert m.cached_input_per_mtok is None or m.cached_input_per_mtok >= 0, where
        thresholds = [t.min_prompt_tokens for t in m.tiers]
        assert thresholds == sorted(set(thresholds)) and all(t > 0 for t in thresholds), where
        for tier in m.tiers:
            assert tier.input_per_mtok >= 0 and tier.output_per_mtok >= 0, where
            assert tier.cached_input_per_mtok is None or tier.cached_input_per_mtok >= 0, where
        assert m.capabilities and m.capabilities <= set(CAPABILITIES), where
        assert 1 <= m.quality_tier <= 5, where
        assert m.quality_source.split(":", 1)[0] in quality_keys and len(m.quality_source) > 40, where
        assert m.name, where
        assert re.fullmatch(MODEL_NAME_PATTERN, m.id), where   # usable as an admin API model name


def test_embedding_models_are_flagged(catalog: Catalog) -> None:
    embeddings = [m for m in catalog.all() if "embeddings" in m.capabilities]
    assert len(embeddings) >= 10
    for m in embeddings:
        assert m.capabilities == {"embeddings"}, m.key
        assert m.output_per_mtok == 0 and m.max_output_tokens == 0, m.key
    for ref in ("openai/text-embedding-3-small", "openai/text-embedding-3-large", "voyage/voyage-3.5",
                "cohere/embed-v4.0", "google/gemini-embedding-001", "bedrock/amazon.titan-embed-text-v2:0",
                "mistral/mistral-embed"):
        assert "embeddings" in _model(catalog, ref).capabilities, ref
    assert "embeddings" not in _model(catalog, "gpt-4o").capabilities


def test_curated_facts_for_well_known_models(catalog: Catalog) -> None:
    mini = _model(catalog, "gpt-4o-mini")
    assert mini.provider == "openai"
    assert mini.capabilities == {"tools", "vision", "json_mode", "streaming"}
    assert (mini.context_window, mini.max_output_tokens, mini.quality_tier) == (128_000, 16_384, 3)
    sonnet = _model(catalog, "claude-sonnet-4-5")
    assert sonnet.provider == "anthropic"
    assert {"tools", "vision", "reasoning", "streaming"} <= sonnet.capabilities
    assert sonnet.quality_tier == 5 and sonnet.quality_source.startswith("arena:")
    pro = _model(catalog, "gemini-2.5-pro")
    assert pro.context_window == 1_048_576 and "reasoning" in pro.capabilities
    # A newer model than the curator knows is marked as provisional.
    assert _model(catalog, "gpt-6-sol").quality_source.startswith("lineup:")


def test_version_records_the_sources(catalog: Catalog) -> None:
    version = catalog.version
    assert version["schema"] == 1
    gp = version["genai_prices"]
    assert gp["package"] == "genai-prices" and gp["version"]
    assert len(gp["data_sha256"]) == 64
    assert version["prices_as_of"]
    # Editing the curated table without rebuilding is caught even without genai-prices installed.
    curated_sha = hashlib.sha256(CURATED_YAML.read_bytes()).hexdigest()
    assert version["curated"]["sha256"] == curated_sha, "curated.yaml changed: run scripts/build_catalog.py"
    header = json.loads(MODELS_JSON.read_bytes())["header"]
    assert "built_at" not in json.dumps(header)   # no build time: rebuilds are reproducible
    assert header["counts"]["models"] == len(catalog)


# ---------------------------------------------------------------- prices


def test_cost_gpt_4o_mini_with_cached_prompt(catalog: Catalog) -> None:
    # OpenAI list price for gpt-4o-mini: $0.15 input, $0.075 cached input, $0.60 output per 1M tokens.
    m = _model(catalog, "openai/gpt-4o-mini")
    assert (m.input_per_mtok, m.cached_input_per_mtok, m.output_per_mtok) == (0.15, 0.075, 0.6)
    assert m.tiers == ()
    # 10,000 prompt tokens of which 4,000 cached, 2,000 completion tokens:
    # 6,000 * 0.15 + 4,000 * 0.075 + 2,000 * 0.60 = 900 + 300 + 1,200 = 2,400 micro-dollars.
    assert cost_usd(m, 10_000, 2_000, cached_prompt_tokens=4_000) == pytest.approx(0.0024)
    # Without caching: 10,000 * 0.15 + 2,000 * 0.60 = 2,700 micro-dollars.
    assert cost_usd(m, 10_000, 2_000) == pytest.approx(0.0027)


def test_cost_claude_haiku(catalog: Catalog) -> None:
    # Anthropic list prices: Claude Haiku 4.5 $1 input / $0.10 cache read / $5 output;
    # Claude Haiku 3.5 $0.80 / $0.08 / $4 per 1M tokens.
    haiku45 = _model(catalog, "claude-haiku-4-5")
    # 50,000 * 1 + 1,000 * 5 = 55,000 micro-dollars.
    assert cost_usd(haiku45, 50_000, 1_000) == pytest.approx(0.055)
    # 50,000 prompt tokens, 40,000 of them read from cache: 10,000 * 1 + 40,000 * 0.10 + 1,000 * 5 = 19,000.
    assert cost_usd(haiku45, 50_000, 1_000, cached_prompt_tokens=40_000) == pytest.approx(0.019)
    haiku35 = _model(catalog, "claude-3-5-haiku-20241022")   # dated snapshot id
    assert haiku35.id == "claude-3-5-haiku-latest"
    # 100,000 * 0.80 + 20,000 * 4 = 160,000 micro-dollars.
    assert cost_usd(haiku35, 100_000, 20_000) == pytest.approx(0.16)


def test_cost_claude_sonnet_4_5_long_context_tier(catalog: Catalog) -> None:
    # Claude Sonnet 4.5: $3 / $0.30 cache read / $15 per 1M tokens; prompts over 200K tokens bill the
    # whole request at $6 / $0.60 / $22.50.
    m = _model(catalog, "anthropic/claude-sonnet-4-5")
    assert m.tiers == (PriceTier(200_001, 6.0, 22.5, 0.6),)
    # At exactly 200,000 prompt tokens the base rates apply: 200,000 * 3 + 1,000 * 15 = 615,000.
    assert cost_usd(m, 200_000, 1_000) == pytest.approx(0.615)
    # 250,000 prompt tokens (100,000 cached), 10,000 completion, all at long-context rates:
    # 150,000 * 6 + 100,000 * 0.60 + 10,000 * 22.5 = 900,000 + 60,000 + 225,000 = 1,185,000.
    assert cost_usd(m, 250_000, 10_000, cached_prompt_tokens=100_000) == pytest.approx(1.185)


def test_cost_gemini_2_5_pro_above_200k(catalog: Catalog) -> None:
    # Gemini 2.5 Pro (Google AI pricing): prompts <= 200K tokens $1.25 input / $0.125 cached / $10 output;
    # prompts > 200K tokens $2.50 / $0.25 / $15 per 1M tokens.
    m = _model(catalog, "gemini/gemini-2.5-pro")
    assert (m.input_per_mtok, m.cached_input_per_mtok, m.output_per_mtok) == (1.25, 0.125, 10.0)
    # 200,000 * 1.25 + 1,000 * 10 = 260,000 micro-dollars.
    assert cost_usd(m, 200_000, 1_000) == pytest.approx(0.26)
    # 200,001 * 2.50 + 1,000 * 15 = 500,002.5 + 15,000 = 515,002.5 micro-dollars.
    assert cost_usd(m, 200_001, 1_000) == pytest.approx(0.5150025)
    # 300,000 prompt tokens, 250,000 cached: 50,000 * 2.50 + 250,000 * 0.25 + 2,000 * 15 = 217,500.
    assert cost_usd(m, 300_000, 2_000, cached_prompt_tokens=250_000) == pytest.approx(0.2175)
    assert m.rates(199_999).input_per_mtok == 1.25 and m.rates(500_000).input_per_mtok == 2.5


def test_cost_without_a_cached_price_bills_cached_tokens_at_the_input_rate(catalog: Catalog) -> None:
    m = _model(catalog, "openai/gpt-4o-2024-05-13")   # $5 input / $15 output, no cached price
    assert m.cached_input_per_mtok is None
    # 1,000 * 5 + 500 * 15 = 12,500 micro-dollars, however many prompt tokens were cached.
    assert cost_usd(m, 1_000, 500, cached_prompt_tokens=600) == pytest.approx(0.0125)
    assert cost_usd(m, 1_000, 500) == pytest.approx(0.0125)


def test_cost_edge_cases(catalog: Catalog) -> None:
    embed = _model(catalog, "text-embedding-3-small")   # $0.02 per 1M input tokens
    assert cost_usd(embed, 1_000_000, 0) == pytest.approx(0.02)
    m = _model(catalog, "gpt-4o-mini")
    # Cached tokens beyond the prompt are clamped: all 1,000 prompt tokens at 0.075.
    assert cost_usd(m, 1_000, 0, cached_prompt_tokens=5_000) == pytest.approx(0.000075)
    assert cost_usd(m, 0, 0) == 0
    with pytest.raises(ValueError):
        cost_usd(m, -1, 0)


def test_time_of_day_and_scheduled_prices_are_resolved_conservatively(catalog: Catalog) -> None:
    # deepseek-chat: off-peak $0.135 / peak $0.27 input upstream; the catalog keeps the higher rate.
    assert _model(catalog, "deepseek/deepseek-chat").input_per_mtok == 0.27


# ---------------------------------------------------------------- lookups


def test_get_by_id_and_provider_prefix(catalog: Catalog) -> None:
    bare = _model(catalog, "gpt-4o-mini")
    assert catalog.get("openai/gpt-4o-mini") is bare
    assert catalog.get("GPT-4o-Mini") is bare
    assert catalog.get("gemini/gemini-2.5-flash") is catalog.get("google/gemini-2.5-flash") is not None
    assert _model(catalog, "x-ai/grok-4-0709").provider == "xai"
    # Ids containing slashes, with and without the provider prefix.
    groq = _model(catalog, "groq/openai/gpt-oss-120b")
    assert groq.provider == "groq" and groq.id == "openai/gpt-oss-120b"
    assert catalog.get("openai/gpt-oss-120b").provider == "openai"   # provider form wins over the groq id
    together = _model(catalog, "together/meta-llama/Llama-3.3-70B-Instruct-Turbo")
    assert catalog.get("meta-llama/llama-3.3-70b-instruct-turbo") is together
    # Same id at several providers: the first-party vendor is preferred.
    assert _model(catalog, "deepseek-v4-pro").provider == "deepseek"
    assert _model(catalog, "fireworks/deepseek-v4-pro").provider == "fireworks"
    assert catalog.get("no-such-model") is None
    assert catalog.get("openai/no-such-model") is None
    assert "gpt-4o" in catalog and "no-such-model" not in catalog


def test_get_follows_genai_prices_match_rules(catalog: Catalog) -> None:
    assert _model(catalog, "claude-3-5-sonnet-20241022").key == "anthropic/claude-3-5-sonnet"
    assert _model(catalog, "claude-sonnet-4-20250514").key == "anthropic/claude-sonnet-4-0"
    assert _model(catalog, "gpt-4o-mini-2024-07-18").key == "openai/gpt-4o-mini"
    assert _model(catalog, "gemini-2.0-flash-001").key == "google/gemini-2.0-flash"
    assert _model(catalog, "gpt-5.2-20251211").key == "openai/gpt-5.2"   # compact date
    assert _model(catalog, "accounts/fireworks/models/deepseek-v4-pro").key == "fireworks/deepseek-v4-pro"
    # A provider's fallbacks: Azure serves OpenAI models at OpenAI's prices.
    assert _model(catalog, "azure/gpt-4o").key == "openai/gpt-4o"
    assert _model(catalog, "azure/o4-mini").key == "azure/o4-mini"
    # A ref upstream matches to a model the catalog leaves out does not resolve to a neighbour.
    assert catalog.get("gpt-4o-audio-preview-2024-12-17") is None
    assert catalog.get("gpt-4o-mini-tts") is None


def test_model_resource_seeds_the_admin_api(catalog: Catalog) -> None:
    for m in catalog.all():
        resource = to_model_resource(m)
        Model(**resource)   # validates names, prices, limits
        assert resource["capabilities"] == {cap: cap in m.capabilities for cap in CAPABILITIES}
    d = to_model_resource(_model(catalog, "gpt-4o-mini"), name="mini")
    assert d == {
        "name": "mini",
        "input_price_per_mtok": 0.15,
        "output_price_per_mtok": 0.6,
        "context_window": 128_000,
        "max_output_tokens": 16_384,
        "capabilities": {"tools": True, "vision": True, "json_mode": True, "streaming": True,
                         "reasoning": False, "embeddings": False},
        "quality_tier": 3,
    }
    assert set(d) <= set(Model.model_fields)


# ---------------------------------------------------------------- the build


def _build_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_catalog", BUILD_SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module   # dataclasses look their module up while the class is created
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


@pytest.fixture(scope="module")
def genai_prices_version() -> str:
    pytest.importorskip("genai_prices", reason="genai-prices (build-time dependency) is not installed")
    from importlib.metadata import version

    installed = version("genai-prices")
    built_with = json.loads(MODELS_JSON.read_bytes())["header"]["sources"]["genai_prices"]["version"]
    if installed != built_with:
        pytest.skip(f"genai-prices {installed} is installed but the catalog was built with {built_with}")
    return installed


def test_committed_catalog_is_what_the_build_produces(
    genai_prices_version: str, no_network: None, tmp_path: Path
) -> None:
    build = _build_module()
    out = tmp_path / "models.json"
    assert build.main(["--output", str(out)]) == 0
    assert out.read_bytes() == MODELS_JSON.read_bytes(), "stale catalog: run scripts/build_catalog.py"
    # And again: the output does not depend on when or how often it is built.
    assert build.build().content.encode() == MODELS_JSON.read_bytes()


def test_lookups_agree_with_genai_prices(genai_prices_version: str, catalog: Catalog) -> None:
    """For refs named in genai-prices' match rules, the catalog resolves "provider/ref" to the model
    genai-prices would price, or to nothing when that model is left out of the catalog."""
    from genai_prices import types as gp_types
    from genai_prices.data import providers as gp_providers

    header = json.loads(MODELS_JSON.read_bytes())["header"]
    to_gateway = {p["source"]: p["id"] for p in header["providers"]}
    by_source = {p.id: p for p in gp_providers}

    def refs(clause: object) -> list[str]:
        if isinstance(clause, gp_types.ClauseEquals):
            return [clause.equals.lower()]
        if isinstance(clause, gp_types.ClauseStartsWith):
            return [clause.starts_with.lower()]
        if isinstance(clause, gp_types.ClauseOr):
            return [r for sub in clause.or_ for r in refs(sub)]
        return []

    checked = 0
    for source, gateway in to_gateway.items():
        provider = by_source[source]
        for gp_model in provider.models:
            for ref in refs(gp_model.match):
                if catalog._by_provider[gateway].get(ref) is not None:
                    continue   # an exact catalog id wins by design
                expected_model = provider.find_model(ref, all_providers=gp_providers)
                owner = next(p for p in gp_providers if any(m is expected_model for m in p.models))
                expected = (to_gateway.get(owner.id), expected_model.id)
                got = catalog.get(f"{gateway}/{ref}")
                if got is None:
                    assert catalog._by_provider.get(expected[0], {}).get(expected[1].lower()) is None, (gateway, ref)
                elif got.provider != gateway and expected[0] == gateway:
                    continue   # excluded with fall_through (Vertex's Claude): priced via the fallback
                else:
                    assert (got.provider, got.id) == expected, (gateway, ref)
                checked += 1
    assert checked > 500


def test_costs_agree_with_genai_prices(genai_prices_version: str, catalog: Catalog) -> None:
    """cost_usd equals genai-prices' own calculation at the catalog's price date, for every model whose
    upstream price is neither time-of-day dependent nor scheduled to change."""
    from datetime import UTC, date, datetime, time

    from genai_prices import Usage
    from genai_prices.data import providers as gp_providers

    doc = json.loads(MODELS_JSON.read_bytes())
    header = doc["header"]
    as_of = datetime.combine(date.fromisoformat(header["sources"]["prices_as_of"]), time(12), tzinfo=UTC)
    source = {p["id"]: p["source"] for p in header["providers"]}
    gp = {(p.id, m.id): (p, m) for p in gp_providers for m in p.models}
    cases = [(1_000, 0, 500), (150_000, 100_000, 2_000), (250_000, 0, 1_000), (300_000, 299_000, 10)]
    checked = 0
    for raw in doc["models"]:
        if raw.get("notes"):
            continue
        model = _model(catalog, f"{raw['provider']}/{raw['id']}")
        gp_provider, gp_model = gp[(source[model.provider], model.id)]
        embeddings = "embeddings" in model.capabilities
        for prompt, cached, completion in cases:
            if embeddings:
                completion = 0
            if model.cached_input_per_mtok is None and all(t.cached_input_per_mtok is None for t in model.tiers):
                usage = Usage(input_tokens=prompt, output_tokens=completion)
                cached = 0
            else:
                usage = Usage(input_tokens=prompt, cache_read_tokens=cached, output_tokens=completion)
            expected = gp_model.calc_price(usage, gp_provider, genai_request_timestamp=as_of).total_price
            got = cost_usd(model, prompt, completion, cached_prompt_tokens=cached)
            assert got == pytest.approx(float(expected), rel=1e-9, abs=1e-12), (model.key, prompt, cached)
            checked += 1
    assert checked >= 4 * 400
