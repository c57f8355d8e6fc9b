#!/usr/bin/env python3
"""An OTLP/HTTP trace receiver that accepts and discards: what `proxy_bench.py --tracing`
exports spans to, so the bench measures what tracing costs the proxy, not a collector.

    python bench/otlp_sink.py --port 0      # prints {"event": "ready", "port": N}
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from aiohttp import web


async def _traces(request: web.Request) -> web.Response:
    request.app["bytes"] += len(await request.read())
    # An empty ExportTraceServiceResponse is zero bytes of protobuf.
    return web.Response(body=b"", content_type="application/x-protobuf")


async def _stats(request: web.Request) -> web.Response:
    return web.json_response({"bytes": request.app["bytes"]})


async def _serve(port: int) -> None:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app["bytes"] = 0
    app.router.add_post("/v1/traces", _traces)
    app.router.add_get("/stats", _stats)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print(json.dumps({"event": "ready", "port": runner.addresses[0][1]}), flush=True)
    await asyncio.Event().wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    try:
        asyncio.run(_serve(parser.parse_args().port))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
