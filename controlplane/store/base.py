"""The control plane's key-value store interface.

The model follows etcd so that an etcd backend can implement it directly: one global revision
counter shared by all keys, per-key create/mod revisions, compare-and-swap on a key's
mod_revision, and prefix watches that can resume from any revision still in the history.
"""

from __future__ import annotations

import abc
import math
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int


@dataclass(frozen=True, slots=True)
class Event:
    type: Literal["put", "delete"]
    key: str
    value: bytes  # b"" for a delete
    revision: int


class StoreError(Exception):
    """Any failure of the store: closed store, storage error, bad argument."""


class CasConflict(StoreError):
    """A compare-and-swap precondition did not hold."""

    def __init__(self, key: str, expected: int, actual: int) -> None:
        self.key = key
        self.expected = expected
        self.actual = actual  # 0 when the key is absent
        super().__init__(
            f"compare-and-swap conflict on {key!r}: expected revision {_rev_text(expected)}, "
            f"actual revision {_rev_text(actual)}"
        )


class LeaseNotFound(StoreError):
    """The lease expired, was revoked, or never existed."""

    def __init__(self, lease_id: int) -> None:
        self.lease_id = lease_id
        super().__init__(f"lease {lease_id:x} does not exist (it expired or was revoked)")


class Compacted(StoreError):
    """A watch asked for history older than what the store still retains."""

    def __init__(self, requested_revision: int, compact_revision: int) -> None:
        self.requested_revision = requested_revision
        # Like etcd: the oldest revision a watch can still start from.
        self.compact_revision = compact_revision
        super().__init__(
            f"revision {requested_revision} has been compacted; "
            f"the oldest revision still available is {compact_revision}"
        )


def check_revision_arg(expected_revision: int | None) -> None:
    if expected_revision is not None and expected_revision < 0:
        raise StoreError(f"expected_revision must be >= 0, got {expected_revision}")


def check_lease_arg(lease: int) -> None:
    if not isinstance(lease, int) or lease < 0:
        raise StoreError(f"a lease id must be an integer >= 0, got {lease!r}")


def check_ttl_arg(ttl_s: float) -> None:
    if not (isinstance(ttl_s, int | float) and math.isfinite(ttl_s) and ttl_s > 0):
        raise StoreError(f"a lease's ttl must be a positive number of seconds, got {ttl_s!r}")


def _rev_text(revision: int) -> str:
    return f"{revision} (key absent)" if revision == 0 else str(revision)


class Store(abc.ABC):
    """Async key-value store with global revisions, CAS and resumable prefix watches.

    Every successful put or delete increments the store revision by exactly one and stamps
    the key's mod_revision with it; create_revision is the revision that created the key
    (a delete followed by a put creates it anew).
    """

    @abc.abstractmethod
    async def get(self, key: str) -> KeyValue | None:
        """The key's current value, or None if it is absent."""

    @abc.abstractmethod
    async def list(self, prefix: str) -> tuple[list[KeyValue], int]:
        """All keys starting with prefix, sorted by key, with the store revision they were
        read at (read atomically, so a watch from revision + 1 continues without a gap)."""

    @abc.abstractmethod
    async def put(
        self, key: str, value: bytes, *, expected_revision: int | None = None, lease: int = 0
    ) -> int:
        """Write the key and return the new store revision.

        expected_revision: None writes unconditionally; 0 creates only (the key must be
        absent); n > 0 requires the key's mod_revision to be n. Otherwise CasConflict.
        lease: attach the key to this lease (see grant_lease), so it is deleted when the lease
        ends; 0 attaches it to none (and detaches it from a lease it had). LeaseNotFound if the
        lease has ended.
        """

    @abc.abstractmethod
    async def delete(self, key: str, *, expected_revision: int | None = None) -> int | None:
        """Delete the key; return the revision of the delete, or None if it was absent.

        expected_revision n > 0 requires the key to exist with mod_revision n, otherwise
        CasConflict. expected_revision 0 requires the key to be absent (so nothing is
        deleted: None is returned, or CasConflict if the key exists).
        """

    @abc.abstractmethod
    async def revision(self) -> int:
        """The current store revision; 0 for a new, empty store."""

    @abc.abstractmethod
    def watch(self, prefix: str, start_revision: int) -> AsyncIterator[Event]:
        """Events for keys under prefix, in revision order, without gaps or duplicates.

        First every retained event with revision >= start_revision, then live events until
        the consumer closes the iterator (aclose) or the store is closed (the iterator then
        ends). start_revision <= 0 means "from now": only events after this call. If
        start_revision is older than the retained history, the first iteration raises
        Compacted.
        """

    @abc.abstractmethod
    async def commit(
        self, checks: Sequence[tuple[str, int]], writes: Sequence[tuple[str, bytes | None]]
    ) -> int:
        """Apply several writes atomically if every check holds; return the commit's revision.

        checks: (key, mod_revision) pairs, 0 meaning the key must be absent. If one fails,
        nothing is written and CasConflict names the first failing key.
        writes: (key, value) puts, or (key, None) deletes (of a key that may be absent), applied
        in order. etcd gives the whole commit one revision; SQLite gives each write the next
        revision, and returns the last. Either way every write is an event, watchers see them
        in order, and no other write falls between them.
        """

    # -- leases (as in etcd): keys that live only while their owner keeps renewing them -----

    @abc.abstractmethod
    async def grant_lease(self, ttl_s: float) -> int:
        """A new lease (its id, > 0) that ends ttl_s seconds from now unless kept alive.

        The backend may round ttl_s up (etcd counts whole seconds and has a minimum)."""

    @abc.abstractmethod
    async def keep_alive(self, lease_id: int) -> float:
        """Restart the lease's time to live and return it (seconds); LeaseNotFound if the
        lease has already ended."""

    @abc.abstractmethod
    async def revoke_lease(self, lease_id: int) -> None:
        """End the lease now, deleting every key attached to it (each delete is an event;
        etcd gives them all one revision). Revoking a lease that has already ended does
        nothing."""

    @abc.abstractmethod
    async def close(self) -> None:
        """End all watches and release resources; later operations raise StoreError.

        Closing an already closed store does nothing."""
