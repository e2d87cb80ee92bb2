"""The redisquota batcher: concurrent calls share a round trip, each gets its own answer."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from mixerd.adapters.redisquota.batch import Batcher, BatcherClosed


async def turns(n: int = 3) -> None:
    """Let the event loop run ``n`` times (a batch is launched on the next turn and its round
    trip starts on the one after)."""
    for _ in range(n):
        await asyncio.sleep(0)


class Backend:
    """Answers each call with its double, or the exception it is told to; records the batches.
    ``hold`` (when set) keeps a round trip waiting until it is released."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.hold: asyncio.Event | None = None
        self.fail: Exception | None = None

    async def send(self, items: Sequence[int]) -> list[int | Exception]:
        self.batches.append(list(items))
        if self.hold is not None:
            await self.hold.wait()
        if self.fail is not None:
            raise self.fail
        return [ValueError(f"no {i}") if i < 0 else i * 2 for i in items]


async def test_calls_arriving_together_share_one_round_trip() -> None:
    b = Backend()
    batcher: Batcher[int, int] = Batcher(b.send, timeout=5, max_batch=100)
    answers = await asyncio.gather(*(batcher.submit(i) for i in range(10)))
    assert answers == [i * 2 for i in range(10)]
    assert b.batches == [list(range(10))] and batcher.batches == 1


async def test_calls_arriving_during_a_round_trip_join_the_next_one() -> None:
    b = Backend()
    b.hold = asyncio.Event()
    batcher: Batcher[int, int] = Batcher(b.send, timeout=5, max_batch=3)
    first = [batcher.submit(i) for i in range(2)]
    await turns()
    assert b.batches == [[0, 1]]
    later = [batcher.submit(i) for i in range(2, 9)]  # one round trip at a time, at most 3 calls
    await turns()
    assert b.batches == [[0, 1]] and batcher.pending == 7
    b.hold.set()
    assert await asyncio.gather(*first, *later) == [i * 2 for i in range(9)]
    assert b.batches == [[0, 1], [2, 3, 4], [5, 6, 7], [8]]


async def test_each_caller_gets_its_own_error() -> None:
    b = Backend()
    batcher: Batcher[int, int] = Batcher(b.send, timeout=5, max_batch=10)
    results = await asyncio.gather(*(batcher.submit(i) for i in (1, -1, 2)), return_exceptions=True)
    assert results[0] == 2 and results[2] == 4
    assert isinstance(results[1], ValueError) and str(results[1]) == "no -1"


async def test_a_failed_round_trip_answers_every_caller() -> None:
    b = Backend()
    b.fail = ConnectionError("gone")
    batcher: Batcher[int, int] = Batcher(b.send, timeout=5, max_batch=10)
    results = await asyncio.gather(*(batcher.submit(i) for i in range(3)), return_exceptions=True)
    assert [type(r) for r in results] == [ConnectionError] * 3


async def test_time_is_bounded_in_flight_and_in_the_queue() -> None:
    b = Backend()
    b.hold = asyncio.Event()  # never set: Redis does not answer
    batcher: Batcher[int, int] = Batcher(b.send, timeout=0.05, max_batch=1)
    loop = asyncio.get_running_loop()
    started = loop.time()
    results = await asyncio.gather(*(batcher.submit(i) for i in range(3)), return_exceptions=True)
    # the first call's round trip timed out; the others timed out waiting for theirs
    assert [type(r) for r in results] == [TimeoutError] * 3
    assert loop.time() - started < 1
    assert batcher.pending == 0


async def test_a_caller_that_stopped_waiting_is_not_sent() -> None:
    b = Backend()
    batcher: Batcher[int, int] = Batcher(b.send, timeout=5, max_batch=10)
    gone = batcher.submit(1)
    gone.cancel()
    assert await batcher.submit(2) == 4
    assert b.batches == [[2]]


async def test_close_fails_queued_calls_waits_for_the_round_trip_and_refuses_new_ones() -> None:
    b = Backend()
    b.hold = asyncio.Event()
    batcher: Batcher[int, int] = Batcher(b.send, timeout=5, max_batch=1)
    sent, queued = batcher.submit(1), batcher.submit(2)
    await asyncio.sleep(0)
    closing = asyncio.create_task(batcher.aclose())
    await asyncio.sleep(0)
    with pytest.raises(BatcherClosed):
        await queued
    assert not closing.done()  # the round trip is still under way
    b.hold.set()
    await closing
    assert await sent == 2 and batcher.in_flight == 0
    with pytest.raises(BatcherClosed):
        batcher.submit(3)
