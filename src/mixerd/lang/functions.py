"""The function catalogue of CEXL and the run-time implementation of each function.

Two kinds of functions exist, as in Mixer (``mixer/pkg/lang/ast/func.go``, ``lang/externs.go``):

* **Intrinsics** (:data:`INTRINSICS`): the operators (``EQ NEQ LT LEQ GT GEQ LOR LAND OR ADD``),
  ``INDEX``, ``conditional`` and ``size``. The compiler generates inline code for them; their
  metadata only drives type checking.
* **Externs** (:data:`FUNCTIONS`): ``ip``, ``timestamp``, ``dnsName``, ``email``, ``uri``,
  ``match``, ``matches``, ``startsWith``, ``endsWith``, ``emptyStringMap``,
  ``conditionalString``, ``toLower``. Each is a :class:`Function` with an implementation; callers
  may pass their own catalogue to :func:`mixerd.lang.compile` to add or replace functions.

The implementations below follow Mixer's Go code: ``ip`` is ``net.ParseIP`` (IPv4 gives the
16-byte mapped form), ``timestamp`` RFC 3339, ``dnsName`` the IDNA validation profile of
``golang.org/x/net/idna`` (strict labels, DNS lengths, bidi rule; the UTS 46 mapping comes from
the ``idna`` package), ``email`` Go's ``net/mail`` address grammar with no display name and a
valid DNS domain, ``uri`` Go's ``net/url.Parse``; equality of DNS names, e-mail addresses and URIs
normalises like Mixer's ``dnsName_equal`` / ``email_equal`` / ``uri_equal``. Regular expressions
(``matches``) are RE2 (``google-re2``), never Python's ``re``. Failures raise
:class:`~mixerd.lang.errors.EvaluationError` with Mixer's messages.

The ports of Go's rules live in their own modules: :mod:`~mixerd.lang.go_idna`
(``golang.org/x/net/idna``), :mod:`~mixerd.lang.go_mail` (``net/mail``) and
:mod:`~mixerd.lang.go_url` (``net/url``); IP addresses are parsed by
:func:`mixerd.attribute.parse_ip`. This module keeps the catalogue and Mixer's own logic on top.
"""

from __future__ import annotations

import datetime as _dt
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

import re2

from mixerd.attribute import URI, DNSName, EmailAddress, IPAddress, ValueType, parse_ip, parse_timestamp
from mixerd.lang import go_idna, go_mail, go_url
from mixerd.lang.errors import EvaluationError

__all__ = [
    "EMPTY_STRING_MAP",
    "FUNCTIONS",
    "INTRINSICS",
    "Function",
    "compile_regex",
    "conditional_string",
    "dns_name",
    "dns_name_equal",
    "email",
    "email_equal",
    "email_parts",
    "empty_string_map",
    "ends_with",
    "ip",
    "ip_equal",
    "match",
    "matches",
    "size",
    "starts_with",
    "timestamp",
    "timestamp_equal",
    "to_lower",
    "uri",
    "uri_equal",
]

_V = ValueType


@dataclass(frozen=True, slots=True)
class Function:
    """A function known to the type checker (Mixer's ``FunctionMetadata``) and its implementation.

    ``argument_types`` may use VALUE_TYPE_UNSPECIFIED: the first such argument (or the target of
    an instance function whose ``target_type`` is unspecified) binds a template type that every
    later unspecified argument must match; an unspecified ``return_type`` returns that type.
    ``impl`` receives the evaluated arguments (the target first for an instance function) and
    raises :class:`EvaluationError` on bad input. ``pure`` functions (same arguments, same result,
    no side effects) are evaluated at compile time when all their arguments are constants.
    """

    name: str
    return_type: ValueType
    argument_types: tuple[ValueType, ...] = ()
    instance: bool = False
    target_type: ValueType = ValueType.VALUE_TYPE_UNSPECIFIED
    impl: Callable[..., Any] | None = None
    pure: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "return_type", ValueType.parse(self.return_type))
        object.__setattr__(self, "target_type", ValueType.parse(self.target_type))
        object.__setattr__(self, "argument_types", tuple(ValueType.parse(t) for t in self.argument_types))


# --- IP addresses and timestamps ---------------------------------------------------------------


def ip(text: str) -> IPAddress:
    """``ip(s)``: Go's ``net.ParseIP`` (see :func:`mixerd.attribute.parse_ip`); an IPv4 address gives
    its 16-byte IPv4-mapped form."""
    try:
        return parse_ip(text)
    except ValueError as exc:
        raise EvaluationError(str(exc)) from None


def ip_equal(a: IPAddress, b: IPAddress) -> bool:
    """Mixer's ``ip_equal``: Go's ``net.IP.Equal`` (the 4-byte and mapped 16-byte forms are equal)."""
    return a == b


_RFC3339: Final = "2006-01-02T15:04:05Z07:00"


def timestamp(text: str) -> _dt.datetime:
    """``timestamp(s)``: an RFC 3339 time (Go's ``time.Parse(time.RFC3339, s)``), in UTC."""
    try:
        if "t" in text or "z" in text:  # Go's layout wants upper-case T and Z
            raise ValueError(text)
        return parse_timestamp(text)
    except ValueError:
        raise EvaluationError(
            f"could not convert '{text}' to TIMESTAMP. expected format: '{_RFC3339}'"
        ) from None


