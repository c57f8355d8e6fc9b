"""Simulator, Vertex AI wire (``--wire vertex``): Gemini, embeddings and Claude under a project; OAuth tokens.

One real sim process per module, driven the way the proxy will drive Vertex: google-auth's
service-account credentials (loaded from a JSON key file whose ``token_uri`` is the sim's
``/token``) sign a JWT and trade it for an access token, and model calls carry that token as
``Authorization: Bearer``. The Claude calls are also made with Anthropic's own
``AsyncAnthropicVertex`` client, whose request building and response/stream parsers are the
strictest judge of the Messages shapes under Vertex's URLs.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import google.auth.crypt
import google.auth.exceptions
import google.auth.jwt
import google.auth.transport.requests
import pytest
from aiohttp.test_utils import TestClient, TestServer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.oauth2 import service_account

from megarouter.sim import build_app
from megarouter.sim.settings import SettingError, SimSettings, add_arguments, settings_from_args
from tests.harness import Service, start_service

PROJECT = "sim-project-123"
LOCATION = "us-central1"
API_KEY = "sim-vertex-static-key"
CLOUD = "https://www.googleapis.com/auth/cloud-platform"
EMAIL = "proxy@sim-project-123.iam.gserviceaccount.com"

GEMINI = "gemini-2.5-flash"
CLAUDE = "claude-sonnet-4@20250514"
EMBED = "text-embedding-005"
GEMINI_EMBED = "gemini-embedding-001"
MODELS = [GEMINI, CLAUDE, EMBED, GEMINI_EMBED]

HELLO = [{"role": "user", "parts": [{"text": "Hello there"}]}]
CLAUDE_HELLO = [{"role": "user", "content": "Hello there"}]
WEATHER = {"name": "get_weather", "description": "Weather for a place",
           "parameters": {"type": "OBJECT", "properties": {"city": {"type": "STRING"},
                                                           "unit": {"type": "STRING", "enum": ["c", "f"]}},
                          "required": ["city", "unit"]}}
CLAUDE_WEATHER = {"name": "get_weather", "description": "Weather for a place",
                  "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                                   "required": ["city"]}}
STATUS_NAMES = {400: "INVALID_ARGUMENT", 403: "PERMISSION_DENIED", 404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED",
                500: "INTERNAL", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}


# ------------------------------------------------------------ keys and the process

def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def write_key_file(path: Path, key: rsa.RSAPrivateKey, *, email: str = EMAIL, token_uri: str,
                   key_id: str = "0123456789abcdef0123456789abcdef01234567") -> Path:
    """A service-account key file in Google's format (what `gcloud iam service-accounts keys create` writes)."""
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    path.write_text(json.dumps({
        "type": "service_account", "project_id": PROJECT, "private_key_id": key_id, "private_key": pem,
        "client_email": email, "client_id": "123456789012345678901",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth", "token_uri": token_uri,
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "universe_domain": "googleapis.com",
    }))
    return path


class Keys:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.key = new_key()
        self.path = root / "sa.json"
        self.forged_path = root / "forged.json"
        self.stranger_path = root / "stranger.json"

    def write(self, token_uri: str) -> None:
        write_key_file(self.path, self.key, token_uri=token_uri)
        # Same account and key id, another key: what an attacker without the private key could sign.
        write_key_file(self.forged_path, new_key(), token_uri=token_uri)
        write_key_file(self.stranger_path, self.key, email="someone@else.iam.gserviceaccount.com",
                       token_uri=token_uri)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    keys = Keys(tmp_path_factory.mktemp("vertex-keys"))
    keys.write("http://127.0.0.1:1/token")  # rewritten once the sim's port is known
    return keys


@pytest.fixture(scope="module")
async def sim(keys: Keys, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Service]:
    service = await start_service("sim-vertex", [
        "sim", "--port", "0", "--wire", "vertex", "--name", "sim-vertex", "--models", ",".join(MODELS),
        "--api-key", API_KEY, "--vertex-project", PROJECT, "--vertex-location", LOCATION,
        "--vertex-service-account-file", str(keys.path),
    ], tmp_path_factory.mktemp("sim-vertex") / "logs")
    # The key file names the sim as its token endpoint, as the proxy's will (the sim re-reads it).
    keys.write(f"http://127.0.0.1:{service.port}/token")
    try:
        yield service
    finally:
        assert await service.stop() == 0
        log = service.log_text()
        # Zero retention: nothing about requests, replies or tokens reaches the log.
        assert "Traceback" not in log and "Hello there" not in log and "ya29." not in log


def base(sim: Service) -> str:
    return f"http://127.0.0.1:{sim.port}"


