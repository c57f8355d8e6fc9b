"""etcd v3 backend for the control-plane store.

The store interface follows etcd's model, so the mapping is direct: the store revision is the
cluster revision (``header.revision``), keys carry etcd's create/mod revisions, compare-and-swap
is an etcd transaction comparing ``mod_revision`` (or ``create_revision == 0`` for create-only),
and watches are etcd watches from a start revision.

It speaks the etcd v3 gRPC API through the generated stubs that ``aetcd`` ships, over grpc.aio
channels managed here rather than through ``aetcd.Client``: that client talks to one endpoint
only and its watcher neither resumes after a lost connection nor applies back-pressure. Here:

* Several endpoints: requests go to one healthy endpoint and move to the next when it cannot
  be reached. Reads are retried on any connection failure. Writes are retried only when the
  request certainly never reached etcd (connection refused, no leader yet); when a write fails
  with an unknown outcome it raises StoreError saying so, instead of risking a double write.
  After a failover (or any failure) the next write first confirms with a read that its member
  has a working leader: a follower that has not yet noticed its leader died would otherwise
  forward the write into the void and leave its outcome unknown.
* Each watch is one gRPC watch stream, read only as its consumer asks for events (HTTP/2 flow
  control and etcd's own buffering hold the rest, so a slow consumer costs no memory here). A
  lost stream is reopened on another endpoint from the next revision, so no event is lost or
  repeated.
* An optional namespace prefix is prepended to every key and stripped from results.
* TLS (`megarouter.grpc_tls.ClientTls`): the cluster's CA, and a client certificate for clusters that require one
  (`--client-cert-auth`); etcd's own user/password authentication is not supported.
"""

from __future__ import annotations

import asyncio
import math
import re
import urllib.parse
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import grpc
from aetcd import rpc

from megarouter.grpc_tls import ClientTls, TlsConfigError

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

# Keys per range request when listing; the pages are read at one pinned revision.
_LIST_PAGE = 1000
# Pause between attempts while endpoints are failing over or a leader is being elected.
_RETRY_PAUSE_S = 0.05
# The longest wait for one endpoint's connection before trying the next endpoint.
_CONNECT_TIMEOUT_S = 1.0
# The shortest time one attempt of a read may take before it is sent again (the timeout's
# third when that is longer): a read stuck on a member whose leader died is retried, by which
# time the member knows there is a new leader.
_READ_ATTEMPT_S = 1.0
# How long close() lets requests already in flight finish.
_CLOSE_GRACE_S = 1.0

_CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.max_receive_message_length", 256 * 1024 * 1024),
    ("grpc.max_send_message_length", 16 * 1024 * 1024),
    # Notice a dead peer on an idle watch stream (etcd allows pings every 5 s by default).
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    # Reconnect quickly once a member comes back.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2_000),
)
# Every request requires the member to have a leader: a member cut off from the cluster then
# refuses at once with "no leader" (the request certainly not applied, so it moves to another
# member) instead of timing out, and a watch on such a member fails over instead of waiting
# for events that will not come.
_REQUIRE_LEADER = (("hasleader", "true"),)

# UNAVAILABLE errors that prove the request was never handled, so even a write may be retried.
_NOT_SENT_HINTS = (
    "failed to connect",
    "connection refused",
    "dns resolution failed",
    "name resolution",
    "etcdserver: no leader",
    "etcdserver: not capable",
    "raft proposal dropped",
    "too many requests",
)
_COMPACTED_TEXT = "required revision has been compacted"

_READY = grpc.ChannelConnectivity.READY
_FAILED = (grpc.ChannelConnectivity.TRANSIENT_FAILURE, grpc.ChannelConnectivity.SHUTDOWN)

_ENDPOINT_RE = re.compile(r"^(?:https?://)?(\[[0-9A-Fa-f:.]+\]|[^\s:/\[\]]+):(\d{1,5})/?$")


