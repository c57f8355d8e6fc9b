"""The proxy's HTTP server: aiohttp's, hardened for clients that misbehave.

aiohttp's defaults suit a trusted network, not a gateway's public port:

- **Time limits.** It keeps an idle connection for an hour and has no limit on
  how long a request's head or body may take, so 200 sockets sending headers
  at one byte a second, or bodies shorter than their Content-Length, hold
  connections forever. Here: the head must arrive within `header_timeout_s`
  of its first byte, a body may not pause longer than `body_timeout_s`
  (`read_body`, answered 408 `request_timeout`), and an idle keep-alive
  connection is closed after `keepalive_timeout_s`.
- **Size limits** on the request line, each header and the number of headers
  (431 when exceeded).
- **Errors in our format.** A request it cannot parse is answered with a
  plain-text body that quotes the offending bytes; here every such error is
  an OpenAI-shaped JSON error naming only the kind of problem.
- **No request bytes in logs.** It logs the parser's exception — which
  carries raw request bytes: prompt text, bearer keys — at ERROR. Here
  framing errors are logged as a class name and the peer address only, and
  `megarouter.runtime.setup_logging` strips whatever any aiohttp logger
  would still attach (see `ContentFreeLogs` there).
- **No version banner**: the `Server` header says `megarouter`, not the
  Python and aiohttp versions.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import aiohttp.web_response
from aiohttp import http_exceptions, web, web_protocol, web_server
from prometheus_client import Counter

from dataplane.errors import ApiError, ClientError, error_format_for

log = logging.getLogger("megarouter.proxy.http")

# aiohttp adds `Server: Python/3.x aiohttp/3.x` to every response unless one is set; it reads
# this module global when it prepares the headers, so one assignment covers every response.
aiohttp.web_response.SERVER_SOFTWARE = "megarouter"

CLOSED = Counter("megarouter_http_connections_closed_total",
                 "Client connections closed by the proxy for misbehaving, by reason", ["reason"])
MALFORMED = Counter("megarouter_http_malformed_requests_total",
                    "Requests the HTTP parser refused, by kind", ["kind"])


@dataclass(frozen=True)
class HttpLimits:
    header_timeout_s: float = 10.0      # from a request's first byte to the end of its head
    body_timeout_s: float = 30.0        # longest pause while a body arrives
    keepalive_timeout_s: float = 75.0   # an idle connection is closed after this
    max_line_bytes: int = 8190          # request line and each header line
    max_field_bytes: int = 8190         # each header value
    max_headers: int = 100

    def runner_kwargs(self) -> dict:
        return {"keepalive_timeout": self.keepalive_timeout_s, "max_line_size": self.max_line_bytes,
                "max_field_size": self.max_field_bytes, "max_headers": self.max_headers}


# Parser errors, by class, as the client is told and the log records them: a kind, never bytes.
_TOO_LARGE = (http_exceptions.LineTooLong,)


def _malformed(exc: BaseException | None) -> tuple[int, str, str]:
    """(status, code, message) for a request the parser refused."""
    kind = type(exc).__name__ if exc is not None else "BadHttpMessage"
    if isinstance(exc, _TOO_LARGE) or "Too many headers" in str(getattr(exc, "message", "")):
        return 431, "request_header_too_large", "The request's headers are too large or too many."
    return 400, "malformed_request", f"The HTTP request could not be parsed ({kind})."


class HardenedRequestHandler(web_protocol.RequestHandler):
    """aiohttp's per-connection protocol, plus a head timeout and content-free errors."""

    def __init__(self, manager: web_server.Server, *, limits: HttpLimits, **kwargs) -> None:
        super().__init__(manager, **kwargs)
        self._limits = limits
        self._awaiting_head = True
        self._head_timer: asyncio.TimerHandle | None = None

    def data_received(self, data: bytes) -> None:
        if self._awaiting_head and self._head_timer is None:
            self._head_timer = self._loop.call_later(self._limits.header_timeout_s, self._head_timed_out)
        parsed = self._request_count
        super().data_received(data)
        if self._request_count != parsed:  # a whole head arrived
            self._cancel_head_timer()
            self._awaiting_head = False

    async def finish_response(self, request, resp, start_time):
        try:
            return await super().finish_response(request, resp, start_time)
        finally:
            self._awaiting_head = not self._messages  # the next head's clock starts with its first byte

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._awaiting_head and not self._force_close:
            CLOSED.labels("header_timeout").inc()
            self.force_close()

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def connection_lost(self, exc: BaseException | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def log_exception(self, *args, **kwargs) -> None:
        exc = kwargs.get("exc_info")
        kind = type(exc).__name__ if isinstance(exc, BaseException) else "error"
        log.error("HTTP server error (%s); request content is not logged", kind)

    def handle_error(self, request, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if request.writer.output_size > 0:
            raise ConnectionError("a response was already started; the connection is dropped")
        if status == 400 or isinstance(exc, http_exceptions.HttpProcessingError):
            status, code, text = _malformed(exc)
            MALFORMED.labels(code).inc()
            log.info("refused a malformed request from %s (%s)", request.remote, type(exc).__name__)
            error = ApiError(status, text, code=code)
        elif status == 504:
            error = ApiError(504, "The request took too long.", type="server_error", code="timeout")
        else:
            log.error("HTTP server error %d (%s); request content is not logged", status,
                      type(exc).__name__ if exc is not None else "no exception")
            error = ApiError(status, "internal gateway error", type="server_error", code="internal_error")
        response = error_format_for(request.path).response(error)
        response.force_close()
        return response


class _HardenedServer(web_server.Server):
    """aiohttp's Server, making our protocol for each connection."""

    limits: HttpLimits

    def __call__(self) -> web_protocol.RequestHandler:
        return HardenedRequestHandler(self, loop=self._loop, limits=self.limits, **self._kwargs)


class HardenedAppRunner(web.AppRunner):
    def __init__(self, app: web.Application, limits: HttpLimits, **kwargs) -> None:
        super().__init__(app, **limits.runner_kwargs(), **kwargs)
        self._limits = limits

    async def _make_server(self) -> web_server.Server:
        # aiohttp builds its Server inside Application._make_handler (startup, freezing,
        # handler arguments); we keep all of that and swap in the subclass that differs only in
        # which protocol it makes per connection.
        server = await super()._make_server()
        server.__class__ = _HardenedServer
        server.limits = self._limits  # type: ignore[attr-defined]
        return server


async def read_body(request: web.Request, max_bytes: int, pause_s: float) -> bytes:
    """The whole body, refusing one that pauses longer than `pause_s` between reads (408), is
    larger than `max_bytes` (413), or whose Content-Encoding does not decode (400)."""
    if request.content_length is not None and request.content_length > max_bytes:
        raise ClientError(413, f"Request body too large: the limit is {max_bytes} bytes.", code="request_too_large",
                       close=True)
    body = bytearray()
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(pause_s) as deadline:
            while chunk := await request.content.readany():
                body += chunk
                if len(body) > max_bytes:
                    raise ClientError(413, f"Request body too large: the limit is {max_bytes} bytes.",
                                   code="request_too_large", close=True)
                deadline.reschedule(loop.time() + pause_s)
    except TimeoutError:
        request.content.feed_eof()  # nothing more is read from it: close once answered, no lingering
        CLOSED.labels("body_timeout").inc()
        raise ClientError(408, f"The request body stopped arriving for {pause_s:g}s.", code="request_timeout",
                       close=True) from None
    except (web_protocol.RequestPayloadError, http_exceptions.HttpProcessingError) as exc:
        # The rest of this body is unreadable: end it here, so the server does not try to drain
        # it after answering, and close the connection once the answer is written.
        request.content.feed_eof()
        cause = exc.__cause__ or exc
        kind = type(cause).__name__
        if isinstance(cause, http_exceptions.ContentEncodingError) or "encoding" in str(cause).lower():
            raise ClientError(400, f"The request body does not match its Content-Encoding ({kind}).",
                           param="Content-Encoding", code="invalid_content_encoding", close=True) from None
        raise ClientError(400, f"The request body could not be read ({kind}).", code="malformed_request",
                       close=True) from None
    return bytes(body)
