"""redisquota on a real Redis Cluster of three primaries (``redis+cluster://``): every key of a
bucket in one hash slot, buckets spread over the primaries, exact counting shared by two
``mixerd serve`` processes, redirects while a slot moves, and a stalled primary that costs only the
buckets it holds.

Windows are long (10 minutes) wherever a count is checked, so time never ends one mid-test; every
wait is a poll with a deadline.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc

from mixerd._proto.mixer.v1 import mixer_pb2_grpc
from mixerd.adapter import Code, ManualClock, QuotaResult, SystemClock
from mixerd.adapters.redisquota.dims import bucket_keys, redis_key
from mixerd.adapters.redisquota.policy import RETRY_INTERVAL
from mixerd.api.mixer_v1.client import build_check_request, decode_check_response
from tests.support.redis_server import RedisClusterServers, RedisProcess
from tests.support.redisquota_handlers import Handlers, ask

from .mixerd_proc import MixerdProcess, start_mixerd

FIXED = {"name": "q", "maxAmount": 100, "validDuration": "600s"}
ROLLING = {
    "name": "r",
    "maxAmount": 100,
    "validDuration": "600s",
    "bucketDuration": "1s",
    "rateLimitAlgorithm": "ROLLING_WINDOW",
}


def base_of(quota: str, user: str, *, rolling: bool = False) -> str:
    """The base key of the bucket of ``quota`` for ``{"user": user}``."""
    return redis_key(quota, {"user": user}) + (".rolling" if rolling else "")


def owner_of_bucket(cluster: RedisClusterServers, base: str) -> RedisProcess:
    return cluster.owner_of(bucket_keys(base, hash_tag=True)[0])


def users_on_every_primary(
    cluster: RedisClusterServers, quotas: list[tuple[str, bool]], per_primary: int
) -> list[str]:
    """Users whose buckets (of every quota in ``quotas``: name, rolling) put at least
    ``per_primary`` buckets of each quota on each primary."""
    chosen: list[str] = []
    counts = {q: Counter[int]() for q in quotas}
    for i in range(1000):
        user = f"user-{i}"
        ports = {q: owner_of_bucket(cluster, base_of(q[0], user, rolling=q[1])).port for q in quotas}
        if any(counts[q][p] < per_primary for q, p in ports.items()):
            chosen.append(user)
            for q, p in ports.items():
                counts[q][p] += 1
        if all(all(c[n.port] >= per_primary for n in cluster.nodes) for c in counts.values()):
            return chosen
    raise AssertionError("could not spread buckets over every primary")


def bucket_total(cluster: RedisClusterServers, base: str, *, rolling: bool = False) -> int:
    """Units a bucket holds in Redis, read from the primary that owns it."""
    meta, data = bucket_keys(base, hash_tag=True)
    node = cluster.owner_of(meta)
    value = node.query("HGET", meta, "used") if rolling else node.query("GET", data)
    return int(value or 0)


# -- keys ---------------------------------------------------------------------------------------


async def test_bucket_keys_share_one_slot_and_buckets_spread_over_every_primary(
    redis_cluster: RedisClusterServers, handlers: Handlers
) -> None:
    redis_cluster.flush()
    clock = ManualClock()
    h = handlers.build(redis_cluster.url, [FIXED, ROLLING], clock)
    users = [f"user-{i}" for i in range(30)]
    for i, user in enumerate(users):
        for quota in ("q", "r"):
            dedup = f"req-{i}-{quota}" if i % 3 == 0 else ""
            assert (await ask(h, 2, quota=quota, dims={"user": user}, dedup_id=dedup)).amount == 2
    clock.advance(2)  # the rolling windows' first buckets close: their .data sorted sets appear
    for user in users:
        assert (await ask(h, 1, quota="r", dims={"user": user})).amount == 1
    assert h.stats.failures == 0

    by_node = redis_cluster.keys()
    assert all(by_node.values()), f"a primary holds no bucket: { {p: len(k) for p, k in by_node.items()} }"
    expected: set[str] = set()
    for i, user in enumerate(users):
        for quota, rolling in (("q", False), ("r", True)):
            dedup = f"req-{i}-{quota}" if i % 3 == 0 else ""
            expected.update(bucket_keys(base_of(quota, user, rolling=rolling), dedup, hash_tag=True))
    assert {k for keys in by_node.values() for k in keys} == expected

    # each bucket's keys: one hash tag, one slot, on the primary that owns that slot
    buckets: dict[str, set[tuple[int, int]]] = defaultdict(set)
    for port, keys in by_node.items():
        for key in keys:
            buckets[key[1 : key.index("}")]].add((redis_cluster.keyslot(key), port))
    assert len(buckets) == 2 * len(users)
    for base, places in buckets.items():
        assert len(places) == 1, (base, places)
        [(slot, port)] = places
        assert redis_cluster.owner(slot).port == port
    # the counts are where they belong
    assert bucket_total(redis_cluster, base_of("q", "user-0")) == 2
    assert bucket_total(redis_cluster, base_of("r", "user-0", rolling=True), rolling=True) == 3


# -- two mixerd processes, one cluster ---------------------------------------------------------

CONFIG = """
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {{name: {q}, namespace: istio-system}}
spec:
  compiledTemplate: quota
  params: {{dimensions: {{user: 'request.headers["x-user"]'}}}}
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {{name: {q}, namespace: istio-system}}
spec:
  actions: [{{handler: cluster-quota, instances: [{q}]}}]
