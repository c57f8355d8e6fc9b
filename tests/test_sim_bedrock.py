"""Simulator, Bedrock wire (``--wire bedrock``): Converse, ConverseStream, embeddings, faults and SigV4.

One real sim process per module. Requests are signed the way AWS clients sign
them (botocore's ``SigV4Auth.add_auth`` on an ``AWSRequest``) and sent with
aiohttp; a second set of checks drives the same process with botocore's own
``bedrock-runtime`` client, whose response and event-stream parsers are the
strictest judge of the wire shapes. Event streams are decoded with botocore's
``EventStreamBuffer`` fed in random-sized chunks, which checks the framing and
both CRCs of every message.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime
import hashlib
import json
import math
import random
import re
import struct
import zlib
from collections.abc import AsyncIterator
from typing import Any
from unittest import mock
from urllib.parse import quote

import aiohttp
import botocore.session
import pytest
import yarl
from aiohttp.test_utils import TestClient, TestServer
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.eventstream import ChecksumMismatch, EventStreamBuffer
from botocore.exceptions import ClientError, EventStreamError
from multidict import CIMultiDict

from megarouter.sim import SimSettings, build_app, eventstream, sigv4
from megarouter.sim.settings import SettingError, add_arguments, settings_from_args
from tests.harness import Service, start_service

KEY_ID = "AKIASIMEXAMPLE0001"
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
REGION = "us-west-2"
API_KEY = "ABSKc2ltLWJlZHJvY2stYXBpLWtleQ=="
CREDS = Credentials(KEY_ID, SECRET)

CLAUDE = "anthropic.claude-3-5-sonnet-20241022-v2:0"
TITAN = "amazon.titan-embed-text-v2:0"
TITAN_V1 = "amazon.titan-embed-text-v1"
COHERE = "cohere.embed-english-v3"
MODELS = [CLAUDE, TITAN, TITAN_V1, COHERE, "cohere.embed-multilingual-v3"]

SERVICE_NS = "http://internal.amazon.com/coral/com.amazon.bedrock/"
AUTH_NS = "http://internal.amazon.com/coral/com.amazon.coral.service/"
HELLO = [{"role": "user", "content": [{"text": "Hello there"}]}]
WEATHER = {"toolSpec": {
    "name": "get_weather", "description": "Weather for a place",
    "inputSchema": {"json": {"type": "object", "properties": {
        "city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 14}}, "required": ["city", "unit"]}}}}
# A 1x1 PNG: the sim checks image bytes against the declared format, as Claude does.
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJ"
                       "RU5ErkJggg==")
DEFAULTS = {"error_rate": 0, "error_status": 500, "rate_limit_rate": 0, "retry_after_s": 1, "outage": "none",
            "fail_on_text": "", "latency_ms": 0,
            "stall_after_chunks": -1, "reply_tokens": 16, "context_window": 0, "stream_error_after_chunks": -1,
            "stream_error_status": 424, "aws_access_key_id": KEY_ID, "aws_secret_access_key": SECRET,
            "aws_session_token": "", "aws_session_token_expired": False, "aws_region": REGION}


# ----------------------------------------------------------------- the process

@pytest.fixture(scope="module")
async def sim(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Service]:
    service = await start_service("sim-bedrock", [
        "sim", "--port", "0", "--wire", "bedrock", "--name", "sim-bedrock", "--models", ",".join(MODELS),
        "--api-key", API_KEY, "--aws-access-key-id", KEY_ID, "--aws-secret-access-key", SECRET,
        "--aws-region", REGION,
    ], tmp_path_factory.mktemp("sim-bedrock") / "logs")
    try:
        yield service
    finally:
        assert await service.stop() == 0
        log = service.log_text()
        # Zero retention: nothing about requests or replies reaches the log.
        assert "Traceback" not in log and "Hello there" not in log


@pytest.fixture
async def http(sim: Service) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        await session.post(base(sim) + "/_sim/reset")
        yield session
        async with session.put(base(sim) + "/_sim/config", json=DEFAULTS) as resp:
            assert resp.status == 200


def base(sim: Service) -> str:
    return f"http://127.0.0.1:{sim.port}"


def model_url(sim: Service, model: str, operation: str) -> str:
    # What botocore's rest-json serializer puts in the path: the id percent-encoded, ":" as %3A.
    return f"{base(sim)}/model/{quote(model, safe='-_.~')}/{operation}"


def sign(url: str, body: bytes, *, creds: Credentials = CREDS, region: str = REGION, service: str = "bedrock",
         method: str = "POST", headers: dict[str, str] | None = None) -> dict[str, str]:
    """The headers an AWS SDK sends: botocore's SigV4 signer over exactly this URL and body."""
    request = AWSRequest(method=method, url=url, data=body,
                         headers={"Content-Type": "application/json", **(headers or {})})
    SigV4Auth(creds, service, region).add_auth(request)
    return dict(request.headers.items())


async def send(http: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str],
               method: str = "POST") -> tuple[int, dict[str, str], bytes]:
    # encoded=True: send the path exactly as signed. yarl would otherwise
    # decode %3A to ":" and the signature (over %253A) would not match.
    async with http.request(method, yarl.URL(url, encoded=True), data=body, headers=headers) as resp:
        return resp.status, dict(resp.headers), await resp.read()


async def call(http: aiohttp.ClientSession, sim: Service, model: str, operation: str, body: Any,
               **sign_args: Any) -> tuple[int, dict[str, str], Any]:
    url = model_url(sim, model, operation)
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    status, headers, data = await send(http, url, raw, sign(url, raw, **sign_args))
    content_type = headers.get("Content-Type", "")
    return status, headers, json.loads(data) if content_type.startswith("application/json") else data


async def converse(http: aiohttp.ClientSession, sim: Service, *, model: str = CLAUDE, creds: Credentials = CREDS,
                   region: str = REGION, **body: Any) -> tuple[int, dict[str, str], Any]:
    body.setdefault("messages", HELLO)
    return await call(http, sim, model, "converse", body, creds=creds, region=region)


