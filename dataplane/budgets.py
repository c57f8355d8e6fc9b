"""Budget and rate-limit enforcement on the proxy, against leases from the
control plane. A rate limit is a budget whose window is one minute.

Before a request is sent upstream, its worst-case amount (cost, tokens or
one request) is reserved from this proxy's lease of every `pause` budget
that covers it: the key's own budgets and those of every node above it,
filtered by model and task. When a lease runs short, more is acquired from
the control plane's ledger, which never grants beyond the budget's
remainder — so a request that cannot be covered is refused with 429
`budget_exceeded`, fleet-wide. After the response the real amount settles
the reservation and the unused rest returns to the lease; consumption is
reported to the ledger in the background (retried until acknowledged, so a
control-plane restart loses nothing) and idle leases are handed back.

Leases are kept alive: while a lease holds reservations (a long request) a
heartbeat settles nothing every third of the TTL, so the ledger reclaims a
lease only when its proxy is gone. A lease that could not be kept alive is
not used past five sixths of the lease TTL since the last contact: by
then the ledger may have reclaimed it. Rate-limit grants are used within
the grant's `use_within_s` and the rest is given back (see the ledger's
sliding windows). When the ledger cannot be reached and a lease is short,
the request is refused with 503 `budget_unavailable` and a short
Retry-After — not with a reset time hours away.

The bound: the fleet's spend in a window can exceed a limit only by what
real usage exceeds the worst-case estimate of requests in flight — with
`max_tokens` set (or the model's max output known) that is the prompt-size
estimate's error on one request.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import grpc

from dataplane.control_plane import ControlPlaneLink
from dataplane.errors import BudgetError
from dataplane.table import KeyInfo
from megarouter.catalog import cost_usd
from megarouter.v1 import budgets_pb2, budgets_pb2_grpc, routing_pb2

log = logging.getLogger("megarouter.proxy.budgets")

# Each refill asks for this share of the limit (or what the request needs, if more).
LEASE_CHUNK = 0.02
IDLE_RELEASE_S = 10.0
FLUSH_INTERVAL_S = 0.5
# While a lease holds reservations, the ledger hears from this proxy every third of the
# lease's TTL (10 s of 30); and a lease is not used later than a sixth of the TTL (5 s)
# before the TTL has passed since the ledger last acknowledged it.
HEARTBEAT_SHARE = 1 / 3
SAFETY_SHARE = 1 / 6
DEFAULT_LEASE_TTL_S = 30.0
# Rate-limit grants are named "s:<second>" by the ledger; each is used briefly, never renewed.
SLIDING_GRANT_PREFIX = "s:"
# What a client is told to wait when the budget service cannot be reached.
UNAVAILABLE_RETRY_AFTER_S = 2


@dataclass(frozen=True, slots=True)
class BudgetRule:
    name: str
    node: str
    key: str
    unit: str          # usd | tokens | requests
    limit: float
    model: str
    task: str
    action: str        # pause | alert
    window: str = "daily"

    @classmethod
    def from_proto(cls, budget: routing_pb2.Budget) -> BudgetRule:
        return cls(budget.name, budget.node, budget.key, budget.unit, budget.limit, budget.model, budget.task,
                   budget.action, budget.window)

    @property
    def is_rate_limit(self) -> bool:
        return self.window == "minute"

    def covers(self, key: KeyInfo, task: str) -> bool:
        scoped = (self.key == key.name) if self.key else (self.node in key.nodes)
        return scoped and (not self.task or self.task == task)


@dataclass(slots=True)
class _Lease:
    window: str = ""                # the grant's window id (rate limits: the grant's own id)
    available: float = 0.0
    resets_at_unix_ms: int = 0
    last_used: float = 0.0
    fleet_remaining: float = 0.0    # ungranted remainder at the last grant
    usable_until: float = 0.0       # monotonic: past it `available` may no longer be spent
    contact: float = 0.0            # monotonic: the ledger last acknowledged this lease
    inflight: int = 0               # reservations held from it
    ttl_s: float = DEFAULT_LEASE_TTL_S
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass(slots=True)
class Reservation:
    held: list[tuple[BudgetRule, str, float]]     # rule, window, amount reserved
    watched: list[BudgetRule]                      # alert-only budgets: report, never refuse


class BudgetExhausted(BudgetError):
    def __init__(self, rule: BudgetRule, resets_at_unix_ms: int, needed: float | None = None) -> None:
        scope = f"key {rule.key!r}" if rule.key else f"node {rule.node!r}"
        retry_after = {"Retry-After": str(max(1, math.ceil(resets_at_unix_ms / 1000 - time.time())))} \
            if resets_at_unix_ms else None
        if needed is not None:  # no lease could ever cover it
            super().__init__(
                429, f"This request's worst case ({needed:g} {rule.unit}) exceeds the whole limit of budget "
                     f"'{rule.name}' ({rule.limit:g} {rule.unit} for {scope}); set max_tokens lower.",
                type="budget_exceeded", code="budget_exceeded",
            )
            return
        if rule.is_rate_limit:
            super().__init__(
                429, f"Rate limit '{rule.name}' reached: {rule.limit:g} {rule.unit} per minute for {scope}.",
                type=rule.unit, code="rate_limit_exceeded", headers=retry_after,
            )
            return
        when = ("never (a total budget)" if not resets_at_unix_ms else
                datetime.fromtimestamp(resets_at_unix_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC"))
        super().__init__(
            429, f"Budget '{rule.name}' ({rule.limit:g} {rule.unit} for {scope}) is exhausted; it resets {when}.",
            type="budget_exceeded", code="budget_exceeded", headers=retry_after,
        )


class BudgetUnavailable(BudgetError):
    """The ledger could not be asked for more lease: not the client's limit, our outage."""

    def __init__(self, rule: BudgetRule) -> None:
        super().__init__(
            503, f"Budget '{rule.name}' cannot be checked right now: the control plane's budget service is "
                 f"unreachable. The request was not sent upstream; retry in a few seconds.",
            type="server_error", code="budget_unavailable",
            headers={"Retry-After": str(UNAVAILABLE_RETRY_AFTER_S)},
        )