@pytest.fixture
async def http(sim: Service, keys: Keys) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        await session.post(base(sim) + "/_sim/reset")
        yield session
        defaults = {"error_rate": 0, "error_status": 500, "rate_limit_rate": 0, "retry_after_s": 1,
                    "outage": "none", "fail_on_text": "", "stall_after_chunks": -1, "vertex_project": PROJECT,
                    "vertex_location": LOCATION, "vertex_service_account_file": str(keys.path),
                    "vertex_token_ttl_s": 3600}
        async with session.put(base(sim) + "/_sim/config", json=defaults) as resp:
            assert resp.status == 200, await resp.text()


def credentials(path: Path, scopes: list[str] | None = None) -> service_account.Credentials:
    return service_account.Credentials.from_service_account_file(
        str(path), scopes=[CLOUD] if scopes is None else scopes)


async def refresh(creds: service_account.Credentials) -> None:
    # google-auth is synchronous (its transport is `requests`): keep the event loop free.
    await asyncio.to_thread(creds.refresh, google.auth.transport.requests.Request())


@pytest.fixture
async def creds(keys: Keys, http: aiohttp.ClientSession) -> service_account.Credentials:
    creds = credentials(keys.path)
    await refresh(creds)
    return creds


def bearer(creds_or_token: service_account.Credentials | str) -> dict[str, str]:
    if isinstance(creds_or_token, str):
        return {"Authorization": f"Bearer {creds_or_token}"}
    headers: dict[str, str] = {}
    creds_or_token.apply(headers)   # what google-auth's own transports add
    return headers


def url(sim: Service, model: str, method: str, *, publisher: str | None = None, project: str = PROJECT,
        location: str = LOCATION, version: str = "v1", query: str = "") -> str:
    publisher = publisher or ("anthropic" if model.startswith("claude") else "google")
    return (f"{base(sim)}/{version}/projects/{project}/locations/{location}/publishers/{publisher}/models/"
            f"{model}:{method}{query}")


async def post(http: aiohttp.ClientSession, target: str, body: Any,
               headers: dict[str, str] | None) -> tuple[int, dict[str, str], Any]:
    async with http.post(target, json=body, headers=headers or {}) as resp:
        raw = await resp.read()
        kind = resp.headers.get("Content-Type", "")
        data = json.loads(raw) if kind.startswith("application/json") else raw.decode()
        return resp.status, dict(resp.headers), data


async def generate(http: aiohttp.ClientSession, sim: Service, auth: Any, *, model: str = GEMINI,
                   method: str = "generateContent", query: str = "", **body: Any) -> tuple[int, dict, Any]:
    body.setdefault("contents", HELLO)
    return await post(http, url(sim, model, method, query=query), body, bearer(auth))


async def claude(http: aiohttp.ClientSession, sim: Service, auth: Any, *, method: str = "rawPredict",
                 model: str = CLAUDE, **body: Any) -> tuple[int, dict, Any]:
    body.setdefault("anthropic_version", "vertex-2023-10-16")
    body.setdefault("messages", CLAUDE_HELLO)
    body.setdefault("max_tokens", 64)
    return await post(http, url(sim, model, method), body, bearer(auth))


async def predict(http: aiohttp.ClientSession, sim: Service, auth: Any, *, model: str = EMBED,
                  **body: Any) -> tuple[int, dict, Any]:
    return await post(http, url(sim, model, "predict"), body, bearer(auth))


async def configure(http: aiohttp.ClientSession, sim: Service, **changes: Any) -> dict:
    async with http.put(base(sim) + "/_sim/config", json=changes) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def stats(http: aiohttp.ClientSession, sim: Service) -> dict:
    async with http.get(base(sim) + "/_sim/stats") as resp:
        return await resp.json()


def google_error(status: int, body: Any, code: int, name: str | None = None) -> dict:
    """The ``error`` object of a Google-shaped error, checking its fields."""
    assert status == code, (status, body)
    assert set(body) == {"error"}, body
    error = body["error"]
    assert error["code"] == code and error["status"] == (name or STATUS_NAMES[code])
    assert isinstance(error["message"], str) and error["message"]
    return error


def anthropic_error(status: int, body: Any, code: int, kind: str) -> str:
    assert status == code, (status, body)
    assert body["type"] == "error" and body["error"]["type"] == kind and body["request_id"].startswith("req_")
    return body["error"]["message"]


def reason(error: dict) -> str:
    (info,) = [d for d in error["details"] if d["@type"] == "type.googleapis.com/google.rpc.ErrorInfo"]
    return info["reason"]


def gemini_sse(raw: str) -> list[dict]:
    assert raw.endswith("\r\n\r\n")
    events = []
    for block in raw.split("\r\n\r\n")[:-1]:
        assert block.startswith("data: ")
        events.append(json.loads(block[len("data: "):]))
    return events


def anthropic_sse(raw: str) -> list[tuple[str, dict]]:
    events = []
    for block in raw.strip().split("\n\n"):
        name, data = block.split("\n")
        assert name.startswith("event: ") and data.startswith("data: ")
        payload = json.loads(data[len("data: "):])
        assert payload["type"] == name[len("event: "):]
        events.append((payload["type"], payload))
    return events


