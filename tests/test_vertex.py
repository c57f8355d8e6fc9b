"""Google Vertex AI through the gateway, against the simulator's Vertex wire (which is also
the OAuth token endpoint, checking google-auth's signed JWT assertions): Gemini and Claude on
Vertex from every client API, embeddings, token refresh and revocation, a missing key file —
and a route with tiers on Bedrock, Vertex and a direct provider failing over between them
and back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anthropic
import openai
import pytest

from tests.conftest import API_KEY, System, build_system, start_sim
from tests.harness import Service, eventually
from tests.test_sim_vertex import new_key, write_key_file

PROJECT, LOCATION = "proj-mr-test", "us-central1"
GEMINI, CLAUDE, EMBED = "gemini-2.5-flash", "claude-sonnet-4-5@20250929", "text-embedding-005"
BEDROCK_CLAUDE = "anthropic.claude-3-5-sonnet-20241022-v2:0"
AKID, SECRET = "AKIDEXAMPLE0000VRTX", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYVERTEX000"


def _manifest(vertex: Service, bedrock: Service, key_file: Path, tmp: Path) -> str:
    base = f"http://127.0.0.1:{vertex.port}"
    options = f"project: {PROJECT}, location: {LOCATION}"
    return f"""
---
providers:
  - {{name: vertex-gemini, kind: vertex, base_url: '{base}', region: us-central,
     options: {{{options}, publisher: google}}, credential: {{file: '{key_file}'}}}}
  - {{name: vertex-claude, kind: vertex, base_url: '{base}', region: us-central,
     options: {{{options}, publisher: anthropic}}, credential: {{file: '{key_file}'}}}}
  - {{name: vertex-nokey, kind: vertex, base_url: '{base}', region: us-central,
     options: {{{options}}}, credential: {{file: '{tmp / "no-such-key.json"}'}}}}
  - {{name: bedrock, kind: bedrock, base_url: 'http://127.0.0.1:{bedrock.port}', region: us-east,
     options: {{aws_region: us-east-1}}}}
---
models:
  - {{name: gemini-vertex, input_price_per_mtok: 0.3, output_price_per_mtok: 2.5, context_window: 1000000,
     quality_tier: 4, capabilities: {{tools: true, vision: true, streaming: true, json_mode: true}}}}
  - {{name: claude-vertex, input_price_per_mtok: 3, output_price_per_mtok: 15, context_window: 200000,
     quality_tier: 5, capabilities: {{tools: true, streaming: true}}}}
  - {{name: gemini-nokey, input_price_per_mtok: 0.3, output_price_per_mtok: 2.5, context_window: 1000000,
     quality_tier: 4, capabilities: {{streaming: true}}}}
  - {{name: embed-vertex, input_price_per_mtok: 0.025, context_window: 2048, capabilities: {{embeddings: true}}}}
  - {{name: claude-aws, input_price_per_mtok: 3, output_price_per_mtok: 15, context_window: 200000,
     quality_tier: 5, capabilities: {{tools: true, streaming: true}}}}
---
endpoints:
  - {{name: gemini-on-vertex, model: gemini-vertex, provider: vertex-gemini, upstream_model: {GEMINI}}}
  - {{name: claude-on-vertex, model: claude-vertex, provider: vertex-claude, upstream_model: '{CLAUDE}'}}
  - {{name: gemini-without-key, model: gemini-nokey, provider: vertex-nokey, upstream_model: {GEMINI}}}
  - {{name: embed-on-vertex, model: embed-vertex, provider: vertex-gemini, upstream_model: {EMBED}}}
  - {{name: claude-on-bedrock, model: claude-aws, provider: bedrock, upstream_model: '{BEDROCK_CLAUDE}'}}
---
routes:
  - {{name: clouds, tiers: [{{models: [claude-aws]}}, {{models: [gemini-vertex]}}, {{models: [demo-small]}}],
     retry: {{max_attempts: 3}}}}
  - {{name: vertex-first, tiers: [{{models: [gemini-vertex]}}, {{models: [demo-small]}}]}}
  - {{name: nokey-first, tiers: [{{models: [gemini-nokey]}}, {{models: [demo-small]}}]}}