async def configure(http: aiohttp.ClientSession, sim: Service, **changes: Any) -> dict:
    async with http.put(base(sim) + "/_sim/config", json=changes) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def stats(http: aiohttp.ClientSession, sim: Service) -> dict:
    async with http.get(base(sim) + "/_sim/stats") as resp:
        return await resp.json()


def assert_error(status: int, headers: dict[str, str], body: Any, code: int, name: str,
                 namespace: str = SERVICE_NS) -> str:
    assert status == code, (status, body)
    assert headers["x-amzn-ErrorType"] == f"{name}:{namespace}"
    assert headers["x-amzn-RequestId"]
    assert set(body) == {"message"} and isinstance(body["message"], str) and body["message"]
    return body["message"]


def decode_stream(raw: bytes, seed: int = 0) -> list[tuple[dict[str, Any], bytes]]:
    """(headers, payload) of each message, parsed by botocore from random-sized chunks of ``raw``."""
    rng = random.Random(seed)
    buffer = EventStreamBuffer()
    messages: list[tuple[dict[str, Any], bytes]] = []
    at = 0
    while at < len(raw):
        step = rng.randint(1, 64)
        buffer.add_data(raw[at:at + step])
        at += step
        messages.extend((message.headers, message.payload) for message in buffer)
    assert list(buffer) == []
    return messages


def stream_events(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    """(event type, payload) of a ConverseStream, checking every message is a JSON event."""
    events = []
    for headers, payload in decode_stream(raw):
        assert headers[":message-type"] == "event" and headers[":content-type"] == "application/json"
        data = json.loads(payload)
        assert isinstance(data.pop("p"), str)  # the padding field, which clients must ignore
        events.append((headers[":event-type"], data))
    return events


# ------------------------------------------------------------ event-stream framing

def test_eventstream_frames_decode_with_botocore():
    rng = random.Random(7)
    sent: list[tuple[list[tuple[str, str]], bytes]] = []
    for i in range(40):
        headers = [(":event-type", f"event{i}"), (":content-type", "application/json"), ("x-note", "é" * (i % 5))]
        payload = bytes(rng.randrange(256) for _ in range(rng.choice([0, 1, 17, 300, 5000])))
        sent.append((headers, payload))
    raw = b"".join(eventstream.encode_message(h, p) for h, p in sent)
    for seed in range(5):
        got = decode_stream(raw, seed)
        assert [(list(h.items()), p) for h, p in got] == sent

    one = eventstream.encode_message([("a", "b")], b"{}")
    total, headers_len = struct.unpack(">II", one[:8])
    assert total == len(one) and headers_len == 1 + 1 + 1 + 2 + 1
    assert struct.unpack(">I", one[8:12])[0] == zlib.crc32(one[:8])
    assert struct.unpack(">I", one[-4:])[0] == zlib.crc32(one[:-4])


def test_eventstream_json_helpers():
    ((headers, payload),) = decode_stream(eventstream.event("messageStart", {"role": "assistant"}))
    assert headers == {":event-type": "messageStart", ":content-type": "application/json", ":message-type": "event"}
    assert json.loads(payload) == {"role": "assistant"}
    ((headers, payload),) = decode_stream(eventstream.exception("throttlingException", "slow down"))
    assert headers == {":exception-type": "throttlingException", ":content-type": "application/json",
                       ":message-type": "exception"}
    assert json.loads(payload) == {"message": "slow down"}


def test_eventstream_any_flipped_byte_fails_botocores_checksums():
    message = eventstream.event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "hi"}})
    for at in range(len(message)):
        corrupt = bytearray(message)
        corrupt[at] ^= 0x01
        buffer = EventStreamBuffer()
        buffer.add_data(bytes(corrupt))
        with pytest.raises(ChecksumMismatch):
            list(buffer)


def test_eventstream_limits():
    with pytest.raises(ValueError):
        eventstream.encode_message([("x", "v" * 40000)], b"")
    with pytest.raises(ValueError):
        eventstream.encode_message([("", "v")], b"")
    with pytest.raises(ValueError):
        eventstream.encode_message([], b"x" * (eventstream.MAX_PAYLOAD_BYTES + 1))


# ------------------------------------------------------------ the SigV4 verifier

def verify_signed(url: str, body: bytes, headers: dict[str, str], accepted: sigv4.Accepted | None = None,
                  sent_path: str | None = None, sent_body: bytes | None = None) -> sigv4.Refusal | None:
    """The verifier's verdict on a request signed by botocore, as a server would receive it."""
    parts = yarl.URL(url, encoded=True)
    received = CIMultiDict(headers)
    received.setdefault("Host", f"{parts.host}:{parts.port}")
    return sigv4.verify("POST", sent_path or parts.raw_path_qs, received, body if sent_body is None else sent_body,
                        accepted or sigv4.Accepted(KEY_ID, SECRET, region=REGION))


@pytest.mark.parametrize("path", [
    "/model/anthropic.claude-3-5-sonnet-20241022-v2%3A0/converse",
    "/model/anthropic.claude-3-5-sonnet-20241022-v2:0/converse",
    "/model/arn%3Aaws%3Abedrock%3Aus-west-2%3A123456789012%3Ainference-profile%2Fus.anthropic.claude-v2%3A1/invoke",
    "/model/a.b/converse?x=1&a=%20b",
    "/model/sp%20ace/converse-stream",
])
def test_verifier_agrees_with_botocore_add_auth(path: str):
    url = "http://127.0.0.1:8080" + path
    body = json.dumps({"messages": HELLO, "ü": "ü"}).encode()
    extra = {"X-Amz-Target": "x", "X-Custom": "  spaced   value  "}
    headers = sign(url, body, headers=extra)
    assert verify_signed(url, body, headers) is None
    # Unsigned headers the HTTP library adds do not matter...
    assert verify_signed(url, body, {**headers, "User-Agent": "aiohttp", "Accept-Encoding": "gzip"}) is None
    # ...but any change to what was signed does.
    for name in ("Content-Type", "X-Custom", "X-Amz-Target"):
        refusal = verify_signed(url, body, {**headers, name: "changed"})
        assert refusal is not None and refusal.error_type == sigv4.INVALID_SIGNATURE
    assert verify_signed(url, body, headers, sent_body=body + b" ").error_type == sigv4.INVALID_SIGNATURE


