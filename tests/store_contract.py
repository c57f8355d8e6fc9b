"""Backend-independent contract tests for ``controlplane.store.Store``.

A backend's test module subclasses ``StoreContract`` and provides one fixture::

    class TestSqliteStore(StoreContract):
        @pytest.fixture
        async def store_factory(self, tmp_path):
            ...  # yields `async def factory(**kwargs) -> Store`; closes its stores at teardown

Calling the factory again after closing the previous store must reopen the same underlying
storage (restart tests). Each test gets its own empty key space; revisions are asserted
relative to the store's revision at the start of a test, so a backend whose empty store does
not start at revision 0 (etcd) sets ``empty_store_revision = None``. Backends that can drop
history on demand override ``compact_history``; otherwise the compaction test is skipped.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing

import pytest

from controlplane.store import CasConflict, Compacted, Event, KeyValue, LeaseNotFound, Store, StoreError

StoreFactory = Callable[..., Awaitable[Store]]

# Generous: only a broken implementation ever waits this long.
TIMEOUT = 10.0


async def next_event(events: AsyncIterator[Event]) -> Event:
    return await asyncio.wait_for(anext(events), TIMEOUT)


async def take(events: AsyncIterator[Event], count: int) -> list[Event]:
    return [await next_event(events) for _ in range(count)]


def summary(events: list[Event]) -> list[tuple[str, str, bytes, int]]:
    return [(e.type, e.key, e.value, e.revision) for e in events]


class StoreContract:
    # The revision of a freshly created store; None if the backend cannot promise one.
    empty_store_revision: int | None = 0
    # The shortest lease the backend honours as asked (etcd counts whole seconds, minimum 2).
    short_lease_ttl_s: float = 0.5

    async def compact_history(self, store: Store, revision: int) -> None:
        """Drop history before revision, so watches starting earlier fail."""
        pytest.skip("this backend cannot compact its history on demand")

    # -- basic reads and writes ------------------------------------------------------------

    async def test_new_store_is_empty(self, store_factory: StoreFactory) -> None:
        store = await store_factory()
        base = await store.revision()
        if self.empty_store_revision is not None:
            assert base == self.empty_store_revision
        assert await store.list("") == ([], base)
        assert await store.get("missing") is None

    async def test_put_get_roundtrip(self, store_factory: StoreFactory) -> None:
        store = await store_factory()
        base = await store.revision()
        revision = await store.put("routes/a", b"\x00binary\xff")
        assert revision == base + 1
        assert await store.get("routes/a") == KeyValue(
            "routes/a", b"\x00binary\xff", revision, revision
        )
        assert await store.get("routes/b") is None
        assert await store.get("routes") is None  # a prefix is not a key

    async def test_list_prefix_isolation_and_order(self, store_factory: StoreFactory) -> None:
        store = await store_factory()
        base = await store.revision()
        for key in ["a/2", "b/1", "a/10", "ab", "a/1", "a", "a/\u00e9", "a/z"]:
            await store.put(key, key.encode())
        items, revision = await store.list("a/")
        assert [kv.key for kv in items] == ["a/1", "a/10", "a/2", "a/z", "a/\u00e9"]
        assert all(kv.value == kv.key.encode() for kv in items)
        assert revision == await store.revision() == base + 8
        everything, _ = await store.list("")
        assert [kv.key for kv in everything] == sorted(
            ["a/2", "b/1", "a/10", "ab", "a/1", "a", "a/\u00e9", "a/z"]
        )
        assert await store.list("c/") == ([], base + 8)

    async def test_list_reports_current_revision(self, store_factory: StoreFactory) -> None:
        store = await store_factory()
        base = await store.revision()
        await store.put("x/1", b"1")
        await store.put("other", b"o")
        items, revision = await store.list("x/")
        assert [kv.mod_revision for kv in items] == [base + 1]
        assert revision == base + 2  # the store's revision, not the newest item's
        await store.delete("other")
        assert (await store.list("x/"))[1] == base + 3

    async def test_revisions_strictly_increase(self, store_factory: StoreFactory) -> None:
        store = await store_factory()
        base = await store.revision()
        seen = [await store.put(f"k/{i % 3}", str(i).encode()) for i in range(9)]
        assert seen == list(range(base + 1, base + 10))
        assert await store.revision() == base + 9
        kv = await store.get("k/0")
        assert kv is not None
        assert (kv.create_revision, kv.mod_revision, kv.value) == (base + 1, base + 7, b"6")

    async def test_delete_and_recreate(self, store_factory: StoreFactory) -> None:
        store = await store_factory()
        first = await store.put("k", b"v1")
        second = await store.put("k", b"v2")
        assert await store.get("k") == KeyValue("k", b"v2", first, second)
        deleted = await store.delete("k")
        assert deleted == second + 1
        assert await store.get("k") is None
        assert await store.revision() == deleted
        recreated = await store.put("k", b"v3")
        assert recreated == deleted + 1
        assert await store.get("k") == KeyValue("k", b"v3", recreated, recreated)

    # -- compare-and-swap ------------------------------------------------------------------

    async def test_cas_create_only(self, store_factory: StoreFactory) -> None:
        store = await store_factory()
        created = await store.put("lock", b"mine", expected_revision=0)
        with pytest.raises(CasConflict) as info:
            await store.put("lock", b"theirs", expected_revision=0)
        assert (info.value.key, info.value.expected, info.value.actual) == ("lock", 0, created)
        assert isinstance(info.value, StoreError)
        message = str(info.value)
        assert "lock" in message and "0" in message and str(created) in message
        assert (await store.get("lock")).value == b"mine"  # type: ignore[union-attr]
        assert await store.revision() == created  # a failed CAS writes nothing

    async def test_cas_on_mod_revision(self, store_factory: StoreFactory) -> None:
        store = await store_factory()
        old = await store.put("cfg", b"v1")
        current = await store.put("cfg", b"v2")
        with pytest.raises(CasConflict) as info:
            await store.put("cfg", b"stale", expected_revision=old)
        assert (info.value.expected, info.value.actual) == (old, current)
        assert str(old) in str(info.value) and str(current) in str(info.value)
        assert (await store.get("cfg")).value == b"v2"  # type: ignore[union-attr]
        written = await store.put("cfg", b"v3", expected_revision=current)
        assert await store.get("cfg") == KeyValue("cfg", b"v3", old, written)
        with pytest.raises(CasConflict) as info:
            await store.put("absent", b"x", expected_revision=current)
        assert (info.value.expected, info.value.actual) == (current, 0)
        assert await store.get("absent") is None

    async def test_concurrent_cas_increments(self, store_factory: StoreFactory) -> None:
        store = await store_factory()
        base = await store.revision()
        tasks, increments = 20, 5

        async def increment() -> int:
            retries = 0
            while True:
                kv = await store.get("counter")
                count = int(kv.value) if kv else 0
                try:
                    await store.put(
                        "counter",
                        str(count + 1).encode(),
                        expected_revision=kv.mod_revision if kv else 0,
                    )
                    return retries
                except CasConflict:
                    retries += 1

        async def worker() -> int:
            retries = 0
            for _ in range(increments):
                retries += await increment()
            return retries

        await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(tasks))), 60)
        kv = await store.get("counter")
        assert kv is not None and int(kv.value) == tasks * increments
        # Every successful write bumped the revision once, failed CAS attempts never did.
        assert await store.revision() == base + tasks * increments == kv.mod_revision

    async def test_delete_semantics(self, store_factory: StoreFactory) -> None:
        store = await store_factory()
        base = await store.revision()
        assert await store.delete("nothing") is None
        assert await store.revision() == base
        assert await store.delete("nothing", expected_revision=0) is None
        with pytest.raises(CasConflict) as info:
            await store.delete("nothing", expected_revision=5)
        assert (info.value.expected, info.value.actual) == (5, 0)

        old = await store.put("k", b"1")
        current = await store.put("k", b"2")
        with pytest.raises(CasConflict) as info:
            await store.delete("k", expected_revision=old)
        assert (info.value.key, info.value.expected, info.value.actual) == ("k", old, current)
        with pytest.raises(CasConflict):
            await store.delete("k", expected_revision=0)
        assert (await store.get("k")).value == b"2"  # type: ignore[union-attr]
        assert await store.delete("k", expected_revision=current) == current + 1
        assert await store.get("k") is None

    # -- watch -----------------------------------------------------------------------------

    async def test_watch_replays_history_then_live(self, store_factory: StoreFactory) -> None:
        store = await store_factory()
        base = await store.revision()
        await store.put("w/a", b"1")
        await store.put("w/b", b"2")
        await store.delete("w/a")
        async with aclosing(store.watch("w/", base + 1)) as events:
            assert summary(await take(events, 3)) == [
                ("put", "w/a", b"1", base + 1),
                ("put", "w/b", b"2", base + 2),
                ("delete", "w/a", b"", base + 3),
            ]
            await store.put("w/c", b"3")
            await store.delete("w/b")
            assert summary(await take(events, 2)) == [
                ("put", "w/c", b"3", base + 4),
                ("delete", "w/b", b"", base + 5),
            ]
        async with aclosing(store.watch("w/", base + 4)) as events:  # from mid-history
            assert [e.revision for e in await take(events, 2)] == [base + 4, base + 5]

    async def test_watch_no_gaps_with_writes_during_replay(
        self, store_factory: StoreFactory
    ) -> None:
        store = await store_factory()
        base = await store.revision()
        for i in range(40):
            await store.put(f"g/{i % 7}", str(i).encode())
        async with aclosing(store.watch("g/", base + 1)) as events:
            # Written after watch() but before the first iteration reads the history.
            await store.put("g/early/0", b"x")
            await store.put("g/early/1", b"x")
            received = []
            for i in range(40):  # one write after each replayed event
                received.append(await next_event(events))
                await store.put(f"g/late/{i}", b"x")
            received += await take(events, 42)
            await store.put("g/last", b"end")
            received.append(await next_event(events))
        assert [e.revision for e in received] == list(range(base + 1, base + 84))
        assert [e.key for e in received[40:82]] == ["g/early/0", "g/early/1"] + [
            f"g/late/{i}" for i in range(40)
        ]
        assert received[-1].key == "g/last"

    async def test_watch_from_now_sees_only_new_events(self, store_factory: StoreFactory) -> None:
        store = await store_factory()
        await store.put("n/old", b"old")
        async with aclosing(store.watch("n/", 0)) as events:
            revision = await store.put("n/new", b"new")
            assert summary([await next_event(events)]) == [("put", "n/new", b"new", revision)]
        async with aclosing(store.watch("n/", -1)) as events:
            await store.delete("n/old")
            event = await next_event(events)
            assert (event.type, event.key, event.revision) == ("delete", "n/old", revision + 1)

    async def test_watch_from_future_revision(self, store_factory: StoreFactory) -> None:
        store = await store_factory()
        start = await store.put("f/1", b"1") + 2
        async with aclosing(store.watch("f/", start)) as events:
            await store.put("f/2", b"2")  # one revision before the start: not delivered
            await store.put("f/3", b"3")
            assert summary([await next_event(events)]) == [("put", "f/3", b"3", start)]

    async def test_watch_prefix_filter(self, store_factory: StoreFactory) -> None:
        store = await store_factory()
        base = await store.revision()
        await store.put("p/a/old", b"history")
        await store.put("p/b/old", b"other")
        async with aclosing(store.watch("p/a/", base + 1)) as events:
            await store.put("p/b/1", b"no")
            await store.put("p/a/1", b"yes")
            await store.put("p/ab", b"no")
            await store.put("p/", b"no")
            await store.put("p/a/2", b"yes")
            # Delivered in revision order, so the non-matching writes in between were skipped.
            assert [(e.key, e.revision - base) for e in await take(events, 3)] == [
                ("p/a/old", 1),
                ("p/a/1", 4),
                ("p/a/2", 7),
            ]

    async def test_several_watchers_get_the_same_events(self, store_factory: StoreFactory) -> None:
        store = await store_factory()
        base = await store.revision()
        watches = [store.watch("s/", 0) for _ in range(3)]
        replay = store.watch("s/", base + 1)
        try:
            for i in range(5):
                await store.put(f"s/{i}", str(i).encode())
            await store.delete("s/0")
            streams = [summary(await take(events, 6)) for events in [*watches, replay]]
            assert [event[3] for event in streams[0]] == list(range(base + 1, base + 7))
            assert streams[0][-1] == ("delete", "s/0", b"", base + 6)
            assert all(stream == streams[0] for stream in streams)
        finally:
            for events in [*watches, replay]:
                await events.aclose()  # type: ignore[attr-defined]

    async def test_slow_watcher_does_not_block_or_lose(self, store_factory: StoreFactory) -> None:
        store = await store_factory()
        base = await store.revision()
        async with aclosing(store.watch("slow/", 0)) as events:
            # Nobody consumes while these are written: writers must not wait for the watcher.
            await asyncio.wait_for(
                asyncio.gather(*(store.put(f"slow/{i}", b"x") for i in range(300))), 60
            )
            received = await take(events, 300)
            assert [e.revision for e in received] == list(range(base + 1, base + 301))
            assert sorted(e.key for e in received) == sorted(f"slow/{i}" for i in range(300))
            await store.put("slow/after", b"y")
            assert (await next_event(events)).key == "slow/after"

    async def test_watch_compacted_history(self, store_factory: StoreFactory) -> None:
        store = await store_factory()
        base = await store.revision()
        for i in range(10):
            await store.put(f"c/{i}", b"x")
        await self.compact_history(store, base + 6)
        events = store.watch("c/", base + 2)
        with pytest.raises(Compacted) as info:
            await next_event(events)
        assert info.value.compact_revision == base + 6
        assert isinstance(info.value, StoreError)
        assert str(base + 6) in str(info.value)
        async with aclosing(store.watch("c/", base + 7)) as events:
            assert [e.revision - base for e in await take(events, 4)] == [7, 8, 9, 10]

    # -- multi-key commits -----------------------------------------------------------------

    async def test_commit_applies_all_writes_or_none(self, store_factory: StoreFactory) -> None:
        store = await store_factory()
        base = await store.revision()
        guard = await store.put("t/guard", b"g")
        await store.put("t/old", b"o")
        async with aclosing(store.watch("t/", 0)) as events:
            revision = await store.commit(
                [("t/guard", guard), ("t/new", 0)],
                [("t/new", b"n"), ("t/old", None), ("t/absent", None), ("t/guard", b"g2")],
            )
            seen = await take(events, 3)
        assert [(e.type, e.key, e.value) for e in seen] == [
            ("put", "t/new", b"n"), ("delete", "t/old", b""), ("put", "t/guard", b"g2")]
        assert all(base + 2 < e.revision <= revision for e in seen)
        assert seen[-1].revision == revision == await store.revision()
        guard_kv = await store.get("t/guard")
        assert guard_kv is not None and guard_kv.mod_revision == revision
        assert await store.get("t/old") is None

        # A failing check writes nothing and names the key.
        with pytest.raises(CasConflict) as info:
            await store.commit([("t/new", 0)], [("t/other", b"x")])
        assert (info.value.key, info.value.expected, info.value.actual) == ("t/new", 0, seen[0].revision)
        with pytest.raises(CasConflict) as info:
            await store.commit([("t/guard", guard_kv.mod_revision), ("t/guard", guard)], [("t/guard", None)])
        assert (info.value.key, info.value.expected) == ("t/guard", guard)
        assert await store.get("t/other") is None and await store.get("t/guard") == guard_kv
        assert await store.revision() == revision
        with pytest.raises(StoreError):
            await store.commit([], [])

    async def test_concurrent_commits_on_one_guard_serialise(self, store_factory: StoreFactory) -> None:
        """The pattern the admin API uses across replicas: read a guard key, check, then
        commit only if the guard is unchanged. Of racing writers exactly one wins per round."""
        store = await store_factory()
        await store.put("s/seq", b"0")

        async def writer(name: str) -> int:
            conflicts = 0
            while True:
                seq = await store.get("s/seq")
                assert seq is not None
                items, _ = await store.list("s/item/")
                try:
                    await store.commit([("s/seq", seq.mod_revision)],
                                       [(f"s/item/{name}", str(len(items)).encode()), ("s/seq", b"x")])
                    return conflicts
                except CasConflict:
                    conflicts += 1

        await asyncio.gather(*(writer(f"w{i}") for i in range(5)))
        items, _ = await store.list("s/item/")
        # Each writer saw every earlier commit: the counts it wrote are 0..4, each once.
        assert sorted(int(kv.value) for kv in items) == [0, 1, 2, 3, 4]

    # -- leases ----------------------------------------------------------------------------

    async def test_revoked_lease_deletes_its_keys(self, store_factory: StoreFactory) -> None:
        store = await store_factory()
        lease = await store.grant_lease(60)
        other = await store.grant_lease(60)
        assert lease > 0 and other != lease
        await store.put("l/owned", b"1", lease=lease)
        await store.put("l/owned-too", b"2", expected_revision=0, lease=lease)
        await store.put("l/other", b"3", lease=other)
        await store.put("l/plain", b"4")
        await store.put("l/detached", b"5", lease=lease)
        await store.put("l/detached", b"6")  # a put without a lease detaches the key
        async with aclosing(store.watch("l/", 0)) as events:
            await store.revoke_lease(lease)
            deleted = await take(events, 2)
        assert sorted((e.type, e.key) for e in deleted) == [("delete", "l/owned"), ("delete", "l/owned-too")]
        assert deleted[0].revision <= deleted[1].revision  # etcd deletes a lease's keys in one revision
        items, _ = await store.list("l/")
        assert [kv.key for kv in items] == ["l/detached", "l/other", "l/plain"]
        await store.revoke_lease(lease)  # already gone: nothing happens
        with pytest.raises(LeaseNotFound):
            await store.keep_alive(lease)
        with pytest.raises(LeaseNotFound):
            await store.put("l/late", b"x", lease=lease)
        assert await store.get("l/late") is None
        assert await store.keep_alive(other) >= 60

    async def test_lease_expires_unless_kept_alive(self, store_factory: StoreFactory) -> None:
        store = await store_factory()
        ttl = self.short_lease_ttl_s
        kept = await store.grant_lease(ttl)
        left = await store.grant_lease(ttl)
        await store.put("e/kept", b"k", lease=kept)
        await store.put("e/left", b"l", lease=left)
        loop = asyncio.get_running_loop()
        async with aclosing(store.watch("e/", 0)) as events:
            # Renew one lease for two of its lifetimes: only the other one's key goes.
            until = loop.time() + 2 * ttl
            expired = asyncio.create_task(next_event(events))
            while loop.time() < until:
                assert await store.keep_alive(kept) >= ttl
                await asyncio.wait([expired], timeout=ttl / 4)
            event = await expired
            assert (event.type, event.key) == ("delete", "e/left")
            assert await store.get("e/kept") is not None
            with pytest.raises(LeaseNotFound):
                await store.keep_alive(left)
            # Then stop renewing: it expires too.
            event = await next_event(events)
            assert (event.type, event.key) == ("delete", "e/kept")

    async def test_lease_arguments_are_checked(self, store_factory: StoreFactory) -> None:
        store = await store_factory()
        for ttl in (0, -1, float("nan")):
            with pytest.raises(StoreError):
                await store.grant_lease(ttl)
        with pytest.raises(StoreError):
            await store.put("a", b"1", lease=-1)

    # -- lifecycle -------------------------------------------------------------------------

    async def test_restart_durability(self, store_factory: StoreFactory) -> None:
        store = await store_factory()
        base = await store.revision()
        await store.put("d/a", b"alpha")
        await store.put("d/b", b"beta")
        await store.put("d/b", b"beta2")
        await store.put("d/c", b"gone")
        await store.delete("d/c")
        before, revision = await store.list("d/")
        assert revision == base + 5
        await store.close()

        store = await store_factory()
        assert await store.revision() == revision
        assert await store.list("d/") == (before, revision)
        assert await store.get("d/b") == KeyValue("d/b", b"beta2", base + 2, base + 3)
        assert await store.put("d/c", b"back") == revision + 1  # never reuses a revision
        async with aclosing(store.watch("d/", base + 4)) as events:  # history survives too
            assert summary(await take(events, 3)) == [
                ("put", "d/c", b"gone", base + 4),
                ("delete", "d/c", b"", base + 5),
                ("put", "d/c", b"back", base + 6),
            ]
        kv = await store.get("d/c")
        assert kv is not None and kv.create_revision == base + 6  # recreated after its delete

    async def test_close_ends_watches_and_operations(self, store_factory: StoreFactory) -> None:
        store = await store_factory()
        first_seen = asyncio.Event()
        events = store.watch("z/", 0)
        idle = store.watch("other/", 0)

        async def consume() -> list[Event]:
            received = []
            async for event in events:
                received.append(event)
                first_seen.set()
            return received

        consumer = asyncio.create_task(consume())
        revision = await store.put("z/1", b"1")
        await asyncio.wait_for(first_seen.wait(), TIMEOUT)
        await store.close()
        received = await asyncio.wait_for(consumer, TIMEOUT)
        assert summary(received) == [("put", "z/1", b"1", revision)]
        with pytest.raises(StopAsyncIteration):
            await next_event(idle)
        for operation in (
            store.get("z/1"),
            store.list("z/"),
            store.put("z/2", b"2"),
            store.delete("z/1"),
            store.revision(),
        ):
            with pytest.raises(StoreError):
                await operation
        with pytest.raises(StoreError):
            # Raising in watch() itself or on first iteration are both fine.
            await next_event(store.watch("z/", 0))
        await store.close()  # idempotent
