"""The budget ledger and the Budgets service (leases to proxies).

For each budget the ledger keeps what was spent and what is leased to each
proxy. A proxy asks for a lease (`Acquire`); the grant never exceeds
`limit - spent - leased`, so the fleet can only spend what the ledger
granted. Proxies report consumption and hand back unused lease (`Settle`).
Every change is written to the store with compare-and-swap before it is
answered, so a control-plane restart loses neither spend nor leases.

Two kinds of window:

- **Calendar windows** (daily, monthly, total; UTC). Spend is what proxies
  settled. A proxy keeps its lease alive by settling — a settlement of
  nothing is a heartbeat, sent while it holds reservations for long
  requests — and a lease not kept alive for `LEASE_TTL_S` (its proxy is
  gone or cut off) is **reclaimed and counted as spent**: the ledger cannot
  know how much of it the proxy had reserved when it died, and
  undercounting is the one thing a budget must not do. The proxy stops
  using a lease a few seconds before the TTL, so a proxy that was only cut
  off never spends a lease the ledger reclaimed. What it later settles or
  releases against a reclaimed lease is matched against that credit, so a
  healed partition is not counted twice; a crash over-counts by at most the
  unused part of the dead proxy's lease.
- **Sliding windows** (rate limits, `window: minute`): units are counted
  when they are granted, in one-second slots, and stay counted for
  `SLIDING_SPAN_S` seconds. A proxy must use a grant within `USE_WITHIN_S`
  and give back the rest, which frees it. So however grants fall across
  proxies and calendar minutes, no 60-second interval sees more than the
  limit used (the span is two seconds longer than the minute: the grant's
  slot rounding and its use-within time).

Every call is authenticated (a proxy credential, see `rbac`), and a node's
lease can be touched only by the token that acquired it. Values are range
checked by the service; refusals are counted in
`megarouter_cp_refused_calls_total{plane="proxy"}`.

Ledger records live under `/megarouter/ledger/`, outside the configuration
prefix, so spend does not recompile routing tables.
"""

from __future__ import annotations

import asyncio
import calendar
import logging
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import grpc
import orjson
from prometheus_client import Counter, Gauge

from controlplane import rbac
from controlplane.repository import BUDGETS
from controlplane.store import CasConflict, Store, StoreError
from megarouter.resources import NAME_PATTERN, Budget
from megarouter.v1 import admin_pb2, budgets_pb2, budgets_pb2_grpc

log = logging.getLogger("megarouter.controlplane.budgets")

LEDGER_PREFIX = "/megarouter/ledger/"
LEASE_TTL_S = 30.0
# How often the leader rolls windows over and reclaims leases of vanished proxies.
SWEEP_INTERVAL_S = 5.0
# Sliding windows: the window, how long a proxy may use a grant, and how long a grant counts.
SLIDING_WINDOW_S = 60
USE_WITHIN_S = 1.0
# A grant counted in slot s (granted in [s, s+1)) is used before s + 1 + USE_WITHIN_S; it counts
# until s + SLIDING_SPAN_S, so any later grant is used at least SLIDING_WINDOW_S after it.
SLIDING_SPAN_S = SLIDING_WINDOW_S + 1 + math.ceil(USE_WITHIN_S)
SLIDING = "sliding"
GRANT_PREFIX = "s:"
# Float noise when comparing a release with what is leased.
_TOLERANCE = 1e-9
MAX_SETTLEMENTS = 1000
NODE_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@/-]{0,127}$")
_BUDGET_NAME = re.compile(NAME_PATTERN)

USED_RATIO = Gauge("megarouter_budget_used_ratio", "Spent / limit in the current window", ["budget"])
ALERTS = Counter("megarouter_budget_alerts_total", "Alert thresholds crossed", ["budget", "threshold"])
RECLAIMED = Counter("megarouter_budget_reclaimed_total",
                    "Leases of proxies gone longer than the lease TTL, counted as spent (in the budget's unit)",
                    ["budget"])