class BudgetEnforcer:
    def __init__(self, node_id: str, link: ControlPlaneLink) -> None:
        self._node_id = node_id
        self._link = link
        self._addresses = link.addresses
        self._rules: list[BudgetRule] = []
        self._leases: dict[str, _Lease] = {}
        self._pending: dict[tuple[str, str], list[float]] = {}   # (budget, window) -> [consumed, released]
        self._channel: grpc.aio.Channel | None = None
        self._address_index = 0

    def set_rules(self, budgets) -> None:
        self._rules = [BudgetRule.from_proto(b) for b in budgets]

    def applicable(self, key: KeyInfo, task: str, models: set[str]) -> list[BudgetRule]:
        if not self._rules:
            return []
        return [r for r in self._rules if r.covers(key, task) and (not r.model or r.model in models)]

    async def reserve(self, rules: list[BudgetRule], amounts: dict[str, float]) -> Reservation:
        held: list[tuple[BudgetRule, str, float]] = []
        try:
            for rule in rules:
                if rule.action == "pause":
                    held.append(await self.hold(rule, amounts[rule.unit]))
        except BaseException:
            self.give_back(held)
            raise
        return Reservation(held, [r for r in rules if r.action != "pause"])

    async def hold(self, rule: BudgetRule, amount: float) -> tuple[BudgetRule, str, float]:
        """Take `amount` from the rule's lease (refilled from the ledger if short), or raise."""
        if amount > rule.limit:
            raise BudgetExhausted(rule, 0, needed=amount)
        lease = self._leases.setdefault(rule.name, _Lease())
        self._expire(rule.name, lease, time.monotonic())
        if lease.available < amount:
            await self._refill(rule, lease, amount)
        if lease.available < amount:
            raise BudgetExhausted(rule, lease.resets_at_unix_ms)
        lease.available -= amount
        lease.inflight += 1
        lease.last_used = time.monotonic()
        return rule, lease.window, amount

    def _expire(self, name: str, lease: _Lease, now: float) -> None:
        """A lease past its usable time gives its rest back; it is not spent any more."""
        if lease.available and now >= lease.usable_until and not lease.lock.locked():
            if lease.available > 0:
                self._add_pending(name, lease.window, released=lease.available)
            lease.available = 0.0

    def rate_limit_headers(self, reservation: Reservation) -> dict[str, str]:
        """OpenAI's `x-ratelimit-*` headers for the tightest per-minute limits
        that covered the request. Remaining is this proxy's lease plus what
        the ledger had left at its last grant: an estimate across the fleet."""
        headers: dict[str, str] = {}
        now_ms = time.time() * 1000
        for rule, _window, _amount in reservation.held:
            if not rule.is_rate_limit or rule.unit not in ("requests", "tokens"):
                continue
            lease = self._leases.get(rule.name)
            if lease is None:
                continue
            remaining = max(0, int(lease.available + lease.fleet_remaining))
            key = f"x-ratelimit-remaining-{rule.unit}"
            if key in headers and int(headers[key]) <= remaining:
                continue
            headers[f"x-ratelimit-limit-{rule.unit}"] = f"{rule.limit:g}"
            headers[key] = str(remaining)
            headers[f"x-ratelimit-reset-{rule.unit}"] = f"{max(0.0, (lease.resets_at_unix_ms - now_ms) / 1000):.0f}s"
        return headers

    def settle(self, reservation: Reservation, model: str | None, amounts: dict[str, float]) -> None:
        """`model` served the request (None: nothing was served, nothing spent)."""
        for rule, window, reserved in reservation.held:
            spent = amounts[rule.unit] if model is not None and (not rule.model or rule.model == model) else 0.0
            self._return(rule.name, window, reserved - spent, consumed=spent)
        for rule in reservation.watched:
            if model is not None and (not rule.model or rule.model == model):
                self._add_pending(rule.name, "", consumed=amounts[rule.unit])

    def give_back(self, held: list[tuple[BudgetRule, str, float]]) -> None:
        for rule, window, amount in held:
            self._return(rule.name, window, amount)

    def _return(self, name: str, window: str, rest: float, consumed: float = 0.0) -> None:
        """A reservation ends: `rest` (reserved minus spent; negative when usage overran the
        estimate) goes back to the lease it came from while that is still usable, else back
        to the ledger."""
        lease = self._leases.get(name)
        usable = lease is not None and lease.window == window and time.monotonic() < lease.usable_until
        if lease is not None and lease.window == window:
            lease.inflight = max(0, lease.inflight - 1)
        if usable:
            lease.available += rest  # type: ignore[union-attr]
            if consumed:
                self._add_pending(name, window, consumed=consumed)
        elif consumed or rest > 0:
            self._add_pending(name, window, consumed=consumed, released=max(0.0, rest))

    def _add_pending(self, budget: str, window: str, consumed: float = 0.0, released: float = 0.0) -> None:
        entry = self._pending.setdefault((budget, window), [0.0, 0.0])
        entry[0] += consumed
        entry[1] += released

    async def _refill(self, rule: BudgetRule, lease: _Lease, amount: float) -> None:
        async with lease.lock:
            if lease.available >= amount and time.monotonic() < lease.usable_until:
                return  # another request refilled it meanwhile
            want = min(rule.limit, max(amount - max(0.0, lease.available), rule.limit * LEASE_CHUNK))
            request = budgets_pb2.AcquireRequest(node_id=self._node_id, budget=rule.name, want=want)
            # Validity counts from before the call: the ledger counted the grant after this.
            sent = time.monotonic()
            for attempt in range(len(self._addresses)):
                try:
                    grant = await self._stub().Acquire(request, timeout=5, metadata=self._link.metadata)
                    break
                except grpc.aio.AioRpcError as exc:
                    log.warning("budget %s: lease refill failed: %s", rule.name, exc.code().name)
                    if exc.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND):
                        raise BudgetExhausted(rule, lease.resets_at_unix_ms) from None
                    self._rotate()
                    # A control plane that is gone (UNAVAILABLE) is skipped at once. If it had
                    # granted before dying, that grant stays leased to this proxy until it is
                    # reclaimed: counted as spent, never overspent. A timeout is not retried,
                    # as the slow replica may still grant.
                    if exc.code() != grpc.StatusCode.UNAVAILABLE or attempt == len(self._addresses) - 1:
                        # Fail closed: without the ledger no new spend can be covered.
                        raise BudgetUnavailable(rule) from None
            lease.ttl_s = grant.lease_ttl_s or DEFAULT_LEASE_TTL_S
            if grant.window != lease.window:
                # Another window (a new calendar window, or a new rate-limit grant): what is
                # left of the old lease goes back to the ledger, which frees it (or, for a
                # closed calendar window, ignores it).
                if lease.available > 0:
                    self._add_pending(rule.name, lease.window, released=lease.available)
                lease.available = 0.0
                lease.window = grant.window
                lease.inflight = 0
                lease.usable_until = sent + (grant.use_within_s or lease.ttl_s * (1 - SAFETY_SHARE))
            elif not grant.use_within_s:
                # The ledger saw us: the whole calendar lease is alive again.
                lease.usable_until = sent + lease.ttl_s * (1 - SAFETY_SHARE)
            lease.available += grant.granted
            lease.contact = sent
            # From the ledger's "resets in", not its absolute time: clocks differ.
            lease.resets_at_unix_ms = int(time.time() * 1000) + grant.resets_in_ms if grant.resets_in_ms else 0
            lease.fleet_remaining = grant.remaining

    def _stub(self) -> budgets_pb2_grpc.BudgetsStub:
        if self._channel is None:
            address = self._addresses[self._address_index % len(self._addresses)]
            self._channel = self._link.channel(address)
        return budgets_pb2_grpc.BudgetsStub(self._channel)

    def _rotate(self) -> None:
        """Try the next control-plane address from now on. The old channel is
        closed only later: closing it now would cancel other requests' calls
        still in flight on it (gRPC reconnects a channel by itself, so with one
        address there is nothing to do)."""
        if len(self._addresses) < 2 or self._channel is None:
            return
        old, self._channel = self._channel, None
        self._address_index += 1
        asyncio.get_running_loop().call_later(30, lambda: asyncio.ensure_future(old.close()))

    async def run(self) -> None:
        """Report consumption, keep held leases alive and hand back idle or expired ones,
        until cancelled."""
        while True:
            await asyncio.sleep(FLUSH_INTERVAL_S)
            self.tick(time.monotonic())
            await self.flush()

    def tick(self, now: float) -> None:
        for name, lease in self._leases.items():
            self._expire(name, lease, now)
            if lease.available > 0 and now - lease.last_used > IDLE_RELEASE_S and not lease.lock.locked():
                self._add_pending(name, lease.window, released=lease.available)
                lease.available = 0.0
            if lease.inflight and now - lease.contact > lease.ttl_s * HEARTBEAT_SHARE:
                self._add_pending(name, lease.window)  # nothing to settle: a heartbeat

    async def flush(self) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        request = budgets_pb2.SettleRequest(node_id=self._node_id, settlements=[
            budgets_pb2.Settlement(budget=budget, window=window, consumed=consumed, released=released)
            for (budget, window), (consumed, released) in pending.items()
        ])
        sent = time.monotonic()
        try:
            ack = await self._stub().Settle(request, timeout=5, metadata=self._link.metadata)
        except Exception as exc:  # keep the consumption and retry, never drop it ...
            code = exc.code() if isinstance(exc, grpc.aio.AioRpcError) else None
            if code is grpc.StatusCode.INVALID_ARGUMENT:  # ... unless it can never be accepted
                log.error("budget settlement refused by the control plane, dropped: %s", exc.details())
                return
            log.warning("budget settlement failed (%s); will retry", code.name if code else type(exc).__name__)
            self._rotate()
            for (budget, window), (consumed, released) in pending.items():
                self._add_pending(budget, window, consumed, released)
            return
        for refusal in ack.refused:
            log.error("budget %s: settlement for %s refused by the control plane: %s", refusal.budget,
                      refusal.window or "alert spend", refusal.reason)
        for budget, window in pending:
            lease = self._leases.get(budget)
            if lease is not None and lease.window == window:
                lease.contact = sent
                if not lease.window.startswith(SLIDING_GRANT_PREFIX):  # the ledger saw the calendar lease
                    lease.usable_until = sent + lease.ttl_s * (1 - SAFETY_SHARE)

    async def close(self) -> None:
        # Leases this proxy will no longer use go back before it exits.
        for name, lease in self._leases.items():
            if lease.available > 0:
                self._add_pending(name, lease.window, released=lease.available)
                lease.available = 0.0
        await self.flush()
        if self._channel is not None:
            await self._channel.close()