"""


@pytest.fixture(scope="module")
async def clouds(tmp_path_factory) -> AsyncIterator[tuple[System, Service, Service]]:
    tmp = tmp_path_factory.mktemp("vertex")
    key_file, key = tmp / "sa.json", new_key()
    write_key_file(key_file, key, token_uri="http://127.0.0.1:1/token")  # the sim's port is not known yet
    vertex = await start_sim(tmp, "sim-vertex", "--wire", "vertex", "--models", f"{GEMINI},{CLAUDE},{EMBED}",
                             "--vertex-project", PROJECT, "--vertex-location", LOCATION,
                             "--vertex-service-account-file", str(key_file))
    write_key_file(key_file, key, token_uri=f"http://127.0.0.1:{vertex.port}/token")
    bedrock = await start_sim(tmp, "sim-bedrock", "--wire", "bedrock", "--models", BEDROCK_CLAUDE,
                              "--aws-access-key-id", AKID, "--aws-secret-access-key", SECRET)
    system = None
    try:
        system = await build_system(tmp, proxies=0, manifest_extra=_manifest(vertex, bedrock, key_file, tmp))
        system.sims += [vertex, bedrock]
        await system.start_proxy(env={
            "AWS_ACCESS_KEY_ID": AKID, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": str(tmp / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp / "none")})
        await system.wait_proxy_version(1)
        yield system, vertex, bedrock
    finally:
        if system is not None:
            await system.close()
        else:
            await vertex.stop()
            await bedrock.stop()


def _client(system: System) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=system.base_url(), api_key=API_KEY, max_retries=0)


async def test_gemini_and_claude_on_vertex_from_every_api(clouds) -> None:
    system, *_ = clouds
    client = _client(system)
    for model, endpoint in (("gemini-vertex", "gemini-on-vertex"), ("claude-vertex", "claude-on-vertex")):
        raw = await client.chat.completions.with_raw_response.create(
            model=model, messages=[{"role": "user", "content": "hello"}], max_tokens=40)
        assert raw.headers["x-megarouter-endpoint"] == endpoint and raw.parse().choices[0].message.content
        stream = await client.chat.completions.create(model=model, stream=True, max_tokens=40,
                                                      stream_options={"include_usage": True},
                                                      messages=[{"role": "user", "content": "a story"}])
        text, usage = "", None
        async for chunk in stream:
            text += (chunk.choices[0].delta.content or "") if chunk.choices else ""
            usage = chunk.usage or usage
        assert text and usage is not None and usage.completion_tokens > 0, model
        response = await client.responses.create(model=model, input="hello", max_output_tokens=40)
        assert response.output_text, model
    claude = anthropic.AsyncAnthropic(base_url=system.base_url().removesuffix("/v1"), api_key=API_KEY, max_retries=0)
    message = await claude.messages.create(model="claude-vertex", max_tokens=40,
                                           messages=[{"role": "user", "content": "hello"}])
    assert message.content[0].text
    await claude.close()
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {
        "type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}}}
    for model in ("gemini-vertex", "claude-vertex"):
        answer = await client.chat.completions.create(model=model, tools=[tool], tool_choice="required",
                                                      messages=[{"role": "user", "content": "look it up"}])
        assert answer.choices[0].message.tool_calls[0].function.name == "lookup", model


async def test_embeddings_through_vertex_predict(clouds) -> None:
    system, *_ = clouds
    result = await _client(system).embeddings.create(model="embed-vertex", input=["one", "two"], dimensions=64)
    assert [item.index for item in result.data] == [0, 1] and len(result.data[0].embedding) == 64
    assert result.usage.prompt_tokens > 0


async def test_tokens_are_refreshed_and_a_revoked_one_is_replaced(clouds) -> None:
    system, vertex, _ = clouds
    index = system.sims.index(vertex)
    client = _client(system)
    await client.chat.completions.create(model="gemini-vertex", messages=[{"role": "user", "content": "hi"}])
    # Revoked: the cached token is refused once — that request fails over, it is not retried on
    # Vertex — and the next one fetches a new token. From now on tokens live one second.
    await system.set_sim(index, vertex_revoke_tokens=True, vertex_token_ttl_s=1)
    try:
        raw = await client.chat.completions.with_raw_response.create(
            model="vertex-first", messages=[{"role": "user", "content": "hi"}])
        assert raw.headers["x-megarouter-endpoint"] == "small-sim"
        before = (await system.sim_stats(index)).get("token_grants", 0)
        for _ in range(3):  # each token is past its refresh margin at once: refreshed before every use
            raw = await client.chat.completions.with_raw_response.create(
                model="gemini-vertex", messages=[{"role": "user", "content": "hi"}])
            assert raw.headers["x-megarouter-endpoint"] == "gemini-on-vertex"
        assert (await system.sim_stats(index)).get("token_grants", 0) - before >= 3
    finally:
        await system.set_sim(index, vertex_token_ttl_s=3600)


async def test_a_missing_key_file_fails_over(clouds) -> None:
    system, *_ = clouds
    raw = await _client(system).chat.completions.with_raw_response.create(
        model="nokey-first", messages=[{"role": "user", "content": "hi"}])
    assert raw.headers["x-megarouter-endpoint"] == "small-sim"
    assert "vertex-nokey skipped" in system.proxies[0].log_path.read_text()


async def test_a_route_across_bedrock_vertex_and_a_direct_provider_fails_over_and_back(clouds) -> None:
    system, vertex, bedrock = clouds
    client = _client(system)
    ask = [{"role": "user", "content": "hi"}]

    async def served_by() -> str:
        raw = await client.chat.completions.with_raw_response.create(model="clouds", messages=ask)
        return raw.headers["x-megarouter-endpoint"]
    assert await served_by() == "claude-on-bedrock"
    await system.set_sim(system.sims.index(bedrock), error_rate=1.0, error_status=503)
    try:
        assert await served_by() == "gemini-on-vertex"
        await system.set_sim(system.sims.index(vertex), error_rate=1.0, error_status=429)
        try:
            assert await served_by() == "small-sim"
            claude = anthropic.AsyncAnthropic(base_url=system.base_url().removesuffix("/v1"), api_key=API_KEY,
                                              max_retries=0)
            message = await claude.messages.create(model="clouds", max_tokens=30, messages=ask)
            assert message.content[0].text  # every API, down to the last tier
            await claude.close()
        finally:
            await system.set_sim(system.sims.index(vertex), error_rate=0.0)
    finally:
        await system.set_sim(system.sims.index(bedrock), error_rate=0.0)
    # Back: once its ejection ends, the first tier serves again (probes bring it back).
    async def back_on_bedrock() -> bool:
        return await served_by() == "claude-on-bedrock"
    await eventually(back_on_bedrock, timeout=60, what="the route to return to Bedrock")
