"""AWS Bedrock through the gateway, against the simulator's Bedrock wire (which verifies SigV4
signatures with botocore, as AWS does): every client API, JSON and streams, tools, images,
embeddings, error classes and failover to a direct provider; credentials from the
environment, from a refreshing `credential_process` profile, and missing altogether."""

from __future__ import annotations

import json
import stat
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import anthropic
import openai
import pytest

from tests.conftest import API_KEY, System, build_system, start_sim
from tests.harness import Service, eventually

CLAUDE = "anthropic.claude-3-5-sonnet-20241022-v2:0"
TITAN = "amazon.titan-embed-text-v2:0"
COHERE = "cohere.embed-english-v3"
AKID, SECRET = "AKIDEXAMPLE0000TEST", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYTESTKEY00"
# A 1x1 PNG.
PNG = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJ"
       "RU5ErkJggg==")


def _manifest(bedrock: Service, profile_config: Path) -> str:
    base = f"http://127.0.0.1:{bedrock.port}"
    return f"""
---
providers:
  - {{name: bedrock, kind: bedrock, base_url: '{base}', region: us-east, options: {{aws_region: us-east-1}}}}
  - {{name: bedrock-profile, kind: bedrock, base_url: '{base}', region: us-east,
     options: {{aws_region: us-east-1, aws_profile: rotating}}}}
  - {{name: bedrock-nocreds, kind: bedrock, base_url: '{base}', region: us-east,
     options: {{aws_region: us-east-1, aws_profile: no-such-profile}}}}
---
models:
  - {{name: claude-bedrock, input_price_per_mtok: 3, output_price_per_mtok: 15, context_window: 200000,
     quality_tier: 5, capabilities: {{tools: true, vision: true, streaming: true, json_mode: true}}}}
  - {{name: claude-profile, input_price_per_mtok: 3, output_price_per_mtok: 15, context_window: 200000,
     quality_tier: 5, capabilities: {{tools: true, streaming: true}}}}
  - {{name: claude-auth, input_price_per_mtok: 3, output_price_per_mtok: 15, context_window: 200000,
     quality_tier: 5, capabilities: {{tools: true, streaming: true}}}}
  - {{name: claude-nocreds, input_price_per_mtok: 3, output_price_per_mtok: 15, context_window: 200000,
     quality_tier: 5, capabilities: {{tools: true, streaming: true}}}}
  - {{name: titan-embed, input_price_per_mtok: 0.02, context_window: 8192, capabilities: {{embeddings: true}}}}
  - {{name: cohere-embed, input_price_per_mtok: 0.1, context_window: 512, capabilities: {{embeddings: true}}}}
---
endpoints:
  - {{name: claude-on-bedrock, model: claude-bedrock, provider: bedrock, upstream_model: 'us.{CLAUDE}'}}
  - {{name: claude-on-profile, model: claude-profile, provider: bedrock-profile, upstream_model: '{CLAUDE}'}}
  - {{name: claude-auth-on-bedrock, model: claude-auth, provider: bedrock, upstream_model: '{CLAUDE}'}}
  - {{name: claude-without-creds, model: claude-nocreds, provider: bedrock-nocreds, upstream_model: '{CLAUDE}'}}
  - {{name: titan-on-bedrock, model: titan-embed, provider: bedrock, upstream_model: '{TITAN}'}}
  - {{name: cohere-on-bedrock, model: cohere-embed, provider: bedrock, upstream_model: '{COHERE}'}}
---
routes:
  - {{name: cloud, tiers: [{{models: [claude-bedrock]}}, {{models: [demo-small]}}],
     retry: {{max_attempts: 3}}}}
  # Its own endpoint, so the fault tests' ejections of claude-on-bedrock do not hide it.
  - {{name: cloud-auth, tiers: [{{models: [claude-auth]}}, {{models: [demo-small]}}]}}
  - {{name: cloud-nocreds, tiers: [{{models: [claude-nocreds]}}, {{models: [demo-small]}}]}}
"""


