"""Stores: MemoryStore and FileStore (mixerd.config.store, mixerd.config.fsstore)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mixerd.config import (
    ChangeBatch,
    EventType,
    FileStore,
    Key,
    MemoryStore,
    Resource,
    Severity,
    apply_batch,
    parse_text,
)

WAIT = 5.0  # generous upper bound for a batch to arrive; tests normally finish far sooner


def doc(name: str, adapter: str = "noop", namespace: str = "istio-system") -> str:
    return (
        "apiVersion: config.istio.io/v1alpha2\nkind: handler\n"
        f"metadata: {{name: {name}, namespace: {namespace}}}\nspec: {{compiledAdapter: {adapter}}}\n"
    )


def handler(name: str, adapter: str = "noop", namespace: str = "istio-system") -> Resource:
    return parse_text(doc(name, adapter, namespace)).resources[0]


async def next_batch(it: AsyncIterator[ChangeBatch], timeout: float = WAIT) -> ChangeBatch:
    return await asyncio.wait_for(anext(it), timeout)


async def no_batch(it: AsyncIterator[ChangeBatch], within: float) -> None:
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(anext(it), within)


# --- MemoryStore --------------------------------------------------------------------------------


async def test_memory_store_batches() -> None:
    a, b = handler("a"), handler("b")
    store = MemoryStore([a])
    changes = store.watch()
    assert await store.list() == {a.key: a}

    store.set(b, handler("a", "denier"))
    batch = await next_batch(changes)
    assert [(e.type, e.key.name) for e in batch.events] == [(EventType.UPDATE, "a"), (EventType.UPDATE, "b")]

    store.set(b)  # no change: no batch
    store.delete(a.key, Key("handler", "x", "nope"))
    batch = await next_batch(changes)
    assert [(e.type, e.key.name, e.resource) for e in batch.events] == [(EventType.DELETE, "a", None)]

    state = {a.key: a}
    store.replace([b, b])  # a duplicate: last wins, with a warning problem
    batch = await next_batch(changes)
    assert batch.events == ()  # b was already there
    (dup,) = batch.problems
    assert dup.severity is Severity.WARNING and "defined more than once" in dup.message
    apply_batch(state, batch)
    assert store.problems() == batch.problems

    await store.close()
    with pytest.raises(StopAsyncIteration):
        await anext(changes)
    late = store.watch()
    with pytest.raises(StopAsyncIteration):
        await anext(late)


async def test_apply_batch_replays_list_then_watch() -> None:
    store = MemoryStore()
    changes = store.watch()
    store.set(handler("a"), handler("b"))
    state = await store.list()
    apply_batch(state, await next_batch(changes))  # replaying events list() already saw is harmless
    assert state == await store.list()


# --- FileStore ----------------------------------------------------------------------------------


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    d = tmp_path / "config"
    (d / "sub").mkdir(parents=True)
    (d / "a.yaml").write_text(doc("a"))
    (d / "sub" / "b.yml").write_text(doc("b") + "---\n" + doc("c"))
    return d


async def test_file_store_lists_recursively(config_dir: Path) -> None:
    async with FileStore(config_dir, watch_events=False, resync_interval=None) as store:
        state = await store.list()
        assert sorted(k.name for k in state) == ["a", "b", "c"]
        assert state[Key("handler", "istio-system", "c")].source is not None
        assert store.problems() == ()
        assert await store.rescan() is None  # nothing changed


async def test_file_store_one_batch_per_change_within_debounce(config_dir: Path) -> None:
    async with FileStore(config_dir, debounce=0.2, resync_interval=None) as store:
        changes = store.watch()
        await store.list()
        await asyncio.sleep(0.1)  # let the watcher start
        scans = store.scans
        for adapter in ("denier", "prometheus", "stdio"):  # three writes in a row: one batch
            (config_dir / "a.yaml").write_text(doc("a", adapter))
        batch = await next_batch(changes)
        (event,) = batch.events
        assert event.type is EventType.UPDATE and event.resource is not None
        assert event.resource.spec.compiled_adapter == "stdio"  # type: ignore[union-attr]
        # (two or three scans: the new contents are adopted once they read the same for 0.2 s)
        assert store.scans > scans
        await no_batch(changes, 0.5)

        (config_dir / "sub" / "b.yml").unlink()
        batch = await next_batch(changes)
        assert [(e.type, e.key.name) for e in batch.events] == [
            (EventType.DELETE, "b"),
            (EventType.DELETE, "c"),
        ]


async def test_file_store_keeps_last_good_on_syntax_error(config_dir: Path) -> None:
    async with FileStore(config_dir, debounce=0.05, resync_interval=None) as store:
        changes = store.watch()
        before = await store.list()
        await asyncio.sleep(0.1)
        bad = config_dir / "sub" / "b.yml"
        bad.write_text(doc("b") + "---\nkind: handler\nmetadata:\n  name: [oops\n")
        (config_dir / "a.yaml").write_text(doc("a", "denier"))
        batch = await next_batch(changes)
        if not batch.events:  # the two writes may land in two batches
            batch = await next_batch(changes)
        assert [(e.type, e.key.name) for e in batch.events] == [(EventType.UPDATE, "a")]
        (problem,) = store.problems()
        assert problem.key_or_file == str(bad)
        assert problem.path.startswith("line ")
        assert str(problem).startswith(f"{bad}: line ")
        state = await store.list()
        assert state[Key("handler", "istio-system", "b")] == before[Key("handler", "istio-system", "b")]
        assert Key("handler", "istio-system", "c") in state

        bad.write_text(doc("b", "denier"))  # fixed: c goes away, b changes, the problem clears
        batch = await next_batch(changes)
        assert [(e.type, e.key.name) for e in batch.events] == [
            (EventType.UPDATE, "b"),
            (EventType.DELETE, "c"),
        ]
        assert batch.problems == () and store.problems() == ()


async def test_file_store_resync_without_watcher(config_dir: Path) -> None:
    async with FileStore(config_dir, watch_events=False, resync_interval=0.1) as store:
        changes = store.watch()
        await store.list()
        (config_dir / "new.json").write_text(
            '{"kind": "handler", "metadata": {"name": "d"}, "spec": {"compiledAdapter": "noop"}}'
        )
        batch = await next_batch(changes)
        assert [(e.type, e.key.name) for e in batch.events] == [(EventType.UPDATE, "d")]
        await no_batch(changes, 0.35)  # later resyncs find nothing new (same hashes)


async def test_file_store_explicit_files(tmp_path: Path) -> None:
    one = tmp_path / "one.yaml"
    one.write_text(doc("one"))
    (tmp_path / "other.yaml").write_text(doc("other"))  # same folder, not listed: not read
    missing = tmp_path / "missing.yaml"
    async with FileStore([one, missing], debounce=0.05, resync_interval=None) as store:
        changes = store.watch()
        assert [k.name for k in await store.list()] == ["one"]
        (problem,) = store.problems()
        assert str(problem) == f"{missing}: cannot read file: No such file or directory"
        await asyncio.sleep(0.1)
        missing.write_text(doc("two"))
        batch = await next_batch(changes)
        assert [(e.type, e.key.name) for e in batch.events] == [(EventType.UPDATE, "two")]
        assert batch.problems == ()


async def test_file_store_duplicates_and_ignored(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(doc("x", "noop"))
    (tmp_path / "b.yaml").write_text(
        doc("x", "denier")
        + "---\napiVersion: networking.istio.io/v1alpha3\nkind: DestinationRule\nmetadata: {name: d}\n"
    )
    async with FileStore(tmp_path, watch_events=False, resync_interval=None) as store:
        state = await store.list()
        assert state[Key("handler", "istio-system", "x")].spec.compiled_adapter == "denier"  # type: ignore[union-attr]
        (dup,) = store.problems()
        assert dup.severity is Severity.WARNING
        assert [i.kind for i in store.ignored()] == ["DestinationRule"]


async def test_file_store_close_ends_watchers(config_dir: Path) -> None:
    store = FileStore(config_dir, debounce=0.05, resync_interval=0.05)
    changes = store.watch()
    await store.list()
    await store.close()
    await store.close()  # idempotent
    with pytest.raises(StopAsyncIteration):
        await anext(changes)


async def test_file_store_adopts_changed_contents_only_once_they_read_the_same_for_the_debounce(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A file rewritten in place can be read truncated or half written (and, racing the writer,
    # with its old modification time): the background scans adopt contents that read the same
    # for `debounce` seconds. The store's clock is moved by hand, so nothing here depends on timing.
    import mixerd.config.fsstore as fsstore

    clock = [1000.0]
    monkeypatch.setattr(fsstore.time, "monotonic", lambda: clock[0])
    policy = tmp_path / "policy.yaml"
    policy.write_text(doc("a") + "---\n" + doc("b"))
    async with FileStore(policy, watch_events=False, resync_interval=None, debounce=0.5) as store:
        assert sorted(k.name for k in await store.list()) == ["a", "b"]  # the first load adopts
        policy.write_text("")  # truncated: the writer has not written the new contents yet
        assert await store._rescan(settle=0.5) is None
        clock[0] += 0.2
        policy.write_text(doc("a"))  # half written
        assert await store._rescan(settle=0.5) is None
        clock[0] += 0.49  # not yet the same for 0.5 s
        assert await store._rescan(settle=0.5) is None
        clock[0] += 0.01
        batch = await store._rescan(settle=0.5)
        assert batch is not None and sorted(k.name for k in await store.list()) == ["a"]
        # an explicit rescan adopts what it reads
        policy.write_text(doc("c"))
        assert await store.rescan() is not None
        assert [k.name for k in await store.list()] == ["c"]


async def test_file_store_a_new_file_waits_for_the_debounce_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mixerd.config.fsstore as fsstore

    clock = [1000.0]
    monkeypatch.setattr(fsstore.time, "monotonic", lambda: clock[0])
    async with FileStore(tmp_path, watch_events=False, resync_interval=None, debounce=0.5) as store:
        assert await store.list() == {}
        (tmp_path / "new.yaml").write_text(doc("n"))
        assert await store._rescan(settle=0.5) is None
        clock[0] += 0.5
        assert await store._rescan(settle=0.5) is not None
        assert [k.name for k in await store.list()] == ["n"]
