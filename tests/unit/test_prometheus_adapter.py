"""The prometheus adapter: params, values, exposition, expiry, the cardinality guard and the
exporter's hand-over between handlers. Mixer's own tables are in tests/conformance."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
from collections.abc import Mapping
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from mixerd.adapter import WORKER_COUNT, Env, InstanceInfo, ManualClock, Params
from mixerd.adapter.testing import AdapterHarness
from mixerd.adapters.prometheus import (
    EXPORTER,
    INFO,
    OVERFLOW_METRIC,
    HandleMetricError,
    MetricConflictError,
    PrometheusExporter,
    PrometheusHandler,
    make_info,
    prom_value,
    safe_name,
    stringify,
)
from mixerd.adapters.prometheus.config import bucket_bounds, short_instance_name
from mixerd.adapters.prometheus.values import format_float_f, format_sample_value
from mixerd.attribute import DNSName, IPAddress, ValueType, stock_manifest
from mixerd.templates import MetricInstance, compile_instance
from tests.conformance_data import conformance_dir

CONFORMANCE = conformance_dir()
V = ValueType
RC = "requestcount.instance.istio-system"
DUR = "requestduration.instance.istio-system"


def infos(**types: Mapping[str, ValueType]) -> dict[str, InstanceInfo]:
    """InstanceInfos by short name: ``infos(requestcount={"value": V.INT64, ...})``."""
    out = {}
    for short, t in types.items():
        fqn = f"{short}.instance.istio-system"
        out[fqn] = InstanceInfo(fqn, "metric", dict(t))
    return out


RC_TYPES = {"value": V.INT64, "dimensions.svc": V.STRING, "dimensions.code": V.INT64, "dimensions.ok": V.BOOL}
COUNTER_CFG: dict[str, Any] = {
    "metrics": [
        {"instanceName": RC, "name": "requests_total", "kind": "COUNTER", "labelNames": ["svc", "code", "ok"]}
    ]
}


class Rig:
    """A private exporter plus helpers to build handlers on it."""

    def __init__(self) -> None:
        self.exporter = PrometheusExporter()
        self.info = make_info(self.exporter)
        self.clock = ManualClock()

    def build(
        self, config: Mapping[str, Any], instances: Mapping[str, InstanceInfo], owner: str = "h.istio-system"
    ) -> PrometheusHandler:
        builder = self.info.builder(config, instances)
        assert builder.validate() == []
        handler = builder.build(Env(owner, clock=self.clock))
        assert isinstance(handler, PrometheusHandler)
        return handler

    def families(self) -> dict[str, Any]:
        return {f.name: f for f in text_string_to_metric_families(self.exporter.render().decode())}

    def samples(self, family: str) -> dict[tuple[tuple[str, str], ...], float]:
        fam = self.families().get(family)
        if fam is None:
            return {}
        return {tuple(sorted(s.labels.items())): s.value for s in fam.samples}


def rc(svc: str = "a", code: int = 200, ok: bool = True, value: Any = 1) -> MetricInstance:
    return MetricInstance(RC, value, {"svc": svc, "code": code, "ok": ok})


# -- values ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "want"),
    [
        (1.5, 1.5),
        (7, 7.0),
        (dt.timedelta(milliseconds=386), 0.386),
        ("8.243543", 8.243543),
        ("-1e3", -1000.0),
        ("Inf", math.inf),
    ],
)
def test_prom_value(value: Any, want: float) -> None:
    assert prom_value(value) == want


@pytest.mark.parametrize(
    "value", [True, None, "not a value", " 1", "1_000", "", IPAddress.parse("1.2.3.4"), {}]
)
def test_prom_value_rejects(value: Any) -> None:
    with pytest.raises(ValueError):
        prom_value(value)


@pytest.mark.parametrize(
    ("value", "want"),
    [
        (1.0, "1"),
        (0.0, "0"),
        (0.005, "0.005"),
        (2.5, "2.5"),
        (100000.0, "100000"),
        (1e6, "1e+06"),
        (1234567.0, "1.234567e+06"),
        (1e8, "1e+08"),
        (1e-05, "1e-05"),
        (0.0001, "0.0001"),
        (-2.0, "-2"),
        (-1234567.5, "-1.2345675e+06"),
        (math.inf, "+Inf"),
        (-math.inf, "-Inf"),
        (math.nan, "NaN"),
    ],
)
def test_sample_value_format_is_gos(value: float, want: str) -> None:
    assert format_sample_value(value) == want


@pytest.mark.parametrize(
    ("value", "want"),
    [
        (1.0, "1"),
        (123456789.123456, "123456789.123456"),
        (1e20, "100000000000000000000"),
        (1e-7, "0.0000001"),
    ],
)
def test_float_f_format(value: float, want: str) -> None:
    assert format_float_f(value) == want


@pytest.mark.parametrize(
    ("value", "want"),
    [
        (IPAddress(bytes([10, 0, 0, 1])), "10.0.0.1"),
        (IPAddress.parse("2001:db8::1"), "2001:db8::1"),
        (DNSName("svc.ns"), "svc.ns"),
        (
            dt.datetime(2020, 1, 2, 3, 4, 5, 6, tzinfo=dt.timezone(dt.timedelta(hours=1))),
            "2020-01-02T02:04:05.000006Z",
        ),
        (dt.timedelta(minutes=1, seconds=30), "1m30s"),
        ({"b": "2", "a": "1"}, "a=1&b=2"),
        (False, "false"),
        (-3, "-3"),
    ],
)
def test_stringify_more(value: Any, want: str) -> None:
    assert stringify(value) == want


@pytest.mark.parametrize(
    ("name", "want"),
    [("/funky::gauge", "funky::gauge"), ("not-istio", "notistio"), ("a.b c/d", "a_b_c_d")],
)
def test_safe_name(name: str, want: str) -> None:
    assert safe_name(name) == want


@pytest.mark.parametrize(
    ("fqn", "want"),
    [(RC, "requestcount"), ("the.counter", "the.counter"), ("a.b.instance.ns", "a.b"), ("x", "x")],
)
def test_short_instance_name(fqn: str, want: str) -> None:
    assert short_instance_name(fqn) == want


def test_default_buckets_are_go_clients() -> None:
    assert bucket_bounds(Params({})) == (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


# -- params ---------------------------------------------------------------------------------------


def errors_of(config: Mapping[str, Any], instances: Mapping[str, InstanceInfo] | None = None) -> list[str]:
    ins = instances if instances is not None else infos(requestcount=RC_TYPES)
    return [str(e) for e in make_info(PrometheusExporter()).builder(config, ins).validate()]


def m(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"instanceName": RC, "kind": "COUNTER"}
    base.update(fields)
    return {"metrics": [base]}


@pytest.mark.parametrize(
    ("config", "want"),
    [
        ({"metrics": [{"kind": "GAUGE"}]}, "metrics[0].instanceName: required"),
        (m(instanceName="other.instance.istio-system"), "metrics[0].instanceName: instance 'other.instance"),
        (m(kind=None), "metrics[0].kind: required: GAUGE, COUNTER or DISTRIBUTION"),
        (m(kind="UNSPECIFIED"), "metrics[0].kind: required"),
        (m(kind="HISTOGRAM"), "metrics[0].kind: expected one of"),
        (m(labelNames=["svc", "svc"]), "metrics[0].labelNames[1]: duplicate label name 'svc'"),
        (m(labelNames=["9x"]), "metrics[0].labelNames[0]: '9x' is not a valid Prometheus label name"),
        (m(labelNames=["__svc"]), "metrics[0].labelNames[0]: label names starting with '__' are reserved"),
        (
            m(labelNames=["nope"]),
            "metrics[0].labelNames[0]: instance 'requestcount.instance.istio-system' has no",
        ),
        (m(name="a{b}"), "metrics[0].name: 'istio_a{b}' is not a valid Prometheus metric name"),
        (
            m(kind="DISTRIBUTION", labelNames=["le"]),
            "metrics[0].labelNames[0]: 'le' is reserved in histograms",
        ),
        (
            m(kind="DISTRIBUTION", buckets={"linearBuckets": {"numFiniteBuckets": 2}, "explicitBuckets": {}}),
            "metrics[0].buckets: give only one of",
        ),
        (
            m(kind="DISTRIBUTION", buckets={"linearBuckets": {"numFiniteBuckets": 2, "width": 0}}),
            "metrics[0].buckets.linearBuckets.width: must be > 0",
        ),
        (
            m(
                kind="DISTRIBUTION",
                buckets={"exponentialBuckets": {"numFiniteBuckets": 2, "growthFactor": 1, "scale": 1}},
            ),
            "metrics[0].buckets.exponentialBuckets.growthFactor: must be > 1",
        ),
        (
            m(
                kind="DISTRIBUTION",
                buckets={"exponentialBuckets": {"numFiniteBuckets": 2, "growthFactor": 2}},
            ),
            "metrics[0].buckets.exponentialBuckets.scale: must be > 0",
        ),
        (
            m(kind="DISTRIBUTION", buckets={"explicitBuckets": {"bounds": [1, 2, 2]}}),
            "metrics[0].buckets.explicitBuckets.bounds[2]: bounds must increase strictly",
        ),
        (
            m(kind="DISTRIBUTION", buckets={"explicitBuckets": {"bounds": [1, "x"]}}),
            "metrics[0].buckets.explicitBuckets.bounds[1]: expected a finite number",
        ),
        (
            m(kind="DISTRIBUTION", buckets={"explicitBuckets": {"bounds": []}}),
            "metrics[0].buckets.explicitBuckets.bounds: required",
        ),
        (m(kind="DISTRIBUTION", buckets={"bogus": {}}), "metrics[0].buckets.bogus: unknown field"),
        (m(labelName=["svc"]), "metrics[0].labelName: unknown field"),
        ({**m(), "maxSeriesPerMetric": 0}, "maxSeriesPerMetric: must be >= 1"),
        (
            {**m(), "metricsExpirationPolicy": {}},
            "metricsExpirationPolicy.metricsExpiryDuration: must be > 0",
        ),
        (
            {**m(), "metricsExpirationPolicy": {"metricsExpiryDuration": "soon"}},
            "metricsExpirationPolicy.metricsExpiryDuration: expected a duration",
        ),
        ({"metrics": {"a": 1}}, "metrics: expected a list"),
    ],
)
def test_validation_errors(config: Mapping[str, Any], want: str) -> None:
    errors = errors_of(config)
    assert any(e.startswith(want) for e in errors), errors


def test_instance_of_another_template_is_refused() -> None:
    ins = {RC: InstanceInfo(RC, "logentry", {"variables.a": V.STRING})}
    assert errors_of(m(), ins) == [f"metrics[0].instanceName: instance '{RC}' is a logentry, not a metric"]


def test_same_name_twice_must_be_the_same_definition() -> None:
    ins = infos(requestcount=RC_TYPES, other=RC_TYPES)
    base = {"name": "x", "kind": "COUNTER", "labelNames": ["svc"]}
    same = {
        "metrics": [{**base, "instanceName": RC}, {**base, "instanceName": "other.instance.istio-system"}]
    }
    assert errors_of(same, ins) == []
    differ = {
        "metrics": [
            {**base, "instanceName": RC},
            {**base, "instanceName": "other.instance.istio-system", "labelNames": ["code"]},
        ]
    }
    (error,) = errors_of(differ, ins)
    assert error.startswith("metrics[1]: metric 'istio_x' is defined twice differently")


def test_snake_case_params_and_defaults() -> None:
    rig = Rig()
    cfg = {"metrics": [{"instance_name": RC, "kind": "GAUGE", "label_names": ["svc"]}]}
    h = rig.build(cfg, infos(requestcount=RC_TYPES))
    h.handle_metric([rc(value=3)])
    fam = rig.families()["istio_requestcount"]  # namespace istio, name = short instance name
    assert fam.type == "gauge"
    assert fam.documentation == "requestcount"
    assert [s.value for s in fam.samples] == [3.0]
    h.close()


# -- recording and exposition ---------------------------------------------------------------------


def test_exposition_text_is_gos() -> None:
    rig = Rig()
    cfg = {
        "metrics": [
            {**COUNTER_CFG["metrics"][0], "name": "request_count", "description": 'say "hi"\nback\\slash'},
            {
                "instanceName": DUR,
                "name": "request_duration_seconds",
                "kind": "DISTRIBUTION",
                "labelNames": ["svc"],
                "buckets": {"explicitBuckets": {"bounds": [0.5, 1, 1e6]}},
            },
        ]
    }
    h = rig.build(
        cfg, infos(requestcount=RC_TYPES, requestduration={"value": V.DURATION, "dimensions.svc": V.STRING})
    )
    h.handle_metric(
        [
            rc(svc='q"uo\\te\n'),
            rc(),
            rc(),
            MetricInstance(DUR, dt.timedelta(milliseconds=250), {"svc": "a"}),
            MetricInstance(DUR, dt.timedelta(seconds=2), {"svc": "a"}),
        ]
    )
    assert rig.exporter.render().decode() == (
        '# HELP istio_request_count say "hi"\\nback\\\\slash\n'
        "# TYPE istio_request_count counter\n"
        'istio_request_count{code="200",ok="true",svc="a"} 2\n'
        'istio_request_count{code="200",ok="true",svc="q\\"uo\\\\te\\n"} 1\n'
        "# HELP istio_request_duration_seconds request_duration_seconds\n"
        "# TYPE istio_request_duration_seconds histogram\n"
        'istio_request_duration_seconds_bucket{svc="a",le="0.5"} 1\n'
        'istio_request_duration_seconds_bucket{svc="a",le="1"} 1\n'
        'istio_request_duration_seconds_bucket{svc="a",le="1e+06"} 2\n'
        'istio_request_duration_seconds_bucket{svc="a",le="+Inf"} 2\n'
        'istio_request_duration_seconds_sum{svc="a"} 2.25\n'
        'istio_request_duration_seconds_count{svc="a"} 2\n'
        f"# HELP {OVERFLOW_METRIC} Label sets not recorded because the metric reached maxSeriesPerMetric.\n"
        f"# TYPE {OVERFLOW_METRIC} counter\n"
        f'{OVERFLOW_METRIC}{{metric="istio_request_count"}} 0\n'
        f'{OVERFLOW_METRIC}{{metric="istio_request_duration_seconds"}} 0\n'
    )
    assert rig.exporter.content_type == "text/plain; version=0.0.4; charset=utf-8"
    h.close()


def test_collector_api_matches_the_text() -> None:
    """``EXPORTER.collect()`` (prometheus_client families) and ``render()`` say the same."""
    rig = Rig()
    cfg = {
        "metrics": [
            COUNTER_CFG["metrics"][0],
            {"instanceName": DUR, "name": "d", "kind": "DISTRIBUTION", "labelNames": []},
        ]
    }
    h = rig.build(cfg, infos(requestcount=RC_TYPES, requestduration={"value": V.DURATION}))
    h.handle_metric([rc(svc="a"), rc(svc="b"), MetricInstance(DUR, dt.timedelta(seconds=0.2))])

    def flat(families: Any) -> set[tuple[str, tuple[tuple[str, str], ...], float]]:
        return {(s.name, tuple(sorted(s.labels.items())), s.value) for f in families for s in f.samples}

    parsed = flat(text_string_to_metric_families(rig.exporter.render().decode()))
    collected = flat(rig.exporter.collect())
    # The parser reports counter samples with a "_total" suffix even when the name has none.
    assert {(n.removesuffix("_total"), lab, v) for n, lab, v in parsed} == {
        (n.removesuffix("_total"), lab, v) for n, lab, v in collected
    }
    assert len(collected) == 2 + 14 + 2  # two counters, 12 buckets + sum + count, two overflow series
    h.close()


def test_a_value_of_the_wrong_type_does_not_break_the_exposition() -> None:
    """A STRING dimension that arrives as an int (a bag not matching its manifest)."""
    rig = Rig()
    h = rig.build(COUNTER_CFG, infos(requestcount=RC_TYPES))
    h.handle_metric([rc(svc="a"), MetricInstance(RC, 1, {"svc": 7, "code": 200, "ok": True})])
    assert {dict(k)["svc"] for k in rig.samples("istio_requests")} == {"a", "7"}
    assert len(next(iter(rig.exporter.collect())).samples) == 2
    h.close()


def test_untyped_dimensions_are_stringified_at_run_time() -> None:
    rig = Rig()
    h = rig.build(COUNTER_CFG, {RC: InstanceInfo(RC, "metric", {})})
    h.handle_metric(
        [MetricInstance(RC, "2.5", {"svc": IPAddress.parse("1.2.3.4"), "code": 404, "ok": False})]
    )
    assert rig.samples("istio_requests") == {(("code", "404"), ("ok", "false"), ("svc", "1.2.3.4")): 2.5}
    h.close()


def test_bad_instances_fail_alone() -> None:
    rig = Rig()
    h = rig.build(COUNTER_CFG, {RC: InstanceInfo(RC, "metric", {})})
    with pytest.raises(HandleMetricError) as err:
        h.handle_metric(
            [
                rc(value="lots"),
                MetricInstance("unknown.instance.istio-system", 1, {}),
                rc(value=-1),
                MetricInstance(RC, 1, {"svc": "a"}),
                rc(value=4),
            ]
        )
    assert len(err.value.problems) == 4
    assert "could not get value for metric" in err.value.problems[0]
    assert "could not find metric info from adapter config for unknown" in err.value.problems[1]
    assert "counters can only increase" in err.value.problems[2]
    assert "no dimension" in err.value.problems[3]
    assert h.errors == 4
    assert rig.samples("istio_requests") == {(("code", "200"), ("ok", "true"), ("svc", "a")): 4.0}
    h.close()


def test_one_instance_may_feed_several_metrics() -> None:
    rig = Rig()
    cfg = {
        "metrics": [
            COUNTER_CFG["metrics"][0],
            {"instanceName": RC, "name": "requests_by_svc_total", "kind": "COUNTER", "labelNames": ["svc"]},
        ]
    }
    h = rig.build(cfg, infos(requestcount=RC_TYPES))
    h.handle_metric([rc(code=200), rc(code=500)])
    assert rig.samples("istio_requests_by_svc") == {(("svc", "a"),): 2.0}
    assert len(rig.samples("istio_requests")) == 2
    assert len(h.metrics_for(RC)) == 2
    h.close()


def test_metrics_with_the_same_dimensions_share_one_lookup_and_keep_their_own_series() -> None:
    # The stock config's shape: several instances with one dimensions map (the runtime's memo),
    # each feeding its own metric with the same labels; one of them also a second metric.
    rig = Rig()
    cfg = {
        "metrics": [
            COUNTER_CFG["metrics"][0],
            {
                "instanceName": DUR,
                "name": "sizes_total",
                "kind": "COUNTER",
                "labelNames": ["svc", "code", "ok"],
            },
            {"instanceName": DUR, "name": "sizes_by_svc_total", "kind": "COUNTER", "labelNames": ["svc"]},
        ],
        "metricsExpirationPolicy": {"metricsExpiryDuration": "10m"},
    }
    h = rig.build(cfg, infos(requestcount=RC_TYPES, requestduration=RC_TYPES))
    shared = {"svc": "a", "code": 200, "ok": True}
    other = {"svc": "b", "code": 500, "ok": False}
    with pytest.raises(HandleMetricError, match="no dimension 'ok'"):
        h.handle_metric(
            [
                MetricInstance(RC, 1, shared),
                MetricInstance(DUR, 10, shared),
                MetricInstance(RC, 1, other),
                MetricInstance(DUR, 20, other),
                MetricInstance(DUR, 5, shared),
                MetricInstance(RC, 1, {"svc": "a", "code": 200}),
            ]
        )
    a, b = (("code", "200"), ("ok", "true"), ("svc", "a")), (("code", "500"), ("ok", "false"), ("svc", "b"))
    assert rig.samples("istio_requests") == {a: 1.0, b: 1.0}
    assert rig.samples("istio_sizes") == {a: 15.0, b: 20.0}
    assert rig.samples("istio_sizes_by_svc") == {(("svc", "a"),): 15.0, (("svc", "b"),): 20.0}
    rig.clock.advance(600)
    h.handle_metric([MetricInstance(RC, 1, other)])
    assert h.expire_now() == 5  # all but b's requests; the index must not hand out removed series
    h.handle_metric(
        [MetricInstance(RC, 1, shared), MetricInstance(DUR, 2, shared), MetricInstance(DUR, 3, other)]
    )
    assert rig.samples("istio_requests") == {a: 1.0, b: 2.0}
    assert rig.samples("istio_sizes") == {a: 2.0, b: 3.0}
    assert rig.samples("istio_sizes_by_svc") == {(("svc", "a"),): 2.0, (("svc", "b"),): 3.0}
    h.close()


# -- expiry ---------------------------------------------------------------------------------------


def test_expiry_removes_series_not_updated() -> None:
    rig = Rig()
    cfg = {**COUNTER_CFG, "metricsExpirationPolicy": {"metricsExpiryDuration": "10m"}}
    h = rig.build(cfg, infos(requestcount=RC_TYPES))
    h.handle_metric([rc(svc="old")])
    rig.clock.advance(300)
    h.handle_metric([rc(svc="new")])
    rig.clock.advance(299)
    assert h.expire_now() == 0
    rig.clock.advance(1)
    assert h.expire_now() == 1
    assert [dict(k)["svc"] for k in rig.samples("istio_requests")] == ["new"]
    h.handle_metric([rc(svc="old")])  # comes back from zero
    assert rig.samples("istio_requests")[(("code", "200"), ("ok", "true"), ("svc", "old"))] == 1.0
    h.close()


def test_expiry_without_policy_does_nothing() -> None:
    rig = Rig()
    h = rig.build(COUNTER_CFG, infos(requestcount=RC_TYPES))
    h.handle_metric([rc()])
    rig.clock.advance(10**6)
    assert h.expire_now() == 0
    h.close()


async def test_expiry_runs_periodically() -> None:
    rig = Rig()
    cfg = {
        **COUNTER_CFG,
        "metricsExpirationPolicy": {"metricsExpiryDuration": "1s", "expiryCheckIntervalDuration": "5ms"},
    }
    builder = rig.info.builder(cfg, infos(requestcount=RC_TYPES))
    env = Env("h", clock=rig.clock)
    h = builder.build(env)
    assert env.task_count == 1
    h.handle_metric([rc()])
    rig.clock.advance(2)
    for _ in range(400):
        if not rig.samples("istio_requests"):
            break
        await asyncio.sleep(0.005)
    assert rig.samples("istio_requests") == {}
    h.close()
    await env.aclose()


def test_expiry_interval_defaults_to_half() -> None:
    rig = Rig()
    builder = rig.info.builder(
        {**COUNTER_CFG, "metricsExpirationPolicy": {"metricsExpiryDuration": "10m"}},
        infos(requestcount=RC_TYPES),
    )
    assert builder.parsed.expiration is not None
    assert (builder.parsed.expiration.expiry, builder.parsed.expiration.check_interval) == (600.0, 300.0)


# -- cardinality guard ----------------------------------------------------------------------------


def test_overflow_guard(caplog: pytest.LogCaptureFixture) -> None:
    rig = Rig()
    h = rig.build({**COUNTER_CFG, "maxSeriesPerMetric": 2}, infos(requestcount=RC_TYPES))
    with caplog.at_level(logging.WARNING):
        h.handle_metric([rc(svc="a"), rc(svc="b"), rc(svc="c"), rc(svc="d"), rc(svc="a")])
        rig.clock.advance(30)
        h.handle_metric([rc(svc="e")])
    assert {dict(k)["svc"]: v for k, v in rig.samples("istio_requests").items()} == {"a": 2.0, "b": 1.0}
    assert h.overflowed == 3
    assert rig.samples(OVERFLOW_METRIC.removesuffix("_total")) == {(("metric", "istio_requests_total"),): 3.0}
    warnings = [r for r in caplog.records if "maxSeriesPerMetric" in r.getMessage()]
    assert len(warnings) == 1
    assert "istio_requests_total" in warnings[0].getMessage()
    rig.clock.advance(31)
    with caplog.at_level(logging.WARNING):
        h.handle_metric([rc(svc="f")])
    assert len([r for r in caplog.records if "maxSeriesPerMetric" in r.getMessage()]) == 2
    h.close()


def test_one_of_several_workers_holds_its_share_of_the_series_limit() -> None:
    rig = Rig()
    builder = rig.info.builder({**COUNTER_CFG, "maxSeriesPerMetric": 5}, infos(requestcount=RC_TYPES))
    h = builder.build(Env("h.istio-system", clock=rig.clock, services={WORKER_COUNT: 2}))
    assert isinstance(h, PrometheusHandler)
    h.handle_metric([rc(svc=s) for s in "abcd"])
    assert sorted(dict(k)["svc"] for k in rig.samples("istio_requests")) == ["a", "b"]  # 5 // 2
    assert h.overflowed == 2
    h.close()


def test_default_max_series_is_documented_value() -> None:
    builder = make_info(PrometheusExporter()).builder(COUNTER_CFG, infos(requestcount=RC_TYPES))
    assert builder.parsed.max_series_per_metric == 10000


# -- hand-over between handlers -------------------------------------------------------------------


def test_counters_carry_over_to_a_replacement_handler() -> None:
    rig = Rig()
    old = rig.build(COUNTER_CFG, infos(requestcount=RC_TYPES))
    old.handle_metric([rc(value=5)])
    # An unrelated change: a gauge is added; the counter's definition is the same.
    cfg = {
        "metrics": [
            *COUNTER_CFG["metrics"],
            {"instanceName": DUR, "name": "last_duration", "kind": "GAUGE", "labelNames": []},
        ]
    }
    new = rig.build(cfg, infos(requestcount=RC_TYPES, requestduration={"value": V.DURATION}))
    assert new.metrics_for(RC)[0] is old.metrics_for(RC)[0]
    old.close()
    new.handle_metric([rc(value=1), MetricInstance(DUR, dt.timedelta(seconds=3))])
    assert list(rig.samples("istio_requests").values()) == [6.0]
    assert rig.samples("istio_last_duration") == {(): 3.0}
    assert len(rig.exporter.registries) == 1
    new.close()
    assert rig.exporter.render() == b""
    assert rig.exporter.registries == ()


def test_redefinition_replaces_the_metric() -> None:
    rig = Rig()
    old = rig.build(COUNTER_CFG, infos(requestcount=RC_TYPES))
    old.handle_metric([rc(value=5)])
    changed = {"metrics": [{**COUNTER_CFG["metrics"][0], "labelNames": ["svc"]}]}
    new = rig.build(changed, infos(requestcount=RC_TYPES))
    new.handle_metric([rc(value=1)])
    # During the hand-over the newer definition is the one exported, once.
    text = rig.exporter.render().decode()
    assert text.count("# TYPE istio_requests_total counter") == 1
    assert rig.samples("istio_requests") == {(("svc", "a"),): 1.0}
    old.close()
    assert rig.samples("istio_requests") == {(("svc", "a"),): 1.0}
    assert rig.exporter.live_metric("istio_requests_total") is new.metrics_for(RC)[0]
    new.close()


def test_another_handler_cannot_redefine_a_live_metric() -> None:
    rig = Rig()
    first = rig.build(COUNTER_CFG, infos(requestcount=RC_TYPES), owner="a.istio-system")
    first.handle_metric([rc()])
    cfg = {
        "metrics": [
            {"instanceName": DUR, "name": "ok_gauge", "kind": "GAUGE"},
            {**COUNTER_CFG["metrics"][0], "labelNames": ["svc"]},
        ]
    }
    builder = rig.info.builder(cfg, infos(requestcount=RC_TYPES, requestduration={"value": V.INT64}))
    assert builder.validate() == []
    with pytest.raises(
        MetricConflictError, match=r"metric 'istio_requests_total' is already exported by handler a"
    ):
        builder.build(Env("b.istio-system", clock=rig.clock))
    assert rig.exporter.live_metric("istio_ok_gauge") is None  # nothing leaked
    # The same definition from another handler is shared.
    twin = rig.build(COUNTER_CFG, infos(requestcount=RC_TYPES), owner="c.istio-system")
    twin.handle_metric([rc()])
    assert list(rig.samples("istio_requests").values()) == [2.0]
    first.close()
    twin.close()
    assert rig.exporter.live_metric("istio_requests_total") is None


def test_close_is_idempotent() -> None:
    rig = Rig()
    h = rig.build(COUNTER_CFG, infos(requestcount=RC_TYPES))
    h.close()
    h.close()
    assert rig.exporter.registries == ()


async def test_info_uses_the_process_wide_exporter() -> None:
    assert INFO.name == "prometheus"
    assert INFO.templates == ("metric",)
    harness = AdapterHarness(
        INFO,
        {
            "metrics": [
                {"instanceName": "probe.instance.istio-system", "name": "probe_total", "kind": "COUNTER"}
            ]
        },
        instances={"probe": ("metric", {"value": "1"})},
    )
    await harness.report("probe", [{}, {}])
    assert b"istio_probe_total 2\n" in EXPORTER.render()
    await harness.close()
    assert b"istio_probe_total" not in EXPORTER.render()


# -- the stock Istio 1.4 telemetry config ---------------------------------------------------------

STOCK = CONFORMANCE / "stock-telemetry-config" / "rendered"


def stock_prometheus() -> tuple[dict[str, Any], dict[str, Any]]:
    handlers = [d for d in yaml.safe_load_all((STOCK / "handlers.yaml").read_text()) if d]
    params = next(d for d in handlers if d["metadata"]["name"] == "prometheus")["spec"]["params"]
    instances = {
        f"{d['metadata']['name']}.instance.{d['metadata']['namespace']}": d["spec"]
        for d in yaml.safe_load_all((STOCK / "instances.yaml").read_text())
        if d and d["spec"].get("compiledTemplate") == "metric"
    }
    return params, instances


def test_stock_telemetry_config_builds() -> None:
    params, specs = stock_prometheus()
    manifest = stock_manifest()
    builders = {
        name: compile_instance(name, "metric", spec["params"], manifest) for name, spec in specs.items()
    }
    ins = {n: InstanceInfo(n, "metric", dict(b.types)) for n, b in builders.items()}
    rig = Rig()
    h = rig.build(params, ins, owner="prometheus.istio-system")
    definitions = {vec.definition.name: vec.definition for name in ins for vec in h.metrics_for(name)}
    assert {n: d.kind.name for n, d in definitions.items()} == {
        "istio_requests_total": "COUNTER",
        "istio_request_duration_seconds": "DISTRIBUTION",
        "istio_request_bytes": "DISTRIBUTION",
        "istio_response_bytes": "DISTRIBUTION",
        "istio_tcp_sent_bytes_total": "COUNTER",
        "istio_tcp_received_bytes_total": "COUNTER",
        "istio_tcp_connections_opened_total": "COUNTER",
        "istio_tcp_connections_closed_total": "COUNTER",
    }
    assert definitions["istio_request_duration_seconds"].bounds == (
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0
    )  # fmt: skip
    assert definitions["istio_request_bytes"].bounds == tuple(10.0**i for i in range(9))
    assert len(definitions["istio_requests_total"].label_names) == 20
    assert rig.info.builder(params, ins).parsed.expiration is not None

    bag = {
        "context.protocol": "http",
        "context.reporter.kind": "inbound",
        "destination.service.host": "reviews.default.svc.cluster.local",
        "destination.service.name": "reviews",
        "destination.labels": {"app": "reviews", "version": "v1"},
        "response.code": 503,
        "response.duration": dt.timedelta(milliseconds=30),
        "request.size": 1500,
        "connection.mtls": True,
    }
    h.handle_metric(
        [builders[f"{n}.instance.istio-system"].build(bag) for n in ("requestcount", "requestduration")]
    )
    h.handle_metric([builders["requestsize.instance.istio-system"].build(bag)])
    ((labels, value),) = rig.samples("istio_requests").items()
    assert value == 1.0
    got = dict(labels)
    assert got["response_code"] == "503"
    assert got["destination_version"] == "v1"
    assert got["reporter"] == "destination"
    assert got["connection_security_policy"] == "mutual_tls"
    assert got["source_app"] == "unknown"
    sizes = rig.samples("istio_request_bytes")
    assert sizes[tuple(sorted([*labels, ("le", "1000")]))] == 0.0
    assert sizes[tuple(sorted([*labels, ("le", "10000")]))] == 1.0
    h.close()
