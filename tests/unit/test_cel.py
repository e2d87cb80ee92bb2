"""The CEL and COMPAT dialects: parse and type errors (messages, positions), semantics that differ
from CEXL, and totality (every input compiles or fails with a CompileError; every evaluation gives
a value or an EvaluationError)."""

from __future__ import annotations

import argparse
import datetime as dt
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mixerd.attribute import DictBag, IPAddress, ValueType, builtin_manifest
from mixerd.cli import eval as eval_cmd
from mixerd.lang import CompileError, EvaluationError, compile
from mixerd.lang.cel import TypeValue

MANIFEST: dict[str, ValueType] = dict(builtin_manifest())


def cel(text: str, attrs: dict[str, Any] | None = None) -> Any:
    return compile(text, MANIFEST, dialect="cel").evaluate(attrs or {})


def cel_error(text: str) -> CompileError:
    with pytest.raises(CompileError) as info:
        compile(text, MANIFEST, dialect="cel")
    return info.value


# --- parse errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "reason", "position"),
    [
        ("", "Syntax error: empty expression", 0),
        ("request.size +", "Syntax error: expected an operand, found end of input", 14),
        (
            "request.size > 1)",
            "Syntax error: expected an operator or the end of the expression, found ')'",
            16,
        ),
        ('"abc', "Syntax error: unterminated string literal", 0),
        ("'a\\qb'", "Syntax error: invalid escape sequence '\\q'", 2),
        ("request.size # 1", "Syntax error: token recognition error at: '#'", 13),
        ("(1 + 2", "Syntax error: expected ')', found end of input", 6),
        ("{'a' 'b'}", "Syntax error: expected ':', found ''b''", 5),
        ("9223372036854775808", "integer literal out of range: 9223372036854775808", 0),
        ("has(1)", "invalid argument to has() macro (expected has(x.field))", 0),
        ("has(source)", "invalid argument to has() macro (expected has(x.field))", 0),
    ],
)
def test_parse_errors(text: str, reason: str, position: int) -> None:
    error = cel_error(text)
    assert (error.reason, error.position) == (reason, position)


def test_comprehension_macros_are_refused_with_the_reason() -> None:
    error = cel_error("[1, 2].all(x, x > 0)")
    assert error.reason == (
        "the 'all' macro is not supported by mixerd's CEL (comprehensions over lists and maps are not "
        "implemented)"
    )
    assert error.position == 7


# --- type errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "reason", "position"),
    [
        ("nosuch == 1", "undeclared reference to 'nosuch'", 0),
        ("source.nosuch", "undefined field 'nosuch'", 7),
        ("request.size.length", "type 'int' does not support field selection", 13),
        ('request.size + "1"', "found no matching overload for '_+_' applied to '(int, string)'", 13),
        ('request.size > "1"', "found no matching overload for '_>_' applied to '(int, string)'", 13),
        ("source.ip < destination.ip", "found no matching overload for '_<_' applied to "
         "'(istio.policy.v1beta1.IPAddress, istio.policy.v1beta1.IPAddress)'", 10),
        ("request.headers[1]", "found no matching overload for '_[_]' applied to '(map(string, string), int)'", 15),
        ("!request.size", "found no matching overload for '!_' applied to '(int)'", 0),
        ("request.size && true", "found no matching overload for '_&&_' applied to '(int, bool)'", 13),
        ("request.size ? 1 : 2", "found no matching overload for '_?_:_' applied to '(int, int, int)'", 13),
        ("context.reporter", "'context.reporter' is not an attribute but a prefix of attribute names "
         "(such as context.reporter.kind, context.reporter.local, context.reporter.uid)", 8),
        ("ip(1)", "found no matching overload for 'ip' applied to '(int)'", 0),
        ("request.size.startsWith('a')", "found no matching overload for 'int.startsWith' applied to '(string)'", 13),
        ("frobnicate(1)", "undeclared reference to 'frobnicate'", 0),
        ("pick(source.name, 1)", "pick arguments must have one type: string and int", 18),
        ("[1, 'a']", "list elements must have one type: int and string", 4),
        ("foo.Bar{value: 1}", "unknown message type 'foo.Bar': mixerd's CEL builds only the google.protobuf "
         "wrapper messages (Int64Value, StringValue, BoolValue, DoubleValue ...)", 7),
        ("google.protobuf.Int64Value{value: 'a'}", "field 'value' of google.protobuf.Int64Value needs int, "
         "got string", 34),
    ],
)  # fmt: skip
def test_type_errors(text: str, reason: str, position: int) -> None:
    error = cel_error(text)
    assert (error.reason, error.position) == (reason, position)
    assert str(error) == f"{reason} at position {position}"


