"""The CEL dialect (annotation ``policy.istio.io/lang: CEL`` or ``COMPAT``): parse and type-check.

CEL text is parsed here and *lowered* into the expression tree CEXL uses
(:mod:`~mixerd.lang.syntax`: constants, attribute variables, calls), with a static type per node,
so both dialects go through the one compiler to Python source (:mod:`~mixerd.lang.compiler`).
Where CEL means the same as CEXL the tree uses CEXL's nodes (``EQ``, ``ADD``, ``conditional``,
``OR`` for ``pick``, the extern functions); where it differs it uses nodes of its own:

* Attributes are fields of nested messages (``context.reporter.kind`` is field ``kind`` of the
  message ``.context.reporter``), as Mixer modelled them. An absent attribute reads as its type's
  zero value (``""``, ``0``, ``false``, an empty IP address, the Unix epoch, an empty string
  map): ``OR($attr, zero)``. ``has(a.b)`` tests presence (``HAS``); ``has(m.k)`` and ``k in m``
  test a map key (``HASKEY``).
* ``m[k]`` and ``m.k`` on a map fail with ``no such key: 'k'`` (``KEY``); ``l[i]`` indexes a list
  (``ELEM``); ``[...]`` and ``{...}`` build lists and maps (``LIST``, ``MAP``).
* ``&&`` and ``||`` absorb errors (``LAND_ABSORB``, ``LOR_ABSORB``): ``(1/0 == 0) || true`` is
  true. ``-``, ``*``, ``/``, ``%`` (``SUB MUL DIV MOD``; integer division by zero fails with
  ``divide by zero``), ``!`` and unary ``-`` (``NOT``, ``NEG``); ``size()`` counts characters
  (``LEN``); ``type()`` gives a type value (``TYPE``).
* Mixer's string maps support neither ``==``, ``size()`` nor ``type()``: these compile and fail
  when evaluated, with Mixer's messages (``FAIL``).
* Mixer's macros: ``conditional(c, a, b)`` is ``c ? a : b``; ``pick(a, b, ..., z)`` is the first
  of ``a, b, ...`` that is present, else ``z`` (CEXL's ``a | b | z``). Only a selection
  (``source.name``) or a map entry can be absent: a bare identifier (an attribute without a dot,
  ``as``) cannot be tested with ``has()``, so ``pick(as, "x")`` is ``as`` (``""`` when absent),
  as in Mixer.
* Functions: CEL's ``size``, ``type``, ``duration``, ``timestamp``, ``int``, ``double``,
  ``string``, ``s.startsWith(p)``, ``s.endsWith(p)``, ``s.matches(re)``, ``s.contains(t)`` and
  Mixer's ``ip``, ``dnsName``, ``email``, ``uri``, ``match``, ``toLower``, ``reverse`` (also
  ``s.reverse()``), ``emptyStringMap``. ``google.protobuf.*Value{value: x}`` builds a wrapper.
  Comprehension macros (``all``, ``exists``, ``exists_one``, ``map``, ``filter``) and other
  message types are refused with a message saying so.

COMPAT (Mixer's "legacy syntax CEL") is CEXL's syntax with these semantics: the text is parsed by
the CEXL parser and its tree rewritten into the CEL parse tree (``a | b`` becomes ``pick(a, b)``,
a string literal that reads as a duration becomes ``duration("...")``, and ``- * / %``, which
CEXL parses but cannot compile, are CEL's arithmetic) before type-checking.

Errors are :class:`~mixerd.lang.errors.CompileError` with CEL's wording where the conformance data
gives it (``undefined field 'report'``, ``found no matching overload for '_==_' applied to
'(string, int)'``) and the 0-based offset of the offending part.
"""

from __future__ import annotations

import datetime as _dt
import functools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

from mixerd.attribute import URI, DNSName, EmailAddress, IPAddress, ValueType, parse_duration
from mixerd.lang import functions as fns
from mixerd.lang.errors import CompileError, EvaluationError
from mixerd.lang.functions import FUNCTIONS, Function
from mixerd.lang.parser import parse as parse_cexl
from mixerd.lang.syntax import Call, Constant, Node, Variable

__all__ = [
    "CEL_FUNCTIONS",
    "CelType",
    "TypeValue",
    "lower",
    "parse_cel",
]

_V = ValueType
_U: Final = ValueType.VALUE_TYPE_UNSPECIFIED


# --- types -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CelType:
    """A CEL type as the checker sees it; ``str()`` is CEL's spelling (used in messages).

    ``kind`` is ``prim`` (int, string, ...), ``list``, ``map``, ``message`` (IP addresses ...),
    ``wrapper`` (``google.protobuf.Int64Value``; ``params[0]`` is the wrapped type),
    ``namespace`` (an attribute name prefix such as ``.context.reporter``), ``type`` or ``dyn``.
    ``stringmap`` marks Mixer's string-map attributes (their own value type at run time).
    """

    name: str
    kind: str = "prim"
    params: tuple[CelType, ...] = ()
    value_type: ValueType = _U
    stringmap: bool = False

    def __str__(self) -> str:
        return self.name

    def same(self, other: CelType) -> bool:
        """Whether values of the two types compare (dyn matches anything)."""
        a, b = _unwrap(self), _unwrap(other)
        if a.kind == "dyn" or b.kind == "dyn":
            return True
        if a.kind != b.kind or a.name.split("(")[0] != b.name.split("(")[0]:
            return False
        if a.kind in ("list", "map"):
            return all(x.same(y) for x, y in zip(a.params, b.params, strict=True))
        return a.name == b.name


def _unwrap(t: CelType) -> CelType:
    return t.params[0] if t.kind == "wrapper" else t


INT: Final = CelType("int", value_type=_V.INT64)
UINT: Final = CelType("uint")
DOUBLE: Final = CelType("double", value_type=_V.DOUBLE)
BOOL: Final = CelType("bool", value_type=_V.BOOL)
STRING: Final = CelType("string", value_type=_V.STRING)
BYTES: Final = CelType("bytes")
NULL: Final = CelType("null_type")
DYN: Final = CelType("dyn", "dyn")
TYPE: Final = CelType("type", "type")
TIMESTAMP: Final = CelType("google.protobuf.Timestamp", "message", value_type=_V.TIMESTAMP)
DURATION: Final = CelType("google.protobuf.Duration", "message", value_type=_V.DURATION)
IP: Final = CelType("istio.policy.v1beta1.IPAddress", "message", value_type=_V.IP_ADDRESS)
DNS: Final = CelType("istio.policy.v1beta1.DNSName", "message", value_type=_V.DNS_NAME)
EMAIL: Final = CelType("istio.policy.v1beta1.EmailAddress", "message", value_type=_V.EMAIL_ADDRESS)
URI_T: Final = CelType("istio.policy.v1beta1.Uri", "message", value_type=_V.URI)


