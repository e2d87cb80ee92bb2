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
"""

from __future__ import annotations

import datetime as _dt
import functools
import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

import idna
import re2

from mixerd.attribute import URI, DNSName, EmailAddress, IPAddress, ValueType, parse_ip, parse_timestamp
from mixerd.lang.errors import EvaluationError
from mixerd.lang.syntax import go_quote

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


# --- DNS names (golang.org/x/net/idna profiles) ---------------------------------------------

_RTL_CLASSES: Final = frozenset({"R", "AL", "AN"})


class _IDNAError(Exception):
    pass


def _label_error(label: str) -> _IDNAError:
    return _IDNAError(f"idna: invalid label {go_quote(label)}")


def _labels(domain: str) -> list[str]:
    """Go's labelIter: the labels of ``domain``, without a final empty label (a trailing dot)."""
    out: list[str] = []
    start, n = 0, len(domain)
    while start < n:
        dot = domain.find(".", start)
        end = n if dot < 0 else dot
        out.append(domain[start:end])
        start = end + 1
        if start == n - 1 and domain[start] == ".":
            start = n
    return out


def _validate_label(label: str) -> None:
    raw = label.encode("utf-8", "surrogatepass")
    if len(raw) > 4 and raw[2:4] == b"--":
        raise _label_error(label)
    if raw[:1] == b"-" or raw[-1:] == b"-":
        raise _label_error(label)
    if unicodedata.category(label[0]).startswith("M"):
        raise _label_error(label)
    for i, ch in enumerate(label):
        if ch in ("\u200c", "\u200d") and not idna.valid_contextj(label, i):
            raise _label_error(label)


def _idna_to_unicode(domain: str, *, lookup: bool) -> str:
    """x/net/idna ``Profile.ToUnicode`` for Mixer's two profiles.

    ``lookup=False``: ``dnsName`` validation (NFC, strict labels, DNS length rules, bidi rule).
    ``lookup=True``: ``dnsName_equal`` canonicalisation (UTS 46 mapping with STD3 rules, label
    checks, bidi rule; empty labels allowed).
    """
    if lookup:
        try:
            domain = idna.uts46_remap(domain, std3_rules=True, transitional=False)
        except idna.IDNAError as exc:
            found = re.search(r"U\+([0-9A-F]{4,6})", str(exc))
            rune = f"U+{found.group(1)}" if found else "U+FFFD"
            raise _IDNAError(f"idna: disallowed rune {rune}") from None
    else:
        domain = unicodedata.normalize("NFC", domain)
    if not lookup and domain == "":
        raise _label_error(domain)
    labels = _labels(domain)
    changed = False
    for i, label in enumerate(labels):
        if label == "":
            if not lookup:
                raise _label_error(domain)
            continue
        if label[:4].lower() == "xn--":
            encoded = label[4:]
            try:
                if encoded.rfind("-") == 0:  # Go: nothing but a delimiter before the digits
                    raise ValueError(encoded)
                decoded = encoded.encode("ascii").decode("punycode")
            except (UnicodeError, ValueError):
                raise _label_error(label) from None
            if unicodedata.normalize("NFC", decoded) != decoded:
                raise _label_error(decoded)
            try:  # every decoded rune must be IDNA-valid as is (not mapped, not disallowed)
                if idna.uts46_remap(decoded, std3_rules=True, transitional=False) != decoded:
                    raise _label_error(decoded)
            except idna.IDNAError:
                raise _label_error(decoded) from None
            labels[i] = decoded
            changed = True
            label = decoded
        _validate_label(label)
    if any(unicodedata.bidirectional(ch) in _RTL_CLASSES for ch in "".join(labels)):
        for label in labels:
            try:
                if label and not idna.check_bidi(label, check_ltr=True):
                    raise _label_error(domain)
            except idna.IDNAError:
                raise _label_error(domain) from None
    if not changed:
        return domain
    parts = domain.split(".")
    parts[: len(labels)] = labels
    return ".".join(parts)


def dns_name(text: str) -> DNSName:
    """``dnsName(s)``: validate a DNS name (IDNA rules); returns its Unicode form."""
    try:
        return DNSName(_idna_to_unicode(text, lookup=False))
    except _IDNAError as exc:
        raise EvaluationError(f"error converting '{text}' to dns name: '{exc}'") from None


