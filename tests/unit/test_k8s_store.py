"""KubeStore against the fake API server (tests/support/fake_kube.py) on loopback, over TLS."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from mixerd.config import ChangeBatch, EventType, Key
from mixerd.config.k8s.kinds import KINDS, KubeKind
from mixerd.config.k8s.store import KubeStore
from tests.support.certs import CA
from tests.support.fake_kube import Crd, FakeKubeApi, load_fixture_lists, write_kubeconfig

DATA = Path(__file__).resolve().parents[1] / "data" / "k8s"
TOKEN = "k8s-store-token-7f3a"
MIXER = [k for k in KINDS if k.kind in ("rule", "instance", "handler", "attributemanifest")]
CRDS = [Crd(k.group, k.version, k.kind, k.plural) for k in MIXER]


def rule(name: str, match: str = "true", ns: str = "istio-system", **spec: Any) -> dict[str, Any]:
    body = {"match": match, "actions": [{"handler": "prometheus", "instances": ["requestcount"]}], **spec}
    return {
        "apiVersion": "config.istio.io/v1alpha2",
        "kind": "rule",
        "metadata": {"name": name, "namespace": ns},
        "spec": body,
    }


async def until(predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.01)


async def next_batch(changes: AsyncIterator[ChangeBatch], timeout: float = 10.0) -> ChangeBatch:
    return await asyncio.wait_for(changes.__anext__(), timeout)


@pytest.fixture(scope="module")
def ca() -> CA:
    return CA("fake kube CA")


@pytest.fixture
async def api(ca: CA) -> AsyncIterator[FakeKubeApi]:
    server = FakeKubeApi(CRDS, token=TOKEN, page_size=3)
    server.load(load_fixture_lists(DATA))
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(*ca.server("fake-kube").files())
    await server.start(ctx)
    yield server
    await server.stop()


@pytest.fixture
def kubeconfig(tmp_path: Path, api: FakeKubeApi, ca: CA) -> Path:
    return write_kubeconfig(tmp_path / "kubeconfig", api.url, token=TOKEN, ca_pem=ca.pem)


def make_store(
    kubeconfig: Path, query: str = "", kinds: list[KubeKind] | None = None, **kw: Any
) -> KubeStore:
    kw.setdefault("debounce", 0.02)
    kw.setdefault("backoff", (0.02, 0.2))
    kw.setdefault("missing_retry", 0.2)
    return KubeStore(f"k8s://{kubeconfig}{query}", kinds=MIXER if kinds is None else kinds, **kw)


async def test_initial_list_paginated_over_tls_with_token(api: FakeKubeApi, kubeconfig: Path) -> None:
    async with make_store(kubeconfig) as store:
        state = await store.list()
    assert len(state) == 19
    assert Key("rule", "istio-system", "promhttp") in state
    assert store.problems() == ()
    assert store.waiting_for() == ()
    assert api.unauthorized == 0
    pages = [q for m, p, q in api.requests if p.endswith("/instances") and "watch" not in q]
    assert len(pages) >= 3 and "continue" in pages[1]  # 9 instances, pages of 3
    rules = state[Key("rule", "istio-system", "promhttp")]
    assert rules.source is not None and "rules.config.istio.io/istio-system/promhttp" in str(rules.source)


async def test_watch_from_list_version_add_change_delete(api: FakeKubeApi, kubeconfig: Path) -> None:
    async with make_store(kubeconfig) as store:
        changes = store.watch()
        await store.list()
        listed_rv = str(api.rv)
        await until(lambda: len(api.watchers) == len(MIXER))
        assert all(q["resourceVersion"] == listed_rv for q in api.watches("rules"))
        assert all(q["allowWatchBookmarks"] == "true" for q in api.watches("rules"))

        api.put(rule("extra", 'request.host == "a"'))
        batch = await next_batch(changes)
        assert [(e.type, e.key.name) for e in batch.events] == [(EventType.UPDATE, "extra")]

        api.put(rule("extra", 'request.host == "b"'))
        batch = await next_batch(changes)
        assert batch.events[0].resource is not None
        assert batch.events[0].resource.spec.match == 'request.host == "b"'  # type: ignore[union-attr]

        api.delete("config.istio.io/v1alpha2", "rule", "istio-system", "extra")
        batch = await next_batch(changes)
        assert [(e.type, e.key.name) for e in batch.events] == [(EventType.DELETE, "extra")]
        assert Key("rule", "istio-system", "extra") not in await store.list()


async def test_burst_is_debounced_into_one_batch(api: FakeKubeApi, kubeconfig: Path) -> None:
    async with make_store(kubeconfig, debounce=0.3) as store:
        changes = store.watch()
        await store.list()
        await until(lambda: len(api.watchers) == len(MIXER))
        for i in range(5):
            api.put(rule(f"burst{i}"))
        batch = await next_batch(changes)
        assert sorted(e.key.name for e in batch.events) == [f"burst{i}" for i in range(5)]


async def test_bookmark_moves_the_resume_point(api: FakeKubeApi, kubeconfig: Path) -> None:
    async with make_store(kubeconfig) as store:
        await store.list()
        await until(lambda: len(api.watchers) == len(MIXER))
        api.put(rule("elsewhere", ns="other"))  # moves the global version
        await until(lambda: len(api.watchers) == len(MIXER))
        assert api.bookmark() == len(MIXER)
        bookmark_rv = str(api.rv)
        await until(api.delivered)
        api.end_watches()  # a watch that ends normally resumes from the last version seen
        await until(lambda: any(q["resourceVersion"] == bookmark_rv for q in api.watches("handlers")))
        assert api.lists["/apis/config.istio.io/v1alpha2/handlers"] == 1  # no relist needed


async def test_gone_relists_and_publishes_the_difference(api: FakeKubeApi, kubeconfig: Path) -> None:
    async with make_store(kubeconfig) as store:
        changes = store.watch()
        await store.list()
        await until(lambda: len(api.watchers) == len(MIXER))
        lists_before = api.lists["/apis/config.istio.io/v1alpha2/rules"]
        # Changes the open watches miss, then the history is compacted: every watch ends with an
        # ERROR event carrying 410, and only a new list shows the changes.
        api.put(rule("after-gone"), notify=False)
        api.delete("config.istio.io/v1alpha2", "rule", "istio-system", "promtcp", notify=False)
        api.compact()
        batch = await next_batch(changes)
        seen = {(e.type, e.key.name) for e in batch.events}
        while seen != {(EventType.UPDATE, "after-gone"), (EventType.DELETE, "promtcp")}:
            seen |= {(e.type, e.key.name) for e in (await next_batch(changes)).events}
        assert api.lists["/apis/config.istio.io/v1alpha2/rules"] > lists_before


async def test_gone_as_http_410_on_watch(api: FakeKubeApi, kubeconfig: Path) -> None:
    api.gone_as_http = True
    async with make_store(kubeconfig) as store:
        await store.list()
        await until(lambda: len(api.watchers) == len(MIXER))
        api.compact(expire_watches=False)
        api.drop_watches()  # the client watches again from its (now too old) version: HTTP 410
        api.put(rule("seen-after-relist"))
        await until(lambda: Key("rule", "istio-system", "seen-after-relist") in store._published.state)


async def test_dropped_connection_and_5xx_back_off_and_recover(
    api: FakeKubeApi, kubeconfig: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with make_store(kubeconfig) as store:
        await store.list()
        await until(lambda: len(api.watchers) == len(MIXER))
        api.fail_lists = 3
        assert api.drop_watches() == len(MIXER)
        api.put(rule("after-drop"))
        await until(lambda: Key("rule", "istio-system", "after-drop") in store._published.state)
        assert api.fail_lists == 0
    assert "etcd is having a bad day" in caplog.text
    assert TOKEN not in caplog.text


async def test_kind_not_installed_is_skipped_then_found(
    api: FakeKubeApi, kubeconfig: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mixerd.config.k8s.store")
    quotas = next(k for k in KINDS if k.kind == "QuotaSpec")
    async with make_store(kubeconfig, kinds=[*MIXER, quotas]) as store:
        changes = store.watch()
        state = await store.list()  # ready although quotaspecs is not installed
        assert len(state) == 19
        assert store.not_installed() == ("quotaspecs.config.istio.io",)
        path = "/apis/config.istio.io/v1alpha2/quotaspecs"
        await until(lambda: len([p for _, p, _ in api.requests if p == path]) >= 3)  # looked for again
        notes = [
            r
            for r in caplog.records
            if r.getMessage().startswith("quotaspecs.config.istio.io: not installed")
        ]
        assert len(notes) == 1  # logged once, not per retry
        assert any("1 config kinds are not installed" in r.getMessage() for r in caplog.records)
        api.install(Crd(quotas.group, quotas.version, quotas.kind, quotas.plural))
        api.put(
            {
                "apiVersion": "config.istio.io/v1alpha2",
                "kind": "QuotaSpec",
                "metadata": {"name": "q", "namespace": "default"},
                "spec": {"rules": [{"quotas": [{"quota": "rq.instance.istio-system", "charge": 1}]}]},
            }
        )
        batch = await next_batch(changes)
        assert [e.key for e in batch.events] == [Key("QuotaSpec", "default", "q")]
        assert store.not_installed() == ()


async def test_not_ready_until_every_kind_is_listed(api: FakeKubeApi, kubeconfig: Path) -> None:
    api.hold_lists = asyncio.Event()
    async with make_store(kubeconfig) as store:
        listing = asyncio.ensure_future(store.list())
        await until(lambda: len(api.requests) >= len(MIXER))  # every list is in, and held
        assert not listing.done()
        assert set(store.waiting_for()) == {k.resource for k in MIXER}
        api.hold_lists.set()
        assert len(await asyncio.wait_for(listing, 10)) == 19
        assert store.waiting_for() == ()


async def test_namespaces_limit_the_collections(api: FakeKubeApi, kubeconfig: Path) -> None:
    api.put(rule("mine", ns="team-a"))
    api.put(rule("theirs", ns="team-b"))
    async with make_store(kubeconfig, "?namespaces=team-a,istio-system") as store:
        state = await store.list()
    names = {k.name for k in state if k.kind == "rule"}
    assert "mine" in names and "promhttp" in names and "theirs" not in names
    paths = {p for _, p, _ in api.requests}
    assert "/apis/config.istio.io/v1alpha2/namespaces/team-a/rules" in paths
    assert "/apis/config.istio.io/v1alpha2/rules" not in paths


async def test_bad_resource_is_a_problem_with_its_field_path(api: FakeKubeApi, kubeconfig: Path) -> None:
    bad = rule("bad")
    bad["spec"]["actions"] = "not-a-list"
    api.put(bad)
    async with make_store(kubeconfig) as store:
        state = await store.list()
    issues = state[Key("rule", "istio-system", "bad")].issues
    assert [(i.path, i.message) for i in issues] == [("spec.actions", "expected a list, got str")]


async def test_wrong_token_is_not_ready_and_never_logged(
    api: FakeKubeApi, tmp_path: Path, ca: CA, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = write_kubeconfig(tmp_path / "wrong", api.url, token="wrong-token-9c1d", ca_pem=ca.pem)
    async with make_store(wrong) as store:
        listing = asyncio.ensure_future(store.list())
        errors = await until(store.list_errors)
        assert any("Unauthorized" in e for e in errors)
        assert not listing.done()  # not ready, still trying
        listing.cancel()
    assert api.unauthorized > 0
    assert "wrong-token-9c1d" not in caplog.text


async def test_untrusted_server_certificate_is_refused(api: FakeKubeApi, tmp_path: Path) -> None:
    other = CA("some other CA")
    config = write_kubeconfig(tmp_path / "other-ca", api.url, token=TOKEN, ca_pem=other.pem)
    async with make_store(config) as store:
        listing = asyncio.ensure_future(store.list())
        errors = await until(store.list_errors)
        assert any("certificate" in e.lower() for e in errors)
        assert not listing.done()
        listing.cancel()
    assert api.requests == []


async def test_events_written_once_per_problem(api: FakeKubeApi, kubeconfig: Path) -> None:
    def validate(resources: Any, problems: Any) -> list[Any]:
        from mixerd.config import ResourceError

        return [
            ResourceError(r.key, "spec.match", "unknown attribute 'reqest.size'")
            for r in resources
            if r.key.kind == "rule" and "reqest" in getattr(r.spec, "match", "")
        ]

    async with make_store(kubeconfig, write_events=True, validate=validate) as store:
        changes = store.watch()
        await store.list()
        await until(lambda: len(api.watchers) == len(MIXER))
        api.put(rule("typo", "reqest.size > 10"))
        await next_batch(changes)
        await until(lambda: len(api.events) == 1)
        event = api.events[0]
        assert event["involvedObject"]["name"] == "typo"
        assert event["involvedObject"]["kind"] == "rule"
        assert event["metadata"]["namespace"] == "istio-system"
        assert event["type"] == "Warning" and event["reason"] == "InvalidConfig"
        assert "spec.match: unknown attribute 'reqest.size'" in event["message"]
        # Another change elsewhere rebuilds the config: no second Event for the same problem.
        api.put(rule("unrelated"))
        await next_batch(changes)
        await asyncio.sleep(0.1)
        assert len(api.events) == 1
        # A new generation with the problem still there is reported again.
        api.put(rule("typo", "reqest.size > 20"))
        await next_batch(changes)
        await until(lambda: len(api.events) == 2)
        assert store.events_written == 2
