"""The console adapter: an attribute set (``attributes``) or logentry variables (the stock accesslog
names plus the console's) -> hops."""

import datetime as _dt
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
import yaml
from envoy.data.accesslog.v3 import accesslog_pb2

from mixerd._proto.mixer.v1 import report_pb2
from mixerd.adapter.testing import AdapterHarness, HarnessConfigError
from mixerd.adapters.console import INFO
from mixerd.adapters.console.handler import (
    HEADERS,
    HOP_ATTRIBUTES,
    hop_attributes_read,
    hop_from_attributes,
)
from mixerd.api.accesslog import StreamContext, convert_http
from mixerd.api.mixer_v1.client import build_report_request
from mixerd.api.mixer_v1.decode import decode_report
from mixerd.attribute import entries_read, map_entry
from mixerd.config import MemoryStore, parse_text
from mixerd.console.correlate import DEFAULT_ORDER, parse_order, request_id_key
from mixerd.console.model import Hop, Peer, Reporter
from mixerd.runtime import Runtime
from mixerd.server.app import default_config_text
from mixerd.templates import TemplateError

_T0 = _dt.datetime(2026, 12, 4, 10, 0, 0, 250_000, tzinfo=_dt.UTC)
_T0_US = int(_T0.timestamp()) * 1_000_000 + 250_000

# The default config's consolehop instance, trimmed to what these tests send.
_INSTANCE = (
    "logentry",
    {
        "severity": '"Info"',
        "timestamp": "request.time",
        "variables": {
            "reporter": 'conditional((context.reporter.kind | "inbound") == "outbound", "source", '
            '"destination")',
            "sourceNamespace": 'source.namespace | ""',
            "sourceWorkload": 'source.workload.name | ""',
            "sourceVersion": 'source.labels["version"] | ""',
            "destinationNamespace": 'destination.namespace | ""',
            "destinationWorkload": 'destination.workload.name | ""',
            "destinationServiceHost": 'destination.service.host | request.host | ""',
            "method": 'request.method | ""',
            "url": 'request.path | ""',
            "responseCode": "response.code | 0",
            "responseFlags": 'context.proxy_error_code | ""',
            "latency": 'response.duration | "0ms"',
            "requestId": 'request.headers["x-request-id"] | ""',
            "requestHeaders": "request.headers | emptyStringMap()",
        },
    },
)