def timestamp_equal(a: _dt.datetime, b: _dt.datetime) -> bool:
    """Mixer's ``timestamp_equal``: the same instant."""
    return a == b


# --- DNS names (golang.org/x/net/idna profiles: go_idna) -------------------------------------


def dns_name(text: str) -> DNSName:
    """``dnsName(s)``: validate a DNS name (IDNA rules); returns its Unicode form."""
    try:
        return DNSName(go_idna.to_unicode(text, lookup=False))
    except go_idna.IDNAError as exc:
        raise EvaluationError(f"error converting '{text}' to dns name: '{exc}'") from None


def _dns_equal(a: str, b: str) -> bool:
    a = go_idna.to_unicode(a, lookup=True)
    b = go_idna.to_unicode(b, lookup=True)
    if a and b:
        if a[-1] == "." and b[-1] != ".":
            a = a[:-1]
        if b[-1] == "." and a[-1] != ".":
            b = b[:-1]
    return a == b


def dns_name_equal(a: str, b: str) -> bool:
    """``==`` on DNS names: case-insensitive, IDNA-mapped, tolerant of one trailing dot."""
    try:
        return _dns_equal(a, b)
    except go_idna.IDNAError as exc:
        raise EvaluationError(str(exc)) from None


# --- e-mail addresses (Go's net/mail address grammar: go_mail) --------------------------------


def email_parts(address: str) -> tuple[str, str]:
    """Split an address at its first ``@`` into (local part, domain) (Mixer's getEmailParts)."""
    local, at, domain = address.partition("@")
    return local, domain if at else ""


def email(text: str) -> EmailAddress:
    """``email(s)``: an RFC 5322 address without display name whose domain is a valid DNS name."""
    try:
        name, address = go_mail.parse_address(text)
    except go_mail.MailError as exc:
        raise EvaluationError(f"error converting '{text}' to e-mail: '{exc}'") from None
    if name:
        raise EvaluationError(f"error converting '{text}' to e-mail: display names are not allowed")
    _, domain = email_parts(address)
    try:
        dns_name(domain)
    except EvaluationError as exc:
        raise EvaluationError(f"error converting '{text}' to e-mail: '{exc}'") from None
    return EmailAddress(text)


def email_equal(a: str, b: str) -> bool:
    """``==`` on e-mail addresses: same local part (exactly) and equal DNS domains."""
    try:
        address_a = go_mail.parse_address(a)[1]
        address_b = go_mail.parse_address(b)[1]
    except go_mail.MailError as exc:
        raise EvaluationError(str(exc)) from None
    local_a, domain_a = email_parts(address_a)
    local_b, domain_b = email_parts(address_b)
    try:
        if not _dns_equal(domain_a, domain_b):
            return False
    except go_idna.IDNAError as exc:
        raise EvaluationError(f"error comparing e-mails '{a}' and '{b}': {exc}") from None
    return local_a == local_b


# --- URIs (Go's net/url, 1.13: go_url) --------------------------------------------------------


def uri(text: str) -> URI:
    """``uri(s)``: a non-empty string that Go's ``url.Parse`` accepts."""
    if text == "":
        raise EvaluationError("error converting string to uri: empty string")
    try:
        go_url.parse_url(text)
    except go_url.URLError as exc:
        raise EvaluationError(f"error converting string to uri '{text}': '{exc}'") from None
    return URI(text)


def uri_equal(a: str, b: str) -> bool:
    """``==`` on URIs: scheme case-insensitive; for http(s) the host compares as a DNS name."""
    try:
        url_a = go_url.parse_url(a)
    except go_url.URLError as exc:
        raise EvaluationError(f"error converting string to uri '{a}': '{exc}'") from None
    try:
        url_b = go_url.parse_url(b)
    except go_url.URLError as exc:
        raise EvaluationError(f"error converting string to uri '{b}': '{exc}'") from None
    if url_a.scheme != url_b.scheme:
        return False
    if url_a.scheme in (b"http", b"https"):
        try:
            same_host = _dns_equal(
                url_a.hostname().decode("utf-8", "replace"), url_b.hostname().decode("utf-8", "replace")
            )
        except go_idna.IDNAError as exc:
            raise EvaluationError(str(exc)) from None
        if not same_host or url_a.port() != url_b.port():
            return False
        url_a.host = url_b.host
    return url_a.to_bytes() == url_b.to_bytes()


# --- strings ---------------------------------------------------------------------------------


def match(text: str, pattern: str) -> bool:
    """``match(s, pattern)``: ``prefix*``, ``*suffix`` or exact equality (Mixer's glob)."""
    if pattern.endswith("*"):
        return text.startswith(pattern[:-1])
    if pattern.startswith("*"):
        return text.endswith(pattern[1:])
    return text == pattern


_RE2_OPTIONS: Final = re2.Options()
_RE2_OPTIONS.log_errors = False


