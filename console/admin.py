"""The console's side of the admin API: one channel, calls made with a credential.

Every call carries the credential it is given — the signed-in person's session, or (for
sign-in only) the console's own service token — never a default. gRPC failures become
`AdminError`s whose kind decides how a page shows them: a form error, a 403, a sign-in
redirect, or "the control plane is unavailable".
"""

from __future__ import annotations

import re
from typing import Any

import grpc

from megarouter.grpc_tls import ClientTls, control_plane_channel
from megarouter.v1 import admin_pb2_grpc

# How long a page waits for one admin call; the control plane answers on loopback in ms.
CALL_TIMEOUT_S = 10.0
# What a bearer credential may look like (ours are mr-<kind>-<urlsafe base64>).
_CREDENTIAL = re.compile(r"[\x21-\x7e]{1,512}")


class AdminError(Exception):
    """An admin call failed; `code` is the gRPC status, `message` its details."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def signed_out(self) -> bool:
        """The credential is no longer valid (session ended, idle, revoked)."""
        return self.code == grpc.StatusCode.UNAUTHENTICATED

    @property
    def denied(self) -> bool:
        return self.code == grpc.StatusCode.PERMISSION_DENIED

    @property
    def invalid(self) -> bool:
        """The request was wrong: shown next to the form that sent it."""
        return self.code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION,
                             grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.NOT_FOUND,
                             grpc.StatusCode.OUT_OF_RANGE)


class AdminGateway:
    def __init__(self, address: str, tls: ClientTls | None = None) -> None:
        self.address = address
        self._channel = control_plane_channel(address, tls or ClientTls.from_env())
        self._stub = admin_pb2_grpc.AdminStub(self._channel)

    async def call(self, method: str, request: Any, credential: str) -> Any:
        """`Admin.<method>(request)` as the holder of `credential`."""
        if not credential or not _CREDENTIAL.fullmatch(credential):
            # Also what a pasted token or a cookie with spaces, control or non-ASCII characters
            # gets: gRPC metadata could not carry it, and no credential we issue looks like that.
            raise AdminError(grpc.StatusCode.UNAUTHENTICATED, "not signed in")
        try:
            return await getattr(self._stub, method)(
                request, metadata=(("authorization", f"Bearer {credential}"),), timeout=CALL_TIMEOUT_S)
        except grpc.aio.AioRpcError as exc:
            raise AdminError(exc.code(), exc.details() or exc.code().name) from None

    async def close(self) -> None:
        await self._channel.close()
