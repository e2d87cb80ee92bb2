"""The expression compiler is total: property-based tests with hypothesis (fixed seed, bounded).

For every input, :func:`mixerd.lang.compile` returns an expression or raises
:class:`~mixerd.lang.CompileError`; a compiled expression evaluated against a few bags returns a
value or raises :class:`~mixerd.lang.EvaluationError`. Never any other exception type.

Inputs come from (a) a grammar built from the language's pieces (the stock attributes, literals of
every type including out-of-range integers, odd strings with surrogates, NUL and non-ASCII
characters, durations, the function catalogue, operators, ``|`` and ``[...]``) and (b) character
mutations of the expressions of the stock Istio telemetry config and mixerd's default config.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mixerd.attribute import IPAddress, ValueType, builtin_manifest
from mixerd.lang import FUNCTIONS, CompileError, EvaluationError, compile
from tests.conformance_data import conformance_dir

MANIFEST: dict[str, ValueType] = dict(builtin_manifest())
ATTRIBUTES = sorted(MANIFEST)

FUZZ = settings(
    derandomize=True,  # a fixed seed: the same examples on every run
    deadline=None,
    max_examples=1200,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

# --- bags --------------------------------------------------------------------------------------

_TYPICAL: dict[ValueType, Any] = {
    ValueType.STRING: "/api/v1?x=1",
    ValueType.INT64: 200,
    ValueType.DOUBLE: 1.5,
    ValueType.BOOL: True,
    ValueType.TIMESTAMP: dt.datetime(2019, 11, 13, 10, 0, tzinfo=dt.UTC),
    ValueType.IP_ADDRESS: IPAddress(bytes([10, 0, 0, 1])),
    ValueType.EMAIL_ADDRESS: "user@example.com",
    ValueType.URI: "http://example.com/a?b=c",
    ValueType.DNS_NAME: "reviews.default.svc.cluster.local",
    ValueType.DURATION: dt.timedelta(milliseconds=20),
    ValueType.STRING_MAP: {"x-user": "alice", "app": "reviews", "": ""},
}
_ODD: dict[ValueType, Any] = {
    ValueType.STRING: "xn--\x00\udce3é\u200d(",
    ValueType.INT64: -(2**63),
    ValueType.DOUBLE: float("nan"),
    ValueType.BOOL: False,
    ValueType.TIMESTAMP: dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.UTC),
    ValueType.IP_ADDRESS: IPAddress(bytes(16)),
    ValueType.EMAIL_ADDRESS: "a@xn--",
    ValueType.URI: "http://[::1",
    ValueType.DNS_NAME: "xn--.",
    ValueType.DURATION: dt.timedelta.max,
    ValueType.STRING_MAP: {"\udce3": "\x00", "x-user": "xn--"},
}


def _bag(values: Mapping[ValueType, Any]) -> dict[str, Any]:
    return {name: values[t] for name, t in MANIFEST.items() if t in values}


BAGS: tuple[dict[str, Any], ...] = ({}, _bag(_TYPICAL), _bag(_ODD))


# --- the property ------------------------------------------------------------------------------


def assert_total(text: str) -> None:
    try:
        expr = compile(text, MANIFEST)
    except CompileError:
        return
    for bag in BAGS:
        try:
            expr.evaluate(bag)
        except EvaluationError:
            pass


# --- (a) a grammar of expressions --------------------------------------------------------------

_ODD_CHARS = st.sampled_from(
    ["\x00", "\udce3", "\ud800", "\udfff", "é", "\u200d", "\ufffd", "\U0010ffff", "\\"]
)
_TEXT = st.text(st.one_of(st.characters(), _ODD_CHARS), max_size=12)
_WORDS = st.sampled_from(
    ["", "*", "a*", "*a", "xn--", "a@xn--", "a@b.c", "xn--zca.de", "http://a/b", "10.0.0.1", "::1",
     "2019-01-01T00:00:00Z", "[a-", "(?P<x>", "é.example", "a..b", "-a", "\u05d0.a"]
)  # fmt: skip


def _quoted(s: str) -> str:
    """A Go string literal whose body is ``s`` as is (odd characters included), or escaped."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