def _write_credential_process(tmp: Path) -> tuple[Path, Path]:
    """An AWS config with profile `rotating`, whose credential_process prints the credentials
    in `creds.json` with an expiry inside botocore's refresh window — so botocore asks again
    at each use, as it would near the end of a real session."""
    creds = tmp / "creds.json"
    script = tmp / "print_creds.py"
    script.write_text(
        "import json, sys, datetime\n"
        f"data = json.load(open({str(creds)!r}))\n"
        "expiry = datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=5)\n"
        "print(json.dumps({'Version': 1, 'AccessKeyId': data['id'], 'SecretAccessKey': data['secret'],\n"
        "                  'SessionToken': data['token'], 'Expiration': expiry.isoformat()}))\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    config = tmp / "aws-config"
    config.write_text(f"[profile rotating]\ncredential_process = {sys.executable} {script}\n")
    return creds, config


def _set_creds(path: Path, key: str, secret: str, token: str) -> None:
    path.write_text(json.dumps({"id": key, "secret": secret, "token": token}))


@pytest.fixture(scope="module")
async def cloud(tmp_path_factory) -> AsyncIterator[tuple[System, Service, Path]]:
    tmp = tmp_path_factory.mktemp("bedrock")
    creds, config = _write_credential_process(tmp)
    _set_creds(creds, AKID, SECRET, "")
    bedrock = await start_sim(tmp, "sim-bedrock", "--wire", "bedrock", "--models", f"{CLAUDE},{TITAN},{COHERE}",
                              "--aws-access-key-id", AKID, "--aws-secret-access-key", SECRET,
                              "--aws-region", "us-east-1")
    system = None
    try:
        system = await build_system(tmp, proxies=0, manifest_extra=_manifest(bedrock, config))
        system.sims.append(bedrock)
        env = {"AWS_ACCESS_KEY_ID": AKID, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_CONFIG_FILE": str(config),
               "AWS_SHARED_CREDENTIALS_FILE": str(tmp / "no-credentials-file"), "AWS_EC2_METADATA_DISABLED": "true"}
        await system.start_proxy(env=env)
        await system.wait_proxy_version(1)
        yield system, bedrock, creds
    finally:
        if system is not None:
            await system.close()
        else:
            await bedrock.stop()


def _client(system: System) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=system.base_url(), api_key=API_KEY, max_retries=0)


async def _bedrock_stats(system: System) -> dict:
    return await system.sim_stats(len(system.sims) - 1)


async def test_chat_json_and_stream_are_served_by_bedrock(cloud) -> None:
    system, *_ = cloud
    client = _client(system)
    raw = await client.chat.completions.with_raw_response.create(
        model="claude-bedrock", messages=[{"role": "system", "content": "Be brief."},
                                          {"role": "user", "content": "Hello there"}], max_tokens=40)
    reply = raw.parse()
    assert raw.headers["x-megarouter-endpoint"] == "claude-on-bedrock"
    assert reply.choices[0].message.content and reply.choices[0].finish_reason in ("stop", "length")
    assert reply.usage.prompt_tokens > 0 and reply.usage.completion_tokens > 0
    chunks = await client.chat.completions.create(model="claude-bedrock", stream=True, max_tokens=40,
                                                  stream_options={"include_usage": True},
                                                  messages=[{"role": "user", "content": "Tell me a story"}])
    text, usage, finish = "", None, None
    async for chunk in chunks:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
        usage = chunk.usage or usage
    assert text and finish in ("stop", "length") and usage is not None and usage.completion_tokens > 0


async def test_tools_and_images_round_trip(cloud) -> None:
    system, *_ = cloud
    client = _client(system)
    tool = {"type": "function", "function": {"name": "lookup", "description": "Look something up",
                                             "parameters": {"type": "object", "properties": {"q": {"type": "string"}},
                                                            "required": ["q"]}}}
    first = await client.chat.completions.create(
        model="claude-bedrock", tools=[tool], tool_choice="required",
        messages=[{"role": "user", "content": "Look up the weather"}])
    call = first.choices[0].message.tool_calls[0]
    assert first.choices[0].finish_reason == "tool_calls" and call.function.name == "lookup"
    json.loads(call.function.arguments)
    second = await client.chat.completions.create(model="claude-bedrock", tools=[tool], messages=[
        {"role": "user", "content": "Look up the weather"},
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"}])
    assert second.choices[0].message.content
    streamed = await client.chat.completions.create(
        model="claude-bedrock", tools=[tool], tool_choice="required", stream=True,
        messages=[{"role": "user", "content": "Look up the weather"}])
    names, arguments = set(), ""
    async for chunk in streamed:
        for delta in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            names.add(delta.function.name) if delta.function.name else None
            arguments += delta.function.arguments or ""
    assert names == {"lookup"} and isinstance(json.loads(arguments), dict)
    seen = await client.chat.completions.create(model="claude-bedrock", messages=[{"role": "user", "content": [
        {"type": "text", "text": "What is in this picture?"}, {"type": "image_url", "image_url": {"url": PNG}}]}])
    assert seen.choices[0].message.content
    with pytest.raises(openai.BadRequestError) as by_url:
        await client.chat.completions.create(model="claude-bedrock", messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}])
    assert "base64" in str(by_url.value)


async def test_the_anthropic_and_responses_apis_reach_bedrock(cloud) -> None:
    system, *_ = cloud
    claude = anthropic.AsyncAnthropic(base_url=system.base_url().removesuffix("/v1"), api_key=API_KEY, max_retries=0)
    message = await claude.messages.create(model="claude-bedrock", max_tokens=50,
                                           messages=[{"role": "user", "content": "hello"}])
    assert message.content[0].text and message.usage.output_tokens > 0
    async with claude.messages.stream(model="claude-bedrock", max_tokens=50,
                                      messages=[{"role": "user", "content": "hello"}]) as stream:
        final = await stream.get_final_message()
    assert final.content[0].text and final.stop_reason in ("end_turn", "max_tokens")
    await claude.close()
    response = await _client(system).responses.create(model="claude-bedrock", input="hello", max_output_tokens=50)
    assert response.output_text and response.usage.input_tokens > 0


