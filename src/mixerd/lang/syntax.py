"""The expression tree: constants, attribute variables and function calls.

This is Mixer's simplified AST (``mixer/pkg/lang/ast``): every operator is a function call named
after its Go token (``a == b`` is ``EQ($a, $b)``, ``a | b`` is ``OR($a, $b)``, ``m["k"]`` is
``INDEX($m, "k")``), a selector chain ``a.b.c`` is one variable, and ``x.f(y)`` is a call of ``f``
with *target* ``x``. ``str(node)`` is Mixer's postfix form, used verbatim in type errors
(``EQ(true, $a) arg 2 ($a) typeError got INT64, expected BOOL``).

Constants follow Mixer's ``newConstant``: integer literals are parsed in base 10 only, floats by
Go's ``ParseFloat``, and a string literal whose text is a Go duration (``"10ms"``, ``"0"``)
becomes a DURATION constant.
"""

from __future__ import annotations

import datetime as _dt
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

from mixerd.attribute import ValueType, parse_duration
from mixerd.lang.lexer import invalid_separator

__all__ = [
    "Call",
    "Constant",
    "ConstantError",
    "Node",
    "Variable",
    "extract_eq_matches",
    "go_quote",
    "go_unquote",
    "new_constant",
    "walk",
]


@dataclass(frozen=True, slots=True)
class Constant:
    """A literal. ``text`` is the literal as written (Mixer's ``StrValue``); ``value`` is typed."""

    text: str
    value: Any
    type: ValueType
    start: int = 0

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True, slots=True)
class Variable:
    """An attribute reference (``source.ip``)."""

    name: str
    start: int = 0

    def __str__(self) -> str:
        return "$" + self.name


@dataclass(frozen=True, slots=True)
class Call:
    """A function or operator application; ``target`` is the receiver of an instance call.

    ``start`` is where the whole call begins in the text, ``pos`` where its operator or function
    name is (what error carets point at).
    """

    name: str
    args: tuple[Node, ...]
    target: Node | None = None
    start: int = 0
    pos: int = 0

    def __str__(self) -> str:
        head = f"{self.target}:" if self.target is not None else ""
        return f"{head}{self.name}({', '.join(str(a) for a in self.args)})"


Node = Constant | Variable | Call


def walk(node: Node) -> Iterator[Node]:
    """Every node of the tree, parents first, targets before arguments."""
    yield node
    if isinstance(node, Call):
        if node.target is not None:
            yield from walk(node.target)
        for arg in node.args:
            yield from walk(arg)


# --- Go string literals ----------------------------------------------------------------------


class ConstantError(ValueError):
    """A literal is not a valid constant; the message is Go's (``invalid syntax`` ...)."""


_SYNTAX: Final = "invalid syntax"
_ESCAPES: Final = {"a": 7, "b": 8, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11, "\\": 92}
_HEX: Final = frozenset("0123456789abcdefABCDEF")


def go_unquote(text: str) -> str:
    """Go's ``strconv.Unquote``: the value of a quoted, back-quoted or single-quoted literal.

    Go strings are bytes; ``\\x``/octal escapes that do not form UTF-8 decode to U+FFFD here.
    Raises :class:`ConstantError` (``invalid syntax``) like Go.
    """
    n = len(text)
    if n < 2 or text[0] != text[-1]:
        raise ConstantError(_SYNTAX)
    quote, body = text[0], text[1:-1]
    if quote == "`":
        if "`" in body:
            raise ConstantError(_SYNTAX)
        return body.replace("\r", "")
    if quote not in ('"', "'") or "\n" in body:
        raise ConstantError(_SYNTAX)
    if "\\" not in body and quote not in body and (quote == '"' or len(body) <= 1):
        return body
    out = bytearray()
    i = 0
    while i < len(body):
        c = body[i]
        if c == quote:
            raise ConstantError(_SYNTAX)
        if c != "\\":
            out += c.encode("utf-8", "replace")
            i += 1
        else:
            if i + 1 >= len(body):
                raise ConstantError(_SYNTAX)
            e = body[i + 1]
            i += 2
            if e in _ESCAPES:
                out.append(_ESCAPES[e])
            elif e in ("'", '"'):
                if e != quote:
                    raise ConstantError(_SYNTAX)
                out.append(ord(e))
            elif e in ("x", "u", "U"):
                width = {"x": 2, "u": 4, "U": 8}[e]
                digits = body[i : i + width]
                if len(digits) < width or not set(digits) <= _HEX:
                    raise ConstantError(_SYNTAX)
                i += width
                value = int(digits, 16)
                if e == "x":
                    out.append(value)
                else:
                    if value > 0x10FFFF:
                        raise ConstantError(_SYNTAX)
                    out += _encode_rune(value)
            elif "0" <= e <= "7":
                digits = e + body[i : i + 2]
                if len(digits) < 3 or not all("0" <= d <= "7" for d in digits):
                    raise ConstantError(_SYNTAX)
                i += 2
                value = int(digits, 8)
                if value > 255:
                    raise ConstantError(_SYNTAX)
                out.append(value)
            else:
                raise ConstantError(_SYNTAX)
        if quote == "'" and i < len(body):
            raise ConstantError(_SYNTAX)
    return out.decode("utf-8", "replace")


