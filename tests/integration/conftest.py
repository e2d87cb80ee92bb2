"""Fixtures of the integration tests (the shared ones are in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from tests.support.redisquota_handlers import Handlers

from .mixerd_proc import MixerdProcess


@pytest.fixture
async def handlers() -> AsyncIterator[Handlers]:
    """redisquota handlers a test builds, closed at its end."""
    h = Handlers()
    try:
        yield h
    finally:
        await h.close()


@pytest.fixture
def mixerd_procs() -> Iterator[list[MixerdProcess]]:
    """``mixerd serve`` processes a test starts; any still running at the end is killed (its exit
    code is the test's business, the fixture only makes sure nothing is left behind)."""
    procs: list[MixerdProcess] = []
    try:
        yield procs
    finally:
        for p in procs:
            if p.proc.poll() is None:
                p.proc.kill()
                p.proc.wait()