def test_unknown_dialect() -> None:
    with pytest.raises(CompileError, match="unknown expression dialect 'lua'"):
        compile("1", MANIFEST, dialect="lua")


# --- semantics -----------------------------------------------------------------------------------


def test_absent_attributes_read_as_zero_values() -> None:
    assert cel("source.name") == ""
    assert cel("request.size") == 0
    assert cel("connection.mtls") is False
    assert cel("request.time") == dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    assert cel("response.duration") == dt.timedelta(0)
    assert cel("source.ip") == IPAddress(b"")
    assert dict(cel("request.headers")) == {}


def test_arithmetic_follows_go() -> None:
    assert cel("-7 / 2") == -3
    assert cel("-7 % 3") == -1
    assert cel("9223372036854775807 + 1") == -9223372036854775808
    assert cel("2.0 * 3.5 - 1.0") == 6.0
    assert cel("1.0 / 0.0") == float("inf")
    for text, message in (("1 % 0", "modulus by zero"), ("request.size / 0", "divide by zero")):
        with pytest.raises(EvaluationError, match=message):
            cel(text)


def test_logical_operators_absorb_errors_when_the_other_side_decides() -> None:
    attrs = {"request.size": 0, "connection.mtls": True}
    assert cel("request.size / request.size == 1 || connection.mtls", attrs) is True
    assert cel("connection.mtls || request.size / request.size == 1", attrs) is True
    assert cel("!connection.mtls && 1 / request.size == 1", attrs) is False
    with pytest.raises(EvaluationError, match="divide by zero"):
        cel("1 / request.size == 1 || !connection.mtls", attrs)
    with pytest.raises(EvaluationError, match="divide by zero"):
        cel("connection.mtls && 1 / request.size == 1", attrs)


def test_strings_lists_maps_and_types() -> None:
    assert cel('size("héllo")') == 5  # characters, where CEXL counts bytes
    assert cel("'ab' + 'cd' == 'abcd' && 'bc' in ['ab', 'bc']") is True
    assert cel("[1, 2] + [3]") == (1, 2, 3)
    assert cel("{'a': 1}.a + {'b': 2}['b']") == 3
    assert cel("has({'a': 1}.a) && !has({'a': 1}.b)") is True
    assert cel("type(1) == int && type('a') == string && type([1]) == list") is True
    assert cel("type(request.size)") == TypeValue("int")
    assert cel("type(request.time) == google.protobuf.Timestamp") is True
    with pytest.raises(EvaluationError, match="cannot convert wrapper value  to CEL types"):
        cel("type(source.ip)")
    assert cel("int('42') + int(2.9) == 44 && double(1) == 1.0 && string(true) == 'true'") is True
    assert cel(r"'a\tb' == '''a	b''' && r'\d' == '\\d' && b'ab' == b'\x61\x62'") is True
    assert cel("'mixer'.contains('xe') && 'mixer'.matches('^m.*r$') && matches('mixer', 'x')") is True
    assert cel("google.protobuf.StringValue{}.value == ''") is True
    with pytest.raises(EvaluationError, match=r"index '3' out of range in list size '3'"):
        cel("[1, 2, 3][3]")


def test_attribute_provider_messages() -> None:
    manifest = {"a": ValueType.STRING, "a.b": ValueType.STRING_MAP, "a.b.c": ValueType.INT64}
    expr = compile("a + a.b['k'] + string(a.b.c)", manifest, dialect="cel")
    assert expr.evaluate({"a": "x", "a.b": {"k": "y"}, "a.b.c": 7}) == "xy7"
    assert compile("has(a.b.c) || has(a.b.k)", manifest, dialect="cel").evaluate({"a.b": {"k": ""}}) is True


def test_pick_and_references() -> None:
    expr = compile('pick(source.labels["app"], source.workload.name, "unknown")', MANIFEST, dialect="cel")
    value, tracker = expr.referenced({"source.workload.name": "w"})
    assert (value, tracker.log()) == ("w", ["-source.labels", "source.workload.name"])
    value, tracker = expr.referenced({"source.labels": {"app": "a"}})
    assert (value, tracker.log()) == ("a", ["source.labels", "source.labels[app]"])


