"""Extern functions: Go-compatible details the conformance tables do not cover."""

from __future__ import annotations

import pytest

from mixerd.attribute import IPAddress
from mixerd.lang import FUNCTIONS, INTRINSICS, EvaluationError
from mixerd.lang import functions as fns


@pytest.mark.parametrize(
    ("text", "packed"),
    [
        ("10.0.0.1", b"\x00" * 10 + b"\xff\xff" + bytes([10, 0, 0, 1])),
        (
            "010.000.000.001",
            b"\x00" * 10 + b"\xff\xff" + bytes([10, 0, 0, 1]),
        ),  # Go 1.13 allows leading zeros
        ("::ffff:1.2.3.4", b"\x00" * 10 + b"\xff\xff" + bytes([1, 2, 3, 4])),
        ("2001:db8::1", bytes.fromhex("20010db8000000000000000000000001")),
    ],
)
def test_ip(text: str, packed: bytes) -> None:
    assert fns.ip(text).packed == packed


@pytest.mark.parametrize(
    "text", ["", "1.2.3", "1.2.3.256", " 1.2.3.4", "fe80::1%eth0", "1.2.3.4.5", "\u0661.\u0662.\u0663.\u0664"]
)
def test_bad_ip(text: str) -> None:
    with pytest.raises(EvaluationError, match="to IP_ADDRESS"):
        fns.ip(text)


def test_ip_equal_uses_the_address() -> None:
    assert fns.ip_equal(IPAddress(bytes([1, 2, 3, 4])), fns.ip("1.2.3.4"))


@pytest.mark.parametrize(
    ("a", "b", "equal"),
    [
        ("http://a.com/x?q=1#f", "HTTP://A.COM/x?q=1#f", True),
        ("http://a.com/%41", "http://a.com/A", False),  # the path's own encoding is kept
        ("http://a.com/a%20b", "http://a.com/a b", True),
        ("https://a.com:443", "https://a.com", False),  # ports are compared as written
        ("http://u:p@a.com/", "http://u:p@A.com/", True),
        ("urn:x:y", "URN:x:y", True),
        ("mailto:A@b", "mailto:a@b", False),
        ("http://a.com/#%41", "http://a.com/#A", True),  # fragments compare decoded
    ],
)
def test_uri_equal(a: str, b: str, equal: bool) -> None:
    assert fns.uri_equal(a, b) is equal


@pytest.mark.parametrize(
    ("text", "detail"),
    [
        ("http://a.com:port", 'invalid port ":port" after host'),
        ("http://a b.com", 'invalid character " " in host name'),
        ("http://a.com/%zz", 'invalid URL escape "%zz"'),
        ("a\x7fb", "net/url: invalid control character in URL"),
        ("1:x", "first path segment in URL cannot contain colon"),
    ],
)
def test_bad_uri(text: str, detail: str) -> None:
    with pytest.raises(EvaluationError) as info:
        fns.uri(text)
    assert detail in str(info.value)


@pytest.mark.parametrize(
    ("a", "b", "equal"),
    [
        ("Bücher.Example", "xn--bcher-kva.example", True),
        ("a.example.", "A.EXAMPLE", True),
        ("a.example..", "a.example", False),
        ("ﬁ.example", "fi.example", True),  # UTS 46 mapping of the ligature
    ],
)
def test_dns_name_equal(a: str, b: str, equal: bool) -> None:
    assert fns.dns_name_equal(a, b) is equal


def test_dns_name_errors() -> None:
    with pytest.raises(EvaluationError, match="disallowed rune U\\+005F"):
        fns.dns_name_equal("a_b", "a")
    assert fns.dns_name("a_b") == "a_b"  # the validation profile has no STD3 mapping, like Mixer's
    with pytest.raises(EvaluationError, match="invalid label"):
        fns.dns_name("ab--cd")  # hyphens in the 3rd and 4th position
    with pytest.raises(EvaluationError, match="invalid label"):
        fns.dns_name("\u0301a")  # starts with a combining mark
    with pytest.raises(EvaluationError, match="invalid label"):
        fns.dns_name("xn---.com")  # bad punycode
    with pytest.raises(EvaluationError, match="invalid label"):
        fns.dns_name("xn--a.com")  # punycode for U+0080, not a valid IDNA rune
    assert fns.dns_name("a..") == "a.."  # Go's label iterator skips the last two empty labels here
    with pytest.raises(EvaluationError, match="invalid label"):
        fns.dns_name("1ab.\u05d0\u05d1")  # a right-to-left label makes the bidi rule apply to all labels


def test_email() -> None:
    assert fns.email("a.b+c@d.example") == "a.b+c@d.example"
    assert fns.email("a@b ()") == "a@b ()"  # Go reads a comment after the address as its name...
    with pytest.raises(EvaluationError, match="display names are not allowed"):
        fns.email("a@b (Real Name)")  # ... which e-mail values may not have
    for bad in ("a@b@c", '"unclosed@b', "a@b>", "a@b, c@d", "<a@b"):
        with pytest.raises(EvaluationError):
            fns.email(bad)
    assert fns.email_equal("a@B.example", '"a"@b.example')
    assert fns.email_parts("a@b@c") == ("a", "b@c")


def test_strings() -> None:
    assert fns.match("anything", "*")
    assert fns.match("a*b", "a*b*") and not fns.match("xa", "a*")
    assert fns.size("日本") == 6
    assert fns.to_lower("ÀB") == "àb"
    assert fns.conditional_string(False, "y", "n") == "n"
    assert dict(fns.empty_string_map()) == {}


def test_catalogues() -> None:
    assert set(FUNCTIONS) == {
        "ip",
        "timestamp",
        "dnsName",
        "email",
        "uri",
        "match",
        "matches",
        "startsWith",
        "endsWith",
        "emptyStringMap",
        "conditionalString",
        "toLower",
    }
    assert all(f.impl is not None and f.pure for f in FUNCTIONS.values())
    assert set(INTRINSICS) == {
        "EQ",
        "NEQ",
        "LT",
        "LEQ",
        "GT",
        "GEQ",
        "OR",
        "LOR",
        "LAND",
        "INDEX",
        "conditional",
        "ADD",
        "size",
    }
    with pytest.raises(TypeError):
        FUNCTIONS["x"] = FUNCTIONS["ip"]  # type: ignore[index]
