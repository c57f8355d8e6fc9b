"""TLS for gRPC: the control plane's server certificate, and how clients — proxies and
megarouterctl reaching the control plane, the control plane reaching etcd — verify a server,
optionally with a client certificate of their own (mutual TLS).

Off unless configured: a local `megarouter up` talks plain text on loopback. Across a network
the admin API carries operator tokens, so production runs it with TLS:

    megarouter controlplane --tls-cert cp.pem --tls-key cp.key [--tls-client-ca clients-ca.pem]
    megarouter proxy --control-plane-ca ca.pem [--control-plane-cert me.pem --control-plane-key me.key]
    MEGAROUTER_CONTROL_PLANE_CA=ca.pem megarouterctl get routes
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from megarouter.runtime import env_default


class TlsConfigError(ValueError):
    """A TLS setting that cannot work: a missing file, a certificate without its key."""


def _read(path: str | None, what: str) -> bytes | None:
    if not path:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise TlsConfigError(f"cannot read the {what} {path}: {exc.strerror}") from None


def _pair(cert: str | None, key: str | None, what: str) -> tuple[bytes | None, bytes | None]:
    if bool(cert) != bool(key):
        raise TlsConfigError(f"the {what} needs both a certificate and its key")
    return _read(cert, f"{what} certificate"), _read(key, f"{what} key")


@dataclass(frozen=True)
class ClientTls:
    """How a client verifies its server (`ca_file`; None: the system's roots) and, for a
    server that requires it, the client's own certificate."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None

    @classmethod
    def from_settings(cls, ca: str | None, cert: str | None, key: str | None) -> ClientTls | None:
        """None (plain text) unless a CA or a client certificate is given. The files are read
        now, so a wrong path is a TlsConfigError at start-up, not an unreachable server later."""
        if not (ca or cert or key):
            return None
        tls = cls(ca or None, cert or None, key or None)
        tls.credentials()
        return tls

    @classmethod
    def from_env(cls) -> ClientTls | None:
        env = os.environ.get
        return cls.from_settings(env("MEGAROUTER_CONTROL_PLANE_CA"), env("MEGAROUTER_CONTROL_PLANE_CERT"),
                                 env("MEGAROUTER_CONTROL_PLANE_KEY"))

    def credentials(self) -> grpc.ChannelCredentials:
        cert, key = _pair(self.cert_file, self.key_file, "client")
        return grpc.ssl_channel_credentials(_read(self.ca_file, "control-plane CA"), key, cert)


def add_client_tls_arguments(parser: argparse.ArgumentParser, flag_prefix: str = "") -> None:
    """--{prefix}ca, --{prefix}cert, --{prefix}key, defaulting to MEGAROUTER_CONTROL_PLANE_*."""
    helps = {"ca": "CA file: talk TLS to the control plane, verified against it",
             "cert": "client certificate, for a control plane that requires one",
             "key": "the client certificate's key"}
    for name, text in helps.items():
        env = f"CONTROL_PLANE_{name.upper()}"
        parser.add_argument(f"--{flag_prefix}{name}", default=env_default(env, ""), help=f"{text} [MEGAROUTER_{env}]")


def client_tls_from_args(args: argparse.Namespace, flag_prefix: str = "") -> ClientTls | None:
    """The settings `add_client_tls_arguments` added, checked (TlsConfigError)."""
    attribute = flag_prefix.replace("-", "_")
    return ClientTls.from_settings(*(getattr(args, f"{attribute}{name}") for name in ("ca", "cert", "key")))


def control_plane_channel(
    address: str,
    tls: ClientTls | None,
    options: Sequence[tuple[str, Any]] | None = None,
    interceptors: Sequence[grpc.aio.ClientInterceptor] | None = None,
) -> grpc.aio.Channel:
    """A channel to a control plane: TLS when `tls` is set, plain text otherwise."""
    if tls is None:
        return grpc.aio.insecure_channel(address, options=options, interceptors=interceptors)
    return grpc.aio.secure_channel(address, tls.credentials(), options=options, interceptors=interceptors)


def server_credentials(cert_file: str, key_file: str, client_ca_file: str | None = None) -> grpc.ServerCredentials:
    """The control plane's certificate; with `client_ca_file`, every client must present a
    certificate signed by that CA."""
    cert, key = _pair(cert_file, key_file, "control plane's")
    client_ca = _read(client_ca_file, "client CA")
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )
