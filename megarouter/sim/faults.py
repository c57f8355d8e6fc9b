"""Scripted faults shared by every wire format: error draws, outages, delays and stalls.

Only *whether* and *when* something goes wrong lives here; each wire module
renders the failure in its own provider's error shape.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from megarouter.sim.common import SimState
from megarouter.sim.settings import SimSettings

# How often a stalled stream checks whether its client has gone away: aiohttp
# does not cancel handlers on disconnect by default, so it has to look.
_STALL_POLL_S = 0.05


class Dropped(web.Response):
    """Stands in for the response of a connection that was closed unanswered."""


def draw_fault(state: SimState) -> int | None:
    """The HTTP status of a scripted failure for this request, or None to answer normally."""
    settings = state.settings
    if settings.rate_limit_rate <= 0 and settings.error_rate <= 0:
        return None
    # One draw per request keeps each fault's share equal to its rate, and a
    # seeded run's pattern independent of which faults are switched on.
    draw = state.rng.random()
    if draw < settings.rate_limit_rate:
        return 429
    if draw < settings.rate_limit_rate + settings.error_rate:
        return settings.error_status
    return None


def drop_connection(request: web.Request) -> web.Response:
    # Closing before any byte is written makes aiohttp's own write fail with a
    # ConnectionError, which it treats as a client disconnect (debug-level
    # only): the client sees the socket close, the server logs no traceback.
    if request.transport is not None:
        request.transport.close()
    return Dropped(status=503)


async def pause(ms: float) -> None:
    if ms > 0:
        await asyncio.sleep(ms / 1000)


async def send_stream(request: web.Request, state: SimState, head: list[bytes], pieces: list[bytes],
                      tail: list[bytes], content_type: str = "text/event-stream") -> web.StreamResponse:
    """Stream pre-encoded events with the current ttft, pacing and stall settings.

    ``pieces`` are the per-token events: pacing spaces them out and
    ``stall_after_chunks`` counts them. ``head`` goes out with the first piece,
    ``tail`` after the last; a stalled stream never sends its tail.
    """
    settings = state.settings
    stall = settings.stall_after_chunks
    stalled = 0 <= stall < len(pieces)
    if stalled:
        pieces, tail = pieces[:stall], []

    resp = web.StreamResponse(headers={"Content-Type": content_type, "Cache-Control": "no-cache"})
    try:
        await resp.prepare(request)
        await pause(settings.ttft_ms)
        if settings.tokens_per_second <= 0:
            # Unpaced: one write is much cheaper, and what benchmarks want.
            await resp.write(b"".join(head + pieces + tail))
        else:
            await _paced(resp, head, pieces, settings)
            if tail:
                await resp.write(b"".join(tail))
        if stalled:
            await _hold_open(request, state)
        else:
            await resp.write_eof()
    except ConnectionError:
        pass  # the client went away mid-stream: nothing left to do
    return resp


async def _paced(resp: web.StreamResponse, head: list[bytes], pieces: list[bytes],
                 settings: SimSettings) -> None:
    loop = asyncio.get_running_loop()
    interval = 1 / settings.tokens_per_second
    start = loop.time()
    # The first token goes out with the head; later ones are scheduled
    # against the start time so sleep overshoot does not accumulate.
    await resp.write(b"".join(head + pieces[:1]))
    for i in range(1, len(pieces)):
        delay = start + i * interval - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        await resp.write(pieces[i])


async def _hold_open(request: web.Request, state: SimState) -> None:
    while not state.closing:
        transport = request.transport
        if transport is None or transport.is_closing():
            return
        await asyncio.sleep(_STALL_POLL_S)