def _dns_equal(a: str, b: str) -> bool:
    a = _idna_to_unicode(a, lookup=True)
    b = _idna_to_unicode(b, lookup=True)
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
    except _IDNAError as exc:
        raise EvaluationError(str(exc)) from None


# --- e-mail addresses (Go's net/mail address grammar) -----------------------------------------


class _MailError(Exception):
    pass


def _is_atext(ch: str, dot: bool, permissive: bool) -> bool:
    if ch == ".":
        return dot
    if ch in "()[];@\\,":
        return permissive
    if ch in '<>":':
        return False
    return "!" <= ch <= "~" or ch >= "\x80"


def _is_vchar(ch: str) -> bool:
    return "!" <= ch <= "~" or ch >= "\x80"


class _AddressParser:
    def __init__(self, text: str) -> None:
        self.s = text

    def skip_space(self) -> None:
        self.s = self.s.lstrip(" \t")

    def consume(self, ch: str) -> bool:
        if self.s[:1] == ch:
            self.s = self.s[1:]
            return True
        return False

    def atom(self, dot: bool, permissive: bool) -> str:
        i = 0
        while i < len(self.s) and _is_atext(self.s[i], dot, permissive):
            i += 1
        if i == 0:
            raise _MailError("mail: invalid string")
        word, self.s = self.s[:i], self.s[i:]
        if not permissive:
            if word.startswith("."):
                raise _MailError("mail: leading dot in atom")
            if ".." in word:
                raise _MailError("mail: double dot in atom")
            if word.endswith("."):
                raise _MailError("mail: trailing dot in atom")
        return word

    def quoted_string(self) -> str:
        out: list[str] = []
        i = 1
        escaped = False
        while True:
            if i >= len(self.s):
                raise _MailError("mail: unclosed quoted-string")
            ch = self.s[i]
            if escaped:
                if not _is_vchar(ch) and ch not in " \t":
                    raise _MailError(f"mail: bad character in quoted-string: {go_quote(ch)}")
                out.append(ch)
                escaped = False
            elif (_is_vchar(ch) and ch not in '"\\') or ch in " \t":
                out.append(ch)
            elif ch == '"':
                break
            elif ch == "\\":
                escaped = True
            else:
                raise _MailError(f"mail: bad character in quoted-string: {go_quote(ch)}")
            i += 1
        self.s = self.s[i + 1 :]
        return "".join(out)

    def addr_spec(self) -> str:
        saved = self.s
        try:
            self.skip_space()
            if not self.s:
                raise _MailError("mail: no addr-spec")
            if self.s[0] == '"':
                local = self.quoted_string()
                if local == "":
                    raise _MailError("mail: empty quoted-string in addr-spec")
            else:
                local = self.atom(True, False)
            if not self.consume("@"):
                raise _MailError("mail: missing @ in addr-spec")
            self.skip_space()
            if not self.s:
                raise _MailError("mail: no domain in addr-spec")
            domain = self.atom(True, False)
            return f"{local}@{domain}"
        except _MailError:
            self.s = saved
            raise

    def comment(self) -> tuple[str, bool]:
        depth = 1
        out: list[str] = []
        while self.s and depth:
            if self.s[0] == "\\" and len(self.s) > 1:
                self.s = self.s[1:]
            elif self.s[0] == "(":
                depth += 1
            elif self.s[0] == ")":
                depth -= 1
            if depth:
                out.append(self.s[0])
            self.s = self.s[1:]
        return "".join(out), depth == 0

    def skip_cfws(self) -> bool:
        self.skip_space()
        while self.consume("("):
            _, ok = self.comment()
            if not ok:
                return False
            self.skip_space()
        return True

    def phrase(self) -> str:
        words: list[str] = []
        error: _MailError | None = None
        while True:
            self.skip_space()
            if not self.s:
                break
            try:
                words.append(self.quoted_string() if self.s[0] == '"' else self.atom(True, True))
            except _MailError as exc:
                error = exc
                break
        if error is not None and not words:
            raise _MailError(f"mail: missing word in phrase: {error}")
        return " ".join(words)

    def address(self) -> tuple[str, str]:
        self.skip_space()
        if not self.s:
            raise _MailError("mail: no address")
        try:
            spec = self.addr_spec()
        except _MailError:
            pass
        else:
            name = ""
            self.skip_space()
            if self.s[:1] == "(":
                self.s = self.s[1:]
                text, ok = self.comment()
                if not ok:
                    raise _MailError("mail: misformatted parenthetical comment")
                name = " ".join(text.split())
            return name, spec
        name = ""
        if self.s[:1] != "<":
            name = self.phrase()
        self.skip_space()
        if not self.consume("<"):
            if all(_is_atext(ch, True, False) for ch in name):
                raise _MailError("mail: missing '@' or angle-addr")
            raise _MailError("mail: no angle-addr")
        spec = self.addr_spec()
        if not self.consume(">"):
            raise _MailError("mail: unclosed angle-addr")
        return name, spec

    def single_address(self) -> tuple[str, str]:
        result = self.address()
        if not self.skip_cfws():
            raise _MailError("mail: misformatted parenthetical comment")
        if self.s:
            raise _MailError(f"mail: expected single address, got {go_quote(self.s)}")
        return result


