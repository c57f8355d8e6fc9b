"""Start and stop real etcd processes for tests: one node or a small cluster on loopback.

Ports are picked at run time (etcd cannot bind port 0): a free port is found by binding a
socket and closing it, then etcd is started on it; if another process grabbed the port in
between, etcd exits with "address already in use" and the whole start is retried on new ports.
Data lives in a temporary directory (on /dev/shm when available, so fsync costs nothing).
Processes are stopped by PID: SIGTERM, then SIGKILL after a grace period; anything still
running when the interpreter exits is killed.

    cluster = EtcdCluster.start(size=3)
    try:
        store = await EtcdStore.open(cluster.endpoints)
        cluster.members[0].kill()          # SIGKILL: a crash
        cluster.members[0].restart()       # same data dir and ports, rejoins the cluster
    finally:
        cluster.stop()
"""

from __future__ import annotations

import atexit
import itertools
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ETCD_DEFAULT_PATH = "/usr/bin/etcd"
INSTALL_HINT = "install it with scripts/install_etcd.sh (Debian package etcd-server)"

# Fast elections so that losing a leader costs well under a second in chaos tests.
_HEARTBEAT_MS = 50
_ELECTION_MS = 500
_START_ATTEMPTS = 5
_HEALTH_POLL_S = 0.05

_running: dict[int, subprocess.Popen[bytes]] = {}
_names = itertools.count()


class EtcdUnavailable(RuntimeError):
    """No etcd binary on this machine."""


class EtcdStartError(RuntimeError):
    """etcd did not start or become healthy; the message ends with its log."""


