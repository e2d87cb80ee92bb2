"""A port of the parts of Go's ``golang.org/x/net/idna`` that Mixer's DNS name functions use.

:func:`to_unicode` is ``Profile.ToUnicode`` for Mixer's two profiles: validation (what
``dnsName()`` accepts: NFC, strict labels, DNS length rules, the bidi rule) and lookup (what
``dnsName_equal`` compares: UTS 46 mapping with STD3 rules). Errors are :class:`IDNAError` with
Go's messages (``idna: invalid label "..."``, ``idna: disallowed rune U+...``). The Unicode
tables come from the ``idna`` package; only Go's control flow and messages are reproduced here.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Final

import idna

from mixerd.lang.syntax import go_quote

__all__ = ["IDNAError", "to_unicode"]

_RTL_CLASSES: Final = frozenset({"R", "AL", "AN"})


class IDNAError(Exception):
    """A name x/net/idna rejects; the message is Go's."""


def _label_error(label: str) -> IDNAError:
    return IDNAError(f"idna: invalid label {go_quote(label)}")


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


def to_unicode(domain: str, *, lookup: bool) -> str:
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
            raise IDNAError(f"idna: disallowed rune {rune}") from None
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
            if decoded == "":  # "xn--": Go's validateLabel allows an empty label only for lookup
                if not lookup:
                    raise _label_error(decoded)
                labels[i] = decoded
                changed = True
                continue
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
