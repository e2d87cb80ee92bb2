"""Mixer's expression languages (CEXL, CEL, COMPAT): parse, type-check and compile expressions.

>>> from mixerd.attribute import ValueType
>>> expr = compile('source.labels["app"] | "unknown"', {"source.labels": ValueType.STRING_MAP})
>>> expr.result_type.name, expr.evaluate({"source.labels": {"app": "reviews"}}), expr.evaluate({})
('STRING', 'reviews', 'unknown')

* :func:`compile` returns an immutable :class:`Expression`; its ``evaluate(attributes)`` takes any
  ``Mapping`` of attribute values (see :mod:`mixerd.attribute` for their Python types) and raises
  :class:`EvaluationError`; ``referenced(attributes)`` also reports which attributes were looked
  up (the recipe of Mixer's ``ReferencedAttributes``).
* Bad expressions raise :class:`CompileError`, whose ``reason`` is Mixer's message for the same
  expression and ``position`` the 0-based offset it points at.
* :data:`FUNCTIONS` is the catalogue of extern functions (``ip``, ``match``, ``matches`` ...);
  pass your own mapping of :class:`Function` to add some. Operators and ``conditional``/``size``
  are intrinsics (:data:`INTRINSICS`).
* :func:`parse` gives the expression tree (``str(tree)`` is Mixer's postfix form),
  :func:`extract_eq_matches` the top-level ``attr == constant`` tests, :func:`infer_type` the
  static type without compiling.

Typed equality is decided by the static type of the operands: DNS names compare
case-insensitively with IDNA mapping and one optional trailing dot, e-mail addresses by local part
and DNS domain, URIs with scheme and (for http/https) host normalised, IP addresses by address,
timestamps by instant.

``dialect="cel"`` compiles CEL and ``dialect="compat"`` CEXL's syntax with CEL's semantics (Mixer's
``policy.istio.io/lang: CEL`` / ``COMPAT``): :mod:`mixerd.lang.cel` lowers them into the same tree,
which the same compiler turns into Python.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mixerd.attribute import ValueType
from mixerd.lang.compiler import Expression, compile_expression, infer_type
from mixerd.lang.errors import CompileError, EvaluationError
from mixerd.lang.functions import FUNCTIONS, INTRINSICS, Function
from mixerd.lang.parser import parse
from mixerd.lang.syntax import Call, Constant, Node, Variable
from mixerd.lang.syntax import extract_eq_matches as _extract_eq_matches

__all__ = [
    "FUNCTIONS",
    "INTRINSICS",
    "Call",
    "CompileError",
    "Constant",
    "EvaluationError",
    "Expression",
    "Function",
    "Node",
    "Variable",
    "compile",
    "extract_eq_matches",
    "infer_type",
    "parse",
]


def compile(
    text: str,
    manifest: Mapping[str, ValueType | str],
    *,
    dialect: str = "cexl",
    functions: Mapping[str, Function] | None = None,
) -> Expression:
    """Compile the expression ``text`` against an attribute ``manifest`` (name -> type).

    ``dialect`` is ``"cexl"`` (Mixer's default language), ``"cel"`` or ``"compat"``
    (:mod:`mixerd.lang.cel`). ``functions`` (CEXL only) replaces the extern catalogue
    :data:`FUNCTIONS` (pass ``{**FUNCTIONS, ...}`` to extend it). Raises :class:`CompileError`; an
    empty text is an error too.
    """
    return compile_expression(text, manifest, dialect=dialect, functions=functions)


def extract_eq_matches(text: str) -> dict[str, Any]:
    """The ``attribute == constant`` tests joined by top-level ``&&`` in ``text`` (Mixer's
    ``ExtractEQMatches``): if any of them is false, the expression is false."""
    return _extract_eq_matches(parse(text))