def window_of(budget_window: str, now: float) -> tuple[str, int]:
    """The calendar window id at `now` and when it resets (Unix ms; 0 = never).
    Rate limits (`minute`) slide instead: ("sliding", 0)."""
    day = datetime.fromtimestamp(now, UTC)
    if budget_window == "minute":
        return SLIDING, 0
    if budget_window == "daily":
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        return start.strftime("%Y-%m-%d"), int((start.timestamp() + 86400) * 1000)
    if budget_window == "monthly":
        days = calendar.monthrange(day.year, day.month)[1]
        start = datetime(day.year, day.month, 1, tzinfo=UTC)
        return start.strftime("%Y-%m"), int((start.timestamp() + days * 86400) * 1000)
    return "total", 0


class LedgerRefusal(Exception):
    """A call the ledger will not apply: `reason` is the metric label, `message` the client's text."""

    def __init__(self, code: grpc.StatusCode, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message


@dataclass
class LedgerRecord:
    window: str
    spent: float = 0.0                                          # calendar: settled + reclaimed
    leases: dict[str, float] = field(default_factory=dict)      # proxy -> leased, unsettled
    lease_seen: dict[str, float] = field(default_factory=dict)  # proxy -> last acquire/settle (unix s)
    owners: dict[str, str] = field(default_factory=dict)        # proxy -> token that holds its lease
    credits: dict[str, float] = field(default_factory=dict)     # proxy -> reclaimed lease counted in spent
    alerts: list[float] = field(default_factory=list)           # thresholds crossed this window
    slots: dict[str, float] = field(default_factory=dict)       # sliding: grant second -> units counted
    grants: dict[str, dict[str, float]] = field(default_factory=dict)  # sliding: proxy -> second -> unused

    @classmethod
    def decode(cls, data: bytes) -> LedgerRecord:
        return cls(**orjson.loads(data))

    def encode(self) -> bytes:
        return orjson.dumps(self.__dict__)

    @property
    def sliding(self) -> bool:
        return self.window == SLIDING

    def used(self) -> float:
        """Spend in the window: settled spend, or for a sliding window the units counted."""
        return sum(self.slots.values()) if self.sliding else self.spent

    def leased(self) -> float:
        return sum(self.leases.values())

    def prune(self, now: float) -> None:
        """Sliding windows: forget slots (and proxies' unused grants) older than the span."""
        oldest = int(now) - SLIDING_SPAN_S + 1
        self.slots = {second: units for second, units in self.slots.items() if int(second) >= oldest and units > 0}
        for proxy, grants in list(self.grants.items()):
            kept = {second: units for second, units in grants.items() if int(second) >= oldest and units > 0}
            if kept:
                self.grants[proxy] = kept
                self.leases[proxy] = sum(kept.values())
            else:
                del self.grants[proxy]
                self.leases.pop(proxy, None)

    def resets_at_ms(self, now: float) -> int:
        """Sliding windows: when the oldest counted units leave the window."""
        oldest = min((int(second) for second in self.slots), default=int(now))
        return (oldest + SLIDING_SPAN_S) * 1000

    def reclaim(self, budget: str, now: float, ttl_s: float) -> None:
        """Leases of proxies silent for longer than the TTL: gone, counted as spent."""
        for proxy, seen in list(self.lease_seen.items()):
            if now - seen <= ttl_s:
                continue
            lease = self.leases.pop(proxy, 0.0)
            self.lease_seen.pop(proxy, None)
            if self.sliding:
                self.grants.pop(proxy, None)   # its units stay counted in their slots
            elif lease > 0:
                self.spent += lease
                self.credits[proxy] = self.credits.get(proxy, 0.0) + lease
                RECLAIMED.labels(budget).inc(lease)
                log.warning("budget %s: proxy %s silent for %.0fs; its lease of %.6g is counted as spent",
                            budget, proxy, now - seen, lease)
            if not self.credits.get(proxy):
                self.owners.pop(proxy, None)

    def check_owner(self, proxy: str, token: str) -> None:
        owner = self.owners.get(proxy)
        if token and owner and owner != token and (self.leases.get(proxy) or self.credits.get(proxy)):
            raise LedgerRefusal(grpc.StatusCode.PERMISSION_DENIED, "foreign_lease",
                                f"node {proxy!r}'s lease is held by another proxy credential")


class BudgetLedger:
    def __init__(self, store: Store, clock: Callable[[], float] = time.time, lease_ttl_s: float = LEASE_TTL_S) -> None:
        self._store = store
        self._clock = clock
        self._lease_ttl_s = lease_ttl_s
        self._locks: dict[str, asyncio.Lock] = {}

    async def _budget(self, name: str) -> Budget | None:
        kv = await self._store.get(BUDGETS.key(name))
        return BUDGETS.decode(kv) if kv else None

    async def _update(self, budget: Budget, change: Callable[[LedgerRecord, float], None]) -> LedgerRecord:
        """Read-modify-write the ledger record with CAS: roll the window over, prune and
        reclaim, then `change` (which may raise LedgerRefusal: nothing is written)."""
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
                if record.sliding:
                    record.prune(now)
                record.reclaim(budget.name, now, self._lease_ttl_s)
                change(record, now)
                self._alerts(budget, record)
                try:
                    await self._store.put(key, record.encode(), expected_revision=kv.mod_revision if kv else 0)
                except CasConflict:
                    continue
                USED_RATIO.labels(budget.name).set(record.used() / budget.limit)
                return record
        raise RuntimeError(f"ledger for {budget.name!r} is too contended")

    def _alerts(self, budget: Budget, record: LedgerRecord) -> None:
        for threshold in budget.alert_thresholds:
            if record.used() >= threshold * budget.limit and threshold not in record.alerts:
                record.alerts.append(threshold)
                ALERTS.labels(budget.name, f"{threshold:g}").inc()
                log.warning("budget %s reached %.0f%% of its %s limit in window %s",
                            budget.name, threshold * 100, budget.window, record.window)

    async def acquire(self, proxy: str, name: str, want: float, token: str = "") -> budgets_pb2.Grant | None:
        """Grant `proxy` up to `want` more (None: no such budget). `token` is the caller's
        credential; "" (in-process callers) skips the ownership check."""
        budget = await self._budget(name)
        if budget is None:
            return None
        if want > budget.limit:
            raise LedgerRefusal(grpc.StatusCode.INVALID_ARGUMENT, "range",
                                f"want: {want:g} is more than budget {name!r}'s whole limit {budget.limit:g}")
        granted = 0.0
        grant_id = ""

        def grant(record: LedgerRecord, now: float) -> None:
            nonlocal granted, grant_id
            record.check_owner(proxy, token)
            granted = max(0.0, min(want, budget.limit - record.used() - (0.0 if record.sliding else record.leased())))
            if record.sliding:
                second = str(int(now))
                grant_id = GRANT_PREFIX + second
                if granted > 0:
                    record.slots[second] = record.slots.get(second, 0.0) + granted
                    grants = record.grants.setdefault(proxy, {})
                    grants[second] = grants.get(second, 0.0) + granted
                    record.leases[proxy] = sum(grants.values())
            else:
                grant_id = record.window
                record.leases[proxy] = record.leases.get(proxy, 0.0) + granted
            record.lease_seen[proxy] = now
            if token:
                record.owners[proxy] = token

        record = await self._update(budget, grant)
        now = self._clock()
        if record.sliding:
            remaining = budget.limit - record.used()
            resets_at = record.resets_at_ms(now)
        else:
            remaining = budget.limit - record.spent - record.leased()
            resets_at = window_of(budget.window, now)[1]
        return budgets_pb2.Grant(
            budget=name, window=grant_id, granted=granted, remaining=max(0.0, remaining),
            resets_at_unix_ms=resets_at, lease_ttl_s=self._lease_ttl_s,
            use_within_s=USE_WITHIN_S if record.sliding else 0.0,
            resets_in_ms=max(0, resets_at - int(now * 1000)) if resets_at else 0,
        )

    async def settle(self, proxy: str, settlement: budgets_pb2.Settlement, token: str = "") -> str:
        """Apply one settlement; returns '' or why (part of) it was refused. Amounts are
        assumed finite and non-negative (the service checks)."""
        budget = await self._budget(settlement.budget)
        if budget is None:
            return ""  # deleted meanwhile: nothing left to account against
        refusal = ""

        def apply(record: LedgerRecord, now: float) -> None:
            nonlocal refusal
            record.check_owner(proxy, token)
            consumed, released = settlement.consumed, settlement.released
            if not settlement.window:  # alert-only spend: no lease, counted in the current window
                if released:
                    refusal = "release without a lease"
                if record.sliding:
                    second = str(int(now))
                    record.slots[second] = record.slots.get(second, 0.0) + consumed
                else:
                    record.spent += consumed
            elif record.sliding:
                refusal = _settle_sliding(record, proxy, settlement.window, consumed, released, now)
            elif settlement.window == record.window:
                refusal = _settle_calendar(record, proxy, consumed, released)
            else:
                # Spend reserved in a window that has closed still happened:
                # it is counted in the window it was leased in, which is over.
                log.info("budget %s: %.6g settled for closed window %s", budget.name, consumed, settlement.window)
            if proxy in record.leases or proxy in record.credits:
                record.lease_seen[proxy] = now
                if token:
                    record.owners[proxy] = token

        await self._update(budget, apply)
        return refusal

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
            oldest = int(now) - SLIDING_SPAN_S + 1
            stale = (record.window != window_of(budget.window, now)[0]
                     or any(now - seen > self._lease_ttl_s for seen in record.lease_seen.values())
                     or any(int(second) < oldest for second in record.slots))
            if stale:
                await self._update(budget, lambda record, now: None)
                rewritten += 1
            else:
                USED_RATIO.labels(budget.name).set(record.used() / budget.limit)
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
            if record.sliding:
                record.prune(now)
                resets_at = record.resets_at_ms(now) if record.slots else 0
            used = record.used()
            statuses.append(admin_pb2.BudgetStatus(
                budget=budget.name, window=window, limit=budget.limit, spent=used,
                leased=record.leased(), used_ratio=used / budget.limit,
                leased_by_proxy={proxy: units for proxy, units in record.leases.items() if units},
                alerts_crossed=sorted(record.alerts), resets_at_unix_ms=resets_at, unit=budget.unit,
                action=budget.action,
            ))
        return statuses


def _settle_calendar(record: LedgerRecord, proxy: str, consumed: float, released: float) -> str:
    """Consumption and release against a calendar lease — and first against what was reclaimed
    of it (already counted as spent), so a proxy back from a partition is not counted twice."""
    lease = record.leases.get(proxy, 0.0)
    credit = record.credits.get(proxy, 0.0)
    refusal = ""
    if released > max(0.0, lease + credit - consumed) + _TOLERANCE * max(1.0, lease + credit):
        refusal = "release exceeds lease"
        released = 0.0
    absorbed = min(consumed, credit)
    credit -= absorbed
    record.spent += consumed - absorbed
    lease = max(0.0, lease - (consumed - absorbed))
    refund = min(released, credit)
    credit -= refund
    record.spent -= refund
    lease = max(0.0, lease - (released - refund))
    record.leases[proxy] = lease
    if credit > 0:
        record.credits[proxy] = credit
    else:
        record.credits.pop(proxy, None)
    return refusal


def _settle_sliding(record: LedgerRecord, proxy: str, grant_id: str, consumed: float, released: float,
                    now: float) -> str:
    """Units were counted when granted; consumption only uses up the grant (an overrun is
    counted now), and a release frees unused units of that grant's slot."""
    second = grant_id.removeprefix(GRANT_PREFIX)
    if not grant_id.startswith(GRANT_PREFIX) or not second.isdigit():
        return "unknown grant"
    grants = record.grants.get(proxy, {})
    unused = grants.get(second, 0.0)
    if int(second) < int(now) - SLIDING_SPAN_S + 1:
        return ""  # the grant has left the window: its units were counted and are gone
    refusal = ""
    used = min(consumed, unused)
    unused -= used
    if consumed > used:  # more than the grant covered: count the overrun now
        now_slot = str(int(now))
        record.slots[now_slot] = record.slots.get(now_slot, 0.0) + consumed - used
    if released > unused + _TOLERANCE * max(1.0, unused):
        refusal = "release exceeds lease"
        released = 0.0
    unused -= released
    if released:
        record.slots[second] = max(0.0, record.slots.get(second, 0.0) - released)
    if unused > 0:
        grants[second] = unused
    else:
        grants.pop(second, None)
    if grants:
        record.grants[proxy] = grants
        record.leases[proxy] = sum(grants.values())
    else:
        record.grants.pop(proxy, None)
        record.leases.pop(proxy, None)
    return refusal


def _caller_token() -> str:
    principal = rbac.current_principal.get()
    return principal.token if principal is not None else ""


def _finite_non_negative(value: float) -> bool:
    return math.isfinite(value) and value >= 0


class BudgetsService(budgets_pb2_grpc.BudgetsServicer):
    def __init__(self, ledger: BudgetLedger) -> None:
        self._ledger = ledger

    async def _refuse(self, context, code: grpc.StatusCode, reason: str, message: str):
        rbac.REFUSED.labels("proxy", reason).inc()
        await context.abort(code, message)

    async def _check_node(self, context, node_id: str) -> None:
        if not NODE_ID_PATTERN.match(node_id):
            await self._refuse(context, grpc.StatusCode.INVALID_ARGUMENT, "range",
                               "node_id: required, up to 128 letters, digits or ._:@/-")

    async def Acquire(self, request, context):
        await self._check_node(context, request.node_id)
        if not (math.isfinite(request.want) and request.want > 0):
            await self._refuse(context, grpc.StatusCode.INVALID_ARGUMENT, "range",
                               "want: must be a positive, finite amount")
        try:
            grant = await self._ledger.acquire(request.node_id, request.budget, request.want, _caller_token())
        except LedgerRefusal as refusal:
            await self._refuse(context, refusal.code, refusal.reason, refusal.message)
        if grant is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"budget {request.budget!r} not found")
        return grant

    async def Settle(self, request, context):
        await self._check_node(context, request.node_id)
        if len(request.settlements) > MAX_SETTLEMENTS:
            await self._refuse(context, grpc.StatusCode.INVALID_ARGUMENT, "range",
                               f"settlements: at most {MAX_SETTLEMENTS} per call")
        for index, settlement in enumerate(request.settlements):
            if not _BUDGET_NAME.match(settlement.budget):
                await self._refuse(context, grpc.StatusCode.INVALID_ARGUMENT, "range",
                                   f"settlements[{index}].budget: not a budget name")
            for name in ("consumed", "released"):
                if not _finite_non_negative(getattr(settlement, name)):
                    await self._refuse(context, grpc.StatusCode.INVALID_ARGUMENT, "range",
                                       f"settlements[{index}].{name}: must be finite and not negative")
        token = _caller_token()
        ack = budgets_pb2.SettleAck()
        for settlement in request.settlements:
            try:
                reason = await self._ledger.settle(request.node_id, settlement, token)
            except LedgerRefusal as refusal:
                reason = refusal.message
                rbac.REFUSED.labels("proxy", refusal.reason).inc()
            else:
                if reason:
                    rbac.REFUSED.labels("proxy", "range").inc()
            if reason:
                ack.refused.append(budgets_pb2.SettlementRefusal(
                    budget=settlement.budget, window=settlement.window, reason=reason))
        return ack
