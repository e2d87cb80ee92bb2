"""The list adapter without a network: params, list formats, matching and check results."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from mixerd.adapter import Code, Env, ManualClock
from mixerd.adapters import list as list_adapter
from mixerd.adapters.list import INFO, LISTCHECKER_INFO, ListHandler, ListUnavailableError
from mixerd.adapters.list import matcher as m
from mixerd.adapters.list.config import ListParams, parse_params
from mixerd.attribute import DNSName, IPAddress
from mixerd.templates import ListEntryInstance

# --- registration -----------------------------------------------------------------------------------


def test_registered_twice_with_one_builder() -> None:
    assert INFO.name == "list"
    assert LISTCHECKER_INFO.name == "listchecker"
    assert INFO.builder is LISTCHECKER_INFO.builder
    assert INFO.templates == LISTCHECKER_INFO.templates == ("listentry",)
    assert "INFO" in list_adapter.__all__ and "LISTCHECKER_INFO" in list_adapter.__all__


def test_default_config_is_valid_and_matches_mixer_defaults() -> None:
    params, errors = parse_params(INFO.default_config)
    assert errors == []
    assert params.refresh_interval == dt.timedelta(seconds=60)
    assert params.ttl == dt.timedelta(seconds=300)
    assert params.caching_interval == dt.timedelta(seconds=300)
    assert params.caching_use_count == 10000
    assert params.entry_type is m.EntryType.STRINGS
    assert params.blacklist is False
    assert params.fetch_timeout == dt.timedelta(seconds=10)
    assert params.max_list_bytes == 10 << 20


# --- params -----------------------------------------------------------------------------------------


def paths(config: dict[str, Any]) -> list[str]:
    return [e.path for e in parse_params(config)[1]]


def test_snake_case_keys_and_numeric_enum() -> None:
    params, errors = parse_params(
        {"provider_url": "https://x.example/l", "entry_type": 2, "caching_use_count": 5}
    )
    assert errors == []
    assert params.provider_url == "https://x.example/l"
    assert params.entry_type is m.EntryType.IP_ADDRESSES
    assert params.caching_use_count == 5


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"providerUrl": "ftp://example.com/list"}, ["providerUrl"]),
        ({"providerUrl": "http://example.com:99999/"}, ["providerUrl"]),
        ({"providerUrl": "http://x.example", "refreshInterval": "500ms"}, ["refreshInterval"]),
        ({"providerUrl": "http://x.example", "refreshInterval": "10s", "ttl": "9s"}, ["ttl"]),
        ({"providerUrl": "http://x.example", "refreshInterval": "10s", "ttl": "10s"}, []),
        ({"fetchTimeout": "0s"}, ["fetchTimeout"]),
        ({"maxListBytes": 0}, ["maxListBytes"]),
        ({"entryType": "NUMBERS"}, ["entryType"]),
        ({"blacklist": "yes"}, ["blacklist"]),
        ({"overrides": "abc"}, ["overrides"]),
        ({"listUrl": "http://x.example"}, ["listUrl"]),
        # without a URL the refresh settings are not checked (Mixer)
        ({"refreshInterval": "500ms", "ttl": "100ms"}, []),
    ],
)
def test_param_errors_name_the_field(config: dict[str, Any], expected: list[str]) -> None:
    assert paths(config) == expected


def test_every_bad_override_is_reported_with_its_index() -> None:
    errors = parse_params(
        {"entryType": "IP_ADDRESSES", "overrides": ["1.2.3.4", "XYZ", "10.0.0.0/8", "1.2.3.4/33"]}
    )[1]
    assert [e.path for e in errors] == ["overrides[1]", "overrides[3]"]
    assert "XYZ" in errors[0].message
    assert str(errors[0]).startswith("overrides[1]: ")


def test_regex_overrides_are_compiled_with_re2_not_python_re() -> None:
    # backreferences and lookaheads are valid in Python's re, not in RE2 (and Mixer used RE2)
    errors = parse_params({"entryType": "REGEX", "overrides": ["ok.*", r"(a)\1", "(?=x)"]})[1]
    assert [e.path for e in errors] == ["overrides[1]", "overrides[2]"]
    assert "RE2" in errors[0].message


# --- matching -----------------------------------------------------------------------------------------


def test_strings_are_exact() -> None:
    matcher = m.build_matcher(m.EntryType.STRINGS, ["ABC", "", "x y"])
    assert matcher.contains("ABC") and matcher.contains("x y")
    assert not matcher.contains("abc") and not matcher.contains("") and not matcher.contains("x")
    assert len(matcher) == 2


def test_case_insensitive_strings_fold_case() -> None:
    matcher = m.build_matcher(m.EntryType.CASE_INSENSITIVE_STRINGS, ["AbC", "Straße"])
    for value in ("abc", "ABC", "aBc", "STRASSE", "strasse"):
        assert matcher.contains(value), value
    assert not matcher.contains("abd")


def test_ip_addresses_and_ranges() -> None:
    matcher = m.build_matcher(
        m.EntryType.IP_ADDRESSES,
        ["10.10.11.2", "9.9.9.9/28", " 172.16.0.0/12 ", "2001:db8::/32", "fe80::1", "::ffff:192.168.0.0/112"],
    )
    inside = ["10.10.11.2", "9.9.9.1", "9.9.9.15", "172.31.255.255", "2001:db8::5", "fe80::1", "192.168.4.4"]
    outside = ["10.10.11.3", "9.9.9.16", "172.32.0.1", "2001:db9::1", "fe80::2", "192.169.0.1"]
    for value in inside:
        assert matcher.contains(value), value
    for value in outside:
        assert not matcher.contains(value), value
    # an IPv4-mapped IPv6 address is the IPv4 address (Go's net.IP semantics)
    assert matcher.contains("::ffff:10.10.11.2")
    assert len(matcher) == 6


def test_a_bare_ipv6_entry_is_one_host_not_a_slash_32() -> None:
    matcher = m.build_matcher(m.EntryType.IP_ADDRESSES, ["2001:db8::1"])
    assert matcher.contains("2001:db8::1")
    assert not matcher.contains("2001:db8::2")  # Mixer's "/32" suffix would have matched this


def test_ip_list_rejects_values_that_are_not_addresses() -> None:
    matcher = m.build_matcher(m.EntryType.IP_ADDRESSES, ["10.0.0.0/8"])
    with pytest.raises(m.InvalidValueError, match="XYZ is not a valid IP address"):
        matcher.contains("XYZ")


def test_regexes_search_unanchored_like_go_matchstring() -> None:
    matcher = m.build_matcher(m.EntryType.REGEX, ["a*b", "^exact$", r"\d{3}-x"])
    assert matcher.contains("abc")  # "ab" inside "abc"
    assert matcher.contains("xxbxx")  # a*b matches a lone "b"
    assert matcher.contains("exact")
    assert not matcher.contains("not exact")
    assert matcher.contains("id 123-x!")
    assert not matcher.contains("B")


def test_many_regexes_are_split_over_several_sets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(m, "REGEX_SET_SIZE", 3)
    patterns = [f"^item{i}$" for i in range(10)]
    matcher = m.build_matcher(m.EntryType.REGEX, patterns)
    assert len(matcher) == 10
    assert len(matcher._sets) == 4  # type: ignore[attr-defined]
    assert all(matcher.contains(f"item{i}") for i in range(10))
    assert not matcher.contains("item10")


def test_a_bad_entry_is_named_by_index() -> None:
    with pytest.raises(m.EntryError) as exc:
        m.build_matcher(m.EntryType.REGEX, ["ok", "(["])
    assert exc.value.index == 1
    with pytest.raises(m.EntryError) as exc:
        m.build_matcher(m.EntryType.IP_ADDRESSES, ["1.2.3.4", "1.2.3.4/40", "x"])
    assert exc.value.index == 1


# --- bodies -----------------------------------------------------------------------------------------


def test_line_formats_keep_whitespace_drop_blank_lines_and_cr() -> None:
    body = b"ABC\r\nDEF\n\n  padded \n\r\n"
    assert m.parse_body(m.EntryType.STRINGS, body) == ["ABC", "DEF", "  padded "]
    assert m.parse_body(m.EntryType.REGEX, b"a+.*\nefg") == ["a+.*", "efg"]


def test_ip_body_is_mixers_yaml_or_one_entry_per_line() -> None:
    assert m.parse_body(m.EntryType.IP_ADDRESSES, b"whitelist:\n- 10.10.11.2\n- 9.9.9.9/28\n") == [
        "10.10.11.2",
        "9.9.9.9/28",
    ]
    assert m.parse_body(m.EntryType.IP_ADDRESSES, b"other: 1\n") == []
    lines = b"# bad hosts\n10.0.0.1\n\n  10.1.0.0/16   # a range\n"
    assert m.parse_body(m.EntryType.IP_ADDRESSES, lines) == ["10.0.0.1", "10.1.0.0/16"]


@pytest.mark.parametrize(
    "body",
    [b"whitelist: 10.0.0.1\n", b"whitelist:\n- 10\n", b"whitelist:\n- [1, 2]\n", b"\xff\xfe"],
)
def test_unreadable_bodies(body: bytes) -> None:
    with pytest.raises(m.ListParseError):
        m.parse_body(m.EntryType.IP_ADDRESSES, body)


# --- values -----------------------------------------------------------------------------------------


def test_value_text() -> None:
    assert m.value_text("abc") == "abc"
    assert m.value_text(DNSName("svc.example")) == "svc.example"
    assert m.value_text(IPAddress.parse("10.56.0.1")) == "10.56.0.1"  # 16-byte mapped form
    assert m.value_text(IPAddress(bytes([10, 56, 0, 1]))) == "10.56.0.1"
    assert m.value_text(bytes([10, 0, 0, 2])) == "10.0.0.2"
    with pytest.raises(m.InvalidValueError, match=r"^42 is not a valid string or IP address$"):
        m.value_text(42)
    with pytest.raises(m.InvalidValueError, match=r"^<nil> is not"):
        m.value_text(None)


# --- the handler without a provider ---------------------------------------------------------------


def handler(config: dict[str, Any], clock: ManualClock | None = None) -> ListHandler:
    params, errors = parse_params(config)
    assert errors == []
    return ListHandler(params, Env("h.listchecker.istio-system", clock=clock or ManualClock()))


def entry(value: Any) -> ListEntryInstance:
    return ListEntryInstance("e.instance.istio-system", value)


def test_whitelist_results_carry_the_caching_hints() -> None:
    h = handler({"overrides": ["v1", "v2"], "cachingInterval": "7s", "cachingUseCount": 3})
    ok = h.handle_listentry(entry("v1"))
    assert ok.status.code == Code.OK
    assert (ok.valid_duration, ok.valid_use_count) == (dt.timedelta(seconds=7), 3)
    denied = h.handle_listentry(entry("v3"))
    assert denied.status.code == Code.PERMISSION_DENIED
    assert denied.status.message == "v3 is not whitelisted"
    assert (denied.valid_duration, denied.valid_use_count) == (dt.timedelta(seconds=7), 3)
    assert h.handle_listentry(entry("")).status.message == " is not whitelisted"


def test_blacklist_results() -> None:
    h = handler({"overrides": ["bad"], "blacklist": True})
    assert h.handle_listentry(entry("good")).status.code == Code.OK
    denied = h.handle_listentry(entry("bad"))
    assert (denied.status.code, denied.status.message) == (Code.PERMISSION_DENIED, "bad is blacklisted")


def test_values_of_other_types_are_invalid_arguments() -> None:
    h = handler({"overrides": ["1"]})
    for value in (1, True, 1.5, dt.timedelta(seconds=1), None):
        result = h.handle_listentry(entry(value))
        assert result.status.code == Code.INVALID_ARGUMENT, value
        assert result.valid_duration == dt.timedelta(seconds=300)


def test_ip_values_in_ip_and_string_lists() -> None:
    ips = handler({"entryType": "IP_ADDRESSES", "overrides": ["10.57.0.0/16"]})
    assert ips.handle_listentry(entry(IPAddress.parse("10.57.3.4"))).status.code == Code.OK
    assert ips.handle_listentry(entry("10.57.3.4")).status.code == Code.OK
    assert ips.handle_listentry(entry(IPAddress.parse("10.56.0.1"))).status.message == (
        "10.56.0.1 is not whitelisted"
    )
    bad = ips.handle_listentry(entry("not-an-ip"))
    assert (bad.status.code, bad.status.message) == (
        Code.INVALID_ARGUMENT,
        "not-an-ip is not a valid IP address",
    )
    assert ips.handle_listentry(entry(IPAddress(bytes([10, 57, 9, 9])))).status.code == Code.OK
    v6 = handler({"entryType": "IP_ADDRESSES", "overrides": ["2001:db8::/32", "10.0.0.0/8"]})
    assert v6.handle_listentry(entry(IPAddress.parse("2001:db8::7"))).status.code == Code.OK
    assert v6.handle_listentry(entry(IPAddress.parse("2001:db9::7"))).status.message == (
        "2001:db9::7 is not whitelisted"
    )
    assert v6.handle_listentry(entry(IPAddress.parse("10.1.2.3"))).status.code == Code.OK
    empty = v6.handle_listentry(entry(IPAddress(b"")))
    assert (empty.status.code, empty.status.message) == (
        Code.INVALID_ARGUMENT,
        "<nil> is not a valid IP address",
    )
    strings = handler({"overrides": ["10.0.0.1"]})
    assert strings.handle_listentry(entry(IPAddress(bytes([10, 0, 0, 1])))).status.code == Code.OK


def test_a_provider_list_is_unavailable_until_fetched() -> None:
    params, errors = parse_params({"providerUrl": "http://127.0.0.1:9/list", "overrides": ["a"]})
    assert errors == []
    h = ListHandler(params, Env("h", clock=ManualClock()))  # no event loop: no background fetch
    assert h.entries is None
    with pytest.raises(ListUnavailableError, match="has not been fetched yet"):
        h.handle_listentry(entry("a"))


def test_params_dataclass_is_frozen() -> None:
    with pytest.raises(AttributeError):
        ListParams().ttl = dt.timedelta(0)  # type: ignore[misc]