_DURATIONS = st.builds(
    lambda n, frac, unit: f"{n}{frac}{unit}",
    st.one_of(st.integers(0, 10**6), st.integers(0, 10**25)),
    st.sampled_from(["", ".5", ".000000001"]),
    st.sampled_from(["ns", "us", "µs", "ms", "s", "m", "h"]),
)
_INTS = st.one_of(
    st.integers(-(2**64), 2**64).map(str),
    st.sampled_from(
        ["9223372036854775807", "9223372036854775808", "0x7fffffffffffffff", "0b101", "0o17", "1_000"]
    ),
    st.integers(4290, 4310).map(lambda n: "1" * n),  # around Python's int-digit limit
)
_FLOATS = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.sampled_from(["1e308", "1e309", ".5", "1.", "0x1p-2", "1e-400"]),
)
LITERALS = st.one_of(
    _INTS,
    _FLOATS,
    st.sampled_from(["true", "false", "True", "'a'", "'\\''", "`raw\\`", '""']),
    st.one_of(_TEXT, _WORDS).map(_quoted),
    _DURATIONS,
    _DURATIONS.map(_quoted),
    st.sampled_from(['"99999999999h"', '"-2562048h"', '"2562047h"']),
)
LEAVES = st.one_of(st.sampled_from(ATTRIBUTES), LITERALS)
_FUNCTIONS = sorted({*FUNCTIONS, "conditional", "size"})
_BINARY = ["==", "!=", "<", "<=", ">", ">=", "+", "-", "*", "&&", "||", "|"]
_METHODS = ["matches", "startsWith", "endsWith"]


def _extend(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.builds(lambda a, op, b: f"{a} {op} {b}", children, st.sampled_from(_BINARY), children),
        st.builds(
            lambda f, args: f"{f}({', '.join(args)})",
            st.sampled_from(_FUNCTIONS),
            st.lists(children, max_size=3),
        ),
        st.builds(lambda t, m, a: f"{t}.{m}({a})", children, st.sampled_from(_METHODS), children),
        st.builds(lambda m, k: f"{m}[{k}]", children, children),
        children.map(lambda c: f"({c})"),
        st.builds(lambda op, c: f"{op}{c}", st.sampled_from(["!", "-", "+"]), children),
    )


EXPRESSIONS = st.recursive(LEAVES, _extend, max_leaves=12)


@FUZZ
@given(EXPRESSIONS)
def test_grammar_expressions_compile_or_fail_cleanly(text: str) -> None:
    assert_total(text)


# --- (b) mutations of the expressions of real configs ------------------------------------------


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)


def _config_expressions() -> list[str]:
    rendered = conformance_dir() / "stock-telemetry-config" / "rendered"
    paths = [rendered / n for n in ("config.yaml", "instances.yaml", "rules.yaml")]
    paths.append(
        Path(__file__).resolve().parents[2] / "src" / "mixerd" / "server" / "data" / "default-config.yaml"
    )
    found: set[str] = set()
    for path in paths:
        for doc in yaml.safe_load_all(path.read_text()):
            if not isinstance(doc, dict) or doc.get("kind") not in ("rule", "instance"):
                continue
            spec = doc.get("spec") or {}
            if isinstance(spec.get("match"), str):
                found.add(spec["match"])
            found.update(_strings(spec.get("params") or {}))
            for action in spec.get("requestHeaderOperations") or []:
                found.update(_strings(action.get("values") or []))
    return sorted(s for s in found if s.strip())


SEEDS = _config_expressions()

_INSERTS = st.one_of(
    st.characters(),
    _ODD_CHARS,
    st.sampled_from(
        ['"', "(", ")", "[", "]", "|", ".", "*", "h", "0", " ", "xn--", "99999999999", "||", "=="]
    ),
    st.sampled_from(
        ['"99999999999h"', '"xn--"', '"a@xn--"', '"\udce3"', "1" * 4301, " | ", ".matches(", "dnsName("]
    ),
)
_EDIT = st.tuples(
    st.sampled_from(["delete", "insert", "replace", "duplicate"]), st.integers(0, 10**4), _INSERTS
)


def mutate(seed: str, edits: list[tuple[str, int, str]]) -> str:
    chars = list(seed)
    for kind, at, text in edits:
        i = at % (len(chars) + 1)
        if kind == "insert" or not chars:
            chars[i:i] = list(text)
        elif kind == "delete":
            del chars[min(i, len(chars) - 1)]
        elif kind == "replace":
            chars[min(i, len(chars) - 1)] = text
        else:
            j = (at * 7919) % (len(chars) + 1)
            chars[i:i] = chars[min(i, j) : max(i, j)]
    return "".join(chars)


def test_the_stock_config_gives_seeds() -> None:
    assert len(SEEDS) > 30
    assert 'request.headers["x-user"] | "anonymous"' in SEEDS
    for seed in SEEDS:
        assert_total(seed)


@FUZZ
@given(st.sampled_from(SEEDS), st.lists(_EDIT, min_size=1, max_size=4))
def test_mutated_config_expressions_compile_or_fail_cleanly(
    seed: str, edits: list[tuple[str, int, str]]
) -> None:
    assert_total(mutate(seed, edits))