def etcd_binary() -> str | None:
    """The etcd executable: $ETCD_BINARY, else /usr/bin/etcd, else etcd on PATH."""
    for candidate in (os.environ.get("ETCD_BINARY"), ETCD_DEFAULT_PATH, shutil.which("etcd")):
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def require_etcd_binary() -> str:
    binary = etcd_binary()
    if binary is None:
        raise EtcdUnavailable(f"no etcd binary at {ETCD_DEFAULT_PATH} or on PATH; {INSTALL_HINT}")
    return binary


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _free_ports(count: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < count:
        ports.add(free_port())
    return list(ports)


def _temp_root() -> str | None:
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None


@dataclass(frozen=True)
class MemberTls:
    """PEM files for a cluster that serves clients over TLS: its CA, the members' certificate
    (valid for 127.0.0.1), and whether clients must present a certificate signed by the CA."""

    ca_file: str
    cert_file: str
    key_file: str
    client_cert_auth: bool = True
    # The certificate the health check presents (required with client_cert_auth).
    client_cert_file: str | None = None
    client_key_file: str | None = None


@dataclass
class EtcdMember:
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    log_path: Path
    initial_cluster: str = ""
    cluster_token: str = ""
    binary: str = ETCD_DEFAULT_PATH
    tls: MemberTls | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _started_once: bool = field(default=False, repr=False)

    @property
    def endpoint(self) -> str:
        """host:port for clients."""
        return f"127.0.0.1:{self.client_port}"

    @property
    def client_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.endpoint}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def launch(self) -> None:
        """Start the process (a restart reuses the data dir and rejoins the existing cluster)."""
        if self.alive():
            raise RuntimeError(f"etcd member {self.name} is already running (pid {self.pid})")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        state = "existing" if self._started_once else "new"
        args = [
            self.binary,
            "--name", self.name,
            "--data-dir", str(self.data_dir),
            "--listen-client-urls", self.client_url,
            "--advertise-client-urls", self.client_url,
            "--listen-peer-urls", self.peer_url,
            "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", self.initial_cluster,
            "--initial-cluster-state", state,
            "--initial-cluster-token", self.cluster_token,
            "--heartbeat-interval", str(_HEARTBEAT_MS),
            "--election-timeout", str(_ELECTION_MS),
            "--logger", "zap",
            "--log-outputs", "stderr",
            "--log-level", "warn",
        ]  # fmt: skip
        if self.tls is not None:
            args += ["--cert-file", self.tls.cert_file, "--key-file", self.tls.key_file,
                     "--trusted-ca-file", self.tls.ca_file]
            if self.tls.client_cert_auth:
                args.append("--client-cert-auth")
        # Settings from the environment (ETCD_*) would override the flags above.
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
                start_new_session=True,  # a ^C to the test run is not delivered to etcd too
            )
        self._started_once = True
        _running[self.process.pid] = self.process

    def restart(self, timeout_s: float = 20.0) -> None:
        """Start a stopped or killed member again and wait until it is healthy."""
        self.launch()
        self.wait_healthy(timeout_s)

    def healthy(self) -> bool:
        context = None
        if self.tls is not None:
            context = ssl.create_default_context(cafile=self.tls.ca_file)
            if self.tls.client_cert_file:
                context.load_cert_chain(self.tls.client_cert_file, self.tls.client_key_file)
        try:
            with urllib.request.urlopen(f"{self.client_url}/health", timeout=1.0, context=context) as response:
                return json.loads(response.read()).get("health") in (True, "true")
        except (OSError, ValueError, urllib.error.URLError):
            return False

    def wait_healthy(self, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.healthy():
            if not self.alive():
                raise EtcdStartError(f"etcd member {self.name} exited ({self._exit_text()})\n{self.log_tail()}")
            if time.monotonic() >= deadline:
                raise EtcdStartError(f"etcd member {self.name} not healthy after {timeout_s:.0f}s\n{self.log_tail()}")
            time.sleep(_HEALTH_POLL_S)

    def _exit_text(self) -> str:
        return f"exit code {self.process.returncode}" if self.process else "never started"

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def port_collision(self) -> bool:
        return not self.alive() and "address already in use" in self.log_tail(50)

    def kill(self) -> None:
        """SIGKILL: the member crashes without any shutdown."""
        self.stop(grace_s=0.0)

    def stop(self, grace_s: float = 5.0) -> None:
        """SIGTERM, then SIGKILL if it is still running after grace_s; waits for the exit."""
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            try:
                os.kill(process.pid, signal.SIGTERM if grace_s > 0 else signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                process.wait(timeout=grace_s if grace_s > 0 else 10.0)
            except subprocess.TimeoutExpired:
                try:
                    os.kill(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                process.wait(timeout=10.0)
        _running.pop(process.pid, None)


@dataclass
class EtcdCluster:
    members: list[EtcdMember]
    base_dir: Path
    _own_dir: bool = True

    @property
    def endpoints(self) -> list[str]:
        """Client endpoints (host:port) of all members, in member order."""
        return [member.endpoint for member in self.members]

    def member_for(self, endpoint: str) -> EtcdMember:
        for member in self.members:
            if member.endpoint == endpoint:
                return member
        raise KeyError(endpoint)

    @classmethod
    def start(
        cls, size: int = 1, *, base_dir: str | os.PathLike[str] | None = None, timeout_s: float = 30.0,
        tls: MemberTls | None = None,
    ) -> EtcdCluster:
        """Start size members on free loopback ports and wait until every one is healthy.

        Raises EtcdUnavailable without an etcd binary, EtcdStartError if it cannot start.
        """
        if size < 1:
            raise ValueError("a cluster needs at least one member")
        binary = require_etcd_binary()
        own_dir = base_dir is None
        root = Path(tempfile.mkdtemp(prefix="megarouter-etcd-", dir=_temp_root())) if own_dir else Path(base_dir)
        last_error: EtcdStartError | None = None
        try:
            for attempt in range(_START_ATTEMPTS):
                cluster = cls._launch(binary, size, root / f"try{attempt}", own_dir, tls)
                try:
                    deadline = time.monotonic() + timeout_s
                    for member in cluster.members:
                        member.wait_healthy(max(0.1, deadline - time.monotonic()))
                    cluster.base_dir = root
                    return cluster
                except EtcdStartError as exc:
                    collided = any(member.port_collision() for member in cluster.members)
                    cluster._stop_members()
                    if not collided:
                        raise
                    last_error = exc  # another process took a port: retry on new ones
            raise EtcdStartError(f"no free ports after {_START_ATTEMPTS} attempts: {last_error}")
        except BaseException:
            if own_dir:
                shutil.rmtree(root, ignore_errors=True)
            raise

    @classmethod
    def _launch(cls, binary: str, size: int, root: Path, own_dir: bool, tls: MemberTls | None) -> EtcdCluster:
        root.mkdir(parents=True, exist_ok=True)
        ports = _free_ports(2 * size)
        serial = next(_names)
        members = [
            EtcdMember(
                name=f"m{i}",
                client_port=ports[2 * i],
                peer_port=ports[2 * i + 1],
                data_dir=root / f"m{i}.etcd",
                log_path=root / f"m{i}.log",
                binary=binary,
                tls=tls,
            )
            for i in range(size)
        ]
        initial = ",".join(f"{m.name}={m.peer_url}" for m in members)
        token = f"megarouter-test-{os.getpid()}-{serial}-{uuid.uuid4().hex[:8]}"
        cluster = cls(members, root, own_dir)
        for member in members:
            member.initial_cluster = initial
            member.cluster_token = token
        try:
            for member in members:
                member.launch()
        except BaseException:
            cluster._stop_members()
            raise
        return cluster

    def _stop_members(self) -> None:
        for member in self.members:
            member.stop()

    def stop(self) -> None:
        """Stop every member (SIGTERM, then SIGKILL) and remove the data, if this created it."""
        self._stop_members()
        if self._own_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> EtcdCluster:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _kill_leftovers() -> None:
    for pid, process in list(_running.items()):
        if process.poll() is None:
            try:
                os.kill(pid, signal.SIGKILL)
                process.wait(timeout=5)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
    _running.clear()


atexit.register(_kill_leftovers)


def start_or_skip(size: int, tls: MemberTls | None = None) -> EtcdCluster:
    """A cluster for a test; without an etcd binary the test skips, unless
    MEGAROUTER_REQUIRE_ETCD=1 (set in CI) makes that a failure."""
    import pytest  # only tests call this

    try:
        return EtcdCluster.start(size, tls=tls)
    except EtcdUnavailable as exc:
        if os.environ.get("MEGAROUTER_REQUIRE_ETCD", "") not in ("", "0"):
            pytest.fail(f"MEGAROUTER_REQUIRE_ETCD is set but {exc}")
        pytest.skip(str(exc))
