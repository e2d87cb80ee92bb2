"""Where stdio lines go: a standard stream, a file, or a size-rotated file. Blocking I/O; the
handler calls these from a worker thread, never from the event loop.

Rotation (``ROTATED_FILE``): before a write that would take the file past ``max_bytes`` the file
is renamed to ``<path>.<UTC timestamp>`` (``access.log.20200101T000000.000000Z``; ``-1``, ``-2``
... are appended if that name exists) and a new file is started. Then rotated files are pruned:
those whose timestamp is more than ``max_days`` days old and all but the newest ``max_files`` are
removed (0 disables either limit). A single write larger than ``max_bytes`` still goes into one
(fresh) file.
"""

from __future__ import annotations

import datetime as _dt
import errno
import os
import re
import sys
from collections.abc import Callable
from typing import BinaryIO, Final, Protocol

__all__ = ["FileSink", "RotatingFileSink", "Sink", "StreamSink", "open_append", "rotated_files"]

_STAMP_FORMAT: Final = "%Y%m%dT%H%M%S.%fZ"
_ROTATED_RE: Final = re.compile(r"\.(\d{8}T\d{6}\.\d{6}Z)(?:-(\d+))?\Z")


class Sink(Protocol):
    def write(self, data: str) -> None: ...

    def close(self) -> None: ...


def open_append(path: str) -> BinaryIO:
    """``open(path, "ab")``, except that a FIFO nobody reads is an error at once: opening one for
    writing would wait for a reader, and handlers are built on the event loop (the whole server
    would stop). Writes to the file block as usual (the handler makes them in its own thread)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK, 0o666)
    except OSError as exc:
        if exc.errno == errno.ENXIO:
            raise OSError(exc.errno, "a FIFO that nobody reads", path) from None
        raise
    try:
        os.set_blocking(fd, True)
        return os.fdopen(fd, "ab")
    except BaseException:
        os.close(fd)
        raise


class StreamSink:
    """``sys.stdout`` or ``sys.stderr``, looked up at each write (so redirection is honoured)."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        if name not in ("stdout", "stderr"):
            raise ValueError(f"unknown stream {name!r}")
        self.name = name

    def write(self, data: str) -> None:
        stream = sys.stdout if self.name == "stdout" else sys.stderr
        stream.write(data)
        stream.flush()

    def close(self) -> None:
        stream = sys.stdout if self.name == "stdout" else sys.stderr
        stream.flush()


class FileSink:
    """Appends to one file (created if missing; its directory must exist)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._file: BinaryIO | None = open_append(path)

    def write(self, data: str) -> None:
        if self._file is None:
            raise ValueError(f"{self.path} is closed")
        self._file.write(data.encode())
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def rotated_files(path: str) -> list[tuple[_dt.datetime, int, str]]:
    """The rotated files of ``path``: (timestamp, sequence, file path), oldest first."""
    directory = os.path.dirname(path) or "."
    base = os.path.basename(path)
    found: list[tuple[_dt.datetime, int, str]] = []
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    for name in names:
        if not name.startswith(base):
            continue
        m = _ROTATED_RE.fullmatch(name[len(base) :])
        if m is None:
            continue
        stamp = _dt.datetime.strptime(m.group(1), _STAMP_FORMAT).replace(tzinfo=_dt.UTC)
        found.append((stamp, int(m.group(2) or 0), os.path.join(directory, name)))
    found.sort()
    return found


class RotatingFileSink:
    """A file rotated by size, with rotated files pruned by age and count (see module doc)."""

    def __init__(
        self,
        path: str,
        max_bytes: int,
        max_days: int,
        max_files: int,
        now: Callable[[], _dt.datetime],
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.max_days = max_days
        self.max_files = max_files
        self._now = now
        self._file: BinaryIO | None = open_append(path)
        self._size = self._file.tell()
        self.rotations = 0

    def write(self, data: str) -> None:
        if self._file is None:
            raise ValueError(f"{self.path} is closed")
        raw = data.encode()
        if self._size > 0 and self._size + len(raw) > self.max_bytes:
            self._rotate()
        assert self._file is not None
        self._file.write(raw)
        self._file.flush()
        self._size += len(raw)

    def _rotate(self) -> None:
        assert self._file is not None
        self._file.close()
        now = self._now()
        stamp = now.astimezone(_dt.UTC).strftime(_STAMP_FORMAT)
        target = f"{self.path}.{stamp}"
        seq = 0
        while os.path.exists(target):
            seq += 1
            target = f"{self.path}.{stamp}-{seq}"
        os.replace(self.path, target)
        self.rotations += 1
        self._file = open_append(self.path)
        self._size = 0
        self.prune(now)

    def prune(self, now: _dt.datetime) -> list[str]:
        """Remove rotated files beyond the age and count limits; returns the removed paths."""
        files = rotated_files(self.path)
        doomed: list[str] = []
        if self.max_days > 0:
            cutoff = now - _dt.timedelta(days=self.max_days)
            doomed += [p for stamp, _, p in files if stamp < cutoff]
        if self.max_files > 0 and len(files) > self.max_files:
            doomed += [p for _, _, p in files[: len(files) - self.max_files]]
        removed: list[str] = []
        for p in dict.fromkeys(doomed):
            try:
                os.remove(p)
                removed.append(p)
            except FileNotFoundError:
                pass
        return removed

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
