"""The ``memquota`` adapter: rate limits and allocation quotas in the memory of one process.

Params (Mixer's ``memquota`` config):

``quotas[]``
    ``name`` (the quota instance's fully qualified name), ``maxAmount``, ``validDuration`` and
    ``overrides[]`` (``dimensions``, ``maxAmount``, ``validDuration``).
``minDeduplicationDuration``
    How long (at least) a deduplication id is remembered; default ``1s``, must be > 0.

Semantics (Mixer's):

* Each quota is a set of counters, one per distinct set of dimension values (the key is the
  quota name and every dimension's string form, sorted by dimension name).
* The first override whose dimensions all equal the instance's (compared as strings) sets the
  limit; an override without dimensions matches everything.
* ``validDuration: 0`` makes an allocation counter that never expires: units stay taken until
  released with a negative amount. Otherwise the counter is a rolling window of
  ``validDuration`` in ticks of 100 ms.
* Not enough quota grants 0 (or what is left, when best effort) with status OK; the caller
  rejects a request granted nothing. A request for 0 units grants and charges nothing.
* A retry with the same deduplication id within ``minDeduplicationDuration`` (to twice that)
  gets the same amount and the validity that is left, and is not charged again.

Every answer also carries ``limit`` (the effective maximum), ``remaining`` (what is left after
this request) and ``reset_after``: for a rolling window the time until the oldest allocation
still in the window expires (when the next units come back; 0 for an empty window), for an
allocation counter ``None`` (it never resets by itself).

Differences from Mixer: an override without ``validDuration`` keeps the quota's window instead of
turning into a never-expiring counter (an explicit ``0s`` still asks for a counter); windows are
rounded up to whole 100 ms ticks rather than whole seconds; deduplication ids are remembered per
quota and dimension set; windows whose allocations have all expired are dropped every 10 s; and
an instance with no configured quota is a validation error.

The counters live in one process. ``mixerd serve --workers N`` keeps them exact across its
workers: the supervisor owns them and the workers ask it (:mod:`mixerd.adapters.memquota.shared`).
Separate mixerd servers each enforce the full limit; use ``redisquota`` to share counters between
them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mixerd.adapter import Builder, ConfigError, Env, Handler, Info, InstanceInfo
from mixerd.adapters.memquota.config import MemQuotaConfig, parse_config
from mixerd.adapters.memquota.handler import MemQuotaHandler

__all__ = ["INFO", "MemQuotaHandler"]


class _MemQuotaBuilder(Builder):
    def __init__(self, config: Mapping[str, Any], instances: Mapping[str, InstanceInfo]) -> None:
        super().__init__(config, instances)
        self.parsed: MemQuotaConfig
        self.parsed, self.errors = parse_config(config, instances)

    def validate(self) -> list[ConfigError]:
        return list(self.errors)

    def build(self, env: Env) -> Handler:
        from mixerd.adapters.memquota.shared import SHARED_SERVICE, QuotaClient, SharedMemQuotaHandler

        owner = env.shared(SHARED_SERVICE)
        if isinstance(owner, QuotaClient):  # a worker of mixerd serve --workers N
            return SharedMemQuotaHandler(self.parsed, env, owner)
        return MemQuotaHandler.build(self.parsed, env)


INFO = Info(
    name="memquota",
    description="Volatile memory-based quota tracking (rolling windows and allocation counters).",
    templates=("quota",),
    builder=_MemQuotaBuilder,
    default_config={"minDeduplicationDuration": "1s"},
)
