"""Control-plane key-value store: the interface and the backends behind ``open_store``."""

from __future__ import annotations

from pathlib import Path

from .base import CasConflict, Compacted, Event, KeyValue, Store, StoreError
from .sqlite import SqliteStore

__all__ = [
    "CasConflict",
    "Compacted",
    "Event",
    "KeyValue",
    "SqliteStore",
    "Store",
    "StoreError",
    "open_store",
]

_DB_FILE = "store.db"


async def open_store(url: str) -> Store:
    """Open the store a URL names.

    Accepted: a plain directory path, ``sqlite:///abs/dir`` or ``sqlite://rel/dir`` (the
    database is ``<dir>/store.db``; the directory is created). ``etcd://`` is reserved.
    """
    if url.startswith("etcd://"):
        raise StoreError(
            f"the etcd backend is not available yet (got {url!r}); "
            "use a directory path or sqlite:///path/to/dir"
        )
    if url.startswith("sqlite://"):
        directory = url[len("sqlite://") :]
    elif "://" in url:
        raise StoreError(
            f"unsupported store URL {url!r}: use a directory path, sqlite:///abs/dir, "
            "sqlite://relative/dir (etcd:// is not available yet)"
        )
    else:
        directory = url
    if not directory:
        raise StoreError(f"store URL {url!r} names no directory")
    path = Path(directory).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create store directory {path}: {exc}") from exc
    return await SqliteStore.open(path / _DB_FILE)
