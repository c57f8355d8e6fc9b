"""Embedded SQLite backend for the control-plane store.

Only the control-plane process writes the database, so watches are fed in-process: every
committed write is published to the watchers on the event loop, and the events table lets a
watcher replay history (or catch up after falling behind) without gaps or duplicates.

Leases are rows with an expiry time in wall-clock seconds (they outlive a restart, like
etcd's); a reaper task deletes the keys of expired leases while any lease exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import sqlite3
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Literal, TypeVar

from .base import (
    CasConflict,
    Compacted,
    Event,
    KeyValue,
    LeaseNotFound,
    Store,
    StoreError,
    check_lease_arg,
    check_revision_arg,
    check_ttl_arg,
)

_T = TypeVar("_T")
log = logging.getLogger("megarouter.controlplane.store")

_SCHEMA_VERSION = 2
_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS kv (
        key TEXT PRIMARY KEY,
        value BLOB NOT NULL,
        create_revision INTEGER NOT NULL,
        mod_revision INTEGER NOT NULL,
        lease INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID""",
    "CREATE TABLE IF NOT EXISTS leases (id INTEGER PRIMARY KEY, ttl REAL NOT NULL, expires_at REAL NOT NULL)",
    """CREATE TABLE IF NOT EXISTS events (
        revision INTEGER PRIMARY KEY,
        type TEXT NOT NULL CHECK (type IN ('put', 'delete')),
        key TEXT NOT NULL,
        value BLOB NOT NULL
    )""",
    "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    # compact_revision is the oldest revision a watch may start from (0: nothing dropped).
    "INSERT OR IGNORE INTO meta (name, value) VALUES ('revision', 0), ('compact_revision', 0)",
    "CREATE INDEX IF NOT EXISTS kv_lease ON kv (lease) WHERE lease != 0",
    "CREATE INDEX IF NOT EXISTS leases_expiry ON leases (expires_at)",
    f"PRAGMA user_version = {_SCHEMA_VERSION}",
)
# Version 1 (before leases) had the same tables without kv.lease and the leases table.
_MIGRATE_FROM_1 = ("ALTER TABLE kv ADD COLUMN lease INTEGER NOT NULL DEFAULT 0",)
# How often the reaper looks for expired leases: a lease's keys outlive it by at most this.
_REAP_INTERVAL_S = 0.25

# A watcher buffers at most this many live events. Past that it drops the buffer and re-reads
# the events table once its consumer catches up, so a slow consumer never holds up writers
# nor grows memory without bound.
_LIVE_BUFFER_LIMIT = 1024
_REPLAY_BATCH = 512


def _prefix_end(prefix: str) -> str | None:
    """The smallest key above every key starting with prefix; None when there is none.

    SQLite compares TEXT as UTF-8 bytes, which orders exactly like Python's code points.
    """
    chars = list(prefix)
    while chars:
        code = ord(chars[-1]) + 1
        if code == 0xD800:  # surrogates cannot be encoded; skip over them
            code = 0xE000
        if code <= 0x10FFFF:
            chars[-1] = chr(code)
            return "".join(chars)
        chars.pop()
    return None


def _prefix_clause(prefix: str) -> tuple[str, tuple[str, ...]]:
    end = _prefix_end(prefix)
    if end is None:
        return "key >= ?", (prefix,)
    return "key >= ? AND key < ?", (prefix, end)


@contextmanager
def _transaction(conn: sqlite3.Connection, begin: str = "BEGIN IMMEDIATE") -> Iterator[None]:
    conn.execute(begin)
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


