"""Compiler: a type-checked tree becomes one Python function per expression.

**Why generated source.** Each expression is turned into the source of a small Python function
and compiled with the built-in ``compile()``. Closures (one Python call per tree node) were the
alternative; measured on the ``requestcount`` dimensions of the stock Istio config they cost
1.9-2.2x a hand-written lambda (every node adds a Python call), generated code 1.0-1.1x, because
it *is* the hand-written lambda: ``source.workload.name | "unknown"`` compiles to
``a.get('source.workload.name', 'unknown')`` and ``source.labels["app"] | "unknown"`` to
``a.get('source.labels', _E).get('app', 'unknown')``. Compiling costs about 0.2 ms of CPU per
expression (mostly CPython's own ``compile()``) and happens once per configuration snapshot.
``benchmarks/bench_expressions.py`` measures both.

**Semantics** (Mixer's IL compiler and interpreter, ``mixer/pkg/lang/compiler``):

* An attribute is read with ``attributes.get(name, MISSING)``; any ``Mapping`` works (``dict``,
  :class:`~mixerd.attribute.DictBag`, :class:`~mixerd.attribute.TrackingBag`, lazy wire bags).
  Outside ``|`` a missing attribute raises ``lookup failed: '<name>'``.
* ``a | b | c``: the first operand that is present. Only absence falls through: a missing
  attribute or map key (also ``m[k]`` with ``m`` or ``k`` absent); errors propagate. Operands
  after one that cannot be absent (a constant, a function call) are never evaluated.
* ``m[k]`` outside ``|`` gives ``""`` for a missing key (Mixer's ``nlookup``).
* ``&&``, ``||``, ``conditional`` short-circuit; ``conditionalString`` and other functions
  evaluate all arguments first.
* ``==`` by static type: DNS names, e-mail addresses and URIs through their normalising
  comparisons, IP addresses by address (4-byte form equals the mapped 16-byte form), timestamps
  by instant. ``+`` on INT64 wraps around like Go's int64.
* Constant sub-expressions (``ip("10.0.0.1")``, ``"a" + "b"``) are evaluated at compile time;
  constant ``match`` patterns become ``startswith``/``endswith``/``==``, constant ``matches``
  patterns are compiled once with RE2; ``x == "a" || x == "b"`` (one attribute-reading operand,
  string or integer constants) is one membership test, ``x in ("a", "b")``, reading ``x`` once.

**CEL and COMPAT** (:mod:`mixerd.lang.cel`) are lowered into the same tree and generated here too:
an attribute read is ``OR($attr, zero value)`` (``a.get(name, zero)``), ``pick`` is ``OR``; the
nodes only CEL has (``KEY``, ``HASKEY``, ``LAND_ABSORB`` ...) have templates of their own
(:meth:`_Generator.cel_node`), and ``&&``/``||`` whose operands may fail become a small helper
function that absorbs the error when the other side decides.

The generated function catches non-:class:`EvaluationError` exceptions (a bag value of the wrong
type makes Python fail somewhere) and reports Mixer's conversion error for the offending
attribute (``error converting value to string: '20'``).

**Where mixerd deliberately differs from Mixer 1.4** (all cases Mixer got wrong, none in its tests):
``(x == y) | z`` returns the comparison (Mixer's IL returned ``z`` for a comparison, ``&&``,
``||``, ``+`` or ``size`` on the left of ``|``); ``a | (b | c)`` works (Mixer's IL left nothing on
its stack when all were absent); a wrongly typed bag value is only reported when Python fails on
it (Mixer checked every read); surplus function arguments are a compile error (see
:mod:`~mixerd.lang.checker`).
"""

from __future__ import annotations

import builtins
import contextlib
import datetime as _dt
import functools
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import CodeType
from typing import Any, Final

from mixerd.attribute import (
    MISSING,
    URI,
    DNSName,
    EmailAddress,
    IPAddress,
    ReferenceTracker,
    TrackingBag,
    ValueType,
    map_entry,
    tracker_of,
)
from mixerd.lang import cel as _cel
from mixerd.lang import functions as fns
from mixerd.lang.checker import check_generatable, infer_types
from mixerd.lang.errors import CompileError, EvaluationError
from mixerd.lang.functions import FUNCTIONS, INTRINSICS, Function
from mixerd.lang.parser import parse
from mixerd.lang.syntax import Call, Constant, Node, Variable, walk

