"""Tokenizer for the Go expression syntax that CEXL borrows.

Mixer parsed expressions with Go's ``go/parser.ParseExpr``, so what is a token, which literals are
well formed and which messages describe the mistakes all come from Go's scanner (Go 1.13):
identifiers of Unicode letters and digits, Go number literals (hex, octal, binary, ``_``
separators, floats, imaginary), interpreted strings with Go escapes, raw back-quoted strings, rune
literals, comments, and automatic semicolon insertion at a line end after an operand (which is why
``a\\n== b`` does not parse). The scanner stops at the first error: :class:`GoSyntaxError` carries
the message Go's scanner reports and the 0-based character offset it reports it at.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Final, NamedTuple

__all__ = [
    "KEYWORDS",
    "LITERAL_KINDS",
    "GoSyntaxError",
    "Lexer",
    "Token",
    "describe_token",
    "invalid_separator",
]

KEYWORDS: Final = frozenset(
    {
        "break",
        "case",
        "chan",
        "const",
        "continue",
        "default",
        "defer",
        "else",
        "fallthrough",
        "for",
        "func",
        "go",
        "goto",
        "if",
        "import",
        "interface",
        "map",
        "package",
        "range",
        "return",
        "select",
        "struct",
        "switch",
        "type",
        "var",
    }
)

LITERAL_KINDS: Final = frozenset({"IDENT", "INT", "FLOAT", "IMAG", "CHAR", "STRING"})
"""Token kinds whose text is shown as is in "found ..." messages."""

# Tokens after which a newline (or the end of input) ends the statement (Go's insertSemi).
_SEMI_AFTER: Final = frozenset(
    {"IDENT", "INT", "FLOAT", "IMAG", "CHAR", "STRING", "break", "continue", "fallthrough", "return"}
    | {")", "]", "}", "++", "--"}
)

# Operators, longest first within each leading character (maximal munch).
_OPERATORS: Final = {
    "+": ("+=", "++", "+"),
    "-": ("-=", "--", "-"),
    "*": ("*=", "*"),
    "/": ("/=", "/"),
    "%": ("%=", "%"),
    "^": ("^=", "^"),
    "<": ("<<=", "<-", "<<", "<=", "<"),
    ">": (">>=", ">>", ">=", ">"),
    "=": ("==", "="),
    "!": ("!=", "!"),
    "&": ("&^=", "&^", "&=", "&&", "&"),
    "|": ("|=", "||", "|"),
    ":": (":=", ":"),
    ".": ("...", "."),
    ",": (",",),
    ";": (";",),
    "(": ("(",),
    ")": (")",),
    "[": ("[",),
    "]": ("]",),
    "{": ("{",),
    "}": ("}",),
}

_SIMPLE_ESCAPES: Final = "abfnrtv\\"

# Fast paths for the common tokens (the general scanner handles everything else).
_SPACES: Final = re.compile(r"[ \t\r]*")
_ASCII_IDENT: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ASCII_IDENT_TAIL: Final = re.compile(r"[A-Za-z0-9_]+")
_SIMPLE_NUMBER: Final = re.compile(r"(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?![0-9A-Za-z_.])")
_SIMPLE_STRING: Final = re.compile(r'"[^"\\\n]*"')


class Token(NamedTuple):
    """One token: ``kind`` is a literal kind (``IDENT``, ``INT`` ...), a keyword, an operator,
    ``SEMICOLON`` or ``EOF``; ``text`` is the source text (``"\\n"`` for an inserted semicolon)."""

    kind: str
    text: str
    pos: int


class GoSyntaxError(Exception):
    """A Go scanner or parser error: Go's message and the character offset it points at."""

    def __init__(self, pos: int, msg: str) -> None:
        super().__init__(msg)
        self.pos = pos
        self.msg = msg


def describe_token(tok: Token) -> str:
    """How Go's parser names a token in "found ..." (``'=='``, ``newline``, ``'EOF'``, ``abc``)."""
    if tok.kind in LITERAL_KINDS:
        return tok.text
    if tok.kind == "SEMICOLON":
        return "newline" if tok.text == "\n" else "';'"
    return f"'{tok.kind}'"


def _is_letter(ch: str) -> bool:
    if ch < "\x80":
        return ch == "_" or "a" <= ch.lower() <= "z"
    return unicodedata.category(ch).startswith("L")


def _is_digit(ch: str) -> bool:
    if ch < "\x80":
        return "0" <= ch <= "9"
    return unicodedata.category(ch) == "Nd"


def _digit_val(ch: str) -> int:
    if "0" <= ch <= "9":
        return ord(ch) - 48
    if "a" <= ch.lower() <= "f":
        return ord(ch.lower()) - 87
    return 16


def _rune_repr(ch: str) -> str:
    """Go's ``%#U``: ``U+0040 '@'`` (the character only when printable)."""
    code = f"U+{ord(ch):04X}"
    return f"{code} '{ch}'" if ch.isprintable() else code


_LITNAME: Final = {
    "x": "hexadecimal literal",
    "o": "octal literal",
    "0": "octal literal",
    "b": "binary literal",
}