# Worst-case prompt: the estimate plus a margin, since it is only an estimate.
PROMPT_MARGIN = 1.25
PROMPT_SLACK_TOKENS = 32
# Output assumed when neither the request nor the model says how long it may be.
UNKNOWN_MAX_OUTPUT = 4096


def worst_case(prompt_tokens: int, output_tokens: int | None, endpoints) -> dict[str, float]:
    """The most a request can cost on any of `endpoints`, per budget unit.
    `output_tokens` None = what the model may produce at most (0: no output, embeddings)."""
    prompt = int(prompt_tokens * PROMPT_MARGIN) + PROMPT_SLACK_TOKENS
    usd = tokens = 0.0
    for endpoint in endpoints:
        output = output_tokens if output_tokens is not None else (endpoint.max_output_tokens or UNKNOWN_MAX_OUTPUT)
        usd = max(usd, cost_usd(endpoint.pricing, prompt, output))
        tokens = max(tokens, prompt + output)
    return {"usd": usd, "tokens": tokens, "requests": 1.0}


class Charge:
    """One request against the budgets covering it, as an async context:
    reserved before the upstream call, settled exactly once on leaving —
    at real usage when the relay reports it (`on_usage`), at nothing when
    nothing was served, and at the worst case when the request went
    upstream (`served_by`) but its usage never came back (the client left):
    undercounting is the one thing a budget must not do. With no budget
    covering the request every step is a no-op."""

    def __init__(self, enforcer: BudgetEnforcer, reservation: Reservation, reserved: dict[str, float],
                 endpoints: tuple = ()) -> None:
        self._enforcer = enforcer
        self._reservation = reservation
        self._reserved = reserved
        self._model: str | None = None
        self._settled = not (reservation.held or reservation.watched)
        # The plan's endpoints less those whose model's quota is spent: the ones to try.
        self.endpoints = endpoints

    @classmethod
    async def reserve(cls, enforcer: BudgetEnforcer, key: KeyInfo, task: str, endpoints,
                      prompt_tokens: int, output_tokens: int | None) -> Charge:
        """Reserve the request's worst case against every budget covering it.

        A model's own quota (a pause budget naming the model) that is spent takes that
        model's endpoints out of the plan, so the route's other models serve the request;
        only when no endpoint is left is the request refused (429 naming the budget)."""
        endpoints = tuple(endpoints)
        rules = enforcer.applicable(key, task, {e.model for e in endpoints})
        if not rules:
            return cls(enforcer, Reservation([], []), {}, endpoints)
        held: list[tuple[BudgetRule, str, float]] = []
        try:
            for rule in rules:
                if rule.action != "pause" or not rule.model:
                    continue
                serving = [e for e in endpoints if e.model == rule.model]
                if not serving:
                    continue  # an earlier quota already took this model out
                try:
                    held.append(await enforcer.hold(
                        rule, worst_case(prompt_tokens, output_tokens, serving)[rule.unit]))
                except BudgetExhausted:
                    endpoints = tuple(e for e in endpoints if e.model != rule.model)
                    if not endpoints:
                        raise
            reserved = worst_case(prompt_tokens, output_tokens, endpoints)
            others = [r for r in rules if not (r.action == "pause" and r.model)]
            reservation = await enforcer.reserve(others, reserved)
        except BaseException:
            enforcer.give_back(held)
            raise
        # Quotas of models no longer in the plan hold nothing (they were spent or skipped).
        models = {e.model for e in endpoints}
        kept = [entry for entry in held if entry[0].model in models]
        enforcer.give_back([entry for entry in held if entry[0].model not in models])
        reservation = Reservation(kept + reservation.held,
                                  [r for r in reservation.watched if not r.model or r.model in models])
        return cls(enforcer, reservation, reserved, endpoints)

    async def __aenter__(self) -> Charge:
        return self

    async def __aexit__(self, *_exc) -> None:
        # Served but unreported: the worst case; never served: nothing.
        self._settle(self._model, self._reserved if self._model is not None else {})

    def served_by(self, model: str) -> None:
        """The request reached `model` upstream: it may now cost something."""
        self._model = model

    def headers(self) -> dict[str, str]:
        return self._enforcer.rate_limit_headers(self._reservation) if self._reservation.held else {}

    def on_usage(self, endpoint, usage, cost: float) -> None:
        spent = {"usd": cost, "tokens": float(usage.prompt_tokens + usage.completion_tokens), "requests": 1.0}
        self._settle(endpoint.model, spent)

    def _settle(self, model: str | None, spent: dict[str, float]) -> None:
        if not self._settled:
            self._settled = True
            self._enforcer.settle(self._reservation, model, spent)
