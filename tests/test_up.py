"""`megarouter up` starts a working system an OpenAI SDK can call."""

from __future__ import annotations

import os
import signal

import openai

from tests.harness import start_service

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


def _parent(pid: str) -> int:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return int(handle.read().rsplit(")", 1)[1].split()[1])
    except OSError:
        return -1
