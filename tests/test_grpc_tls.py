"""The control plane's gRPC port over TLS, with real processes: a proxy and megarouterctl
verify the server against a throwaway CA (trustme); with --tls-client-ca every client must
also present a certificate. Plain-text clients and wrong settings fail with a message."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
import trustme

from megarouter.admin_client import admin_channel
from megarouter.grpc_tls import ClientTls
from megarouter.manifest import apply_resources, parse_manifest
from megarouter.v1 import admin_pb2, admin_pb2_grpc
from tests.conftest import API_KEY, demo_manifest, start_sim
from tests.harness import Service, eventually, start_service


def write_pki(directory: Path) -> dict[str, str]:
    ca = trustme.CA()
    files: dict[str, bytes] = {"ca.pem": ca.cert_pem.bytes()}
    for name, identity in (("server", "127.0.0.1"), ("client", "megarouter-proxy")):
        issued = ca.issue_cert(identity)
        files[f"{name}.pem"] = b"".join(blob.bytes() for blob in issued.cert_chain_pems)
        files[f"{name}.key"] = issued.private_key_pem.bytes()
    paths = {}
    for name, data in files.items():
        (directory / name).write_bytes(data)
        paths[name] = str(directory / name)
    return paths


async def ctl(address: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MEGAROUTER_CONTROL_PLANE_")}
    return await asyncio.to_thread(subprocess.run, [
        sys.executable, "-m", "megarouter.ctl", "--server", address, *args,
    ], capture_output=True, text=True, timeout=60, env={**clean, **(env or {})})


async def start_tls_controlplane(tmp: Path, pki: dict[str, str], *extra: str) -> Service:
    return await start_service("cp-tls", [
        "controlplane", "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
        "--store", str(tmp / "store"), "--tls-cert", pki["server.pem"], "--tls-key", pki["server.key"], *extra,
    ], tmp / "logs")


async def test_proxy_and_ctl_reach_a_tls_control_plane(tmp_path: Path) -> None:
    pki = write_pki(tmp_path)
    sim = await start_sim(tmp_path)
    controlplane = await start_tls_controlplane(tmp_path, pki)
    address = f"127.0.0.1:{controlplane.port}"
    services = [sim, controlplane]
    try:
        async with admin_channel(address, tls=ClientTls(pki["ca.pem"])) as channel:
            admin = admin_pb2_grpc.AdminStub(channel)
            await apply_resources(admin, parse_manifest(demo_manifest(sim.port)))
            created = await admin.CreateApiKey(admin_pb2.CreateApiKeyRequest(name="k", secret=API_KEY))

        listing = await ctl(address, "--tls-ca", pki["ca.pem"], "get", "routes")
        assert listing.returncode == 0, listing.stderr
        assert "auto" in listing.stdout
        by_env = await ctl(address, "get", "routes", env={"MEGAROUTER_CONTROL_PLANE_CA": pki["ca.pem"]})
        assert by_env.returncode == 0, by_env.stderr
        plain = await ctl(address, "--timeout", "3", "get", "routes")
        assert plain.returncode != 0 and "Traceback" not in plain.stderr
        assert "plain text" in plain.stderr and "--tls-ca" in plain.stderr

        proxy = await start_service("proxy-tls", [
            "proxy", "--listen", "127.0.0.1:0", "--control-plane", address, "--node-id", "proxy-tls",
            "--control-plane-ca", pki["ca.pem"], "--cache-file", "", "--telemetry-interval", "1",
        ], tmp_path / "logs")
        services.append(proxy)
        async with aiohttp.ClientSession() as session:
            async def served() -> bool:
                async with session.post(f"http://127.0.0.1:{proxy.port}/v1/chat/completions",
                                        headers={"Authorization": f"Bearer {API_KEY}"},
                                        json={"model": "chat", "messages": [{"role": "user", "content": "hi"}]}) as r:
                    return r.status == 200
            await eventually(served, timeout=30, what="the proxy to get its table over TLS and serve")
        assert created.revision > 0
    finally:
        for service in reversed(services):
            await service.stop()


async def test_client_certificates_are_required_when_the_control_plane_asks(tmp_path: Path) -> None:
    pki = write_pki(tmp_path)
    controlplane = await start_tls_controlplane(tmp_path, pki, "--tls-client-ca", pki["ca.pem"])
    address = f"127.0.0.1:{controlplane.port}"
    try:
        without = await ctl(address, "--timeout", "3", "--tls-ca", pki["ca.pem"], "whoami")
        assert without.returncode != 0 and "--tls-cert/--tls-key" in without.stderr
        with_cert = await ctl(address, "--tls-ca", pki["ca.pem"], "--tls-cert", pki["client.pem"], "--tls-key",
                              pki["client.key"], "whoami")
        assert with_cert.returncode == 0, with_cert.stderr
        assert "token: bootstrap" in with_cert.stdout
    finally:
        await controlplane.stop()


async def test_tls_settings_that_cannot_work_are_refused_at_start(tmp_path: Path) -> None:
    pki = write_pki(tmp_path)
    started = await asyncio.to_thread(subprocess.run, [
        sys.executable, "-m", "megarouter", "controlplane", "--listen", "127.0.0.1:0", "--metrics-listen",
        "127.0.0.1:0", "--store", str(tmp_path / "store"), "--tls-cert", pki["server.pem"],
    ], capture_output=True, text=True, timeout=60)
    assert started.returncode == 1 and "needs both a certificate and its key" in started.stderr
    assert "Traceback" not in started.stderr
    missing = await ctl("127.0.0.1:1", "--tls-ca", str(tmp_path / "nope.pem"), "get", "routes")
    assert missing.returncode != 0 and "cannot read" in missing.stderr and "Traceback" not in missing.stderr
    proxy = await asyncio.to_thread(subprocess.run, [
        sys.executable, "-m", "megarouter", "proxy", "--listen", "127.0.0.1:0", "--control-plane", "127.0.0.1:1",
        "--control-plane-ca", pki["ca.pem"], "--control-plane-cert", pki["client.pem"], "--cache-file", "",
    ], capture_output=True, text=True, timeout=60)
    assert proxy.returncode == 1 and "needs both" in proxy.stderr


@pytest.fixture(autouse=True)
def _no_tls_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MEGAROUTER_CONTROL_PLANE_CA", "MEGAROUTER_CONTROL_PLANE_CERT", "MEGAROUTER_CONTROL_PLANE_KEY"):
        monkeypatch.delenv(name, raising=False)