def parse_endpoint(endpoint: str) -> str:
    """'host:port' (optionally with an http:// or https:// prefix, IPv6 in brackets) -> 'host:port'."""
    match = _ENDPOINT_RE.match(endpoint.strip()) if isinstance(endpoint, str) else None
    if not match or not 0 < int(match.group(2)) < 65536:
        raise StoreError(f"bad etcd endpoint {endpoint!r}: expected host:port")
    return f"{match.group(1)}:{int(match.group(2))}"


_TLS_PARAMETERS = {"cacert": "ca_file", "cert": "cert_file", "key": "key_file"}


def parse_etcd_url(url: str) -> tuple[list[str], str, ClientTls | None]:
    """``etcd://host1:2379,host2:2379[/prefix][?cacert=ca.pem&cert=client.pem&key=client.key]``
    -> (endpoints, key prefix, TLS settings or None).

    The path after the hosts, without trailing slashes, is the key prefix:
    ``etcd://h:2379/team-a`` keeps ``/megarouter/v1/x`` as ``/team-a/megarouter/v1/x``.
    ``cacert`` (or ``tls=1`` for the system's CA roots) turns TLS on; ``cert`` and ``key``
    add a client certificate.
    """
    if not url.startswith("etcd://"):
        raise StoreError(f"not an etcd URL: {url!r}")
    location, _, query = url[len("etcd://") :].partition("?")
    hosts, slash, path = location.partition("/")
    if not hosts:
        raise StoreError(f"etcd URL {url!r} names no endpoint: use etcd://host:2379[,host:2379][/prefix]")
    endpoints = [parse_endpoint(host) for host in hosts.split(",")]
    prefix = (slash + path).rstrip("/")
    return endpoints, prefix, _parse_tls(url, query)


def _parse_tls(url: str, query: str) -> ClientTls | None:
    if not query:
        return None
    files: dict[str, str] = {}
    tls = False
    for name, value in urllib.parse.parse_qsl(query, keep_blank_values=True, strict_parsing=False):
        if name == "tls" and value in ("1", "true"):
            tls = True
        elif name in _TLS_PARAMETERS and value:
            files[_TLS_PARAMETERS[name]] = value
        else:
            raise StoreError(f"etcd URL {url!r}: unknown or empty parameter {name!r} "
                             "(known: cacert=, cert=, key=, tls=1)")
    if not (tls or "ca_file" in files):
        raise StoreError(f"etcd URL {url!r}: cert= and key= need TLS: add cacert=<CA file> or tls=1")
    return ClientTls(**files)