__all__ = ["DIALECTS", "Expression", "compile_expression", "function_table", "infer_type"]

DIALECTS: Final = ("cexl", "cel", "compat")
"""Expression dialects :func:`compile_expression` takes (Mixer's ``policy.istio.io/lang`` values,
lower-cased): CEXL (the default), CEL, and COMPAT (CEXL's syntax with CEL's semantics)."""

_V = ValueType
_log = logging.getLogger(__name__)
_SPILL_DEPTH: Final = 24  # nesting beyond which a sub-expression moves into a helper function


def function_table(functions: Mapping[str, Function] | None = None) -> dict[str, Function]:
    """The functions an expression can call: the intrinsics, then ``functions`` (default
    :data:`~mixerd.lang.functions.FUNCTIONS`), which may replace an intrinsic's metadata."""
    table = dict(INTRINSICS)
    table.update(FUNCTIONS if functions is None else functions)
    return table


# --- run-time helpers shared by generated code ----------------------------------------------


def _absent(name: str, position: int) -> Any:
    raise EvaluationError(f"lookup failed: '{name}'", position)


def _raise_with(error: EvaluationError, *_args: Any) -> Any:
    raise EvaluationError(error.message, error.position)


_EXPECTED: Final[dict[ValueType, tuple[tuple[type, ...], str]]] = {
    _V.STRING: ((str,), "string"),
    _V.DNS_NAME: ((str,), "string"),
    _V.EMAIL_ADDRESS: ((str,), "string"),
    _V.URI: ((str,), "string"),
    _V.INT64: ((int,), "integer or duration"),
    _V.DOUBLE: ((float,), "double"),
    _V.BOOL: ((bool,), "bool"),
    _V.TIMESTAMP: ((_dt.datetime,), "timestamp"),
    _V.DURATION: ((_dt.timedelta,), "integer or duration"),
    _V.IP_ADDRESS: ((IPAddress,), "IP address"),
    _V.STRING_MAP: ((Mapping,), "string map"),
}


def _conforms(value: Any, value_type: ValueType) -> bool:
    expected = _EXPECTED.get(value_type)
    if expected is None:
        return True
    if value_type in (_V.INT64, _V.DOUBLE) and isinstance(value, bool):
        return False
    return isinstance(value, expected[0])


def _diagnose(
    reads: tuple[tuple[str, ValueType, int], ...], attributes: Mapping[str, Any], exc: BaseException
) -> EvaluationError:
    """Explain an unexpected exception: usually a bag value whose type is not the manifest's.

    The attributes are re-read to find the culprit; those reads are not references (the
    decision did not depend on them), so a tracking bag records none of them.
    """
    tracker = tracker_of(attributes)
    with tracker.untracked() if tracker is not None else contextlib.nullcontext():
        for name, value_type, position in reads:
            try:
                value = attributes.get(name, MISSING)
            except Exception:
                continue
            if value is not MISSING and not _conforms(value, value_type):
                return EvaluationError(
                    f"error converting value to {_EXPECTED[value_type][1]}: '{value}'", position
                )
    return EvaluationError(f"evaluation failed: {type(exc).__name__}: {exc}")


_BASE_NAMESPACE: Final[dict[str, Any]] = {
    "__builtins__": builtins,
    "_M": MISSING,
    "_E": fns.EMPTY_STRING_MAP,
    "_absent": _absent,
    "_raise_with": _raise_with,
    "_EvaluationError": EvaluationError,
    "_dns_eq": fns.dns_name_equal,
    "_email_eq": fns.email_equal,
    "_uri_eq": fns.uri_equal,
    "_size": fns.size,
    "_DNSName": DNSName,
    "_EmailAddress": EmailAddress,
    "_URI": URI,
    "_cel_key": _cel.key,
    "_cel_elem": _cel.elem,
    "_cel_div": _cel.divide,
    "_cel_mod": _cel.modulo,
    "_cel_fail": _cel.fail,
}


# --- code generation -------------------------------------------------------------------------


@dataclass(slots=True)
class _Frag:
    """Python source of one sub-expression: an atom (literal, name, call or parenthesised)."""

    code: str
    depth: int = 0
    const: bool = False
    value: Any = None
    absent: bool = False  # may evaluate to _M (only in "nillable" position, i.e. left of `|`)