_BAG = {
    "request.time": _T0,
    "context.reporter.kind": "outbound",
    "source.namespace": "shop",
    "source.workload.name": "frontend",
    "source.labels": {"version": "v2"},
    "destination.namespace": "shop",
    "destination.workload.name": "cart",
    "destination.service.host": "cart.shop.svc.cluster.local",
    "request.method": "GET",
    "request.path": "/cart?id=1",
    "response.code": 503,
    "context.proxy_error_code": "UF",
    "response.duration": _dt.timedelta(milliseconds=12, microseconds=5),
    "request.headers": {
        "x-request-id": "7c2a59e4-0f1e-4b4a-9a0e-6c1d2b3e4f50",
        "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    },
}


class _Sink:
    def __init__(self) -> None:
        self.hops: list[Hop] = []

    def add_hop(self, hop: Hop) -> None:
        self.hops.append(hop)


async def test_a_reported_call_becomes_one_hop() -> None:
    sink = _Sink()
    h = AdapterHarness(INFO, {}, {"hop": _INSTANCE}, services={"console": sink})
    await h.report("hop", [_BAG])
    await h.close()
    assert sink.hops == [
        Hop(
            start_us=_T0_US,
            duration_us=12_005,
            reporter=Reporter.SOURCE,
            source=Peer(namespace="shop", workload="frontend", version="v2"),
            destination=Peer(namespace="shop", workload="cart", service="cart.shop.svc.cluster.local"),
            transaction_id="4bf92f3577b34da6a3ce929d0e0e4736",
            method="GET",
            path="/cart?id=1",
            response_code=503,
            response_flags="UF",
            request_id="7c2a59e4-0f1e-4b4a-9a0e-6c1d2b3e4f50",
            trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
            span_id="00f067aa0ba902b7",
        )
    ]
    assert sink.hops[0].error


async def test_the_transaction_header_wins_and_the_order_is_configurable() -> None:
    bag = {**_BAG, "request.headers": {**_BAG["request.headers"], "x-transaction-id": "txn-1"}}  # type: ignore[dict-item]
    sink = _Sink()
    h = AdapterHarness(INFO, {}, {"hop": _INSTANCE}, services={"console": sink})
    await h.report("hop", [bag])
    await h.close()
    assert sink.hops[0].transaction_id == "txn-1"

    sink = _Sink()
    h = AdapterHarness(
        INFO, {"transactionHeaders": ["x-request-id"]}, {"hop": _INSTANCE}, services={"console": sink}
    )
    await h.report("hop", [bag])
    await h.close()
    assert sink.hops[0].transaction_id == "7c2a59e4-0f1e-4b4a-9a0e-6c1d2b3e4f50"


async def test_inbound_reports_are_destination_hops_and_missing_values_are_empty() -> None:
    sink = _Sink()
    h = AdapterHarness(INFO, {}, {"hop": _INSTANCE}, services={"console": sink})
    await h.report("hop", [{"request.time": _T0, "context.reporter.kind": "inbound"}])
    await h.close()
    (hop,) = sink.hops
    assert hop.reporter is Reporter.DESTINATION
    assert hop.transaction_id == "" and hop.duration_us == 0 and hop.source == Peer()


async def test_without_a_console_hops_are_dropped_and_counted() -> None:
    h = AdapterHarness(INFO, {}, {"hop": _INSTANCE})
    await h.report("hop", [_BAG, _BAG])
    await h.close()
    assert h.env.drops == 2


def test_a_malformed_transaction_header_name_is_a_config_error() -> None:
    with pytest.raises(HarnessConfigError, match="transactionHeaders"):
        AdapterHarness(INFO, {"transactionHeaders": ["x correlation"]}, {"hop": _INSTANCE})


async def test_the_request_id_is_the_key_when_the_header_was_not_logged() -> None:
    # Regression: Envoy's access log carries the request id (request.id) but logs only the headers
    # it is told to; the default config read the id from the headers alone, so such a hop had
    # neither a request id nor, without x-transaction-id, a transaction key (a request denied at
    # the edge then did not join its decision's transaction).
    entry = accesslog_pb2.HTTPAccessLogEntry()
    entry.common_properties.start_time.FromDatetime(_T0.replace(tzinfo=None))
    entry.common_properties.upstream_cluster = "inbound|80|http|edge.shop.svc.cluster.local"
    entry.request.request_id = "7C2A59E4-0F1E-9B4A-9A0E-6C1D2B3E4F50"
    entry.request.path = "/checkout"
    entry.response.response_code.value = 403
    bag = convert_http(entry, StreamContext())
    assert "x-request-id" not in bag["request.headers"]

    sink = _Sink()
    h = AdapterHarness(INFO, {}, {"hop": _default_consolehop()}, services={"console": sink})
    await h.report("hop", [bag])
    await h.close()
    (hop,) = sink.hops
    assert hop.request_id == "7C2A59E4-0F1E-9B4A-9A0E-6C1D2B3E4F50"
    assert hop.transaction_id == request_id_key(hop.request_id) == "7c2a59e4-0f1e-4b4a-9a0e-6c1d2b3e4f50"

    # A logged x-transaction-id still wins, and a logged x-request-id is not replaced.
    bag["request.headers"] = {"x-transaction-id": "txn-1", "x-request-id": "logged"}
    sink = _Sink()
    h = AdapterHarness(INFO, {}, {"hop": _default_consolehop()}, services={"console": sink})
    await h.report("hop", [bag])
    await h.close()
    (hop,) = sink.hops
    assert (hop.transaction_id, hop.request_id) == ("txn-1", "7C2A59E4-0F1E-9B4A-9A0E-6C1D2B3E4F50")
    no_id = {k: v for k, v in bag.items() if k != "request.id"}
    no_id["request.headers"] = {"x-request-id": "logged"}
    sink = _Sink()
    h = AdapterHarness(INFO, {}, {"hop": _default_consolehop()}, services={"console": sink})
    await h.report("hop", [no_id])
    await h.close()
    assert (sink.hops[0].transaction_id, sink.hops[0].request_id) == ("logged", "logged")


def _default_consolehop() -> tuple[str, dict[str, Any]]:
    """The embedded default config's consolehop instance, as it is."""
    for doc in yaml.safe_load_all(default_config_text()):
        if doc and doc["kind"] == "instance" and doc["metadata"]["name"] == "consolehop":
            return doc["spec"]["compiledTemplate"], doc["spec"].get("params")
    raise AssertionError("no consolehop instance in the default config")


# The logentry instance the ``attributes`` template stands for (docs/examples/console-istio.yaml
# before it used that template): both must give the same hop for any attribute set.
_DOCUMENTED_LOGENTRY = (
    "logentry",
    {
        "severity": '"Info"',
        "timestamp": "request.time",
        "variables": {
            "reporter": 'conditional((context.reporter.kind | "inbound") == "outbound", "source", "destination")',
            "sourceNamespace": 'source.workload.namespace | source.namespace | ""',
            "sourceWorkload": 'source.workload.name | ""',
            "sourceApp": 'source.labels["app"] | ""',
            "sourceVersion": 'source.labels["version"] | ""',
            "sourcePrincipal": 'source.principal | ""',
            "destinationNamespace": 'destination.workload.namespace | destination.namespace | ""',
            "destinationWorkload": 'destination.workload.name | ""',
            "destinationApp": 'destination.labels["app"] | ""',
            "destinationVersion": 'destination.labels["version"] | ""',
            "destinationServiceHost": 'destination.service.host | request.host | ""',
            "destinationPrincipal": 'destination.principal | ""',
            "protocol": 'api.protocol | context.protocol | "http"',
            "method": 'request.method | ""',
            "url": 'request.path | ""',
            "httpAuthority": 'request.host | ""',
            "responseCode": "response.code | 0",
            "responseFlags": 'context.proxy_error_code | ""',
            "requestSize": "request.size | 0",
            "responseSize": "response.size | 0",
            "latency": 'response.duration | "0ms"',
            "requestId": 'request.id | request.headers["x-request-id"] | ""',
            "requestHeaders": "request.headers | emptyStringMap()",
        },
    },
)


def _als_bag() -> dict[str, Any]:
    entry = accesslog_pb2.HTTPAccessLogEntry()
    entry.common_properties.start_time.FromDatetime(_T0.replace(tzinfo=None))
    entry.common_properties.upstream_cluster = "inbound|80|http|edge.shop.svc.cluster.local"
    entry.request.request_id = "7C2A59E4-0F1E-9B4A-9A0E-6C1D2B3E4F50"
    entry.request.path = "/checkout"
    entry.request.authority = "edge.shop:80"
    entry.request.request_method = 1  # GET
    entry.response.response_code.value = 403
    entry.common_properties.response_flags.unauthorized_details.reason = 1  # UAEX
    return dict(convert_http(entry, StreamContext()))


_SETS: list[dict[str, Any]] = [
    _BAG,
    {"request.time": _T0, "context.reporter.kind": "inbound"},
    {},  # no time: the report's
    {
        **_BAG,
        "context.reporter.kind": "inbound",
        "source.workload.namespace": "shop-ws",
        "source.labels": {"app": "frontend", "version": "v1"},
        "source.principal": "spiffe://cluster.local/ns/shop/sa/frontend",
        "destination.workload.namespace": "shop-wd",
        "destination.labels": {"app": "cart"},
        "destination.principal": "spiffe://cluster.local/ns/shop/sa/cart",
        "api.protocol": "grpc",
        "context.protocol": "http",
        "request.host": "cart:8080",
        "request.size": 120,
        "response.size": 4096,
        "request.id": "rid-1",
        "context.proxy_error_code": "-",
    },
    {
        **{k: v for k, v in _BAG.items() if k not in ("destination.service.host", "request.headers")},
        "request.host": "cart:8080",
        "context.protocol": "grpc",
        "request.id": "rid-2",
    },
    {
        **_BAG,
        "request.headers": {"b3": "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90"},
    },
    _als_bag(),
    {  # kubernetesenv gives labels as read-only views
        **_BAG,
        "source.labels": MappingProxyType({"app": "frontend", "version": "v1", "pod-template-hash": "6b7"}),
        "destination.labels": MappingProxyType({"app": "cart"}),
        "request.headers": {
            "x-b3-traceid": "80F198EE56343BA864FE8B2A57D3EFF7",
            "x-b3-spanid": "e457b5a2e4d86bd1",
            "x-request-id": "7c2a59e4-0f1e-9b4a-9a0e-6c1d2b3e4f50",
        },
    },
]


@pytest.mark.parametrize("attributes", _SETS, ids=range(len(_SETS)))
async def test_an_attributes_instance_gives_the_hop_of_the_documented_logentry_instance(
    attributes: dict[str, Any],
) -> None:
    hops = []
    documented = _DOCUMENTED_LOGENTRY
    if "request.time" not in attributes:
        # the logentry instance cannot be built without its timestamp; without one it is the
        # report's time, which is what the attributes instance takes
        documented = ("logentry", {k: v for k, v in documented[1].items() if k != "timestamp"})
    for instance in (documented, ("attributes", None), _default_consolehop()):
        sink = _Sink()
        h = AdapterHarness(INFO, {}, {"hop": instance}, services={"console": sink})
        await h.report("hop", [attributes])
        await h.close()
        hops.append(sink.hops)
    (by_variables,), (by_attributes,), (by_default,) = hops
    if "request.time" not in attributes:  # each took its own clock reading
        by_attributes.start_us = by_default.start_us = by_variables.start_us
    assert by_attributes == by_variables
    assert by_default == by_variables


def test_an_attributes_instance_takes_no_params() -> None:
    with pytest.raises(TemplateError, match="takes no params"):
        AdapterHarness(INFO, {}, {"hop": ("attributes", {"variables": {"a": "request.path"}})})


class _Recording(dict[str, Any]):
    """An attribute set that remembers every name read from it."""

    def __init__(self, values: dict[str, Any]) -> None:
        super().__init__(values)
        self.read: set[str] = set()

    def get(self, name: str, default: Any = None) -> Any:
        self.read.add(name)
        return super().get(name, default)

    def __getitem__(self, name: str) -> Any:
        self.read.add(name)
        return super().__getitem__(name)

    def __contains__(self, name: object) -> bool:
        self.read.add(str(name))
        return super().__contains__(name)


@pytest.mark.parametrize("attributes", _SETS, ids=range(len(_SETS)))
def test_the_handler_declares_every_attribute_it_reads(attributes: dict[str, Any]) -> None:
    # A Report decodes only what the config reads; for an attributes instance that is what the
    # handler declares, so an undeclared read would see the attribute as absent.
    # Of request.headers it reads the entries it declares: see the next test.
    bag = _Recording(attributes)
    hop_from_attributes(bag, _dt.datetime(2026, 1, 1, tzinfo=_dt.UTC))
    assert bag.read <= HOP_ATTRIBUTES | {HEADERS}, bag.read - HOP_ATTRIBUTES
    assert HEADERS not in hop_attributes_read()


_MORE_HEADERS: list[dict[str, str]] = [
    {},
    {"x-transaction-id": "tx-1", "x-user": "jason", "x-b3-traceid": "80f198ee56343ba8", "b3": "0"},
    {
        "x-correlation-id": "corr-7",
        "x-b3-spanid": "e457b5a2e4d86bd1",
        "x-b3-parentspanid": "05e3ac9a4f6e3b90",
    },
    {
        "x-request-id": "other",
        "traceparent": "not one",
        "b3": "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1",
    },
]
_ORDERS = [DEFAULT_ORDER, parse_order("x-correlation-id,x-request-id"), parse_order("x-b3-traceid")]


@pytest.mark.parametrize("order", _ORDERS, ids=range(len(_ORDERS)))
@pytest.mark.parametrize("more", _MORE_HEADERS, ids=range(len(_MORE_HEADERS)))
@pytest.mark.parametrize("attributes", _SETS, ids=range(len(_SETS)))
def test_the_request_headers_the_handler_declares_give_the_same_hop(
    attributes: dict[str, Any], more: dict[str, str], order: tuple[str, ...]
) -> None:
    # What a Report decodes of request.headers for it: just the declared entries.
    now = _dt.datetime(2026, 1, 1, tzinfo=_dt.UTC)
    full = {**attributes, HEADERS: {**attributes.get(HEADERS, {}), **more}}
    keys = entries_read(hop_attributes_read(order))[HEADERS]
    assert keys >= set(order)
    declared = {**full, HEADERS: {k: v for k, v in full[HEADERS].items() if k in keys}}
    assert hop_from_attributes(declared, now, order) == hop_from_attributes(full, now, order)


async def test_the_default_config_decodes_what_the_console_reads() -> None:
    rt = Runtime(MemoryStore(parse_text(default_config_text(), file="default.yaml").resources))
    await rt.start()
    try:
        wanted = rt.dispatcher.report_attributes()
        assert wanted is not None and wanted >= HOP_ATTRIBUTES
        assert wanted >= hop_attributes_read() or HEADERS in wanted
    finally:
        await rt.close()


_CONSOLE_ONLY = """
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: console, namespace: istio-system}
spec:
  compiledAdapter: console
  params: {transactionHeaders: [x-correlation-id, x-request-id]}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: consolehop, namespace: istio-system}
spec: {compiledTemplate: attributes}
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: record-hops, namespace: istio-system}
spec: {actions: [{handler: console, instances: [consolehop]}]}
"""

_READS_HEADERS = """
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: user, namespace: istio-system}
spec:
  compiledTemplate: logentry
  params:
    severity: '"info"'
    variables: {user: 'request.headers["x-user"] | ""', headers: HEADERS}
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: log-user, namespace: istio-system}
spec: {actions: [{handler: console, instances: [user]}]}
"""


def _reads_headers(whole: bool) -> str:
    """A rule whose instance reads x-user of request.headers, and the whole map if ``whole``."""
    return _READS_HEADERS.replace("HEADERS", "request.headers" if whole else """'"none"'""")


@pytest.mark.parametrize("reads_whole", [False, True])
@pytest.mark.parametrize("another_rule", [False, True])
async def test_a_report_decodes_the_console_handlers_header_entries_unless_a_rule_reads_more(
    reads_whole: bool, another_rule: bool
) -> None:
    text = _CONSOLE_ONLY + (_reads_headers(reads_whole) if another_rule else "")
    reads_whole = reads_whole and another_rule
    parsed = parse_text(text, file="console.yaml")
    assert parsed.ok, parsed.errors
    rt = Runtime(MemoryStore(parsed.resources))
    await rt.start()
    try:
        assert not rt.status.errors, rt.status.errors
        wanted = rt.dispatcher.report_attributes()
        assert wanted is not None
        if reads_whole:  # an expression reads the map whole
            assert HEADERS in wanted and not entries_read(wanted)
        else:
            assert HEADERS not in wanted
            assert entries_read(wanted)[HEADERS] == {
                "x-correlation-id", "x-request-id", "traceparent", "x-b3-traceid", "x-b3-spanid",
                "x-b3-parentspanid", "b3", *(["x-user"] if another_rule else []),
            }  # fmt: skip
            assert map_entry(HEADERS, "x-transaction-id") not in wanted
    finally:
        await rt.close()


async def test_sets_decoded_for_the_console_give_the_hops_of_eager_decoding_under_either_config() -> None:
    # Decoded with the console's header entries only, then dispatched under the config in force
    # then, and under one that reads the whole map (completed first): the same hops each time.
    sets = [
        {**attributes, HEADERS: {**attributes.get(HEADERS, {}), **more}}
        for attributes in _SETS[:2] + _SETS[3:6]
        for more in _MORE_HEADERS
    ]
    req = report_pb2.ReportRequest.FromString(build_report_request(sets).SerializeToString())
    sink = _Sink()
    store = MemoryStore(parse_text(_CONSOLE_ONLY, file="console.yaml").resources)
    rt = Runtime(store, services={"console": sink})
    await rt.start()
    try:
        wanted = rt.dispatcher.report_attributes()
        assert wanted is not None and HEADERS not in wanted
        early = decode_report(req, wanted=wanted)
        assert await rt.dispatcher.report(decode_report(req)) == []
        eager, sink.hops = sink.hops, []
        assert len(eager) == len(sets)
        assert await rt.dispatcher.report(decode_report(req, wanted=wanted)) == []
        assert sink.hops == eager
        sink.hops = []

        store.replace(parse_text(_CONSOLE_ONLY + _reads_headers(True), file="more.yaml").resources)
        await rt.reload()
        assert HEADERS in (rt.dispatcher.report_attributes() or ())
        assert await rt.dispatcher.report(early) == []
        n = len(eager)  # and the hops of the logentry instances, in a call of their own
        assert len(sink.hops) == 2 * n and eager in (sink.hops[:n], sink.hops[n:])
        assert [bag[HEADERS] for bag in early] == [bag[HEADERS] for bag in decode_report(req)]
    finally:
        await rt.close()


_SHAPES = yaml.safe_load((Path(__file__).parent.parent / "data" / "console_keys.yaml").read_text())[
    "header_shapes"
]


@pytest.mark.parametrize("request_id", [None, "rid-9"], ids=["header-only", "request.id"])
@pytest.mark.parametrize("case", _SHAPES, ids=[c["name"] for c in _SHAPES])
def test_the_fast_and_the_general_path_give_equal_hops(case: dict[str, Any], request_id: str | None) -> None:
    """The default order takes correlation's fast path; an equal order that is not the default
    tuple itself takes the general one. Both give the same hop for every header shape (or fail
    the same way on an odd-typed header value)."""
    bag = {
        **_BAG,
        "request.headers": case["headers"],
        "source.labels": MappingProxyType({"app": "frontend", "version": "v2"}),
        "destination.labels": {"app": "cart", "version": 3},
    }
    if request_id is not None:
        bag["request.id"] = request_id
    now = _dt.datetime(2026, 1, 1, tzinfo=_dt.UTC)
    general = tuple(list(DEFAULT_ORDER))
    assert general == DEFAULT_ORDER and general is not DEFAULT_ORDER
    try:
        expected: Any = hop_from_attributes(bag, now, general)
    except Exception as exc:
        with pytest.raises(type(exc)):
            hop_from_attributes(bag, now, DEFAULT_ORDER)
        return
    hop = hop_from_attributes(bag, now, DEFAULT_ORDER)
    assert hop == expected
    assert (hop.source.app, hop.source.version, hop.destination.version) == ("frontend", "v2", "3")


@pytest.mark.parametrize(
    "labels", [None, "app=cart", 7, {}, MappingProxyType({"app": "cart", "version": "v1"})], ids=repr
)
def test_labels_of_any_shape_make_the_same_peer_as_the_logentry_instance(labels: Any) -> None:
    from mixerd.adapters.console.handler import hop_from_variables

    bag = {**_BAG, "destination.labels": labels}
    now = _dt.datetime(2026, 1, 1, tzinfo=_dt.UTC)
    hop = hop_from_attributes(bag, now)
    app = version = ""
    if isinstance(labels, MappingProxyType):
        app, version = labels["app"], labels["version"]
    assert (hop.destination.app, hop.destination.version) == (app, version)
    variables = {
        "destinationNamespace": "shop",
        "destinationWorkload": "cart",
        "destinationApp": app,
        "destinationVersion": version,
        "destinationServiceHost": "cart.shop.svc.cluster.local",
    }
    assert hop.destination == hop_from_variables(variables, _T0, now).destination


def test_an_unhashable_value_where_a_string_belongs_still_makes_the_peer() -> None:
    bag = {**_BAG, "source.labels": {"app": ["frontend"], "version": "v2"}}
    now = _dt.datetime(2026, 1, 1, tzinfo=_dt.UTC)
    for _ in range(2):  # not remembered: the same answer the second time
        hop = hop_from_attributes(bag, now)
        assert (hop.source.app, hop.source.version, hop.destination.workload) == (
            "['frontend']",
            "v2",
            "cart",
        )
