"""Regressions: inputs that crashed the expression compiler, and what a bad expression does to a
config (reported with its resource and field path; the rest applies, at start and at run time)."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest

from mixerd.attribute import DictBag, ValueType, builtin_manifest
from mixerd.config import MemoryStore, StaticAdapterCatalog, build_snapshot, parse_text
from mixerd.lang import CompileError, EvaluationError, compile, parse
from mixerd.lang import compiler as lang_compiler
from mixerd.lang.functions import compile_regex
from mixerd.runtime import Runtime

MANIFEST = dict(builtin_manifest())


def test_an_overflowing_duration_string_is_a_string_constant() -> None:
    # Go's time.ParseDuration rejects "99999999999h" (beyond int64 ns), so Mixer kept a STRING;
    # parse_duration raised OverflowError from timedelta() and the compiler crashed.
    expr = compile('request.path == "99999999999h"', MANIFEST)
    assert expr.evaluate({"request.path": "99999999999h"}) is True
    assert expr.evaluate({"request.path": "/"}) is False
    assert compile('"99999999999h"', MANIFEST).result_type is ValueType.STRING
    assert compile('"9' + "9" * 400 + 'h"', MANIFEST).result_type is ValueType.STRING  # float inf
    assert compile('"2562047h"', MANIFEST).constant_value == dt.timedelta(hours=2562047)


def test_an_integer_literal_beyond_pythons_digit_limit_is_out_of_range() -> None:
    with pytest.raises(CompileError, match=r"strconv\.ParseInt: parsing \"1+\": value out of range") as err:
        compile("1" * 4301, MANIFEST)
    assert err.value.position == 0
    with pytest.raises(CompileError, match="value out of range"):
        compile("9223372036854775808", MANIFEST)
    assert compile("0" * 5000 + "7", MANIFEST).constant_value == 7  # leading zeros are fine in Go


def test_a_lone_surrogate_in_the_source_is_illegal_utf8() -> None:
    text = '"ab\udce3".matches(request.path)'
    with pytest.raises(CompileError) as err:
        compile(text, MANIFEST)
    assert err.value.position == 3
    assert err.value.reason.endswith("1:4: illegal UTF-8 encoding")
    str(err.value).encode("utf-8")  # printable: the surrogate is escaped in the message
    with pytest.raises(CompileError, match="illegal UTF-8 encoding"):
        parse("request.path == '\ud800'")


def test_a_regex_with_a_lone_surrogate_fails_at_evaluation() -> None:
    with pytest.raises(EvaluationError, match="error parsing regexp: invalid UTF-8"):
        compile_regex("ab\udce3")
    expr = compile("request.host.matches(request.path)", MANIFEST)
    with pytest.raises(EvaluationError, match="invalid UTF-8"):
        expr.evaluate({"request.host": "a\udce3", "request.path": "a"})


def test_an_ace_label_that_decodes_to_nothing() -> None:
    # Go's x/net/idna: "xn--" decodes to an empty label, invalid under the validation profile.
    for text, message in (
        ('dnsName("xn--")', "error converting 'xn--' to dns name: 'idna: invalid label \"\"'"),
        ('email("a@xn--")', "error converting 'a@xn--' to e-mail"),
    ):
        expr = compile(text, MANIFEST)
        with pytest.raises(EvaluationError) as err:
            expr.evaluate({})
        assert message in err.value.message
    # The lookup profile (== on DNS names) allows the empty label.
    eq = compile('dnsName(request.host) == dnsName("a.b")', MANIFEST)
    assert eq.evaluate({"request.host": "a.b"}) is True
    lookup = compile('request.host == dnsName("a.b")', {"request.host": ValueType.DNS_NAME})
    assert lookup.evaluate({"request.host": "xn--"}) is False
    assert lookup.evaluate({"request.host": "A.b."}) is True


def test_an_unexpected_compiler_exception_is_a_compile_error_naming_the_expression(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*_args: Any) -> None:
        raise ZeroDivisionError("compiler bug")

    monkeypatch.setattr(lang_compiler, "check_generatable", broken)
    with pytest.raises(
        CompileError, match=r"internal compiler error on expression 'request.size > 1'"
    ) as err:
        compile("request.size > 1", MANIFEST)
    assert "ZeroDivisionError: compiler bug" in err.value.reason


# --- config: snapshot and runtime ----------------------------------------------------------------

_HEAD = "apiVersion: config.istio.io/v1alpha2\n"


def _config(*rules: tuple[str, str, int]) -> str:
    docs = [
        _HEAD
        + "kind: instance\nmetadata: {name: c, namespace: istio-system}\nspec: {compiledTemplate: checknothing}"
    ]
    for name, match, code in rules:
        docs.append(
            _HEAD + f"kind: handler\nmetadata: {{name: h{name}, namespace: istio-system}}\n"
            f"spec: {{compiledAdapter: denier, params: {{status: {{code: {code}, message: {name}}}}}}}"
        )
        docs.append(
            _HEAD + f"kind: rule\nmetadata: {{name: {name}, namespace: istio-system}}\n"
            f"spec:\n  match: {match!r}\n  actions: [{{handler: h{name}, instances: [c]}}]"
        )
    return "\n---\n".join(docs)


GOOD = ("good", 'request.path == "/deny"', 7)
DURATION = ("duration", 'request.path == "99999999999h"', 9)
HUGE = ("huge", "request.size == " + "1" * 4301, 3)


def _store(text: str) -> MemoryStore:
    store = MemoryStore()
    parsed = parse_text(text, file="config.yaml")
    store.replace(parsed.resources, parsed.errors)
    return store


async def _code(rt: Runtime, path: str) -> int:
    out = await rt.dispatcher.check(DictBag({"request.path": path}))
    return int(out.result.status.code)


def test_snapshot_with_the_reproducer_rules() -> None:
    parsed = parse_text(_config(GOOD, DURATION, HUGE), file="config.yaml")
    snap = build_snapshot(
        parsed.resources,
        adapters=StaticAdapterCatalog({"denier": ("checknothing",)}),
        base_manifest=builtin_manifest(),
    )
    assert sorted(r.key.name for r in snap.rules) == ["duration", "good"]
    errors = [str(e) for e in snap.errors]
    assert len(errors) == 1 and errors[0].startswith("rule/huge.istio-system: spec.match: strconv.ParseInt")


def test_snapshot_reports_a_compiler_crash_against_its_resource(monkeypatch: pytest.MonkeyPatch) -> None:
    import mixerd.config.snapshot as snapshot_module

    def crashing(text: str, manifest: Any, **kw: Any) -> Any:
        if "crash" in text:
            raise RuntimeError("boom")
        return compile(text, manifest, **kw)

    monkeypatch.setattr(snapshot_module, "compile", crashing)
    parsed = parse_text(_config(GOOD, ("bad", 'request.path == "crash"', 3)), file="config.yaml")
    snap = build_snapshot(
        parsed.resources,
        adapters=StaticAdapterCatalog({"denier": ("checknothing",)}),
        base_manifest=builtin_manifest(),
    )
    assert [r.key.name for r in snap.rules] == ["good"]
    errors = [str(e) for e in snap.errors]
    assert len(errors) == 1
    assert errors[0].startswith(
        "rule/bad.istio-system: spec: internal error while compiling this resource: RuntimeError: boom"
    )


async def _wait_for_generation(rt: Runtime, generation: int) -> None:
    for _ in range(200):
        if rt.generation >= generation:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"config generation {generation} never came (status: {rt.status.errors})")


async def test_runtime_serves_next_to_the_reproducer_rules_and_applies_later_changes() -> None:
    # At start: the good rule and the "99999999999h" rule serve, the bad one is reported.
    store = _store(_config(GOOD, DURATION, HUGE))
    rt = Runtime(store)
    await rt.start()
    try:
        assert await _code(rt, "/deny") == 7
        assert await _code(rt, "99999999999h") == 9
        assert await _code(rt, "/") == 0
        errors = rt.status.errors
        assert len(errors) == 1 and errors[0].startswith(
            "rule/huge.istio-system: spec.match: strconv.ParseInt"
        )

        # At run time, through the store watch: a change adding bad expressions applies the rest...
        generation = rt.generation
        bad = ("surrogate", '"ab\udce3".matches(request.path)', 5)
        parsed = parse_text(_config(GOOD, HUGE, bad), file="config.yaml")
        store.replace(parsed.resources, parsed.errors)
        await _wait_for_generation(rt, generation + 1)
        assert await _code(rt, "99999999999h") == 0  # the duration rule was removed
        assert any(e.startswith("rule/surrogate.istio-system: spec.match:") for e in rt.status.errors)

        # ...and a later valid change is applied too.
        parsed = parse_text(_config(("later", 'request.path == "/later"', 8)), file="config.yaml")
        store.replace(parsed.resources, parsed.errors)
        await _wait_for_generation(rt, generation + 2)
        assert await _code(rt, "/later") == 8
        assert await _code(rt, "/deny") == 0
        assert rt.status.errors == ()
    finally:
        await rt.close()


async def test_a_change_that_fails_to_apply_is_in_the_status(monkeypatch: pytest.MonkeyPatch) -> None:
    import mixerd.runtime.controller as controller

    store = _store(_config(GOOD))
    rt = Runtime(store)
    await rt.start()
    try:
        real = controller.build_snapshot

        def failing(*args: Any, **kw: Any) -> Any:
            raise RuntimeError("snapshot bug")

        monkeypatch.setattr(controller, "build_snapshot", failing)
        parsed = parse_text(_config(("later", 'request.path == "/later"', 8)), file="config.yaml")
        store.replace(parsed.resources, parsed.errors)
        for _ in range(200):
            if rt.apply_error is not None:
                break
            await asyncio.sleep(0.01)
        assert rt.status.errors[0].startswith(
            "the latest config change was not applied (RuntimeError: snapshot bug)"
        )
        assert await _code(rt, "/deny") == 7  # the previous config keeps serving

        monkeypatch.setattr(controller, "build_snapshot", real)
        generation = rt.generation
        parsed = parse_text(_config(GOOD, ("later", 'request.path == "/later"', 8)), file="config.yaml")
        store.replace(parsed.resources, parsed.errors)
        await _wait_for_generation(rt, generation + 1)
        assert rt.status.errors == ()
        assert await _code(rt, "/later") == 8
    finally:
        await rt.close()
