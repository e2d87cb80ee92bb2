"""The one IP address parser (:func:`mixerd.attribute.parse_ip`): Go 1.13 ``net.ParseIP`` semantics."""

from __future__ import annotations

import ipaddress

import pytest

from mixerd.attribute import V4_MAPPED_PREFIX, IPAddress, coerce, parse_ip
from mixerd.attribute import ValueType as V


@pytest.mark.parametrize(
    ("text", "packed"),
    [
        ("10.0.0.1", V4_MAPPED_PREFIX + bytes([10, 0, 0, 1])),
        ("0.0.0.0", V4_MAPPED_PREFIX + bytes(4)),
        ("255.255.255.255", V4_MAPPED_PREFIX + b"\xff" * 4),
        ("010.000.000.001", V4_MAPPED_PREFIX + bytes([10, 0, 0, 1])),  # leading zeros are decimal
        ("0000010.0.0.1", V4_MAPPED_PREFIX + bytes([10, 0, 0, 1])),
        ("::ffff:1.2.3.4", V4_MAPPED_PREFIX + bytes([1, 2, 3, 4])),
        ("2001:db8::1", bytes.fromhex("20010db8000000000000000000000001")),
        ("2001:DB8::1", bytes.fromhex("20010db8000000000000000000000001")),
        ("::", bytes(16)),
        ("::1.2.3.4", bytes(12) + bytes([1, 2, 3, 4])),
    ],
)
def test_parse(text: str, packed: bytes) -> None:
    ip = parse_ip(text)
    assert ip.packed == packed
    assert IPAddress.parse(text) == ip


def test_v4_equals_its_mapped_forms() -> None:
    four = IPAddress(bytes([1, 2, 3, 4]))
    assert parse_ip("1.2.3.4") == four == parse_ip("::ffff:1.2.3.4") == parse_ip("001.002.003.004")
    assert hash(parse_ip("1.2.3.4")) == hash(four)
    assert str(parse_ip("1.2.3.4")) == "1.2.3.4"
    assert parse_ip("1.2.3.4").address == ipaddress.IPv4Address("1.2.3.4")
    assert parse_ip("::1.2.3.4") != four  # IPv4-compatible is not IPv4-mapped


@pytest.mark.parametrize(
    "text",
    [
        "",
        "1.2.3",
        "1.2.3.4.5",
        "1.2.3.256",
        "1..2.3",
        "0x1.2.3.4",
        "1.2.3.-4",
        "1.2.3.4/32",
        "2001:db8::/32",
        "1::2::3",
        "1:2:3:4:5:6:7:8:9",
        "12345::",
        "::ffff:1.2.3",
        "localhost",
        "garbage",
        "fe80::1%eth0",  # Go rejects zones; IPAddress has nowhere to keep one
        "\u0661.\u0662.\u0663.\u0664",  # Arabic-Indic digits
        "1.2.3.\uff14",  # fullwidth 4
        "\u00e9::1",
        " 1.2.3.4",
        "1.2.3.4 ",
        "\t::1",
        "::1\n",
        "1.2.3.4\x00",
    ],
)
def test_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="to IP_ADDRESS"):
        parse_ip(text)


def test_cached() -> None:
    assert parse_ip("192.0.2.7") is parse_ip("192.0.2.7")


def test_coerce_strips_loose_input() -> None:
    assert coerce(" 10.0.0.1\n", V.IP_ADDRESS) == parse_ip("10.0.0.1")
    with pytest.raises(ValueError, match="not a valid IP_ADDRESS"):
        coerce("fe80::1%eth0", V.IP_ADDRESS)
