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
import select
import signal
import sys
from collections.abc import Callable, Coroutine
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


# The exit status of a command whose reader went away: 128 + SIGPIPE (141), what a shell reports for
# `cat`, `ls` or `grep` when `| head` stops reading and SIGPIPE kills them. Not 0: the output was cut
# short, and a `set -o pipefail` script can tell, as it can with those tools. Not 1, which our CLIs
# use for a failed command (an unreachable server, a bad manifest). Python ignores SIGPIPE so
# that sockets report EPIPE instead of killing the process; restoring its default action would
# give the same status, but a gRPC or HTTP peer hanging up would then kill us too.
CLOSED_STDOUT_EXIT = 128 + signal.SIGPIPE


def exit_quietly_on_closed_stdout(main: Callable[[], int]) -> int:
    """Run a command-line `main`; if its stdout pipe is closed under it (`megarouterctl get models |
    head -1`), stop quietly with CLOSED_STDOUT_EXIT instead of a BrokenPipeError traceback.

    Output still buffered when `main` returns (or exits) is flushed here, where a closed pipe can be
    handled, rather than at interpreter exit, which would print "Exception ignored ... BrokenPipeError".
    A BrokenPipeError from anything but stdout (a socket, a child's stdin) is not ours to hide: re-raised.
    """
    try:
        try:
            code = main()
        except SystemExit:   # argparse's --help and --version, or sys.exit() in a command
            sys.stdout.flush()
            raise
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        if not _stdout_closed():
            raise
        # As the Python docs advise (library/signal.html, "Note on SIGPIPE"): stdout now goes to
        # /dev/null, so the interpreter's own flush at exit has nowhere to fail.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return CLOSED_STDOUT_EXIT


def _stdout_closed() -> bool:
    """Whether stdout's reader has gone: poll reports an error (a pipe) or a hang-up (a socket)."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):   # replaced by something without a descriptor
        return False
    if not hasattr(select, "poll"):   # pragma: no cover - Windows: no poll; EPIPE there is the pipe's
        return True
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))