def test_verifier_double_encodes_the_path_like_aws():
    url = "http://127.0.0.1:8080/model/anthropic.claude-v2%3A1/converse"
    headers = sign(url, b"{}")
    # The canonical URI is the received path encoded again: %3A -> %253A.
    wrong = verify_signed(url, b"{}", {**headers, "Authorization": headers["Authorization"][:-4] + "0000"})
    assert "\n/model/anthropic.claude-v2%253A1/converse\n" in wrong.message
    # Signing one spelling and sending the other fails, exactly as against AWS.
    refusal = verify_signed(url, b"{}", headers, sent_path="/model/anthropic.claude-v2:1/converse")
    assert refusal is not None and refusal.error_type == sigv4.INVALID_SIGNATURE


def test_verifier_temporary_credentials():
    url = "http://127.0.0.1:8080/model/m/converse"
    temporary = sigv4.Accepted(KEY_ID, SECRET, session_token="FwoGZXIvYXdzEXAMPLE", region=REGION)
    good = sign(url, b"{}", creds=Credentials(KEY_ID, SECRET, "FwoGZXIvYXdzEXAMPLE"))
    assert good["X-Amz-Security-Token"] == "FwoGZXIvYXdzEXAMPLE"
    assert verify_signed(url, b"{}", good, temporary) is None
    without = sign(url, b"{}")
    assert verify_signed(url, b"{}", without, temporary).error_type == sigv4.UNRECOGNIZED_CLIENT
    expired = sigv4.Accepted(KEY_ID, SECRET, "FwoGZXIvYXdzEXAMPLE", session_token_expired=True, region=REGION)
    assert verify_signed(url, b"{}", good, expired).error_type == sigv4.EXPIRED_TOKEN
    # A token sent with a long-term key is as invalid as a wrong one.
    assert verify_signed(url, b"{}", good).error_type == sigv4.UNRECOGNIZED_CLIENT


def test_verifier_refusals():
    url = "http://127.0.0.1:8080/model/m/converse"
    headers = sign(url, b"{}")
    cases = {
        "no header": ({k: v for k, v in headers.items() if k != "Authorization"}, sigv4.MISSING_TOKEN),
        "other scheme": ({**headers, "Authorization": "Basic Zm9vOmJhcg=="}, sigv4.INCOMPLETE),
        "no signature": ({**headers, "Authorization": headers["Authorization"].split(", Signature")[0]},
                         sigv4.INCOMPLETE),
        "no date": ({k: v for k, v in headers.items() if k != "X-Amz-Date"}, sigv4.INCOMPLETE),
        "short scope": ({**headers, "Authorization": re.sub(r"/aws4_request", "", headers["Authorization"])},
                        sigv4.INCOMPLETE),
        "bad terminator": ({**headers, "Authorization": headers["Authorization"].replace("aws4_request", "aws5")},
                           sigv4.INVALID_SIGNATURE),
        "host unsigned": ({**headers, "Authorization": headers["Authorization"].replace(";host", "")},
                          sigv4.INVALID_SIGNATURE),
        "bad payload hash": ({**headers, "X-Amz-Content-SHA256": "0" * 64}, sigv4.INVALID_SIGNATURE),
    }
    for what, (sent, expected) in cases.items():
        refusal = verify_signed(url, b"{}", sent)
        assert refusal is not None and refusal.error_type == expected, what
    declared = sign(url, b"{}", headers={"X-Amz-Content-SHA256": hashlib.sha256(b"{}").hexdigest()})
    assert verify_signed(url, b"{}", declared) is None


# ------------------------------------------------------------------- converse

async def test_converse_text_reply_and_usage(http, sim):
    status, headers, body = await converse(http, sim)
    assert status == 200 and headers["Content-Type"].startswith("application/json") and headers["x-amzn-RequestId"]
    assert set(body) == {"output", "stopReason", "usage", "metrics"}
    message = body["output"]["message"]
    assert message["role"] == "assistant"
    ((block,),) = [message["content"]]
    assert len(block["text"].split()) == 16 and body["stopReason"] == "end_turn"
    usage = body["usage"]
    assert set(usage) == {"inputTokens", "outputTokens", "totalTokens"}  # cache fields only with cache points
    assert usage["outputTokens"] == 16 and usage["totalTokens"] == usage["inputTokens"] + 16
    assert isinstance(body["metrics"]["latencyMs"], int)

    # A system prompt is one more turn (4 tokens) plus its text (11 + 9 characters: 5 tokens instead of 3).
    _, _, with_system = await converse(http, sim, system=[{"text": "Be brief."}])
    assert with_system["usage"]["inputTokens"] == usage["inputTokens"] + 4 + 2
    _, _, limited = await converse(http, sim, inferenceConfig={"maxTokens": 5, "temperature": 0.2, "topP": 0.9})
    assert limited["stopReason"] == "max_tokens" and limited["usage"]["outputTokens"] == 5
    _, _, stopped = await converse(http, sim, inferenceConfig={"stopSequences": ["delta"]},
                                   additionalModelResponseFieldPaths=["/stop_sequence"],
                                   additionalModelRequestFields={"top_k": 5})
    assert stopped["stopReason"] == "stop_sequence"
    assert stopped["output"]["message"]["content"][0]["text"] == "alpha bravo charlie "
    assert stopped["additionalModelResponseFields"] == {"stop_sequence": "delta"}

    await configure(http, sim, reply_tokens=0)
    _, _, empty = await converse(http, sim)
    assert empty["output"]["message"]["content"] == [] and empty["usage"]["outputTokens"] == 0