def _map_type(key: CelType, value: CelType, *, stringmap: bool = False) -> CelType:
    stringish = ("string", "dyn")  # dyn: the empty map literal
    vt = _V.STRING_MAP if key.name in stringish and value.name in stringish else _U
    return CelType(f"map({key}, {value})", "map", (key, value), vt, stringmap)


def _list_type(elem: CelType) -> CelType:
    return CelType(f"list({elem})", "list", (elem,))


STRING_MAP: Final = _map_type(STRING, STRING, stringmap=True)

_ATTRIBUTE_TYPES: Final = {
    _V.STRING: STRING,
    _V.INT64: INT,
    _V.DOUBLE: DOUBLE,
    _V.BOOL: BOOL,
    _V.TIMESTAMP: TIMESTAMP,
    _V.DURATION: DURATION,
    _V.IP_ADDRESS: IP,
    _V.DNS_NAME: DNS,
    _V.EMAIL_ADDRESS: EMAIL,
    _V.URI: URI_T,
    _V.STRING_MAP: STRING_MAP,
}

_EPOCH: Final = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)
_ZERO: Final[dict[ValueType, Any]] = {
    _V.STRING: "",
    _V.INT64: 0,
    _V.DOUBLE: 0.0,
    _V.BOOL: False,
    _V.TIMESTAMP: _EPOCH,
    _V.DURATION: _dt.timedelta(0),
    _V.IP_ADDRESS: IPAddress(b""),
    _V.DNS_NAME: DNSName(""),
    _V.EMAIL_ADDRESS: EmailAddress(""),
    _V.URI: URI(""),
    _V.STRING_MAP: fns.EMPTY_STRING_MAP,
}
"""What an absent attribute reads as (Mixer's CEL attribute provider: the type's zero value)."""


@dataclass(frozen=True, slots=True)
class TypeValue:
    """A CEL type used as a value (``type(x)``, ``string``)."""

    name: str

    def __str__(self) -> str:
        return self.name


_TYPE_NAMES: Final = {
    "int": INT,
    "uint": UINT,
    "double": DOUBLE,
    "bool": BOOL,
    "string": STRING,
    "bytes": BYTES,
    "null_type": NULL,
    "type": TYPE,
    "list": CelType("list", "list", (DYN,)),
    "map": CelType("map", "map", (DYN, DYN)),
}

_WRAPPERS: Final = {
    "google.protobuf.BoolValue": BOOL,
    "google.protobuf.BytesValue": BYTES,
    "google.protobuf.DoubleValue": DOUBLE,
    "google.protobuf.FloatValue": DOUBLE,
    "google.protobuf.Int32Value": INT,
    "google.protobuf.Int64Value": INT,
    "google.protobuf.StringValue": STRING,
    "google.protobuf.UInt32Value": UINT,
    "google.protobuf.UInt64Value": UINT,
}


def _type_value_of(t: CelType) -> TypeValue:
    t = _unwrap(t)
    if t.kind in ("list", "map"):
        return TypeValue(t.name.split("(")[0])
    return TypeValue(t.name)


# --- lexer -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Tok:
    kind: str  # INT UINT DOUBLE STRING BYTES IDENT EOF, a reserved word, or the operator itself
    text: str
    pos: int
    value: Any = None


_OPS: Final = frozenset(
    {
        "==",
        "!=",
        "<=",
        ">=",
        "&&",
        "||",
        "<",
        ">",
        "!",
        "+",
        "-",
        "*",
        "/",
        "%",
        "?",
        ":",
        ".",
        ",",
        "(",
        ")",
        "[",
        "]",
        "{",
        "}",
    }
)
_RESERVED: Final = frozenset({"true", "false", "null", "in"})
_IDENT: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ESC: Final = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
_ESC.update({"\\": "\\", "'": "'", '"': '"', "`": "`", "?": "?"})


def _error(text: str, pos: int, message: str) -> CompileError:
    return CompileError(text, message, pos)


def _lex(text: str) -> list[_Tok]:
    out: list[_Tok] = []
    i, n = 0, len(text)
    while True:
        while i < n and (text[i] in " \t\r\n\f" or text.startswith("//", i)):
            if text[i] == "/":
                end = text.find("\n", i)
                i = n if end < 0 else end + 1
            else:
                i += 1
        if i >= n:
            out.append(_Tok("EOF", "", n))
            return out
        c = text[i]
        start = i
        if c.isascii() and (c.isalpha() or c == "_"):
            m = _IDENT.match(text, i)
            assert m is not None
            j = m.end()
            word = m.group()
            if j < n and text[j] in "\"'" and word.lower() in ("r", "b", "rb", "br"):
                tok, i = _lex_string(text, j, raw="r" in word.lower(), as_bytes="b" in word.lower(), start=i)
                out.append(tok)
                continue
            out.append(_Tok(word if word in _RESERVED else "IDENT", word, start))
            i = j
            continue
        if c.isdigit() or (c == "." and i + 1 < n and text[i + 1].isdigit()):
            tok, i = _lex_number(text, i)
            out.append(tok)
            continue
        if c in "\"'":
            tok, i = _lex_string(text, i, raw=False, as_bytes=False, start=i)
            out.append(tok)
            continue
        op = text[i : i + 2]
        if op not in _OPS:
            op = c
            if op not in _OPS:
                raise _error(text, i, f"Syntax error: token recognition error at: '{c}'")
        out.append(_Tok(op, op, i))
        i += len(op)


def _lex_number(text: str, i: int) -> tuple[_Tok, int]:
    n = len(text)
    start = i
    if text.startswith(("0x", "0X"), i):
        j = i + 2
        while j < n and text[j] in "0123456789abcdefABCDEF":
            j += 1
        digits = text[i + 2 : j]
        if not digits:
            raise _error(text, i, "Syntax error: malformed hexadecimal literal")
        value = int(digits, 16)
        if j < n and text[j] in "uU":
            return _Tok("UINT", text[start : j + 1], start, value), j + 1
        return _Tok("INT", text[start:j], start, value), j
    j = i
    while j < n and text[j].isdigit():
        j += 1
    is_float = False
    if j < n and text[j] == "." and j + 1 < n and text[j + 1].isdigit():
        is_float = True
        j += 1
        while j < n and text[j].isdigit():
            j += 1
    if j < n and text[j] in "eE":
        k = j + 1
        if k < n and text[k] in "+-":
            k += 1
        if k < n and text[k].isdigit():
            is_float = True
            j = k
            while j < n and text[j].isdigit():
                j += 1
    literal = text[start:j]
    if is_float:
        return _Tok("DOUBLE", literal, start, float(literal)), j
    if j < n and text[j] in "uU":
        return _Tok("UINT", text[start : j + 1], start, int(literal)), j + 1
    return _Tok("INT", literal, start, int(literal)), j


def _lex_string(text: str, i: int, *, raw: bool, as_bytes: bool, start: int) -> tuple[_Tok, int]:
    quote = text[i]
    triple = text.startswith(quote * 3, i)
    delim = quote * 3 if triple else quote
    j = i + len(delim)
    n = len(text)
    buf: list[str] = []
    while True:
        if j >= n or (not triple and text[j] == "\n"):
            raise _error(text, start, "Syntax error: unterminated string literal")
        if text.startswith(delim, j):
            j += len(delim)
            break
        c = text[j]
        if c == "\\" and not raw:
            j, piece = _escape(text, j, start)
            buf.append(piece)
            continue
        if c == "\\" and raw and j + 1 < n and text[j + 1] == quote:
            buf.append("\\" + quote)  # a raw string keeps the backslash but cannot end there
            j += 2
            continue
        buf.append(c)
        j += 1
    body = "".join(buf)
    if as_bytes:
        return _Tok("BYTES", text[start:j], start, body.encode("utf-8", "surrogateescape")), j
    return _Tok("STRING", text[start:j], start, body), j


def _escape(text: str, j: int, start: int) -> tuple[int, str]:
    if j + 1 >= len(text):
        raise _error(text, start, "Syntax error: unterminated string literal")
    e = text[j + 1]
    if e in _ESC:
        return j + 2, _ESC[e]
    width = {"x": 2, "X": 2, "u": 4, "U": 8}.get(e)
    if width is not None:
        digits = text[j + 2 : j + 2 + width]
        if len(digits) < width or any(d not in "0123456789abcdefABCDEF" for d in digits):
            raise _error(text, j, f"Syntax error: invalid escape sequence '\\{e}{digits}'")
        code = int(digits, 16)
        if code > 0x10FFFF or 0xD800 <= code < 0xE000:
            raise _error(text, j, f"Syntax error: invalid code point in escape '\\{e}{digits}'")
        return j + 2 + width, chr(code)
    if "0" <= e <= "3":
        digits = text[j + 1 : j + 4]
        if len(digits) == 3 and all("0" <= d <= "7" for d in digits):
            return j + 4, chr(int(digits, 8))
    raise _error(text, j, f"Syntax error: invalid escape sequence '\\{e}'")


# --- parse tree ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PLit:
    value: Any
    type: CelType
    text: str
    pos: int


@dataclass(frozen=True, slots=True)
class PIdent:
    name: str
    pos: int


@dataclass(frozen=True, slots=True)
class PSelect:
    operand: PNode
    field: str
    pos: int
    test_only: bool = False  # has(operand.field)


@dataclass(frozen=True, slots=True)
class PCall:
    """A call; operators use CEL's function names (``_==_``, ``_[_]``, ``!_``, ``@in`` ...)."""

    function: str
    args: tuple[PNode, ...]
    pos: int
    target: PNode | None = None


@dataclass(frozen=True, slots=True)
class PList:
    items: tuple[PNode, ...]
    pos: int


@dataclass(frozen=True, slots=True)
class PMap:
    entries: tuple[tuple[PNode, PNode], ...]
    pos: int


@dataclass(frozen=True, slots=True)
class PMessage:
    type_name: str
    fields: tuple[tuple[str, PNode], ...]
    pos: int


PNode = PLit | PIdent | PSelect | PCall | PList | PMap | PMessage

_RELATIONS: Final = {
    "==": "_==_",
    "!=": "_!=_",
    "<": "_<_",
    "<=": "_<=_",
    ">": "_>_",
    ">=": "_>=_",
    "in": "@in",
}
_COMPREHENSIONS: Final = frozenset({"all", "exists", "exists_one", "map", "filter"})


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = _lex(text)
        self.i = 0

    def peek(self) -> _Tok:
        return self.toks[self.i]

    def take(self) -> _Tok:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def expect(self, kind: str) -> _Tok:
        tok = self.peek()
        if tok.kind != kind:
            raise self.unexpected(tok, f"'{kind}'")
        return self.take()

    def unexpected(self, tok: _Tok, wanted: str) -> CompileError:
        found = "end of input" if tok.kind == "EOF" else f"'{tok.text}'"
        return _error(self.text, tok.pos, f"Syntax error: expected {wanted}, found {found}")

    def parse(self) -> PNode:
        if self.peek().kind == "EOF":
            raise _error(self.text, 0, "Syntax error: empty expression")
        node = self.expr()
        tok = self.peek()
        if tok.kind != "EOF":
            raise self.unexpected(tok, "an operator or the end of the expression")
        return node

    def expr(self) -> PNode:
        cond = self.binary(0)
        if self.peek().kind == "?":
            pos = self.take().pos
            then = self.binary(0)
            self.expect(":")
            other = self.expr()
            return PCall("_?_:_", (cond, then, other), pos)
        return cond

    _LEVELS: Final = (("||",), ("&&",), tuple(_RELATIONS), ("+", "-"), ("*", "/", "%"))

    def binary(self, level: int) -> PNode:
        if level == len(self._LEVELS):
            return self.unary()
        ops = self._LEVELS[level]
        left = self.binary(level + 1)
        while self.peek().kind in ops:
            tok = self.take()
            right = self.binary(level + 1)
            name = _RELATIONS.get(tok.kind) or f"_{tok.kind}_"
            left = PCall(name, (left, right), tok.pos)
        return left

    def unary(self) -> PNode:
        tok = self.peek()
        if tok.kind == "!":
            self.take()
            return PCall("!_", (self.unary(),), tok.pos)
        if tok.kind == "-":
            self.take()
            nxt = self.peek()
            if nxt.kind in ("INT", "DOUBLE") and nxt.pos == tok.pos + 1:
                lit = self.take()
                value = -lit.value
                if lit.kind == "INT" and value < -(1 << 63):
                    raise _error(self.text, tok.pos, f"integer literal out of range: -{lit.text}")
                return self.member(PLit(value, INT if lit.kind == "INT" else DOUBLE, "-" + lit.text, tok.pos))
            return PCall("-_", (self.unary(),), tok.pos)
        return self.member(self.primary())

    def args(self, close: str) -> tuple[PNode, ...]:
        items: list[PNode] = []
        while self.peek().kind != close:
            items.append(self.expr())
            if self.peek().kind != ",":
                break
            self.take()
        self.expect(close)
        return tuple(items)

    def member(self, node: PNode) -> PNode:
        while True:
            tok = self.peek()
            if tok.kind == ".":
                self.take()
                name = self.expect("IDENT")
                if self.peek().kind == "(":
                    self.take()
                    args = self.args(")")
                    if name.text in _COMPREHENSIONS:
                        raise _error(
                            self.text,
                            name.pos,
                            f"the '{name.text}' macro is not supported by mixerd's CEL "
                            "(comprehensions over lists and maps are not implemented)",
                        )
                    node = PCall(name.text, args, name.pos, target=node)
                else:
                    node = PSelect(node, name.text, name.pos)
            elif tok.kind == "[":
                self.take()
                index = self.expr()
                self.expect("]")
                node = PCall("_[_]", (node, index), tok.pos)
            elif tok.kind == "{" and _qualified(node) is not None:
                self.take()
                node = PMessage(_qualified(node) or "", self.field_inits(), tok.pos)
            else:
                return node

    def field_inits(self) -> tuple[tuple[str, PNode], ...]:
        out: list[tuple[str, PNode]] = []
        while self.peek().kind != "}":
            name = self.expect("IDENT").text
            self.expect(":")
            out.append((name, self.expr()))
            if self.peek().kind != ",":
                break
            self.take()
        self.expect("}")
        return tuple(out)

    def primary(self) -> PNode:
        tok = self.take()
        kind = tok.kind
        if kind == "." and self.peek().kind == "IDENT":
            tok = self.take()
            kind = "IDENT"
        if kind == "IDENT":
            if self.peek().kind == "(":
                self.take()
                if tok.text == "has":
                    return self.has(tok)
                return PCall(tok.text, self.args(")"), tok.pos)
            return PIdent(tok.text, tok.pos)
        if kind == "(":
            inner = self.expr()
            self.expect(")")
            return inner
        if kind == "[":
            return PList(self.args("]"), tok.pos)
        if kind == "{":
            entries: list[tuple[PNode, PNode]] = []
            while self.peek().kind != "}":
                key = self.expr()
                self.expect(":")
                entries.append((key, self.expr()))
                if self.peek().kind != ",":
                    break
                self.take()
            self.expect("}")
            return PMap(tuple(entries), tok.pos)
        literal = _LITERALS.get(kind)
        if literal is not None:
            if kind == "INT" and tok.value >= 1 << 63:
                raise _error(self.text, tok.pos, f"integer literal out of range: {tok.text}")
            value = tok.value if kind in ("INT", "UINT", "DOUBLE", "STRING", "BYTES") else literal[1]
            return PLit(value, literal[0], tok.text, tok.pos)
        raise self.unexpected(tok, "an operand")

    def has(self, tok: _Tok) -> PNode:
        args = self.args(")")
        if len(args) != 1 or not isinstance(args[0], PSelect):
            raise _error(self.text, tok.pos, "invalid argument to has() macro (expected has(x.field))")
        sel = args[0]
        return PSelect(sel.operand, sel.field, sel.pos, test_only=True)


_LITERALS: Final[dict[str, tuple[CelType, Any]]] = {
    "INT": (INT, None),
    "UINT": (UINT, None),
    "DOUBLE": (DOUBLE, None),
    "STRING": (STRING, None),
    "BYTES": (BYTES, None),
    "true": (BOOL, True),
    "false": (BOOL, False),
    "null": (NULL, None),
}


def _qualified(node: PNode) -> str | None:
    """``a.b.c`` for a chain of plain selections on an identifier, else None."""
    parts: list[str] = []
    while isinstance(node, PSelect) and not node.test_only:
        parts.append(node.field)
        node = node.operand
    if not isinstance(node, PIdent):
        return None
    parts.append(node.name)
    return ".".join(reversed(parts))


def parse_cel(text: str) -> PNode:
    """The CEL parse tree of ``text``; raises :class:`CompileError` (``Syntax error: ...``)."""
    return _Parser(text).parse()


# --- COMPAT: CEXL syntax rewritten into the CEL parse tree -----------------------------------

_CEXL_OPERATORS: Final = {
    "EQ": "_==_",
    "NEQ": "_!=_",
    "LT": "_<_",
    "LEQ": "_<=_",
    "GT": "_>_",
    "GEQ": "_>=_",
    "LAND": "_&&_",
    "LOR": "_||_",
    "ADD": "_+_",
    "SUB": "_-_",
    "MUL": "_*_",
    "QUO": "_/_",
    "REM": "_%_",
    "INDEX": "_[_]",
    "NOT": "!_",
}


def parse_compat(text: str) -> PNode:
    """CEXL text (Mixer's "legacy syntax CEL") as a CEL parse tree."""
    return _from_cexl(parse_cexl(text))


def _from_cexl(node: Node) -> PNode:
    if isinstance(node, Constant):
        vt = node.type
        if vt is _V.DURATION:
            literal = PLit(node.text[1:-1], STRING, node.text, node.start)
            return PCall("duration", (literal,), node.start)
        kind = {_V.INT64: INT, _V.DOUBLE: DOUBLE, _V.BOOL: BOOL}.get(vt, STRING)
        return PLit(node.value, kind, node.text, node.start)
    if isinstance(node, Variable):
        parts = node.name.split(".")
        out: PNode = PIdent(parts[0], node.start)
        for part in parts[1:]:
            out = PSelect(out, part, node.start)
        return out
    args = tuple(_from_cexl(a) for a in node.args)
    if node.name == "OR":
        flat: list[PNode] = []
        for arg in args:
            if isinstance(arg, PCall) and arg.function == "pick" and arg.target is None:
                flat.extend(arg.args)
            else:
                flat.append(arg)
        return PCall("pick", tuple(flat), node.pos)
    name = _CEXL_OPERATORS.get(node.name, node.name)
    if name == "_-_" and len(args) == 1:
        name = "-_"
    target = _from_cexl(node.target) if node.target is not None else None
    return PCall(name, args, node.pos, target=target)


# --- functions -------------------------------------------------------------------------------


def _reverse(text: str) -> str:
    return text[::-1]


def _contains(text: str, part: str) -> bool:
    return part in text


def _duration(text: str) -> _dt.timedelta:
    try:
        return parse_duration(text)
    except (ValueError, OverflowError):
        raise EvaluationError(f"could not convert '{text}' to DURATION: invalid duration") from None


def _to_int(value: Any) -> int:
    try:
        if isinstance(value, float):
            if not math.isfinite(value) or not -(2.0**63) <= value < 2.0**63:
                raise ValueError(value)
            return int(value)
        result = int(value, 10) if isinstance(value, str) else int(value)
    except (ValueError, OverflowError):
        raise EvaluationError(f"cannot convert {value!r} to int") from None
    if not -(1 << 63) <= result < 1 << 63:
        raise EvaluationError(f"cannot convert {value!r} to int: out of range")
    return result