def _flatten_or(node: Node) -> list[Node]:
    out: list[Node] = []
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, Call) and current.name == "OR" and len(current.args) == 2:
            stack.append(current.args[1])
            stack.append(current.args[0])
        else:
            out.append(current)
    return out


def _may_be_absent(node: Node) -> bool:
    """Whether ``node`` can evaluate to "absent" on the left of ``|``."""
    if isinstance(node, Variable):
        return True
    if isinstance(node, Call) and node.target is None:
        if node.name == "INDEX":
            return True
        if node.name == "OR":
            return all(_may_be_absent(n) for n in _flatten_or(node))
    return False


_CMP_OPS: Final = {"EQ": "==", "NEQ": "!=", "LT": "<", "LEQ": "<=", "GT": ">", "GEQ": ">="}
_NORMALISING_EQ: Final = {_V.DNS_NAME: "_dns_eq", _V.EMAIL_ADDRESS: "_email_eq", _V.URI: "_uri_eq"}
_STRING_WRAPPER: Final = {_V.DNS_NAME: "_DNSName", _V.EMAIL_ADDRESS: "_EmailAddress", _V.URI: "_URI"}
_INT64_WRAP: Final = "((({0} + {1} + 9223372036854775808) & 18446744073709551615) - 9223372036854775808)"

_CEL_TEMPLATES: Final = {
    "KEY": "_cel_key({0}, {1})",
    "ELEM": "_cel_elem({0}, {1})",
    "HASKEY": "({1}.get({0}, _M) is not _M)",
    "IN_LIST": "({0} in {1})",
    "NOT": "(not {0})",
    "DIV": "_cel_div({0}, {1})",
    "MOD": "_cel_mod({0}, {1})",
    "LEN": "len({0})",
    "TYPE": "({0}, {1})[1]",
}
_CEL_NODES: Final = frozenset(
    {*_CEL_TEMPLATES, "LAND_ABSORB", "LOR_ABSORB", "HAS", "LIST", "MAP", "FAIL", "SUB", "MUL", "NEG"}
)
"""Nodes only the CEL dialect produces (:mod:`mixerd.lang.cel`)."""

_NEVER_FAIL: Final = frozenset(
    {"OR", "LAND", "LOR", "LAND_ABSORB", "LOR_ABSORB", "NOT", "conditional", "HAS", "HASKEY", "IN_LIST"}
    | {"LIST", "MAP", "TYPE", "LT", "LEQ", "GT", "GEQ", "match", "startsWith", "endsWith", "toLower"}
    | {"reverse", "contains"}
)


def _can_fail(node: Node, types: Mapping[int, ValueType]) -> bool:
    """Whether evaluating ``node`` may raise :class:`EvaluationError` (CEL's ``&&``/``||``
    then need code that absorbs it)."""
    for n in walk(node):
        if not isinstance(n, Call) or n.name in _NEVER_FAIL:
            continue
        if n.name in ("EQ", "NEQ") and types.get(id(n.args[0])) not in _NORMALISING_EQ:
            continue
        return True
    return False


def _side_effect_free(node: Node) -> bool:
    """Whether ``node`` reads attributes only (no function calls): evaluating it once or twice
    gives the same value and the same references, and it reads an attribute (not a constant)."""
    if isinstance(node, Variable):
        return True
    return (
        isinstance(node, Call)
        and node.target is None
        and node.name in ("OR", "INDEX")
        and all(isinstance(a, Constant) or _side_effect_free(a) for a in node.args)
    )