def _parse_address(text: str) -> tuple[str, str]:
    """Go's ``mail.ParseAddress``: (display name, address) or :class:`_MailError`."""
    return _AddressParser(text).single_address()


def email_parts(address: str) -> tuple[str, str]:
    """Split an address at its first ``@`` into (local part, domain) (Mixer's getEmailParts)."""
    local, at, domain = address.partition("@")
    return local, domain if at else ""


def email(text: str) -> EmailAddress:
    """``email(s)``: an RFC 5322 address without display name whose domain is a valid DNS name."""
    try:
        name, address = _parse_address(text)
    except _MailError as exc:
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
        address_a = _parse_address(a)[1]
        address_b = _parse_address(b)[1]
    except _MailError as exc:
        raise EvaluationError(str(exc)) from None
    local_a, domain_a = email_parts(address_a)
    local_b, domain_b = email_parts(address_b)
    try:
        if not _dns_equal(domain_a, domain_b):
            return False
    except _IDNAError as exc:
        raise EvaluationError(f"error comparing e-mails '{a}' and '{b}': {exc}") from None
    return local_a == local_b


# --- URIs (Go's net/url, 1.13) ----------------------------------------------------------------

_ENC_PATH, _ENC_USER, _ENC_HOST, _ENC_ZONE, _ENC_FRAGMENT = range(5)
_HEXDIGITS: Final = b"0123456789abcdefABCDEF"


class _URLError(Exception):
    pass


def _should_escape(c: int, mode: int) -> bool:
    if 0x61 <= c <= 0x7A or 0x41 <= c <= 0x5A or 0x30 <= c <= 0x39:
        return False
    ch = chr(c)
    if mode in (_ENC_HOST, _ENC_ZONE) and ch in "!$&'()*+,;=:[]<>\"":
        return False
    if ch in "-_.~":
        return False
    if ch in "$&+,/:;=?@":
        if mode == _ENC_PATH:
            return ch == "?"
        if mode == _ENC_USER:
            return ch in "@/?:"
        if mode == _ENC_FRAGMENT:
            return False
    # Everything else is escaped, but a fragment may keep these sub-delims.
    return not (mode == _ENC_FRAGMENT and ch in "!()*")


def _url_escape(s: bytes, mode: int) -> bytes:
    out = bytearray()
    for c in s:
        if _should_escape(c, mode):
            out += b"%%%02X" % c
        else:
            out.append(c)
    return bytes(out)


def _quote_bytes(b: bytes) -> str:
    return go_quote(b.decode("utf-8", "replace"))


def _url_unescape(s: bytes, mode: int) -> bytes:
    i = 0
    while i < len(s):
        c = s[i]
        if c == 0x25:  # '%'
            if i + 2 >= len(s) or s[i + 1] not in _HEXDIGITS or s[i + 2] not in _HEXDIGITS:
                raise _URLError(f"invalid URL escape {_quote_bytes(s[i : i + 3])}")
            value = int(s[i + 1 : i + 3], 16)
            if mode == _ENC_HOST and value < 0x80 and s[i : i + 3] != b"%25":
                raise _URLError(f"invalid URL escape {_quote_bytes(s[i : i + 3])}")
            if (
                mode == _ENC_ZONE
                and s[i : i + 3] != b"%25"
                and value != 0x20
                and _should_escape(value, _ENC_HOST)
            ):
                raise _URLError(f"invalid URL escape {_quote_bytes(s[i : i + 3])}")
            i += 3
        else:
            if mode in (_ENC_HOST, _ENC_ZONE) and c < 0x80 and _should_escape(c, mode):
                raise _URLError(f"invalid character {_quote_bytes(bytes([c]))} in host name")
            i += 1
    out = bytearray()
    i = 0
    while i < len(s):
        if s[i] == 0x25:
            out.append(int(s[i + 1 : i + 3], 16))
            i += 3
        else:
            out.append(s[i])
            i += 1
    return bytes(out)