def _prefix_end(prefix: bytes) -> bytes:
    """etcd's range_end for every key starting with prefix (b"\\0": no upper bound)."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\0"


def _retryable(exc: grpc.aio.AioRpcError, idempotent: bool) -> bool:
    code = exc.code()
    if idempotent:
        return code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED) or (
            code == grpc.StatusCode.RESOURCE_EXHAUSTED and "too many requests" in (exc.details() or "")
        )
    details = (exc.details() or "").lower()
    return any(hint in details for hint in _NOT_SENT_HINTS)


def _describe(exc: grpc.aio.AioRpcError) -> str:
    return f"{exc.code().name}: {exc.details()}"


class _Endpoint:
    def __init__(self, address: str, credentials: grpc.ChannelCredentials | None) -> None:
        self.address = address
        if credentials is None:
            self.channel = grpc.aio.insecure_channel(address, options=_CHANNEL_OPTIONS)
        else:
            self.channel = grpc.aio.secure_channel(address, credentials, options=_CHANNEL_OPTIONS)
        self.kv = rpc.KVStub(self.channel)
        self.watch = rpc.WatchStub(self.channel)
        self.lease = rpc.LeaseStub(self.channel)


class EtcdStore(Store):
    """Store on an etcd v3 cluster; open it with ``await EtcdStore.open(["host:2379", ...])``."""

    def __init__(self, endpoints: Sequence[str], prefix: str, timeout_s: float,
                 credentials: grpc.ChannelCredentials | None = None) -> None:
        self._endpoints = [_Endpoint(address, credentials) for address in endpoints]
        self._tls = credentials is not None
        self._current = 0
        self._prefix = prefix
        self._prefix_bytes = prefix.encode("utf-8", "surrogateescape")
        self._timeout_s = timeout_s
        self._connect_timeout_s = min(_CONNECT_TIMEOUT_S, timeout_s)
        self._closed = False
        # Set when requests failed or moved to another endpoint: the next write first checks
        # with a read that the member it goes to has a working leader.
        self._suspect = False
        # The newest cluster revision any response has shown; "watch from now" starts after it.
        self._known_revision = 0
        self._watches: weakref.WeakSet[_EtcdWatch] = weakref.WeakSet()

    @classmethod
    async def open(cls, endpoints: Sequence[str], *, prefix: str = "", timeout_s: float = 5.0,
                   tls: ClientTls | None = None) -> EtcdStore:
        """Connect to an etcd cluster and check that it answers.

        endpoints: client addresses as ``host:port``; any one reachable member is enough.
        prefix: namespace prepended to every key (and stripped from results).
        timeout_s: the most one operation may take, failing over between endpoints included.
        tls: TLS settings; None connects in plain text.
        """
        if isinstance(endpoints, str):
            endpoints = [endpoints]
        addresses = [parse_endpoint(endpoint) for endpoint in endpoints]
        if not addresses:
            raise StoreError("at least one etcd endpoint is needed")
        if not isinstance(prefix, str):
            raise StoreError(f"prefix must be a string, got {prefix!r}")
        if not timeout_s > 0:
            raise StoreError(f"timeout_s must be positive, got {timeout_s}")
        try:
            credentials = tls.credentials() if tls is not None else None
        except TlsConfigError as exc:
            raise StoreError(f"etcd TLS: {exc}") from None
        store = cls(list(dict.fromkeys(addresses)), prefix, float(timeout_s), credentials)
        try:
            await store.revision()
        except BaseException:
            await store.close()
            raise
        return store

    @property
    def endpoints(self) -> list[str]:
        return [endpoint.address for endpoint in self._endpoints]

    @property
    def current_endpoint(self) -> str:
        """The endpoint requests currently go to."""
        return self._endpoints[self._current].address

    @property
    def prefix(self) -> str:
        return self._prefix

    # -- keys ------------------------------------------------------------------------------

    def _key(self, key: str) -> bytes:
        if not isinstance(key, str) or not key:
            raise StoreError(f"a key must be a non-empty string, got {key!r}")
        return self._prefix_bytes + _encode(key)

    def _range(self, prefix: str) -> tuple[bytes, bytes]:
        if not isinstance(prefix, str):
            raise StoreError(f"a prefix must be a string, got {prefix!r}")
        start = self._prefix_bytes + _encode(prefix)
        return (start or b"\0"), _prefix_end(start)

    def _user_key(self, key: bytes) -> str:
        return key[len(self._prefix_bytes) :].decode("utf-8", "surrogateescape")

    def _kv(self, kv: Any) -> KeyValue:
        return KeyValue(self._user_key(kv.key), bytes(kv.value), kv.create_revision, kv.mod_revision)

    def _observe(self, revision: int) -> None:
        if revision > self._known_revision:
            self._known_revision = revision

    # -- requests --------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("the store is closed")

    def _demote(self, endpoint: _Endpoint) -> None:
        """Send the next requests elsewhere: endpoint just failed."""
        self._suspect = True
        if self._endpoints[self._current] is endpoint and len(self._endpoints) > 1:
            self._current = (self._current + 1) % len(self._endpoints)

    async def _wait_ready(self, endpoint: _Endpoint, until: float) -> bool:
        loop = asyncio.get_running_loop()
        channel = endpoint.channel
        state = channel.get_state(try_to_connect=True)
        while state != _READY:
            remaining = until - loop.time()
            if state in _FAILED or remaining <= 0:
                return False
            try:
                await asyncio.wait_for(channel.wait_for_state_change(state), remaining)
            except TimeoutError:
                return False
            state = channel.get_state(try_to_connect=True)
        return True

    async def _pick_endpoint(self, deadline: float) -> _Endpoint:
        """A connected endpoint, starting with the current one; StoreError if none by deadline."""
        loop = asyncio.get_running_loop()
        count = len(self._endpoints)
        while True:
            for step in range(count):
                self._check_open()
                index = (self._current + step) % count
                endpoint = self._endpoints[index]
                until = min(deadline, loop.time() + self._connect_timeout_s)
                if await self._wait_ready(endpoint, until):
                    if index != self._current:
                        self._current = index
                        self._suspect = True
                    return endpoint
            remaining = deadline - loop.time()
            if remaining <= 0:
                # A TLS mismatch looks like an unreachable member: say which mode was tried.
                mode = ("over TLS: check the CA and client certificate (cacert=, cert=, key=)" if self._tls
                        else "in plain text (for a TLS cluster add cacert= or tls=1 to the URL)")
                raise StoreError(f"no etcd endpoint is reachable ({', '.join(self.endpoints)}) {mode}")
            await asyncio.sleep(min(_RETRY_PAUSE_S * 2, remaining))

    async def _request(
        self,
        call: Callable[[_Endpoint, float], Awaitable[_T]],
        *,
        idempotent: bool,
        what: str,
        deadline: float | None = None,
    ) -> _T:
        """Run call(endpoint, timeout) on a healthy endpoint, failing over while that is safe."""
        self._check_open()
        loop = asyncio.get_running_loop()
        if deadline is None:
            deadline = loop.time() + self._timeout_s
        while True:
            endpoint = await self._pick_endpoint(deadline)
            if not idempotent and self._suspect:
                await self._confirm_leader(deadline)
                continue  # the check may have moved to yet another endpoint
            remaining = deadline - loop.time()
            attempt = min(remaining, max(_READ_ATTEMPT_S, self._timeout_s / 3)) if idempotent else remaining
            try:
                return await call(endpoint, max(attempt, 0.001))
            except grpc.aio.AioRpcError as exc:
                if self._closed:
                    raise StoreError("the store is closed") from exc
                remaining = deadline - loop.time()
                retry = _retryable(exc, idempotent)
                unreachable = exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
                if retry or unreachable:
                    self._demote(endpoint)
                if retry and remaining > 0:
                    await asyncio.sleep(min(_RETRY_PAUSE_S, remaining))
                    continue
                if unreachable and not retry:  # only writes get here: the outcome is unknown
                    self._suspect = True
                    raise StoreError(
                        f"etcd {what} failed at {endpoint.address} and may or may not have been applied "
                        f"(re-read before retrying): {_describe(exc)}"
                    ) from exc
                raise StoreError(f"etcd {what} failed at {endpoint.address}: {_describe(exc)}") from exc
            except asyncio.CancelledError:
                # close() cancelled the request; a cancellation of the caller itself propagates.
                task = asyncio.current_task()
                if self._closed and task is not None and not task.cancelling():
                    raise StoreError("the store is closed") from None
                raise

    async def _confirm_leader(self, deadline: float) -> None:
        """A linearizable read, retried until it succeeds: its member has a working leader."""
        self._suspect = False  # set again if the read fails or moves to another endpoint
        await self._range_request(self._revision_request(), "leader check", deadline)

    async def _range_request(self, request: Any, what: str, deadline: float | None = None) -> Any:
        async def call(endpoint: _Endpoint, timeout: float) -> Any:
            return await endpoint.kv.Range(request, timeout=timeout, metadata=_REQUIRE_LEADER)

        response = await self._request(call, idempotent=True, what=what, deadline=deadline)
        self._observe(response.header.revision)
        return response

    async def _txn(self, request: Any, what: str) -> Any:
        async def call(endpoint: _Endpoint, timeout: float) -> Any:
            return await endpoint.kv.Txn(request, timeout=timeout, metadata=_REQUIRE_LEADER)

        response = await self._request(call, idempotent=False, what=what)
        self._observe(response.header.revision)
        return response

    # -- the Store interface ---------------------------------------------------------------

    async def get(self, key: str) -> KeyValue | None:
        response = await self._range_request(rpc.RangeRequest(key=self._key(key)), f"get of {key!r}")
        return self._kv(response.kvs[0]) if response.kvs else None

    async def list(self, prefix: str) -> tuple[list[KeyValue], int]:
        start, end = self._range(prefix)
        for _attempt in range(3):
            items: list[KeyValue] = []
            revision = 0  # the first page's revision; later pages are read at that revision
            key = start
            try:
                while True:
                    request = rpc.RangeRequest(
                        key=key,
                        range_end=end,
                        limit=_LIST_PAGE,
                        revision=revision,
                        sort_order=rpc.RangeRequest.ASCEND,
                        sort_target=rpc.RangeRequest.KEY,
                    )
                    response = await self._range_request(request, f"list of {prefix!r}")
                    revision = revision or response.header.revision
                    items.extend(self._kv(kv) for kv in response.kvs)
                    if not response.more or not response.kvs:
                        return items, revision
                    key = response.kvs[-1].key + b"\0"
            except StoreError as exc:
                # The pinned revision was compacted between two pages: read again from scratch.
                if _COMPACTED_TEXT not in str(exc):
                    raise
        raise StoreError(f"list of {prefix!r} kept racing with compactions; try again")

    async def put(
        self, key: str, value: bytes, *, expected_revision: int | None = None, lease: int = 0
    ) -> int:
        check_revision_arg(expected_revision)
        check_lease_arg(lease)
        try:
            return await self._put(key, value, expected_revision, lease)
        except StoreError as exc:
            if lease and _is_rpc_code(exc.__cause__, grpc.StatusCode.NOT_FOUND):
                raise LeaseNotFound(lease) from exc
            raise

    async def _put(self, key: str, value: bytes, expected_revision: int | None, lease: int) -> int:
        raw = self._key(key)
        put = rpc.RequestOp(request_put=rpc.PutRequest(key=raw, value=bytes(value), lease=lease))
        if expected_revision is None:
            response = await self._txn(rpc.TxnRequest(success=[put]), f"put of {key!r}")
            return response.header.revision
        if expected_revision == 0:
            compare = rpc.Compare(key=raw, target=rpc.Compare.CREATE, result=rpc.Compare.EQUAL, create_revision=0)
        else:
            compare = rpc.Compare(
                key=raw, target=rpc.Compare.MOD, result=rpc.Compare.EQUAL, mod_revision=expected_revision
            )
        read = rpc.RequestOp(request_range=rpc.RangeRequest(key=raw))
        response = await self._txn(rpc.TxnRequest(compare=[compare], success=[put], failure=[read]), f"put of {key!r}")
        if not response.succeeded:
            raise CasConflict(key, expected_revision, _mod_revision(response))
        return response.header.revision

    async def delete(self, key: str, *, expected_revision: int | None = None) -> int | None:
        check_revision_arg(expected_revision)
        raw = self._key(key)
        if expected_revision == 0:  # must be absent: nothing to delete
            response = await self._range_request(rpc.RangeRequest(key=raw), f"delete of {key!r}")
            if response.kvs:
                raise CasConflict(key, 0, response.kvs[0].mod_revision)
            return None
        remove = rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=raw))
        if expected_revision is None:
            response = await self._txn(rpc.TxnRequest(success=[remove]), f"delete of {key!r}")
            deleted = response.responses[0].response_delete_range.deleted
            return response.header.revision if deleted else None
        compare = rpc.Compare(key=raw, target=rpc.Compare.MOD, result=rpc.Compare.EQUAL, mod_revision=expected_revision)
        read = rpc.RequestOp(request_range=rpc.RangeRequest(key=raw))
        response = await self._txn(
            rpc.TxnRequest(compare=[compare], success=[remove], failure=[read]), f"delete of {key!r}"
        )
        if not response.succeeded:
            raise CasConflict(key, expected_revision, _mod_revision(response))
        return response.header.revision

    async def revision(self) -> int:
        response = await self._range_request(self._revision_request(), "revision read")
        return response.header.revision

    async def commit(
        self, checks: Sequence[tuple[str, int]], writes: Sequence[tuple[str, bytes | None]]
    ) -> int:
        compares, reads = [], []
        for key, expected in checks:
            check_revision_arg(expected)
            raw = self._key(key)
            if expected == 0:
                compares.append(rpc.Compare(key=raw, target=rpc.Compare.CREATE, result=rpc.Compare.EQUAL,
                                            create_revision=0))
            else:
                compares.append(rpc.Compare(key=raw, target=rpc.Compare.MOD, result=rpc.Compare.EQUAL,
                                            mod_revision=expected))
            reads.append(rpc.RequestOp(request_range=rpc.RangeRequest(key=raw)))
        ops = []
        for key, value in writes:
            raw = self._key(key)
            if value is None:
                ops.append(rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=raw)))
            else:
                ops.append(rpc.RequestOp(request_put=rpc.PutRequest(key=raw, value=bytes(value))))
        if not ops:
            raise StoreError("a commit needs at least one write")
        what = f"commit of {', '.join(repr(key) for key, _ in writes)}"
        response = await self._txn(rpc.TxnRequest(compare=compares, success=ops, failure=reads), what)
        if not response.succeeded:
            # The failure branch read every checked key: name the first that does not match.
            for (key, expected), op in zip(checks, response.responses, strict=True):
                kvs = op.response_range.kvs
                actual = kvs[0].mod_revision if kvs else 0
                if actual != expected:
                    raise CasConflict(key, expected, actual)
            raise CasConflict(checks[0][0], checks[0][1], checks[0][1])  # changed back meanwhile
        return response.header.revision

    # -- leases: etcd's own, so keys vanish when their owner stops renewing ------------------

    async def grant_lease(self, ttl_s: float) -> int:
        check_ttl_arg(ttl_s)

        async def call(endpoint: _Endpoint, timeout: float) -> Any:
            request = rpc.LeaseGrantRequest(TTL=math.ceil(ttl_s))
            return await endpoint.lease.LeaseGrant(request, timeout=timeout, metadata=_REQUIRE_LEADER)

        # Retrying a grant whose outcome is unknown is safe: a lease nobody uses just expires.
        response = await self._request(call, idempotent=True, what="lease grant")
        if response.error:
            raise StoreError(f"etcd refused the lease: {response.error}")
        return response.ID

    async def keep_alive(self, lease_id: int) -> float:
        check_lease_arg(lease_id)

        async def call(endpoint: _Endpoint, timeout: float) -> Any:
            # LeaseKeepAlive is a stream; one request and its answer renew the lease once.
            stream = endpoint.lease.LeaseKeepAlive(timeout=timeout, metadata=_REQUIRE_LEADER)
            try:
                await stream.write(rpc.LeaseKeepAliveRequest(ID=lease_id))
                response = await stream.read()
            finally:
                stream.cancel()
            if response is grpc.aio.EOF:
                raise StoreError("etcd ended the lease keep-alive stream without an answer")
            return response

        response = await self._request(call, idempotent=True, what=f"keep-alive of lease {lease_id:x}")
        if response.TTL <= 0:  # etcd's answer for a lease it no longer has
            raise LeaseNotFound(lease_id)
        return float(response.TTL)

    async def revoke_lease(self, lease_id: int) -> None:
        check_lease_arg(lease_id)

        async def call(endpoint: _Endpoint, timeout: float) -> Any:
            request = rpc.LeaseRevokeRequest(ID=lease_id)
            return await endpoint.lease.LeaseRevoke(request, timeout=timeout, metadata=_REQUIRE_LEADER)

        try:
            response = await self._request(call, idempotent=True, what=f"revoke of lease {lease_id:x}")
        except StoreError as exc:
            if _is_rpc_code(exc.__cause__, grpc.StatusCode.NOT_FOUND):
                return  # already gone
            raise
        self._observe(response.header.revision)

    def _revision_request(self) -> Any:
        # Any linearizable read carries the cluster revision; this one counts a single key.
        return rpc.RangeRequest(key=self._prefix_bytes or b"\0", count_only=True)

    async def compact(self, revision: int, *, physical: bool = True) -> None:
        """Drop history before revision (etcd-specific). This is cluster-wide: it applies to
        every key, not only those under this store's prefix. Compacting to a revision already
        compacted does nothing; a revision beyond the current one is a StoreError."""

        async def call(endpoint: _Endpoint, timeout: float) -> Any:
            request = rpc.CompactionRequest(revision=revision, physical=physical)
            return await endpoint.kv.Compact(request, timeout=timeout, metadata=_REQUIRE_LEADER)

        try:
            response = await self._request(call, idempotent=True, what=f"compaction to {revision}")
        except StoreError as exc:
            if _COMPACTED_TEXT in str(exc):
                return
            raise
        self._observe(response.header.revision)

    def watch(self, prefix: str, start_revision: int) -> _EtcdWatch:
        self._check_open()
        watch = _EtcdWatch(self, prefix, start_revision)
        self._watches.add(watch)
        return watch

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for watch in list(self._watches):
            watch.finish()
        self._watches.clear()
        await asyncio.gather(
            *(endpoint.channel.close(grace=_CLOSE_GRACE_S) for endpoint in self._endpoints),
            return_exceptions=True,
        )


def _encode(text: str) -> bytes:
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError as exc:
        raise StoreError(f"key {text!r} cannot be encoded as UTF-8") from exc


def _mod_revision(response: Any) -> int:
    """The key's mod_revision from a failed transaction's read (0: absent)."""
    kvs = response.responses[0].response_range.kvs if response.responses else ()
    return kvs[0].mod_revision if kvs else 0




def _is_rpc_code(exc: BaseException | None, code: grpc.StatusCode) -> bool:
    return isinstance(exc, grpc.aio.AioRpcError) and exc.code() == code


class _EtcdWatch:
    """One etcd watch stream for one prefix, read as the consumer iterates.

    The stream is opened on first iteration from the revision fixed when watch() was called.
    Events are delivered in revision order; whenever the stream is lost it is reopened (on
    another endpoint if need be) from the revision after the last event received, so nothing
    is lost or repeated.
    """

    def __init__(self, store: EtcdStore, prefix: str, start_revision: int) -> None:
        self._store = store
        self._key, self._range_end = store._range(prefix)
        # "From now" is after the newest revision this store has seen. A watch from an older
        # revision that has been compacted since is moved up to the compaction revision.
        self._from_now = start_revision <= 0
        self._next_revision = start_revision if start_revision > 0 else store._known_revision + 1
        self._events: deque[Event] = deque()
        self._call: Any = None
        self._endpoint: _Endpoint | None = None
        self._finished = False

    def __aiter__(self) -> _EtcdWatch:
        return self

    async def __anext__(self) -> Event:
        while True:
            if self._events:
                return self._events.popleft()
            if self._finished:
                raise StopAsyncIteration
            await self._receive()

    async def _receive(self) -> None:
        """Read one response from the stream (opening it if needed) into the event buffer."""
        loop = asyncio.get_running_loop()
        deadline: float | None = None
        while not self._finished:
            try:
                if self._call is None:
                    await self._open(loop.time() + self._store._timeout_s if deadline is None else deadline)
                response = await self._call.read()
            except asyncio.CancelledError:
                # finish() cancelled the stream; a cancellation of the consumer propagates.
                task = asyncio.current_task()
                if self._finished and task is not None and not task.cancelling():
                    return
                # A cancelled read (the consumer's wait_for timed out, say) cancels the whole
                # gRPC call: the next iteration opens a new stream from the next revision.
                self._drop_stream()
                raise
            except grpc.aio.AioRpcError as exc:
                self._drop_stream()
                if self._finished:
                    return
                deadline = deadline or loop.time() + self._store._timeout_s
                if not _retryable(exc, idempotent=True) or loop.time() >= deadline:
                    self.finish()
                    raise StoreError(
                        f"etcd watch from revision {self._next_revision} failed: {_describe(exc)}"
                    ) from exc
                if self._endpoint is not None:
                    self._store._demote(self._endpoint)
                await asyncio.sleep(_RETRY_PAUSE_S)
                continue
            except StoreError:
                if self._finished:  # the store closed meanwhile
                    return
                self.finish()
                raise
            if response is grpc.aio.EOF:  # the server ended the stream: resume elsewhere
                self._drop_stream()
                deadline = deadline or loop.time() + self._store._timeout_s
                if loop.time() >= deadline:
                    self.finish()
                    raise StoreError(f"etcd keeps ending the watch from revision {self._next_revision}")
                await asyncio.sleep(_RETRY_PAUSE_S)
                continue
            self._handle(response)
            return

    async def _open(self, deadline: float) -> None:
        store = self._store
        endpoint = await store._pick_endpoint(deadline)
        call = endpoint.watch.Watch(metadata=_REQUIRE_LEADER)
        self._call, self._endpoint = call, endpoint
        create = rpc.WatchCreateRequest(key=self._key, range_end=self._range_end, start_revision=self._next_revision)
        await call.write(rpc.WatchRequest(create_request=create))

    def _handle(self, response: Any) -> None:
        store = self._store
        store._observe(response.header.revision)
        if response.compact_revision:
            compact_revision = response.compact_revision
            self._drop_stream()
            if self._from_now:
                # Only this store's idea of "now" was compacted: start at what is left.
                self._next_revision = max(self._next_revision, compact_revision)
                self._from_now = False
                return
            requested = self._next_revision
            self.finish()
            raise Compacted(requested, compact_revision)
        if response.canceled:
            reason = response.cancel_reason or "no reason given"
            self.finish()
            raise StoreError(f"etcd cancelled the watch from revision {self._next_revision}: {reason}")
        for event in response.events:
            kv = event.kv
            if kv.mod_revision < self._next_revision:
                continue  # defensive: never deliver a revision twice
            deleted = event.type == rpc.Event.DELETE
            self._events.append(
                Event(
                    "delete" if deleted else "put",
                    store._user_key(kv.key),
                    b"" if deleted else bytes(kv.value),
                    kv.mod_revision,
                )
            )
        if response.events:
            self._from_now = False
            # All events of one revision arrive in one response, so resuming after the last
            # one's revision neither skips nor repeats any.
            self._next_revision = response.events[-1].kv.mod_revision + 1

    def _drop_stream(self) -> None:
        call, self._call = self._call, None
        if call is not None:
            call.cancel()

    def finish(self) -> None:
        """End the iteration: the consumer's next (or pending) read stops it."""
        self._finished = True
        self._events.clear()
        self._drop_stream()

    async def aclose(self) -> None:
        self.finish()
        self._store._watches.discard(self)