# ------------------------------------------------------------- the token endpoint

async def test_google_auth_gets_a_token_from_the_sim(sim, http, keys):
    creds = credentials(keys.path)
    # What google-auth signs: aud is Google's token URI whatever token_uri says; the sim accepts it.
    claims = google.auth.jwt.decode(creds._make_authorization_grant_assertion(), verify=False)
    assert claims["iss"] == EMAIL and claims["aud"] == "https://oauth2.googleapis.com/token"
    assert claims["scope"] == CLOUD and claims["exp"] - claims["iat"] == 3600

    await refresh(creds)
    assert creds.token.startswith("ya29.") and creds.valid
    remaining = (creds.expiry - google.auth._helpers.utcnow()).total_seconds()
    assert 3500 < remaining <= 3600
    assert (await stats(http, sim))["token_grants"] == 1

    status, _, body = await generate(http, sim, creds)
    assert status == 200, body
    again = credentials(keys.path)
    await refresh(again)
    assert again.token != creds.token           # every grant is a new token; the old one stays valid
    assert (await generate(http, sim, creds))[0] == 200
    assert (await stats(http, sim))["token_grants"] == 2


async def test_forged_and_malformed_assertions_are_refused(sim, http, keys):
    forged = credentials(keys.forged_path)
    with pytest.raises(google.auth.exceptions.RefreshError, match="invalid_grant: Invalid JWT Signature"):
        await refresh(forged)
    assert forged.token is None
    stranger = credentials(keys.stranger_path)
    with pytest.raises(google.auth.exceptions.RefreshError, match="invalid_grant: Invalid grant: account not found"):
        await refresh(stranger)
    unscoped = credentials(keys.path, scopes=[])
    with pytest.raises(google.auth.exceptions.RefreshError, match="invalid_scope"):
        await refresh(unscoped)

    signer = google.auth.crypt.RSASigner.from_service_account_file(str(keys.path))
    now = int(time.time())
    good = {"iss": EMAIL, "aud": "https://oauth2.googleapis.com/token", "scope": CLOUD, "iat": now, "exp": now + 3600}

    async def grant(form: dict[str, str]) -> tuple[int, dict]:
        async with http.post(base(sim) + "/token", data=form) as resp:
            return resp.status, await resp.json()

    def assertion(**claims: Any) -> str:
        return google.auth.jwt.encode(signer, {**good, **claims}).decode()

    jwt_bearer = "urn:ietf:params:oauth:grant-type:jwt-bearer"
    cases = [
        ({"grant_type": jwt_bearer, "assertion": assertion(iat=now - 7200, exp=now - 3600)}, "invalid_grant",
         "short-lived"),
        ({"grant_type": jwt_bearer, "assertion": assertion(exp=now + 7200)}, "invalid_grant", "short-lived"),
        ({"grant_type": jwt_bearer, "assertion": assertion(aud="https://example.com/token")}, "invalid_grant",
         "audience"),
        ({"grant_type": jwt_bearer, "assertion": "not.a.jwt"}, "invalid_grant", "JWT"),
        ({"grant_type": jwt_bearer, "assertion": assertion()[:-4] + "AAAA"}, "invalid_grant", "Signature"),
        ({"grant_type": jwt_bearer}, "invalid_request", "assertion"),
        ({"grant_type": "client_credentials", "assertion": assertion()}, "unsupported_grant_type", "grant_type"),
    ]
    for form, code, words in cases:
        status, body = await grant(form)
        assert status == 400 and body["error"] == code and words in body["error_description"], (form, body)
    # The sim's own URL is an accepted audience too; JSON bodies are taken as well as forms.
    status, body = await grant({"grant_type": jwt_bearer, "assertion": assertion(aud=base(sim) + "/token")})
    assert status == 200 and body["token_type"] == "Bearer" and body["expires_in"] == 3600
    async with http.post(base(sim) + "/token", json={"grant_type": jwt_bearer, "assertion": assertion()}) as resp:
        assert resp.status == 200 and resp.headers["Cache-Control"].startswith("no-cache")

    counters = await stats(http, sim)
    assert counters["token_refusals"] == 3 + len(cases) and counters["token_grants"] == 2
    assert counters["requests"] == 0     # the token endpoint is not the model API


