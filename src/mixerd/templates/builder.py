"""One generic instance builder for every template.

:func:`compile_instance` turns an instance's ``params`` (a tree whose leaves are expression
strings) into an :class:`InstanceBuilder`: every expression is compiled once and type-checked
against its field's type; all problems are reported together, each with its field path. At
request time :meth:`InstanceBuilder.build` evaluates the compiled expressions against a bag and
returns the template's frozen instance dataclass.

:func:`compile_output_mapper` does the same for an attribute generator's ``attributeBindings``
(attribute name <- expression over ``$out.<field>``).
"""

from __future__ import annotations

import builtins
import dataclasses
import json
import keyword
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

from mixerd.attribute import MISSING, ValueType
from mixerd.lang import Call, CompileError, Constant, EvaluationError, Expression, Variable, compile
from mixerd.templates.catalogue import ANY, TEMPLATES, FieldType, MapOf, Message, Template

__all__ = [
    "FieldError",
    "InstanceBuildError",
    "InstanceBuilder",
    "OutputMapper",
    "TemplateError",
    "compile_instance",
    "compile_output_mapper",
    "snake_case",
]

OUT_PREFIX: Final = "$out."
_OUT_NAME: Final = "__out__."  # what ``$out.`` becomes before compiling (a valid attribute prefix)


@dataclass(frozen=True, slots=True)
class FieldError:
    """A problem with one field: ``path`` is relative to the resource's ``spec`` (``params.value``)."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class TemplateError(ValueError):
    """An instance's params do not fit its template; ``errors`` lists every problem."""

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("; ".join(str(e) for e in errors))
        self.errors = errors


class InstanceBuildError(Exception):
    """An instance could not be built from a request's attributes (e.g. a missing attribute)."""


_CAMEL_RE: Final = re.compile(r"(?<=[a-z0-9])([A-Z])")


def snake_case(name: str) -> str:
    """``monitoredResourceType`` -> ``monitored_resource_type`` (configs may use either)."""
    return _CAMEL_RE.sub(r"_\1", name).lower()


# A compiled field: a function of the bag giving the field's value, or MISSING to leave it unset.
_Getter = Callable[[Mapping[str, Any]], Any]


class BuildFunction(Protocol):
    """:attr:`InstanceBuilder.build`: the instance for a bag (and an optional memo)."""

    def __call__(self, attributes: Mapping[str, Any], memo: dict[str, Any] | None = None, /) -> Any: ...


class InstanceBuilder:
    """Builds one instance (of one template) from a bag. Immutable and re-entrant.

    :meth:`build` is one generated Python function per builder (:func:`_generate_build`): every
    field's expression is called in line and a map field is a dict display of its expressions'
    calls, so building costs the expressions and the instance and little else. An evaluation
    error, or a field left unset, goes to the generic loop, which names the failing field.
    """

    __slots__ = ("_fields", "attributes", "build", "name", "template", "types")

    def __init__(
        self,
        name: str,
        template: Template,
        fields: tuple[tuple[str, _Getter], ...],
        types: Mapping[str, ValueType],
        attributes: frozenset[str],
    ) -> None:
        self.name = name
        self.template = template
        self._fields = tuple((key, getter, getattr(getter, "memo_key", None)) for key, getter in fields)
        self.types = types
        """Inferred type of every expression, by field path (``value``, ``dimensions.source``)."""
        self.attributes = attributes
        """Every attribute name the instance's expressions may read; a string map they only look
        constant keys up in is named by those entries (:attr:`mixerd.lang.Expression.reads`)."""
        self.build: BuildFunction = _generate_build(
            name, template.instance_class, self._fields, self.build_slowly
        )
        """The instance for a bag (and an optional memo): :meth:`build_slowly`, generated."""

    def build_slowly(self, attributes: Mapping[str, Any], memo: dict[str, Any] | None = None) -> Any:
        """The instance for ``attributes``.

        ``memo`` (optional, one per bag) shares computed map fields between instances: the
        stock Istio config gives four metrics the same twenty dimension expressions, which are
        then evaluated once per request instead of four times. Map values are shared, so
        handlers must treat instance maps as read-only (they are typed ``Mapping``).
        """
        kwargs: dict[str, Any] = {"name": self.name}
        key = ""
        try:
            for key, getter, memo_key in self._fields:
                if memo_key is not None and memo is not None:
                    value = memo.get(memo_key, MISSING)
                    if value is MISSING:
                        value = memo[memo_key] = getter(attributes)
                else:
                    value = getter(attributes)
                if value is not MISSING:
                    kwargs[key] = value
        except EvaluationError as exc:
            raise InstanceBuildError(f"instance {self.name}: {key}: {exc}") from None
        return self.template.instance_class(**kwargs)


