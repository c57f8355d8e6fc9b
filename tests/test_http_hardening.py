"""The proxy's HTTP server against clients that misbehave: malformed framing, slow and idle
sockets, bodies that never finish, bodies that lie about their encoding, doubled
credentials — with real sockets against a real proxy, its logs read at debug level."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.conftest import API_KEY, System, build_system
from tests.harness import Service

CANARY = "CANARY-7f3e-do-not-log"
CANARY_KEY = "sk-mr-CANARY-key-7f3e0000000000"
TIMEOUT_S = 1.0


@pytest.fixture(scope="module")
async def system(tmp_path_factory) -> AsyncIterator[System]:
    built = await build_system(tmp_path_factory.mktemp("hardening"), proxies=0)
    try:
        await built.start_proxy("--header-timeout-s", str(TIMEOUT_S), "--body-timeout-s", str(TIMEOUT_S),
                                "--keepalive-timeout-s", "2", "--max-headers", "32")
        await built.wait_proxy_version(1)
        yield built
    finally:
        await built.close()


def _proxy(system: System) -> Service:
    return system.proxies[0]


async def _exchange(port: int, raw: bytes, read_timeout: float = 5.0) -> bytes:
    """Send raw bytes, return everything the server sends back until it closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), read_timeout)
    finally:
        writer.close()


def _split(response: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


CHAT = json.dumps({"model": "chat", "messages": [{"role": "user", "content": f"say {CANARY}"}]}).encode()
MALFORMED = {
    "a wrong chunk size": (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + CANARY_KEY.encode()
        + b"\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\nZZZ\r\n" + CHAT + b"\r\n0\r\n\r\n",
        400),
    "a header line without a colon": (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n" + CANARY.encode() + b" " + CHAT + b"\r\n\r\n", 400),
    "garbage for a request line": (CANARY.encode() + b" " + CHAT + b"\r\n\r\n", 400),
    "a header longer than the limit": (
        b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Pad: " + CANARY.encode() * 1000 + b"\r\n\r\n", 431),
    "too many headers": (
        b"GET /v1/models HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: %s\r\n" % (n, CANARY.encode()) for n in range(40))
        + b"\r\n", 431),
}


@pytest.mark.parametrize("what", list(MALFORMED))
async def test_malformed_framing_gets_a_json_error_and_leaves_no_bytes_in_any_log(system: System, what) -> None:
    raw, status = MALFORMED[what]
    got_status, headers, body = _split(await _exchange(_proxy(system).port, raw))
    assert got_status == status
    assert headers["content-type"].startswith("application/json")
    error = json.loads(body)["error"]
    assert error["code"] in ("malformed_request", "request_header_too_large")
    assert CANARY not in body.decode() and CANARY_KEY not in body.decode()
    assert headers.get("server") == "megarouter"
    log = _proxy(system).log_text()
    assert CANARY not in log and CANARY_KEY not in log
    assert "Traceback" not in log


async def test_no_server_version_banner_and_duplicate_credentials_are_refused(system: System) -> None:
    url = system.base_url() + "/chat/completions"
    async with aiohttp.ClientSession() as session:
        async with session.get(system.base_url() + "/models", headers={"Authorization": f"Bearer {API_KEY}"}) as ok:
            assert ok.status == 200 and ok.headers["Server"] == "megarouter"
        headers = [("Authorization", f"Bearer {API_KEY}"), ("Authorization", "Bearer sk-mr-someone-else-000000")]
        async with session.post(url, headers=headers, data=CHAT) as response:
            body = await response.json()
    assert response.status == 400 and body["error"]["param"] == "Authorization"


async def test_a_body_that_lies_about_its_encoding_is_a_400_naming_it(system: System) -> None:
    url = system.base_url() + "/chat/completions"
    auth = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        async with session.post(url, headers={**auth, "Content-Encoding": "gzip"}, data=CHAT) as response:
            body = await response.json()
        assert response.status == 400 and body["error"]["param"] == "Content-Encoding"
        async with session.post(url, headers={**auth, "Content-Encoding": "gzip"}, data=gzip.compress(CHAT)) as good:
            assert good.status == 200  # a body that is what it says it is still works
    assert CANARY not in _proxy(system).log_text()


async def test_slow_and_idle_clients_are_closed_while_normal_traffic_flows(system: System) -> None:
    """Slowloris: 100 sockets sending their heads a byte at a time, idle sockets, and a body
    shorter than its Content-Length. Each is closed within its timeout; others are served."""
    port = _proxy(system).port
    loop = asyncio.get_running_loop()
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + API_KEY.encode()

    async def slowloris() -> float:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        started = loop.time()
        try:
            for byte in head:
                writer.write(bytes([byte]))
                await writer.drain()
                if await _closed_within(reader, 0.2):
                    return loop.time() - started
            return float("inf")
        except ConnectionError:
            return loop.time() - started
        finally:
            writer.close()

    async def idle() -> float:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        started = loop.time()
        await asyncio.wait_for(reader.read(), 10)
        writer.close()
        return loop.time() - started

    async def short_body() -> tuple[int, float]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        started = loop.time()
        writer.write(head + b"\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n" + CHAT[:20])
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        return _split(answer)[0], loop.time() - started

    async def normal_traffic() -> list[int]:
        statuses = []
        async with aiohttp.ClientSession() as session:
            for _ in range(20):
                async with session.post(system.base_url() + "/chat/completions", data=CHAT,
                                        headers={"Authorization": f"Bearer {API_KEY}",
                                                 "Content-Type": "application/json"}) as response:
                    statuses.append(response.status)
        return statuses

    slow = [asyncio.create_task(slowloris()) for _ in range(100)]
    results = await asyncio.gather(asyncio.gather(*slow), idle(), short_body(), normal_traffic())
    slow_closed, idle_closed, (short_status, short_closed), statuses = results
    assert max(slow_closed) < TIMEOUT_S + 1.0, sorted(slow_closed)[-5:]
    assert idle_closed < 2 + 1.0                       # the keep-alive timeout
    assert short_status == 408 and short_closed < TIMEOUT_S + 1.0
    assert statuses == [200] * 20


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    try:
        data = await asyncio.wait_for(reader.read(1), seconds)
    except TimeoutError:
        return False
    return data == b""