async def test_expired_token_is_refused_then_refresh_recovers(sim, http, keys):
    await configure(http, sim, vertex_token_ttl_s=1)
    creds = credentials(keys.path)
    await refresh(creds)
    # google-auth refreshes tokens 3m45s before they expire: one this short is never "valid" to it.
    assert not creds.valid
    assert (await generate(http, sim, creds))[0] == 200
    await asyncio.sleep(1.2)
    status, headers, body = await generate(http, sim, creds)
    error = google_error(status, body, 401, "UNAUTHENTICATED")
    assert error["message"].startswith("Request had invalid authentication credentials. Expected OAuth 2 access token")
    assert reason(error) == "ACCESS_TOKEN_EXPIRED"
    assert headers["WWW-Authenticate"].startswith("Bearer")
    old = creds.token
    await refresh(creds)
    assert creds.token != old
    assert (await generate(http, sim, creds))[0] == 200
    counters = await stats(http, sim)
    assert counters["token_grants"] == 2 and counters["auth_failures"] == 1


async def test_revoked_tokens_are_refused(sim, http, creds):
    assert (await generate(http, sim, creds))[0] == 200
    config = await configure(http, sim, vertex_revoke_tokens=True)
    assert config["vertex_revoke_tokens"] is False      # a one-shot action, not a state
    status, _, body = await generate(http, sim, creds)
    assert reason(google_error(status, body, 401, "UNAUTHENTICATED")) == "ACCESS_TOKEN_TYPE_UNSUPPORTED"
    await refresh(creds)
    assert (await generate(http, sim, creds))[0] == 200
    # /_sim/reset forgets tokens too.
    await http.post(base(sim) + "/_sim/reset")
    assert (await generate(http, sim, creds))[0] == 401


async def test_a_token_without_cloud_platform_scope_is_forbidden(sim, http, keys):
    creds = credentials(keys.path, scopes=["https://www.googleapis.com/auth/userinfo.email"])
    await refresh(creds)     # Google grants it: the scope is checked by the API it is used on
    status, _, body = await generate(http, sim, creds)
    error = google_error(status, body, 403, "PERMISSION_DENIED")
    assert reason(error) == "ACCESS_TOKEN_SCOPE_INSUFFICIENT"
    assert error["message"] == "Request had insufficient authentication scopes."


async def test_static_api_key_and_missing_or_bad_credentials(sim, http):
    assert (await generate(http, sim, API_KEY))[0] == 200
    status, _, body = await claude(http, sim, API_KEY)
    assert status == 200, body

    status, headers, body = await post(http, url(sim, GEMINI, "generateContent"), {"contents": HELLO}, None)
    error = google_error(status, body, 401, "UNAUTHENTICATED")
    assert reason(error) == "CREDENTIALS_MISSING" and error["message"].startswith("Request is missing required")
    assert headers["WWW-Authenticate"] == 'Bearer realm="https://accounts.google.com/"'
    status, _, body = await generate(http, sim, "ya29.made-up")
    assert reason(google_error(status, body, 401, "UNAUTHENTICATED")) == "ACCESS_TOKEN_TYPE_UNSUPPORTED"
    # A Gemini API key header is not Vertex's credential.
    status, _, body = await post(http, url(sim, GEMINI, "generateContent"), {"contents": HELLO},
                                 {"x-goog-api-key": API_KEY})
    google_error(status, body, 401, "UNAUTHENTICATED")
    metadata = body["error"]["details"][0]["metadata"]
    assert metadata == {"service": "aiplatform.googleapis.com",
                        "method": "google.cloud.aiplatform.v1.PredictionService.GenerateContent"}
    assert (await stats(http, sim))["auth_failures"] == 3


# --------------------------------------------------------------------- Gemini

async def test_generate_content(sim, http, creds):
    status, _, body = await generate(http, sim, creds, generationConfig={"maxOutputTokens": 5})
    assert status == 200, body
    (candidate,) = body["candidates"]
    assert candidate["content"]["role"] == "model" and candidate["finishReason"] == "MAX_TOKENS"
    assert len(candidate["content"]["parts"][0]["text"].split()) == 5
    usage = body["usageMetadata"]
    assert usage["candidatesTokenCount"] == 5
    assert usage["totalTokenCount"] == usage["promptTokenCount"] + 5
    assert body["modelVersion"] == GEMINI and body["responseId"]
    # v1beta1 serves the same.
    status, _, beta = await post(http, url(sim, GEMINI, "generateContent", version="v1beta1"),
                                 {"contents": HELLO, "generationConfig": {"maxOutputTokens": 5}}, bearer(creds))
    assert status == 200 and beta["candidates"][0]["content"] == candidate["content"]
    status, _, body = await generate(http, sim, creds, contents=[])
    assert "contents" in google_error(status, body, 400)["message"]
    counters = await stats(http, sim)
    assert counters["chat_requests"] == 3 and counters["by_status"] == {"200": 2, "400": 1}