async def test_converse_tool_use_round_trip(http, sim):
    tools = {"tools": [WEATHER], "toolChoice": {"tool": {"name": "get_weather"}}}
    status, _, first = await converse(http, sim, toolConfig=tools)
    assert status == 200 and first["stopReason"] == "tool_use"
    ((block,),) = [first["output"]["message"]["content"]]
    use = block["toolUse"]
    assert re.fullmatch(r"tooluse_[A-Za-z0-9_-]{22}", use["toolUseId"]) and use["name"] == "get_weather"
    assert isinstance(use["input"]["city"], str) and use["input"]["unit"] in ("celsius", "fahrenheit")

    result = {"toolResult": {"toolUseId": use["toolUseId"], "status": "success",
                             "content": [{"json": {"temperature": 21}}, {"text": "sunny"}]}}
    conversation = [*HELLO, first["output"]["message"], {"role": "user", "content": [result]}]
    status, _, second = await converse(http, sim, messages=conversation, toolConfig={"tools": [WEATHER]})
    assert status == 200 and second["stopReason"] == "end_turn"
    assert second["output"]["message"]["content"][0]["text"].startswith("alpha")
    assert second["usage"]["inputTokens"] > first["usage"]["inputTokens"]

    # The pairing rules Bedrock enforces on tool use.
    missing = [*HELLO, first["output"]["message"], {"role": "user", "content": [{"text": "well?"}]}]
    status, headers, body = await converse(http, sim, messages=missing, toolConfig={"tools": [WEATHER]})
    message = assert_error(status, headers, body, 400, "ValidationException")
    assert message == f"Expected toolResult blocks at messages.2.content for the following Ids: {use['toolUseId']}"
    stray = [{"role": "user", "content": [{"toolResult": {**result["toolResult"], "toolUseId": "tooluse_nope"}}]}]
    status, headers, body = await converse(http, sim, messages=stray, toolConfig={"tools": [WEATHER]})
    assert "unexpected toolUseId" in assert_error(status, headers, body, 400, "ValidationException")
    status, headers, body = await converse(http, sim, messages=conversation)
    message = assert_error(status, headers, body, 400, "ValidationException")
    assert message == "The toolConfig field must be defined when using toolUse and toolResult content blocks."


async def test_converse_image(http, sim):
    image = {"image": {"format": "png", "source": {"bytes": base64.b64encode(PNG).decode()}}}
    _, _, plain = await converse(http, sim)
    status, _, seen = await converse(http, sim, messages=[{"role": "user", "content": [{"text": "Hello there"},
                                                                                      image]}])
    assert status == 200 and seen["usage"]["inputTokens"] == plain["usage"]["inputTokens"] + 85
    wrong = {"image": {"format": "jpeg", "source": image["image"]["source"]}}
    status, headers, body = await converse(http, sim, messages=[{"role": "user", "content": [wrong]}])
    assert "does not match the provided media type image/jpeg" in assert_error(status, headers, body, 400,
                                                                                 "ValidationException")
    bogus = {"image": {"format": "bmp", "source": image["image"]["source"]}}
    status, headers, body = await converse(http, sim, messages=[{"role": "user", "content": [bogus]}])
    assert "enum value set: [png, jpeg, gif, webp]" in assert_error(status, headers, body, 400, "ValidationException")


@pytest.mark.parametrize(("body", "expected"), [
    ({"messages": []}, "A conversation must start with a user message."),
    ({"messages": None}, "A conversation must start with a user message."),
    ({"messages": [{"role": "assistant", "content": [{"text": "hi"}]}]}, "must start with a user message"),
    ({"messages": HELLO * 2}, "A conversation must alternate between user and assistant roles."),
    ({"messages": [{"role": "system", "content": [{"text": "x"}]}]}, "Member must satisfy enum value set"),
    ({"messages": [{"role": "user", "content": []}]}, "The content field in the Message object at messages.0 is empty"),
    ({"messages": [{"role": "user", "content": [{"text": "  "}]}]}, "at messages.0.content.0 is blank"),
    ({"messages": [{"role": "user", "content": [{"audioz": {}}]}]}, "unknown member 'audioz'"),
    ({"messages": [{"role": "user", "content": [{"text": "a", "image": {}}]}]}, "exactly one of"),
    ({"inferenceConfig": {"maxTokens": 0}},
     "Value '0' at 'inferenceConfig.maxTokens' failed to satisfy constraint: Member must have value greater than or "
     "equal to 1"),
    ({"inferenceConfig": {"temperature": 1.5}}, "must have value less than or equal to 1"),
    ({"inferenceConfig": {"stopSequences": [""]}}, "stopSequences"),
    ({"toolConfig": {"tools": []}}, "toolConfig.tools"),
    ({"toolConfig": {"tools": [WEATHER, WEATHER]}}, "Tool names must be unique."),
    ({"toolConfig": {"tools": [WEATHER], "toolChoice": {"tool": {"name": "other"}}}}, "'other' is not the name"),
    ({"system": [{"text": ""}]}, "blank"),
    ({"additionalModelRequestFields": [1]}, "additionalModelRequestFields"),
])
async def test_converse_validation(http, sim, body, expected):
    body.setdefault("messages", HELLO)
    status, headers, data = await call(http, sim, CLAUDE, "converse", body)
    assert expected in assert_error(status, headers, data, 400, "ValidationException")


async def test_converse_not_json(http, sim):
    status, headers, data = await call(http, sim, CLAUDE, "converse", b"{nope")
    assert assert_error(status, headers, data, 400, "ValidationException") == "The request body must be a JSON object."


async def test_context_window(http, sim):
    _, _, free = await converse(http, sim)
    prompt = free["usage"]["inputTokens"]
    await configure(http, sim, context_window=prompt + 5)
    assert (await converse(http, sim, inferenceConfig={"maxTokens": 5}))[0] == 200
    status, headers, body = await converse(http, sim, inferenceConfig={"maxTokens": 6})
    message = assert_error(status, headers, body, 400, "ValidationException")
    assert message.startswith("The model returned the following errors: input length and `max_tokens` exceed "
                              f"context limit: {prompt} + 6 > {prompt + 5}")
    await configure(http, sim, context_window=prompt - 1)
    status, headers, body = await converse(http, sim)
    assert assert_error(status, headers, body, 400, "ValidationException") == "Input is too long for requested model."
    status, headers, body = await call(http, sim, CLAUDE, "converse-stream", {"messages": HELLO})
    assert assert_error(status, headers, body, 400, "ValidationException") == "Input is too long for requested model."


