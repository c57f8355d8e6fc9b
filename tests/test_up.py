"""`megarouter up` starts a working system an OpenAI SDK can call."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

import openai

from tests.etcd_cluster import start_or_skip
from tests.harness import eventually, start_service

DEV_KEY = "sk-mr-dev-test-key-0123456789"


async def test_up_serves_the_openai_sdk_and_stops_cleanly(tmp_path) -> None:
    up = await start_service("up", [
        "up", "--data-dir", str(tmp_path / "data"), "--admin-listen", "127.0.0.1:0",
        "--proxy-listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
    ], tmp_path / "logs", env={"MEGAROUTER_DEV_KEY": DEV_KEY})
    try:
        client = openai.AsyncOpenAI(base_url=up.ready["base_url"], api_key=DEV_KEY, max_retries=0)
        for model in ("auto", "chat", "demo-large"):
            completion = await client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "hello"}]
            )
            assert completion.choices[0].message.content
        ids = {m.id async for m in client.models.list()}
        assert {"auto", "chat", "demo-small", "demo-medium", "demo-large"} <= ids
        children = [int(p) for p in os.listdir("/proc") if p.isdigit() and _parent(p) == up.process.pid]
        assert len(children) == 5  # three simulators, control plane, proxy
    finally:
        code = await up.stop(signal.SIGINT)
    assert code == 0
    # Ctrl-C took every child with it.
    assert [pid for pid in children if os.path.exists(f"/proc/{pid}")] == []


async def test_up_runs_replicated_control_planes_on_etcd(tmp_path) -> None:
    """`megarouter up --store etcd://... --controlplanes 2`: two replicas, one leader, a proxy
    given both; killing the leader neither stops `up` nor the proxy serving."""
    cluster = start_or_skip(1)
    try:
        up = await start_service("up-ha", [
            "up", "--data-dir", str(tmp_path / "data"), "--admin-listen", "127.0.0.1:0",
            "--proxy-listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
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


def _parent(pid: str) -> int:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return int(handle.read().rsplit(")", 1)[1].split()[1])
    except OSError:
        return -1
