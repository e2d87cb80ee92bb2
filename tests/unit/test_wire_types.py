"""Attributes sent in another typed map than their manifest type's are rejected, never read as absent.

Mixer took the value from whichever map it came in and the expression then failed to evaluate it,
so a deny rule reading it did not apply. mixerd answers INVALID_ARGUMENT naming the attribute, the
manifest's type and the type sent (Check and Report of the Mixer API).
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from mixerd._proto.mixer.v1 import attributes_pb2, check_pb2, report_pb2
from mixerd.adapter import Code, load_adapters
from mixerd.api.mixer_v1.client import encode_attributes
from mixerd.api.mixer_v1.decode import ProtoBag, WireTypes, decode_report
from mixerd.api.mixer_v1.service import MixerService
from mixerd.api.mixer_v1.wire import INDEPENDENT_ENCODING, BadRequest
from mixerd.attribute import GLOBAL_INDEX, ValueType, builtin_manifest
from mixerd.config import MemoryStore, StaticAdapterCatalog, build_snapshot, parse_text
from mixerd.runtime import Runtime

CA = attributes_pb2.CompressedAttributes
SM = attributes_pb2.StringMap
TYPES = WireTypes(builtin_manifest())


def gi(word: str) -> int:
    return GLOBAL_INDEX[word]


# (case, message, the error or None when accepted)
CASES: list[tuple[str, Any, str | None]] = [
    (
        "a string map sent as a string",
        CA(words=["x-user: blocked"], strings={gi("request.headers"): -1}),
        "attributes.strings[request.headers]: attribute 'request.headers' is STRING_MAP in the attribute "
        "manifest, but was sent as a STRING",
    ),
    (
        "an INT64 sent as a string",
        CA(strings={gi("response.code"): gi("200")}),
        "attributes.strings[response.code]: attribute 'response.code' is INT64 in the attribute manifest, "
        "but was sent as a STRING",
    ),
    (
        "an INT64 sent as a double",
        CA(doubles={gi("response.code"): 200.0}),
        "attributes.doubles[response.code]: attribute 'response.code' is INT64 in the attribute manifest, "
        "but was sent as a DOUBLE",
    ),
    (
        "an IP address sent as a string",
        CA(strings={gi("source.ip"): gi("source.ip")}),
        "attributes.strings[source.ip]: attribute 'source.ip' is IP_ADDRESS in the attribute manifest, "
        "but was sent as a STRING",
    ),
    (
        "a string sent as a string map",
        CA(string_maps={gi("request.path"): SM(entries={})}),
        "attributes.string_maps[request.path]: attribute 'request.path' is STRING in the attribute manifest, "
        "but was sent as a STRING_MAP",
    ),
    (
        "a timestamp sent as an INT64",
        CA(int64s={gi("request.time"): 1}),
        "attributes.int64s[request.time]: attribute 'request.time' is TIMESTAMP in the attribute manifest, "
        "but was sent as an INT64",
    ),
    (
        "a BOOL sent as bytes",
        CA(bytes={gi("connection.mtls"): b"\x01\x02\x03\x04"}),
        "attributes.bytes[connection.mtls]: attribute 'connection.mtls' is BOOL in the attribute manifest, "
        "but was sent as bytes (IP_ADDRESS)",
    ),
    (
        "a duration sent as a timestamp",
        CA(timestamps={gi("response.duration"): Timestamp(seconds=1)}),
        "attributes.timestamps[response.duration]: attribute 'response.duration' is DURATION in the "
        "attribute manifest, but was sent as a TIMESTAMP",
    ),
    (
        "a name sent as a message word is checked too",
        CA(words=["request.headers", "v"], strings={-1: -2}),
        "attributes.strings[request.headers]: attribute 'request.headers' is STRING_MAP in the attribute "
        "manifest, but was sent as a STRING",
    ),
    (
        "strings in their map",
        CA(strings={gi("destination.service.host"): gi("200"), gi("request.path"): gi("200")}),
        None,
    ),
    (
        "attributes the manifest does not know may come in any map",
        CA(words=["custom.thing"], durations={-1: Duration(seconds=1)}),
        None,
    ),
    (
        "every type in its own map",
        encode_attributes({"response.code": 200, "request.headers": {"a": "b"}}),
        None,
    ),
]


@pytest.mark.parametrize(("msg", "error"), [(m, e) for _, m, e in CASES], ids=[c for c, _, _ in CASES])
def test_check_attributes(msg: Any, error: str | None) -> None:
    if error is None:
        ProtoBag(msg, types=TYPES).to_dict()
        return
    with pytest.raises(BadRequest) as err:
        ProtoBag(msg, types=TYPES)
    assert str(err.value) == error
    ProtoBag(msg)  # without a manifest (the client's side), anything goes


@pytest.mark.parametrize(("msg", "error"), [(m, e) for _, m, e in CASES], ids=[c for c, _, _ in CASES])
def test_report_attributes(msg: Any, error: str | None) -> None:
    req = report_pb2.ReportRequest(
        attributes=[encode_attributes({"response.code": 200}), msg],
        repeated_attributes_semantics=INDEPENDENT_ENCODING,
    )
    if error is None:
        decode_report(req, types=TYPES)
        return
    with pytest.raises(BadRequest) as err:
        decode_report(req, types=TYPES)
    assert str(err.value) == error.replace("attributes.", "attributes[1].", 1)


def test_dns_names_e_mail_addresses_and_uris_travel_as_strings() -> None:
    manifest = {"a.dns": ValueType.DNS_NAME, "a.mail": ValueType.EMAIL_ADDRESS, "a.uri": ValueType.URI}
    types = WireTypes({**manifest, "a.any": ValueType.VALUE_TYPE_UNSPECIFIED})
    words = ["a.dns", "a.mail", "a.uri", "x"]
    ProtoBag(CA(words=words, strings={-1: -4, -2: -4, -3: -4}), types=types)
    for i, name in enumerate(words[:3]):
        with pytest.raises(BadRequest, match=re.escape(f"'{name}' is {manifest[name].name}")):
            ProtoBag(CA(words=words, int64s={~i: 1}), types=types)
    for msg in (CA(words=["a.any"], int64s={-1: 1}), CA(words=["a.any"], strings={-1: -1})):
        ProtoBag(msg, types=types)  # VALUE_TYPE_UNSPECIFIED: any map


def test_a_config_manifest_counts() -> None:
    types = WireTypes({**builtin_manifest(), "custom.count": ValueType.INT64})
    with pytest.raises(BadRequest, match=r"'custom\.count' is INT64"):
        ProtoBag(CA(words=["custom.count", "7"], strings={-1: -2}), types=types)
    assert types.problem("custom.count", "int64s") is None


DENY_CONFIG = """
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: deny, namespace: istio-system}
spec:
  compiledAdapter: denier
  params: {status: {code: 7, message: blocked}}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: checkrequest, namespace: istio-system}