"""
HANDLER = """
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {{name: cluster-quota, namespace: istio-system}}
spec:
  compiledAdapter: redisquota
  params:
    redisServerUrl: "{url}"
    # A failure is a denial here, never a grant: any answer not counted by Redis shows up.
    # The timeout is long so a busy machine cannot turn a slow answer into one.
    failurePolicy: FAIL_CLOSE
    timeout: 2s
    connectionPoolSize: 4
    quotas:
    - {{name: fixedq.instance.istio-system, maxAmount: {limit}, validDuration: 600s}}
    - {{name: rollq.instance.istio-system, maxAmount: {limit}, validDuration: 600s, bucketDuration: 1s,
       rateLimitAlgorithm: ROLLING_WINDOW}}
"""
LIMIT = 40
ASKED = 60  # Checks per user, each asking 1 of both quotas: 20 more than the limit
THREADS = 8


def test_two_mixerd_processes_share_quotas_exactly(
    tmp_path: Path, redis_cluster: RedisClusterServers, mixerd_procs: list[MixerdProcess]
) -> None:
    redis_cluster.flush()
    quotas = [("fixedq.instance.istio-system", False), ("rollq.instance.istio-system", True)]
    users = users_on_every_primary(redis_cluster, quotas, per_primary=2)
    config = tmp_path / "quota.yaml"
    config.write_text(
        "---\n".join(
            [HANDLER.format(url=redis_cluster.url, limit=LIMIT)]
            + [CONFIG.format(q=q) for q in ("fixedq", "rollq")]
        )
    )
    booting = time.monotonic()
    with ThreadPoolExecutor(2) as pool:  # both start at once
        for started in [pool.submit(start_mixerd, tmp_path, [config]) for _ in range(2)]:
            mixerd_procs.append(started.result())

    work = [(user, n) for user in users for n in range(ASKED)]
    random.Random(7).shuffle(work)
    lock = threading.Lock()
    answers: list[tuple[int, str, str, str, int, str]] = []  # process, user, quota, status, amount, validity
    errors: list[str] = []

    def worker(index: int) -> None:
        process = index % 2
        with grpc.insecure_channel(mixerd_procs[process].grpc_address) as channel:
            stub = mixer_pb2_grpc.MixerStub(channel)
            while True:
                with lock:
                    if not work:
                        return
                    user, n = work.pop()
                # a deduplication id per request, as Envoy sends: mixerd (like Mixer) keys a
                # quota's dedup by request id + quota name, so requests without one would all
                # share the answer kept for the first
                request = build_check_request(
                    {"request.headers": {"x-user": user}},
                    quotas={"fixedq": 1, "rollq": 1},
                    dedup_id=f"{user}-{n}",
                )
                try:
                    decoded = decode_check_response(stub.Check(request, timeout=10))
                except grpc.RpcError as exc:
                    with lock:
                        errors.append(f"{exc.code().name}: {exc.details()}")
                    continue
                with lock:
                    for quota, a in decoded["quotas"].items():
                        answers.append(
                            (process, user, quota, a["status"], a["granted_amount"], a["valid_duration"])
                        )

    started = time.monotonic()
    booted = started - booting
    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
        assert not t.is_alive(), "a load thread is stuck"
    took = time.monotonic() - started

    assert errors == []
    assert len(answers) == 2 * len(users) * ASKED
    statuses = Counter(a[3] for a in answers)
    assert set(statuses) == {"OK", "RESOURCE_EXHAUSTED"}, statuses  # no UNAVAILABLE: Redis answered all
    granted: Counter[tuple[str, str]] = Counter()
    by_process: Counter[tuple[int, str]] = Counter()
    for process, user, quota, status, amount, validity in answers:
        granted[quota, user] += amount
        by_process[process, quota] += amount
        if status == "OK":
            # granted by Redis: valid until the window ends (a fail-open grant would say 1s)
            assert amount == 1 and validity.startswith(("9m", "10m")), (amount, validity)
    for quota in ("fixedq", "rollq"):
        for user in users:
            assert granted[quota, user] == LIMIT, (quota, user, granted[quota, user])
        assert by_process[0, quota] > 0 and by_process[1, quota] > 0, by_process  # both shared the work
    # and Redis holds exactly the limit in each bucket, on the primary that owns it
    for user in users:
        assert bucket_total(redis_cluster, base_of(quotas[0][0], user)) == LIMIT
        assert bucket_total(redis_cluster, base_of(quotas[1][0], user, rolling=True), rolling=True) == LIMIT
    primaries = {
        owner_of_bucket(redis_cluster, base_of(q, u, rolling=r)).port for q, r in quotas for u in users
    }
    assert primaries == {n.port for n in redis_cluster.nodes}
    print(
        f"\n[cluster exactness] {len(answers)} quota answers from 2 processes, {len(users)} users x 2 quotas "
        f"on {len(primaries)} primaries in {took:.2f}s ({len(answers) / took:.0f} allocations/s); "
        f"the processes started in {booted:.2f}s"
    )
    for p in mixerd_procs:
        assert p.stop() == 0, p.log()[-3000:]


# -- slots that move: MOVED and ASK ------------------------------------------------------------


def another_primary(cluster: RedisClusterServers, *not_these: RedisProcess) -> RedisProcess:
    return next(n for n in cluster.nodes if all(n is not x for x in not_these))


async def test_counting_follows_a_slot_to_its_new_primary(
    redis_cluster: RedisClusterServers, handlers: Handlers
) -> None:
    """A slot moves (keys and ownership, as a resharding does): the handler's next call meets a
    MOVED redirect, which redis-py follows and learns from; counting goes on from where it was."""
    redis_cluster.flush()
    clock = ManualClock()
    h = handlers.build(redis_cluster.url, FIXED, clock)
    dims = {"user": "mover"}
    results = [await ask(h, 10, dims=dims) for _ in range(3)]
    assert [r.remaining for r in results] == [90, 80, 70]
    meta = bucket_keys(base_of("q", "mover"), hash_tag=True)[0]
    slot = redis_cluster.keyslot(meta)
    first = redis_cluster.owner(slot)
    second = another_primary(redis_cluster, first)
    redis_cluster.migrate(slot, second)
    assert meta in redis_cluster.keys()[second.port] and meta not in redis_cluster.keys()[first.port]

    r = await ask(h, 10, dims=dims)
    assert (r.amount, r.remaining) == (10, 60)  # counted on the new primary, from the moved keys
    assert h.stats.failures == 0
    # a second handler that never saw the old layout agrees
    fresh = handlers.build(redis_cluster.url, FIXED, clock)
    assert (await ask(fresh, 10, dims=dims)).remaining == 50

    # once more under concurrent load, to the third primary: whatever answers come during the
    # move, Redis never counts a unit twice or loses one
    third = another_primary(redis_cluster, first, second)
    load = [handlers.build(redis_cluster.url, FIXED, clock, failurePolicy="FAIL_CLOSE") for _ in range(2)]
    granted = 0
    moving = asyncio.create_task(asyncio.to_thread(redis_cluster.migrate, slot, third))
    answers: Counter[Code] = Counter()
    while not moving.done() or answers[Code.RESOURCE_EXHAUSTED] == 0:
        batch = await asyncio.gather(*(ask(handler, 1, dims=dims) for handler in load for _ in range(4)))
        granted += sum(r.amount for r in batch)
        answers.update(r.status.code for r in batch)
        if any(r.status.code is Code.UNAVAILABLE for r in batch):
            clock.advance(RETRY_INTERVAL)  # a call that met the move tripped a breaker: retry soon
        assert granted <= 50
    await moving
    assert redis_cluster.owner(slot) is third
    for _ in range(100):
        if (r := await ask(load[0], 1, dims=dims)).status.code is Code.RESOURCE_EXHAUSTED:
            break
        granted += r.amount
        clock.advance(RETRY_INTERVAL)
    assert granted == 50, answers
    assert bucket_total(redis_cluster, base_of("q", "mover")) == 100


async def test_ask_redirects_while_a_slot_migrates(
    redis_cluster: RedisClusterServers, handlers: Handlers
) -> None:
    """Between ``MIGRATE`` and the new owner taking the slot, the old owner answers ``ASK`` for
    keys it no longer has. A redirected call is counted on the importing primary; under
    concurrency some calls in that window get the failure policy's answer instead (redis-py's
    asyncio cluster client sends ``ASKING`` and the command on whichever pooled connections are
    free, so with several the command can arrive without ``ASKING``, be sent back with ``MOVED``,
    and give up after 16 redirects) - fast, and never counted twice."""
    redis_cluster.flush()
    clock = ManualClock()
    h = handlers.build(redis_cluster.url, FIXED, clock, failurePolicy="FAIL_CLOSE")
    await handlers.settled()  # the scripts are loaded: one connection per primary, idle
    dims = {"user": "asker"}
    assert (await ask(h, 5, dims=dims)).remaining == 95
    meta = bucket_keys(base_of("q", "asker"), hash_tag=True)[0]
    slot = redis_cluster.keyslot(meta)
    source = redis_cluster.owner(slot)
    target = another_primary(redis_cluster, source)
    redis_cluster.start_migration(slot, target)
    try:
        assert redis_cluster.owner(slot) is source  # still the owner: it redirects with ASK
        r = await ask(h, 5, dims=dims)
        assert (r.status.code, r.amount, r.remaining) == (Code.OK, 5, 90)
        assert h.stats.failures == 0
        assert (
            int(target.query("GET", bucket_keys(base_of("q", "asker"), hash_tag=True)[1], asking=True)) == 10
        )

        busy = handlers.build(redis_cluster.url, FIXED, clock, failurePolicy="FAIL_CLOSE")
        timed: list[tuple[QuotaResult, float]] = []

        async def one() -> None:
            started = time.perf_counter()
            result = await ask(busy, 1, dims=dims)
            timed.append((result, time.perf_counter() - started))

        for _ in range(3):
            await asyncio.gather(*(one() for _ in range(8)))
            clock.advance(RETRY_INTERVAL)
    finally:
        redis_cluster.finish_migration(slot, target)
    codes = Counter(r.status.code for r, _ in timed)
    assert set(codes) <= {Code.OK, Code.UNAVAILABLE}, codes
    # each answer within the 2 s timeout: a redirect loop ends after 16 hops, not never
    assert max(took for _, took in timed) < 2.0 + 0.5
    granted = sum(r.amount for r, _ in timed)
    print(f"\n[ask window] 24 concurrent calls: {dict(codes)}, worst {max(t for _, t in timed) * 1e3:.0f} ms")

    clock.advance(RETRY_INTERVAL)
    r = await ask(h, 1, dims=dims)  # now a MOVED for h, which still had the old owner
    assert (r.status.code, r.remaining) == (Code.OK, 90 - granted - 1)
    assert bucket_total(redis_cluster, base_of("q", "asker")) == 10 + granted + 1


# -- a stalled primary ----------------------------------------------------------------------------


async def test_a_stalled_primary_costs_only_its_own_buckets(
    redis_cluster: RedisClusterServers, handlers: Handlers
) -> None:
    """One primary stops answering (SIGSTOP): calls for its buckets get the failure policy's
    answer within the timeout (and, after 3 failures, at once), while buckets on the other
    primaries are still counted by Redis: the outage breaker is per primary on a cluster."""
    redis_cluster.flush()
    h = handlers.build(redis_cluster.url, FIXED, SystemClock(), timeout="300ms")
    users = users_on_every_primary(redis_cluster, [("q", False)], per_primary=1)
    owners = {u: owner_of_bucket(redis_cluster, base_of("q", u)) for u in users}
    stalled = owners[users[0]]
    await handlers.settled()  # the script preload is over (on a busy machine it may have timed out)
    for user in users:
        r = await ask(h, 1, dims={"user": user})
        assert (r.amount, r.remaining) == (1, 99)
    before = h.stats.failures

    stalled.freeze()
    try:
        results: list[tuple[str, QuotaResult, float]] = []
        for _ in range(6):
            for user in users:
                started = time.perf_counter()
                r = await ask(h, 1, dims={"user": user})
                results.append((user, r, time.perf_counter() - started))
    finally:
        stalled.thaw()
    for user, r, took in results:
        assert took < 0.3 + 0.5, (user, took)
        if owners[user] is stalled:
            # FAIL_OPEN: granted without Redis, valid 1 s
            assert (r.status.code, r.amount, r.valid_duration) == (Code.OK, 1, dt.timedelta(seconds=1))
        else:
            assert (r.status.code, r.amount) == (Code.OK, 1), user
            assert r.valid_duration > dt.timedelta(seconds=500), user  # counted by Redis: the window's end
    on_stalled = sum(owners[u] is stalled for u, _, _ in results)
    assert h.stats.fail_open_grants == on_stalled
    # the breaker opened after 3 failures; after that, one try per 0.5 s
    assert h.stats.failures - before <= 3 + 2

    # the stalled primary answers again: its buckets are counted by Redis again
    async def counted_again() -> bool:
        r = await ask(h, 1, dims={"user": users[0]})
        return r.valid_duration > dt.timedelta(seconds=500)

    deadline = time.monotonic() + 10
    while not await counted_again():
        assert time.monotonic() < deadline, "the thawed primary's buckets are not counted by Redis again"
        await asyncio.sleep(0.05)
