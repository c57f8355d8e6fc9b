"""Real processes on loopback for integration tests.

Every service is started as `python -m megarouter <command> ... --port 0`
(or `--listen 127.0.0.1:0`) and announces its real port on stdout in a JSON
ready line, so tests never guess ports and never sleep waiting for a bind.
Each service's stderr goes to a log file under the test's directory, which
the zero-retention tests can search.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from megarouter.runtime import child_env

READY_TIMEOUT_S = 30.0


@dataclass
class Service:
    name: str
    argv: list[str]
    process: asyncio.subprocess.Process
    ready: dict
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def port(self) -> int:
        return int(self.ready["port"])

    @property
    def running(self) -> bool:
        return self.process.returncode is None

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.process.returncode is None:
            self.process.send_signal(sig)
            try:
                await asyncio.wait_for(self.process.wait(), timeout)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        return self.process.returncode  # type: ignore[return-value]

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


async def start_service(
    name: str, argv: list[str], log_dir: Path, env: dict[str, str] | None = None
) -> Service:
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    full_env = child_env({"PYTHONUNBUFFERED": "1", **(env or {})})
    with open(log_path, "ab") as log_file:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "megarouter", *argv,
            stdout=asyncio.subprocess.PIPE, stderr=log_file, env=full_env,
        )
    assert process.stdout is not None

    async def read_ready() -> dict:
        while True:
            line = await process.stdout.readline()
            if not line:
                await process.wait()
                raise RuntimeError(
                    f"{name} exited ({process.returncode}) before it was ready; log:\n{log_path.read_text()}"
                )
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and event.get("event") == "ready":
                return event

    try:
        ready = await asyncio.wait_for(read_ready(), READY_TIMEOUT_S)
    except BaseException:
        if process.returncode is None:
            process.kill()
            await process.wait()
        raise
    # Keep draining stdout so a chatty child can never block on a full pipe.
    asyncio.get_running_loop().create_task(_drain(process.stdout))
    return Service(name, argv, process, ready, log_path, env or {})


async def _drain(stream: asyncio.StreamReader) -> None:
    while await stream.read(65536):
        pass


async def restart(service: Service, log_dir: Path) -> Service:
    """Start the same command again (after it was stopped), on the same port,
    so clients configured with the old address find it again."""
    argv = list(service.argv)
    if "--listen" in argv:
        at = argv.index("--listen") + 1
        argv[at] = f"{argv[at].rsplit(':', 1)[0]}:{service.port}"
    return await start_service(service.name, argv, log_dir, service.env)


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout: float = 10.0, interval: float = 0.02, what: str = "condition"
) -> None:
    """Await until `check()` is true. For state that is only observable by
    asking (another process's table version), this short poll is the event."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        if await check():
            return
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)