async def test_stream_generate_content_sse_and_json_array(sim, http, creds):
    _, _, whole = await generate(http, sim, creds)
    text = whole["candidates"][0]["content"]["parts"][0]["text"]

    status, headers, raw = await generate(http, sim, creds, method="streamGenerateContent", query="?alt=sse")
    assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
    events = gemini_sse(raw)
    assert len(events) > 1
    assert "".join(e["candidates"][0]["content"]["parts"][0]["text"] for e in events) == text
    assert events[-1]["candidates"][0]["finishReason"] == "STOP" and "usageMetadata" in events[-1]
    assert all("finishReason" not in e["candidates"][0] for e in events[:-1])

    status, headers, array = await generate(http, sim, creds, method="streamGenerateContent")
    assert status == 200 and isinstance(array, list) and len(array) == len(events)
    assert "".join(e["candidates"][0]["content"]["parts"][0]["text"] for e in array) == text
    assert (await stats(http, sim))["stream_requests"] == 2


async def test_gemini_tool_call(sim, http, creds):
    status, _, body = await generate(http, sim, creds, tools=[{"functionDeclarations": [WEATHER]}])
    assert status == 200, body
    (part,) = body["candidates"][0]["content"]["parts"]
    call = part["functionCall"]
    assert call["name"] == "get_weather" and set(call["args"]) >= {"city", "unit"}
    assert call["args"]["unit"] in ("c", "f")
    # The function's result goes back; the model answers in text.
    contents = [*HELLO, {"role": "model", "parts": [part]},
                {"role": "user", "parts": [{"functionResponse": {"name": "get_weather",
                                                                 "response": {"temp": 21}}}]}]
    status, _, body = await generate(http, sim, creds, contents=contents, tools=[{"functionDeclarations": [WEATHER]}])
    assert status == 200 and "text" in body["candidates"][0]["content"]["parts"][0]


# ----------------------------------------------------------------- embeddings

async def test_embeddings_predict(sim, http, creds):
    status, _, body = await predict(http, sim, creds, instances=[
        {"content": "What is Vertex?", "task_type": "RETRIEVAL_QUERY"}, {"content": "Hello there"}])
    assert status == 200, body
    first, second = body["predictions"]
    assert len(first["embeddings"]["values"]) == 768 and first["embeddings"]["values"] != second["embeddings"]["values"]
    assert first["embeddings"]["statistics"] == {"token_count": 4, "truncated": False}
    assert body["metadata"]["billableCharacterCount"] == len("WhatisVertex?") + len("Hellothere")
    _, _, again = await predict(http, sim, creds, instances=[{"content": "Hello there"}],
                                parameters={"outputDimensionality": 256})
    assert len(again["predictions"][0]["embeddings"]["values"]) == 256
    _, _, same = await predict(http, sim, creds, instances=[{"content": "Hello there"}])
    assert same["predictions"][0]["embeddings"]["values"] == second["embeddings"]["values"]

    _, _, gemini = await predict(http, sim, creds, model=GEMINI_EMBED, instances=[{"content": "Hello there"}])
    assert len(gemini["predictions"][0]["embeddings"]["values"]) == 3072
    long = "word " * 3000
    _, _, cut = await predict(http, sim, creds, instances=[{"content": long}])
    assert cut["predictions"][0]["embeddings"]["statistics"] == {"token_count": 2048, "truncated": True}

    bad = [({"model": GEMINI_EMBED, "instances": [{"content": "a"}, {"content": "b"}]}, "at most 1 instance"),
           ({"instances": []}, "instances"), ({"instances": [{"text": "a"}]}, "content"),
           ({"instances": [{"content": "a", "task_type": "GUESS"}]}, "task_type"),
           ({"instances": [{"content": "a"}], "parameters": {"outputDimensionality": 769}}, "outputDimensionality"),
           ({"instances": [{"content": long}], "parameters": {"autoTruncate": False}}, "autoTruncate")]
    for body_args, words in bad:
        status, _, body = await predict(http, sim, creds, **body_args)
        assert words in google_error(status, body, 400)["message"], body_args
    # Gemini is not served through predict, and embedding models not through generateContent.
    status, _, body = await post(http, url(sim, GEMINI, "predict"), {"instances": [{"content": "a"}]}, bearer(creds))
    assert "Gemini cannot be accessed through Vertex Predict" in google_error(status, body, 400,
                                                                              "FAILED_PRECONDITION")["message"]
    status, _, body = await generate(http, sim, creds, model=EMBED)
    google_error(status, body, 400, "FAILED_PRECONDITION")
    assert (await stats(http, sim))["embedding_requests"] == 12


# --------------------------------------------------------------------- Claude

async def test_claude_raw_predict(sim, http, creds):
    status, headers, body = await claude(http, sim, creds, max_tokens=6)
    assert status == 200 and headers["Content-Type"].startswith("application/json"), body
    assert body["type"] == "message" and body["role"] == "assistant" and body["model"] == CLAUDE
    assert body["id"].startswith("msg_") and body["stop_reason"] == "max_tokens"
    (block,) = body["content"]
    assert block["type"] == "text" and len(block["text"].split()) == 6
    assert body["usage"]["output_tokens"] == 6 and body["usage"]["input_tokens"] > 0

    status, _, body = await claude(http, sim, creds, tools=[CLAUDE_WEATHER])
    assert status == 200 and body["stop_reason"] == "tool_use"
    (call,) = body["content"]
    assert call["type"] == "tool_use" and call["name"] == "get_weather" and "city" in call["input"]


