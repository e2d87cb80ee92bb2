"""Parser edge cases beyond the conformance tables: Go's lexical rules, error texts and positions."""

from __future__ import annotations

import datetime as dt

import pytest

from mixerd.attribute import ValueType
from mixerd.lang import Call, CompileError, Constant, Variable, extract_eq_matches, parse
from mixerd.lang.syntax import ConstantError, go_quote, go_unquote, new_constant


def reason(text: str) -> tuple[str, int | None]:
    with pytest.raises(CompileError) as info:
        parse(text)
    return info.value.reason, info.value.position


@pytest.mark.parametrize(
    ("text", "postfix"),
    [
        ("a | b + c", "ADD(OR($a, $b), $c)"),  # `|` binds like `+` (Go), left to right
        ("a + b | c", "OR(ADD($a, $b), $c)"),
        ("a || b && c", "LOR($a, LAND($b, $c))"),
        ("a == b || c != d", "LOR(EQ($a, $b), NEQ($c, $d))"),
        ("a | (b | c)", "OR($a, OR($b, $c))"),
        ("m[k][j]", "INDEX(INDEX($m, $k), $j)"),
        ("EQ(a, 2)", "EQ($a, 2)"),  # operators can be called by name, as in Mixer
        ("TRUE || False", "LOR(true, false)"),
        ("-a", "SUB($a)"),
        ("!a", "NOT($a)"),
        ("a << 2", "($a, 2)"),  # no function name for <<: Mixer's tMap has none ("unknown function: ")
        ("`raw\\n`", "`raw\\n`"),
        ("'x'", "'x'"),
        ("a.b.c.d(e).f()", "$a.b.c:d($e):f()"),
        ("(a.b).c()", "$a.b:c()"),
        ("f(a, b,)", "f($a, $b)"),
        ("a // a comment\n", "$a"),
        ("a /* c */ == /* d */ 1", "EQ($a, 1)"),
        ("a ==\n1", "EQ($a, 1)"),
        ("ünïcode.näme", "$ünïcode.näme"),
    ],
)
def test_postfix(text: str, postfix: str) -> None:
    assert str(parse(text)) == postfix


def test_constants_are_typed_like_mixer() -> None:
    assert parse('"10ms"') == Constant('"10ms"', dt.timedelta(milliseconds=10), ValueType.DURATION, 0)
    zero = parse('"0"')  # Go's ParseDuration accepts "0": a DURATION, not a STRING
    assert isinstance(zero, Constant) and zero.type is ValueType.DURATION
    ten = parse('"10"')
    assert isinstance(ten, Constant) and ten.type is ValueType.STRING
    octal = parse("010")  # Mixer parses integer literals in base 10
    assert isinstance(octal, Constant) and octal.value == 10
    assert parse("`a\\n\r`") == Constant("`a\\n\r`", "a\\n", ValueType.STRING, 0)
    s = parse('"\\u00e9\\x41\\101\\t"')
    assert isinstance(s, Constant) and s.value == "éAA\t"


@pytest.mark.parametrize(
    ("text", "expected", "position"),
    [
        ("a = 2", "unable to parse expression 'a = 2': 1:3: expected '==', found '='", 2),
        ("", "unable to parse expression '': 1:1: expected operand, found 'EOF'", 0),
        ("a ==", "unable to parse expression 'a ==': 1:5: expected operand, found 'EOF'", 4),
        ("a b", "unable to parse expression 'a b': 1:3: expected 'EOF', found b", 2),
        ("a\n== b", "unable to parse expression 'a\n== b': 2:1: expected 'EOF', found '=='", 2),
        ("é == @", "unable to parse expression 'é == @': 1:7: illegal character U+0040 '@'", 5),
        ('"abc', "unable to parse expression '\"abc': 1:1: string literal not terminated", 0),
        ('"a\\qb"', "unable to parse expression '\"a\\qb\"': 1:4: unknown escape sequence", 3),
        (
            "f(a\n)",
            "unable to parse expression 'f(a\n)': 1:4: missing ',' before newline in argument list",
            3,
        ),
        (
            "a.type",
            "unable to parse expression 'a.type': 1:3: expected selector or type assertion, found 'type'",
            2,
        ),
        ("1_", "unable to parse expression '1_': 1:2: '_' must separate successive digits", 1),
        ("09", "unable to parse expression '09': 1:2: invalid digit '9' in octal literal", 1),
        ("a /* x", "unable to parse expression 'a /* x': 1:3: comment not terminated", 2),
        ("0x10", 'strconv.ParseInt: parsing "0x10": invalid syntax', 0),
        ("99999999999999999999", 'strconv.ParseInt: parsing "99999999999999999999": value out of range', 0),
        ("1e999", 'strconv.ParseFloat: parsing "1e999": value out of range', 0),
        ("2i", "invalid syntax", 0),
        ("(f)(x)", "unexpected expression: (f)", 0),
        ("a[1:2]", "unexpected expression: a[1:2]", 0),
        ("x.(int)", "unexpected expression: x.(int)", 0),
        ("a + *b", "unexpected expression: *b", 4),
    ],
)
def test_errors(text: str, expected: str, position: int) -> None:
    assert reason(text) == (expected, position)


def test_error_str_points_at_position() -> None:
    with pytest.raises(CompileError) as info:
        parse("a = 2")
    assert str(info.value).endswith("at position 2")
    assert info.value.expression == "a = 2"


def test_nodes_carry_positions() -> None:
    tree = parse('a.b == f(c, "d")')
    assert isinstance(tree, Call) and (tree.start, tree.pos) == (0, 4)
    left, right = tree.args
    assert left == Variable("a.b", 0)
    assert isinstance(right, Call) and (right.start, right.pos) == (7, 7)
    assert right.args[1] == Constant('"d"', "d", ValueType.STRING, 12)


def test_extract_eq_matches_duration_and_nested() -> None:
    found = extract_eq_matches('a == "10ms" && (b == 1 && c.d == "x") && e != 2')
    assert set(found) == {"a", "b", "c.d"}
    assert found["b"] == 1 and found["c.d"] == "x"


def test_go_quote_and_unquote() -> None:
    assert go_quote('a"b\\c\n\x01é') == '"a\\"b\\\\c\\n\\x01é"'
    assert go_unquote("'\\''") == "'"
    assert go_unquote('"\\xff"') == "\ufffd"  # not UTF-8 in Go; the replacement character here
    for bad in ('"a', "'ab'", '"\\\'"', '"\\400"', "`a`b`"):
        with pytest.raises(ConstantError):
            go_unquote(bad)


def test_new_constant_floats() -> None:
    assert new_constant("0x1p-2", ValueType.DOUBLE).value == 0.25
    assert new_constant("1_000.5", ValueType.DOUBLE).value == 1000.5
    with pytest.raises(ConstantError):
        new_constant("1__0.5", ValueType.DOUBLE)
    assert new_constant('"3000000h"', ValueType.STRING).type is ValueType.STRING  # overflows Go's int64 ns
