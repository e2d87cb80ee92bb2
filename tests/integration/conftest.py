"""Fixtures of the integration tests (the shared ones are in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support.redisquota_handlers import Handlers


@pytest.fixture
async def handlers() -> AsyncIterator[Handlers]:
    """redisquota handlers a test builds, closed at its end."""
    h = Handlers()
    try:
        yield h
    finally:
        await h.close()
