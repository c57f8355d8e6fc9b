"""Control-plane key-value store: the interface and the backends behind ``open_store``."""

from __future__ import annotations

from pathlib import Path

from .base import CasConflict, Compacted, Event, KeyValue, LeaseNotFound, Store, StoreError
from .sqlite import SqliteStore

__all__ = [
    "CasConflict",
    "Compacted",
    "Event",
    "KeyValue",
    "LeaseNotFound",
    "SqliteStore",
    "Store",
    "StoreError",
    "open_store",
]

_DB_FILE = "store.db"


async def open_store(url: str) -> Store:
    """Open the store a URL names.

    Accepted: a plain directory path, ``sqlite:///abs/dir`` or ``sqlite://rel/dir`` (the
    database is ``<dir>/store.db``; the directory is created), or
    ``etcd://host1:2379,host2:2379[/prefix][?cacert=ca.pem&cert=client.pem&key=client.key]``
    (an etcd v3 cluster; every key is stored under the path, without trailing slashes, as a
    prefix; ``cacert`` or ``tls=1`` for TLS, ``cert`` and ``key`` for a client certificate).
    """
    if url.startswith("etcd://"):
        try:  # aetcd loads only when etcd is used
            from .etcd import EtcdStore, parse_etcd_url
        except ImportError as exc:
            raise StoreError(f"the etcd backend needs the aetcd package ({exc})") from exc
        endpoints, prefix, tls = parse_etcd_url(url)
        return await EtcdStore.open(endpoints, prefix=prefix, tls=tls)
    if url.startswith("sqlite://"):
        directory = url[len("sqlite://") :]
    elif "://" in url:
        raise StoreError(
            f"unsupported store URL {url!r}: use a directory path, sqlite:///abs/dir, "
            "sqlite://relative/dir or etcd://host:2379[,host:2379][/prefix]"
        )
    else:
        directory = url
    if not directory:
        raise StoreError(f"store URL {url!r} names no directory")
    path = Path(directory).expanduser()
    try:
        # Owner only: the store holds key and token hashes (and the generated tokens sit beside it).
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create store directory {path}: {exc}") from exc
    return await SqliteStore.open(path / _DB_FILE)