def _to_double(value: Any) -> float:
    try:
        return float(value)
    except ValueError:
        raise EvaluationError(f"cannot convert {value!r} to double") from None


def _to_string(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise EvaluationError("cannot convert bytes to string: invalid UTF-8") from None
    return str(value)


CEL_FUNCTIONS: Final[Mapping[str, Function]] = {
    **FUNCTIONS,
    "duration": Function("duration", _V.DURATION, (_V.STRING,), impl=_duration, pure=True),
    "reverse": Function("reverse", _V.STRING, (_V.STRING,), impl=_reverse, pure=True),
    "contains": Function("contains", _V.BOOL, (_V.STRING, _V.STRING), impl=_contains, pure=True),
    "int": Function("int", _V.INT64, (_U,), impl=_to_int, pure=True),
    "double": Function("double", _V.DOUBLE, (_U,), impl=_to_double, pure=True),
    "string": Function("string", _V.STRING, (_U,), impl=_to_string, pure=True),
}
"""The extern functions a CEL expression compiles to (CEXL's, and CEL's own)."""

# CEL signatures: name -> (instance?, argument types, result type). The target of an instance
# function is its first argument.
_SIGNATURES: Final[dict[str, list[tuple[bool, tuple[CelType, ...], CelType]]]] = {
    "ip": [(False, (STRING,), IP)],
    "timestamp": [(False, (STRING,), TIMESTAMP)],
    "duration": [(False, (STRING,), DURATION)],
    "dnsName": [(False, (STRING,), DNS)],
    "email": [(False, (STRING,), EMAIL)],
    "uri": [(False, (STRING,), URI_T)],
    "match": [(False, (STRING, STRING), BOOL)],
    "toLower": [(False, (STRING,), STRING)],
    "reverse": [(False, (STRING,), STRING), (True, (STRING,), STRING)],
    "emptyStringMap": [(False, (), STRING_MAP)],
    "startsWith": [(True, (STRING, STRING), BOOL)],
    "endsWith": [(True, (STRING, STRING), BOOL)],
    "contains": [(True, (STRING, STRING), BOOL)],
    "matches": [(True, (STRING, STRING), BOOL), (False, (STRING, STRING), BOOL)],
    "int": [(False, (t,), INT) for t in (INT, UINT, DOUBLE, STRING)],
    "double": [(False, (t,), DOUBLE) for t in (INT, UINT, DOUBLE, STRING)],
    "string": [(False, (t,), STRING) for t in (STRING, INT, UINT, DOUBLE, BOOL, BYTES)],
}

_ORDERED: Final = ("int", "uint", "double", "string", "bytes", "bool")
_ARITH: Final = {
    "_+_": "ADD",
    "_-_": "SUB",
    "_*_": "MUL",
    "_/_": "DIV",
    "_%_": "MOD",
}
_COMPARE: Final = {"_==_": "EQ", "_!=_": "NEQ", "_<_": "LT", "_<=_": "LEQ", "_>_": "GT", "_>=_": "GEQ"}


def _arith_result(op: str, a: CelType, b: CelType) -> CelType | None:
    a, b = _unwrap(a), _unwrap(b)
    if a.kind == "dyn" or b.kind == "dyn":
        return DYN
    if a.name == b.name and a.name in ("int", "uint", "double"):
        return None if (op == "_%_" and a.name == "double") else a
    if op == "_+_":
        if a.name == b.name and a.name in ("string", "bytes"):
            return a
        if a.kind == "list" and b.kind == "list" and a.same(b):
            return a
        if a is DURATION and b is DURATION:
            return DURATION
        if {a.name, b.name} == {TIMESTAMP.name, DURATION.name}:
            return TIMESTAMP
    if op == "_-_":
        if a is DURATION and b is DURATION:
            return DURATION
        if a is TIMESTAMP and b is DURATION:
            return TIMESTAMP
        if a is TIMESTAMP and b is TIMESTAMP:
            return DURATION
    return None


# --- lowering: type-check the parse tree into the shared expression tree ---------------------


@dataclass(slots=True)
class _Namespace:
    """A prefix of attribute names (``context.reporter``): a message of the attribute provider."""

    prefix: str
    pos: int


_Lowered = tuple[Node | _Namespace, CelType]


@dataclass(slots=True)
class _Lowering:
    text: str
    attributes: Mapping[str, ValueType]
    prefixes: frozenset[str]
    types: dict[int, ValueType] = field(default_factory=dict)

    def mk(self, node: Node, t: CelType) -> tuple[Node, CelType]:
        self.types[id(node)] = t.value_type
        return node, t

    def fail(self, pos: int, message: str) -> CompileError:
        return _error(self.text, pos, message)

    def no_overload(self, pos: int, function: str, *types: CelType) -> CompileError:
        applied = ", ".join(str(t) for t in types)
        return self.fail(pos, f"found no matching overload for '{function}' applied to '({applied})'")

    def value(self, p: PNode) -> tuple[Node, CelType]:
        """Lower ``p`` where a value is needed (an attribute name prefix is not one)."""
        node, t = self.lower(p)
        if isinstance(node, _Namespace):
            under = sorted(a for a in self.attributes if a.startswith(node.prefix + "."))
            raise self.fail(
                node.pos,
                f"'{node.prefix}' is not an attribute but a prefix of attribute names "
                f"(such as {', '.join(under[:3])})",
            )
        return node, t

    def operand(self, p: PNode) -> _Lowered:
        """Lower an operand of an operator: a prefix is allowed here (and fails the overload)."""
        return self.lower(p)

    # --- names ---------------------------------------------------------------------------------

    def attribute(self, name: str, pos: int, *, raw: bool = False) -> tuple[Node, CelType]:
        vt = self.attributes[name]
        t = _ATTRIBUTE_TYPES.get(vt)
        if t is None:
            raise self.fail(pos, f"attribute {name} has type {vt.name}, which CEL cannot read")
        var, _ = self.mk(Variable(name, pos), t)
        if raw:
            return var, t
        zero, _ = self.mk(Constant(repr(_ZERO[vt]), _ZERO[vt], vt, pos), t)
        return self.mk(Call("OR", (var, zero), start=pos, pos=pos), t)

    def name(self, name: str, pos: int, *, raw: bool = False) -> _Lowered | None:
        if name in self.attributes:
            return self.attribute(name, pos, raw=raw)
        if name in self.prefixes:
            return _Namespace(name, pos), CelType("." + name, "namespace")
        return None

    def lower(self, p: PNode, *, raw: bool = False) -> _Lowered:
        if isinstance(p, PLit):
            vt = p.type.value_type
            return self.mk(Constant(p.text, p.value, vt, p.pos), p.type)
        if isinstance(p, PIdent):
            found = self.name(p.name, p.pos, raw=raw)
            if found is not None:
                return found
            if p.name in _TYPE_NAMES:
                tv = TypeValue(p.name)
                return self.mk(Constant(p.name, tv, _U, p.pos), TYPE)
            raise self.fail(p.pos, f"undeclared reference to '{p.name}'")
        if isinstance(p, PSelect):
            return self.select(p, raw=raw)
        if isinstance(p, PCall):
            return self.call(p)
        if isinstance(p, PList):
            return self.list_literal(p)
        if isinstance(p, PMap):
            return self.map_literal(p)
        return self.message(p)

    def select(self, p: PSelect, *, raw: bool = False) -> _Lowered:
        if p.test_only:
            return self.has(p)
        full = _qualified(p)
        if full is not None:
            found = self.name(full, p.pos, raw=raw)
            if found is not None:
                return found
            if full in (TIMESTAMP.name, DURATION.name):
                tv = TypeValue(full)
                return self.mk(Constant(full, tv, _U, p.pos), TYPE)
        operand, t = self.lower(p.operand, raw=raw)
        if isinstance(operand, _Namespace):
            raise self.fail(p.pos, f"undefined field '{p.field}'")
        if t.kind == "map":
            if t.params[0].kind not in ("dyn",) and t.params[0].name != "string":
                raise self.fail(p.pos, f"type '{t}' does not support field selection")
            key, _ = self.mk(Constant(repr(p.field), p.field, _V.STRING, p.pos), STRING)
            return self.mk(Call("KEY", (operand, key), start=p.pos, pos=p.pos), t.params[1])
        if t.kind == "wrapper" and p.field == "value":
            return self.mk(operand, t.params[0])
        if t.kind == "dyn":
            raise self.fail(p.pos, "field selection on a value of unknown type is not supported")
        raise self.fail(p.pos, f"type '{t}' does not support field selection")

    def has(self, p: PSelect) -> tuple[Node, CelType]:
        full = _qualified(PSelect(p.operand, p.field, p.pos))
        if full is not None and full in self.attributes:
            var, _ = self.attribute(full, p.pos, raw=True)
            return self.mk(Call("HAS", (var,), start=p.pos, pos=p.pos), BOOL)
        if full is not None and full in self.prefixes:
            return self.mk(Constant("true", True, _V.BOOL, p.pos), BOOL)  # a message is always set
        operand, t = self.lower(p.operand)
        if isinstance(operand, _Namespace):
            raise self.fail(p.pos, f"undefined field '{p.field}'")
        if t.kind == "map":
            key, _ = self.mk(Constant(repr(p.field), p.field, _V.STRING, p.pos), STRING)
            return self.mk(Call("HASKEY", (key, operand), start=p.pos, pos=p.pos), BOOL)
        raise self.fail(p.pos, f"type '{t}' does not support field selection")

    # --- literals -------------------------------------------------------------------------------

    def list_literal(self, p: PList) -> tuple[Node, CelType]:
        items = [self.value(i) for i in p.items]
        elem = items[0][1] if items else DYN
        for (_, t), item in zip(items, p.items, strict=True):
            if not t.same(elem):
                raise self.fail(_pos(item), f"list elements must have one type: {elem} and {t}")
        return self.mk(Call("LIST", tuple(n for n, _ in items), start=p.pos, pos=p.pos), _list_type(elem))

    def map_literal(self, p: PMap) -> tuple[Node, CelType]:
        args: list[Node] = []
        key_t: CelType = DYN
        value_t: CelType = DYN
        for index, (kp, vp) in enumerate(p.entries):
            k, kt = self.value(kp)
            v, vt = self.value(vp)
            if _unwrap(kt).name not in ("int", "uint", "bool", "string", "dyn"):
                raise self.fail(_pos(kp), f"unsupported map key type: {kt}")
            if index == 0:
                key_t, value_t = kt, vt
            elif not kt.same(key_t) or not vt.same(value_t):
                raise self.fail(_pos(kp), f"map entries must have one type: map({key_t}, {value_t})")
            args += (k, v)
        return self.mk(Call("MAP", tuple(args), start=p.pos, pos=p.pos), _map_type(key_t, value_t))

    def message(self, p: PMessage) -> tuple[Node, CelType]:
        name = p.type_name.lstrip(".")
        wrapped = _WRAPPERS.get(name)
        if wrapped is None:
            raise self.fail(
                p.pos,
                f"unknown message type '{name}': mixerd's CEL builds only the google.protobuf "
                "wrapper messages (Int64Value, StringValue, BoolValue, DoubleValue ...)",
            )
        wrapper = CelType(name, "wrapper", (wrapped,), wrapped.value_type)
        node: Node | None = None
        for field_name, value in p.fields:
            if field_name != "value":
                raise self.fail(p.pos, f"undefined field '{field_name}'")
            node, t = self.value(value)
            if not t.same(wrapped):
                raise self.fail(_pos(value), f"field 'value' of {name} needs {wrapped}, got {t}")
        if node is None:
            zero = {"int": 0, "uint": 0, "double": 0.0, "bool": False, "string": "", "bytes": b""}[
                wrapped.name
            ]
            node = Constant(repr(zero), zero, wrapped.value_type, p.pos)
        return self.mk(node, wrapper)

    # --- calls ----------------------------------------------------------------------------------

    def call(self, p: PCall) -> tuple[Node, CelType]:
        f = p.function
        if p.target is None:
            special = {
                "_?_:_": self.ternary,
                "conditional": self.ternary,
                "pick": self.pick,
                "_&&_": self.logic,
                "_||_": self.logic,
                "!_": self.logic,
                "_[_]": self.index,
                "@in": self.membership,
                "type": self.type_of,
            }.get(f)
            if special is not None:
                return special(p)
        if f == "size" and (p.target is None) == (len(p.args) == 1):
            return self.size(p)
        if f in _COMPARE:
            return self.compare(p)
        if f in _ARITH or f == "-_":
            return self.arith(p)
        return self.function(p)

    def ternary(self, p: PCall) -> tuple[Node, CelType]:
        if len(p.args) != 3:
            raise self.fail(p.pos, f"{p.function} needs 3 arguments, got {len(p.args)}")
        (c, ct), (a, at), (b, bt) = (self.operand(x) for x in p.args)
        if isinstance(c, _Namespace) or isinstance(a, _Namespace) or isinstance(b, _Namespace):
            raise self.no_overload(p.pos, "_?_:_", ct, at, bt)
        if _unwrap(ct) is not BOOL or not at.same(bt):
            raise self.no_overload(p.pos, "_?_:_", ct, at, bt)
        t = bt if at.kind == "dyn" else at
        return self.mk(Call("conditional", (c, a, b), start=_pos(p.args[0]), pos=p.pos), t)

    def pick(self, p: PCall) -> tuple[Node, CelType]:
        if len(p.args) < 2:
            raise self.fail(p.pos, "pick needs at least 2 arguments")
        parts = [self.pick_part(a) for a in p.args[:-1]] + [self.value(p.args[-1])]
        t = parts[0][1]
        for (_, pt), arg in zip(parts, p.args, strict=True):
            if not pt.same(t):
                raise self.fail(_pos(arg), f"pick arguments must have one type: {t} and {pt}")
        node, _ = parts[-1]
        for part, _ in reversed(parts[:-1]):
            node, _ = self.mk(Call("OR", (part, node), start=p.pos, pos=p.pos), t)
        return node, t

    def pick_part(self, p: PNode) -> tuple[Node, CelType]:
        """An element of ``pick``: an attribute or map entry stays "absent" when missing."""
        if isinstance(p, PSelect):  # a bare identifier cannot be tested with has(): its value
            node, t = self.lower(p, raw=True)
            if isinstance(node, Call) and node.name == "KEY":  # m.k: absent when the key is
                node, t = self.mk(Call("INDEX", node.args, start=node.start, pos=node.pos), t)
            if isinstance(node, _Namespace):
                raise self.fail(p.pos, f"'{node.prefix}' is not an attribute")
            return node, t
        if isinstance(p, PCall) and p.function == "_[_]" and p.target is None:
            node, t = self.index(p, raw=isinstance(p.args[1], PLit))  # else the key is read too
            if isinstance(node, Call) and node.name == "KEY":
                return self.mk(Call("INDEX", node.args, start=node.start, pos=node.pos), t)
            return node, t
        return self.value(p)

    def logic(self, p: PCall) -> tuple[Node, CelType]:
        lowered = [self.operand(a) for a in p.args]
        types = [t for _, t in lowered]
        if any(isinstance(n, _Namespace) or _unwrap(t) not in (BOOL, DYN) for n, t in lowered):
            raise self.no_overload(p.pos, p.function, *types)
        nodes = tuple(n for n, _ in lowered if not isinstance(n, _Namespace))
        name = {"_&&_": "LAND_ABSORB", "_||_": "LOR_ABSORB", "!_": "NOT"}[p.function]
        return self.mk(Call(name, nodes, start=_pos(p.args[0]), pos=p.pos), BOOL)

    def compare(self, p: PCall) -> tuple[Node, CelType]:
        (a, at), (b, bt) = (self.operand(x) for x in p.args)
        if isinstance(a, _Namespace) or isinstance(b, _Namespace) or not at.same(bt):
            raise self.no_overload(p.pos, p.function, at, bt)
        name = _COMPARE[p.function]
        if name not in ("EQ", "NEQ"):
            base = _unwrap(at) if at.kind != "dyn" else _unwrap(bt)
            if base.kind != "dyn" and base.name not in _ORDERED and base not in (TIMESTAMP, DURATION):
                raise self.no_overload(p.pos, p.function, at, bt)
        elif at.stringmap or bt.stringmap:
            return self.runtime_failure(p, "stringmap does not support equality", a, b, BOOL)
        return self.mk(Call(name, (a, b), start=_pos(p.args[0]), pos=p.pos), BOOL)

    def arith(self, p: PCall) -> tuple[Node, CelType]:
        lowered = [self.operand(x) for x in p.args]
        types = [t for _, t in lowered]
        if any(isinstance(n, _Namespace) for n, _ in lowered):
            raise self.no_overload(p.pos, p.function, *types)
        nodes = tuple(n for n, _ in lowered if not isinstance(n, _Namespace))
        if len(nodes) != (1 if p.function == "-_" else 2):
            raise self.fail(p.pos, f"operator {p.function} takes {1 if p.function == '-_' else 2} operand(s)")
        if p.function == "-_":
            t = _unwrap(types[0])
            if t.name not in ("int", "double", "dyn") and t is not DURATION:
                raise self.no_overload(p.pos, p.function, *types)
            return self.mk(Call("NEG", nodes, start=p.pos, pos=p.pos), t)
        result = _arith_result(p.function, types[0], types[1])
        if result is None:
            raise self.no_overload(p.pos, p.function, *types)
        return self.mk(Call(_ARITH[p.function], nodes, start=_pos(p.args[0]), pos=p.pos), result)

    def index(self, p: PCall, *, raw: bool = False) -> tuple[Node, CelType]:
        """``m[k]`` or ``l[i]``; ``raw`` (inside ``pick``): an absent map attribute stays absent."""
        (m, mt), (k, kt) = self.lower(p.args[0], raw=raw), self.operand(p.args[1])
        base = _unwrap(mt)
        if not isinstance(m, _Namespace) and not isinstance(k, _Namespace):
            if base.kind == "map" and base.params[0].same(kt):
                return self.mk(Call("KEY", (m, k), start=_pos(p.args[0]), pos=p.pos), base.params[1])
            if base.kind == "list" and _unwrap(kt).name in ("int", "uint", "dyn"):
                return self.mk(Call("ELEM", (m, k), start=_pos(p.args[0]), pos=p.pos), base.params[0])
        raise self.no_overload(p.pos, "_[_]", mt, kt)

    def membership(self, p: PCall) -> tuple[Node, CelType]:
        (k, kt), (m, mt) = (self.operand(x) for x in p.args)
        base = _unwrap(mt)
        if not isinstance(m, _Namespace) and not isinstance(k, _Namespace):
            if base.kind == "map" and base.params[0].same(kt):
                return self.mk(Call("HASKEY", (k, m), start=_pos(p.args[0]), pos=p.pos), BOOL)
            if base.kind == "list" and base.params[0].same(kt):
                return self.mk(Call("IN_LIST", (k, m), start=_pos(p.args[0]), pos=p.pos), BOOL)
        raise self.no_overload(p.pos, "@in", kt, mt)

    def size(self, p: PCall) -> tuple[Node, CelType]:
        arg = p.target if p.target is not None else p.args[0]
        node, t = self.operand(arg)
        base = _unwrap(t)
        if isinstance(node, _Namespace) or not (
            base.name in ("string", "bytes") or base.kind in ("list", "map", "dyn")
        ):
            raise self.no_overload(p.pos, "size", t)
        if base.stringmap:
            return self.runtime_failure(p, "size not implemented on stringmaps", node, None, INT)
        return self.mk(Call("LEN", (node,), start=_pos(arg), pos=p.pos), INT)

    def type_of(self, p: PCall) -> tuple[Node, CelType]:
        if len(p.args) != 1:
            raise self.fail(p.pos, f"type needs 1 argument, got {len(p.args)}")
        node, t = self.value(p.args[0])
        if t.stringmap:
            return self.runtime_failure(p, "cannot convert stringmap to CEL types", node, None, TYPE)
        if t in (IP, DNS, EMAIL, URI_T):  # Mixer's own value types have no CEL type (message as Mixer's)
            return self.runtime_failure(p, "cannot convert wrapper value  to CEL types", node, None, TYPE)
        tv = _type_value_of(t)
        const, _ = self.mk(Constant(tv.name, tv, _U, p.pos), TYPE)
        return self.mk(Call("TYPE", (node, const), start=p.pos, pos=p.pos), TYPE)

    def runtime_failure(
        self, p: PCall, message: str, a: Node, b: Node | None, t: CelType
    ) -> tuple[Node, CelType]:
        """Mixer compiles these and fails when evaluating them (after evaluating the operands)."""
        msg, _ = self.mk(Constant(repr(message), message, _V.STRING, p.pos), STRING)
        args = (msg, a) if b is None else (msg, a, b)
        return self.mk(Call("FAIL", args, start=p.pos, pos=p.pos), t)

    def function(self, p: PCall) -> tuple[Node, CelType]:
        overloads = _SIGNATURES.get(p.function)
        if overloads is None:
            if p.function in _COMPREHENSIONS:
                raise self.fail(p.pos, f"the '{p.function}' macro is not supported by mixerd's CEL")
            raise self.fail(p.pos, f"undeclared reference to '{p.function}'")
        operands = ([p.target] if p.target is not None else []) + list(p.args)
        lowered = [self.operand(x) for x in operands]
        types = [t for _, t in lowered]
        instance = p.target is not None
        for is_instance, params, result in overloads:
            if is_instance != instance or len(params) != len(lowered):
                continue
            if any(isinstance(n, _Namespace) for n, _ in lowered):
                break
            if all(pt.same(t) for pt, t in zip(params, types, strict=True)):
                nodes = [n for n, _ in lowered if not isinstance(n, _Namespace)]
                return self.mk(self.extern_call(p, nodes, instance), result)
        name = f"{types[0]}.{p.function}" if instance else p.function
        raise self.no_overload(p.pos, name, *types[1 if instance else 0 :])

    def extern_call(self, p: PCall, nodes: list[Node], instance: bool) -> Node:
        f = p.function
        start = _pos(p.target) if p.target is not None else p.pos
        if f == "matches":  # CEL: text.matches(regex); the extern is regex.matches(text)
            return Call("matches", (nodes[0],), target=nodes[1], start=start, pos=p.pos)
        if f in ("startsWith", "endsWith"):
            return Call(f, tuple(nodes[1:]), target=nodes[0], start=start, pos=p.pos)
        return Call(f, tuple(nodes), start=start, pos=p.pos)


def _pos(p: PNode) -> int:
    if isinstance(p, PSelect):
        return _pos(p.operand)
    if isinstance(p, PCall) and p.target is not None:
        return _pos(p.target)
    if isinstance(p, PCall) and p.function.startswith("_") and p.args:
        return _pos(p.args[0])
    return p.pos


@functools.lru_cache(maxsize=64)
def _scope(
    manifest: tuple[tuple[str, ValueType | str], ...],
) -> tuple[Mapping[str, ValueType], frozenset[str]]:
    """The typed attributes of a manifest and the prefixes of their names (the provider's
    messages), computed once per manifest content."""
    attributes: dict[str, ValueType] = {}
    for name, raw in manifest:
        try:
            attributes[name] = ValueType.parse(raw)
        except ValueError as exc:
            raise ValueError(f"attribute {name}: {exc}") from None
    prefixes = frozenset(
        ".".join(parts[:i]) for parts in (n.split(".") for n in attributes) for i in range(1, len(parts))
    )
    return MappingProxyType(attributes), prefixes


def lower(
    text: str, manifest: Mapping[str, ValueType | str], *, compat: bool = False
) -> tuple[Node, ValueType, dict[int, ValueType]]:
    """Parse and type-check CEL (or COMPAT) ``text`` against ``manifest``.

    Returns the expression tree for :mod:`~mixerd.lang.compiler`, its result type and the value
    type of every node (``VALUE_TYPE_UNSPECIFIED`` for CEL-only types: lists, maps of other
    types, bytes, uint, type values). Raises :class:`CompileError`.
    """
    try:
        attributes, prefixes = _scope(tuple(manifest.items()))
    except ValueError as exc:
        raise CompileError(text, str(exc)) from None
    tree = parse_compat(text) if compat else parse_cel(text)
    lowering = _Lowering(text, attributes, prefixes)
    node, t = lowering.value(tree)
    return node, t.value_type, lowering.types


# --- run-time helpers of the generated code --------------------------------------------------


def key(mapping: Mapping[Any, Any], k: Any) -> Any:
    """``m[k]``: CEL fails on a missing key (``no such key: 'k'``)."""
    value = mapping.get(k, _ABSENT)
    if value is _ABSENT:
        raise EvaluationError(f"no such key: '{k}'")
    return value


_ABSENT: Final = object()


def elem(items: tuple[Any, ...], index: int) -> Any:
    """``l[i]``."""
    if not 0 <= index < len(items):
        raise EvaluationError(f"index '{index}' out of range in list size '{len(items)}'")
    return items[index]


def _wrap(value: int) -> int:
    return ((value + (1 << 63)) & ((1 << 64) - 1)) - (1 << 63)


def divide(a: Any, b: Any) -> Any:
    """``a / b``: Go's truncating integer division (``divide by zero``), IEEE for doubles."""
    if isinstance(a, float):
        if b == 0.0:
            return (
                math.nan if a == 0.0 or math.isnan(a) else math.copysign(math.inf, a) * math.copysign(1.0, b)
            )
        return a / b
    if b == 0:
        raise EvaluationError("divide by zero")
    q = abs(a) // abs(b)
    return _wrap(q if (a < 0) == (b < 0) else -q)


def modulo(a: int, b: int) -> int:
    """``a % b``: Go's remainder (the sign of ``a``); ``modulus by zero``."""
    if b == 0:
        raise EvaluationError("modulus by zero")
    r = abs(a) % abs(b)
    return -r if a < 0 else r


def fail(message: str, *_operands: Any) -> Any:
    """What Mixer's string maps do not support (the operands are evaluated first)."""
    raise EvaluationError(message)