class _Database:
    """The synchronous SQLite side. Every method runs on the store's single worker thread."""

    def __init__(self, path: str, history_limit: int) -> None:
        self._history_limit = history_limit
        # Called on this thread after each committed write; set by the owning store.
        self.on_commit: Callable[[Event], None] = lambda event: None
        _owner_only(path)
        # Autocommit mode: transactions are explicit, so each write is exactly one of them.
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise StoreError(f"cannot enable WAL journal mode on {path} (got {mode!r})")
            conn.execute("PRAGMA synchronous=FULL")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > _SCHEMA_VERSION:
                raise StoreError(
                    f"{path} has store schema version {version}; this build supports "
                    f"up to {_SCHEMA_VERSION}"
                )
            with _transaction(conn):
                if version == 1:
                    for statement in _MIGRATE_FROM_1:
                        conn.execute(statement)
                for statement in _SCHEMA:
                    conn.execute(statement)
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def close(self) -> None:
        self._conn.close()

    def _meta(self, name: str) -> int:
        return self._conn.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()[0]

    def _set_meta(self, name: str, value: int) -> None:
        self._conn.execute("UPDATE meta SET value = ? WHERE name = ?", (value, name))

    def revision(self) -> int:
        return self._meta("revision")

    def get(self, key: str) -> KeyValue | None:
        row = self._conn.execute(
            "SELECT key, value, create_revision, mod_revision FROM kv WHERE key = ?", (key,)
        ).fetchone()
        return KeyValue(*row) if row else None

    def list_prefix(self, prefix: str) -> tuple[list[KeyValue], int]:
        where, args = _prefix_clause(prefix)
        # A read transaction gives items and revision from one snapshot.
        with _transaction(self._conn, "BEGIN"):
            rows = self._conn.execute(
                f"SELECT key, value, create_revision, mod_revision FROM kv WHERE {where} "
                "ORDER BY key",
                args,
            ).fetchall()
            revision = self._meta("revision")
        return [KeyValue(*row) for row in rows], revision

    def put(self, key: str, value: bytes, expected: int | None, lease: int) -> int:
        with _transaction(self._conn):
            row = self._conn.execute("SELECT mod_revision FROM kv WHERE key = ?", (key,)).fetchone()
            _check_expected(key, expected, row[0] if row else 0)
            if lease and not self._lease_alive(lease, time.time()):
                raise LeaseNotFound(lease)
            revision = self._append_event("put", key, value)
            # An existing key keeps its create_revision.
            self._conn.execute(
                "INSERT INTO kv (key, value, create_revision, mod_revision, lease) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value, "
                "mod_revision = excluded.mod_revision, lease = excluded.lease",
                (key, value, revision, revision, lease),
            )
        # Published from this thread, after the commit and before the caller's future
        # resolves, so watchers see events in commit order and before put() returns.
        self.on_commit(Event("put", key, value, revision))
        return revision

    def delete(self, key: str, expected: int | None) -> int | None:
        with _transaction(self._conn):
            row = self._conn.execute("SELECT mod_revision FROM kv WHERE key = ?", (key,)).fetchone()
            _check_expected(key, expected, row[0] if row else 0)
            if row is None:
                return None
            revision = self._append_event("delete", key, b"")
            self._conn.execute("DELETE FROM kv WHERE key = ?", (key,))
        self.on_commit(Event("delete", key, b"", revision))
        return revision

    def commit(self, checks: list[tuple[str, int]], writes: list[tuple[str, bytes | None]]) -> int:
        events: list[Event] = []
        with _transaction(self._conn):
            revision = self._meta("revision")
            for key, expected in checks:
                row = self._conn.execute("SELECT mod_revision FROM kv WHERE key = ?", (key,)).fetchone()
                _check_expected(key, expected, row[0] if row else 0)
            for key, value in writes:
                if value is None:
                    if self._conn.execute("DELETE FROM kv WHERE key = ?", (key,)).rowcount:
                        revision = self._append_event("delete", key, b"")
                        events.append(Event("delete", key, b"", revision))
                    continue
                revision = self._append_event("put", key, value)
                self._conn.execute(
                    "INSERT INTO kv (key, value, create_revision, mod_revision, lease) VALUES (?, ?, ?, ?, 0) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value, "
                    "mod_revision = excluded.mod_revision, lease = 0",
                    (key, value, revision, revision),
                )
                events.append(Event("put", key, value, revision))
        for event in events:
            self.on_commit(event)
        return revision

    # -- leases ----------------------------------------------------------------------------

    def _lease_alive(self, lease: int, now: float) -> bool:
        row = self._conn.execute("SELECT expires_at FROM leases WHERE id = ?", (lease,)).fetchone()
        return row is not None and row[0] > now

    def grant_lease(self, ttl: float) -> int:
        with _transaction(self._conn):
            cursor = self._conn.execute(
                "INSERT INTO leases (ttl, expires_at) VALUES (?, ?)", (ttl, time.time() + ttl)
            )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def keep_alive(self, lease: int) -> float:
        now = time.time()
        with _transaction(self._conn):
            cursor = self._conn.execute(
                "UPDATE leases SET expires_at = ? + ttl WHERE id = ? AND expires_at > ? RETURNING ttl",
                (now, lease, now),
            )
            row = cursor.fetchone()
        if row is None:
            raise LeaseNotFound(lease)
        return row[0]

    def revoke_lease(self, lease: int) -> None:
        for event in self._end_leases("id = ?", (lease,)):
            self.on_commit(event)

    def expire_leases(self) -> bool:
        """End every lease past its expiry; whether any lease is left."""
        now = time.time()
        # Usually nothing has expired: a read, not a write transaction, every reaper tick.
        if self._conn.execute("SELECT 1 FROM leases WHERE expires_at <= ? LIMIT 1", (now,)).fetchone():
            for event in self._end_leases("expires_at <= ?", (now,)):
                self.on_commit(event)
        return self._conn.execute("SELECT 1 FROM leases LIMIT 1").fetchone() is not None

    def _end_leases(self, where: str, args: tuple[float | int, ...]) -> list[Event]:
        events: list[Event] = []
        with _transaction(self._conn):
            ended = [row[0] for row in self._conn.execute(f"SELECT id FROM leases WHERE {where}", args)]
            for lease in ended:
                keys = self._conn.execute("SELECT key FROM kv WHERE lease = ? ORDER BY key", (lease,)).fetchall()
                for (key,) in keys:
                    revision = self._append_event("delete", key, b"")
                    self._conn.execute("DELETE FROM kv WHERE key = ?", (key,))
                    events.append(Event("delete", key, b"", revision))
                self._conn.execute("DELETE FROM leases WHERE id = ?", (lease,))
        return events  # published after the commit, like every other write

    def has_leases(self) -> bool:
        return self._conn.execute("SELECT 1 FROM leases LIMIT 1").fetchone() is not None

    def _append_event(self, type_: Literal["put", "delete"], key: str, value: bytes) -> int:
        revision = self._meta("revision") + 1
        self._set_meta("revision", revision)
        self._conn.execute(
            "INSERT INTO events (revision, type, key, value) VALUES (?, ?, ?, ?)",
            (revision, type_, key, value),
        )
        # Every revision has exactly one event, so the retained history is the contiguous
        # range [oldest, revision]: no COUNT needed, and trimming is a small primary-key
        # range delete (usually one row).
        oldest = max(self._meta("compact_revision"), 1)
        if revision - oldest + 1 > self._history_limit:
            self._drop_history_before(revision - self._history_limit + 1)
        return revision

    def _drop_history_before(self, revision: int) -> None:
        self._conn.execute("DELETE FROM events WHERE revision < ?", (revision,))
        self._set_meta("compact_revision", revision)

    def compact(self, revision: int) -> None:
        with _transaction(self._conn):
            current = self._meta("revision")
            if revision > current:
                raise StoreError(
                    f"cannot compact to revision {revision}: the current revision is {current}"
                )
            if revision > self._meta("compact_revision"):
                self._drop_history_before(revision)

    def read_events(self, prefix: str, start: int, limit: int) -> tuple[list[Event], int, int]:
        """Up to limit events under prefix from revision start on, plus the current and the
        compact revision (the caller checks it), all from one snapshot."""
        where, args = _prefix_clause(prefix)
        with _transaction(self._conn, "BEGIN"):
            current = self._meta("revision")
            compact = self._meta("compact_revision")
            rows = self._conn.execute(
                f"SELECT type, key, value, revision FROM events WHERE revision >= ? AND {where} "
                "ORDER BY revision LIMIT ?",
                (start, *args, limit),
            ).fetchall()
        return [Event(*row) for row in rows], current, compact


