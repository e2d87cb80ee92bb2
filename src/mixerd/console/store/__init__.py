"""Console stores: SQLite (embedded, the default) and PostgreSQL (shared by several replicas), both
implementing :class:`~mixerd.console.store.base.ConsoleStore`; :func:`open_store` picks one by URL."""

from __future__ import annotations

import importlib.util
import os
import urllib.parse
from pathlib import Path

from mixerd.adapter import redact_url
from mixerd.console.store.base import ConsoleStore, StoreUnavailable

__all__ = ["URL_FORMS", "ConsoleStore", "StoreUnavailable", "open_store", "sqlite_path"]

URL_FORMS = (
    "sqlite:///absolute/path.db, sqlite://relative/path.db,"
    " postgresql://user:password@host:port/database or postgresql:///database?host=/socket/dir"
)


def sqlite_path(url: str) -> Path:
    """The file of a ``sqlite:`` URL: ``sqlite:///abs/path.db`` (also ``sqlite:////abs/path.db``),
    ``sqlite://relative/path.db`` (from the working directory), ``~`` expanded."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "sqlite" or not url.startswith("sqlite://"):
        raise ValueError(f"console store URL {redact_url(url)!r} is not a sqlite:// URL ({URL_FORMS})")
    if parts.query or parts.fragment:
        raise ValueError(f"console store URL {redact_url(url)!r}: SQLite takes no options (?...)")
    if parts.netloc:  # sqlite://relative/path.db
        text = parts.netloc + parts.path
    elif parts.path.strip("/"):  # sqlite:///abs/path.db
        text = "/" + parts.path.lstrip("/")
    else:
        raise ValueError(f"console store URL {redact_url(url)!r} names no file ({URL_FORMS})")
    return Path(os.path.expanduser(urllib.parse.unquote(text)))


def open_store(url: str) -> ConsoleStore:
    """The store a ``--console-store`` URL names, not connected yet (call ``await store.open()``).
    Raises ValueError, with a message that carries no password, for a URL it cannot use."""
    scheme = url.partition(":")[0].lower()
    if scheme == "sqlite":
        from mixerd.console.store.sqlite import SQLiteStore

        return SQLiteStore(sqlite_path(url))
    if scheme in ("postgresql", "postgres"):
        try:
            parts = urllib.parse.urlsplit(url)
            _ = parts.port  # a malformed port raises here rather than at the first connection
        except ValueError as exc:
            raise ValueError(f"console store URL {redact_url(url)!r}: {exc}") from None
        if not url.partition(":")[2].startswith("//"):
            raise ValueError(
                f"console store URL {redact_url(url)!r} is not a postgresql:// URL ({URL_FORMS})"
            )
        if importlib.util.find_spec("asyncpg") is None:
            raise ValueError(
                "the PostgreSQL console store needs the asyncpg package: pip install 'mixerd[postgres]'"
            )
        from mixerd.console.store.postgres import PostgresStore

        return PostgresStore(url)
    raise ValueError(f"unsupported console store URL {redact_url(url)!r}: use {URL_FORMS}")
