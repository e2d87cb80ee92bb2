"""A port of Go's ``net/url`` parser and ``URL.String()`` (Go 1.13), as Mixer's ``uri()`` uses them.

:func:`parse_url` is ``url.Parse``: it returns a :class:`URL` (scheme, opaque, user, host,
path, query, fragment, with Go's unescaping rules per component) or raises :class:`URLError`
with Go's ``parse <url>: <reason>`` text. ``URL.to_bytes()`` is ``URL.String()`` (Go's
re-escaping), which ``uri_equal`` compares. Work is on bytes, as Go's strings are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from mixerd.lang.syntax import go_quote

__all__ = ["URL", "URLError", "parse_url"]

_ENC_PATH, _ENC_USER, _ENC_HOST, _ENC_ZONE, _ENC_FRAGMENT = range(5)
_HEXDIGITS: Final = b"0123456789abcdefABCDEF"


class URLError(Exception):
    """A URL ``net/url`` rejects; the message is Go's."""


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
                raise URLError(f"invalid URL escape {_quote_bytes(s[i : i + 3])}")
            value = int(s[i + 1 : i + 3], 16)
            if mode == _ENC_HOST and value < 0x80 and s[i : i + 3] != b"%25":
                raise URLError(f"invalid URL escape {_quote_bytes(s[i : i + 3])}")
            if (
                mode == _ENC_ZONE
                and s[i : i + 3] != b"%25"
                and value != 0x20
                and _should_escape(value, _ENC_HOST)
            ):
                raise URLError(f"invalid URL escape {_quote_bytes(s[i : i + 3])}")
            i += 3
        else:
            if mode in (_ENC_HOST, _ENC_ZONE) and c < 0x80 and _should_escape(c, mode):
                raise URLError(f"invalid character {_quote_bytes(bytes([c]))} in host name")
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
class URL:
    """A parsed URL, Go's ``url.URL`` (byte strings; ``user`` is (name, password or None))."""

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
            except URLError:
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
            raise URLError("missing ']' in host")
        colon_port = host[i + 1 :]
        if not _valid_optional_port(colon_port):
            raise URLError(f"invalid port {_quote_bytes(colon_port)} after host")
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
            raise URLError(f"invalid port {_quote_bytes(host[i:])} after host")
    return _url_unescape(host, _ENC_HOST)


_USERINFO_OK: Final = frozenset(b"-._:~!$&'()*+,;=%@")


def _parse_authority(authority: bytes) -> tuple[tuple[bytes, bytes | None] | None, bytes]:
    i = authority.rfind(b"@")
    host = _parse_host(authority if i < 0 else authority[i + 1 :])
    if i < 0:
        return None, host
    userinfo = authority[:i]
    if not all(chr(c).isascii() and (chr(c).isalnum() or c in _USERINFO_OK) for c in userinfo):
        raise URLError("net/url: invalid userinfo")
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
                raise URLError("missing protocol scheme")
            return raw[:i], raw[i + 1 :]
        return b"", raw
    return b"", raw


def _parse_url_part(raw: bytes) -> URL:
    if any(c < 0x20 or c == 0x7F for c in raw):
        raise URLError("net/url: invalid control character in URL")
    url = URL()
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
            raise URLError("first path segment in URL cannot contain colon")
    if rest.startswith(b"//") and (url.scheme or not rest.startswith(b"///")):
        authority, sep, tail = rest[2:].partition(b"/")
        rest = sep + tail
        url.user, url.host = _parse_authority(authority)
    url.path = _url_unescape(rest, _ENC_PATH)
    url.raw_path = b"" if _url_escape(url.path, _ENC_PATH) == rest else rest
    return url


def parse_url(text: str) -> URL:
    """Go's ``url.Parse``; raises :class:`URLError` with Go's ``parse <url>: <reason>`` text."""
    raw = text.encode("utf-8", "surrogatepass")
    head, hash_mark, fragment = raw.partition(b"#")
    try:
        url = _parse_url_part(head)
    except URLError as exc:
        raise URLError(f"parse {head.decode('utf-8', 'replace')}: {exc}") from None
    if hash_mark and fragment:
        try:
            url.fragment = _url_unescape(fragment, _ENC_FRAGMENT)
        except URLError as exc:
            raise URLError(f"parse {text}: {exc}") from None
    return url
