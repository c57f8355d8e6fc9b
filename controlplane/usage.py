"""Usage analytics: per-key request, error, token and cost totals by day.

Proxies count each client request once per (API key, key's node, served
model, route or task, UTC day) and send the counters with their telemetry
reports (`UsageRecord`). The control plane adds them up in memory and
persists them every few seconds (and on shutdown), one small JSON document
per key and day under `/megarouter/usage/<day>/<key>`, merged with
compare-and-swap into what is stored — so a restart keeps the history and
several control planes on one store add up correctly. The prefix lies
outside `/megarouter/v1/`, so usage writes never recompile routing tables.

Queries (`QueryUsage`) resolve the org tree at query time: a row belongs to
its key's node as the store knows it now (the node recorded by the proxy if
the key was deleted), and a node's usage is the sum over its subtree.

Counters, names and days only — never request content.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import orjson
from prometheus_client import Counter

from controlplane import rbac
from controlplane.repository import API_KEYS, NODES
from controlplane.store import CasConflict, Store
from megarouter import latency
from megarouter.resources import NAME_PATTERN
from megarouter.v1 import admin_pb2, telemetry_pb2

log = logging.getLogger("megarouter.controlplane.usage")

USAGE_PREFIX = "/megarouter/usage/"
FLUSH_INTERVAL_S = 2.0
DIMENSIONS = ("node", "key", "model", "route", "day")
# The longest day range read one day prefix at a time; longer ones list everything.
_MAX_DAYS_BY_PREFIX = 62
_CAS_ATTEMPTS = 20
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_KEY_NAME = re.compile(NAME_PATTERN)
_MAX_LABEL = 128

RECORDS = Counter("megarouter_cp_usage_records_total", "Usage records received from proxies", ["result"])
FLUSHES = Counter("megarouter_cp_usage_flushes_total", "Usage documents written to the store", ["result"])


@dataclass(slots=True)
class Counters:
    requests: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    # Requests per megarouter.latency bucket; all zero for usage recorded before latencies were.
    latency_ms_buckets: list[int] = field(default_factory=lambda: [0] * latency.BUCKETS)

    def add(self, other: Counters) -> None:
        self.requests += other.requests
        self.errors += other.errors
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.cost_usd += other.cost_usd
        latency.add_into(self.latency_ms_buckets, other.latency_ms_buckets)

    def copy(self) -> Counters:
        return Counters(self.requests, self.errors, self.prompt_tokens, self.completion_tokens, self.cost_usd,
                        list(self.latency_ms_buckets))

    def as_dict(self) -> dict[str, int | float | list[int]]:
        return {"requests": self.requests, "errors": self.errors, "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens, "cost_usd": self.cost_usd,
                "latency_ms_buckets": self.latency_ms_buckets}

    @classmethod
    def from_dict(cls, data: dict) -> Counters:
        buckets = data.get("latency_ms_buckets")
        return cls(int(data.get("requests", 0)), int(data.get("errors", 0)), int(data.get("prompt_tokens", 0)),
                   int(data.get("completion_tokens", 0)), float(data.get("cost_usd", 0.0)),
                   [int(b) for b in buckets] if isinstance(buckets, list) and latency.valid(buckets)
                   else [0] * latency.BUCKETS)

    def row(self, dimensions: dict[str, str]) -> admin_pb2.UsageRow:
        return admin_pb2.UsageRow(
            dimensions=dimensions, requests=self.requests, errors=self.errors, prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens, cost_usd=self.cost_usd,
            latency_p50_ms=latency.percentile(self.latency_ms_buckets, 0.50),
            latency_p99_ms=latency.percentile(self.latency_ms_buckets, 0.99))


# (node, model, route) -> counters: the rows of one (day, key) document.
Rows = dict[tuple[str, str, str], Counters]


def document_key(day: str, key: str) -> str:
    return f"{USAGE_PREFIX}{day}/{key}"


def encode_rows(day: str, key: str, rows: Rows) -> bytes:
    return orjson.dumps({
        "day": day, "key": key,
        "rows": [{"node": node, "model": model, "route": route, **counters.as_dict()}
                 for (node, model, route), counters in sorted(rows.items())],
    })


def decode_rows(data: bytes) -> Rows:
    rows: Rows = {}
    for row in orjson.loads(data).get("rows", []):
        counters = Counters.from_dict(row)
        slot = (str(row.get("node", "")), str(row.get("model", "")), str(row.get("route", "")))
        if slot in rows:
            rows[slot].add(counters)
        else:
            rows[slot] = counters
    return rows


def _merge(into: Rows, rows: Rows) -> None:
    for slot, counters in rows.items():
        current = into.get(slot)
        if current is None:
            into[slot] = counters.copy()
        else:
            current.add(counters)


class UsageAggregator:
    """Adds up proxies' usage records and persists them to the store."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._pending: dict[tuple[str, str], Rows] = {}   # (day, key) -> rows not yet persisted
        self._flush_lock = asyncio.Lock()

    def add(self, records: Iterable[telemetry_pb2.UsageRecord]) -> int:
        """Merge a report's usage records; returns how many were accepted."""
        accepted = 0
        for record in records:
            if not (_DAY.match(record.day) and _KEY_NAME.match(record.key)):
                RECORDS.labels("rejected").inc()  # never written under a path it could escape
                continue
            rows = self._pending.setdefault((record.day, record.key), {})
            slot = (record.node[:_MAX_LABEL], record.model[:_MAX_LABEL], record.route[:_MAX_LABEL])
            counters = rows.get(slot)
            if counters is None:
                counters = rows[slot] = Counters()
            counters.requests += record.requests
            counters.errors += record.errors
            counters.prompt_tokens += record.prompt_tokens
            counters.completion_tokens += record.completion_tokens
            counters.cost_usd += record.cost_usd
            if latency.valid(record.latency_ms_buckets):  # another release's bucket layout: ignored
                latency.add_into(counters.latency_ms_buckets, record.latency_ms_buckets)
            accepted += 1
        if accepted:
            RECORDS.labels("accepted").inc(accepted)
        return accepted

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def flush(self) -> None:
        """Write everything pending; what cannot be written stays pending."""
        async with self._flush_lock:
            pending, self._pending = self._pending, {}
            for (day, key), rows in pending.items():
                try:
                    await self._write(day, key, rows)
                    FLUSHES.labels("ok").inc()
                except Exception as exc:  # the store is down or contended: keep it for the next flush
                    FLUSHES.labels("failed").inc()
                    log.warning("usage for key %s on %s not persisted yet: %s", key, day, exc)
                    _merge(self._pending.setdefault((day, key), {}), rows)

    async def _write(self, day: str, key: str, rows: Rows) -> None:
        path = document_key(day, key)
        for _ in range(_CAS_ATTEMPTS):
            kv = await self._store.get(path)
            stored = decode_rows(kv.value) if kv else {}
            _merge(stored, rows)
            try:
                await self._store.put(path, encode_rows(day, key, stored),
                                      expected_revision=kv.mod_revision if kv else 0)
                return
            except CasConflict:
                continue
        raise RuntimeError(f"{path} is too contended")

    async def run(self, interval_s: float = FLUSH_INTERVAL_S) -> None:
        """Flush every `interval_s`. Cancelling this never interrupts a write
        half done: the flush runs on, and a later `flush()` waits for it."""
        while True:
            await asyncio.sleep(interval_s)
            await asyncio.shield(self.flush())