@dataclass(slots=True)
class _URL:
    scheme: bytes = b""
    opaque: bytes = b""
    user: tuple[bytes, bytes | None] | None = None
    host: bytes = b""
    path: bytes = b""
    raw_path: bytes = b""
    force_query: bool = False
    raw_query: bytes = b""
    fragment: bytes = b""

    def hostname(self) -> bytes:
        colon = self.host.find(b":")
        if colon < 0:
            return self.host
        bracket = self.host.find(b"]")
        if bracket >= 0:
            return self.host[:bracket].removeprefix(b"[")
        return self.host[:colon]

    def port(self) -> bytes:
        colon = self.host.find(b":")
        if colon < 0:
            return b""
        i = self.host.find(b"]:")
        if i >= 0:
            return self.host[i + 2 :]
        if b"]" in self.host:
            return b""
        return self.host[colon + 1 :]

    def escaped_path(self) -> bytes:
        if self.raw_path and _valid_encoded_path(self.raw_path):
            try:
                if _url_unescape(self.raw_path, _ENC_PATH) == self.path:
                    return self.raw_path
            except _URLError:
                pass
        if self.path == b"*":
            return b"*"
        return _url_escape(self.path, _ENC_PATH)

    def to_bytes(self) -> bytes:
        """Go's ``URL.String()``."""
        buf = bytearray()
        if self.scheme:
            buf += self.scheme + b":"
        if self.opaque:
            buf += self.opaque
        else:
            if self.scheme or self.host or self.user is not None:
                if self.host or self.path or self.user is not None:
                    buf += b"//"
                if self.user is not None:
                    name, password = self.user
                    buf += _url_escape(name, _ENC_USER)
                    if password is not None:
                        buf += b":" + _url_escape(password, _ENC_USER)
                    buf += b"@"
                if self.host:
                    buf += _url_escape(self.host, _ENC_HOST)
            path = self.escaped_path()
            if path and path[:1] != b"/" and self.host:
                buf += b"/"
            if not buf:
                colon = path.find(b":")
                if colon > -1 and b"/" not in path[:colon]:
                    buf += b"./"
            buf += path
        if self.force_query or self.raw_query:
            buf += b"?" + self.raw_query
        if self.fragment:
            buf += b"#" + _url_escape(self.fragment, _ENC_FRAGMENT)
        return bytes(buf)


def _valid_encoded_path(s: bytes) -> bool:
    return all(chr(c) in "!$&'()*+,;=:@[]%" or not _should_escape(c, _ENC_PATH) for c in s)


def _valid_optional_port(port: bytes) -> bool:
    if not port:
        return True
    return port[:1] == b":" and all(0x30 <= c <= 0x39 for c in port[1:])


def _parse_host(host: bytes) -> bytes:
    if host.startswith(b"["):
        i = host.rfind(b"]")
        if i < 0:
            raise _URLError("missing ']' in host")
        colon_port = host[i + 1 :]
        if not _valid_optional_port(colon_port):
            raise _URLError(f"invalid port {_quote_bytes(colon_port)} after host")
        zone = host[:i].find(b"%25")
        if zone >= 0:
            return (
                _url_unescape(host[:zone], _ENC_HOST)
                + _url_unescape(host[zone:i], _ENC_ZONE)
                + _url_unescape(host[i:], _ENC_HOST)
            )
    else:
        i = host.rfind(b":")
        if i >= 0 and not _valid_optional_port(host[i:]):
            raise _URLError(f"invalid port {_quote_bytes(host[i:])} after host")
    return _url_unescape(host, _ENC_HOST)


_USERINFO_OK: Final = frozenset(b"-._:~!$&'()*+,;=%@")


