"""The budget ledger and the Budgets service (leases to proxies).

For each budget the ledger keeps, per UTC calendar window, what was spent
and what is leased to each proxy. A proxy asks for a lease (`Acquire`);
the grant never exceeds `limit - spent - leased`, so the fleet can only
spend what the ledger granted. Proxies report consumption and hand back
unused lease (`Settle`); a lease not settled within its TTL (its proxy is
gone) is reclaimed. Every change is written to the store with
compare-and-swap before it is answered, so a control-plane restart loses
neither spend nor outstanding leases.

Ledger records live under `/megarouter/ledger/`, outside the configuration
prefix, so spend does not recompile routing tables.
"""

from __future__ import annotations

import asyncio
import calendar
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import grpc
import orjson
from prometheus_client import Counter, Gauge

from controlplane.repository import BUDGETS
from controlplane.store import CasConflict, Store, StoreError
from megarouter.resources import Budget
from megarouter.v1 import admin_pb2, budgets_pb2, budgets_pb2_grpc

log = logging.getLogger("megarouter.controlplane.budgets")

LEDGER_PREFIX = "/megarouter/ledger/"
LEASE_TTL_S = 30.0
# How often the leader rolls windows over and reclaims leases of vanished proxies.
SWEEP_INTERVAL_S = 5.0

USED_RATIO = Gauge("megarouter_budget_used_ratio", "Spent / limit in the current window", ["budget"])
ALERTS = Counter("megarouter_budget_alerts_total", "Alert thresholds crossed", ["budget", "threshold"])


def window_of(budget_window: str, now: float) -> tuple[str, int]:
    """The window id at `now` and when it resets (Unix ms; 0 = never)."""
    day = datetime.fromtimestamp(now, UTC)
    if budget_window == "minute":
        start = datetime(day.year, day.month, day.day, day.hour, day.minute, tzinfo=UTC)
        return start.strftime("%Y-%m-%dT%H:%M"), int((start.timestamp() + 60) * 1000)
    if budget_window == "daily":
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        return start.strftime("%Y-%m-%d"), int((start.timestamp() + 86400) * 1000)
    if budget_window == "monthly":
        days = calendar.monthrange(day.year, day.month)[1]
        start = datetime(day.year, day.month, 1, tzinfo=UTC)
        return start.strftime("%Y-%m"), int((start.timestamp() + days * 86400) * 1000)
    return "total", 0


@dataclass
class LedgerRecord:
    window: str
    spent: float = 0.0
    leases: dict[str, float] = field(default_factory=dict)       # proxy -> leased, unsettled
    lease_seen: dict[str, float] = field(default_factory=dict)   # proxy -> last acquire/settle (unix s)
    alerts: list[float] = field(default_factory=list)            # thresholds crossed this window

    @classmethod
    def decode(cls, data: bytes) -> LedgerRecord:
        return cls(**orjson.loads(data))

    def encode(self) -> bytes:
        return orjson.dumps(self.__dict__)


