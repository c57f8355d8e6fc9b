"""The request log: one JSON line per client request, for audit and log pipelines — and no
content, ever.

Opt-in (`--request-log stdout|FILE`). Each line says who asked (key name and node — never
the key's secret or hash), for what (API, route or model, task, strategy), what served it
(model, endpoint, provider, region), how (attempts, and each failed attempt's endpoint and
error class), the outcome (HTTP status, error class and code), and what it cost (tokens,
cached tokens, USD, latency, time to first token). Prompt and completion text are not among
the fields and no field is copied from a request or response body, so none can leak in.

The numbers are the ones the usage ledger counted for the same request (`UsageAccount`
keeps what it recorded), so the log, `megarouterctl usage` and the console agree.

Lines go through a queue to a background thread (`logging.handlers.QueueListener`): file
writes and rotation never block the event loop. A file is rotated by size
(`RotatingFileHandler`: `--request-log-max-bytes`, `--request-log-backups`).
"""

from __future__ import annotations

import logging
import logging.handlers
import queue
import re
import sys
import time
import uuid
from typing import Any

import orjson

_LOGGER_NAME = "megarouter.requests"
# A client's own request id is kept only if it looks like one (it is echoed into logs).
_CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def request_id(client_value: str | None) -> str:
    """The client's `x-request-id` if it is a plausible id, else a new one."""
    if client_value and _CLIENT_REQUEST_ID.fullmatch(client_value):
        return client_value
    return "req_" + uuid.uuid4().hex


class RequestLog:
    def __init__(self, target: str, *, max_bytes: int = 100 * 1024 * 1024, backups: int = 5,
                 node_id: str = "") -> None:
        if target == "stdout":
            handler: logging.Handler = logging.StreamHandler(sys.stdout)
        else:
            handler = logging.handlers.RotatingFileHandler(target, maxBytes=max_bytes, backupCount=backups,
                                                           encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(message)s"))
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._listener = logging.handlers.QueueListener(self._queue, handler)
        self._logger = logging.getLogger(f"{_LOGGER_NAME}.{id(self)}")
        self._logger.propagate = False  # never into the service log
        self._logger.setLevel(logging.INFO)
        self._logger.addHandler(logging.handlers.QueueHandler(self._queue))
        self._node_id = node_id
        self._listener.start()

    def write(self, record: dict[str, Any]) -> None:
        record = {"time": _now(), "proxy": self._node_id, **record}
        self._logger.info(orjson.dumps(record).decode())

    def close(self) -> None:
        self._listener.stop()  # flushes what is queued


def _now() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"
