"""Connecting to the admin API with an operator token.

The token comes from, in order: an explicit value (`--token`), the
`MEGAROUTER_ADMIN_TOKEN` environment variable, the file named by
`MEGAROUTER_ADMIN_TOKEN_FILE`, or the file a local control plane writes on
first start (`./.megarouter/admin-token`).
"""

from __future__ import annotations

import os
from pathlib import Path

import grpc

from megarouter.grpc_tls import ClientTls, control_plane_channel

DEFAULT_TOKEN_FILES = (Path(".megarouter/admin-token"), Path(".megarouter/store/admin-token"))


def resolve_token(explicit: str | None = None) -> str | None:
    if explicit:
        return explicit
    if os.environ.get("MEGAROUTER_ADMIN_TOKEN"):
        return os.environ["MEGAROUTER_ADMIN_TOKEN"]
    candidates = [Path(os.environ["MEGAROUTER_ADMIN_TOKEN_FILE"])] if os.environ.get("MEGAROUTER_ADMIN_TOKEN_FILE") \
        else list(DEFAULT_TOKEN_FILES)
    for path in candidates:
        try:
            return path.read_text().strip() or None
        except OSError:
            continue
    return None


class _BearerToken(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, token: str) -> None:
        self._metadata = (("authorization", f"Bearer {token}"),)

    async def intercept_unary_unary(self, continuation, details, request):
        metadata = tuple(details.metadata or ()) + self._metadata
        details = grpc.aio.ClientCallDetails(details.method, details.timeout, metadata, details.credentials,
                                             details.wait_for_ready)
        return await continuation(details, request)


def admin_channel(address: str, token: str | None = None, options=None,
                  tls: ClientTls | None = None) -> grpc.aio.Channel:
    """A channel whose unary calls carry the operator token (if any); over TLS when `tls`
    or the MEGAROUTER_CONTROL_PLANE_CA/_CERT/_KEY environment says so."""
    token = resolve_token(token)
    interceptors = [_BearerToken(token)] if token else None
    return control_plane_channel(address, tls or ClientTls.from_env(), options=options, interceptors=interceptors)