async def test_embeddings_through_titan_and_cohere(cloud) -> None:
    system, *_ = cloud
    client = _client(system)
    titan = await client.embeddings.create(model="titan-embed", input="hello world", dimensions=256)
    assert len(titan.data) == 1 and len(titan.data[0].embedding) == 256 and titan.usage.prompt_tokens > 0
    cohere = await client.embeddings.create(model="cohere-embed", input=["a", "b", "c"])
    assert [item.index for item in cohere.data] == [0, 1, 2] and cohere.data[0].embedding
    encoded = await client.embeddings.create(model="cohere-embed", input=["a"], encoding_format="base64")
    assert encoded.data[0].embedding  # the SDK decodes OpenAI's base64 float32 encoding
    with pytest.raises(openai.BadRequestError) as batch:
        await client.embeddings.create(model="titan-embed", input=["a", "b"])
    assert "one input per request" in str(batch.value)


async def test_bedrock_errors_fail_over_to_the_direct_provider(cloud) -> None:
    system, bedrock, _ = cloud
    index = len(system.sims) - 1
    client = _client(system)
    for status in (429, 503, 408):
        await system.set_sim(index, error_rate=1.0, error_status=status)
        try:
            raw = await client.chat.completions.with_raw_response.create(
                model="cloud", messages=[{"role": "user", "content": "hi"}])
        finally:
            await system.set_sim(index, error_rate=0.0)
        assert raw.headers["x-megarouter-endpoint"] == "small-sim", status  # the direct provider's
    # A model that does not fit is the caller's error when no larger model can take it.
    with pytest.raises(openai.BadRequestError) as too_long:
        await client.chat.completions.create(model="claude-bedrock", messages=[{"role": "user",
                                                                               "content": "word " * 250_000}])
    assert "too long" in str(too_long.value).lower() or "context" in str(too_long.value).lower()


async def test_a_stream_that_fails_mid_way_reports_the_error(cloud) -> None:
    system, *_ = cloud
    index = len(system.sims) - 1
    await system.set_sim(index, stream_error_after_chunks=2, stream_error_status=429)
    try:
        stream = await _client(system).chat.completions.create(
            model="claude-bedrock", stream=True, messages=[{"role": "user", "content": "Tell me a long story"}])
        with pytest.raises(openai.APIError):
            async for _chunk in stream:
                pass
    finally:
        await system.set_sim(index, stream_error_after_chunks=-1)


async def test_refused_credentials_fail_over_once_and_say_where_they_came_from(cloud) -> None:
    system, *_ = cloud
    index = len(system.sims) - 1
    await system.set_sim(index, aws_access_key_id=AKID, aws_secret_access_key="aDifferentSecret0000000000000000")
    try:
        before = (await _bedrock_stats(system)).get("auth_failures", 0)
        raw = await _client(system).chat.completions.with_raw_response.create(
            model="cloud-auth", messages=[{"role": "user", "content": "hi"}])
        assert raw.headers["x-megarouter-endpoint"] == "small-sim"
        assert (await _bedrock_stats(system)).get("auth_failures", 0) - before == 1  # no retry storm
        with pytest.raises(openai.APIStatusError) as refused:
            await _client(system).chat.completions.create(model="claude-auth",
                                                          messages=[{"role": "user", "content": "hi"}])
        assert refused.value.status_code == 502 and "AWS credentials from env" in str(refused.value)
    finally:
        await system.set_sim(index, aws_access_key_id=AKID, aws_secret_access_key=SECRET)


async def test_temporary_credentials_are_refreshed_without_failing_requests(cloud) -> None:
    system, _, creds = cloud
    index = len(system.sims) - 1
    client = _client(system)
    for n in range(3):  # the session rotates: each request must find the current credentials
        key, secret, token = f"ASIAROTATED{n:09d}", f"rotatedSecret{n}{'x' * 24}", f"sessionToken{n}"
        await system.set_sim(index, aws_access_key_id=key, aws_secret_access_key=secret, aws_session_token=token)
        _set_creds(creds, key, secret, token)
        failures = (await _bedrock_stats(system)).get("auth_failures", 0)
        raw = await client.chat.completions.with_raw_response.create(
            model="claude-profile", messages=[{"role": "user", "content": "hi"}])
        assert raw.headers["x-megarouter-endpoint"] == "claude-on-profile"
        assert (await _bedrock_stats(system)).get("auth_failures", 0) == failures
    await system.set_sim(index, aws_access_key_id=AKID, aws_secret_access_key=SECRET, aws_session_token="")


async def test_missing_credentials_make_the_endpoint_unusable_not_the_proxy(cloud) -> None:
    system, *_ = cloud
    raw = await _client(system).chat.completions.with_raw_response.create(
        model="cloud-nocreds", messages=[{"role": "user", "content": "hi"}])
    assert raw.headers["x-megarouter-endpoint"] == "small-sim"
    log = system.proxies[0].log_path

    async def logged() -> bool:
        return "no usable AWS credentials" in log.read_text()
    await eventually(logged, what="the missing-credential log line")
    text = log.read_text()
    assert "provider bedrock-nocreds" in text and SECRET not in text  # the reason, never a secret
