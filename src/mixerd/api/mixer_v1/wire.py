"""Mixer v1 wire format facts shared by request decoding, response encoding and the client.

Dictionary indices: an index ``i >= 0`` names ``GLOBAL_DICTIONARY[i]``; an index ``i < 0``
names slot ``-i - 1`` of the message's own word list (``~i`` in Python). A request's
``global_word_count`` of 0 means the caller did not say how many global words it knows; any
other value limits the global indices it may use. :class:`Words` assigns indices when
encoding; :func:`global_words` and :func:`index_problem` resolve and check them when decoding.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from google.protobuf import duration_pb2

from mixerd._proto.mixer.v1 import report_pb2
from mixerd.attribute import GLOBAL_DICTIONARY, GLOBAL_INDEX

__all__ = [
    "DELTA_ENCODING",
    "EPOCH",
    "GLOBAL_WORD_COUNT",
    "INDEPENDENT_ENCODING",
    "BadRequest",
    "DictionaryMismatch",
    "LimitExceeded",
    "RequestLimits",
    "Words",
    "check_dictionary",
    "duration_pb",
    "global_words",
    "index_problem",
    "to_timedelta",
]

GLOBAL_WORD_COUNT: Final = len(GLOBAL_DICTIONARY)
"""How many global dictionary words mixerd knows (222, as Istio 1.4's Mixer)."""

DELTA_ENCODING: Final = report_pb2.ReportRequest.DELTA_ENCODING
"""``ReportRequest.repeated_attributes_semantics`` 0: each set updates the ones before it."""

INDEPENDENT_ENCODING: Final = report_pb2.ReportRequest.INDEPENDENT_ENCODING
"""``ReportRequest.repeated_attributes_semantics`` 1: each set stands alone (what Envoy sends)."""

# --- errors ------------------------------------------------------------------------------------


class BadRequest(ValueError):
    """A request message is malformed. ``field`` names where (``attributes.strings``, ...)."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class LimitExceeded(BadRequest):
    """A request is larger than a :class:`RequestLimits` limit allows; nothing was decoded past it.

    ``resource`` is true when the limit is about the request's total size (gRPC
    RESOURCE_EXHAUSTED) rather than the shape of one part of it (INVALID_ARGUMENT).
    """

    def __init__(
        self, field: str, what: str, count: int, limit: int, flag: str, *, resource: bool = False
    ) -> None:
        env = "MIXERD_" + flag.removeprefix("--").replace("-", "_").upper()
        super().__init__(field, f"{count} {what} exceed the limit of {limit} ({flag} / {env})")
        self.resource = resource


@dataclass(frozen=True, slots=True)
class RequestLimits:
    """How much one Mixer API request may ask the server to decode; each is a ``mixerd serve`` flag.

    The defaults are far above what Envoy or Istio's proxies send (a few dozen attributes per
    set, batches of at most a thousand sets) and bound the memory and time one request costs.
    """

    words: int = 100_000
    """Words in a request's message dictionaries together (``default_words`` and every set's)."""
    attributes: int = 10_000
    """Attributes in one attribute set (Check's, or one of a Report's)."""
    report_sets: int = 10_000
    """Attribute sets in one Report."""
    map_entries: int = 10_000
    """Entries in one string map."""
    decoded_values: int = 1_000_000
    """Attributes plus string-map entries in one request, all sets together (RESOURCE_EXHAUSTED)."""


class DictionaryMismatch(ValueError):
    """The caller claims to know more global dictionary words than mixerd (Mixer answers INTERNAL)."""


def check_dictionary(global_word_count: int) -> None:
    """Raise :class:`DictionaryMismatch` when a caller's ``global_word_count`` exceeds mixerd's."""
    if global_word_count > GLOBAL_WORD_COUNT:
        raise DictionaryMismatch(
            "inconsistent global dictionary versions used: "
            f"mixer knows {GLOBAL_WORD_COUNT} words, caller knows {global_word_count}"
        )


# --- dictionaries ------------------------------------------------------------------------------

_GLOBAL_PREFIXES: dict[int, tuple[str, ...]] = {}


def global_words(global_word_count: int) -> tuple[str, ...]:
    """The global words a caller may index: all of them when the count is 0 (not given)."""
    if global_word_count == 0 or global_word_count >= GLOBAL_WORD_COUNT:
        check_dictionary(global_word_count)
        return GLOBAL_DICTIONARY
    words = _GLOBAL_PREFIXES.get(global_word_count)
    if words is None:
        words = _GLOBAL_PREFIXES[global_word_count] = GLOBAL_DICTIONARY[:global_word_count]
    return words


def index_problem(index: int, g: Sequence[str], w: Sequence[str]) -> str | None:
    """Why ``index`` does not resolve against the global words ``g`` and message words ``w``."""
    if index >= 0:
        if index < len(g):
            return None
        if len(g) < GLOBAL_WORD_COUNT:
            return f"index {index} is outside the global dictionary (the caller knows {len(g)} words)"
        return f"index {index} is outside the global dictionary ({len(g)} words)"
    if ~index < len(w):
        return None
    return f"index {index} is outside the message dictionary ({len(w)} words)"


# --- time -------------------------------------------------------------------------------------

EPOCH: Final = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)
_timedelta: Final = _dt.timedelta  # called as (days, seconds, microseconds): positional is faster


def to_timedelta(d: Any) -> _dt.timedelta:
    """A protobuf ``Duration`` as a ``timedelta`` (nanoseconds truncated toward zero)."""
    nanos = d.nanos
    return _timedelta(0, d.seconds, nanos // 1000 if nanos >= 0 else -(-nanos // 1000))


def duration_pb(value: _dt.timedelta) -> duration_pb2.Duration:
    """A ``timedelta`` as a protobuf ``Duration``."""
    micros = (value.days * 86400 + value.seconds) * 1_000_000 + value.microseconds
    sign = -1 if micros < 0 else 1
    seconds, rest = divmod(abs(micros), 1_000_000)
    return duration_pb2.Duration(seconds=sign * seconds, nanos=sign * rest * 1000)


class Words:
    """Assigns dictionary indices: global words the caller may use, else message-dictionary slots."""

    __slots__ = ("_limit", "_slots", "words")

    def __init__(self, global_word_count: int, words: list[str] | None = None) -> None:
        self._limit = global_word_count
        self.words: list[str] = [] if words is None else words
        self._slots: dict[str, int] = {}
        for slot, word in enumerate(self.words):
            self._slots.setdefault(word, ~slot)

    def index(self, word: str) -> int:
        i = GLOBAL_INDEX.get(word)
        if i is not None and i < self._limit:
            return i
        return self.local(word)

    def local(self, word: str) -> int:
        i = self._slots.get(word)
        if i is None:
            i = self._slots[word] = ~len(self.words)
            self.words.append(word)
        return i