class _Generator:
    def __init__(self, text: str, types: dict[int, ValueType], functions: Mapping[str, Function]) -> None:
        self.text = text
        self.types = types
        self.functions = functions
        self.namespace: dict[str, Any] = dict(_BASE_NAMESPACE)
        self.helpers: list[str] = []
        self.counter = 0

    def fresh(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def hoist(self, value: Any, prefix: str = "_k") -> str:
        name = self.fresh(prefix)
        self.namespace[name] = value
        return name

    def constant(self, value: Any) -> _Frag:
        kind = type(value)
        if kind is str or kind is bool or kind is int or (kind is float and math.isfinite(value)):
            code = repr(value)
            if code.startswith("-"):
                code = f"({code})"
        else:
            code = self.hoist(value)
        return _Frag(code, 0, True, value)

    def spill(self, frag: _Frag) -> _Frag:
        if frag.depth <= _SPILL_DEPTH:
            return frag
        name = self.fresh("_s")
        self.helpers.append(f"def {name}(a):\n    return {frag.code}\n")
        return _Frag(f"{name}(a)", 1, absent=frag.absent)

    def op(self, template: str, *parts: _Frag, absent: bool = False) -> _Frag:
        spilled = [self.spill(p) for p in parts]
        code = template.format(*(p.code for p in spilled))
        return _Frag(code, max((p.depth for p in spilled), default=0) + 1, absent=absent)

    def fold(self, frag: _Frag, parts: list[_Frag]) -> _Frag:
        """Evaluate an operation on constants now; on failure leave it for run time."""
        if not all(p.const for p in parts):
            return frag
        try:
            value = eval(frag.code, dict(self.namespace))
        except Exception:
            return frag
        return self.constant(value)

    # --- strict position: a value, or an error ----------------------------------------------

    def strict(self, node: Node) -> _Frag:
        if isinstance(node, Constant):
            return self.constant(node.value)
        if isinstance(node, Variable):
            t = self.fresh("_t")
            name = repr(node.name)
            code = f"({t} if ({t} := a.get({name}, _M)) is not _M else _absent({name}, {node.start}))"
            return _Frag(code, 1)
        if node.target is None and (node.name in INTRINSICS or node.name in _CEL_NODES):
            return self.intrinsic(node)
        return self.extern(node)

    def intrinsic(self, node: Call) -> _Frag:
        name, args = node.name, node.args
        if name == "OR":
            return self.or_chain(node, strict=True)
        if name == "INDEX":
            target, key = self.strict(args[0]), self.strict(args[1])
            return self.fold(self.op("{0}.get({1}, '')", target, key), [target, key])
        if name == "conditional":
            cond = self.strict(args[0])
            if cond.const:
                return self.strict(args[1] if cond.value else args[2])
            return self.op("({1} if {0} else {2})", cond, self.strict(args[1]), self.strict(args[2]))
        if name == "LOR":
            member = self.membership(node)
            if member is not None:
                return member
        if name in ("LAND", "LOR"):
            left = self.strict(args[0])
            if left.const:
                if bool(left.value) == (name == "LOR"):
                    return self.constant(left.value)
                return self.strict(args[1])
            right = self.strict(args[1])
            return self.op("({0} and {1})" if name == "LAND" else "({0} or {1})", left, right)
        if name in _CMP_OPS:
            left, right = self.strict(args[0]), self.strict(args[1])
            value_type = self.types[id(args[0])]
            helper = _NORMALISING_EQ.get(value_type) if name in ("EQ", "NEQ") else None
            if helper is not None:
                template = f"{helper}({{0}}, {{1}})" if name == "EQ" else f"(not {helper}({{0}}, {{1}}))"
            else:
                template = f"({{0}} {_CMP_OPS[name]} {{1}})"
            return self.fold(self.op(template, left, right), [left, right])
        if name == "ADD":
            left, right = self.strict(args[0]), self.strict(args[1])
            value_type = self.types[id(args[0])]
            if value_type is _V.INT64:
                template = _INT64_WRAP
            elif value_type in _STRING_WRAPPER:
                template = f"{_STRING_WRAPPER[value_type]}({{0}} + {{1}})"
            else:
                template = "({0} + {1})"
            return self.fold(self.op(template, left, right), [left, right])
        if name == "size":
            arg = self.strict(args[0])
            return self.fold(self.op("_size({0})", arg), [arg])
        if name in _CEL_NODES:
            return self.cel_node(node)
        raise CompileError(self.text, f"internal compiler error -- no code for intrinsic {name}", node.pos)

    def membership(self, node: Call) -> _Frag | None:
        """``x == c1 || x == c2 || ...`` as ``(x in (c1, c2, ...))``: the operand is read and
        evaluated once instead of once per comparison (``context.protocol == "http" ||
        context.protocol == "grpc"``). Only for one side-effect-free operand (attribute reads,
        ``|``, ``m[k]``) of type STRING or INT64 compared with string or integer constants, where
        ``in`` and ``==`` agree; None for any other shape. An absent attribute fails at the first
        comparison's position, as the chain of comparisons does."""
        disjuncts: list[Node] = []
        todo: list[Node] = [node]
        while todo:
            n = todo.pop()
            if isinstance(n, Call) and n.name == "LOR" and n.target is None:
                todo.extend(reversed(n.args))
            else:
                disjuncts.append(n)
        operand: Node | None = None
        values: list[Any] = []
        for d in disjuncts:
            if not (isinstance(d, Call) and d.name == "EQ" and d.target is None and len(d.args) == 2):
                return None
            left, right = d.args
            if not isinstance(right, Constant) or type(right.value) not in (str, int):
                return None
            if self.types.get(id(left)) not in (_V.STRING, _V.INT64) or not _side_effect_free(left):
                return None
            if operand is None:
                operand = left
            elif str(left) != str(operand):
                return None
            values.append(right.value)
        if operand is None or len(values) < 2:
            return None
        frag = self.strict(operand)
        if frag.const:
            return None
        return self.op(f"({{0}} in {tuple(values)!r})", frag)

    # --- nodes of the CEL dialect (see mixerd.lang.cel) ----------------------------------------

    def cel_node(self, node: Call) -> _Frag:
        name, args = node.name, node.args
        if name in ("LAND_ABSORB", "LOR_ABSORB"):
            return self.absorbing(node)
        if name == "HAS":
            var = args[0]
            assert isinstance(var, Variable)
            return _Frag(f"(a.get({var.name!r}, _M) is not _M)", 1)
        if name in ("LIST", "MAP"):
            parts = [self.strict(arg) for arg in args]
            if name == "LIST":
                template = "(" + "".join(f"{{{i}}}, " for i in range(len(parts))) + ")"
            else:
                template = "{{" + ", ".join(f"{{{i}}}: {{{i + 1}}}" for i in range(0, len(parts), 2)) + "}}"
            return self.fold(self.op(template, *parts), parts)
        if name == "FAIL":
            parts = [self.strict(arg) for arg in args]
            return self.op("_cel_fail(" + ", ".join(f"{{{i}}}" for i in range(len(parts))) + ")", *parts)
        parts = [self.strict(arg) for arg in args]
        value_type = self.types[id(args[0])]
        if name in ("SUB", "MUL"):
            symbol = "-" if name == "SUB" else "*"
            template = (
                _INT64_WRAP.replace("+", symbol, 1) if value_type is _V.INT64 else f"({{0}} {symbol} {{1}})"
            )
        elif name == "NEG":
            template = _INT64_WRAP.format("0", "-{0}") if value_type is _V.INT64 else "(-{0})"
        else:
            template = _CEL_TEMPLATES[name]
        return self.fold(self.op(template, *parts), parts)

    def absorbing(self, node: Call) -> _Frag:
        """CEL's ``&&`` / ``||``: an error on one side is absorbed when the other side decides."""
        is_or = node.name == "LOR_ABSORB"
        left, right = self.strict(node.args[0]), self.strict(node.args[1])
        for side, other in ((left, right), (right, left)):
            if side.const and bool(side.value) == is_or:
                return self.constant(is_or)  # true || x, x || true, false && x, x && false
            if side.const:
                return other
        if not (_can_fail(node.args[0], self.types) or _can_fail(node.args[1], self.types)):
            return self.op("({0} or {1})" if is_or else "({0} and {1})", left, right)
        name = self.fresh("_s")
        decided, test = ("True", "_l") if is_or else ("False", "not _l")
        self.helpers.append(
            f"def {name}(a):\n"
            "    try:\n"
            f"        _l = {left.code}\n"
            "    except _EvaluationError as _e:\n"
            "        _l = _e\n"
            "    else:\n"
            f"        if {test}:\n"
            f"            return {decided}\n"
            "    try:\n"
            f"        _r = {right.code}\n"
            "    except _EvaluationError:\n"
            "        if isinstance(_l, _EvaluationError):\n"
            "            raise _l from None\n"
            "        raise\n"
            f"    if {test.replace('_l', '_r')}:\n"
            f"        return {decided}\n"
            "    if isinstance(_l, _EvaluationError):\n"
            "        raise _l\n"
            f"    return {'False' if is_or else 'True'}\n"
        )
        return _Frag(f"{name}(a)", 1)

    def extern(self, node: Call) -> _Frag:
        fn = self.functions[node.name]
        if fn.impl is None:
            raise CompileError(self.text, f"function {node.name} has no implementation", node.pos)
        operands = ([node.target] if node.target is not None else []) + list(node.args)
        parts = [self.strict(n) for n in operands]
        if all(p.const for p in parts) and fn.pure:
            try:
                return self.constant(fn.impl(*(p.value for p in parts)))
            except EvaluationError:
                pass  # fails at run time, like Mixer
        builtin = FUNCTIONS.get(node.name) is fn
        if builtin and node.name == "match" and parts[1].const:
            pattern: str = parts[1].value
            if pattern.endswith("*"):
                return self.op("{0}.startswith({1})", parts[0], self.constant(pattern[:-1]))
            if pattern.startswith("*"):
                return self.op("{0}.endswith({1})", parts[0], self.constant(pattern[1:]))
            return self.op("({0} == {1})", parts[0], parts[1])
        if builtin and node.name == "matches" and parts[0].const:
            try:
                regex = fns.compile_regex(parts[0].value)
            except EvaluationError as exc:
                return self.op(f"_raise_with({self.hoist(exc)}, {{0}})", parts[1])
            return self.op(f"({self.hoist(regex, '_re')}.search({{0}}) is not None)", parts[1])
        if builtin and node.name in ("startsWith", "endsWith"):
            method = "startswith" if node.name == "startsWith" else "endswith"
            return self.op(f"{{0}}.{method}({{1}})", parts[0], parts[1])
        impl = self.hoist(fn.impl, "_f")
        placeholders = ", ".join(f"{{{i}}}" for i in range(len(parts)))
        return self.op(f"{impl}({placeholders})", *parts)

    # --- nillable position: a value, _M (absent), or an error ----------------------------------

    def nillable(self, node: Node) -> _Frag:
        if isinstance(node, Variable):
            return _Frag(f"a.get({node.name!r}, _M)", 1, absent=True)
        if isinstance(node, Call) and node.target is None and node.name == "INDEX":
            return self.nillable_index(node, None)
        if isinstance(node, Call) and node.target is None and node.name == "OR":
            return self.or_chain(node, strict=False)
        return self.strict(node)

    def nillable_index(self, node: Call, default: _Frag | None) -> _Frag:
        """``m[k]`` that is absent (or ``default``) when ``m``, ``k`` or the key is missing."""
        target, key = node.args[0], node.args[1]
        fallback = "_M" if default is None else default.code
        absent = default is None
        if isinstance(target, Variable) and isinstance(key, Constant):
            kc = self.constant(key.value)
            return _Frag(f"a.get({target.name!r}, _E).get({kc.code}, {fallback})", 1, absent=absent)
        tf = self.nillable(target)  # (a target that is never absent just never takes the first branch)
        fb = _Frag("_M") if default is None else default
        t = self.fresh("_t")
        if isinstance(key, Constant) or not _may_be_absent(key):
            kf = self.strict(key)
            template = f"({{2}} if ({t} := {{0}}) is _M else {t}.get({{1}}, {{2}}))"
        else:
            kf = self.nillable(key)
            k = self.fresh("_t")
            inner = f"({{2}} if ({k} := {{1}}) is _M else {t}.get({k}, {{2}}))"
            template = f"({{2}} if ({t} := {{0}}) is _M else {inner})"
        return self.op(template, tf, kf, fb, absent=absent)

    def with_default(self, node: Node, default: _Frag) -> _Frag:
        """``node | default`` for a constant ``default``: ``a.get(name, default)`` and the like."""
        if isinstance(node, Variable):
            return _Frag(f"a.get({node.name!r}, {default.code})", 1)
        if isinstance(node, Call) and node.target is None and node.name == "INDEX":
            return self.nillable_index(node, default)
        t = self.fresh("_t")
        return self.op(f"({t} if ({t} := {{0}}) is not _M else {{1}})", self.nillable(node), default)

    def or_chain(self, node: Call, *, strict: bool) -> _Frag:
        elements: list[Node] = []
        for element in _flatten_or(node):
            elements.append(element)
            if not _may_be_absent(element):
                break  # never absent: what follows is unreachable
        last = elements[-1]
        acc = self.strict(last) if strict or not _may_be_absent(last) else self.nillable(last)
        for element in reversed(elements[:-1]):
            if acc.const:
                acc = self.with_default(element, acc)
            else:
                t = self.fresh("_t")
                acc = self.op(f"({t} if ({t} := {{0}}) is not _M else {{1}})", self.nillable(element), acc)
        if len(elements) == 1 and acc.const:
            return acc
        acc.absent = not strict and _may_be_absent(last)
        return acc


# --- compiled expressions --------------------------------------------------------------------

Evaluator = Callable[[Mapping[str, Any]], Any]


class Expression:
    """A compiled, immutable, re-entrant expression.

    * ``evaluate(attributes)`` returns the value (of ``result_type``'s runtime representation)
      or raises :class:`EvaluationError`. It is a plain function stored on the instance: calling
      it costs one Python call.
    * ``referenced(attributes, tracker=None)`` evaluates through a
      :class:`~mixerd.attribute.TrackingBag` and returns ``(value_or_error, tracker)``: the value,
      or the :class:`EvaluationError` instead of raising it, and the
      :class:`~mixerd.attribute.ReferenceTracker` holding what was looked up (``tracker.log()``
      is Mixer's ``["ai", "-as", "ar[foo]"]`` form). Pass a tracker to accumulate the references
      of several evaluations (a Check evaluates many expressions over one bag).
    * ``attributes``: every attribute name the expression may read (static).
    * ``reads``: the same, except that a string map the expression only looks keys up in, each
      a constant (``request.headers["x-user"]``, CEL's ``"x-user" in request.headers``), is named
      by those entries (:func:`~mixerd.attribute.map_entry`): ``request.headers[x-user]``.
    * ``is_constant`` / ``constant_value``: the expression reads nothing and was evaluated at
      compile time (``"true"``, ``ip("1.2.3.4")``).
    """

    __slots__ = (
        "attributes",
        "constant_value",
        "evaluate",
        "is_constant",
        "python_source",
        "reads",
        "result_type",
        "text",
        "tree",
    )

    text: str
    tree: Node
    result_type: ValueType
    attributes: frozenset[str]
    reads: frozenset[str]
    is_constant: bool
    constant_value: Any
    evaluate: Evaluator
    python_source: str

    def __init__(
        self,
        text: str,
        tree: Node,
        result_type: ValueType,
        evaluate: Evaluator,
        *,
        attributes: frozenset[str],
        is_constant: bool,
        constant_value: Any,
        python_source: str,
        reads: frozenset[str] | None = None,
    ) -> None:
        setter = object.__setattr__
        setter(self, "text", text)
        setter(self, "tree", tree)
        setter(self, "result_type", result_type)
        setter(self, "evaluate", evaluate)
        setter(self, "attributes", attributes)
        setter(self, "reads", attributes if reads is None else reads)
        setter(self, "is_constant", is_constant)
        setter(self, "constant_value", constant_value)
        setter(self, "python_source", python_source)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Expression is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("Expression is immutable")

    def referenced(
        self, attributes: Mapping[str, Any], tracker: ReferenceTracker | None = None
    ) -> tuple[Any, ReferenceTracker]:
        bag = TrackingBag(attributes, tracker)
        try:
            value = self.evaluate(bag)
        except EvaluationError as exc:
            value = exc
        return value, bag.tracker

    def __repr__(self) -> str:
        return f"Expression({self.text!r}, {self.result_type.name})"


@functools.lru_cache(maxsize=8192)
def _compile_source(source: str) -> CodeType:
    return builtins.compile(source, "<cexl>", "exec")


_TOO_DEEP: Final = "expression is too deeply nested"


def infer_type(
    text: str, manifest: Mapping[str, ValueType | str], *, functions: Mapping[str, Function] | None = None
) -> ValueType:
    """The static type of ``text`` (Mixer's ``checker.EvalType``), without compiling it.

    Parse errors read ``failed to parse expression '<text>': <reason>``. Errors of Mixer's code
    generator (``internal compiler error``) are not detected: use :func:`compile_expression`.
    """
    try:
        tree = parse(text)
    except CompileError as exc:
        raise CompileError(text, f"failed to parse expression '{text}': {exc.reason}", exc.position) from None
    try:
        return infer_types(text, tree, manifest, function_table(functions))[0]
    except CompileError:
        raise
    except RecursionError:
        raise CompileError(text, _TOO_DEEP) from None
    except Exception as exc:  # last resort: a bug here must not escape as another exception type
        raise _internal_error(text, exc) from exc


def compile_expression(
    text: str,
    manifest: Mapping[str, ValueType | str],
    *,
    dialect: str = "cexl",
    functions: Mapping[str, Function] | None = None,
) -> Expression:
    """Parse, type-check and compile ``text`` (see :func:`mixerd.lang.compile`)."""
    lang = dialect.lower()
    if lang not in DIALECTS:
        raise CompileError(
            text, f"unknown expression dialect {dialect!r} (expected one of {', '.join(DIALECTS)})"
        )
    try:
        if lang == "cexl":
            return _compile(text, manifest, function_table(functions))
        if functions is not None:
            raise CompileError(text, "extra functions are supported by the CEXL dialect only")
        tree, result_type, types = _cel.lower(text, manifest, compat=lang == "compat")
        return _generate(text, tree, result_type, types, function_table(_cel.CEL_FUNCTIONS))
    except CompileError:
        raise
    except RecursionError:
        raise CompileError(text, _TOO_DEEP) from None
    except Exception as exc:  # last resort: a bug here must not escape as another exception type
        raise _internal_error(text, exc) from exc


def _internal_error(text: str, exc: Exception) -> CompileError:
    """A compiler bug as a :class:`CompileError` naming the expression, so that config loading
    reports it against the field that holds ``text`` instead of failing as a whole."""
    _log.error("internal compiler error on expression %r", text, exc_info=exc)
    return CompileError(
        text, f"internal compiler error on expression {text!r} -- {type(exc).__name__}: {exc}", None
    )


def _compile(text: str, manifest: Mapping[str, ValueType | str], table: Mapping[str, Function]) -> Expression:
    tree = parse(text)
    result_type, types = infer_types(text, tree, manifest, table)
    check_generatable(text, tree, result_type, types)
    return _generate(text, tree, result_type, types, table)


def _generate(
    text: str, tree: Node, result_type: ValueType, types: dict[int, ValueType], table: Mapping[str, Function]
) -> Expression:
    """Python source for a type-checked tree (of either dialect), compiled and wrapped."""
    generator = _Generator(text, types, table)
    top = generator.spill(generator.strict(tree))
    reads: dict[str, tuple[str, ValueType, int]] = {}
    for node in walk(tree):
        if isinstance(node, Variable) and node.name not in reads:
            reads[node.name] = (node.name, types[id(node)], node.start)
    namespace = generator.namespace
    if top.const:
        source = f"def _cexl(a):\n    return {top.code}\n"
    else:
        namespace["_diagnose"] = functools.partial(_diagnose, tuple(reads.values()))
        source = "".join(generator.helpers) + (
            "def _cexl(a):\n"
            "    try:\n"
            f"        return {top.code}\n"
            "    except _EvaluationError:\n"
            "        raise\n"
            "    except Exception as _exc:\n"
            "        raise _diagnose(a, _exc) from _exc\n"
        )
    try:
        code = _compile_source(source)
    except (SyntaxError, MemoryError) as exc:
        raise CompileError(text, f"internal compiler error -- cannot compile generated code: {exc}") from None
    exec(code, namespace)
    return Expression(
        text,
        tree,
        result_type,
        namespace["_cexl"],
        attributes=frozenset(reads),
        is_constant=top.const,
        constant_value=top.value if top.const else None,
        python_source=source,
        reads=_entry_reads(tree, types),
    )


_LOOKUPS: Final = {"INDEX": (0, 1), "KEY": (0, 1), "HASKEY": (1, 0)}
"""The nodes that look a key up in a map: (the map's argument, the key's)."""


def _entry_reads(tree: Node, types: Mapping[int, ValueType]) -> frozenset[str]:
    """The attributes ``tree`` reads, a string map that is only looked up with constant keys
    named by those entries (see :attr:`Expression.reads`)."""
    looked_up: set[int] = set()  # the variables that are such a lookup's map
    entries: dict[str, set[str]] = {}
    for node in walk(tree):
        if isinstance(node, Call) and node.target is None and node.name in _LOOKUPS:
            m, k = (node.args[i] for i in _LOOKUPS[node.name])
            if (
                isinstance(m, Variable)
                and types.get(id(m)) is _V.STRING_MAP
                and isinstance(k, Constant)
                and type(k.value) is str
            ):
                looked_up.add(id(m))
                entries.setdefault(m.name, set()).add(k.value)
    whole = {n.name for n in walk(tree) if isinstance(n, Variable) and id(n) not in looked_up}
    return frozenset(whole).union(
        map_entry(name, key) for name, keys in entries.items() if name not in whole for key in keys
    )