def _check_expected(key: str, expected: int | None, actual: int) -> None:
    if expected is not None and expected != actual:
        raise CasConflict(key, expected, actual)


class SqliteStore(Store):
    """Store backed by one SQLite file; open it with ``await SqliteStore.open(path)``."""

    def __init__(self, database: _Database, executor: ThreadPoolExecutor, revision: int) -> None:
        self._db = database
        database.on_commit = self._publish_threadsafe
        self._executor = executor
        self._loop = asyncio.get_running_loop()
        self._closed = False
        # The latest revision handed to the watchers; "watch from now" starts after it.
        self._published_revision = revision
        # Weak, so a watch the consumer abandoned without aclose() is simply collected.
        self._watchers: weakref.WeakSet[_Watch] = weakref.WeakSet()
        self._reaper: asyncio.Task[None] | None = None
        self._lock = -1  # the file descriptor holding the database's exclusive lock

    @classmethod
    async def open(
        cls, path: str | os.PathLike[str], *, history_limit: int = 10_000
    ) -> SqliteStore:
        if history_limit < 1:
            raise StoreError(f"history_limit must be at least 1, got {history_limit}")
        # Watches are fed in-process, so a second process on the same file would see none of
        # this one's writes (and vice versa): refuse it rather than serve stale tables.
        lock = _lock_exclusively(f"{os.fspath(path)}.lock")
        loop = asyncio.get_running_loop()
        # One worker thread: sqlite3 connections are single-threaded, and it serialises all
        # operations so each CAS check and its write are atomic with respect to each other.
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="megarouter-store")
        try:
            database = await loop.run_in_executor(
                executor, _Database, os.fspath(path), history_limit
            )
            revision = await loop.run_in_executor(executor, database.revision)
            leases_left = await loop.run_in_executor(executor, database.has_leases)
        except sqlite3.Error as exc:
            executor.shutdown(wait=False)
            os.close(lock)
            raise StoreError(f"cannot open store database {os.fspath(path)}: {exc}") from exc
        except BaseException:
            executor.shutdown(wait=False)
            os.close(lock)
            raise
        store = cls(database, executor, revision)
        store._lock = lock
        if leases_left:  # leases from before a restart still expire
            store._start_reaper()
        return store

    async def _run(self, fn: Callable[..., _T], *args: object) -> _T:
        if self._closed:
            raise StoreError("the store is closed")
        try:
            return await self._loop.run_in_executor(self._executor, fn, *args)
        except sqlite3.Error as exc:
            raise StoreError(f"store database error: {exc}") from exc

    def _publish_threadsafe(self, event: Event) -> None:
        try:
            self._loop.call_soon_threadsafe(self._publish, event)
        except RuntimeError:  # the loop is closed: nobody is left to watch
            pass

    def _publish(self, event: Event) -> None:
        self._published_revision = event.revision
        for watcher in list(self._watchers):
            watcher.offer(event)

    async def get(self, key: str) -> KeyValue | None:
        return await self._run(self._db.get, _checked_key(key))

    async def list(self, prefix: str) -> tuple[list[KeyValue], int]:
        return await self._run(self._db.list_prefix, prefix)

    async def put(
        self, key: str, value: bytes, *, expected_revision: int | None = None, lease: int = 0
    ) -> int:
        check_revision_arg(expected_revision)
        check_lease_arg(lease)
        return await self._run(self._db.put, _checked_key(key), bytes(value), expected_revision, lease)

    async def delete(self, key: str, *, expected_revision: int | None = None) -> int | None:
        check_revision_arg(expected_revision)
        return await self._run(self._db.delete, _checked_key(key), expected_revision)

    async def revision(self) -> int:
        return await self._run(self._db.revision)

    async def commit(
        self, checks: Sequence[tuple[str, int]], writes: Sequence[tuple[str, bytes | None]]
    ) -> int:
        checked = [(_checked_key(key), expected) for key, expected in checks]
        for _key, expected in checked:
            check_revision_arg(expected)
        staged = [(_checked_key(key), None if value is None else bytes(value)) for key, value in writes]
        if not staged:
            raise StoreError("a commit needs at least one write")
        return await self._run(self._db.commit, checked, staged)

    async def grant_lease(self, ttl_s: float) -> int:
        check_ttl_arg(ttl_s)
        lease = await self._run(self._db.grant_lease, float(ttl_s))
        self._start_reaper()
        return lease

    async def keep_alive(self, lease_id: int) -> float:
        check_lease_arg(lease_id)
        return await self._run(self._db.keep_alive, lease_id)

    async def revoke_lease(self, lease_id: int) -> None:
        check_lease_arg(lease_id)
        await self._run(self._db.revoke_lease, lease_id)

    def _start_reaper(self) -> None:
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.create_task(self._reap(), name="store-lease-reaper")

    async def _reap(self) -> None:
        """Delete the keys of expired leases until no lease is left (grant_lease restarts it)."""
        while not self._closed:
            await asyncio.sleep(_REAP_INTERVAL_S)
            try:
                if not await self._run(self._db.expire_leases):
                    return
            except StoreError as exc:
                if self._closed:
                    return
                log.warning("expiring leases failed, will retry: %s", exc)

    async def compact(self, revision: int) -> None:
        """Drop history before revision (SQLite-specific; normally history_limit does it)."""
        await self._run(self._db.compact, revision)

    def watch(self, prefix: str, start_revision: int) -> _Watch:
        if self._closed:
            raise StoreError("the store is closed")
        # Registered now, not on first iteration, so "from now" means from this call.
        watcher = _Watch(self, prefix, start_revision)
        self._watchers.add(watcher)
        return watcher

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError, StoreError):
                await self._reaper
        for watcher in list(self._watchers):
            watcher.finish()
        self._watchers.clear()
        try:
            # Queued behind any operation already submitted, which therefore completes.
            await self._loop.run_in_executor(self._executor, self._db.close)
        finally:
            self._executor.shutdown(wait=False)
            if self._lock >= 0:
                os.close(self._lock)  # releases the lock
                self._lock = -1


