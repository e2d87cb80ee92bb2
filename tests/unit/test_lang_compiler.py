"""Evaluation semantics: `|` chains, laziness, typed equality, references, bad bag values."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from mixerd.attribute import DictBag, IPAddress, ReferenceTracker, TrackingBag, ValueType, entries_read
from mixerd.lang import FUNCTIONS, CompileError, EvaluationError, Expression, Function, compile
from mixerd.lang import functions as fns

V = ValueType
MANIFEST: dict[str, ValueType | str] = {
    "a": V.STRING,
    "b": V.STRING,
    "c": V.STRING,
    "k": V.STRING,
    "i": V.INT64,
    "j": V.INT64,
    "d": V.DOUBLE,
    "flag": V.BOOL,
    "m": V.STRING_MAP,
    "n": V.STRING_MAP,
    "ts": V.TIMESTAMP,
    "ts2": V.TIMESTAMP,
    "ip": V.IP_ADDRESS,
    "ip2": V.IP_ADDRESS,
    "dns": V.DNS_NAME,
    "dns2": V.DNS_NAME,
    "dur": V.DURATION,
}


def ev(text: str, attrs: Mapping[str, Any] | None = None) -> Any:
    return compile(text, MANIFEST).evaluate(attrs or {})


def refs(text: str, attrs: Mapping[str, Any]) -> tuple[Any, list[str]]:
    value, tracker = compile(text, MANIFEST).referenced(attrs)
    return value, tracker.log()


def fails(text: str, attrs: Mapping[str, Any] | None = None) -> EvaluationError:
    with pytest.raises(EvaluationError) as info:
        ev(text, attrs)
    return info.value


# --- `|` -------------------------------------------------------------------------------------


def test_or_chains_take_the_first_present_operand() -> None:
    text = 'm[k] | n["x"] | a | "z"'
    assert ev(text, {"m": {"k1": "v"}, "k": "k1"}) == "v"
    assert ev(text, {"m": {}, "k": "k1", "n": {"x": "nx"}}) == "nx"
    assert ev(text, {"n": {}, "a": "A"}) == "A"
    assert ev(text, {}) == "z"
    assert refs(text, {"m": {}, "k": "k1", "n": {"y": "1"}}) == (
        "z",
        ["-a", "-m[k1]", "-n[x]", "k", "m", "n"],
    )
    # the key is looked up only when the map is there
    assert refs(text, {"k": "k1", "a": "A"}) == ("A", ["-m", "-n", "a"])


def test_or_chain_without_fallback_reports_the_last_lookup() -> None:
    assert str(fails("a | b | c")) == "lookup failed: 'c'"
    assert fails("a | b | c").position == 8
    assert ev("a | (b | c)", {"c": "C"}) == "C"  # explicit right grouping works too
    assert str(fails("a | (b | c)")) == "lookup failed: 'c'"


def test_or_does_not_swallow_errors() -> None:
    assert (
        str(fails("ip(a) | ip(b)", {"a": "nope", "b": "1.2.3.4"})) == "could not convert nope to IP_ADDRESS"
    )
    assert str(fails("ip(a) | ip(b)", {"b": "1.2.3.4"})) == "lookup failed: 'a'"


def test_operands_after_a_never_absent_one_are_not_evaluated() -> None:
    assert refs('"x" | a', {"a": "A"}) == ("x", [])
    assert refs("toLower(a) | b", {"a": "A", "b": "B"}) == ("a", ["a"])
    assert refs('conditional(flag, a, "n") | b', {"flag": False}) == ("n", ["flag"])


def test_index_outside_or_gives_empty_string_for_a_missing_key() -> None:
    assert ev('m["nope"]', {"m": {}}) == ""
    assert refs('m["nope"] == ""', {"m": {}}) == (True, ["-m[nope]", "m"])
    assert str(fails('m["x"]', {})) == "lookup failed: 'm'"
    assert (
        str(fails("m[k] | a", {"m": {"v": "1"}, "k": "w"})) == "lookup failed: 'a'"
    )  # absent key falls through


def test_index_of_a_never_absent_map() -> None:
    assert ev('emptyStringMap()[a] | "d"', {"a": "x"}) == "d"
    assert ev('conditional(flag, m, n)[a] | "d"', {"flag": True, "m": {"x": "mx"}, "a": "x"}) == "mx"
    assert ev('conditional(flag, m, n)[a] | "d"', {"flag": True, "m": {"x": "mx"}}) == "d"


def test_long_or_chain_compiles() -> None:
    names = [f"x{i}" for i in range(300)]
    manifest = {name: V.INT64 for name in names}
    expr = compile(" | ".join([*names, "7"]), manifest)
    assert expr.evaluate({}) == 7
    assert expr.evaluate({"x299": 3}) == 3
    assert expr.evaluate({"x5": 1, "x299": 3}) == 1


# --- laziness --------------------------------------------------------------------------------


def test_logical_operators_and_conditional_short_circuit() -> None:
    assert refs("flag && a == b", {"flag": False}) == (False, ["flag"])
    assert refs("flag || a == b", {"flag": True}) == (True, ["flag"])
    assert refs("conditional(flag, a, b)", {"flag": True, "a": "A"}) == ("A", ["a", "flag"])
    # conditionalString evaluates both branches first (an extern: arguments, then the call)
    assert str(fails("conditionalString(flag, a, b)", {"flag": True, "a": "A"})) == "lookup failed: 'b'"


def test_constant_folding_and_constant_expressions() -> None:
    for text, value in [("true", True), ('"a" + "b"', "ab"), ('size("é")', 2), ('match("abc", "a*")', True)]:
        expr = compile(text, MANIFEST)
        assert expr.is_constant and expr.constant_value == value and expr.evaluate({}) == value
    folded = compile('ip == ip("10.0.0.1")', MANIFEST)
    assert not folded.is_constant and folded.attributes == frozenset({"ip"})
    assert "_k" in folded.python_source  # the address was built once, at compile time
    # a constant that fails is left for run time, as in Mixer
    bad = compile('ip("nope")', MANIFEST)
    assert not bad.is_constant
    with pytest.raises(EvaluationError, match="could not convert nope"):
        bad.evaluate({})
    assert compile('false && a == "x"', MANIFEST).is_constant


# --- operators and functions -----------------------------------------------------------------


def test_typed_equality() -> None:
    assert ev("dns == dns2", {"dns": "Foo.Example.COM.", "dns2": "foo.example.com"}) is True
    assert ev("dns != dns2", {"dns": "a.example.com", "dns2": "b.example.com"}) is True
    v4, mapped = IPAddress(bytes([10, 0, 0, 1])), IPAddress.parse("10.0.0.1")
    assert len(v4.packed) == 4 and len(mapped.packed) == 16
    assert ev("ip == ip2", {"ip": v4, "ip2": mapped}) is True
    utc = dt.datetime(2020, 1, 1, 12, tzinfo=dt.UTC)
    paris = utc.astimezone(dt.timezone(dt.timedelta(hours=1)))
    assert ev("ts == ts2", {"ts": utc, "ts2": paris}) is True
    assert ev("ts < ts2", {"ts": utc, "ts2": utc + dt.timedelta(microseconds=1)}) is True
    assert ev('uri("HTTP://Example.com:") == uri("http://example.com")') is True
    assert ev('email("\\"a\\"@Example.com") == email("a@example.com")') is True


def test_arithmetic_and_strings() -> None:
    assert ev("i + j", {"i": 2**63 - 1, "j": 1}) == -(2**63)  # int64 wraps around like Go
    assert ev("d + 0.5", {"d": 1.25}) == 1.75
    assert ev('a + "-" + b', {"a": "x", "b": "y"}) == "x-y"
    assert ev("size(a)", {"a": "héllo"}) == 6  # bytes, as Go's len
    assert ev("toLower(a)", {"a": "İSTİO"}) == "istio"
    assert ev("a.startsWith(b) && a.endsWith(c)", {"a": "abc", "b": "ab", "c": "bc"}) is True
    assert ev("match(a, b)", {"a": "svc.ns1.cluster", "b": "*.ns1.cluster"}) is True
    assert ev('match(a, "svc.*")', {"a": "svc.ns1"}) is True
    assert ev('match(a, "svc")', {"a": "svc.ns1"}) is False


def test_matches_uses_re2() -> None:
    assert ev('"^ns1\\\\.svc".matches(a)', {"a": "ns1.svc.local"}) is True
    assert ev("a.matches(b)", {"a": "st.*", "b": "xstr"}) is True  # unanchored, like Go's MatchString
    # RE2 has no backreferences or lookarounds (Python's re would accept these)
    for pattern in ("(a)\\\\1", "a(?=b)"):
        with pytest.raises(EvaluationError, match="error parsing regexp"):
            ev(f'"{pattern}".matches(a)', {"a": "aa"})
    assert fns.compile_regex("a+").__class__.__module__.startswith("re2")


def test_dns_name_and_email_conversions() -> None:
    assert ev('dnsName("xn--bcher-kva.example")') == "bücher.example"
    assert (
        str(fails('dnsName("a..b")')) == "error converting 'a..b' to dns name: 'idna: invalid label \"a..b\"'"
    )
    assert str(fails('email("Name <a@b.com>")')).endswith("display names are not allowed")
    assert ev('email("<a@b.com>")') == "<a@b.com>"
    assert str(fails('uri("http://a b")')).startswith(
        "error converting string to uri 'http://a b': 'parse http"
    )


def test_timestamp_conversion_is_strict_rfc3339() -> None:
    assert ev('timestamp("2015-01-02T15:04:05.5+01:00")') == dt.datetime(2015, 1, 2, 14, 4, 5, 500000, dt.UTC)
    with pytest.raises(EvaluationError, match="expected format"):
        ev('timestamp("2015-01-02t15:04:05z")')


# --- bags and references ---------------------------------------------------------------------


class CountingBag(Mapping[str, Any]):
    """A lazy bag: only ``get`` is used by compiled expressions."""

    def __init__(self, values: dict[str, Any]) -> None:
        self._data = values
        self.gets: list[str] = []

    def get(self, name: str, default: Any = None) -> Any:
        self.gets.append(name)
        return self._data.get(name, default)

    def __getitem__(self, name: str) -> Any:
        return self._data[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


def test_any_mapping_is_a_bag() -> None:
    bag = CountingBag({"a": "x"})
    assert compile('a == "x" && (b | "y") == "y"', MANIFEST).evaluate(bag) is True
    assert bag.gets == ["a", "b"]
    assert compile("a", MANIFEST).evaluate(DictBag({"a": "z"})) == "z"


def test_referenced_accumulates_in_a_shared_tracker() -> None:
    tracker = ReferenceTracker()
    attrs = {"a": "x", "m": {"k": "v"}}
    compile('m["k"]', MANIFEST).referenced(attrs, tracker)
    value, same = compile("b | a", MANIFEST).referenced(attrs, tracker)
    assert value == "x" and same is tracker
    assert tracker.log() == ["-b", "a", "m", "m[k]"]


def test_referenced_returns_the_error() -> None:
    value, tracker = compile("a == b", MANIFEST).referenced({"a": "x"})
    assert isinstance(value, EvaluationError) and value.message == "lookup failed: 'b'"
    assert tracker.log() == ["-b", "a"]


def test_wrongly_typed_bag_values() -> None:
    err = fails('match(a, "x*")', {"a": 20})
    assert (err.message, err.position) == ("error converting value to string: '20'", 6)
    assert fails("i + 1", {"i": "7"}).message == "error converting value to integer or duration: '7'"
    assert fails("m[a]", {"m": ["x"], "a": "k"}).message == "error converting value to string map: '['x']'"
    # diagnosing reads attributes again, but does not add references
    bag = TrackingBag({"a": 20, "b": "x"})
    with pytest.raises(EvaluationError):
        compile('match(a, "x*") || b == "x"', MANIFEST).evaluate(bag)
    assert bag.tracker.log() == ["a"]


def test_user_functions() -> None:
    calls: list[str] = []

    def shout(s: str) -> str:
        calls.append(s)
        return s.upper() + "!"

    functions = {**FUNCTIONS, "shout": Function("shout", V.STRING, (V.STRING,), impl=shout)}
    expr = compile('shout("a") + shout(b)', MANIFEST, functions=functions)
    assert calls == []  # not pure: not evaluated at compile time
    assert expr.evaluate({"b": "c"}) == "A!C!"
    pure = {**functions, "shout": Function("shout", V.STRING, (V.STRING,), impl=shout, pure=True)}
    assert compile('shout("z")', MANIFEST, functions=pure).constant_value == "Z!"
    broken = {**FUNCTIONS, "boom": Function("boom", V.STRING, (), impl=lambda: 1 / 0)}
    err = fails_with(compile("boom()", MANIFEST, functions=broken))
    assert err.message == "evaluation failed: ZeroDivisionError: division by zero"


def fails_with(expr: Expression) -> EvaluationError:
    with pytest.raises(EvaluationError) as info:
        expr.evaluate({})
    return info.value


# --- the Expression object -------------------------------------------------------------------


def test_expression_is_immutable_and_describes_itself() -> None:
    expr = compile('source | "x"', {"source": "STRING"})
    assert repr(expr) == "Expression('source | \"x\"', STRING)"
    assert expr.text == 'source | "x"' and expr.attributes == frozenset({"source"})
    assert str(expr.tree) == 'OR($source, "x")'
    with pytest.raises(AttributeError):
        expr.text = "y"
    with pytest.raises(AttributeError):
        del expr.result_type


def test_dialects() -> None:
    assert compile("a", MANIFEST, dialect="cel").result_type is V.STRING
    assert compile("a | b", MANIFEST, dialect="compat").evaluate({}) == ""
    with pytest.raises(CompileError, match="unknown expression dialect"):
        compile("a", MANIFEST, dialect="lua")
    assert compile("a", MANIFEST, dialect="CEXL").result_type is V.STRING


def test_evaluation_is_reentrant() -> None:
    expr = compile('(a | "x") + (b | "y")', MANIFEST)
    results = [expr.evaluate({"a": str(n)}) for n in range(3)]
    assert results == ["0y", "1y", "2y"]
    inner = compile("a", MANIFEST)

    class Reentrant(dict[str, Any]):
        def get(self, name: str, default: Any = None) -> Any:  # evaluates another expression mid-way
            return inner.evaluate({"a": "inner"}) if name == "a" else super().get(name, default)

    assert expr.evaluate(Reentrant(b="B")) == "innerB"


def test_too_deeply_nested() -> None:
    deep = "conditional(true, " * 400 + "a" + ", a)" * 400
    with pytest.raises(CompileError, match="too deeply nested"):
        compile(deep, MANIFEST)
    nested = "(" * 60 + "a" + ")" * 60 + ' | "x"'
    assert compile(nested, MANIFEST).evaluate({}) == "x"


def test_constants_with_braces_and_quotes() -> None:
    attrs = {"m": {"{k}": "v"}, "flag": True}
    assert ev('a | "{x}"', attrs) == "{x}"
    assert ev('m["{k}"] | "{}"', attrs) == "v"
    assert ev('m[a] | n["{0}"] | "{1}\'"', attrs) == "{1}'"
    assert ev('conditional(flag, "{0}", a)', attrs) == "{0}"
    assert ev('match(m["{k}"], "{*")', attrs) is False
    assert ev('"{".startsWith(m["{z}"] | "{")', attrs) is True


def test_or_after_an_operator_keeps_the_operator_value() -> None:
    # Mixer's IL returned the right operand here (a code-generation bug); mixerd returns the left.
    assert ev('(a == "x") | false', {"a": "x"}) is True
    assert ev("size(a) | 9", {"a": "xy"}) == 2


# --- entries read ---------------------------------------------------------------------------

# (dialect, text, reads): a map only looked up with constant keys is read by entry.
ENTRY_READS: list[tuple[str, str, set[str]]] = [
    ("cexl", 'm["x"] == "1"', {"m[x]"}),
    ("cexl", 'm["x"] | m["y"] | n["z"] | "none"', {"m[x]", "m[y]", "n[z]"}),
    ("cexl", 'm["x"] | ""', {"m[x]"}),
    ("cexl", 'match(m["x"], "a*") && n["]["] == a', {"m[x]", "n[][]", "a"}),
    ("cexl", 'm[k] | ""', {"m", "k"}),  # a key known at run time: the whole map
    ("cexl", 'm[m["x"]] | ""', {"m"}),  # the map is read whole once
    ("cexl", 'conditional(m["x"] == "", m, n)', {"m", "n"}),
    ("cexl", "m", {"m"}),
    ("cexl", 'm["x"] == a && m["y"] == b', {"m[x]", "m[y]", "a", "b"}),
    ("compat", 'm["x"] | ""', {"m[x]"}),
    ("cel", 'm["x"] == "1"', {"m"}),  # CEL reads a map through its zero value: whole
    ("cexl", '"x"', set()),
]


@pytest.mark.parametrize(("dialect", "text", "reads"), ENTRY_READS, ids=[t for _, t, _ in ENTRY_READS])
def test_an_expression_names_the_map_entries_it_reads(dialect: str, text: str, reads: set[str]) -> None:
    expr = compile(text, MANIFEST, dialect=dialect)
    assert expr.reads == reads
    assert expr.attributes == {name.split("[", 1)[0] for name in reads}


_ENTRY_BAGS: list[dict[str, Any]] = [
    {},
    {"m": {}, "n": {}},
    {"m": {"x": "1", "y": "2", "z": "x"}, "n": {"z": "3", "][": "a1"}, "a": "a1", "b": "2", "k": "y"},
    {"m": {"y": "x", "x": "y", "other": "o"}, "a": "", "b": "x"},
]


@pytest.mark.parametrize("bag", _ENTRY_BAGS, ids=range(len(_ENTRY_BAGS)))
@pytest.mark.parametrize(("dialect", "text", "reads"), ENTRY_READS, ids=[t for _, t, _ in ENTRY_READS])
def test_the_entries_an_expression_names_give_its_value(
    dialect: str, text: str, reads: set[str], bag: dict[str, Any]
) -> None:
    # A Report decodes only the named entries of such a map: the value must not change.
    expr = compile(text, MANIFEST, dialect=dialect)
    keys = entries_read(expr.reads)
    partial = {
        name: {k: v for k, v in value.items() if k in keys[name]} if name in keys else value
        for name, value in bag.items()
    }

    def value_of(attributes: dict[str, Any]) -> Any:
        try:
            return expr.evaluate(attributes)
        except EvaluationError as exc:
            return str(exc)

    assert value_of(partial) == value_of(bag)


# A disjunction of equalities of one operand compiles to one membership test; it must answer, fail
# and reference exactly as the comparisons one by one (the generic code, with the rewrite off).
_MEMBERSHIP = [
    ('a == "x" || a == "y"', True),
    ('a == "x" || a == "y" || a == "z"', True),
    ('(a | "x") == "x" || (a | "x") == "y"', True),
    ('m["k"] == "x" || m["k"] == "y"', True),
    ('(m["k"] | b | "-") == "x" || (m["k"] | b | "-") == "y"', True),
    ("i == 1 || i == 2 || i == 3", True),
    ('a == "x" || b == "y"', False),  # two operands
    ('a == "x" || a != "y"', False),
    ('a == "x" || (a | "q") == "y"', False),  # not the same operand
    ('dns == dnsName("a.b") || dns == dnsName("c.d")', False),  # a normalising comparison
    ('(a == "x" || a == "y") && b == "z"', True),
    ('a == "x" || a == "y" || b == "z"', True),  # the inner pair
]
_MEMBERSHIP_BAGS: list[dict[str, Any]] = [
    {},
    {"a": "x"},
    {"a": "y", "b": "z"},
    {"a": "z", "b": "y"},
    {"a": "q", "m": {"k": "x"}, "i": 2, "dns": "A.B."},
    {"b": "x", "m": {}, "i": 3, "dns": "c.d"},
    {"a": 7, "i": "1", "m": {"k": 1}},  # values of the wrong type
    {"a": ["x"], "b": None},
]


@pytest.mark.parametrize(("text", "rewritten"), _MEMBERSHIP, ids=[t for t, _ in _MEMBERSHIP])
def test_a_disjunction_of_equalities_is_one_membership_test(
    text: str, rewritten: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mixerd.lang import compiler

    fast = compile(text, MANIFEST)
    assert (" in (" in fast.python_source) == rewritten, fast.python_source
    monkeypatch.setattr(compiler._Generator, "membership", lambda self, node: None)
    generic = compile(text, MANIFEST)
    assert " in (" not in generic.python_source

    def outcome(e: Expression, bag: dict[str, Any]) -> Any:
        value, tracker = e.referenced(bag)
        if isinstance(value, EvaluationError):
            value = (value.message, value.position)
        return value, tracker.log()

    for bag in _MEMBERSHIP_BAGS:
        assert outcome(fast, bag) == outcome(generic, bag), bag
