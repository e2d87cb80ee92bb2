"""``mixerd adapter new NAME --templates metric,listentry``: a complete adapter package to start from.

The files are rendered from the Jinja templates in ``mixerd/cli/scaffold/`` (package data): a
``pyproject.toml`` registering the adapter under the ``mixerd.adapters`` entry point, the adapter
(:class:`~mixerd.adapter.Info`, a builder whose ``validate()`` reads the params with
:class:`~mixerd.adapter.Params`, a handler with one method per template), tests driving it
through :class:`~mixerd.adapter.testing.AdapterHarness`, a README and ``config/sample.yaml``
(handler, one instance per template, a rule) that ``mixerd validate`` accepts once the package
is installed. The walk-through is docs/adapters.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import keyword
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import jinja2
import yaml

from mixerd.adapter import load_adapters
from mixerd.templates import TEMPLATES, Variety

__all__ = ["ScaffoldError", "generate", "register", "run_new"]

_NAME_RE: Final = re.compile(r"[a-z][a-z0-9_]*\Z")
_NAMESPACE: Final = "istio-system"
_WIDTH: Final = 100
"""Generated code fits in this many columns."""


class ScaffoldError(ValueError):
    """The adapter cannot be generated as asked (the message says why and what to do)."""


@dataclass(frozen=True, slots=True)
class _Example:
    """How the generated files use one template: the instance's params (expressions), the
    attributes of a test request, and what the test asserts on the instance received (``got``)."""

    params: Mapping[str, Any]
    attributes: Mapping[str, Any]
    asserts: tuple[str, ...]
    bindings: Mapping[str, str] = field(default_factory=dict)


_EXAMPLES: Final[Mapping[str, _Example]] = {
    "metric": _Example(
        {
            "value": "request.size | 0",
            "dimensions": {"source": 'source.workload.name | "unknown"', "code": "response.code | 200"},
        },
        {"request.size": 512, "source.workload.name": "web", "response.code": 503},
        ("got.value == 512", 'got.dimensions["source"] == "web"', 'got.dimensions["code"] == 503'),
    ),
    "logentry": _Example(
        {
            "severity": '"info"',
            "variables": {"path": 'request.path | "/"', "user": 'request.headers["x-user"] | "anonymous"'},
        },
        {"request.path": "/orders", "request.headers": {"x-user": "alice"}},
        ('got.severity == "info"', 'got.variables["path"] == "/orders"', 'got.variables["user"] == "alice"'),
    ),
    "tracespan": _Example(
        {
            "trace_id": 'request.headers["x-b3-traceid"] | ""',
            "span_id": 'request.headers["x-b3-spanid"] | ""',
            "span_name": 'request.path | "/"',
            "http_status_code": "response.code | 0",
        },
        {
            "request.headers": {"x-b3-traceid": "463ac35c9f6413ad", "x-b3-spanid": "a2fb4a1d1a96d312"},
            "request.path": "/orders",
            "response.code": 200,
        },
        ('got.trace_id == "463ac35c9f6413ad"', 'got.span_name == "/orders"', "got.http_status_code == 200"),
    ),
    "edge": _Example(
        {
            "source_workload_name": 'source.workload.name | "unknown"',
            "destination_workload_name": 'destination.workload.name | "unknown"',
            "context_protocol": 'context.protocol | "tcp"',
        },
        {"source.workload.name": "web", "destination.workload.name": "db", "context.protocol": "http"},
        (
            'got.source_workload_name == "web"',
            'got.destination_workload_name == "db"',
            'got.context_protocol == "http"',
        ),
    ),
    "reportnothing": _Example({}, {}, ()),
    "listentry": _Example(
        {"value": 'source.workload.name | "unknown"'},
        {"source.workload.name": "web"},
        ('got.value == "web"',),
    ),
    "authorization": _Example(
        {
            "subject": {"user": 'source.principal | ""'},
            "action": {"method": 'request.method | "GET"', "path": 'request.path | "/"'},
        },
        {
            "source.principal": "cluster.local/ns/default/sa/web",
            "request.method": "POST",
            "request.path": "/orders",
        },
        (
            'got.subject.user == "cluster.local/ns/default/sa/web"',
            'got.action.method == "POST"',
            'got.action.path == "/orders"',
        ),
    ),
    "apikey": _Example(
        {"api_key": 'request.api_key | ""', "api_operation": 'request.path | "/"'},
        {"request.api_key": "k-123", "request.path": "/orders"},
        ('got.api_key == "k-123"', 'got.api_operation == "/orders"'),
    ),
    "checknothing": _Example({}, {}, ()),
    "quota": _Example(
        {"dimensions": {"user": 'request.headers["x-user"] | "anonymous"'}},
        {"request.headers": {"x-user": "alice"}},
        ('got.dimensions["user"] == "alice"',),
    ),
    "kubernetes": _Example(
        {"source_uid": 'source.uid | ""', "destination_uid": 'destination.uid | ""'},
        {"source.uid": "kubernetes://web-1.default"},
        ('got.source_uid == "kubernetes://web-1.default"',),
        bindings={"source.namespace": "$out.source_namespace"},
    ),
}


def _class_prefix(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_") if part)


def _inside(origin: str | None, directory: Path | None) -> bool:
    if origin is None or directory is None:
        return False
    return Path(origin).resolve().is_relative_to(directory.resolve())


def check_name(name: str, regenerate_in: Path | None = None) -> None:
    """Refuse a name that cannot be the adapter's package, entry point and distribution name.
    ``regenerate_in``: with ``--force``, the output directory; an installed adapter or module of
    that name whose code lives there is the package being regenerated, not a clash."""
    if not _NAME_RE.match(name) or keyword.iskeyword(name):
        raise ScaffoldError(
            f"invalid adapter name {name!r}: it names the Python package, the entry point and the "
            "distribution, so it must be a lower-case Python identifier (a letter, then letters, digits "
            "or '_'), not a keyword; for example 'my_adapter'"
        )
    spec = importlib.util.find_spec(name)
    ours = spec is not None and _inside(spec.origin, regenerate_in)
    installed = load_adapters()
    if name in installed and not ours:
        raise ScaffoldError(
            f"an adapter named {name!r} is already installed (entry point in group 'mixerd.adapters'); "
            "choose another name"
        )
    if spec is not None and not ours:
        raise ScaffoldError(
            f"a Python module named {name!r} is already importable here; the new package would clash "
            "with it: choose another name"
        )


_SCAFFOLDED: Final = tuple(name for name, t in TEMPLATES.items() if not t.whole_set)
"""The templates a new adapter can be scaffolded for: not ``attributes``, whose instance is the
attribute set itself (handlers of it read attributes by name: see the built-in ``console``)."""


def parse_templates(text: str) -> list[str]:
    """``metric,listentry`` -> the template names, in catalogue order, each known."""
    asked = [t.strip() for t in text.split(",") if t.strip()]
    known = ", ".join(_SCAFFOLDED)
    if not asked:
        raise ScaffoldError(f"--templates needs at least one template (known: {known})")
    whole = [t for t in asked if t in TEMPLATES and TEMPLATES[t].whole_set]
    if whole:
        raise ScaffoldError(
            f"template(s) {', '.join(whole)}: the instance is the call's attribute set itself, with no "
            f"fields to scaffold; a handler of it reads attributes by name (see the built-in console "
            f"adapter). Known: {known}"
        )
    unknown = [t for t in asked if t not in TEMPLATES]
    if unknown:
        raise ScaffoldError(f"unknown template(s): {', '.join(unknown)} (known: {known})")
    return [t for t in _SCAFFOLDED if t in asked]


def _literal(value: Any, indent: int, lead: int | None = None) -> str:
    """``value`` as Python source in the style of ``ruff format`` (double quotes, one item per line
    with a trailing comma when it does not fit in 100 columns), continuation lines indented by
    ``indent``; ``lead`` is the column the literal starts at (default ``indent``)."""
    if isinstance(value, str):
        if '"' in value and "'" not in value and "\\" not in value:
            return f"'{value}'"
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bool | int | float) or value is None:
        return repr(value)
    if isinstance(value, Mapping):
        items = []
        for k, v in value.items():
            key = _literal(k, indent + 4)
            items.append(f"{key}: {_literal(v, indent + 4, lead=indent + 4 + len(key) + 2)}")
        opening, closing = "{", "}"
    else:
        items = [_literal(v, indent + 4) for v in value]
        opening, closing = ("(", ")") if isinstance(value, tuple) else ("[", "]")
    flat = opening + ", ".join(items) + ("," if len(items) == 1 and opening == "(" else "") + closing
    start = indent if lead is None else lead
    if not items or (start + len(flat) + 1 <= _WIDTH and "\n" not in flat):
        return flat
    inner = "".join(f"{' ' * (indent + 4)}{item},\n" for item in items)
    return f"{opening}\n{inner}{' ' * indent}{closing}"


def _yaml_block(value: Any, indent: int) -> str:
    """A YAML block, indented by ``indent`` spaces (no trailing newline)."""
    text = yaml.safe_dump(value, sort_keys=False, default_flow_style=False, width=100).rstrip("\n")
    return "\n".join(" " * indent + line for line in text.splitlines())


def _context(name: str, templates: Sequence[str]) -> dict[str, Any]:
    varieties = {t: TEMPLATES[t].variety for t in templates}
    check = [t for t, v in varieties.items() if v in (Variety.CHECK, Variety.CHECK_WITH_OUTPUT)]
    report = [t for t, v in varieties.items() if v is Variety.REPORT]
    quota = [t for t, v in varieties.items() if v is Variety.QUOTA]
    generators = [t for t, v in varieties.items() if v is Variety.ATTRIBUTE_GENERATOR]
    params: dict[str, Any] = {"keepLast": 100}
    if check:
        params.update(verdict="ALLOW", message=f"denied by {name}")
    if check or quota:
        params["validDuration"] = "10s"
    if quota:
        params["maxAmount"] = 5
    if generators:
        params["outputs"] = {"source_namespace": "default"}
    items = []
    for t in templates:
        ex = _EXAMPLES[t]
        spec_params: dict[str, Any] = dict(ex.params)
        items.append(
            {
                "name": t,
                "variety": varieties[t].name,
                "instance_class": TEMPLATES[t].instance_class.__name__,
                "description": TEMPLATES[t].description,
                "instance": f"{name}-{t}",
                "params_py": _literal(dict(ex.params), 8),
                "params_yaml": _yaml_block(spec_params, 4) if spec_params else "",
                "bindings_yaml": _yaml_block(dict(ex.bindings), 4) if ex.bindings else "",
                "attributes_py": _literal(dict(ex.attributes), 8, lead=33),
                "asserts": ex.asserts,
            }
        )
    return {
        "name": name,
        "cls": _class_prefix(name),
        "namespace": _NAMESPACE,
        "templates": items,
        "template_names": list(templates),
        "check": check,
        "report": report,
        "quota": quota,
        "generators": generators,
        "config_py": _literal(params, 0, lead=25),
        "default_config_py": _literal(params, 4, lead=19),
        "config_yaml": _yaml_block(params, 4),
        "instance_classes": sorted({i["instance_class"] for i in items}),
        "templates_py": _literal(tuple(templates), 4, lead=14),
        "first_report": next((i["instance"] for i in items if i["variety"] == "REPORT"), ""),
    }


_FILES: Final = (
    ("pyproject.toml.tmpl", "pyproject.toml"),
    ("README.md.tmpl", "README.md"),
    ("init.py.tmpl", "src/{name}/__init__.py"),
    ("handler.py.tmpl", "src/{name}/handler.py"),
    ("py.typed.tmpl", "src/{name}/py.typed"),
    ("test_adapter.py.tmpl", "tests/test_{name}.py"),
    ("sample.yaml.tmpl", "config/sample.yaml"),
)


def generate(name: str, templates: Sequence[str], output: Path, *, force: bool = False) -> list[Path]:
    """Write the adapter package into ``output``; return the files written."""
    check_name(name, output if force else None)
    if output.exists() and not output.is_dir():
        raise ScaffoldError(f"{output} exists and is not a directory")
    if output.exists() and not force:
        raise ScaffoldError(
            f"{output} already exists; choose another --output, or pass --force to write over the "
            "generated files in it (other files there are left alone)"
        )
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("mixerd.cli", "scaffold"),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    context = _context(name, templates)
    written: list[Path] = []
    for source, target in _FILES:
        path = output / target.format(name=name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(env.get_template(source).render(context), encoding="utf-8")
        written.append(path)
    return written


def register(group: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``new`` to the ``mixerd adapter`` command group."""
    p = group.add_parser(
        "new",
        help="create a new adapter package (code, tests, sample config)",
        description=(
            "Create an installable adapter package in ./NAME (or --output DIR): pyproject.toml with the "
            "'mixerd.adapters' entry point, src/NAME/ with a builder (validate() reads the handler "
            "params) and a handler with one method per template, tests that drive it through "
            "mixerd.adapter.testing.AdapterHarness, a README and config/sample.yaml (a handler, one "
            "instance per template and a rule). Then: pip install -e NAME; pytest NAME/tests; "
            "mixerd validate NAME/config/sample.yaml; mixerd serve --config NAME/config/sample.yaml. "
            "The whole workflow is in docs/adapters.md."
        ),
    )
    p.add_argument(
        "name",
        metavar="NAME",
        help="the adapter's name: its Python package, entry point, distribution and the "
        "compiledAdapter of handlers (a lower-case Python identifier such as my_adapter)",
    )
    p.add_argument(
        "--templates",
        "-t",
        required=True,
        metavar="T1,T2,...",
        help=f"templates the adapter handles, comma-separated; known: {', '.join(_SCAFFOLDED)}",
    )
    p.add_argument(
        "--output", "-o", type=Path, metavar="DIR", help="where to create the package [default: ./NAME]"
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="write into DIR even if it exists (the generated files are overwritten, others left alone)",
    )
    p.set_defaults(func=run_new)


def run_new(args: argparse.Namespace) -> int:
    output: Path = args.output or Path(args.name)
    try:
        templates = parse_templates(args.templates)
        written = generate(args.name, templates, output, force=args.force)
    except ScaffoldError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"created adapter {args.name!r} ({', '.join(templates)}) in {output}:")
    for path in written:
        print(f"  {path}")
    print(
        "next:\n"
        f"  pip install -e {output}\n"
        f"  pytest {output / 'tests'}\n"
        f"  mixerd validate {output / 'config' / 'sample.yaml'}\n"
        f"  mixerd serve --config {output / 'config' / 'sample.yaml'}"
    )
    return 0
