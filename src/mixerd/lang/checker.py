"""Type checking: the static type of every node, with Mixer's error messages.

Two passes, as in Mixer:

1. :func:`infer_types` is Mixer's ``Expression.EvalType`` (``mixer/pkg/lang/ast/expr.go``):
   variables take their type from the manifest, each function checks its target and arguments
   against its :class:`~mixerd.lang.functions.Function` metadata, and VALUE_TYPE_UNSPECIFIED
   parameters bind a template type (so ``ai == true`` fails with ``EQ($ai, true) arg 2 (true)
   typeError got BOOL, expected INT64``). Unlike Mixer, surplus arguments are an arity error
   instead of being silently ignored.
2. :func:`check_generatable` finds what Mixer's IL code generator (``lang/compiler/compiler.go``)
   refuses with an ``internal compiler error``: ``==`` on DURATION or STRING_MAP, ``<`` on BOOL,
   DURATION, IP_ADDRESS or STRING_MAP, ``+`` on anything but STRING, INT64 and DOUBLE, an
   expression or attribute of unspecified type. Keeping these errors keeps mixerd accepting
   exactly the configurations Mixer accepted.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from mixerd.attribute import ValueType
from mixerd.lang.errors import CompileError
from mixerd.lang.functions import Function
from mixerd.lang.syntax import Call, Constant, Node, Variable

__all__ = ["Types", "attribute_type", "check_generatable", "il_type_name", "infer_types"]

_U: Final = ValueType.VALUE_TYPE_UNSPECIFIED

Types = dict[int, ValueType]
"""Static type of each node of one tree, keyed by ``id(node)``."""


def attribute_type(text: str, manifest: Mapping[str, ValueType | str], var: Variable) -> ValueType:
    """The manifest type of ``var`` (``unknown attribute <name>`` if it has none)."""
    raw = manifest.get(var.name)
    if raw is None:
        raise CompileError(text, f"unknown attribute {var.name}", var.start)
    try:
        return ValueType.parse(raw)
    except ValueError as exc:
        raise CompileError(text, f"attribute {var.name}: {exc}", var.start) from None


def infer_types(
    text: str, tree: Node, manifest: Mapping[str, ValueType | str], functions: Mapping[str, Function]
) -> tuple[ValueType, Types]:
    """Type-check ``tree``; return its type and the type of every node. ``functions`` must hold
    the intrinsics as well as the externs (see :func:`mixerd.lang.compiler.function_table`)."""
    types: Types = {}

    def type_of(node: Node) -> ValueType:
        if isinstance(node, Constant):
            result = node.type
        elif isinstance(node, Variable):
            result = attribute_type(text, manifest, node)
        else:
            result = call_type(node)
        types[id(node)] = result
        return result

    def call_type(f: Call) -> ValueType:
        fn = functions.get(f.name)
        if fn is None:
            raise CompileError(text, f"unknown function: {f.name}", f.pos)
        template = _U
        if f.target is not None:
            if not fn.instance:
                raise CompileError(text, f"invoking regular function on instance method: {f.name}", f.pos)
            target_type = type_of(f.target)
            if fn.target_type is _U:
                template = target_type
            elif target_type is not fn.target_type:
                raise CompileError(
                    text,
                    f"{f} target typeError got {target_type.name}, expected {fn.target_type.name}",
                    f.target.start,
                )
        elif fn.instance:
            raise CompileError(text, f"invoking instance method without an instance: {f.name}", f.pos)
        expected_count = len(fn.argument_types)
        if len(f.args) < expected_count:
            raise CompileError(
                text, f"{f} arity mismatch. Got {len(f.args)} arg(s), expected {expected_count} arg(s)", f.pos
            )
        for index, (arg, expected) in enumerate(zip(f.args, fn.argument_types, strict=False)):
            arg_type = type_of(arg)
            if expected is _U:
                if template is _U:
                    template = arg_type
                    continue
                expected = template
            if arg_type is not expected:
                raise CompileError(
                    text,
                    f"{f} arg {index + 1} ({arg}) typeError got {arg_type.name}, expected {expected.name}",
                    arg.start,
                )
        if len(f.args) > expected_count:
            raise CompileError(
                text,
                f"{f} arity mismatch. Got {len(f.args)} arg(s), expected {expected_count} arg(s)",
                f.args[expected_count].start,
            )
        return template if fn.return_type is _U else fn.return_type

    return type_of(tree), types


_IL_NAMES: Final = {
    ValueType.STRING: "string",
    ValueType.EMAIL_ADDRESS: "string",
    ValueType.DNS_NAME: "string",
    ValueType.URI: "string",
    ValueType.BOOL: "bool",
    ValueType.INT64: "integer",
    ValueType.DURATION: "duration",
    ValueType.DOUBLE: "double",
    ValueType.STRING_MAP: "interface",
    ValueType.IP_ADDRESS: "interface",
    ValueType.TIMESTAMP: "interface",
}


def il_type_name(value_type: ValueType) -> str | None:
    """The name of the Mixer IL type a value type is carried as (None: none, it can't be)."""
    return _IL_NAMES.get(value_type)


def _il(value_type: ValueType) -> str:
    return _IL_NAMES.get(value_type, "unknown")


_EQ_OK: Final = frozenset(
    {
        ValueType.STRING,
        ValueType.EMAIL_ADDRESS,
        ValueType.DNS_NAME,
        ValueType.URI,
        ValueType.BOOL,
        ValueType.INT64,
        ValueType.DOUBLE,
        ValueType.IP_ADDRESS,
        ValueType.TIMESTAMP,
    }
)
_ORDER_OK: Final = frozenset(
    {
        ValueType.STRING,
        ValueType.EMAIL_ADDRESS,
        ValueType.DNS_NAME,
        ValueType.URI,
        ValueType.INT64,
        ValueType.DOUBLE,
        ValueType.TIMESTAMP,
    }
)
_ADD_OK: Final = frozenset(
    {
        ValueType.STRING,
        ValueType.EMAIL_ADDRESS,
        ValueType.DNS_NAME,
        ValueType.URI,
        ValueType.INT64,
        ValueType.DOUBLE,
    }
)
_COMPARISONS: Final = {
    "EQ": ("equality", _EQ_OK),
    "NEQ": ("equality", _EQ_OK),
    "LT": ("less than", _ORDER_OK),
    "LEQ": ("less or equal", _ORDER_OK),
    "GT": ("greater than", _ORDER_OK),
    "GEQ": ("greater or equal", _ORDER_OK),
}


def check_generatable(text: str, tree: Node, result_type: ValueType, types: Types) -> None:
    """Raise Mixer's ``internal compiler error -- ...`` for what its code generator rejects.

    Nodes are visited in the generator's order (arguments before the operation using them), so
    the error reported is the one Mixer reports first.
    """

    def fail(node: Node, detail: str) -> CompileError:
        pos = node.pos if isinstance(node, Call) else node.start
        return CompileError(text, f"internal compiler error -- {detail}", pos)

    if il_type_name(result_type) is None:
        raise fail(tree, f"unhandled expression type: '{result_type.name}'")

    def visit(node: Node) -> None:
        if isinstance(node, Constant):
            return
        if isinstance(node, Variable):
            vt = types[id(node)]
            if il_type_name(vt) is None:
                raise fail(node, f"unhandled expression type: '{vt.name}'")
            return
        name = node.name
        if name in _COMPARISONS:
            visit(node.args[0])
            if not isinstance(node.args[1], Constant):
                visit(node.args[1])
            what, allowed = _COMPARISONS[name]
            vt = types[id(node.args[0])]
            if vt not in allowed:
                raise fail(node, f"{what} for type not yet implemented: {_il(vt)}")
        elif name == "ADD":
            visit(node.args[0])
            visit(node.args[1])
            vt = types[id(node.args[0])]
            if vt not in _ADD_OK:
                raise fail(node, f"Add for type not yet implemented: {_il(vt)}")
        elif name == "size":
            vt = types[id(node.args[0])]
            if il_type_name(vt) != "string":
                raise fail(node, f"Size for type not yet implemented: {_il(vt)}")
            if not isinstance(node.args[0], Constant):
                visit(node.args[0])
        elif name == "INDEX":
            visit(node.args[0])
            if not isinstance(node.args[1], Constant):
                visit(node.args[1])
        else:
            if node.target is not None:
                visit(node.target)
            for arg in node.args:
                visit(arg)

    visit(tree)