def _owner_only(path: str) -> None:
    """Make the database and its WAL and shared-memory files mode 0600 — created so if new
    (SQLite gives the -wal and -shm files the database file's mode), tightened if an older
    version left them readable by others: they hold API-key and token hashes."""
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    for name in (path, f"{path}-wal", f"{path}-shm", f"{path}.lock"):
        try:
            if os.stat(name).st_mode & 0o077:
                os.chmod(name, 0o600)
        except FileNotFoundError:
            continue


def _lock_exclusively(path: str) -> int:
    """An fd holding an exclusive lock on `path` (released when the fd is closed, or the
    process dies); StoreError naming the holder if another process has it."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise StoreError(f"cannot create the store lock file {path}: {exc}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise StoreError(
            f"the store {path.removesuffix('.lock')} is in use by {holder}: the embedded store serves one "
            "control plane; run several on etcd (--store etcd://...)"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()}\n".encode(), 0)
    return fd


def _checked_key(key: str) -> str:
    if not isinstance(key, str) or not key:
        raise StoreError(f"a key must be a non-empty string, got {key!r}")
    return key




class _Watch:
    """One watch: replays history from the events table, then follows published events.

    The watcher is registered before its history is read, so an event committed during the
    replay is both in the table and in the live buffer; events below the replay's revision
    are skipped, which gives no gaps and no duplicates.
    """

    def __init__(self, store: SqliteStore, prefix: str, start_revision: int) -> None:
        self._store = store
        self._prefix = prefix
        self._replay: deque[Event] = deque()
        self._live: deque[Event] = deque()
        self._wakeup = asyncio.Event()
        self._overflowed = False
        self._finished = False
        self._needs_history = start_revision > 0
        if self._needs_history:
            self._next_revision = start_revision
        else:
            self._next_revision = store._published_revision + 1

    def offer(self, event: Event) -> None:
        if self._overflowed or not event.key.startswith(self._prefix):
            return
        if len(self._live) >= _LIVE_BUFFER_LIMIT:
            self._live.clear()
            self._overflowed = True
        else:
            self._live.append(event)
        self._wakeup.set()

    def finish(self) -> None:
        self._finished = True
        self._replay.clear()
        self._live.clear()
        self._wakeup.set()

    def __aiter__(self) -> _Watch:
        return self

    async def __anext__(self) -> Event:
        while not self._finished:
            if self._replay:
                return self._replay.popleft()
            if self._needs_history:
                await self._read_history()
                continue
            while self._live:
                event = self._live.popleft()
                if event.revision >= self._next_revision:
                    self._next_revision = event.revision + 1
                    return event
            if self._overflowed:
                # Buffering resumes now; whatever was dropped is re-read from the table.
                self._overflowed = False
                self._needs_history = True
                continue
            self._wakeup.clear()
            await self._wakeup.wait()
        raise StopAsyncIteration

    async def _read_history(self) -> None:
        try:
            events, current, compact = await self._store._run(
                self._store._db.read_events, self._prefix, self._next_revision, _REPLAY_BATCH
            )
        except StoreError:
            if self._finished:  # the store closed meanwhile: just end the iteration
                return
            raise
        if self._next_revision < compact:
            requested = self._next_revision
            await self.aclose()
            raise Compacted(requested, compact)
        self._replay.extend(events)
        if len(events) == _REPLAY_BATCH:
            self._next_revision = events[-1].revision + 1
        else:
            self._next_revision = max(self._next_revision, current + 1)
            self._needs_history = False

    async def aclose(self) -> None:
        self.finish()
        self._store._watchers.discard(self)