class _WholeSetBuilder(InstanceBuilder):
    """The builder of a ``whole_set`` template: the instance is the attribute set itself.

    Its :attr:`attributes` is empty: what is read from the set is up to the handler, which says
    so with an ``attributes_read`` attribute (see :meth:`RoutingTable.attributes_read`)."""

    __slots__ = ()

    def __init__(self, name: str, template: Template) -> None:
        super().__init__(name, template, (), {}, frozenset())
        self.build = _whole_set


def _whole_set(attributes: Mapping[str, Any], memo: dict[str, Any] | None = None) -> Any:
    return attributes


def _generate_build(
    name: str,
    cls: type,
    fields: tuple[tuple[str, _Getter, str | None], ...],
    slow: BuildFunction,
) -> BuildFunction:
    """One function doing what ``slow`` (:meth:`InstanceBuilder.build_slowly`) does for these
    fields; ``slow`` itself when a field name cannot be a keyword argument."""
    if any(not key.isidentifier() or keyword.iskeyword(key) for key, _, _ in fields):
        return slow
    namespace: dict[str, Any] = {
        "_cls": cls,
        "_name": name,
        "_M": MISSING,
        "_E": EvaluationError,
        "_slow": slow,
    }
    body: list[str] = []
    values: list[str] = []
    for i, (_, getter, memo_key) in enumerate(fields):
        v = f"v{i}"
        if isinstance(getter, _MapGetter):
            calls = []
            for j, (k, ev) in enumerate(getter.items):
                namespace[f"e{i}_{j}"] = ev
                calls.append(f"{k!r}: e{i}_{j}(a)")
            compute = "{" + ", ".join(calls) + "}"
        else:
            namespace[f"g{i}"] = getter
            compute = f"g{i}(a)"
        if memo_key is not None:
            namespace[f"k{i}"] = memo_key
            body += [
                "        if memo is None:",
                f"            {v} = {compute}",
                "        else:",
                f"            {v} = memo.get(k{i}, _M)",
                f"            if {v} is _M:",
                f"                {v} = memo[k{i}] = {compute}",
            ]
        else:
            body.append(f"        {v} = {compute}")
        values.append(v)
    unset = " or ".join(f"{v} is _M" for v in values) or "False"
    args = _positional(cls, {key: v for (key, _, _), v in zip(fields, values, strict=True)}, namespace)
    if args is None:  # not a plain dataclass: keyword arguments
        args = "".join(f", {key}={v}" for (key, _, _), v in zip(fields, values, strict=True))
    source = (
        "def build(a, memo=None):\n"
        "    try:\n" + "\n".join(body or ["        pass"]) + "\n"
        "    except _E:\n"
        "        return _slow(a, memo)\n"
        f"    if {unset}:\n"
        "        return _slow(a, memo)\n"
        f"    return _cls(_name{args})\n"
    )
    exec(builtins.compile(source, f"<instance {name}>", "exec"), namespace)
    build: BuildFunction = namespace["build"]
    return build


def _positional(cls: type, given: Mapping[str, str], namespace: dict[str, Any]) -> str | None:
    """The arguments after ``name`` of a positional call of dataclass ``cls`` (cheaper than
    keywords): the variables in ``given`` by field, each other field's default (its factory
    called, as ``__init__`` would); None when ``cls`` is not a dataclass whose ``__init__`` takes
    exactly its fields, ``name`` first."""
    if not dataclasses.is_dataclass(cls):
        return None
    fields = dataclasses.fields(cls)
    if not fields or fields[0].name != "name" or any(not f.init or f.kw_only for f in fields):
        return None
    args: list[str] = []
    for i, f in enumerate(fields[1:]):
        if f.name in given:
            args.append(given[f.name])
        elif f.default is not dataclasses.MISSING:
            namespace[f"d{i}"] = f.default
            args.append(f"d{i}")
        elif f.default_factory is not dataclasses.MISSING:
            namespace[f"f{i}"] = f.default_factory
            args.append(f"f{i}()")
        else:
            return None  # a required field the instance does not set: let the call say so
    return "".join(f", {a}" for a in args)


class _MapGetter:
    """Evaluates a map of expressions; ``memo_key`` identifies the map by its expression texts."""

    __slots__ = ("items", "memo_key")

    def __init__(
        self, items: tuple[tuple[str, Callable[[Mapping[str, Any]], Any]], ...], memo_key: str
    ) -> None:
        self.items = items
        self.memo_key = memo_key

    def __call__(self, bag: Mapping[str, Any]) -> dict[str, Any]:
        return {k: ev(bag) for k, ev in self.items}


