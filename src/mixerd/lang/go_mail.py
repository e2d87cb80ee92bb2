"""A port of Go's ``net/mail`` address parser (Go 1.13), as Mixer's ``email()`` uses it.

:func:`parse_address` is ``mail.ParseAddress``: one RFC 5322 address, with an optional display
name, returned as ``(display name, addr-spec)``; problems raise :class:`MailError` with Go's
messages (``mail: missing @ in addr-spec`` ...). Go's quirks are kept, such as its permissive
atoms in display names and its comment handling.
"""

from __future__ import annotations

from mixerd.lang.syntax import go_quote

__all__ = ["MailError", "parse_address"]


class MailError(Exception):
    """An address ``net/mail`` rejects; the message is Go's."""


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
            raise MailError("mail: invalid string")
        word, self.s = self.s[:i], self.s[i:]
        if not permissive:
            if word.startswith("."):
                raise MailError("mail: leading dot in atom")
            if ".." in word:
                raise MailError("mail: double dot in atom")
            if word.endswith("."):
                raise MailError("mail: trailing dot in atom")
        return word

    def quoted_string(self) -> str:
        out: list[str] = []
        i = 1
        escaped = False
        while True:
            if i >= len(self.s):
                raise MailError("mail: unclosed quoted-string")
            ch = self.s[i]
            if escaped:
                if not _is_vchar(ch) and ch not in " \t":
                    raise MailError(f"mail: bad character in quoted-string: {go_quote(ch)}")
                out.append(ch)
                escaped = False
            elif (_is_vchar(ch) and ch not in '"\\') or ch in " \t":
                out.append(ch)
            elif ch == '"':
                break
            elif ch == "\\":
                escaped = True
            else:
                raise MailError(f"mail: bad character in quoted-string: {go_quote(ch)}")
            i += 1
        self.s = self.s[i + 1 :]
        return "".join(out)

    def addr_spec(self) -> str:
        saved = self.s
        try:
            self.skip_space()
            if not self.s:
                raise MailError("mail: no addr-spec")
            if self.s[0] == '"':
                local = self.quoted_string()
                if local == "":
                    raise MailError("mail: empty quoted-string in addr-spec")
            else:
                local = self.atom(True, False)
            if not self.consume("@"):
                raise MailError("mail: missing @ in addr-spec")
            self.skip_space()
            if not self.s:
                raise MailError("mail: no domain in addr-spec")
            domain = self.atom(True, False)
            return f"{local}@{domain}"
        except MailError:
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
        error: MailError | None = None
        while True:
            self.skip_space()
            if not self.s:
                break
            try:
                words.append(self.quoted_string() if self.s[0] == '"' else self.atom(True, True))
            except MailError as exc:
                error = exc
                break
        if error is not None and not words:
            raise MailError(f"mail: missing word in phrase: {error}")
        return " ".join(words)

    def address(self) -> tuple[str, str]:
        self.skip_space()
        if not self.s:
            raise MailError("mail: no address")
        try:
            spec = self.addr_spec()
        except MailError:
            pass
        else:
            name = ""
            self.skip_space()
            if self.s[:1] == "(":
                self.s = self.s[1:]
                text, ok = self.comment()
                if not ok:
                    raise MailError("mail: misformatted parenthetical comment")
                name = " ".join(text.split())
            return name, spec
        name = ""
        if self.s[:1] != "<":
            name = self.phrase()
        self.skip_space()
        if not self.consume("<"):
            if all(_is_atext(ch, True, False) for ch in name):
                raise MailError("mail: missing '@' or angle-addr")
            raise MailError("mail: no angle-addr")
        spec = self.addr_spec()
        if not self.consume(">"):
            raise MailError("mail: unclosed angle-addr")
        return name, spec

    def single_address(self) -> tuple[str, str]:
        result = self.address()
        if not self.skip_cfws():
            raise MailError("mail: misformatted parenthetical comment")
        if self.s:
            raise MailError(f"mail: expected single address, got {go_quote(self.s)}")
        return result


def parse_address(text: str) -> tuple[str, str]:
    """Go's ``mail.ParseAddress``: (display name, address) or :class:`MailError`."""
    return _AddressParser(text).single_address()