async def test_claude_stream_raw_predict(sim, http, creds):
    _, _, whole = await claude(http, sim, creds)
    status, headers, raw = await claude(http, sim, creds, method="streamRawPredict", stream=True)
    assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
    events = anthropic_sse(raw)
    names = [name for name, _ in events]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(names[3:-3]) == {"content_block_delta"}
    text = "".join(e["delta"]["text"] for name, e in events if name == "content_block_delta")
    assert text == whole["content"][0]["text"]
    assert events[0][1]["message"]["model"] == CLAUDE
    assert events[-2][1]["delta"]["stop_reason"] == "end_turn"
    # "stream" may be left out of the body: the method decides.
    status, _, raw = await claude(http, sim, creds, method="streamRawPredict")
    assert status == 200 and anthropic_sse(raw)[-1][0] == "message_stop"
    assert (await stats(http, sim))["stream_requests"] == 2


async def test_claude_through_anthropics_vertex_client(sim, http, creds):
    client = anthropic.AsyncAnthropicVertex(region=LOCATION, project_id=PROJECT, access_token=creds.token,
                                            base_url=base(sim) + "/v1", max_retries=0)
    # This SDK release puts its own API version ("2026-10-21") in the body by default, not the
    # documented vertex-2023-10-16, which is all the sim takes: name it explicitly.
    vertex = {"anthropic_version": "vertex-2023-10-16"}
    async with client:
        with pytest.raises(anthropic.BadRequestError, match="vertex-2023-10-16"):
            await client.messages.create(model=CLAUDE, max_tokens=8, messages=CLAUDE_HELLO)
        message = await client.messages.create(model=CLAUDE, max_tokens=8, messages=CLAUDE_HELLO, extra_body=vertex)
        assert message.model == CLAUDE and message.stop_reason == "max_tokens"
        assert len(message.content[0].text.split()) == 8
        async with client.messages.stream(model=CLAUDE, max_tokens=64, messages=CLAUDE_HELLO,
                                          tools=[CLAUDE_WEATHER], extra_body=vertex) as stream:
            final = await stream.get_final_message()
        assert final.stop_reason == "tool_use" and final.content[0].name == "get_weather"
        assert "city" in final.content[0].input

        await configure(http, sim, rate_limit_rate=1)
        with pytest.raises(anthropic.RateLimitError) as raised:
            await client.messages.create(model=CLAUDE, max_tokens=8, messages=CLAUDE_HELLO, extra_body=vertex)
        assert "Quota exceeded" in str(raised.value)
        await configure(http, sim, rate_limit_rate=0, error_rate=1, error_status=529)
        with pytest.raises(anthropic.APIStatusError) as raised:
            await client.messages.create(model=CLAUDE, max_tokens=8, messages=CLAUDE_HELLO, extra_body=vertex)
        assert raised.value.status_code == 529 and raised.value.body["error"]["type"] == "overloaded_error"
        await configure(http, sim, error_rate=0)
    assert (await stats(http, sim))["by_status"] == {"400": 1, "200": 2, "429": 1, "529": 1}


async def test_claude_needs_vertex_envelope(sim, http, creds):
    target = url(sim, CLAUDE, "rawPredict")
    plain = {"messages": CLAUDE_HELLO, "max_tokens": 16}
    status, _, body = await post(http, target, plain, bearer(creds))
    assert "anthropic_version" in anthropic_error(status, body, 400, "invalid_request_error")
    status, _, body = await post(http, target, {**plain, "anthropic_version": "2023-06-01"}, bearer(creds))
    assert "vertex-2023-10-16" in anthropic_error(status, body, 400, "invalid_request_error")
    status, _, body = await post(http, target, {**plain, "anthropic_version": "vertex-2023-10-16", "model": CLAUDE},
                                 bearer(creds))
    assert "model" in anthropic_error(status, body, 400, "invalid_request_error")
    status, _, body = await claude(http, sim, creds, stream=True)
    assert "stream" in anthropic_error(status, body, 400, "invalid_request_error")
    status, _, body = await claude(http, sim, creds, max_tokens=0)
    assert "max_tokens" in anthropic_error(status, body, 400, "invalid_request_error")
    status, _, body = await claude(http, sim, creds, method="generateContent")
    google_error(status, body, 400, "FAILED_PRECONDITION")


# ------------------------------------------------------ projects, places, models

