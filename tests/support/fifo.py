"""A named pipe whose reading the test controls: a deterministic slow (blocked) output for a server.

While the test does not read, a writer fills the pipe buffer (64 KiB on Linux) and then blocks
in ``write()``; :meth:`FifoReader.drain` starts reading everything in a background thread, until
the writer closes its end.
"""

from __future__ import annotations

import os
import select
import threading
from pathlib import Path

__all__ = ["FifoReader"]


class FifoReader:
    """Creates the FIFO at ``path`` and holds its read end open (without reading), so a writer can
    open it without blocking."""

    def __init__(self, path: Path) -> None:
        self.path = path
        os.mkfifo(path)
        self._fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        self._data = bytearray()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.eof = threading.Event()
        """Set when every writer closed its end (after :meth:`drain` started)."""

    def drain(self) -> None:
        """Read everything the writers write from now on, in a background thread."""
        assert self._thread is None, "already draining"
        self._thread = threading.Thread(target=self._read, name=f"fifo-{self.path.name}", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self._fd], [], [], 0.05)
            if not ready:
                continue
            try:
                chunk = os.read(self._fd, 1 << 16)
            except BlockingIOError:
                continue
            if not chunk:  # every writer closed its end
                self.eof.set()
                return
            with self._lock:
                self._data += chunk

    @property
    def data(self) -> bytes:
        with self._lock:
            return bytes(self._data)

    @property
    def lines(self) -> int:
        """Complete lines read so far."""
        with self._lock:
            return self._data.count(b"\n")

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        os.close(self._fd)