# ------------------------------------------------------------------ prompt cache

async def test_cache_points_write_then_read(http, sim):
    system = [{"text": "You are a meticulous assistant. " * 40}, {"cachePoint": {"type": "default"}}]
    _, _, uncached = await converse(http, sim, system=system[:1])
    total = uncached["usage"]["inputTokens"]

    _, _, first = await converse(http, sim, system=system)
    usage = first["usage"]
    assert usage["cacheReadInputTokens"] == 0 and usage["cacheWriteInputTokens"] > 300
    assert usage["inputTokens"] + usage["cacheWriteInputTokens"] == total
    assert usage["totalTokens"] == total + usage["outputTokens"]
    written = usage["cacheWriteInputTokens"]

    # Same prefix, different question: read from the cache, nothing new written.
    _, _, second = await converse(http, sim, system=system, messages=[{"role": "user", "content": [{"text": "Why?"}]}])
    assert second["usage"]["cacheReadInputTokens"] == written and second["usage"]["cacheWriteInputTokens"] == 0

    # A second point after the first: the longest cached prefix is read, the rest written.
    messages = [{"role": "user", "content": [{"text": "Long question " * 30}, {"cachePoint": {"type": "default"}}]}]
    _, _, third = await converse(http, sim, system=system, messages=messages)
    assert third["usage"]["cacheReadInputTokens"] == written and third["usage"]["cacheWriteInputTokens"] > 50

    # Tools cache too; streams report the same usage in their metadata event.
    tools = {"tools": [WEATHER, {"cachePoint": {"type": "default"}}]}
    status, _, raw = await call(http, sim, CLAUDE, "converse-stream", {"messages": HELLO, "toolConfig": tools})
    assert status == 200
    (metadata,) = [data for name, data in stream_events(raw) if name == "metadata"]
    assert metadata["usage"]["cacheWriteInputTokens"] > 0 and metadata["usage"]["cacheReadInputTokens"] == 0

    # /_sim/reset forgets every prefix.
    await http.post(base(sim) + "/_sim/reset")
    _, _, cold = await converse(http, sim, system=system)
    assert cold["usage"]["cacheWriteInputTokens"] == written and cold["usage"]["cacheReadInputTokens"] == 0
    status, headers, body = await converse(http, sim, system=[{"cachePoint": {"type": "other"}}])
    assert "[default]" in assert_error(status, headers, body, 400, "ValidationException")


# ------------------------------------------------------------------- streaming

async def test_converse_stream_text(http, sim):
    _, _, whole = await converse(http, sim)
    url = model_url(sim, CLAUDE, "converse-stream")
    raw_body = json.dumps({"messages": HELLO}).encode()
    status, headers, raw = await send(http, url, raw_body, sign(url, raw_body))
    assert status == 200 and headers["Content-Type"] == "application/vnd.amazon.eventstream"
    events = stream_events(raw)
    names = [name for name, _ in events]
    assert names == ["messageStart"] + ["contentBlockDelta"] * 16 + ["contentBlockStop", "messageStop", "metadata"]
    assert events[0][1] == {"role": "assistant"}
    deltas = [data for name, data in events if name == "contentBlockDelta"]
    assert all(d["contentBlockIndex"] == 0 and set(d["delta"]) == {"text"} for d in deltas)
    assert "".join(d["delta"]["text"] for d in deltas) == whole["output"]["message"]["content"][0]["text"]
    assert events[-3][1] == {"contentBlockIndex": 0}
    assert events[-2][1] == {"stopReason": "end_turn"}
    metadata = events[-1][1]
    assert metadata["usage"] == whole["usage"] and isinstance(metadata["metrics"]["latencyMs"], int)
    counters = await stats(http, sim)
    assert counters["stream_requests"] == 1 and counters["chat_requests"] == 2


async def test_converse_stream_tool_use(http, sim):
    body = {"messages": HELLO, "toolConfig": {"tools": [WEATHER], "toolChoice": {"any": {}}}}
    status, _, raw = await call(http, sim, CLAUDE, "converse-stream", body)
    assert status == 200
    events = stream_events(raw)
    assert [n for n, _ in events[:2]] == ["messageStart", "contentBlockStart"]
    start = events[1][1]
    assert start["contentBlockIndex"] == 0 and start["start"]["toolUse"]["name"] == "get_weather"
    assert start["start"]["toolUse"]["toolUseId"].startswith("tooluse_")
    partial = "".join(d["delta"]["toolUse"]["input"] for n, d in events if n == "contentBlockDelta")
    arguments = json.loads(partial)
    assert arguments["unit"] in ("celsius", "fahrenheit")
    assert [n for n, _ in events[-3:]] == ["contentBlockStop", "messageStop", "metadata"]
    assert events[-2][1]["stopReason"] == "tool_use"
    assert events[-1][1]["usage"]["outputTokens"] == len([n for n, _ in events if n == "contentBlockDelta"])


@pytest.mark.parametrize(("status", "name"), [
    (424, "modelStreamErrorException"), (429, "throttlingException"), (500, "internalServerException"),
    (503, "serviceUnavailableException"), (400, "validationException")])
async def test_in_stream_exceptions(http, sim, status, name):
    await configure(http, sim, stream_error_after_chunks=3, stream_error_status=status)
    code, _, raw = await call(http, sim, CLAUDE, "converse-stream", {"messages": HELLO})
    assert code == 200  # the failure comes after the stream started
    messages = decode_stream(raw)
    assert [h[":event-type"] for h, _ in messages[:-1]] == ["messageStart"] + ["contentBlockDelta"] * 3
    headers, payload = messages[-1]
    assert headers == {":exception-type": name, ":content-type": "application/json", ":message-type": "exception"}
    assert set(json.loads(payload)) == {"message"}


