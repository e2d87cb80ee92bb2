"""Choosing a console store by URL, and the compact id encoding both stores share."""

from __future__ import annotations

from pathlib import Path

import pytest

from mixerd.console.store import open_store, sqlite_path
from mixerd.console.store._codec import pack_id, unpack_id
from mixerd.console.store.postgres import PostgresStore
from mixerd.console.store.sqlite import SQLiteStore


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///var/lib/mixerd/console.db", "/var/lib/mixerd/console.db"),
        ("sqlite:////var/lib/mixerd/console.db", "/var/lib/mixerd/console.db"),  # SQLAlchemy's form
        ("sqlite://console.db", "console.db"),
        ("sqlite://data/console.db", "data/console.db"),
        ("sqlite:///tmp/with%20space.db", "/tmp/with space.db"),
    ],
)
def test_sqlite_urls(url: str, path: str) -> None:
    assert sqlite_path(url) == Path(path)
    store = open_store(url)
    assert isinstance(store, SQLiteStore) and store.path == Path(path)


def test_sqlite_home_is_expanded() -> None:
    assert sqlite_path("sqlite://~/console.db") == Path.home() / "console.db"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "postgresql://mixerd:hunter2@db.example:5432/console",
            "postgresql://mixerd:***@db.example:5432/console",
        ),
        ("postgres://mixerd:hunter2@db.example/console", "postgres://mixerd:***@db.example/console"),
        ("postgresql:///console?host=/run/postgresql", "postgresql:///console?host=/run/postgresql"),
        (
            "postgresql:///console?host=/run/postgresql&password=hunter2",
            "postgresql:///console?host=/run/postgresql&password=***",
        ),
    ],
)
def test_postgresql_urls(url: str, shown: str) -> None:
    store = open_store(url)
    assert isinstance(store, PostgresStore)
    assert store.url_for_display == shown


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "mysql://root:hunter2@db/console",
            "unsupported console store URL 'mysql://root:\\*\\*\\*@db/console'",
        ),
        ("/var/lib/console.db", "unsupported console store URL"),
        ("", "unsupported console store URL"),
        ("sqlite:console.db", "is not a sqlite:// URL"),
        ("sqlite:///", "names no file"),
        ("sqlite:///console.db?mode=ro", "SQLite takes no options"),
        ("postgresql://u:hunter2@db:99999/console", "Port out of range"),
        ("postgresql:console", "is not a postgresql:// URL"),
    ],
)
def test_unusable_urls_are_value_errors_without_the_password(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as err:
        open_store(url)
    assert "hunter2" not in str(err.value)


@pytest.mark.parametrize(
    ("value", "size"),
    [
        ("4bf92f3577b34da6a3ce929d0e0e4736", 17),  # W3C / B3-128 trace id: 16 bytes + tag
        ("00f067aa0ba902b7", 9),
        ("7c4d6a6e-7b0f-4e0c-9d6a-2a9c3e1f0b11", 17),  # Envoy's x-request-id
        ("7C4D6A6E-7B0F-4E0C-9D6A-2A9C3E1F0B11", 37),  # upper case: kept as text, exactly
        ("4BF92F3577B34DA6", 17),
        ("abc", 4),
        ("order-42/ü", 12),
        ("a b", 4),
        ("\udcff", 4),
    ],
)
def test_ids_pack_compactly_and_come_back_exactly(value: str, size: int) -> None:
    packed = pack_id(value)
    assert packed is not None and len(packed) == size
    assert unpack_id(packed) == value


def test_an_empty_id_is_null() -> None:
    assert pack_id("") is None and unpack_id(None) == ""
