"""`megarouterctl get models | head -1`: the CLIs stop quietly when their reader goes away.

Exit status 141 (128 + SIGPIPE) as for `cat` or `ls` (megarouter.runtime.CLOSED_STDOUT_EXIT),
and nothing on stderr: no BrokenPipeError traceback, no "Exception ignored" from the final flush.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from megarouter.admin_client import admin_channel
from megarouter.manifest import apply_resources, parse_manifest
from megarouter.runtime import CLOSED_STDOUT_EXIT
from megarouter.v1 import admin_pb2_grpc
from tests.conftest import start_controlplane

ROOT = Path(__file__).resolve().parent.parent
# More than twice a Linux pipe's default capacity (64 KiB): after the reader takes its first line (one
# 8 KiB read) and closes, the CLI is still writing, so it really meets EPIPE mid-output.
LONG_OUTPUT = 128 * 1024
NOISE = ("Traceback", "BrokenPipeError", "Exception ignored")
# stdout block-buffered, as in a user's shell; and unbuffered (PYTHONUNBUFFERED=1), where every print
# writes through at once (argparse then swallows the error of its own help and exits 0).
BUFFERED = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
UNBUFFERED = {**BUFFERED, "PYTHONUNBUFFERED": "1"}


def _bulk_models(count: int) -> str:
    # Long names widen the NAME column of every row, catalog models' included.
    rows = [f"  - {{name: bulk-{i:04d}-{'x' * 110}, input_price_per_mtok: 1, output_price_per_mtok: 2, "
            f"context_window: 8192}}" for i in range(count)]
    return "models:\n" + "\n".join(rows) + "\n"


def _first_line_then_close(argv: list[str], env: dict[str, str]) -> tuple[str, int, str]:
    """Run `argv` into a pipe, read its first line, close the pipe, as `| head -1` does."""
    process = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert process.stdout is not None and process.stderr is not None
    first = process.stdout.readline().decode()
    process.stdout.close()
    try:
        stderr = process.stderr.read().decode()
        code = process.wait(timeout=60)
    finally:
        process.kill()
    return first, code, stderr


async def test_ctl_get_models_into_a_reader_that_closes_after_one_line(tmp_path: Path) -> None:
    controlplane = await start_controlplane(tmp_path)
    try:
        address = f"127.0.0.1:{controlplane.port}"
        async with admin_channel(address) as channel:
            await apply_resources(admin_pb2_grpc.AdminStub(channel), parse_manifest(_bulk_models(200)))
        argv = [sys.executable, "-m", "megarouter.ctl", "--server", address, "get", "models"]

        full = await asyncio.to_thread(subprocess.run, argv, cwd=ROOT, capture_output=True, timeout=60)
        assert full.returncode == 0, full.stderr
        assert len(full.stdout) > LONG_OUTPUT, "the output must overflow the pipe for the test to mean anything"

        for env in (BUFFERED, UNBUFFERED):
            first, code, stderr = await asyncio.to_thread(_first_line_then_close, argv, env)
            assert first.split()[:2] == ["NAME", "INPUT_PRICE_PER_MTOK"]
            assert not [word for word in NOISE if word in stderr], stderr
            assert stderr == ""
            assert code == CLOSED_STDOUT_EXIT == 141
    finally:
        await controlplane.stop()


@pytest.mark.parametrize("argv", [
    ["megarouter.ctl", "whatif", "--profile", "support-chat"],   # offline; output fits the buffer: flushed at exit
    ["megarouter.ctl", "--help"],                                 # argparse prints, then raises SystemExit
    ["megarouter", "--help"],
    ["megarouter", "--version"],
], ids=lambda argv: " ".join(argv))
@pytest.mark.parametrize("buffered", [True, False], ids=["buffered", "unbuffered"])
def test_short_output_into_a_pipe_already_closed(argv: list[str], buffered: bool) -> None:
    read, write = os.pipe()
    os.close(read)   # no reader at all: the first write (buffered: the final flush) meets EPIPE
    try:
        result = subprocess.run([sys.executable, "-m", *argv], cwd=ROOT, stdout=write, stderr=subprocess.PIPE,
                                text=True, timeout=120, env=BUFFERED if buffered else UNBUFFERED)
    finally:
        os.close(write)
    assert not [word for word in NOISE if word in result.stderr], result.stderr
    assert result.stderr == ""
    if buffered or argv[-1] not in ("--help", "--version"):
        assert result.returncode == CLOSED_STDOUT_EXIT
    else:
        assert result.returncode == 0   # argparse dropped its own unwritable help: nothing left to fail


def test_a_full_pipe_is_not_a_closed_one() -> None:
    # The same commands into a reader that reads everything: unchanged output and status.
    result = subprocess.run([sys.executable, "-m", "megarouter", "--version"], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.startswith("megarouter ") and result.stderr == ""
    result = subprocess.run([sys.executable, "-m", "megarouter"], cwd=ROOT, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2 and result.stdout.startswith("usage: megarouter")


def test_a_broken_pipe_elsewhere_is_not_hidden() -> None:
    # EPIPE from a socket or a child's stdin is a real error: stdout is fine, so it is re-raised.
    code = ("import sys\nfrom megarouter.runtime import exit_quietly_on_closed_stdout\n"
            "def main():\n    print('some output')\n    raise BrokenPipeError(32, 'from a socket')\n"
            "sys.exit(exit_quietly_on_closed_stdout(main))\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                            env=BUFFERED)
    assert result.returncode == 1 and result.stdout == "some output\n"
    assert "BrokenPipeError: [Errno 32] from a socket" in result.stderr
