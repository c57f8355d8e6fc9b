"""The built-in catalog as the control plane's base layer of models."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import openai
import pytest

from megarouter.catalog import cost_usd, load_catalog
from megarouter.v1 import admin_pb2, routing_pb2
from tests.conftest import API_KEY, System


async def test_endpoint_can_serve_a_catalog_model_priced_from_the_catalog(fresh_system: System) -> None:
    system = fresh_system
    put = await system.admin.PutEndpoint(routing_pb2.Endpoint(
        name="mini-sim", model="gpt-4o-mini", provider="sim", upstream_model="demo-small"))
    await system.wait_proxy_version(put.revision)
    client = openai.AsyncOpenAI(base_url=system.base_url(), api_key=API_KEY, max_retries=0)
    raw = await client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    usage = raw.parse().usage
    entry = load_catalog().get("gpt-4o-mini")
    assert entry is not None and entry.input_per_mtok > 0
    expected = cost_usd(entry, usage.prompt_tokens, usage.completion_tokens)
    assert float(raw.headers["x-megarouter-cost-usd"]) == pytest.approx(expected, abs=1e-8)

    # An admin override of the same name changes the price the proxy charges.
    override = await system.admin.GetModel(admin_pb2.GetRequest(name="gpt-4o-mini"))
    assert override.source == "catalog"
    override.input_price_per_mtok, override.output_price_per_mtok = 100.0, 200.0
    put = await system.admin.PutModel(override)
    await system.wait_proxy_version(put.revision)
    raw = await client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    usage = raw.parse().usage
    expected = (usage.prompt_tokens * 100 + usage.completion_tokens * 200) / 1e6
    assert float(raw.headers["x-megarouter-cost-usd"]) == pytest.approx(expected, abs=1e-8)
    assert (await system.admin.GetModel(admin_pb2.GetRequest(name="gpt-4o-mini"))).source == "admin"

    # Deleting the override falls back to the catalog; the endpoint keeps working.
    await system.admin.DeleteModel(admin_pb2.DeleteRequest(name="gpt-4o-mini"))
    assert (await system.admin.GetModel(admin_pb2.GetRequest(name="gpt-4o-mini"))).source == "catalog"


async def test_ctl_lists_catalog_models_with_prices(system: System) -> None:
    listed = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "megarouter.ctl", "--server", system.admin_address, "get", "models"],
        capture_output=True, text=True, timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["NAME", "INPUT_PRICE_PER_MTOK", "OUTPUT_PRICE_PER_MTOK", "CONTEXT_WINDOW",
                                "QUALITY_TIER", "SOURCE"]
    assert len(lines) > 200
    row = next(line.split() for line in lines if line.startswith("gpt-4o-mini "))
    assert row[-1] == "catalog" and float(row[1]) == load_catalog().get("gpt-4o-mini").input_per_mtok
    assert next(line for line in lines if line.startswith("demo-small ")).split()[-1] == "admin"