def test_compat_is_cexl_syntax_with_cel_semantics() -> None:
    def compat(text: str, attrs: dict[str, Any] | None = None) -> Any:
        return compile(text, MANIFEST, dialect="compat").evaluate(attrs or {})

    assert compat('source.labels["app"] | source.name | "unknown"', {"source.name": "s"}) == "s"
    assert compat('connection.duration | "10ms"') == dt.timedelta(milliseconds=10)
    assert compat("request.size") == 0  # absent: CEXL fails with "lookup failed"
    assert compat("(request.size | 7) * 3 - 10 / 4 % 3") == 21 - 2  # CEL's arithmetic (CEXL has none)
    assert compat("-(request.size | 7)") == -7
    assert compat('"abc".matches("b")') is True  # CEL's text.matches(regex)
    with pytest.raises(
        CompileError, match=r"found no matching overload for '_==_' applied to '\(int, string\)'"
    ):
        compile('request.size == "1"', MANIFEST, dialect="compat")
    with pytest.raises(EvaluationError, match="no such key: 'x'"):
        compat('request.headers["x"] == "1"')  # CEXL gives "" for a missing key


def test_every_evaluation_goes_through_generated_python() -> None:
    expr = compile('pick(source.workload.name, "unknown")', MANIFEST, dialect="cel")
    assert "a.get('source.workload.name', 'unknown')" in expr.python_source
    assert expr.evaluate(DictBag({})) == "unknown"


# --- totality ------------------------------------------------------------------------------------

_SEEDS = [
    'pick(source.labels["app"], source.workload.name, "unknown")',
    'context.reporter.kind == "outbound" ? "source" : "destination"',
    "has(request.headers.x) && request.headers.x.startsWith('a') || 1 / request.size > 2",
    "[1, 2.0, 'x'][0] + {'a': [b'x']}['a'] - -3u % 2",
    "timestamp('2017-01-15T01:30:15.01Z') + duration('1s') > request.time",
    "type(source.ip) == google.protobuf.Int64Value{value: -9223372036854775808}.value",
    'ip("1.2.3.4") == source.ip && dnsName("a.b") == destination.service.host',
]
_ALPHABET = st.sampled_from([*"()[]{}.,:?!&|=<>+-*/%'\"\\ abcdefnrstuxyz0123456789", "''", "b'", "r'"])


@st.composite
def _mutated(draw: st.DrawFn) -> str:
    text = draw(st.sampled_from(_SEEDS))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(text)))
        cut = draw(st.integers(0, 3))
        text = text[:at] + "".join(draw(st.lists(_ALPHABET, max_size=3))) + text[at + cut :]
    return text


_BAGS: list[dict[str, Any]] = [
    {},
    {"request.size": 0, "source.labels": {"app": "x"}, "request.headers": {"x": "a"}},
    {
        "request.size": 3,
        "source.ip": IPAddress(bytes(4)),
        "request.time": dt.datetime(2020, 1, 1, tzinfo=dt.UTC),
    },
]


@settings(derandomize=True, deadline=None, max_examples=600, database=None,
          suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
@given(_mutated(), st.sampled_from(["cel", "compat"]))
def test_compile_and_evaluate_are_total(text: str, dialect: str) -> None:
    try:
        expr = compile(text, MANIFEST, dialect=dialect)
    except CompileError as exc:
        assert "internal compiler error" not in exc.reason, (text, exc.reason)
        return
    for bag in _BAGS:
        try:
            expr.evaluate(bag)
        except EvaluationError as exc:
            assert not str(exc).startswith("evaluation failed"), (text, str(exc))


# --- mixerd eval --lang --------------------------------------------------------------------------


def test_mixerd_eval_takes_the_dialect(capsys: pytest.CaptureFixture[str]) -> None:
    def run(*argv: str) -> int:
        parser = argparse.ArgumentParser(prog="mixerd")
        eval_cmd.register(parser.add_subparsers())
        args = parser.parse_args(["eval", *argv])
        return int(args.func(args))

    assert run('pick(source.labels["app"], "unknown")', "--lang", "cel", "--references") == 0
    assert capsys.readouterr().out == '"unknown" (STRING)\nreferenced: -source.labels\n'
    assert run("request.size | 7", "--lang", "COMPAT") == 0
    assert capsys.readouterr().out == "7 (INT64)\n"
    assert run("request.size > '1'", "--lang", "CEL") == 1
    assert capsys.readouterr().err == (
        "error: found no matching overload for '_>_' applied to '(int, string)'\n"
        "  request.size > '1'\n"
        "               ^\n"
    )
