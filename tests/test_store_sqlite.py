"""The store contract on the SQLite backend, plus what is specific to SQLite."""

from __future__ import annotations

import gc
import os
import sqlite3
from collections.abc import AsyncIterator
from contextlib import aclosing
from pathlib import Path

import pytest

from controlplane.store import Compacted, SqliteStore, Store, StoreError, open_store
from controlplane.store import sqlite as sqlite_backend

try:
    from store_contract import StoreContract, StoreFactory, take
except ImportError:  # tests/ imported as a package
    from tests.store_contract import StoreContract, StoreFactory, take


class TestSqliteStore(StoreContract):
    @pytest.fixture
    async def store_factory(self, tmp_path: Path) -> AsyncIterator[StoreFactory]:
        opened: list[Store] = []

        async def factory(**kwargs: int) -> Store:
            store = await SqliteStore.open(tmp_path / "store.db", **kwargs)
            opened.append(store)
            return store

        yield factory
        for store in opened:
            await store.close()

    async def compact_history(self, store: Store, revision: int) -> None:
        assert isinstance(store, SqliteStore)
        await store.compact(revision)


class TestSqliteStoreTinyBuffers(TestSqliteStore):
    """The whole contract again with tiny replay pages and live buffers, so that paged replay
    and the overflow fallback (slow watchers) are exercised by every watch test."""

    @pytest.fixture(autouse=True)
    def _tiny_buffers(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(sqlite_backend, "_REPLAY_BATCH", 2)
        monkeypatch.setattr(sqlite_backend, "_LIVE_BUFFER_LIMIT", 3)


async def test_history_limit_compacts_old_events(tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    store = await SqliteStore.open(db, history_limit=5)
    try:
        for i in range(12):
            await store.put(f"h/{i}", b"x")
        with pytest.raises(Compacted) as info:
            await take(store.watch("h/", 1), 1)
        assert info.value.compact_revision == 8  # the five newest revisions remain
        async with aclosing(store.watch("", 8)) as events:
            assert [e.revision for e in await take(events, 5)] == [8, 9, 10, 11, 12]
    finally:
        await store.close()
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT min(revision), count(*) FROM events").fetchone() == (8, 5)
        meta = dict(conn.execute("SELECT name, value FROM meta"))
        assert meta == {"revision": 12, "compact_revision": 8}
    conn.close()


async def test_compacted_history_persists_across_restart(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "store.db")
    for i in range(4):
        await store.put("k", str(i).encode())
    await store.compact(3)
    with pytest.raises(StoreError, match="current revision is 4"):
        await store.compact(5)
    await store.close()
    store = await SqliteStore.open(tmp_path / "store.db")
    try:
        with pytest.raises(Compacted):
            await take(store.watch("k", 2), 1)
        assert [e.value for e in await take(store.watch("k", 3), 2)] == [b"2", b"3"]
    finally:
        await store.close()


async def test_database_settings(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "store.db")
    try:
        conn = store._db._conn
        pragmas = await store._run(
            lambda: (
                conn.execute("PRAGMA journal_mode").fetchone()[0],
                conn.execute("PRAGMA synchronous").fetchone()[0],
            )
        )
        assert pragmas == ("wal", 2)  # 2 = FULL
        with pytest.raises(StoreError, match="history_limit"):
            await SqliteStore.open(tmp_path / "other.db", history_limit=0)
        with pytest.raises(StoreError, match="non-empty"):
            await store.put("", b"x")
    finally:
        await store.close()


async def test_schema_1_database_gains_leases(tmp_path: Path) -> None:
    """A store written before leases existed opens, keeps its data and can use leases."""
    path = tmp_path / "store.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(
        """
        CREATE TABLE kv (key TEXT PRIMARY KEY, value BLOB NOT NULL,
                         create_revision INTEGER NOT NULL, mod_revision INTEGER NOT NULL) WITHOUT ROWID;
        CREATE TABLE events (revision INTEGER PRIMARY KEY, type TEXT NOT NULL, key TEXT NOT NULL,
                             value BLOB NOT NULL);
        CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
        INSERT INTO meta VALUES ('revision', 1), ('compact_revision', 0);
        INSERT INTO kv VALUES ('old', x'6f6c64', 1, 1);
        INSERT INTO events VALUES (1, 'put', 'old', x'6f6c64');
        PRAGMA user_version = 1;
        """
    )
    conn.close()
    store = await SqliteStore.open(path)
    try:
        old = await store.get("old")
        assert old is not None and old.value == b"old" and old.mod_revision == 1
        lease = await store.grant_lease(60)
        assert await store.put("new", b"n", lease=lease) == 2
        await store.revoke_lease(lease)
        assert await store.get("new") is None
        assert await store.get("old") is not None
    finally:
        await store.close()


async def test_leases_outlive_a_restart(tmp_path: Path) -> None:
    """A lease is wall-clock time in the database: after a restart it still holds its keys,
    and still expires (the reopened store reaps it without a new grant)."""
    store = await SqliteStore.open(tmp_path / "store.db")
    long = await store.grant_lease(600)
    short = await store.grant_lease(0.3)
    await store.put("held", b"1", lease=long)
    await store.put("expiring", b"2", lease=short)
    await store.close()
    store = await SqliteStore.open(tmp_path / "store.db")
    try:
        async with aclosing(store.watch("expiring", 0)) as events:
            if await store.get("expiring") is not None:
                (event,) = await take(events, 1)
                assert (event.type, event.key) == ("delete", "expiring")
        assert await store.get("held") is not None
        assert await store.keep_alive(long) == 600
    finally:
        await store.close()


async def test_a_second_opener_is_refused_until_the_first_closes(tmp_path: Path) -> None:
    """One embedded store, one control plane: its watches are fed in-process."""
    first = await SqliteStore.open(tmp_path / "store.db")
    try:
        with pytest.raises(StoreError, match=rf"in use by pid {os.getpid()}.*etcd"):
            await SqliteStore.open(tmp_path / "store.db")
        assert await first.put("still", b"works") == 1  # the refusal left the first alone
    finally:
        await first.close()
    second = await SqliteStore.open(tmp_path / "store.db")  # released on close
    try:
        assert (await second.get("still")) is not None
    finally:
        await second.close()


async def test_unreadable_database_is_a_store_error(tmp_path: Path) -> None:
    bad = tmp_path / "store.db"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="cannot open store database"):
        await SqliteStore.open(bad)


