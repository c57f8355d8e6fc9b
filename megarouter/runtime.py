"""Process plumbing shared by every MegaRouter service.

Each service prints one JSON "ready" line on stdout once it listens, so a
supervisor (`megarouter up`, the tests) learns its real port without
polling; and each stops cleanly on SIGINT/SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Coroutine
from typing import Any


def announce_ready(service: str, **fields: Any) -> None:
    print(json.dumps({"event": "ready", "service": service, **fields}), flush=True)


class ContentFreeLogs(logging.Filter):
    """Zero data retention for libraries' log records.

    Our own loggers never format request content. aiohttp's do: its HTTP parser's
    exceptions carry raw request bytes (prompt text, bearer keys), and it logs them with
    their traceback. So for records of the `aiohttp` loggers only the message template
    survives: string arguments become "…", and an exception is reduced to its class name.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "aiohttp" or record.name.startswith("aiohttp."):
            if record.args:
                args = record.args if isinstance(record.args, tuple) else (record.args,)
                record.args = tuple(arg if isinstance(arg, int | float) else "…" for arg in args)
            if record.exc_info:
                kind = record.exc_info[0].__name__ if record.exc_info[0] else "error"
                record.msg = f"{record.msg} [{kind}; details withheld]"
                record.exc_info = None
            record.exc_text = None
            record.stack_info = None
        return True


def setup_logging(level: str | None = None) -> None:
    level = (level or os.environ.get("MEGAROUTER_LOG_LEVEL") or "info").upper()
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(ContentFreeLogs())
    # grpc's own debug output is per-call noise, not ours to debug.
    logging.getLogger("grpc").setLevel(max(logging.getLogger().level, logging.INFO))


def stop_event() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


def run_service(main: Coroutine[Any, Any, int]) -> int:
    """Run a service's main coroutine on uvloop when available."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux/macOS
        return asyncio.run(main)
    return uvloop.run(main)


def env_default(name: str, default: Any) -> Any:
    """The MEGAROUTER_<NAME> environment variable, else `default`."""
    return os.environ.get(f"MEGAROUTER_{name}", default)


PARENT_PID_ENV = "MEGAROUTER_PARENT_PID"


def die_with_parent() -> None:
    """In a child started by a supervisor (`megarouter up`, the tests, the
    benches) that set MEGAROUTER_PARENT_PID: receive SIGTERM when that parent
    dies, however it dies, so a supervisor killed hard leaves no orphans.

    Done by the child at start-up rather than in a `preexec_fn`: running
    Python between fork and exec in a process that uses gRPC can abort the
    child. Linux only; elsewhere a no-op.
    """
    parent = os.environ.get(PARENT_PID_ENV)
    if not parent or sys.platform != "linux":
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != int(parent):  # the parent died before prctl took effect
        sys.exit(1)


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a supervised child: ours, plus who to die with."""
    return {**os.environ, PARENT_PID_ENV: str(os.getpid()), **(extra or {})}