async def test_wrong_project_is_permission_denied(sim, http, creds):
    status, _, body = await post(http, url(sim, GEMINI, "generateContent", project="someone-elses"),
                                 {"contents": HELLO}, bearer(creds))
    error = google_error(status, body, 403, "PERMISSION_DENIED")
    assert error["message"] == ("Permission 'aiplatform.endpoints.predict' denied on resource '//aiplatform.googleapis"
                                ".com/projects/someone-elses/locations/us-central1/publishers/google/models/"
                                "gemini-2.5-flash' (or it may not exist).")
    assert reason(error) == "IAM_PERMISSION_DENIED"
    # Authentication comes first: no token is a 401 whatever the project.
    status, _, body = await post(http, url(sim, GEMINI, "generateContent", project="someone-elses"),
                                 {"contents": HELLO}, None)
    google_error(status, body, 401, "UNAUTHENTICATED")
    assert (await stats(http, sim))["auth_failures"] == 2


async def test_locations(sim, http, creds):
    status, _, body = await post(http, url(sim, GEMINI, "generateContent", location="global"),
                                 {"contents": HELLO}, bearer(creds))
    assert "Publisher Model `projects/sim-project-123/locations/global/" in google_error(status, body, 404)["message"]
    await configure(http, sim, vertex_location="global")
    status, _, _ = await post(http, url(sim, GEMINI, "generateContent", location="global"),
                              {"contents": HELLO}, bearer(creds))
    assert status == 200
    assert (await claude(http, sim, creds))[0] == 404       # us-central1 is not served now
    await configure(http, sim, vertex_location="")          # any location
    for location in ("europe-west4", "global", "us-east5"):
        status, _, _ = await post(http, url(sim, CLAUDE, "rawPredict", location=location),
                                  {"anthropic_version": "vertex-2023-10-16", "messages": CLAUDE_HELLO,
                                   "max_tokens": 4}, bearer(creds))
        assert status == 200, location


async def test_unknown_models_and_publishers(sim, http, creds):
    cases = [url(sim, "gemini-9.9-ultra", "generateContent"),
             url(sim, CLAUDE, "generateContent", publisher="google"),       # Claude is not Google's
             url(sim, GEMINI, "rawPredict", publisher="anthropic"),         # nor Gemini Anthropic's
             url(sim, "llama-4", "rawPredict", publisher="meta")]
    for target in cases:
        status, _, body = await post(http, target, {"contents": HELLO}, bearer(creds))
        assert "was not found or your project does not have access to it" in google_error(status, body, 404)["message"]
    status, _, body = await post(http, url(sim, GEMINI, "countTokens"), {"contents": HELLO}, bearer(creds))
    google_error(status, body, 404)
    status, _, body = await post(http, base(sim) + "/v1/projects/x/nowhere", {}, bearer(creds))
    google_error(status, body, 404)


# ------------------------------------------------------------- scripted faults

async def test_scripted_errors_in_googles_shape(sim, http, creds):
    for code in (400, 403, 404, 500, 503, 504):
        await configure(http, sim, error_rate=1, error_status=code)
        google_error(*(await generate(http, sim, creds))[::2], code)
        google_error(*(await predict(http, sim, creds, instances=[{"content": "a"}]))[::2], code)
        # Vertex raises these itself, so they are Google's on the Claude path too.
        google_error(*(await claude(http, sim, creds))[::2], code)
    await configure(http, sim, error_rate=0, rate_limit_rate=1, retry_after_s=2)
    status, headers, body = await generate(http, sim, creds)
    assert "error-code-429" in google_error(status, body, 429)["message"] and headers["Retry-After"] == "2"
    status, headers, body = await claude(http, sim, creds)
    message = google_error(status, body, 429)["message"]
    assert message.startswith("Quota exceeded for aiplatform.googleapis.com/online_prediction_requests_per_base_model"
                              " with base model: anthropic-claude-sonnet-4.") and headers["Retry-After"] == "2"
    # Claude's own overload keeps Anthropic's shape.
    await configure(http, sim, rate_limit_rate=0, error_rate=1, error_status=529)
    assert anthropic_error(*(await claude(http, sim, creds))[::2], 529, "overloaded_error") == "Overloaded"


async def test_streaming_methods_send_errors_as_a_json_array(sim, http, creds):
    await configure(http, sim, rate_limit_rate=1)
    status, _, body = await claude(http, sim, creds, method="streamRawPredict", stream=True)
    assert status == 429 and isinstance(body, list)
    google_error(status, body[0], 429)
    status, _, body = await generate(http, sim, creds, method="streamGenerateContent")
    assert isinstance(body, list)
    google_error(status, body[0], 429)
    # With alt=sse it is a plain object, as generateContent's.
    status, _, body = await generate(http, sim, creds, method="streamGenerateContent", query="?alt=sse")
    google_error(status, body, 429)
    await configure(http, sim, rate_limit_rate=0)
    # Auth refusals too (the gate's answers).
    status, _, body = await claude(http, sim, "ya29.made-up", method="streamRawPredict", stream=True)
    assert status == 401 and reason(body[0]["error"]) == "ACCESS_TOKEN_TYPE_UNSUPPORTED"
    # Claude's own errors are not wrapped.
    status, _, body = await claude(http, sim, creds, method="streamRawPredict", max_tokens=0)
    anthropic_error(status, body, 400, "invalid_request_error")