class BudgetLedger:
    def __init__(self, store: Store, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock
        self._locks: dict[str, asyncio.Lock] = {}

    async def _budget(self, name: str) -> Budget | None:
        kv = await self._store.get(BUDGETS.key(name))
        return BUDGETS.decode(kv) if kv else None

    async def _update(self, budget: Budget, change: Callable[[LedgerRecord, float], None]) -> LedgerRecord:
        """Read-modify-write the ledger record with CAS, rolling the window over."""
        lock = self._locks.setdefault(budget.name, asyncio.Lock())
        async with lock:  # one writer per budget in this process; CAS guards others
            for _ in range(10):
                now = self._clock()
                window, _ = window_of(budget.window, now)
                key = LEDGER_PREFIX + budget.name
                kv = await self._store.get(key)
                record = LedgerRecord.decode(kv.value) if kv else LedgerRecord(window)
                if record.window != window:
                    record = LedgerRecord(window)   # a new window: nothing spent, old leases void
                for proxy, seen in list(record.lease_seen.items()):
                    if now - seen > LEASE_TTL_S:    # its proxy stopped settling: reclaim
                        record.leases.pop(proxy, None)
                        record.lease_seen.pop(proxy, None)
                change(record, now)
                self._alerts(budget, record)
                try:
                    await self._store.put(key, record.encode(), expected_revision=kv.mod_revision if kv else 0)
                except CasConflict:
                    continue
                USED_RATIO.labels(budget.name).set(record.spent / budget.limit)
                return record
        raise RuntimeError(f"ledger for {budget.name!r} is too contended")

    def _alerts(self, budget: Budget, record: LedgerRecord) -> None:
        for threshold in budget.alert_thresholds:
            if record.spent >= threshold * budget.limit and threshold not in record.alerts:
                record.alerts.append(threshold)
                ALERTS.labels(budget.name, f"{threshold:g}").inc()
                log.warning("budget %s reached %.0f%% of its %s limit in window %s",
                            budget.name, threshold * 100, budget.window, record.window)

    async def acquire(self, proxy: str, name: str, want: float) -> budgets_pb2.Grant | None:
        budget = await self._budget(name)
        if budget is None:
            return None
        granted = 0.0

        def grant(record: LedgerRecord, now: float) -> None:
            nonlocal granted
            remaining = budget.limit - record.spent - sum(record.leases.values())
            granted = max(0.0, min(want, remaining))
            record.leases[proxy] = record.leases.get(proxy, 0.0) + granted
            record.lease_seen[proxy] = now

        record = await self._update(budget, grant)
        _, resets_at = window_of(budget.window, self._clock())
        return budgets_pb2.Grant(
            budget=name, window=record.window, granted=granted,
            remaining=max(0.0, budget.limit - record.spent - sum(record.leases.values())),
            resets_at_unix_ms=resets_at, lease_ttl_s=LEASE_TTL_S,
        )

    async def settle(self, proxy: str, settlement: budgets_pb2.Settlement) -> None:
        budget = await self._budget(settlement.budget)
        if budget is None:
            return

        def apply(record: LedgerRecord, now: float) -> None:
            if not settlement.window:  # alert-only spend: no lease, counted in the current window
                record.spent += settlement.consumed
            elif settlement.window == record.window:
                record.spent += settlement.consumed
                leased = record.leases.get(proxy, 0.0) - settlement.consumed - settlement.released
                record.leases[proxy] = max(0.0, leased)
            else:
                # Spend reserved in a window that has closed still happened:
                # it is counted in the window it was leased in, which is over.
                log.info("budget %s: %.6g settled for closed window %s", budget.name, settlement.consumed,
                         settlement.window)
            record.lease_seen[proxy] = now

        await self._update(budget, apply)

    async def sweep(self) -> int:
        """Roll closed windows over, reclaim leases whose proxy stopped settling, and drop the
        records of deleted budgets — what would otherwise wait for the next request to touch a
        budget, leaving `megarouterctl budgets` and the used-ratio gauge stale. Returns how
        many records it rewrote. Run by the leader; safe anywhere (every write is a CAS)."""
        budgets = {budget.name: budget for budget in map(BUDGETS.decode, (await self._store.list(BUDGETS.prefix))[0])}
        records, _ = await self._store.list(LEDGER_PREFIX)
        rewritten = 0
        now = self._clock()
        for kv in records:
            name = kv.key[len(LEDGER_PREFIX):]
            budget = budgets.get(name)
            if budget is None:
                try:
                    await self._store.delete(kv.key, expected_revision=kv.mod_revision)
                    rewritten += 1
                except CasConflict:
                    pass  # written meanwhile: looked at again next sweep
                continue
            record = LedgerRecord.decode(kv.value)
            stale = record.window != window_of(budget.window, now)[0] or any(
                now - seen > LEASE_TTL_S for seen in record.lease_seen.values()
            )
            if stale:
                await self._update(budget, lambda record, now: None)
                rewritten += 1
            else:
                USED_RATIO.labels(budget.name).set(record.spent / budget.limit)
        return rewritten

    async def sweep_forever(self, interval_s: float = SWEEP_INTERVAL_S) -> None:
        while True:
            try:
                rewritten = await self.sweep()
                if rewritten:
                    log.info("ledger sweep rewrote %d budget record(s)", rewritten)
            except StoreError as exc:
                log.warning("ledger sweep failed, retrying: %s", exc)
            await asyncio.sleep(interval_s)

    async def status(self) -> list[admin_pb2.BudgetStatus]:
        items, _ = await self._store.list(BUDGETS.prefix)
        statuses = []
        now = self._clock()
        for budget in (BUDGETS.decode(kv) for kv in items):
            window, resets_at = window_of(budget.window, now)
            kv = await self._store.get(LEDGER_PREFIX + budget.name)
            record = LedgerRecord.decode(kv.value) if kv else LedgerRecord(window)
            if record.window != window:
                record = LedgerRecord(window)
            statuses.append(admin_pb2.BudgetStatus(
                budget=budget.name, window=window, limit=budget.limit, spent=record.spent,
                leased=sum(record.leases.values()), used_ratio=record.spent / budget.limit,
                alerts_crossed=sorted(record.alerts), resets_at_unix_ms=resets_at, unit=budget.unit,
                action=budget.action,
            ))
        return statuses


class BudgetsService(budgets_pb2_grpc.BudgetsServicer):
    def __init__(self, ledger: BudgetLedger) -> None:
        self._ledger = ledger

    async def Acquire(self, request, context):
        if not request.node_id or request.want < 0:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "node_id and a non-negative want are required")
        grant = await self._ledger.acquire(request.node_id, request.budget, request.want)
        if grant is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"budget {request.budget!r} not found")
        return grant

    async def Settle(self, request, context):
        if not request.node_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "node_id is required")
        for settlement in request.settlements:
            await self._ledger.settle(request.node_id, settlement)
        return budgets_pb2.SettleAck()