class Lexer:
    """Produces the tokens of ``src`` one at a time (:meth:`next`), raising :class:`GoSyntaxError`."""

    __slots__ = ("_insert_semi", "_n", "_pos", "src")

    def __init__(self, src: str) -> None:
        self.src = src
        self._n = len(src)
        self._pos = 1 if src.startswith("\ufeff") else 0
        self._insert_semi = False

    def _ch(self, offset: int = 0) -> str:
        i = self._pos + offset
        return self.src[i] if i < self._n else ""

    def next(self) -> Token:
        src = self.src
        while True:
            # Skip white space; a newline ends the "statement" after an operand.
            spaces = _SPACES.match(src, self._pos)
            pos = spaces.end() if spaces is not None else self._pos
            if pos < self._n and src[pos] == "\n":
                if self._insert_semi:
                    self._insert_semi = False
                    self._pos = pos + 1
                    return Token("SEMICOLON", "\n", pos)
                self._pos = pos + 1
                continue
            self._pos = start = pos
            if start >= self._n:
                if self._insert_semi:
                    self._insert_semi = False
                    return Token("SEMICOLON", "\n", start)
                return Token("EOF", "", start)
            ch = src[start]
            if ch == "/" and self._ch(1) in ("/", "*"):
                newline = self._skip_comment()
                if newline and self._insert_semi:
                    self._insert_semi = False
                    return Token("SEMICOLON", "\n", start)
                continue
            tok = self._scan(ch, start)
            self._insert_semi = tok.kind in _SEMI_AFTER
            return tok

    def _skip_comment(self) -> bool:
        """Skip a comment; report whether it contained (or ended at) a line end."""
        start = self._pos
        if self._ch(1) == "/":
            end = self.src.find("\n", start)
            self._pos = self._n if end < 0 else end  # the newline itself is scanned next
            return False
        end = self.src.find("*/", start + 2)
        if end < 0:
            raise GoSyntaxError(start, "comment not terminated")
        self._pos = end + 2
        return "\n" in self.src[start : self._pos]

    def _scan(self, ch: str, start: int) -> Token:
        src = self.src
        m = _ASCII_IDENT.match(src, start)
        if m is not None or _is_letter(ch):
            i = m.end() if m is not None else start + 1
            while True:  # non-ASCII letters and digits continue an identifier too
                tail = _ASCII_IDENT_TAIL.match(src, i)
                if tail is not None:
                    i = tail.end()
                if i < self._n and src[i] >= "\x80" and (_is_letter(src[i]) or _is_digit(src[i])):
                    i += 1
                    continue
                break
            self._pos = i
            word = src[start:i]
            return Token(word if word in KEYWORDS else "IDENT", word, start)
        if "0" <= ch <= "9" or (ch == "." and "0" <= self._ch(1) <= "9"):
            m = _SIMPLE_NUMBER.match(src, start)
            if m is not None:
                self._pos = m.end()
                text = m.group(0)
                return Token("FLOAT" if "." in text else "INT", text, start)
            return self._scan_number(start)
        if ch == '"':
            m = _SIMPLE_STRING.match(src, start)
            if m is not None:
                self._pos = m.end()
                return Token("STRING", m.group(0), start)
            return self._scan_string(start)
        if ch == "'":
            return self._scan_rune(start)
        if ch == "`":
            end = self.src.find("`", start + 1)
            if end < 0:
                raise GoSyntaxError(start, "raw string literal not terminated")
            self._pos = end + 1
            return Token("STRING", self.src[start : end + 1], start)
        for op in _OPERATORS.get(ch, ()):
            if src.startswith(op, start):
                self._pos = start + len(op)
                return Token(op, op, start)
        if ch == "\x00":
            raise GoSyntaxError(start, "illegal character NUL")
        if ch == "\ufeff":
            raise GoSyntaxError(start, "illegal byte order mark")
        raise GoSyntaxError(start, f"illegal character {_rune_repr(ch)}")

    # --- numbers (Go 1.13 scanNumber) ---------------------------------------------------------

    def _digits(self, base: int, invalid: list[int]) -> int:
        """Consume digits and ``_`` of ``base``; bit 1 = saw a digit, bit 2 = saw a separator."""
        digsep = 0
        if base <= 10:
            limit = chr(ord("0") + base)
            while True:
                ch = self._ch()
                if "0" <= ch <= "9" or ch == "_":
                    ds = 1
                    if ch == "_":
                        ds = 2
                    elif ch >= limit and not invalid:
                        invalid.append(self._pos)
                    digsep |= ds
                    self._pos += 1
                else:
                    return digsep
        while True:
            ch = self._ch()
            if ch and (_digit_val(ch) < 16 or ch == "_"):
                digsep |= 2 if ch == "_" else 1
                self._pos += 1
            else:
                return digsep

    def _scan_number(self, start: int) -> Token:
        kind = "INT"
        base, prefix, digsep = 10, "", 0
        invalid: list[int] = []
        if self._ch() != ".":
            if self._ch() == "0":
                self._pos += 1
                lower = self._ch().lower()
                if lower == "x":
                    self._pos += 1
                    base, prefix = 16, "x"
                elif lower == "o":
                    self._pos += 1
                    base, prefix = 8, "o"
                elif lower == "b":
                    self._pos += 1
                    base, prefix = 2, "b"
                else:
                    base, prefix, digsep = 8, "0", 1  # leading 0
            digsep |= self._digits(base, invalid)
        if self._ch() == ".":
            kind = "FLOAT"
            if prefix in ("o", "b"):
                raise GoSyntaxError(self._pos, f"invalid radix point in {_LITNAME[prefix]}")
            self._pos += 1
            digsep |= self._digits(base, invalid)
        if digsep & 1 == 0:
            raise GoSyntaxError(self._pos, f"{_LITNAME.get(prefix, 'decimal literal')} has no digits")
        exp = self._ch().lower()
        if exp in ("e", "p"):
            if exp == "e" and prefix not in ("", "0"):
                raise GoSyntaxError(self._pos, f"'{self._ch()}' exponent requires decimal mantissa")
            if exp == "p" and prefix != "x":
                raise GoSyntaxError(self._pos, f"'{self._ch()}' exponent requires hexadecimal mantissa")
            self._pos += 1
            kind = "FLOAT"
            if self._ch() in ("+", "-"):
                self._pos += 1
            ds = self._digits(10, [])
            digsep |= ds
            if ds & 1 == 0:
                raise GoSyntaxError(self._pos, "exponent has no digits")
        elif prefix == "x" and kind == "FLOAT":
            raise GoSyntaxError(self._pos, "hexadecimal mantissa requires a 'p' exponent")
        if self._ch() == "i":
            kind = "IMAG"
            self._pos += 1
        text = self.src[start : self._pos]
        if kind == "INT" and invalid:
            bad = self.src[invalid[0]]
            raise GoSyntaxError(
                invalid[0], f"invalid digit '{bad}' in {_LITNAME.get(prefix, 'decimal literal')}"
            )
        if digsep & 2:
            sep = invalid_separator(text)
            if sep >= 0:
                raise GoSyntaxError(start + sep, "'_' must separate successive digits")
        return Token(kind, text, start)

    # --- strings and runes --------------------------------------------------------------------

    def _scan_escape(self, quote: str) -> None:
        esc = self._pos  # the character after the backslash (where Go reports escape errors)
        ch = self._ch()
        if ch and (ch in _SIMPLE_ESCAPES or ch == quote):
            self._pos += 1
            return
        if "0" <= ch <= "7":
            n, base, top = 3, 8, 255
        elif ch in ("x", "u", "U"):
            self._pos += 1
            n, base, top = {"x": (2, 16, 255), "u": (4, 16, 0x10FFFF), "U": (8, 16, 0x10FFFF)}[ch]
        else:
            raise GoSyntaxError(
                esc, "escape sequence not terminated" if not ch else "unknown escape sequence"
            )
        value = 0
        while n > 0:
            ch = self._ch()
            d = _digit_val(ch) if ch else 16
            if d >= base:
                if not ch:
                    raise GoSyntaxError(self._pos, "escape sequence not terminated")
                raise GoSyntaxError(self._pos, f"illegal character {_rune_repr(ch)} in escape sequence")
            value = value * base + d
            self._pos += 1
            n -= 1
        if value > top or 0xD800 <= value < 0xE000:
            raise GoSyntaxError(esc, "escape sequence is invalid Unicode code point")

    def _scan_string(self, start: int) -> Token:
        self._pos = start + 1
        while True:
            ch = self._ch()
            if ch in ("\n", ""):
                raise GoSyntaxError(start, "string literal not terminated")
            self._pos += 1
            if ch == '"':
                break
            if ch == "\\":
                self._scan_escape('"')
        return Token("STRING", self.src[start : self._pos], start)

    def _scan_rune(self, start: int) -> Token:
        self._pos = start + 1
        n = 0
        while True:
            ch = self._ch()
            if ch in ("\n", ""):
                raise GoSyntaxError(start, "rune literal not terminated")
            self._pos += 1
            if ch == "'":
                break
            n += 1
            if ch == "\\":
                self._scan_escape("'")
        if n != 1:
            raise GoSyntaxError(start, "illegal rune literal")
        return Token("CHAR", self.src[start : self._pos], start)


def invalid_separator(text: str) -> int:
    """Index of the first ``_`` that does not separate two digits (Go's invalidSep), or -1."""
    x1 = " "  # prefix char, we only care if it's 'x'
    d = "."  # digit, one of '_', '0' (a digit), or '.' (anything else)
    i = 0
    if len(text) >= 2 and text[0] == "0":
        x1 = text[1].lower()
        if x1 in ("x", "o", "b"):
            d = "0"
            i = 2
    while i < len(text):
        p = d
        d = text[i]
        if d == "_":
            if p != "0":
                return i
        elif "0" <= d <= "9" or (x1 == "x" and _digit_val(d) < 16):
            d = "0"
        else:
            if p == "_":
                return i - 1
            d = "."
        i += 1
    if d == "_":
        return len(text) - 1
    return -1