spec: {compiledTemplate: checknothing}
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: deny-blocked, namespace: istio-system}
spec:
  match: request.headers["x-user"] == "blocked"
  actions: [{handler: deny, instances: [checkrequest]}]
"""


class _Aborted(Exception):
    pass


class _Context:
    code: grpc.StatusCode | None = None
    details = ""

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.code, self.details = code, details
        raise _Aborted(details)


@pytest.fixture
async def service() -> Any:
    rt = Runtime(MemoryStore(parse_text(DENY_CONFIG).resources), adapters=load_adapters())
    await rt.start()
    svc = MixerService(rt.dispatcher, queue_reports=False)
    yield svc
    await svc.aclose()
    await rt.close()


async def test_a_deny_rule_is_not_bypassed_by_a_headers_string(service: MixerService) -> None:
    # The regression: request.headers sent as a string used to make the match fail to evaluate,
    # so the deny rule did not apply and the request was allowed.
    ctx = _Context()
    blocked_as_map = check_pb2.CheckRequest(
        attributes=encode_attributes({"request.headers": {"x-user": "blocked"}})
    )
    response = await service.Check(blocked_as_map.SerializeToString(), ctx)
    assert response.precondition.status.code == Code.PERMISSION_DENIED
    smuggled = CA(words=["x-user: blocked"], strings={gi("request.headers"): -1})
    with pytest.raises(_Aborted):
        await service.Check(check_pb2.CheckRequest(attributes=smuggled).SerializeToString(), ctx)
    assert ctx.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "attribute 'request.headers' is STRING_MAP in the attribute manifest" in ctx.details


async def test_a_report_with_a_misplaced_attribute_is_rejected(service: MixerService) -> None:
    ctx = _Context()
    req = report_pb2.ReportRequest(attributes=[CA(strings={gi("response.code"): gi("200")})])
    with pytest.raises(_Aborted):
        await service.Report(req.SerializeToString(), ctx)
    assert ctx.code == grpc.StatusCode.INVALID_ARGUMENT
    assert ctx.details.startswith("attributes[0].strings[response.code]: attribute 'response.code' is INT64")


async def test_the_manifest_in_force_is_used_and_follows_config_changes() -> None:
    store = MemoryStore(parse_text(DENY_CONFIG).resources)
    rt = Runtime(store, adapters=load_adapters())
    await rt.start()
    svc = MixerService(rt.dispatcher, queue_reports=False)
    try:
        msg = check_pb2.CheckRequest(attributes=CA(words=["custom.count", "7"], strings={-1: -2}))
        assert (await svc.Check(msg.SerializeToString(), _Context())).precondition.status.code == 0
        manifest = """
apiVersion: config.istio.io/v1alpha2
kind: attributemanifest
metadata: {name: custom, namespace: istio-system}
spec:
  attributes:
    custom.count: {valueType: INT64}
"""
        store.replace(parse_text(DENY_CONFIG + "---" + manifest).resources)
        await rt.reload()
        ctx = _Context()
        with pytest.raises(_Aborted):
            await svc.Check(msg.SerializeToString(), ctx)
        assert ctx.code == grpc.StatusCode.INVALID_ARGUMENT and "'custom.count' is INT64" in ctx.details
    finally:
        await svc.aclose()
        await rt.close()


def test_a_timestamp_in_its_map_is_fine() -> None:
    bag = ProtoBag(CA(timestamps={gi("request.time"): Timestamp(seconds=0)}), types=TYPES)
    assert bag.get("request.time") == dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def test_redeclaring_a_built_in_attribute_with_another_type_is_a_warning() -> None:
    # The Envoy front-ends (ext_authz, rate limit, access log) give request.headers a string map,
    # whatever a config manifest says: a rule compiled for a string would fail to evaluate.
    manifest = """
apiVersion: config.istio.io/v1alpha2
kind: attributemanifest
metadata: {name: mine, namespace: istio-system}
spec:
  attributes:
    request.headers: {valueType: STRING}
    response.code: {valueType: INT64}
"""
    snap = build_snapshot(
        parse_text(manifest).resources, adapters=StaticAdapterCatalog({}), base_manifest=builtin_manifest()
    )
    assert [str(w) for w in snap.warnings] == [
        "attributemanifest/mine.istio-system: spec.attributes.request.headers.valueType: attribute "
        "'request.headers' is STRING_MAP in the built-in vocabulary (the type mixerd's Envoy front-ends "
        "give it); using STRING, rules that read it will fail to evaluate on requests from those front-ends"
    ]
    assert snap.manifest["request.headers"] is ValueType.STRING
