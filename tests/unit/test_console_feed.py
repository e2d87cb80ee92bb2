import asyncio

import pytest

from mixerd.console.feed import DecisionFeed
from mixerd.console.model import Decision, Frontend, Peer, Verdict


def _decision(n: int) -> Decision:
    return Decision(n, Frontend.MIXER_CHECK, Verdict.ALLOW, 0, "", f"t{n}", Peer(), Peer())


async def test_subscribers_receive_decisions_published_after_they_subscribed() -> None:
    feed = DecisionFeed()
    feed.publish(_decision(0))
    a, b = feed.subscribe(), feed.subscribe()
    feed.publish(_decision(1))
    feed.publish(_decision(2))
    assert [d.time_us for d in await a.next_batch()] == [1, 2]
    assert [d.time_us for d in await b.next_batch()] == [1, 2]


async def test_a_waiting_subscriber_wakes_on_publish_and_ends_on_close() -> None:
    feed = DecisionFeed()
    sub = feed.subscribe()
    got: list[int] = []

    async def listen() -> None:
        async for d in sub:
            got.append(d.time_us)

    task = asyncio.create_task(listen())
    await asyncio.sleep(0)
    feed.publish(_decision(7))
    await asyncio.sleep(0)
    sub.close()
    await asyncio.wait_for(task, 1)
    assert got == [7]
    assert feed.subscribers == 0


async def test_a_slow_subscriber_loses_the_oldest_and_counts_them() -> None:
    feed = DecisionFeed()
    sub = feed.subscribe(buffer=3)
    for n in range(5):
        feed.publish(_decision(n))
    assert [d.time_us for d in await sub.next_batch()] == [2, 3, 4]
    assert sub.lost == 2


def test_listeners_are_bounded() -> None:
    feed = DecisionFeed(max_subscribers=1)
    feed.subscribe()
    with pytest.raises(RuntimeError, match="1 listeners"):
        feed.subscribe()
