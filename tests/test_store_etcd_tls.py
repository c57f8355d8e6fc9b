"""The etcd store over TLS, against a real etcd that requires client certificates.

A throwaway CA (trustme) signs the member's certificate (for 127.0.0.1) and two client
certificates; a second, unrelated CA stands for "someone else's" certificates. Then: the
store works through the URL form a deployment uses, a control plane runs on it, and every
way of getting TLS wrong is a StoreError that says what happened, not a hang.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import aclosing
from pathlib import Path

import pytest
import trustme

from controlplane.store import StoreError, open_store
from controlplane.store.etcd import EtcdStore
from megarouter.admin_client import admin_channel
from megarouter.grpc_tls import ClientTls
from megarouter.v1 import admin_pb2, admin_pb2_grpc, routing_pb2
from tests.etcd_cluster import EtcdCluster, MemberTls, start_or_skip
from tests.harness import start_service

try:
    from store_contract import next_event
except ImportError:  # tests/ imported as a package
    from tests.store_contract import next_event


class Pki:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        ca = trustme.CA()
        self.ca = self._write("ca.pem", ca.cert_pem.bytes())
        server = ca.issue_cert("127.0.0.1", "localhost")
        self.server_cert = self._write("server.pem", b"".join(blob.bytes() for blob in server.cert_chain_pems))
        self.server_key = self._write("server.key", server.private_key_pem.bytes())
        client = ca.issue_cert("megarouter-controlplane")
        self.client_cert = self._write("client.pem", b"".join(blob.bytes() for blob in client.cert_chain_pems))
        self.client_key = self._write("client.key", client.private_key_pem.bytes())
        stranger = trustme.CA()
        self.other_ca = self._write("other-ca.pem", stranger.cert_pem.bytes())
        foreign = stranger.issue_cert("intruder")
        self.foreign_cert = self._write("foreign.pem", b"".join(blob.bytes() for blob in foreign.cert_chain_pems))
        self.foreign_key = self._write("foreign.key", foreign.private_key_pem.bytes())

    def _write(self, name: str, data: bytes) -> str:
        path = self.dir / name
        path.write_bytes(data)
        path.chmod(0o600)
        return str(path)

    def url(self, cluster: EtcdCluster, prefix: str, **overrides: str) -> str:
        parameters = {"cacert": self.ca, "cert": self.client_cert, "key": self.client_key, **overrides}
        query = "&".join(f"{name}={value}" for name, value in parameters.items() if value)
        return f"etcd://{cluster.endpoints[0]}{prefix}?{query}"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def cluster(pki: Pki) -> Iterator[EtcdCluster]:
    tls = MemberTls(pki.ca, pki.server_cert, pki.server_key, client_cert_auth=True,
                    client_cert_file=pki.client_cert, client_key_file=pki.client_key)
    started = start_or_skip(1, tls=tls)
    yield started
    started.stop()


async def test_the_store_works_over_tls_with_a_client_certificate(pki: Pki, cluster: EtcdCluster) -> None:
    store = await open_store(pki.url(cluster, "/tls-basic"))
    try:
        assert isinstance(store, EtcdStore)
        lease = await store.grant_lease(60)
        async with aclosing(store.watch("/k/", 0)) as events:
            revision = await store.put("/k/a", b"over tls", lease=lease)
            event = await next_event(events)
        assert (event.key, event.value, event.revision) == ("/k/a", b"over tls", revision)
        assert await store.commit([("/k/a", revision)], [("/k/b", b"2")]) > revision
        await store.revoke_lease(lease)
        assert await store.get("/k/a") is None
    finally:
        await store.close()


@pytest.mark.parametrize("what", ["no client certificate", "a certificate from another CA", "plain text",
                                  "the wrong CA"])
async def test_tls_mistakes_are_store_errors(pki: Pki, cluster: EtcdCluster, what: str) -> None:
    endpoint = cluster.endpoints[0]
    settings = {
        "no client certificate": ClientTls(ca_file=pki.ca),
        "a certificate from another CA": ClientTls(pki.ca, pki.foreign_cert, pki.foreign_key),
        "plain text": None,
        "the wrong CA": ClientTls(pki.other_ca, pki.client_cert, pki.client_key),
    }[what]
    with pytest.raises(StoreError, match="TLS") as failure:
        await EtcdStore.open([endpoint], tls=settings, timeout_s=1.0)
    assert endpoint in str(failure.value)


async def test_tls_settings_are_checked_before_connecting(pki: Pki, cluster: EtcdCluster, tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="cannot read"):
        await EtcdStore.open(cluster.endpoints, tls=ClientTls(ca_file=str(tmp_path / "missing.pem")))
    with pytest.raises(StoreError, match="its key"):
        await EtcdStore.open(cluster.endpoints, tls=ClientTls(ca_file=pki.ca, cert_file=pki.client_cert))


async def test_a_control_plane_runs_on_etcd_over_tls(pki: Pki, cluster: EtcdCluster, tmp_path: Path) -> None:
    controlplane = await start_service("cp-tls", [
        "controlplane", "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
        "--store", pki.url(cluster, "/tls-cp"),
    ], tmp_path / "logs")
    try:
        async with admin_channel(f"127.0.0.1:{controlplane.port}") as channel:
            admin = admin_pb2_grpc.AdminStub(channel)
            put = await admin.PutModel(routing_pb2.Model(name="tls-model", context_window=1000))
            assert (await admin.GetModel(admin_pb2.GetRequest(name="tls-model"))).context_window == 1000
            replicas = await admin.ListControlPlanes(admin_pb2.ListControlPlanesRequest())
            assert replicas.leader_id == replicas.answered_by  # elected through a lease over TLS
        assert put.revision > 0
    finally:
        await controlplane.stop()
