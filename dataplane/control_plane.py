"""How a proxy reaches the control plane: its addresses, TLS, and the proxy credential.

Discovery, Telemetry and Budgets all refuse a caller without a token bound to the
`proxy` role, so every call a proxy makes carries `metadata`. The credential comes
from MEGAROUTER_PROXY_TOKEN, else the file named by --proxy-token-file
(MEGAROUTER_PROXY_TOKEN_FILE), else the file a local control plane writes next to
its store; it is never logged.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import grpc

from megarouter.grpc_tls import ClientTls, control_plane_channel

CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    # Notice a control plane that vanished without closing the connection.
    ("grpc.keepalive_time_ms", 5000),
    ("grpc.keepalive_timeout_ms", 3000),
    ("grpc.keepalive_permit_without_calls", 1),
    # Reconnection pacing is ours (the clients' backoff), not the channel's.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]
# Where `megarouter controlplane` and `megarouter up` leave a generated proxy token.
DEFAULT_TOKEN_FILES = (Path(".megarouter/proxy-token"), Path(".megarouter/store/proxy-token"))


class CredentialError(ValueError):
    """No usable proxy credential."""


def resolve_proxy_token(token_file: str = "") -> str:
    """The proxy credential, or CredentialError saying where it was looked for."""
    secret = os.environ.get("MEGAROUTER_PROXY_TOKEN", "").strip()
    if secret:
        return secret
    candidates = [Path(token_file)] if token_file else list(DEFAULT_TOKEN_FILES)
    for path in candidates:
        try:
            secret = path.read_text().strip()
        except OSError:
            continue
        if secret:
            return secret
    where = token_file or " or ".join(str(path) for path in DEFAULT_TOKEN_FILES)
    raise CredentialError(f"no proxy credential: set MEGAROUTER_PROXY_TOKEN or --proxy-token-file "
                          f"(looked in {where})")


@dataclass(frozen=True)
class ControlPlaneLink:
    addresses: tuple[str, ...]
    token: str
    tls: ClientTls | None = None

    def __post_init__(self) -> None:
        if not self.addresses:
            raise ValueError("at least one control-plane address is required")

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),)

    def channel(self, address: str) -> grpc.aio.Channel:
        return control_plane_channel(address, self.tls, options=CHANNEL_OPTIONS)


REFUSALS = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)


async def call_status(call, error: grpc.aio.AioRpcError) -> tuple[grpc.StatusCode, str]:
    """The status a streaming call ended with. A write that races the server's refusal fails
    with INTERNAL ("Internal error from Core"); the call itself then holds the real status."""
    if error.code() is grpc.StatusCode.INTERNAL and call is not None and call.done():
        return await call.code(), await call.details()
    return error.code(), error.details() or ""


def describe_failure(code: grpc.StatusCode, details: str) -> str:
    """How a failed call is logged: a refusal says what to fix, anything else its code."""
    if code in REFUSALS:
        return f"{code.name}: {details} (check this proxy's credential: MEGAROUTER_PROXY_TOKEN or --proxy-token-file)"
    return code.name