async def test_stalled_stream(http, sim):
    await configure(http, sim, stall_after_chunks=2)
    url = model_url(sim, CLAUDE, "converse-stream")
    raw_body = json.dumps({"messages": HELLO}).encode()
    received = b""
    async with http.post(yarl.URL(url, encoded=True), data=raw_body, headers=sign(url, raw_body)) as resp:
        assert resp.status == 200
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.5):
                async for chunk in resp.content.iter_any():
                    received += chunk
    assert [h[":event-type"] for h, _ in decode_stream(received)] == ["messageStart", "contentBlockDelta",
                                                                      "contentBlockDelta"]


# ------------------------------------------------------------------- faults

@pytest.mark.parametrize(("status", "name"), [
    (400, "ValidationException"), (403, "AccessDeniedException"), (404, "ResourceNotFoundException"),
    (408, "ModelTimeoutException"), (424, "ModelErrorException"), (500, "InternalServerException"),
    (503, "ServiceUnavailableException"), (502, "InternalServerException")])
async def test_scripted_errors(http, sim, status, name):
    await configure(http, sim, error_rate=1, error_status=status)
    for model, operation, body in ((CLAUDE, "converse", {"messages": HELLO}),
                                   (CLAUDE, "converse-stream", {"messages": HELLO}),
                                   (TITAN, "invoke", {"inputText": "hi"})):
        code, headers, data = await call(http, sim, model, operation, body)
        assert_error(code, headers, data, status, name)


async def test_throttling_and_outage(http, sim):
    await configure(http, sim, rate_limit_rate=1, retry_after_s=2.5)
    status, headers, body = await converse(http, sim)
    message = assert_error(status, headers, body, 429, "ThrottlingException")
    assert message == "Too many requests, please wait before trying again." and headers["Retry-After"] == "3"
    await configure(http, sim, rate_limit_rate=0, outage="503")
    status, headers, body = await converse(http, sim)
    assert_error(status, headers, body, 503, "ServiceUnavailableException")
    await configure(http, sim, outage="none", fail_on_text="poison")
    status, headers, body = await converse(http, sim, messages=[{"role": "user", "content": [{"text": "poison"}]}])
    assert_error(status, headers, body, 500, "InternalServerException")


# ------------------------------------------------------------------- models

async def test_model_ids(http, sim):
    for model in (f"us.{CLAUDE}", f"eu.{CLAUDE}", f"apac.{CLAUDE}", f"global.{CLAUDE}",
                  f"arn:aws:bedrock:{REGION}::foundation-model/{CLAUDE}",
                  f"arn:aws:bedrock:{REGION}:123456789012:inference-profile/us.{CLAUDE}"):
        status, _, body = await converse(http, sim, model=model)
        assert status == 200 and body["stopReason"] == "end_turn", model
    # The raw ":" (not %3A) is accepted too, signed as sent.
    url = f"{base(sim)}/model/{CLAUDE}/converse"
    raw = json.dumps({"messages": HELLO}).encode()
    assert (await send(http, url, raw, sign(url, raw)))[0] == 200

    for model in ("anthropic.claude-9-v1:0", f"xx.{CLAUDE}", "us.nothing"):
        status, headers, body = await converse(http, sim, model=model)
        assert assert_error(status, headers, body, 400, "ValidationException") == \
            "The provided model identifier is invalid."
    status, headers, body = await converse(http, sim, model=TITAN)
    assert "doesn't support the model" in assert_error(status, headers, body, 400, "ValidationException")
    status, headers, body = await call(http, sim, CLAUDE, "invoke", {"inputText": "hi"})
    assert "embedding models only" in assert_error(status, headers, body, 400, "ValidationException")

    url = model_url(sim, CLAUDE, "invoke-with-response-stream")
    status, headers, body = await send(http, url, raw, sign(url, raw))
    assert_error(status, headers, json.loads(body), 404, "UnknownOperationException")
    url = model_url(sim, CLAUDE, "converse")
    status, headers, body = await send(http, url, b"", sign(url, b"", method="GET"), method="GET")
    assert_error(status, headers, json.loads(body), 404, "UnknownOperationException")


# ---------------------------------------------------------------- embeddings

async def test_titan_embeddings(http, sim):
    status, headers, body = await call(http, sim, TITAN, "invoke", {"inputText": "Hello there"})
    assert status == 200 and set(body) == {"embedding", "inputTextTokenCount"}
    assert len(body["embedding"]) == 1024 and body["inputTextTokenCount"] == 3
    assert math.isclose(sum(v * v for v in body["embedding"]), 1.0, rel_tol=1e-5)
    assert headers["X-Amzn-Bedrock-Input-Token-Count"] == "3" and "X-Amzn-Bedrock-Invocation-Latency" in headers
    _, _, again = await call(http, sim, TITAN, "invoke", {"inputText": "Hello there"})
    assert again["embedding"] == body["embedding"]

    _, _, small = await call(http, sim, TITAN, "invoke", {"inputText": "Hello there", "dimensions": 256,
                                                          "normalize": False, "embeddingTypes": ["float", "binary"]})
    assert len(small["embedding"]) == 256 and math.isclose(sum(v * v for v in small["embedding"]), 64.0, rel_tol=1e-5)
    assert small["embeddingsByType"]["float"] == small["embedding"]
    assert set(small["embeddingsByType"]["binary"]) <= {0, 1}
    _, _, v1 = await call(http, sim, TITAN_V1, "invoke", {"inputText": "Hello there"})
    assert len(v1["embedding"]) == 1536

    for model, bad, expected in (
            (TITAN, {}, "#: required key [inputText] not found"),
            (TITAN, {"inputText": "x", "extra": 1}, "#: extraneous key [extra] is not permitted"),
            (TITAN, {"inputText": 5}, "expected type: String, found: Integer"),
            (TITAN, {"inputText": "x", "dimensions": 300}, "#/dimensions: 300 is not a valid enum value"),
            (TITAN_V1, {"inputText": "x", "dimensions": 256}, "extraneous key [dimensions]"),
            (TITAN, [1], "expected type: JSONObject")):
        status, headers, data = await call(http, sim, model, "invoke", bad)
        message = assert_error(status, headers, data, 400, "ValidationException")
        assert message.startswith("Malformed input request: ") and expected in message, message
    counters = await stats(http, sim)
    assert counters["embedding_requests"] == 10 and counters["chat_requests"] == 0


async def test_cohere_embeddings(http, sim):
    texts = ["Hello there", "General Kenobi"]
    status, headers, body = await call(http, sim, COHERE, "invoke", {"texts": texts, "input_type": "search_document"})
    assert status == 200 and set(body) == {"id", "embeddings", "texts", "response_type"}
    assert body["response_type"] == "embeddings_floats" and body["texts"] == texts
    assert [len(v) for v in body["embeddings"]] == [1024, 1024]
    assert headers["X-Amzn-Bedrock-Input-Token-Count"] == "7"
    _, _, titan = await call(http, sim, TITAN, "invoke", {"inputText": "Hello there"})
    assert body["embeddings"][0] == titan["embedding"]  # same text, same vector, whatever the model

    _, _, typed = await call(http, sim, "cohere.embed-multilingual-v3", "invoke",
                             {"texts": texts, "input_type": "search_query", "embedding_types": ["float"],
                              "truncate": "END"})
    assert typed["response_type"] == "embeddings_by_type" and typed["embeddings"]["float"] == body["embeddings"]
    _, _, cut = await call(http, sim, COHERE, "invoke", {"texts": ["x" * 3000], "input_type": "clustering",
                                                         "truncate": "END"})
    assert cut["embeddings"][0] == (await call(http, sim, COHERE, "invoke", {
        "texts": ["x" * 2048], "input_type": "clustering"}))[2]["embeddings"][0]

    for bad, expected in (({"texts": texts}, "#: required key [input_type] not found"),
                          ({"texts": [], "input_type": "clustering"}, "minItems: 1"),
                          ({"texts": ["a"] * 97, "input_type": "clustering"}, "maxItems: 96"),
                          ({"texts": texts, "input_type": "chat"}, "#/input_type: chat is not a valid enum value"),
                          ({"texts": ["x" * 3000], "input_type": "clustering"}, "#/texts/0: expected maxLength: 2048")):
        status, headers, data = await call(http, sim, COHERE, "invoke", bad)
        assert expected in assert_error(status, headers, data, 400, "ValidationException")


# --------------------------------------------------------------------- auth

async def test_sigv4_refusals(http, sim):
    url = model_url(sim, CLAUDE, "converse")
    raw = json.dumps({"messages": HELLO}).encode()
    signed = sign(url, raw)
    now = datetime.datetime.now(datetime.UTC)

    def at(moment: datetime.datetime) -> dict[str, str]:
        with mock.patch("botocore.auth.get_current_datetime", return_value=moment):
            return sign(url, raw)

    cases = [
        ("wrong secret", sign(url, raw, creds=Credentials(KEY_ID, "not-the-secret")), raw,
         "InvalidSignatureException", "The request signature we calculated does not match the signature you provided."),
        ("unknown key", sign(url, raw, creds=Credentials("AKIAUNKNOWN000000000", SECRET)), raw,
         "UnrecognizedClientException", "The security token included in the request is invalid."),
        ("stale date", at(now - datetime.timedelta(minutes=6)), raw, "InvalidSignatureException",
         "Signature expired: "),
        ("future date", at(now + datetime.timedelta(minutes=6)), raw, "InvalidSignatureException",
         "Signature not yet current: "),
        ("wrong region", sign(url, raw, region="us-east-1"), raw, "InvalidSignatureException",
         "Credential should be scoped to a valid region, not 'us-east-1'."),
        ("endpoint prefix as service", sign(url, raw, service="bedrock-runtime"), raw, "InvalidSignatureException",
         "Credential should be scoped to correct service: 'bedrock'."),
        ("tampered body", signed, raw.replace(b"Hello", b"Jello"), "InvalidSignatureException",
         "The request signature we calculated"),
        ("no authorization", {"Content-Type": "application/json"}, raw, "MissingAuthenticationTokenException",
         "Missing Authentication Token"),
        ("bad api key", {"Authorization": "Bearer ABSKwrong"}, raw, "AccessDeniedException",
         "Authentication failed: Please make sure your API Key is valid."),
    ]
    for what, headers, body, name, message in cases:
        status, response_headers, data = await send(http, url, body, headers)
        got = assert_error(status, response_headers, json.loads(data), 403, name, AUTH_NS)
        assert got.startswith(message), (what, got)
    # Signed over the encoded path, sent decoded: what a re-quoting HTTP client does.
    async with http.post(url, data=raw, headers=signed) as resp:
        assert resp.status == 403 and resp.headers["x-amzn-ErrorType"].startswith("InvalidSignatureException:")
    counters = await stats(http, sim)
    assert counters["auth_failures"] == len(cases) + 1 and counters["by_status"] == {"403": len(cases) + 1}
    # Refused before the handler: nothing was simulated for them.
    assert (await converse(http, sim))[0] == 200


async def test_bearer_api_key(http, sim):
    url = model_url(sim, CLAUDE, "converse")
    raw = json.dumps({"messages": HELLO}).encode()
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    status, _, data = await send(http, url, raw, headers)
    assert status == 200 and json.loads(data)["stopReason"] == "end_turn"
    url = model_url(sim, TITAN, "invoke")
    raw = json.dumps({"inputText": "hi"}).encode()
    assert (await send(http, url, raw, headers))[0] == 200
    assert "auth_failures" not in await stats(http, sim)


