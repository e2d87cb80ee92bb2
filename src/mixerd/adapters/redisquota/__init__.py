"""The ``redisquota`` adapter: rate limits shared by every mixerd process through Redis.

Params (Mixer's ``redisquota`` config):

``quotas[]``
    ``name`` (the quota instance's fully qualified name), ``maxAmount``, ``validDuration`` (the
    window), ``bucketDuration`` (ROLLING_WINDOW only; must be shorter than the window),
    ``rateLimitAlgorithm`` (``FIXED_WINDOW``, the default, or ``ROLLING_WINDOW``) and
    ``overrides[]`` (``dimensions``, ``maxAmount``).
``redisServerUrl``
    Where Redis is; its scheme chooses the topology:

    * one server: ``host:port`` (default ``localhost:6379``), ``redis://[user:password@]host:port/db``
      or ``rediss://...`` for TLS;
    * a Redis Cluster: ``redis+cluster://[user:password@]host:port,host:port,...`` (or
      ``rediss+cluster://``): the nodes to discover the cluster from (one is enough, more
      survive one being down); no database;
    * Redis Sentinel: ``redis+sentinel://[user:password@]host:port,host:port,.../<master name>[/db]``
      (or ``rediss+sentinel://``, TLS to the Sentinels and the servers): the Sentinels (port
      26379 by default) and the name they monitor the primary under. The user and password are
      the Redis servers'; the Sentinels' own, if they have any, go in the query:
      ``?sentinel_username=...&sentinel_password=...``.

    Passwords never appear in messages or logs (``mixerd.adapter.redact_url``); percent-encode
    ``/ ? # @`` in them.
``connectionPoolSize``
    Connections to Redis (default 10): on a cluster, at most this many per primary. Allocations
    that arrive together share a round trip (on one server and through Sentinel one Lua call
    runs the whole batch, on a cluster one pipeline per primary), with at most two round trips
    per server in flight (one if the pool has one connection), so a few connections serve any
    load.

and two of mixerd's own:

``timeout``
    The longest one quota call may wait for Redis, waiting for its round trip, for a pooled
    connection and connecting included (default ``100ms``). A quota script runs in well under a millisecond and
    a round trip on a LAN takes about one, so 100 ms is reached only when something is wrong (a
    failover, a partition, Redis blocked by a slow command or a fork) while still answering well
    inside the deadline of a request path (Envoy's ext_authz default is 200 ms): the failure
    policy, not the caller's timeout, then decides.
``failurePolicy``
    ``FAIL_OPEN`` (default): when Redis cannot answer, grant the request (up to the quota's
    maximum) with a validity of at most 1 s, so enforcement resumes soon after Redis does.
    ``FAIL_CLOSE``: answer ``UNAVAILABLE`` with ``redisquota: redis at host:port unreachable:
    <reason>``. Either way failures are counted, logged at most once per 10 s, and after 3 in a
    row calls stop waiting on Redis for 0.5 s at a time, so an outage neither adds a timeout to
    every request nor turns into a storm of denials nobody asked for (Istio issue #12115). On a
    cluster this is per primary: one that is down costs only the buckets in its slots.

Redis Cluster and Sentinel:

* Cluster: every key of one bucket carries the hash tag ``{<key>}`` (``{<key>}.meta``,
  ``{<key>}.data``, ``{<key>}.dedup.<dedup id>``), so one script call touches one slot; buckets
  spread over the primaries. ``MOVED`` and ``ASK`` redirects (a resharding) are followed by
  redis-py's cluster client. While a slot migrates, a call for a bucket in it can get the failure
  policy's answer: Redis answers ``TRYAGAIN`` for buckets half moved, and redis-py's asyncio client
  may send ``ASKING`` and the redirected call on different pooled connections, which ends after 16
  redirects. Both are over within the milliseconds a slot of quota buckets takes to move; no unit
  is ever counted twice (``MIGRATE`` moves a bucket's keys at once). A quota name cannot start
  with ``}`` on a cluster (its hash tag would be empty).
* Sentinel: a connection asks the Sentinels for the primary when it opens, and every 0.5 s the
  handler asks again and drops every connection to a former primary. When the primary dies,
  calls get the failure policy's answer until the Sentinels have promoted the replica (their
  ``down-after-milliseconds`` plus the failover, a few seconds) and then go to the new primary.
  Replication is asynchronous: units counted on the old primary and not yet on its replica are
  lost with it (on a kill, at most the calls in flight; a failover of a live primary, which keeps
  taking writes until Sentinel demotes it, loses what it counted between the promotion and the
  handler's next check, about a second). ``min-replicas-to-write 1`` on the servers (with two
  replicas or more) makes a demoted primary refuse writes at once instead.
* One server and Sentinel keep the key names mixerd always used (below), so moving a single
  server behind Sentinel keeps the counters; moving to a cluster starts them afresh.

Semantics:

* FIXED_WINDOW: a window starts at the first request after the previous one ended and lasts
  ``validDuration``; a grant is valid until the window ends. It can admit up to twice the rate
  across a window edge.
* ROLLING_WINDOW: units are counted in buckets of ``bucketDuration`` that start at the first
  request after the previous bucket ended; a bucket's units come back once its start is
  ``validDuration`` old. A grant is valid for ``validDuration``.
* Not enough quota: best effort grants what is left; otherwise, or when nothing is left, the
  answer is ``RESOURCE_EXHAUSTED "redisquota: Resource exhausted"`` with amount 0.
* A retry with the same deduplication id gets the earlier answer (and the validity left), not
  charged again, until that answer expires.
* An instance with no configured quota gets OK with amount 0, as in Mixer (validation already
  rejects a config whose rules send such an instance). A negative amount (a release) is
  ``INVALID_ARGUMENT``: Redis windows cannot take units back.
* Answers carry ``limit``, ``remaining`` (unknown on a deduplicated retry) and ``reset_after``:
  for a fixed window the time until it ends, for a rolling window the time until the oldest
  bucket that still holds units leaves the window.

Differences from Mixer, and why:

* Counters are per quota *and dimension set*, as in ``memquota`` and as the Istio docs describe
  quotas (Istio issues #15543, #15958); Mixer's redisquota shared one counter per quota, or per
  matched override. Keys are ``<quota name>`` without dimensions and ``<quota name>-<first 128 bits
  of the SHA-256 of the sorted dimensions>`` with them, plus ``.rolling`` for rolling windows so a
  change of algorithm never meets keys of the wrong type, then ``.meta``/``.data`` (see
  :mod:`mixerd.adapters.redisquota.dims`).
* Mixer's redisquota talked to one server; Cluster and Sentinel are new.
* Times in the scripts are milliseconds, not nanoseconds, so they stay exact in Lua numbers.
* A rolling window saves its state even when it denies a request; Mixer's script returned early
  and could lose units it had just reclaimed.
* ``timeout`` and ``failurePolicy`` are new; Mixer answered UNAVAILABLE ``redisquota: Service
  Unavailable`` after the Redis client's own (multi-second) timeouts.
* Validation never connects to Redis (Mixer's did); an empty ``redisServerUrl`` still reports
  Mixer's connection error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mixerd.adapter import Builder, ConfigError, Env, Info, InstanceInfo
from mixerd.adapters.redisquota.config import RedisQuotaConfig, parse_config
from mixerd.adapters.redisquota.handler import RedisQuotaHandler

__all__ = ["INFO", "RedisQuotaHandler"]


class _RedisQuotaBuilder(Builder):
    def __init__(self, config: Mapping[str, Any], instances: Mapping[str, InstanceInfo]) -> None:
        super().__init__(config, instances)
        self.parsed: RedisQuotaConfig
        self.parsed, self.errors = parse_config(config, instances)

    def validate(self) -> list[ConfigError]:
        return list(self.errors)

    def build(self, env: Env) -> RedisQuotaHandler:
        return RedisQuotaHandler.build(self.parsed, env)


INFO = Info(
    name="redisquota",
    description="Redis-based rate limits (fixed or rolling windows) shared by every mixerd process.",
    templates=("quota",),
    builder=_RedisQuotaBuilder,
    default_config={
        "redisServerUrl": "localhost:6379",
        "connectionPoolSize": 10,
        "timeout": "100ms",
        "failurePolicy": "FAIL_OPEN",
    },
)