def _parse_authority(authority: bytes) -> tuple[tuple[bytes, bytes | None] | None, bytes]:
    i = authority.rfind(b"@")
    host = _parse_host(authority if i < 0 else authority[i + 1 :])
    if i < 0:
        return None, host
    userinfo = authority[:i]
    if not all(chr(c).isascii() and (chr(c).isalnum() or c in _USERINFO_OK) for c in userinfo):
        raise _URLError("net/url: invalid userinfo")
    if b":" not in userinfo:
        return (_url_unescape(userinfo, _ENC_USER), None), host
    name, _, password = userinfo.partition(b":")
    return (_url_unescape(name, _ENC_USER), _url_unescape(password, _ENC_USER)), host


def _get_scheme(raw: bytes) -> tuple[bytes, bytes]:
    for i, c in enumerate(raw):
        ch = chr(c)
        if ch.isascii() and ch.isalpha():
            continue
        if ch.isascii() and (ch.isdigit() or ch in "+-."):
            if i == 0:
                return b"", raw
            continue
        if ch == ":":
            if i == 0:
                raise _URLError("missing protocol scheme")
            return raw[:i], raw[i + 1 :]
        return b"", raw
    return b"", raw


def _parse_url_part(raw: bytes) -> _URL:
    if any(c < 0x20 or c == 0x7F for c in raw):
        raise _URLError("net/url: invalid control character in URL")
    url = _URL()
    if raw == b"*":
        url.path = b"*"
        return url
    scheme, rest = _get_scheme(raw)
    url.scheme = scheme.lower()
    if rest.endswith(b"?") and rest.count(b"?") == 1:
        url.force_query = True
        rest = rest[:-1]
    else:
        rest, _, url.raw_query = rest.partition(b"?")
    if not rest.startswith(b"/"):
        if url.scheme:
            url.opaque = rest
            return url
        colon, slash = rest.find(b":"), rest.find(b"/")
        if colon >= 0 and (slash < 0 or colon < slash):
            raise _URLError("first path segment in URL cannot contain colon")
    if rest.startswith(b"//") and (url.scheme or not rest.startswith(b"///")):
        authority, sep, tail = rest[2:].partition(b"/")
        rest = sep + tail
        url.user, url.host = _parse_authority(authority)
    url.path = _url_unescape(rest, _ENC_PATH)
    url.raw_path = b"" if _url_escape(url.path, _ENC_PATH) == rest else rest
    return url


def _parse_url(text: str) -> _URL:
    """Go's ``url.Parse``; raises :class:`_URLError` with Go's ``parse <url>: <reason>`` text."""
    raw = text.encode("utf-8", "surrogatepass")
    head, hash_mark, fragment = raw.partition(b"#")
    try:
        url = _parse_url_part(head)
    except _URLError as exc:
        raise _URLError(f"parse {head.decode('utf-8', 'replace')}: {exc}") from None
    if hash_mark and fragment:
        try:
            url.fragment = _url_unescape(fragment, _ENC_FRAGMENT)
        except _URLError as exc:
            raise _URLError(f"parse {text}: {exc}") from None
    return url


def uri(text: str) -> URI:
    """``uri(s)``: a non-empty string that Go's ``url.Parse`` accepts."""
    if text == "":
        raise EvaluationError("error converting string to uri: empty string")
    try:
        _parse_url(text)
    except _URLError as exc:
        raise EvaluationError(f"error converting string to uri '{text}': '{exc}'") from None
    return URI(text)


def uri_equal(a: str, b: str) -> bool:
    """``==`` on URIs: scheme case-insensitive; for http(s) the host compares as a DNS name."""
    try:
        url_a = _parse_url(a)
    except _URLError as exc:
        raise EvaluationError(f"error converting string to uri '{a}': '{exc}'") from None
    try:
        url_b = _parse_url(b)
    except _URLError as exc:
        raise EvaluationError(f"error converting string to uri '{b}': '{exc}'") from None
    if url_a.scheme != url_b.scheme:
        return False
    if url_a.scheme in (b"http", b"https"):
        try:
            same_host = _dns_equal(
                url_a.hostname().decode("utf-8", "replace"), url_b.hostname().decode("utf-8", "replace")
            )
        except _IDNAError as exc:
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