def compile_instance(
    name: str,
    template_name: str | Template,
    params: Mapping[str, Any] | None,
    manifest: Mapping[str, ValueType],
    *,
    dialect: str = "cexl",
) -> InstanceBuilder:
    """Compile ``params`` for ``template_name`` (a compiled-in template's name, or a
    :class:`Template`, e.g. one defined by a ``template`` resource); raise
    :class:`TemplateError` listing every problem.

    ``dialect`` is the expression language of every expression in ``params`` (``cexl``, ``cel``
    or ``compat``: the instance's ``policy.istio.io/lang`` annotation)."""
    template = template_name if isinstance(template_name, Template) else TEMPLATES.get(template_name)
    if template is None:
        known = ", ".join(sorted(TEMPLATES))
        raise TemplateError([FieldError("template", f"unknown template '{template_name}' (known: {known})")])
    if template.whole_set:
        if params:
            raise TemplateError(
                [
                    FieldError(
                        "params",
                        f"template '{template.name}' takes no params: its instance is the call's "
                        "attribute set itself (remove params)",
                    )
                ]
            )
        return _WholeSetBuilder(name, template)
    errors: list[FieldError] = []
    types: dict[str, ValueType] = {}
    attributes: set[str] = set()
    fields = _compile_fields(template.fields, params, "params", manifest, errors, types, attributes, dialect)
    if errors:
        raise TemplateError(errors)
    return InstanceBuilder(name, template, fields, types, frozenset(attributes))


def _compile_fields(
    spec: Mapping[str, FieldType],
    params: Any,
    path: str,
    manifest: Mapping[str, ValueType],
    errors: list[FieldError],
    types: dict[str, ValueType],
    attributes: set[str],
    dialect: str,
) -> tuple[tuple[str, _Getter], ...]:
    if params is None:
        return ()
    if not isinstance(params, Mapping):
        errors.append(FieldError(path, f"expected a map of fields, got {type(params).__name__}"))
        return ()
    out: list[tuple[str, _Getter]] = []
    for raw_key, raw in params.items():
        key = snake_case(str(raw_key))
        fpath = f"{path}.{raw_key}"
        ftype = spec.get(key)
        if ftype is None:
            valid = ", ".join(spec) or "none"
            errors.append(FieldError(fpath, f"unknown field (this template has: {valid})"))
            continue
        getter = _compile_field(
            ftype, raw, fpath, f"{path}.{key}", manifest, errors, types, attributes, dialect
        )
        if getter is not None:
            out.append((key, getter))
    return tuple(out)


def _compile_field(
    ftype: FieldType,
    raw: Any,
    path: str,
    type_path: str,
    manifest: Mapping[str, ValueType],
    errors: list[FieldError],
    types: dict[str, ValueType],
    attributes: set[str],
    dialect: str,
) -> _Getter | None:
    """``path`` names the field as the config spells it (for errors); ``type_path`` in snake_case
    (the key of :attr:`InstanceBuilder.types`)."""
    short = type_path.removeprefix("params.")
    if isinstance(ftype, Message):
        sub = _compile_fields(ftype.fields, raw, path, manifest, errors, types, attributes, dialect)
        cls = ftype.cls

        def build_message(bag: Mapping[str, Any], _sub: tuple[tuple[str, _Getter], ...] = sub) -> Any:
            kwargs = {}
            for k, g in _sub:
                v = g(bag)
                if v is not MISSING:
                    kwargs[k] = v
            return cls(**kwargs)

        return build_message
    if isinstance(ftype, MapOf):
        if raw is None:
            return None
        if not isinstance(raw, Mapping):
            errors.append(FieldError(path, f"expected a map of expressions, got {type(raw).__name__}"))
            return None
        entries: list[tuple[str, Callable[[Mapping[str, Any]], Any]]] = []
        texts: list[tuple[str, str]] = []
        for k, text in raw.items():
            expr = _compile_expr(text, ftype.value, f"{path}.{k}", manifest, errors, dialect)
            if expr is not None:
                texts.append((str(k), expr.text))
                types[f"{short}.{k}"] = expr.result_type
                attributes.update(expr.reads)
                entries.append((str(k), expr.evaluate))
        items = tuple(entries)
        return _MapGetter(items, json.dumps(sorted((k, t) for k, t in texts), separators=(",", ":")))
    expr = _compile_expr(raw, ftype, path, manifest, errors, dialect)
    if expr is None:
        return None
    types[short] = expr.result_type
    attributes.update(expr.reads)
    return expr.evaluate


def _compile_expr(
    raw: Any,
    want: ValueType | Any,
    path: str,
    manifest: Mapping[str, ValueType],
    errors: list[FieldError],
    dialect: str = "cexl",
) -> Expression | None:
    if raw is None:
        return None
    if isinstance(raw, bool):
        text = "true" if raw else "false"
    elif isinstance(raw, int | float):
        text = repr(raw)
    elif isinstance(raw, str):
        text = raw
    else:
        errors.append(FieldError(path, f"expected an expression string, got {type(raw).__name__}"))
        return None
    if not text.strip():
        return None
    try:
        expr = compile(text, manifest, dialect=dialect)
    except CompileError as exc:
        errors.append(FieldError(path, f"{exc}"))
        return None
    if expr.result_type is ValueType.VALUE_TYPE_UNSPECIFIED:  # only CEL has such values
        errors.append(
            FieldError(
                path, f"expression '{text}' gives a CEL list, bytes, uint or type, not an attribute value"
            )
        )
        return None
    if want is not ANY and expr.result_type != want:
        errors.append(
            FieldError(
                path,
                f"expression '{text}' has type {expr.result_type.name}, the field needs {want.name}",
            )
        )
        return None
    return expr


class OutputMapper:
    """Maps an attribute generator's output fields to attributes (``attributeBindings``).

    Most bindings are ``$out.<field>`` or ``$out.<field> | <constant>`` (every binding of the
    stock Istio config is); those become a plain dictionary lookup with a default. Others are
    evaluated as expressions over the outputs.
    """

    __slots__ = ("_bindings", "_direct", "attributes")

    def __init__(self, bindings: tuple[tuple[str, Expression], ...]) -> None:
        direct: list[tuple[str, str, Any]] = []
        general: list[tuple[str, Expression]] = []
        for attr, expr in bindings:
            simple = _direct_binding(expr)
            if simple is None:
                general.append((attr, expr))
            else:
                direct.append((attr, *simple))
        self._direct = tuple(direct)
        self._bindings = tuple(general)
        self.attributes = frozenset(name for name, _ in bindings)
        """The attribute names this mapper can produce."""

    def map(self, outputs: Mapping[str, Any]) -> dict[str, Any]:
        """Evaluate the bindings over the generator's ``outputs`` (only the fields it set)."""
        get = outputs.get
        result = {attr: get(field, default) for attr, field, default in self._direct}
        if any(v is MISSING for v in result.values()):
            result = {k: v for k, v in result.items() if v is not MISSING}
        if self._bindings:
            bag = {_OUT_NAME + k: v for k, v in outputs.items()}
            for attr, expr in self._bindings:
                try:
                    value = expr.evaluate(bag)
                except EvaluationError:
                    continue  # an output the generator did not set, with no fallback: no attribute
                result[attr] = value
        return result


def _direct_binding(expr: Expression) -> tuple[str, Any] | None:
    """``(field, default)`` when ``expr`` is ``$out.field`` (default MISSING) or
    ``$out.field | <constant expression>``; None otherwise."""
    tree = expr.tree
    if isinstance(tree, Variable) and tree.name.startswith(_OUT_NAME):
        return tree.name[len(_OUT_NAME) :], MISSING
    if not (isinstance(tree, Call) and tree.name == "OR" and tree.target is None and len(tree.args) == 2):
        return None
    first, rest = tree.args
    if not (isinstance(first, Variable) and first.name.startswith(_OUT_NAME)):
        return None
    if isinstance(rest, Constant):
        return first.name[len(_OUT_NAME) :], rest.value
    try:
        fallback = compile(expr.text[rest.start :], {})
    except CompileError:
        return None
    if not fallback.is_constant or fallback.result_type != expr.result_type:
        return None
    return first.name[len(_OUT_NAME) :], fallback.constant_value


def compile_output_mapper(
    template_name: str,
    bindings: Mapping[str, Any] | None,
    manifest: Mapping[str, ValueType],
) -> OutputMapper:
    """Compile ``attributeBindings`` of a generator instance; raise :class:`TemplateError`."""
    template = TEMPLATES[template_name]
    out_manifest = dict(manifest)
    out_manifest.update({_OUT_NAME + k: t for k, t in template.outputs.items()})
    errors: list[FieldError] = []
    compiled: list[tuple[str, Expression]] = []
    for attr, text in (bindings or {}).items():
        path = f"attributeBindings.{attr}"
        target = manifest.get(str(attr))
        if target is None:
            errors.append(FieldError(path, f"unknown attribute '{attr}' (not in any attribute manifest)"))
            continue
        if not isinstance(text, str) or not text.strip():
            errors.append(FieldError(path, "expected an expression over $out.<field>"))
            continue
        source = text.replace(OUT_PREFIX, _OUT_NAME)
        try:
            expr = compile(source, out_manifest)
        except CompileError as exc:
            errors.append(FieldError(path, str(exc).replace(_OUT_NAME, OUT_PREFIX)))
            continue
        if expr.result_type != target:
            errors.append(
                FieldError(
                    path,
                    f"expression '{text}' has type {expr.result_type.name}, "
                    f"attribute '{attr}' is {target.name}",
                )
            )
            continue
        compiled.append((str(attr), expr))
    if errors:
        raise TemplateError(errors)
    return OutputMapper(tuple(compiled))
