"""Envoy ``RateLimitRequest`` -> Mixer quota allocations -> ``RateLimitResponse`` (pure).

This is the contract rate-limit users configure against.

Request -> allocations
======================

Every descriptor of a ``RateLimitRequest`` becomes **one quota allocation**, dispatched like a
Mixer quota (``Dispatcher.quota``) with an attribute bag of its own:

==============================  ==========  ================================================
attribute                       type        value
==============================  ==========  ================================================
``ratelimit.domain``            STRING      the request's ``domain``
``ratelimit.descriptor``        STRING_MAP  the descriptor's entries, key -> value (a key
                                            given twice keeps its last value)
``ratelimit.descriptor_key``    STRING      the entries joined in order, ``k1=v1,k2=v2``
``destination.namespace``       STRING      only when the descriptor has an entry ``namespace``
``source.ip``                   IP_ADDRESS  entry ``remote_address`` (Envoy's
                                            ``remote_address`` action), when it is an IP
``destination.service.host``,   STRING      entry ``destination_cluster`` (Envoy's
``.name``, ``.namespace``                   ``destination_cluster`` action), an Istio cluster
                                            name read as the access-log service reads it
``mixerd.caller.principal``     STRING      the SPIFFE ID of the client certificate of the
                                            connection to mixerd (:mod:`mixerd.api.caller`)
==============================  ==========  ================================================

No other attribute is set (no ``request.headers``: Envoy sends only the descriptors). Put what a
limit depends on into descriptor entries with Envoy's rate-limit actions (``request_headers``,
``remote_address``, ``generic_key``, ``header_value_match``, metadata ...). The entries that
become Istio attributes are read by the shared Envoy mapping (:mod:`mixerd.api.envoy.attributes`),
so ``source.ip`` here is the value ext_authz and the access log give for the same request.

* **Quota name.** The allocation charges the quota named by the value of the entry with key
  ``quota`` if there is one, else the ``domain``. As with Mixer's Check, a quota name selects the
  quota *instances with that short name* (``api`` selects instance ``api.instance.istio-system``)
  whose rules match the bag. A name no rule provides is granted (Mixer's behaviour; the
  dispatcher logs it once).
* **Amount.** The descriptor's ``hits_addend`` when set (0 is a valid "peek" that charges
  nothing), else the request's ``hits_addend`` when > 0, else 1. Allocations are all-or-nothing
  (``best_effort: false``) without a deduplication id.
* **Namespace.** By default only the configuration of the default namespace (``istio-system``,
  which is global) applies. A descriptor entry ``namespace`` (set it with a ``generic_key`` or
  metadata action, never from a client header) becomes ``destination.namespace``, so the rules
  of that namespace apply too, as for an inbound Mixer request.
* **Shadow.** A descriptor entry ``shadow`` with value ``true`` asks for shadow mode for that
  descriptor (see the service for the other switches): the decision is made, charged and counted,
  but answered OK.
* The descriptor's ``limit`` override (computed by Envoy from metadata) is ignored: the handler
  config decides the limit.

Results -> response
===================

* A descriptor is ``OVER_LIMIT`` when the handler granted less than the amount asked (memquota
  grants 0 with status OK, redisquota answers RESOURCE_EXHAUSTED), else ``OK``.
  ``overall_code`` is ``OVER_LIMIT`` when any descriptor is (and is not in shadow mode); every
  descriptor is charged even when an earlier one is over its limit (as envoyproxy/ratelimit).
* ``statuses[i]`` (same order as the descriptors) carries ``current_limit`` (``name`` = the quota
  name, ``requests_per_unit``/``unit`` from the quota's limit and window, see
  :func:`limit_unit`), ``limit_remaining`` (what is left in the window) and
  ``duration_until_reset``, when the handler reports them. Envoy turns these into the
  ``x-ratelimit-limit``/``-remaining``/``-reset`` headers when the filter sets
  ``enable_x_ratelimit_headers: DRAFT_VERSION_03``.
* Each over-limit quota adds ``x-mixerd-quota: <quota name>`` to ``response_headers_to_add``
  (Envoy sends it to the client with the 429).
* A handler failure never turns into a denial here; see the service's ``failure_mode``.

Complete example (Envoy filter ``domain: api``, route action
``request_headers {header_name: x-user, descriptor_key: user}``): 100 requests per minute per user,
``anonymous`` when the descriptor has no ``user`` entry::

    apiVersion: config.istio.io/v1alpha2
    kind: handler
    metadata: {name: quotahandler, namespace: istio-system}
    spec:
      compiledAdapter: memquota
      params:
        quotas:
        - name: api.instance.istio-system
          maxAmount: 100
          validDuration: 60s
          overrides:
          - {dimensions: {user: vip}, maxAmount: 1000}
    ---
    apiVersion: config.istio.io/v1alpha2
    kind: instance
    metadata: {name: api, namespace: istio-system}
    spec:
      compiledTemplate: quota
      params:
        dimensions:
          user: ratelimit.descriptor["user"] | "anonymous"
    ---
    apiVersion: config.istio.io/v1alpha2
    kind: rule
    metadata: {name: api-quota, namespace: istio-system}
    spec:
      match: ratelimit.domain == "api"
      actions:
      - {handler: quotahandler, instances: [api]}
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from envoy.service.ratelimit.v3 import rls_pb2

from mixerd.adapter import Code, QuotaResult
from mixerd.api.caller import CALLER_PRINCIPAL
from mixerd.api.envoy.attributes import parse_cluster, parse_ip
from mixerd.attribute import DictBag

__all__ = [
    "QUOTA_HEADER",
    "Allocation",
    "BadRequest",
    "Decision",
    "decide",
    "decode_request",
    "encode_response",
    "limit_unit",
    "result_window",
]

QUOTA_HEADER: Final = "x-mixerd-quota"
"""Response header naming each quota a request exceeded."""

_OK: Final = rls_pb2.RateLimitResponse.OK
_OVER_LIMIT: Final = rls_pb2.RateLimitResponse.OVER_LIMIT
_UINT32_MAX: Final = 2**32 - 1
_US: Final = _dt.timedelta(microseconds=1)
_RateLimit = rls_pb2.RateLimitResponse.RateLimit
_ZERO: Final = _dt.timedelta(0)
# Largest first: a window is expressed in the largest unit that divides it exactly.
_UNITS: Final = (
    (86_400_000_000, _RateLimit.DAY),
    (3_600_000_000, _RateLimit.HOUR),
    (60_000_000, _RateLimit.MINUTE),
    (1_000_000, _RateLimit.SECOND),
)


@dataclass(frozen=True, slots=True)
class Allocation:
    """One descriptor of a request, ready to dispatch as a quota allocation."""

    quota: str
    """The quota name charged (entry ``quota``, else the domain)."""
    amount: int
    shadow: bool
    """The descriptor asked for shadow mode (entry ``shadow=true``)."""
    key: str
    """``ratelimit.descriptor_key``: the entries joined ``k1=v1,k2=v2``."""
    domain: str
    bag: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Decision:
    """What became of one allocation."""

    quota: str
    over_limit: bool = False
    """The handler granted less than asked (the decision, whether enforced or not)."""
    shadow: bool = False
    """Decided but not enforced: answered OK."""
    error: str = ""
    """The handler failed; the descriptor is answered OK (see the service's failure mode)."""
    limit: int | None = None
    window: _dt.timedelta | None = None
    remaining: int | None = None
    reset_after: _dt.timedelta | None = None

    @property
    def enforced(self) -> bool:
        """The descriptor is answered OVER_LIMIT."""
        return self.over_limit and not self.shadow and not self.error

    @property
    def code_name(self) -> str:
        """``OK``, ``OVER_LIMIT`` or ``ERROR``: the decision as made (shadow or not)."""
        if self.error:
            return "ERROR"
        return "OVER_LIMIT" if self.over_limit else "OK"


class BadRequest(ValueError):
    """A request the service refuses (answered INVALID_ARGUMENT); the message says what is wrong."""


def decode_request(request: Any, *, caller: str | None = None) -> tuple[Allocation, ...]:
    """The allocations of a ``RateLimitRequest``, one per descriptor, in order (``caller``: the
    SPIFFE ID of the connection's client certificate).

    Raises :class:`BadRequest`, as envoyproxy/ratelimit refuses them, for an empty domain, an
    empty descriptor list and an entry without a key.
    """
    domain: str = request.domain
    if not domain:
        raise BadRequest("rate limit domain must not be empty")
    descriptors = request.descriptors
    if not descriptors:
        raise BadRequest("rate limit descriptor list must not be empty")
    default_amount = int(request.hits_addend) or 1
    out: list[Allocation] = []
    for i, d in enumerate(descriptors):
        entries: dict[str, str] = {}
        parts: list[str] = []
        for e in d.entries:
            k, v = e.key, e.value
            if not k:
                raise BadRequest(f"descriptors[{i}].entries[{len(parts)}]: the key must not be empty")
            entries[k] = v
            parts.append(f"{k}={v}")
        key = ",".join(parts)
        amount = int(d.hits_addend.value) if d.HasField("hits_addend") else default_amount
        values: dict[str, Any] = {
            "ratelimit.domain": domain,
            "ratelimit.descriptor": entries,
            "ratelimit.descriptor_key": key,
        }
        if caller is not None:
            values[CALLER_PRINCIPAL] = caller
        if entries.keys() & _MAPPED:
            _map_entries(entries, values)
        out.append(
            Allocation(
                quota=entries.get("quota") or domain,
                amount=amount,
                shadow=entries.get("shadow", "").lower() == "true",
                key=key,
                domain=domain,
                bag=DictBag(values),
            )
        )
    return tuple(out)


_MAPPED: Final = frozenset({"namespace", "remote_address", "destination_cluster"})
"""Descriptor entries that also become Istio attributes (see :func:`_map_entries`)."""


def _map_entries(entries: Mapping[str, str], values: dict[str, Any]) -> None:
    """The Istio attributes of a descriptor's ``namespace``, ``remote_address`` and
    ``destination_cluster`` entries."""
    namespace = entries.get("namespace")
    if namespace:
        values["destination.namespace"] = namespace
    remote = entries.get("remote_address")
    if remote:
        ip = parse_ip(remote)
        if ip is not None:
            values["source.ip"] = ip
    cluster = entries.get("destination_cluster")
    if cluster:
        _, host, name, ns = parse_cluster(cluster)
        if host is not None:
            values["destination.service.host"] = host
        if name is not None:
            values["destination.service.name"] = name
        if ns is not None:
            values["destination.service.namespace"] = ns


_DECIDED: Final = frozenset({Code.OK, Code.RESOURCE_EXHAUSTED, Code.PERMISSION_DENIED})


def decide(
    allocation: Allocation,
    result: QuotaResult,
    *,
    shadow: bool = False,
    window: _dt.timedelta | None = None,
) -> Decision:
    """Turn a handler's answer into a decision.

    The quota's window (the unit of ``current_limit``) is, in order: a ``window`` the result
    carries (for adapter SDKs whose ``QuotaResult`` has one), the result's ``valid_duration``
    when positive (memquota's grants are valid for exactly the window), else ``window``, the
    window known from elsewhere (the service remembers the last one per descriptor: memquota
    grants nothing with no validity, and the unit is still wanted on the 429). RESOURCE_EXHAUSTED
    and PERMISSION_DENIED (a denial: what a fail-closed quota rule that could not be evaluated
    answers) are over the limit; any other status than OK is a handler error.
    """
    code = result.status.code
    if code not in _DECIDED:
        return Decision(allocation.quota, shadow=shadow, error=str(result.status))
    return Decision(
        allocation.quota,
        over_limit=result.amount < allocation.amount or code != Code.OK,
        shadow=shadow,
        limit=result.limit,
        window=result_window(result) or window,
        remaining=result.remaining,
        reset_after=result.reset_after,
    )


def result_window(result: QuotaResult) -> _dt.timedelta | None:
    """The window a handler's answer tells, if any (see :func:`decide`)."""
    explicit = getattr(result, "window", None)
    if isinstance(explicit, _dt.timedelta) and explicit > _dt.timedelta(0):
        return explicit
    valid = result.valid_duration
    return valid if valid > _dt.timedelta(0) else None


def limit_unit(limit: int | None, window: _dt.timedelta | None) -> tuple[int, int] | None:
    """``(requests_per_unit, unit)`` for a limit of ``limit`` per ``window``, or None.

    Windows of exactly 1 s, 1 min, 1 h or 1 day map to SECOND, MINUTE, HOUR and DAY. Any other
    window is expressed in the largest of those units that divides it exactly, or SECOND when
    none does (sub-second and fractional windows), with the limit scaled to the average rate and
    rounded down (at least 1 when the limit is positive): 10 per 120 s is 5 per MINUTE, 100 per
    90 s is 1 per SECOND, 5 per 500 ms is 10 per SECOND. An allocation counter (no window, or a
    zero one) has no rate: None, and Envoy then sends no ``x-ratelimit-limit`` for it.
    """
    if limit is None or window is None or window <= _dt.timedelta(0):
        return None
    window_us = window // _US
    if window_us <= 0:
        return None
    unit_us, unit = _UNITS[-1]
    for u_us, u in _UNITS:
        if window_us % u_us == 0:
            unit_us, unit = u_us, u
            break
    per_unit = max(0, limit) * unit_us // window_us
    if per_unit == 0 and limit > 0:
        per_unit = 1
    return min(per_unit, _UINT32_MAX), unit


def encode_response(decisions: Iterable[Decision]) -> Any:
    """The ``RateLimitResponse`` for the decisions of a request's descriptors, in order."""
    # fields are set in place (statuses.add(), sub-messages reached through their parent):
    # building messages from keyword arguments copies every sub-message into its parent
    response = rls_pb2.RateLimitResponse()
    statuses = response.statuses
    over: list[str] = []
    for d in decisions:
        status = statuses.add()
        if d.enforced:
            status.code = _OVER_LIMIT
            if d.quota not in over:
                over.append(d.quota)
        else:
            status.code = _OK
        rate = limit_unit(d.limit, d.window)
        if rate is not None:
            current = status.current_limit
            current.SetInParent()
            current.name = d.quota
            current.requests_per_unit, current.unit = rate
        if d.remaining is not None:
            status.limit_remaining = min(max(0, d.remaining), _UINT32_MAX)
        reset = d.reset_after
        if reset is not None and reset >= _ZERO:
            micros = reset // _US
            until = status.duration_until_reset
            until.SetInParent()
            seconds, micros = divmod(micros, 1_000_000)
            until.seconds = seconds
            until.nanos = micros * 1000
    if not over:
        response.overall_code = _OK
        return response
    response.overall_code = _OVER_LIMIT
    headers = response.response_headers_to_add
    for name in over:
        header = headers.add()
        header.key = QUOTA_HEADER
        header.value = name
    return response
