"""`megarouter up` starts a working system an OpenAI SDK can call."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

import aiohttp
import anthropic
import openai

from megarouter.admin_client import admin_channel
from megarouter.v1 import admin_pb2, admin_pb2_grpc
from tests.etcd_cluster import start_or_skip
from tests.harness import eventually, start_service

DEV_KEY = "sk-mr-dev-test-key-0123456789"


async def test_up_serves_the_openai_sdk_and_stops_cleanly(tmp_path) -> None:
    up = await start_service("up", [
        "up", "--data-dir", str(tmp_path / "data"), "--admin-listen", "127.0.0.1:0",
        "--proxy-listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--console-listen", "127.0.0.1:0",
    ], tmp_path / "logs", env={"MEGAROUTER_DEV_KEY": DEV_KEY})
    try:
        client = openai.AsyncOpenAI(base_url=up.ready["base_url"], api_key=DEV_KEY, max_retries=0)
        for model in ("auto", "chat", "demo-large"):
            completion = await client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "hello"}]
            )
            assert completion.choices[0].message.content
        ids = {m.id async for m in client.models.list()}
        assert {"auto", "chat", "embed", "demo-small", "demo-medium", "demo-large", "demo-embed"} <= ids
        await _embeddings_are_served(client, up.ready["admin"])
        response = await client.responses.create(model="auto", input="hello")
        assert response.status == "completed" and response.output_text
        # The quickstart's Anthropic SDK: base URL without /v1, the same key.
        claude = anthropic.AsyncAnthropic(base_url=up.ready["base_url"].removesuffix("/v1"), api_key=DEV_KEY,
                                          max_retries=0)
        message = await claude.messages.create(model="auto", max_tokens=50,
                                               messages=[{"role": "user", "content": "hello"}])
        assert message.content[0].text and message.stop_reason == "end_turn"
        await claude.close()
        await _console_signs_in_with_the_printed_token(up.ready["console"], tmp_path / "data" / "admin-token")
        children = [int(p) for p in os.listdir("/proc") if p.isdigit() and _parent(p) == up.process.pid]
        assert len(children) == 6  # three simulators, control plane, proxy, console
    finally:
        code = await up.stop(signal.SIGINT)
    assert code == 0
    # Ctrl-C took every child with it.
    assert [pid for pid in children if os.path.exists(f"/proc/{pid}")] == []


async def _console_signs_in_with_the_printed_token(console_url: str, token_file) -> None:
    """The banner's console URL serves the sign-in page, and the token `up` points at signs in.
    (The browser tests drive the console itself; this checks `up` wires it.)"""
    token = os.environ["MEGAROUTER_ADMIN_TOKEN"] or token_file.read_text().strip()
    # unsafe=True: keep cookies from an IP-address host (aiohttp's jar drops them by default).
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async with http.get(console_url + "/signin") as page:
            assert page.status == 200
            html = await page.text()
        csrf = html.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        async with http.post(console_url + "/signin/token", data={"csrf": csrf, "token": token, "next": "/keys"},
                             allow_redirects=False) as signed_in:
            assert signed_in.status == 303 and signed_in.headers["Location"] == "/keys"
        async with http.get(console_url + "/keys") as keys:
            assert keys.status == 200 and 'data-key="dev"' in await keys.text()


async def test_up_runs_replicated_control_planes_on_etcd(tmp_path) -> None:
    """`megarouter up --store etcd://... --controlplanes 2`: two replicas, one leader, a proxy
    given both; killing the leader neither stops `up` nor the proxy serving."""
    cluster = start_or_skip(1)
    try:
        up = await start_service("up-ha", [
            "up", "--data-dir", str(tmp_path / "data"), "--admin-listen", "127.0.0.1:0",
            "--proxy-listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--console-listen", "127.0.0.1:0",
            "--store", f"etcd://{cluster.endpoints[0]}/up-test", "--controlplanes", "2",
        ], tmp_path / "logs", env={"MEGAROUTER_DEV_KEY": DEV_KEY, "MEGAROUTER_ADMIN_TOKEN": ""})
        try:
            admins = up.ready["controlplanes"]
            assert len(admins) == 2
            env = {**os.environ, "MEGAROUTER_ADMIN_TOKEN": "",
                   "MEGAROUTER_ADMIN_TOKEN_FILE": str(tmp_path / "data" / "admin-token")}

            async def listing() -> str:
                done = await asyncio.to_thread(subprocess.run, [
                    sys.executable, "-m", "megarouter.ctl", "--server", admins[1], "controlplanes"],
                    capture_output=True, text=True, timeout=60, env=env)
                assert done.returncode == 0, done.stderr
                return done.stdout

            async def one_leader_two_replicas() -> bool:
                text = await listing()
                return text.count("controlplane-") == 2 and text.count("leader") == 1
            await eventually(one_leader_two_replicas, timeout=30, what="two replicas and one leader")
            client = openai.AsyncOpenAI(base_url=up.ready["base_url"], api_key=DEV_KEY, max_retries=0)
            completion = await client.chat.completions.create(
                model="auto", messages=[{"role": "user", "content": "hello"}])
            assert completion.choices[0].message.content
        finally:
            code = await up.stop(signal.SIGINT)
        assert code == 0
    finally:
        cluster.stop()


async def test_up_refuses_several_control_planes_on_sqlite(tmp_path) -> None:
    done = await asyncio.to_thread(subprocess.run, [
        sys.executable, "-m", "megarouter", "up", "--data-dir", str(tmp_path), "--controlplanes", "2"],
        capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "--store etcd://" in done.stderr


async def _embeddings_are_served(client: openai.AsyncOpenAI, admin: str) -> None:
    """The demo's embedding model answers through the proxy, by name and by route, and both of its
    endpoints (two simulators, two regions) serve it upstream."""
    texts = ["the first text", "a second, different one", "the first text"]
    for model in ("demo-embed", "embed"):
        answer = await client.embeddings.create(model=model, input=texts)
        assert [item.index for item in answer.data] == [0, 1, 2]
        vectors = [item.embedding for item in answer.data]
        assert [len(v) for v in vectors] == [1536, 1536, 1536]   # the simulator's default dimensions
        assert vectors[0] == vectors[2] != vectors[1]             # deterministic per text
        assert abs(sum(x * x for x in vectors[0]) - 1) < 1e-3     # unit vectors
        assert answer.usage.prompt_tokens > 0
    shortened = await client.embeddings.create(model="embed", input="hello", dimensions=256)
    assert len(shortened.data[0].embedding) == 256

    async with admin_channel(admin) as channel:   # the test token (tests/conftest.py) bootstrapped it
        table = await admin_pb2_grpc.AdminStub(channel).GetRoutingTable(admin_pb2.GetRoutingTableRequest())
    providers = {p.name: p for p in table.providers}
    endpoints = [e for e in table.endpoints if e.model == "demo-embed"]
    assert sorted(providers[e.provider].region for e in endpoints) == ["eu-west", "us-east"]
    async with aiohttp.ClientSession() as session:
        for endpoint in endpoints:   # each simulator lists the upstream model id in its --models
            url = providers[endpoint.provider].base_url + "/embeddings"
            body = {"model": endpoint.upstream_model or endpoint.model, "input": "hello"}
            async with session.post(url, json=body) as response:
                assert response.status == 200, (endpoint.name, await response.text())
                assert len((await response.json())["data"][0]["embedding"]) == 1536


def _parent(pid: str) -> int:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return int(handle.read().rsplit(")", 1)[1].split()[1])
    except OSError:
        return -1