# ---------------------------------------------------------------- queries


class QueryError(Exception):
    """An invalid query (INVALID_ARGUMENT); the message names the field."""


class QueryDenied(Exception):
    """The caller may not read the usage it asked for (PERMISSION_DENIED)."""


def _day_of(unix_ms: int) -> str:
    return datetime.fromtimestamp(unix_ms / 1000, UTC).strftime("%Y-%m-%d")


def check_query(request: admin_pb2.QueryUsageRequest) -> tuple[str, ...]:
    """The distinct group_by dimensions, in the order given."""
    for dimension in request.group_by:
        if dimension not in DIMENSIONS:
            raise QueryError(f"invalid usage query: group_by: unknown dimension {dimension!r} "
                             f"(use {', '.join(DIMENSIONS)})")
    if request.since_unix_ms < 0:
        raise QueryError("invalid usage query: since_unix_ms: must not be negative")
    if request.until_unix_ms < 0:
        raise QueryError("invalid usage query: until_unix_ms: must not be negative")
    if request.until_unix_ms and request.since_unix_ms >= request.until_unix_ms:
        raise QueryError("invalid usage query: until_unix_ms: must be after since_unix_ms")
    return tuple(dict.fromkeys(request.group_by))


async def _documents(store: Store, first: str, last: str) -> list:
    """Usage documents of the days in [first, last] ('' = unbounded)."""
    if first and last:
        start = datetime.strptime(first, "%Y-%m-%d")
        days = (datetime.strptime(last, "%Y-%m-%d") - start).days + 1
        if days <= _MAX_DAYS_BY_PREFIX:
            items = []
            for offset in range(days):
                listed, _ = await store.list(f"{USAGE_PREFIX}{(start + timedelta(days=offset)):%Y-%m-%d}/")
                items.extend(listed)
            return items
    items, _ = await store.list(USAGE_PREFIX)
    return items


