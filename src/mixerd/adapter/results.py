"""What handlers return: statuses (gRPC codes), check results, quota arguments and results."""

from __future__ import annotations

import datetime as _dt
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = [
    "OK",
    "CheckResult",
    "Code",
    "DirectHttpResponse",
    "QuotaArgs",
    "QuotaResult",
    "Status",
    "code_name",
]


class Code(enum.IntEnum):
    """gRPC status codes (google.rpc.Code)."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


_CODE_NAMES: Final = tuple(c.name for c in Code)


def code_name(code: int) -> str:
    """The gRPC name of a status code (``7`` -> ``"PERMISSION_DENIED"``), or the number as text."""
    return _CODE_NAMES[code] if 0 <= code < len(_CODE_NAMES) else str(code)


@dataclass(frozen=True, slots=True)
class DirectHttpResponse:
    """An HTTP response the proxy should send the client itself when a check fails: a denial
    page, a login redirect (Mixer's ``DirectHttpResponse`` status detail).

    ``code`` is the HTTP status (0: derived from the check's gRPC code); ``headers`` are
    (name, value) pairs set on the response (a ``Set-Cookie`` value is split on ``,`` into one
    header per cookie, as Mixer did).
    """

    code: int = 0
    body: str = ""
    headers: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.code != 0 and not 200 <= self.code <= 599:
            raise ValueError(f"DirectHttpResponse.code must be 0 or an HTTP status 200-599, got {self.code}")


@dataclass(frozen=True, slots=True)
class Status:
    """A status: a gRPC code and a message for people, and for a failed check optionally the
    HTTP response the client should get (:class:`DirectHttpResponse`)."""

    code: int = Code.OK
    message: str = ""
    direct_response: DirectHttpResponse | None = None

    @property
    def ok(self) -> bool:
        return self.code == Code.OK

    def __str__(self) -> str:
        name = code_name(self.code)
        return name if not self.message else f"{name}: {self.message}"


OK: Final = Status()


@dataclass(frozen=True, slots=True)
class CheckResult:
    """A precondition answer and how long / how often the caller may reuse it."""

    status: Status = OK
    valid_duration: _dt.timedelta = _dt.timedelta(minutes=1)
    valid_use_count: int = 10000
    output: Mapping[str, Any] | None = field(default=None, compare=False)
    """A CHECK_WITH_OUTPUT template's output fields (``{field: value}``): header operations of
    the rule read them as ``<action name>.output.<field>``. Not part of equality or the hash
    (what they change, the route directive, is compared on its own)."""


@dataclass(frozen=True, slots=True)
class QuotaArgs:
    """A quota allocation request: the amount wanted, best effort or all-or-nothing, and a
    deduplication id (a retried request carries the same id and must not be charged twice)."""

    amount: int = 1
    best_effort: bool = False
    dedup_id: str = ""


@dataclass(frozen=True, slots=True)
class QuotaResult:
    """What a quota handler granted.

    ``amount`` is the granted amount (0 means nothing was granted); ``valid_duration`` how long the
    grant lives. ``limit``, ``remaining``, ``reset_after`` and ``window`` are optional hints (the
    configured maximum, what is left in the window, when the window resets, the window's length)
    that front-ends such as Envoy's rate-limit service turn into response headers.
    """

    status: Status = OK
    valid_duration: _dt.timedelta = _dt.timedelta(0)
    amount: int = 0
    limit: int | None = None
    remaining: int | None = None
    reset_after: _dt.timedelta | None = None
    window: _dt.timedelta | None = None