async def test_abandoned_watch_is_released(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "store.db")
    try:
        kept = store.watch("a/", 0)
        store.watch("a/", 0)  # dropped without aclose()
        gc.collect()
        assert set(store._watchers) == {kept}
        await kept.aclose()
        assert not set(store._watchers)
    finally:
        await store.close()


class TestOpenStore:
    async def _check_opens(self, url: str, directory: Path) -> None:
        store = await open_store(url)
        try:
            assert isinstance(store, SqliteStore)
            await store.put("k", b"v")
        finally:
            await store.close()
        assert (directory / "store.db").is_file()

    async def test_plain_path(self, tmp_path: Path) -> None:
        await self._check_opens(str(tmp_path / "plain" / "nested"), tmp_path / "plain" / "nested")

    async def test_absolute_sqlite_url(self, tmp_path: Path) -> None:
        await self._check_opens(f"sqlite://{tmp_path}/abs", tmp_path / "abs")

    async def test_relative_sqlite_url(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.chdir(tmp_path)
        await self._check_opens("sqlite://rel/dir", tmp_path / "rel" / "dir")

    async def test_reopen_keeps_data(self, tmp_path: Path) -> None:
        url = f"sqlite://{tmp_path}/data"
        store = await open_store(url)
        await store.put("k", b"v")
        await store.close()
        store = await open_store(url)
        try:
            assert (await store.get("k")).value == b"v"  # type: ignore[union-attr]
        finally:
            await store.close()

    async def test_etcd_urls_go_to_the_etcd_backend(self) -> None:
        with pytest.raises(StoreError, match="bad etcd endpoint"):
            await open_store("etcd://no-port")

    @pytest.mark.parametrize("url", ["http://example.com/x", "postgres://db", "sqlite://"])
    async def test_rejected_urls(self, url: str) -> None:
        with pytest.raises(StoreError, match="sqlite://") as info:
            await open_store(url)
        assert url in str(info.value)

    async def test_directory_is_a_file(self, tmp_path: Path) -> None:
        (tmp_path / "file").write_text("x")
        with pytest.raises(StoreError, match="cannot create store directory"):
            await open_store(str(tmp_path / "file"))


async def test_store_files_are_readable_by_their_owner_only(tmp_path: Path) -> None:
    """They hold API-key and token hashes: 0600 files in a 0700 directory, also when an
    older release had left them 0644."""
    import stat

    directory = tmp_path / "store"
    store = await open_store(str(directory))
    await store.put("/k", b"v")
    await store.close()
    (directory / "store.db").chmod(0o644)
    store = await open_store(str(directory))
    try:
        await store.put("/k2", b"v")
        files = [path for path in directory.iterdir() if path.name.startswith("store.db")]
        assert {path.name for path in files} >= {"store.db", "store.db-wal", "store.db-shm"}
        for path in files:
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
        assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    finally:
        await store.close()
