"""Keeping secrets out of logs, debug pages and answers: one way to show a URL or a secret value."""

from __future__ import annotations

import re
import urllib.parse
from typing import Final

__all__ = ["REDACTED", "redact_url"]

REDACTED: Final = "***"

_SCHEME: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")
_SECRET_PARAM: Final = re.compile(r"(?i)(pass|pwd|secret|token|key|auth|credential|signature|sig)")


def redact_url(url: str) -> str:
    """``url`` safe to show: the password of its user info and the values of query parameters whose
    names look secret (``token``, ``password``, ``api_key``, ``X-Amz-Signature`` ...) become ``***``.

    A user name without a password is kept (it names an account, not a secret). An authority
    may list several hosts (``redis+cluster://:pw@h1:7000,h2:7000``,
    ``postgresql://h1:5432,h2:5432/db``); each must have a numeric port or none. Text that does not
    parse as a URL keeps only its scheme, since it may be anything.

    >>> redact_url("https://bob:hunter2@lists.example/ips?token=abc&fmt=txt")
    'https://bob:***@lists.example/ips?token=***&fmt=txt'
    """
    try:
        parts = urllib.parse.urlsplit(url)
        hosts = parts.netloc.rpartition("@")[2]
        for host in hosts.split(","):
            _ = urllib.parse.urlsplit(f"//{host}").port  # raises ValueError for a malformed port
    except ValueError:
        scheme, sep, _rest = url.partition("://")
        return f"{scheme}://{REDACTED}" if sep and _SCHEME.fullmatch(scheme) else REDACTED
    netloc = parts.netloc
    if not netloc and "@" in url:
        return REDACTED  # user info outside an authority ("u:pw@host", "bad scheme://u:pw@h")
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, colon, _password = userinfo.partition(":")
        netloc = f"{user}:{REDACTED}@{hostport}" if colon else f"{user}@{hostport}"
    query = parts.query
    if query:
        fields = []
        for field in query.split("&"):
            name, eq, _value = field.partition("=")
            fields.append(f"{name}={REDACTED}" if eq and _SECRET_PARAM.search(name) else field)
        query = "&".join(fields)
    if not netloc and parts.scheme and url.startswith(f"{parts.scheme}://"):
        # An empty authority ("postgresql:///db", "sqlite:////abs/path") keeps its "//", which
        # urlunsplit would drop.
        tail = (f"?{query}" if query else "") + (f"#{parts.fragment}" if parts.fragment else "")
        return f"{parts.scheme}://{parts.path}{tail}"
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