@functools.lru_cache(maxsize=512)
def _compile_cached(pattern: str) -> Any:
    return re2.compile(pattern, options=_RE2_OPTIONS)


def compile_regex(pattern: str) -> Any:
    """Compile ``pattern`` with RE2 (cached); a bad pattern raises :class:`EvaluationError`."""
    try:
        return _compile_cached(pattern)
    except re2.error as exc:
        detail = exc.args[0] if exc.args else exc
        if isinstance(detail, bytes):
            detail = detail.decode("utf-8", "replace")
        raise EvaluationError(f"error parsing regexp: {detail}") from None
    except UnicodeEncodeError:  # a lone surrogate (an undecodable byte): Go's message for bad UTF-8
        raise EvaluationError(
            f"error parsing regexp: invalid UTF-8: `{pattern.encode('utf-8', 'backslashreplace').decode()}`"
        ) from None


def matches(pattern: str, text: str) -> bool:
    """``pattern.matches(s)``: whether the RE2 ``pattern`` matches anywhere in ``s``."""
    return compile_regex(pattern).search(text) is not None


def starts_with(text: str, prefix: str) -> bool:
    """``s.startsWith(prefix)``."""
    return text.startswith(prefix)


def ends_with(text: str, suffix: str) -> bool:
    """``s.endsWith(suffix)``."""
    return text.endswith(suffix)


def to_lower(text: str) -> str:
    """``toLower(s)``: Go's ``strings.ToLower`` (simple, one-to-one case mapping)."""
    if text.isascii():
        return text.lower()
    return "".join(_lower_rune(ch) for ch in text)


def _lower_rune(ch: str) -> str:
    lowered = ch.lower()
    return lowered if len(lowered) == 1 else lowered[0]


def size(text: str) -> int:
    """``size(s)``: the length of ``s`` in bytes (UTF-8), as Go's ``len``."""
    if text.isascii():
        return len(text)
    return len(text.encode("utf-8", "surrogatepass"))


EMPTY_STRING_MAP: Final[Mapping[str, str]] = MappingProxyType({})
"""The (shared, read-only) value of ``emptyStringMap()``."""


def empty_string_map() -> Mapping[str, str]:
    """``emptyStringMap()``: a string map without entries."""
    return EMPTY_STRING_MAP


def conditional_string(condition: bool, if_true: str, if_false: str) -> str:
    """``conditionalString(b, x, y)``: legacy ternary on strings (both branches are evaluated)."""
    return if_true if condition else if_false


# --- catalogue -------------------------------------------------------------------------------


def _intrinsic(name: str, ret: ValueType, *args: ValueType) -> Function:
    return Function(name, ret, args)


_U, _S, _B = _V.VALUE_TYPE_UNSPECIFIED, _V.STRING, _V.BOOL

INTRINSICS: Final[Mapping[str, Function]] = MappingProxyType(
    {
        f.name: f
        for f in (
            _intrinsic("EQ", _B, _U, _U),
            _intrinsic("NEQ", _B, _U, _U),
            _intrinsic("LT", _B, _U, _U),
            _intrinsic("LEQ", _B, _U, _U),
            _intrinsic("GT", _B, _U, _U),
            _intrinsic("GEQ", _B, _U, _U),
            _intrinsic("OR", _U, _U, _U),
            _intrinsic("LOR", _B, _B, _B),
            _intrinsic("LAND", _B, _B, _B),
            _intrinsic("INDEX", _S, _V.STRING_MAP, _S),
            _intrinsic("conditional", _U, _B, _U, _U),
            _intrinsic("ADD", _U, _U, _U),
            _intrinsic("size", _V.INT64, _S),
        )
    }
)
"""Operators and built-ins the compiler generates inline code for (type metadata only)."""


FUNCTIONS: Final[Mapping[str, Function]] = MappingProxyType(
    {
        f.name: f
        for f in (
            Function("ip", _V.IP_ADDRESS, (_S,), impl=ip, pure=True),
            Function("timestamp", _V.TIMESTAMP, (_S,), impl=timestamp, pure=True),
            Function("dnsName", _V.DNS_NAME, (_S,), impl=dns_name, pure=True),
            Function("email", _V.EMAIL_ADDRESS, (_S,), impl=email, pure=True),
            Function("uri", _V.URI, (_S,), impl=uri, pure=True),
            Function("match", _B, (_S, _S), impl=match, pure=True),
            Function("matches", _B, (_S,), instance=True, target_type=_S, impl=matches, pure=True),
            Function("startsWith", _B, (_S,), instance=True, target_type=_S, impl=starts_with, pure=True),
            Function("endsWith", _B, (_S,), instance=True, target_type=_S, impl=ends_with, pure=True),
            Function("emptyStringMap", _V.STRING_MAP, (), impl=empty_string_map, pure=True),
            Function("conditionalString", _S, (_B, _S, _S), impl=conditional_string, pure=True),
            Function("toLower", _S, (_S,), impl=to_lower, pure=True),
        )
    }
)
"""The extern functions of CEXL (Mixer's ``ExternFunctionMetadata`` + ``Externs``)."""
