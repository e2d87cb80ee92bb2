"""Rule sampling: the per-request decision whether a matching rule's report actions run.

A :class:`RuleSampler` is made once per rule with ``sampling`` when the routing table is built
(from the rule's checked :class:`~mixerd.config.sampling.SamplingConfig`); per request only the
decision runs. Random numbers and time come in from outside (``randbelow``, a
:class:`~mixerd.adapter.Clock`), so tests drive both.

* **random**: an entry is selected when ``value < numerator``, ``value`` in ``[0, denominator)``.
  ``value`` is taken from the request id (``request.id``, else the ``x-request-id`` header) as
  Envoy's access-log runtime filter takes it (the first 8 characters read as hexadecimal, modulo
  the denominator), so every rule and every hop of one request decide alike; a request without a
  usable id, or a rule with ``useIndependentRandomness``, draws ``randbelow(denominator)``. When
  ``attributeExpression`` is set, its value replaces the numerator for that request (an integer,
  a double rounded down, or a string holding one of them); a value that is absent, fails to
  evaluate or is not a number selects nothing. A numerator at or above the denominator selects
  everything.
* **rateLimit**: windows of ``samplingDuration`` start at the first entry after the previous
  window ended; in each, the first ``maxUnsampledEntries`` entries are selected, then every
  ``samplingRate``-th one (none when ``samplingRate`` is 0). The count is per process and starts
  afresh when a new config comes into force.
* Both: random first; only entries it selects count toward the rate limit.

Sampling applies to report (telemetry) actions only: the routing table attaches samplers to
REPORT instance groups, never to a check, a quota, an attribute generator or header operations
(a denial or a quota charge must not depend on chance).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping
from typing import Any, Final

from mixerd.adapter import Clock, SystemClock
from mixerd.attribute import map_entry, merge_reads
from mixerd.config.sampling import RandomSampling, RateLimitSampling, SamplingConfig
from mixerd.lang import EvaluationError

__all__ = ["RuleSampler", "request_id_value"]

_ID_HEX_DIGITS: Final = 8


def request_id_value(request_id: str, size: int) -> int | None:
    """The request id as a number in ``[0, size)`` (its first 8 characters as hexadecimal, modulo
    ``size``), or ``None`` when they are not hexadecimal."""
    head = request_id[:_ID_HEX_DIGITS]
    if len(head) < _ID_HEX_DIGITS:
        return None
    try:
        return int(head, 16) % size
    except ValueError:
        return None


_HEADERS: Final = "request.headers"
_REQUEST_ID_HEADER: Final = "x-request-id"
_REQUEST_ID_READS: Final = ("request.id", map_entry(_HEADERS, _REQUEST_ID_HEADER))
"""What :func:`_request_id` reads."""


def _request_id(bag: Mapping[str, Any]) -> str | None:
    rid = bag.get("request.id")
    if isinstance(rid, str) and rid:
        return rid
    headers = bag.get(_HEADERS)
    if isinstance(headers, Mapping):
        value = headers.get(_REQUEST_ID_HEADER)
        if isinstance(value, str) and value:
            return value
    return None


def _numerator(value: Any) -> int | None:
    """An override value as a numerator (``None``: not a number)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if isinstance(value, float) and math.isfinite(value):
        return math.floor(value)
    return None


class RuleSampler:
    """One rule's sampling decision, with its rate-limit window (mutable: one per routing table)."""

    __slots__ = ("_clock", "_count", "_limit", "_randbelow", "_random", "_window_end", "config", "rule")

    def __init__(
        self,
        rule: str,
        config: SamplingConfig,
        *,
        randbelow: Callable[[int], int] | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.rule = rule
        self.config = config
        self._random: RandomSampling | None = config.random
        self._limit: RateLimitSampling | None = config.rate_limit
        self._randbelow = randbelow or random.randrange
        self._clock: Clock = clock or SystemClock()
        self._window_end = -math.inf
        self._count = 0

    @property
    def attributes(self) -> frozenset[str]:
        """Every attribute name a decision may read (the override expression's, and the request
        id's when the random draw follows it), map entries as entry names
        (:func:`~mixerd.attribute.map_entry`)."""
        r = self._random
        if r is None:
            return frozenset()
        names = set(r.expression.reads) if r.expression is not None else set()
        if not r.independent:
            names.update(_REQUEST_ID_READS)
        return merge_reads(names)

    def decide(self, bag: Mapping[str, Any], decisions: dict[RuleSampler, bool]) -> bool:
        """:meth:`sample`, once per request: ``decisions`` (one per attribute set) remembers the
        answer for the rule's other actions."""
        found = decisions.get(self)
        if found is None:
            found = decisions[self] = self.sample(bag)
        return found

    def sample(self, bag: Mapping[str, Any]) -> bool:
        """Whether this entry is selected (each call counts toward the rate limit)."""
        r = self._random
        if r is not None and not self._pick(r, bag):
            return False
        limit = self._limit
        return limit is None or self._admit(limit)

    def _pick(self, r: RandomSampling, bag: Mapping[str, Any]) -> bool:
        numerator = r.numerator
        if r.expression is not None:
            try:
                override = _numerator(r.expression.evaluate(bag))
            except EvaluationError:
                return False
            if override is None:
                return False
            numerator = override
        size = r.denominator.size
        if numerator >= size:
            return True
        if numerator <= 0:
            return False
        value: int | None = None
        if not r.independent:
            rid = _request_id(bag)
            if rid is not None:
                value = request_id_value(rid, size)
        if value is None:
            value = self._randbelow(size)
        return value < numerator

    def _admit(self, limit: RateLimitSampling) -> bool:
        now = self._clock.monotonic()
        if now >= self._window_end:
            self._window_end = now + limit.window.total_seconds()
            self._count = 0
        self._count += 1
        over = self._count - limit.max_unsampled
        if over <= 0:
            return True
        return limit.rate > 0 and over % limit.rate == 0