async def test_outages_stalls_and_poison_text(sim, http, creds):
    await configure(http, sim, outage="503")
    google_error(*(await generate(http, sim, creds))[::2], 503)
    google_error(*(await claude(http, sim, creds))[::2], 503)
    await configure(http, sim, outage="reset")
    with pytest.raises(aiohttp.ClientError):
        await generate(http, sim, creds)
    await configure(http, sim, outage="none", fail_on_text="poison")
    google_error(*(await generate(http, sim, creds, contents=[{"role": "user", "parts": [{"text": "poison"}]}]))[::2],
                 500)
    await configure(http, sim, fail_on_text="", stall_after_chunks=1)
    for target, body in [(url(sim, GEMINI, "streamGenerateContent", query="?alt=sse"), {"contents": HELLO}),
                         (url(sim, CLAUDE, "streamRawPredict"), {"anthropic_version": "vertex-2023-10-16",
                                                                 "messages": CLAUDE_HELLO, "max_tokens": 16})]:
        async with http.post(target, json=body, headers=bearer(creds)) as resp:
            assert resp.status == 200
            first = await asyncio.wait_for(resp.content.readany(), 5)
            assert first
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(resp.content.read(), 0.5)
    counters = await stats(http, sim)
    assert counters["by_status"]["503"] == 2 and counters["by_status"]["reset"] == 1


# -------------------------------------------------------------- configuration

async def test_config_validation(sim, http, keys):
    bad = [({"vertex_token_ttl_s": 0}, "vertex_token_ttl_s"), ({"vertex_token_ttl_s": "1h"}, "vertex_token_ttl_s"),
           ({"vertex_location": "Mars Base"}, "vertex_location"), ({"vertex_project": "a b"}, "vertex_project"),
           ({"vertex_service_account_file": str(keys.root / "missing.json")}, "vertex_service_account_file"),
           ({"vertex_revoke_tokens": "yes"}, "vertex_revoke_tokens")]
    not_a_key = keys.root / "not-a-key.json"
    not_a_key.write_text(json.dumps({"type": "service_account", "client_email": EMAIL, "private_key": "nope"}))
    bad.append(({"vertex_service_account_file": str(not_a_key)}, "vertex_service_account_file"))
    for payload, field in bad:
        async with http.put(base(sim) + "/_sim/config", json=payload) as resp:
            error = (await resp.json())["error"]
            assert resp.status == 400 and error["param"] == field, payload
    async with http.get(base(sim) + "/_sim/config") as resp:
        config = await resp.json()
    assert config["vertex_service_account_file"] == str(keys.path) and config["vertex_token_ttl_s"] == 3600
    assert config["vertex_project"] == PROJECT and config["vertex_location"] == LOCATION


def test_flags_and_env(monkeypatch, keys):
    import argparse

    def parse(*argv: str) -> SimSettings:
        parser = argparse.ArgumentParser()
        add_arguments(parser)
        return settings_from_args(parser.parse_args(list(argv)))

    settings = parse("--wire", "vertex", "--vertex-project", PROJECT, "--vertex-location", "global",
                     "--vertex-service-account-file", str(keys.path), "--vertex-token-ttl-s", "2")
    assert (settings.vertex_project, settings.vertex_location, settings.vertex_token_ttl_s) == (PROJECT, "global", 2)
    monkeypatch.setenv("MEGAROUTER_SIM_VERTEX_PROJECT", "123456789012")
    assert parse().vertex_project == "123456789012"
    with pytest.raises(SettingError, match="vertex_service_account_file"):
        parse("--vertex-service-account-file", str(keys.root / "missing.json"))


async def test_open_without_credentials_configured():
    # No --api-key and no key file: open, as every wire is without a key; the project still counts.
    app = build_app(SimSettings(vertex_project=PROJECT), "simtest", [GEMINI, CLAUDE], None, wire="vertex")
    async with TestClient(TestServer(app)) as client:
        path = f"/v1/projects/{PROJECT}/locations/global/publishers/google/models/{GEMINI}:generateContent"
        assert (await client.post(path, json={"contents": HELLO})).status == 200
        resp = await client.post(path.replace(PROJECT, "other-project"), json={"contents": HELLO})
        assert resp.status == 403
        # Without a key file, /token grants nothing.
        resp = await client.post("/token", data={"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                                                 "assertion": "a.b.c"})
        assert resp.status == 400 and (await resp.json())["error"] == "invalid_grant"
