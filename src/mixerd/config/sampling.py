"""A rule's ``sampling`` (``istio.policy.v1beta1.Sampling``), read and checked into a typed value.

Istio's config schema has carried ``Rule.sampling`` since 1.1, but no Mixer release ever acted
on it; mixerd implements what its schema documents (the decision itself is in
:mod:`mixerd.runtime.sampling`)::

    sampling:
      random:
        attributeExpression: request.headers["x-sample-percent"]   # optional, overrides the numerator
        percentSampled: {numerator: 10, denominator: HUNDRED}      # HUNDRED | TEN_THOUSAND | MILLION
        useIndependentRandomness: false                            # default: decide by x-request-id
      rateLimit:
        samplingDuration: 1s          # the window
        maxUnsampledEntries: 100      # let this many through per window ...
        samplingRate: 10              # ... then 1 in every 10 (0: none)

Both strategies may be given; an entry must then be selected by both. Every problem is reported
with its field path (``spec.sampling.random.percentSampled.numerator``). ``MILLION`` is not in
Mixer's enum (HUNDRED = 0, TEN_THOUSAND = 1); it is Envoy's ``FractionalPercent`` value 2.
"""

from __future__ import annotations

import datetime as _dt
import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from mixerd.attribute import ValueType, parse_duration
from mixerd.config.model import Issue
from mixerd.config.parse import _Fields
from mixerd.lang import CompileError, Expression

__all__ = ["Denominator", "RandomSampling", "RateLimitSampling", "SamplingConfig", "compile_sampling"]

_UINT32_MAX: Final = 2**32 - 1
_INT64_MAX: Final = 2**63 - 1
OVERRIDE_TYPES: Final = (ValueType.INT64, ValueType.DOUBLE, ValueType.STRING)
"""Types an ``attributeExpression`` may have (a STRING must hold a number at request time)."""


class Denominator(enum.IntEnum):
    """``FractionalPercent.DenominatorType``: the enum number, and :attr:`size`."""

    HUNDRED = 0
    TEN_THOUSAND = 1
    MILLION = 2

    @property
    def size(self) -> int:
        return int(100 ** (self.value + 1))


@dataclass(frozen=True, slots=True)
class RandomSampling:
    """Sample ``numerator / denominator.size`` of the entries (capped at all of them)."""

    numerator: int
    denominator: Denominator
    expression: Expression | None = None
    """``attributeExpression``, compiled: its value replaces ``numerator`` per request."""
    independent: bool = False
    """``useIndependentRandomness``: draw a random number even when ``x-request-id`` is present."""


@dataclass(frozen=True, slots=True)
class RateLimitSampling:
    """Per window of ``window``: the first ``max_unsampled`` entries, then one in every ``rate``."""

    window: _dt.timedelta
    max_unsampled: int
    rate: int
    """0: nothing after the first ``max_unsampled`` of a window."""


@dataclass(frozen=True, slots=True)
class SamplingConfig:
    random: RandomSampling | None = None
    rate_limit: RateLimitSampling | None = None

    def describe(self) -> str:
        """One line for ``mixerd routes`` and ``/debug/routes``."""
        parts = []
        r = self.random
        if r is not None:
            text = f"random {r.numerator}/{r.denominator.size}"
            if r.expression is not None:
                text += f" (numerator from {r.expression.text})"
            text += " independent" if r.independent else " by x-request-id"
            parts.append(text)
        rl = self.rate_limit
        if rl is not None:
            then = f"1 in {rl.rate}" if rl.rate else "none"
            parts.append(f"rateLimit {rl.max_unsampled} per {rl.window.total_seconds():g}s then {then}")
        return ", ".join(parts)


def _integer(f: _Fields, name: str, maximum: int) -> int:
    """A non-negative integer field (protobuf JSON also writes 64-bit integers as strings)."""
    path, value = f.raw(name)
    if value is None:
        return 0
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        f.issues.append(Issue(path, f"expected a non-negative integer, got {value!r}"))
        return 0
    if not 0 <= value <= maximum:
        f.issues.append(Issue(path, f"must be between 0 and {maximum}, got {value}"))
        return 0
    return value


def _denominator(f: _Fields) -> Denominator:
    path, value = f.raw("denominator")
    if value is None:
        return Denominator.HUNDRED
    for d in Denominator:
        if value == d.name or (isinstance(value, int) and not isinstance(value, bool) and value == d.value):
            return d
    names = ", ".join(d.name for d in Denominator)
    f.issues.append(Issue(path, f"expected one of {names}, got {value!r}"))
    return Denominator.HUNDRED


def _duration(f: _Fields, name: str) -> _dt.timedelta:
    path, value = f.raw(name)
    if value is None:
        f.issues.append(Issue(path, "missing (the window of the rate limit, e.g. '1s')"))
        return _dt.timedelta(0)
    try:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ValueError
        result = _dt.timedelta(seconds=value) if not isinstance(value, str) else parse_duration(value)
    except (ValueError, OverflowError):
        f.issues.append(Issue(path, f"expected a duration such as '1s' or '500ms', got {value!r}"))
        return _dt.timedelta(0)
    if result <= _dt.timedelta(0):
        f.issues.append(Issue(path, f"must be greater than zero, got {value!r}"))
    return result


def compile_sampling(
    raw: Mapping[str, Any] | None,
    compile_expression: Callable[[str], Expression],
    path: str = "spec.sampling",
    error_text: Callable[[CompileError], str] = str,
) -> tuple[SamplingConfig | None, list[Issue]]:
    """Read a rule's ``sampling`` map; ``None`` when it asks for no sampling. ``compile_expression``
    compiles ``attributeExpression`` against the config's manifest (raising :class:`CompileError`).
    Every problem comes back as an :class:`Issue` with its field path."""
    issues: list[Issue] = []
    if raw is None:
        return None, issues
    f = _Fields(raw, path, issues)
    rnd: RandomSampling | None = None
    limit: RateLimitSampling | None = None
    rpath, rraw = f.raw("random")
    if rraw is not None:
        r = _Fields(rraw, rpath, issues)
        text = r.text("attribute_expression").strip()
        expression: Expression | None = None
        if text:
            epath = r.at("attributeExpression")
            try:
                expression = compile_expression(text)
            except CompileError as exc:
                issues.append(Issue(epath, error_text(exc)))
            else:
                if expression.result_type not in OVERRIDE_TYPES:
                    issues.append(
                        Issue(
                            epath,
                            f"expression type is {expression.result_type.name}; the numerator override "
                            "needs INT64, DOUBLE or a STRING holding a number",
                        )
                    )
        ppath, praw = r.raw("percent_sampled")
        p = _Fields(praw, ppath, issues)
        numerator = _integer(p, "numerator", _UINT32_MAX)
        denominator = _denominator(p)
        p.done()
        independent = r.flag("use_independent_randomness")
        r.done()
        rnd = RandomSampling(numerator, denominator, expression, independent)
    lpath, lraw = f.raw("rate_limit")
    if lraw is not None:
        lf = _Fields(lraw, lpath, issues)
        window = _duration(lf, "sampling_duration")
        max_unsampled = _integer(lf, "max_unsampled_entries", _INT64_MAX)
        rate = _integer(lf, "sampling_rate", _INT64_MAX)
        lf.done()
        limit = RateLimitSampling(window, max_unsampled, rate)
    f.done()
    if issues or (rnd is None and limit is None):
        return None, issues
    return SamplingConfig(rnd, limit), issues
