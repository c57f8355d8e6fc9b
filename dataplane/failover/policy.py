"""A route's failover settings, with the documented defaults applied."""

from __future__ import annotations

from dataclasses import dataclass

from dataplane.providers.base import FAILOVER_CLASSES, ErrorClass
from megarouter.resources import (
    DEFAULT_BACKOFF_BASE_S,
    DEFAULT_BACKOFF_MAX_S,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_PER_TRY_TIMEOUT_S,
    DEFAULT_RETRY_BUDGET_RATIO,
    DEFAULT_TOTAL_TIMEOUT_S,
)
from megarouter.v1 import routing_pb2


@dataclass(frozen=True, slots=True)
class FailoverPolicy:
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    per_try_timeout_s: float = DEFAULT_PER_TRY_TIMEOUT_S
    total_timeout_s: float = DEFAULT_TOTAL_TIMEOUT_S
    retry_on: frozenset[ErrorClass] = FAILOVER_CLASSES
    backoff_base_s: float = DEFAULT_BACKOFF_BASE_S
    backoff_max_s: float = DEFAULT_BACKOFF_MAX_S
    ttft_timeout_s: float = DEFAULT_PER_TRY_TIMEOUT_S
    stall_timeout_s: float = DEFAULT_PER_TRY_TIMEOUT_S
    retry_budget_ratio: float = DEFAULT_RETRY_BUDGET_RATIO

    @classmethod
    def from_proto(cls, retry: routing_pb2.RetryPolicy) -> FailoverPolicy:
        per_try = retry.per_try_timeout_s or DEFAULT_PER_TRY_TIMEOUT_S
        # Only classes that are about the endpoint may be retried, whatever
        # the route says: the caller's own errors never are.
        retry_on = frozenset(ErrorClass(name) for name in retry.retry_on if name in FAILOVER_CLASSES)
        return cls(
            max_attempts=retry.max_attempts or DEFAULT_MAX_ATTEMPTS,
            per_try_timeout_s=per_try,
            total_timeout_s=retry.total_timeout_s or DEFAULT_TOTAL_TIMEOUT_S,
            retry_on=retry_on or FAILOVER_CLASSES,
            backoff_base_s=retry.backoff_base_s or DEFAULT_BACKOFF_BASE_S,
            backoff_max_s=retry.backoff_max_s or DEFAULT_BACKOFF_MAX_S,
            ttft_timeout_s=retry.ttft_timeout_s or per_try,
            stall_timeout_s=retry.stall_timeout_s or per_try,
            retry_budget_ratio=retry.retry_budget_ratio or DEFAULT_RETRY_BUDGET_RATIO,
        )


DEFAULT_POLICY = FailoverPolicy()