def _encode_rune(value: int) -> bytes:
    if 0xD800 <= value < 0xE000:
        value = 0xFFFD
    return chr(value).encode("utf-8")


def go_quote(text: str) -> str:
    """Go's ``strconv.Quote``: a double-quoted literal with Go escapes (used in messages)."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ch.isprintable():
            out.append(ch)
        elif code in (7, 8, 12, 10, 13, 9, 11):
            out.append("\\" + "abfnrtv"[(7, 8, 12, 10, 13, 9, 11).index(code)])
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


# --- numbers ---------------------------------------------------------------------------------

_INT64_MAX: Final = (1 << 63) - 1
_DEC_FLOAT: Final = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_HEX_FLOAT: Final = re.compile(r"[+-]?0[xX](?:[0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)[pP][+-]?[0-9]+")
_SPECIAL_FLOAT: Final = re.compile(r"[+-]?(?:inf|infinity|nan)", re.IGNORECASE)


def _num_error(func: str, text: str, what: str) -> ConstantError:
    return ConstantError(f"strconv.{func}: parsing {go_quote(text)}: {what}")


def parse_go_int(text: str) -> int:
    """Go's ``strconv.ParseInt(text, 10, 64)`` (what Mixer applies to integer literals)."""
    body = text[1:] if text[:1] in ("+", "-") else text
    if not body or not (body.isascii() and body.isdigit()):
        raise _num_error("ParseInt", text, _SYNTAX)
    digits = body.lstrip("0") or "0"
    if len(digits) > 19:  # beyond int64 (and before int() meets Python's 4300-digit limit)
        raise _num_error("ParseInt", text, "value out of range")
    value = -int(digits) if text[:1] == "-" else int(digits)
    if not -_INT64_MAX - 1 <= value <= _INT64_MAX:
        raise _num_error("ParseInt", text, "value out of range")
    return value


def parse_go_float(text: str) -> float:
    """Go's ``strconv.ParseFloat(text, 64)``."""
    if _SPECIAL_FLOAT.fullmatch(text):
        return float(text.lower().replace("infinity", "inf"))
    plain = text
    if "_" in text:
        if invalid_separator(text.lstrip("+-")) >= 0:
            raise _num_error("ParseFloat", text, _SYNTAX)
        plain = text.replace("_", "")
    if _DEC_FLOAT.fullmatch(plain):
        value = float(plain)
    elif _HEX_FLOAT.fullmatch(plain):
        try:
            value = float.fromhex(plain)
        except OverflowError:
            raise _num_error("ParseFloat", text, "value out of range") from None
    else:
        raise _num_error("ParseFloat", text, _SYNTAX)
    if math.isinf(value):
        raise _num_error("ParseFloat", text, "value out of range")
    return value


_MAX_DURATION: Final = _dt.timedelta(microseconds=_INT64_MAX // 1000)


def new_constant(text: str, kind: ValueType, start: int = 0) -> Constant:
    """Mixer's ``newConstant``: type a literal as written in the source.

    ``kind`` is the literal's token type (INT64 for integer tokens, DOUBLE for floats, STRING for
    strings and runes, VALUE_TYPE_UNSPECIFIED for imaginary literals, which then fail like Go).
    Raises :class:`ConstantError` with Go's message.
    """
    if kind is ValueType.INT64:
        return Constant(text, parse_go_int(text), kind, start)
    if kind is ValueType.DOUBLE:
        return Constant(text, parse_go_float(text), kind, start)
    unquoted = go_unquote(text)
    try:
        duration = parse_duration(unquoted)
    except (ValueError, OverflowError):  # "99999999999h" overflows timedelta: not a Go duration either
        return Constant(text, unquoted, ValueType.STRING, start)
    if abs(duration) > _MAX_DURATION:  # Go's time.ParseDuration rejects what overflows int64 ns
        return Constant(text, unquoted, ValueType.STRING, start)
    return Constant(text, duration, ValueType.DURATION, start)


# --- analysis --------------------------------------------------------------------------------


def extract_eq_matches(node: Node) -> dict[str, Any]:
    """Mixer's ``ExtractEQMatches``: ``attribute == constant`` tests that must all hold.

    Walks the top-level chain of ``&&`` and records every ``$attr == const`` (or ``const ==
    $attr``); if any recorded comparison is false, the whole expression is false.
    """
    out: dict[str, Any] = {}
    _extract(node, out)
    return out


def _extract(node: Node, out: dict[str, Any]) -> None:
    if not isinstance(node, Call):
        return
    if node.name == "EQ" and len(node.args) >= 2:
        a, b = node.args[0], node.args[1]
        if isinstance(a, Variable) and isinstance(b, Constant):
            out[a.name] = b.value
        elif isinstance(a, Constant) and isinstance(b, Variable):
            out[b.name] = a.value
    if node.name == "LAND":
        for arg in node.args:
            _extract(arg, out)