async def query(store: Store, request: admin_pb2.QueryUsageRequest,
                principal: rbac.Principal | None) -> admin_pb2.QueryUsageResponse:
    group_by = check_query(request)
    nodes, _ = await store.list(NODES.prefix)
    parents = {node.name: node.parent for node in (NODES.decode(kv) for kv in nodes)}
    keys, _ = await store.list(API_KEYS.prefix)
    key_nodes = {key.name: key.node for key in (API_KEYS.decode(kv) for kv in keys)}
    scopes = principal.scopes("usage.read") if principal is not None else set()

    def visible(chain: tuple[str, ...]) -> bool:
        return scopes is None or not scopes.isdisjoint(chain)

    if request.node and scopes is not None:
        # A node within the caller's scopes, or above one of them (a partial view); nothing else.
        if not visible(rbac.node_chain(request.node, parents)) and not any(
                request.node in rbac.node_chain(scope, parents) for scope in scopes):
            raise QueryDenied(f"lacks permission 'usage.read' on node {request.node!r}")
    if request.key and request.key in key_nodes and not visible(rbac.node_chain(key_nodes[request.key], parents)):
        raise QueryDenied(f"lacks permission 'usage.read' on the usage of key {request.key!r}")

    first = _day_of(request.since_unix_ms) if request.since_unix_ms else ""
    last = _day_of(request.until_unix_ms - 1) if request.until_unix_ms else ""
    chains: dict[str, tuple[str, ...]] = {}
    totals: dict[tuple[str, ...], Counters] = {}
    for kv in await _documents(store, first, last):
        day, _, key = kv.key.removeprefix(USAGE_PREFIX).partition("/")
        if (first and day < first) or (last and day > last) or (request.key and key != request.key):
            continue
        for (recorded_node, model, route), counters in decode_rows(kv.value).items():
            node = key_nodes.get(key, recorded_node)
            chain = chains.get(node)
            if chain is None:
                chain = chains[node] = rbac.node_chain(node, parents)
            if (request.node and request.node not in chain) or not visible(chain):
                continue
            values = {"node": node, "key": key, "model": model, "route": route, "day": day}
            group = tuple(values[dimension] for dimension in group_by)
            total = totals.get(group)
            if total is None:
                totals[group] = counters.copy()
            else:
                total.add(counters)
    ordered = sorted(totals.items(), key=lambda item: (-item[1].cost_usd, -item[1].requests, item[0]))
    return admin_pb2.QueryUsageResponse(rows=[
        counters.row(dict(zip(group_by, group, strict=True))) for group, counters in ordered])
