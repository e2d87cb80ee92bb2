"""Parser: expression text -> :mod:`~mixerd.lang.syntax` tree, with Mixer's errors.

Mixer parsed with Go's ``go/parser.ParseExpr`` and then converted the Go syntax tree into its own
(``ast.Parse`` / ``process``). This module does the same in two steps:

1. A recursive-descent parser for the part of Go's expression grammar that matters here (operands,
   selectors, index and slice expressions, calls, type assertions, composite literals, unary and
   binary operators with Go's five precedence levels, where ``|`` binds like ``+``). Errors are
   Go's and become ``unable to parse expression '<text>': <line>:<col>: <message>``. Go type
   literals (``[]int{}``, ``func(){}``...) are not parsed; they fail here as "expected operand"
   where Go would parse them and Mixer would then reject them as unexpected expressions.
2. The conversion Mixer applies: operators become calls named after Go's tokens (``EQ``, ``LOR``,
   ``OR``, ``QUO``...), ``a.b.c`` becomes one variable, ``x.f(y)`` a call with target ``x``,
   ``true``/``false`` (any case) become constants, literals are typed by
   :func:`~mixerd.lang.syntax.new_constant`, and every other Go form (``*a``, ``foo{}``,
   ``a().b``, slices, type assertions) is ``unexpected expression``.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Final

from mixerd.attribute import ValueType
from mixerd.lang.errors import CompileError
from mixerd.lang.lexer import GoSyntaxError, Lexer, Token, describe_token
from mixerd.lang.syntax import Call, Constant, ConstantError, Node, Variable, new_constant

__all__ = ["parse", "parse_error_message"]

# Go's binary operator precedences (token.Precedence).
_PREC: Final = {
    "||": 1,
    "&&": 2,
    "==": 3,
    "!=": 3,
    "<": 3,
    "<=": 3,
    ">": 3,
    ">=": 3,
    "+": 4,
    "-": 4,
    "|": 4,
    "^": 4,
    "*": 5,
    "/": 5,
    "%": 5,
    "<<": 5,
    ">>": 5,
    "&": 5,
    "&^": 5,
}

# Mixer's tMap: Go operator token -> function name. Operators missing here map to "".
_FUNCTION_OF: Final = {
    "+": "ADD",
    "-": "SUB",
    "*": "MUL",
    "/": "QUO",
    "%": "REM",
    "&": "AND",
    "|": "OR",
    "^": "XOR",
    "&&": "LAND",
    "||": "LOR",
    "==": "EQ",
    "<": "LT",
    ">": "GT",
    "!": "NOT",
    "!=": "NEQ",
    "<=": "LEQ",
    ">=": "GEQ",
}

_LITERAL_TYPE: Final = {
    "INT": ValueType.INT64,
    "FLOAT": ValueType.DOUBLE,
    "CHAR": ValueType.STRING,
    "STRING": ValueType.STRING,
    "IMAG": ValueType.VALUE_TYPE_UNSPECIFIED,
}


@dataclass(slots=True)
class _Go:
    """A node of the Go syntax tree (only what the conversion needs)."""

    kind: str  # Ident, Lit, Paren, Selector, Index, Slice, TypeAssert, Call, Star, Unary, Binary, Composite
    pos: int
    end: int
    text: str = ""  # identifier name, literal text, or operator
    x: _Go | None = None
    y: _Go | None = None
    args: list[_Go] = field(default_factory=list)
    oppos: int = 0  # operator / bracket / selector-name position
    lit: str = ""  # token kind of a literal (INT, FLOAT, IMAG, CHAR, STRING)


class _GoParser:
    def __init__(self, src: str) -> None:
        self.src = src
        self.lexer = Lexer(src)
        self.tok: Token = self.lexer.next()

    def next(self) -> None:
        self.tok = self.lexer.next()

    def fail(self, what: str) -> GoSyntaxError:
        return GoSyntaxError(self.tok.pos, f"expected {what}, found {describe_token(self.tok)}")

    def expect(self, kind: str) -> int:
        if self.tok.kind != kind:
            raise self.fail(f"'{kind}'")
        pos = self.tok.pos
        self.next()
        return pos

    def at_newline(self) -> bool:
        return self.tok.kind == "SEMICOLON" and self.tok.text == "\n"

    def at_comma(self, context: str, follow: str) -> bool:
        if self.tok.kind == ",":
            return True
        if self.tok.kind != follow:
            msg = "missing ','" + (" before newline" if self.at_newline() else "")
            raise GoSyntaxError(self.tok.pos, f"{msg} in {context}")
        return False

    def expect_closing(self, kind: str, context: str) -> int:
        if self.tok.kind != kind and self.at_newline():
            raise GoSyntaxError(self.tok.pos, f"missing ',' before newline in {context}")
        return self.expect(kind)

    # --- grammar ---------------------------------------------------------------------------

    def parse_top(self) -> _Go:
        x = self.parse_expr()
        if self.at_newline():
            self.next()
        self.expect("EOF")
        return x

    def parse_expr(self) -> _Go:
        return self.parse_binary(1)

    def parse_binary(self, prec1: int) -> _Go:
        x = self.parse_unary()
        while True:
            op = self.tok.kind
            if op == "=":  # Go's parser reads '=' as a mistyped '==' inside an expression
                op = "=="
            prec = _PREC.get(op, 0)
            if prec < prec1:
                return x
            actual = self.tok.kind
            oppos = self.expect(op)
            y = self.parse_binary(prec + 1)
            x = _Go("Binary", x.pos, y.end, actual, x, y, oppos=oppos)

    def parse_unary(self) -> _Go:
        kind = self.tok.kind
        if kind in ("+", "-", "!", "^", "&", "<-", "*"):
            pos = self.tok.pos
            self.next()
            x = self.parse_unary()
            return _Go("Star" if kind == "*" else "Unary", pos, x.end, kind, x, oppos=pos)
        return self.parse_primary()

    def parse_primary(self) -> _Go:
        x = self.parse_operand()
        while True:
            kind = self.tok.kind
            if kind == ".":
                self.next()
                if self.tok.kind == "IDENT":
                    sel = _Go("Ident", self.tok.pos, self.tok.pos + len(self.tok.text), self.tok.text)
                    self.next()
                    x = _Go("Selector", x.pos, sel.end, x=x, y=sel, oppos=sel.pos)
                elif self.tok.kind == "(":
                    self.next()
                    if self.tok.kind == "type":
                        self.next()
                    else:
                        self.parse_type()
                    end = self.expect(")") + 1
                    x = _Go("TypeAssert", x.pos, end, x=x)
                else:
                    raise self.fail("selector or type assertion")
            elif kind == "[":
                x = self.parse_index_or_slice(x)
            elif kind == "(":
                x = self.parse_call(x)
            elif kind == "{" and _is_literal_type(x):
                x = self.parse_literal_value(x)
            else:
                return x

    def parse_operand(self) -> _Go:
        tok = self.tok
        if tok.kind == "IDENT":
            self.next()
            return _Go("Ident", tok.pos, tok.pos + len(tok.text), tok.text)
        if tok.kind in _LITERAL_TYPE:
            self.next()
            return _Go("Lit", tok.pos, tok.pos + len(tok.text), tok.text, lit=tok.kind)
        if tok.kind == "(":
            self.next()
            x = self.parse_expr()
            end = self.expect(")") + 1
            return _Go("Paren", tok.pos, end, x=x)
        raise self.fail("operand")

    def parse_call(self, fun: _Go) -> _Go:
        lparen = self.expect("(")
        args: list[_Go] = []
        ellipsis = False
        while self.tok.kind not in (")", "EOF") and not ellipsis:
            args.append(self.parse_expr())
            if self.tok.kind == "...":
                ellipsis = True
                self.next()
            if not self.at_comma("argument list", ")"):
                break
            self.next()
        end = self.expect_closing(")", "argument list") + 1
        return _Go("Call", fun.pos, end, x=fun, args=args, oppos=lparen)

    def parse_index_or_slice(self, x: _Go) -> _Go:
        lbrack = self.expect("[")
        index: list[_Go | None] = [None, None, None]
        colons: list[int] = []
        if self.tok.kind != ":":
            index[0] = self.parse_expr()
        while self.tok.kind == ":" and len(colons) < 2:
            colons.append(self.tok.pos)
            self.next()
            if self.tok.kind not in (":", "]", "EOF"):
                index[len(colons)] = self.parse_expr()
        end = self.expect("]") + 1
        if colons:
            if len(colons) == 2:
                if index[1] is None:
                    raise GoSyntaxError(colons[0], "2nd index required in 3-index slice")
                if index[2] is None:
                    raise GoSyntaxError(colons[1], "3rd index required in 3-index slice")
            return _Go("Slice", x.pos, end, x=x)
        return _Go("Index", x.pos, end, x=x, y=index[0], oppos=lbrack)

    def parse_literal_value(self, typ: _Go | None) -> _Go:
        lbrace = self.expect("{")
        while self.tok.kind not in ("}", "EOF"):
            self.parse_value()
            if self.tok.kind == ":":
                self.next()
                self.parse_value()
            if not self.at_comma("composite literal", "}"):
                break
            self.next()
        end = self.expect_closing("}", "composite literal") + 1
        return _Go("Composite", lbrace if typ is None else typ.pos, end, x=typ)

    def parse_value(self) -> None:
        if self.tok.kind == "{":
            self.parse_literal_value(None)
        else:
            self.parse_expr()

    def parse_type(self) -> None:
        kind = self.tok.kind
        if kind == "IDENT":
            self.next()
            if self.tok.kind == ".":
                self.next()
                self.expect("IDENT")
        elif kind == "*":
            self.next()
            self.parse_type()
        elif kind == "(":
            self.next()
            self.parse_type()
            self.expect(")")
        elif kind == "[":
            self.next()
            if self.tok.kind != "]":
                self.parse_expr()
            self.expect("]")
            self.parse_type()
        elif kind == "map":
            self.next()
            self.expect("[")
            self.parse_type()
            self.expect("]")
            self.parse_type()
        else:
            raise self.fail("type")


def _is_literal_type(x: _Go) -> bool:
    if x.kind == "Ident":
        return True
    return x.kind == "Selector" and x.x is not None and x.x.kind == "Ident"


# --- Mixer's conversion ----------------------------------------------------------------------


class _Unexpected(Exception):
    def __init__(self, reason: str, pos: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.pos = pos


class _Converter:
    def __init__(self, src: str) -> None:
        self.src = src

    def unexpected(self, node: _Go) -> _Unexpected:
        return _Unexpected(f"unexpected expression: {self.src[node.pos : node.end]}", node.pos)

    def flatten(self, selector: _Go) -> tuple[_Go | None, list[str]]:
        """Mixer's flattenSelectors: ``a.b.c`` -> (None, ["c", "b", "a"]); ``f().g`` -> (f(), ["g"])."""
        parts: list[str] = []
        ex = selector
        while True:
            assert ex.x is not None and ex.y is not None
            parts.append(ex.y.text)
            inner = ex.x
            if inner.kind == "Selector":
                ex = inner
            elif inner.kind == "Ident":
                parts.append(inner.text)
                return None, parts
            elif inner.kind in ("Call", "Lit", "Paren"):
                return inner, parts
            else:
                raise self.unexpected(inner)

    def convert(self, g: _Go) -> Node:
        kind = g.kind
        if kind == "Unary":
            assert g.x is not None
            return Call(_FUNCTION_OF.get(g.text, ""), (self.convert(g.x),), None, g.pos, g.oppos)
        if kind == "Binary":
            assert g.x is not None and g.y is not None
            args = (self.convert(g.x), self.convert(g.y))
            return Call(_FUNCTION_OF.get(g.text, ""), args, None, g.pos, g.oppos)
        if kind == "Call":
            fun = g.x
            assert fun is not None
            target: Node | None = None
            if fun.kind == "Selector":
                anchor, parts = self.flatten(fun)
                assert fun.y is not None
                if anchor is None:
                    target = Variable(".".join(reversed(parts[1:])), fun.pos)
                else:
                    target = self.convert(anchor)
                    if len(parts) != 1:
                        raise self.unexpected(fun)
                name, pos = parts[0], fun.y.pos
            elif fun.kind == "Ident":
                name, pos = fun.text, fun.pos
            else:
                raise self.unexpected(fun)
            return Call(name, tuple(self.convert(a) for a in g.args), target, g.pos, pos)
        if kind == "Paren":
            assert g.x is not None
            return self.convert(g.x)
        if kind == "Lit":
            try:
                return new_constant(g.text, _LITERAL_TYPE[g.lit], g.pos)
            except ConstantError as exc:
                raise _Unexpected(str(exc), g.pos) from None
        if kind == "Ident":
            lowered = g.text.lower()
            if lowered in ("true", "false"):
                return Constant(lowered, lowered == "true", ValueType.BOOL, g.pos)
            return Variable(g.text, g.pos)
        if kind == "Selector":
            anchor, parts = self.flatten(g)
            if anchor is not None:
                raise self.unexpected(g)
            return Variable(".".join(reversed(parts)), g.pos)
        if kind == "Index":
            assert g.x is not None and g.y is not None
            return Call("INDEX", (self.convert(g.x), self.convert(g.y)), None, g.pos, g.oppos)
        raise self.unexpected(g)


def parse_error_message(src: str, pos: int, msg: str) -> str:
    """``unable to parse expression '<src>': <line>:<col>: <msg>`` with Go's byte-based column."""
    line = src.count("\n", 0, pos) + 1
    line_start = src.rfind("\n", 0, pos) + 1
    col = len(src[line_start:pos].encode("utf-8", "surrogatepass")) + 1
    return f"unable to parse expression '{src}': {line}:{col}: {msg}"


_SURROGATE: Final = re.compile("[\ud800-\udfff]")


@functools.lru_cache(maxsize=4096)
def _parse(text: str) -> Node:
    # A lone surrogate is what Python makes of a byte that is not UTF-8 (surrogateescape, JSON
    # "\udce3"); Go source cannot hold one, and Go's scanner rejects such bytes with this message.
    surrogate = _SURROGATE.search(text)
    if surrogate is not None:
        pos = surrogate.start()
        message = parse_error_message(text, pos, "illegal UTF-8 encoding")
        # escaped, so that printing or logging the message cannot fail on the surrogate itself
        raise CompileError(text, message.encode("utf-8", "backslashreplace").decode("utf-8"), pos)
    try:
        tree = _GoParser(text).parse_top()
        return _Converter(text).convert(tree)
    except GoSyntaxError as exc:
        raise CompileError(text, parse_error_message(text, exc.pos, exc.msg), exc.pos) from None
    except _Unexpected as exc:
        raise CompileError(text, exc.reason, exc.pos) from None
    except RecursionError:
        raise CompileError(text, "expression is too deeply nested") from None
    except Exception as exc:  # last resort: a parser bug is reported against the expression
        reason = f"internal parser error on expression {text!r} -- {type(exc).__name__}: {exc}"
        raise CompileError(text, reason) from exc


def parse(text: str) -> Node:
    """Parse CEXL ``text`` into its tree; raises :class:`CompileError` with Mixer's message."""
    return _parse(text)