async def test_rotating_credentials_and_session_tokens(http, sim):
    new_id, new_secret, token = "ASIASIMEXAMPLE0002", "bmV3LXNlY3JldC1rZXktZm9yLXRoZS1zaW0", "FwoGZXIvYXdzEXAMPLE+/="
    config = await configure(http, sim, aws_access_key_id=new_id, aws_secret_access_key=new_secret,
                             aws_session_token=token)
    assert config["aws_access_key_id"] == new_id and config["aws_session_token_expired"] is False

    status, headers, body = await converse(http, sim)  # the old key no longer works
    assert_error(status, headers, body, 403, "UnrecognizedClientException", AUTH_NS)
    status, headers, body = await converse(http, sim, creds=Credentials(new_id, new_secret))  # token missing
    assert_error(status, headers, body, 403, "UnrecognizedClientException", AUTH_NS)
    temporary = Credentials(new_id, new_secret, token)
    assert (await converse(http, sim, creds=temporary))[0] == 200

    await configure(http, sim, aws_session_token_expired=True)
    status, headers, body = await converse(http, sim, creds=temporary)
    message = assert_error(status, headers, body, 403, "ExpiredTokenException", AUTH_NS)
    assert message == "The security token included in the request is expired"
    # The same sim, region changed: clients must sign for the new region.
    await configure(http, sim, aws_session_token="", aws_session_token_expired=False, aws_region="eu-central-1")
    assert (await converse(http, sim, creds=Credentials(new_id, new_secret), region="eu-central-1"))[0] == 200
    assert (await stats(http, sim))["auth_failures"] == 3

    for bad in ({"aws_access_key_id": "AKIAONLY", "aws_secret_access_key": ""}, {"aws_region": "Mars 1"},
                {"aws_secret_access_key": "with space"}, {"aws_session_token_expired": "yes"},
                {"stream_error_status": 418}):
        async with http.put(base(sim) + "/_sim/config", json=bad) as resp:
            assert resp.status == 400, bad


def test_cli_flags_and_env(monkeypatch):
    parser = argparse_parser()
    args = parser.parse_args(["--wire", "bedrock", "--aws-access-key-id", KEY_ID, "--aws-secret-access-key", SECRET,
                              "--aws-session-token", "tok", "--aws-session-token-expired", "true"])
    settings = settings_from_args(args)
    assert args.wire == "bedrock" and settings.aws_region == "us-east-1"
    assert settings.aws_session_token == "tok" and settings.aws_session_token_expired is True
    monkeypatch.setenv("MEGAROUTER_SIM_AWS_ACCESS_KEY_ID", "AKIAFROMENV")
    monkeypatch.setenv("MEGAROUTER_SIM_AWS_REGION", "eu-west-3")
    args = argparse_parser().parse_args([])
    assert args.aws_access_key_id == "AKIAFROMENV" and args.aws_region == "eu-west-3"
    with pytest.raises(SettingError):
        settings_from_args(args)  # a key without its secret


def argparse_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser


# ------------------------------------------------------- botocore's own client

def boto_client(sim: Service, **credentials: str) -> Any:
    credentials = {"aws_access_key_id": KEY_ID, "aws_secret_access_key": SECRET, **credentials}
    return botocore.session.get_session().create_client(
        "bedrock-runtime", region_name=REGION, endpoint_url=base(sim),
        config=Config(retries={"total_max_attempts": 1}), **credentials)


async def test_botocore_client(http, sim):
    client = boto_client(sim)

    def converse_and_stream() -> tuple[dict, list[dict]]:
        messages = [{"role": "user", "content": [{"text": "Hello there"},
                                                 {"image": {"format": "png", "source": {"bytes": PNG}}}]}]
        whole = client.converse(modelId=f"us.{CLAUDE}", messages=messages,
                                toolConfig={"tools": [WEATHER], "toolChoice": {"auto": {}}})
        events = list(client.converse_stream(modelId=CLAUDE, messages=messages)["stream"])
        return whole, events

    whole, events = await asyncio.to_thread(converse_and_stream)
    assert whole["stopReason"] == "tool_use"
    assert whole["output"]["message"]["content"][0]["toolUse"]["name"] == "get_weather"
    assert [next(iter(e)) for e in events][:2] == ["messageStart", "contentBlockDelta"]
    assert events[-1]["metadata"]["usage"]["outputTokens"] == 16

    def embed() -> dict:
        response = client.invoke_model(modelId=TITAN, body=json.dumps({"inputText": "hi", "dimensions": 512}),
                                       contentType="application/json", accept="application/json")
        return json.loads(response["body"].read())

    assert len((await asyncio.to_thread(embed))["embedding"]) == 512

    # Errors arrive as botocore's modelled exceptions, named from x-amzn-ErrorType.
    await configure(http, sim, rate_limit_rate=1)
    with pytest.raises(client.exceptions.ThrottlingException):
        await asyncio.to_thread(client.converse, modelId=CLAUDE, messages=HELLO)
    await configure(http, sim, rate_limit_rate=0, error_rate=1, error_status=408)
    with pytest.raises(client.exceptions.ModelTimeoutException):
        await asyncio.to_thread(client.converse, modelId=CLAUDE, messages=HELLO)
    await configure(http, sim, error_rate=0, stream_error_after_chunks=1, stream_error_status=429)

    def broken_stream() -> list[dict]:
        return list(client.converse_stream(modelId=CLAUDE, messages=HELLO)["stream"])

    with pytest.raises(EventStreamError) as raised:
        await asyncio.to_thread(broken_stream)
    assert raised.value.response["Error"]["Code"] == "throttlingException"

    with pytest.raises(ClientError) as refused:
        await asyncio.to_thread(boto_client(sim, aws_secret_access_key="wrong").converse, modelId=CLAUDE,
                                messages=HELLO)
    assert refused.value.response["Error"]["Code"] == "InvalidSignatureException"
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


async def test_open_sim_without_credentials():
    # Like the other wires without --api-key: no auth configured, no auth asked for.
    client = TestClient(TestServer(build_app(SimSettings(), "open", [CLAUDE], None, wire="bedrock")))
    await client.start_server()
    try:
        resp = await client.post(f"/model/{quote(CLAUDE, safe='')}/converse", json={"messages": HELLO})
        assert resp.status == 200 and (await resp.json())["stopReason"] == "end_turn"
        resp = await client.post("/model/other.model-v1:0/converse", json={"messages": HELLO})
        assert resp.status == 400 and resp.headers["x-amzn-ErrorType"] == f"ValidationException:{SERVICE_NS}"
    finally:
        await client.close()
