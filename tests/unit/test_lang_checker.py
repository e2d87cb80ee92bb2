"""Type checking and Mixer's code-generator restrictions."""

from __future__ import annotations

import pytest

from mixerd.attribute import ValueType
from mixerd.lang import FUNCTIONS, CompileError, Function, compile, infer_type

V = ValueType
MANIFEST: dict[str, ValueType | str] = {
    "s": V.STRING,
    "t": "STRING",  # manifests may give type names
    "i": V.INT64,
    "d": V.DOUBLE,
    "b": V.BOOL,
    "ts": V.TIMESTAMP,
    "dur": V.DURATION,
    "ip": V.IP_ADDRESS,
    "m": V.STRING_MAP,
    "dns": V.DNS_NAME,
    "mail": V.EMAIL_ADDRESS,
    "u": V.URI,
    "bad": "NOT_A_TYPE",
    "unspecified": V.VALUE_TYPE_UNSPECIFIED,
}


def error(text: str, **kwargs: object) -> tuple[str, int | None]:
    with pytest.raises(CompileError) as info:
        compile(text, MANIFEST, **kwargs)  # type: ignore[arg-type]
    return info.value.reason, info.value.position


@pytest.mark.parametrize(
    ("text", "result"),
    [
        ("s | t", V.STRING),
        ("m[s] | t", V.STRING),
        ("conditional(b, ts, ts)", V.TIMESTAMP),
        ("conditionalString(b, s, t)", V.STRING),
        ("size(s)", V.INT64),
        ("dns == dns", V.BOOL),
        ("dns < dns", V.BOOL),  # Mixer compares DNS names, e-mails and URIs as strings with <
        ("dns + dns", V.DNS_NAME),
        ('dur | "1s"', V.DURATION),
        ("emptyStringMap() | m", V.STRING_MAP),
        ("ip(s) == ip", V.BOOL),
        ("ts > timestamp(s)", V.BOOL),
        ('"a.*".matches(s)', V.BOOL),
    ],
)
def test_types(text: str, result: ValueType) -> None:
    assert compile(text, MANIFEST).result_type is result
    assert infer_type(text, MANIFEST) is result


@pytest.mark.parametrize(
    ("text", "expected", "position"),
    [
        ("nope == 1", "unknown attribute nope", 0),
        ("i / 2", "unknown function: QUO", 2),
        ("i - 2", "unknown function: SUB", 2),
        ("!b", "unknown function: NOT", 0),
        ("i << 2", "unknown function: ", 2),
        ("frob(s)", "unknown function: frob", 0),
        ("s.toLower()", "invoking regular function on instance method: toLower", 2),
        ("startsWith(s, t)", "invoking instance method without an instance: startsWith", 0),
        ("i.startsWith(s)", "$i:startsWith($s) target typeError got INT64, expected STRING", 0),
        ('i == "0"', 'EQ($i, "0") arg 2 ("0") typeError got DURATION, expected INT64', 5),
        ("s | i", "OR($s, $i) arg 2 ($i) typeError got INT64, expected STRING", 4),
        ("m[i]", "INDEX($m, $i) arg 2 ($i) typeError got INT64, expected STRING", 2),
        (
            "conditional(s, i, i)",
            "conditional($s, $i, $i) arg 1 ($s) typeError got STRING, expected BOOL",
            12,
        ),
        ("size(s, t)", "size($s, $t) arity mismatch. Got 2 arg(s), expected 1 arg(s)", 8),
        ("match(s)", "match($s) arity mismatch. Got 1 arg(s), expected 2 arg(s)", 0),
        ("bad", "attribute bad: unknown value type 'NOT_A_TYPE' (expected one of", 0),
        # What Mixer's IL code generator refuses:
        ("dur == dur", "internal compiler error -- equality for type not yet implemented: duration", 4),
        ("m != m", "internal compiler error -- equality for type not yet implemented: interface", 2),
        ("b < b", "internal compiler error -- less than for type not yet implemented: bool", 2),
        (
            "ip >= ip",
            "internal compiler error -- greater or equal for type not yet implemented: interface",
            3,
        ),
        ("dur + dur", "internal compiler error -- Add for type not yet implemented: duration", 4),
        ("ts + ts", "internal compiler error -- Add for type not yet implemented: interface", 3),
        ("unspecified", "internal compiler error -- unhandled expression type: 'VALUE_TYPE_UNSPECIFIED'", 0),
        # an unreachable operand of `|` is still generated (and refused) by Mixer
        (
            '"x" | conditional(b + b, s, s)',
            "internal compiler error -- Add for type not yet implemented: bool",
            20,
        ),
    ],
)
def test_errors(text: str, expected: str, position: int) -> None:
    got, pos = error(text)
    assert got.startswith(expected), got
    assert pos == position


def test_infer_type_skips_code_generator_checks_and_wraps_parse_errors() -> None:
    assert infer_type("b + b", MANIFEST) is V.BOOL  # Mixer's checker accepts it; its compiler does not
    with pytest.raises(CompileError) as info:
        infer_type("s |", MANIFEST)
    assert info.value.reason.startswith(
        "failed to parse expression 's |': unable to parse expression 's |': 1:4:"
    )


def test_template_types_of_custom_functions() -> None:
    same = Function("same", V.BOOL, (V.VALUE_TYPE_UNSPECIFIED,), instance=True, impl=lambda a, b: a == b)
    first = Function("first", V.VALUE_TYPE_UNSPECIFIED, (V.VALUE_TYPE_UNSPECIFIED, V.VALUE_TYPE_UNSPECIFIED))
    functions = {**FUNCTIONS, "same": same, "first": first}
    assert compile("i.same(i)", MANIFEST, functions=functions).result_type is V.BOOL
    assert infer_type("first(ts, ts)", MANIFEST, functions=functions) is V.TIMESTAMP
    got, _ = error("i.same(s)", functions=functions)
    assert got == "$i:same($s) arg 1 ($s) typeError got STRING, expected INT64"
    got, pos = error("first(ts, ts)", functions=functions)
    assert (got, pos) == ("function first has no implementation", 0)


def test_functions_replace_the_extern_catalogue() -> None:
    assert error("ip(s)", functions={})[0] == "unknown function: ip"
    # the intrinsics stay
    assert compile("conditional(b, size(s), i)", MANIFEST, functions={}).result_type is V.INT64


def test_function_metadata_accepts_type_names() -> None:
    fn = Function("f", "string", ("INT64", V.BOOL))  # type: ignore[arg-type]
    assert fn.return_type is V.STRING and fn.argument_types == (V.INT64, V.BOOL)
    with pytest.raises(AttributeError):
        fn.name = "g"  # type: ignore[misc]
