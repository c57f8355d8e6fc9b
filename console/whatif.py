"""The what-if page's engine: `megarouterctl whatif`, run as a child process.

The replay runs the data plane's router, which the console may not import (it is a client
of the admin API, like megarouterctl — tests/test_layering.py). So it runs the same command
an operator would, as the viewer: their session credential goes in the child's environment
(never on its command line, where `ps` would show it), an uploaded usage log goes in on
standard input (never to disk: a log may carry prompt text), and the JSON report comes back
on standard output.
"""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass
from typing import Any

import orjson

from megarouter.whatif import WORKLOADS_DIR

# A replay takes a few seconds of CPU; more at once would slow the console for everyone.
_CONCURRENT_RUNS = asyncio.Semaphore(2)
TIMEOUT_S = 120.0
MAX_LOG_BYTES = 2 * 1024 * 1024
MAX_SAMPLES = 50_000


# Environment the child keeps (plus MEGAROUTER_CONTROL_PLANE_* for TLS, PYTHON*, LC_*).
_PASSED_ENV = {"PATH", "HOME", "LANG", "TMPDIR", "VIRTUAL_ENV", "SSL_CERT_FILE", "SSL_CERT_DIR"}


class WhatIfFailed(Exception):
    """The replay refused its input (the message is megarouterctl's, naming the problem)."""


def builtin_profiles() -> list[str]:
    return sorted(path.stem for path in WORKLOADS_DIR.glob("*.yaml") if not path.stem.startswith("seed"))


@dataclass
class WhatIfRequest:
    profile: str = ""
    log: bytes = b""
    log_days: float | None = None
    route: str = ""
    samples: int | None = None

    def argv(self) -> list[str]:
        argv = ["whatif", "-o", "json"]
        if self.log:
            argv += ["--log", "-"]
            if self.log_days is not None:
                argv += ["--log-days", repr(self.log_days)]
        else:
            argv += ["--profile", self.profile]
            if self.samples is not None:
                argv += ["--samples", str(self.samples)]
        if self.route:
            argv += ["--route", self.route]
        return argv


def child_env(credential: str) -> dict[str, str]:
    """Only what megarouterctl needs, and the viewer's credential: the console's own secrets
    (its service token, the OIDC client secret) and everything else stay out of the child."""
    env = {name: value for name, value in os.environ.items()
           if name in _PASSED_ENV or name.startswith(("MEGAROUTER_CONTROL_PLANE_", "PYTHON", "LC_"))}
    env["MEGAROUTER_ADMIN_TOKEN"] = credential
    return env


async def run_whatif(control_plane: str, credential: str, request: WhatIfRequest) -> dict[str, Any]:
    env = child_env(credential)
    async with _CONCURRENT_RUNS:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "megarouter.ctl", "--server", control_plane, *request.argv(),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
        try:
            stdout, stderr = await asyncio.wait_for(process.communicate(request.log), TIMEOUT_S)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise WhatIfFailed(f"the replay took longer than {TIMEOUT_S:.0f} s; use fewer samples") from None
    if process.returncode != 0:
        lines = [line for line in stderr.decode(errors="replace").splitlines() if line.strip()]
        message = lines[-1].removeprefix("error: ") if lines else f"exit status {process.returncode}"
        raise WhatIfFailed(message[:500])
    try:
        return orjson.loads(stdout)
    except orjson.JSONDecodeError:
        raise WhatIfFailed("the replay's report could not be read") from None
