"""One Envoy request through every Envoy front-end gives one value per attribute.

Cases and the front-ends' limits are in ``tests/data/envoy_mapping.yaml`` (its header explains
how each front-end's message is built from a case).
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from envoy.data.accesslog.v3 import accesslog_pb2
from envoy.service.accesslog.v3 import als_pb2
from envoy.service.auth.v3 import external_auth_pb2
from envoy.service.ratelimit.v3 import rls_pb2
from google.protobuf import struct_pb2

from mixerd.api.accesslog.convert import StreamState
from mixerd.api.ext_authz.request import CheckRequestBag, HttpRequestBag
from mixerd.api.ratelimit.convert import decode_request
from mixerd.attribute import IPAddress


class _Loader(yaml.SafeLoader):
    pass


_Loader.add_constructor("!ip", lambda loader, node: IPAddress.parse(loader.construct_scalar(node)))
_Loader.add_constructor(
    "!ts",
    lambda loader, node: dt.datetime.fromisoformat(loader.construct_scalar(node).replace("Z", "+00:00")),
)

TABLE: dict[str, Any] = yaml.load(  # a SafeLoader subclass
    (Path(__file__).resolve().parent.parent / "data" / "envoy_mapping.yaml").read_text("utf-8"),
    Loader=_Loader,
)
FRONTENDS: dict[str, Any] = TABLE["frontends"]


def _time(case: dict[str, Any]) -> dt.datetime:
    t = case["time"]
    return t if isinstance(t, dt.datetime) else dt.datetime.fromisoformat(str(t).replace("Z", "+00:00"))


def _headers(req: dict[str, Any]) -> dict[str, str]:
    headers = dict(req.get("headers") or {})
    if "size" in req:
        headers["content-length"] = str(req["size"])
    return headers


def _struct(value: dict[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(value)
    return s


def _grpc(req: dict[str, Any]) -> dict[str, Any]:
    msg = external_auth_pb2.CheckRequest()
    ctx = msg.attributes
    for side in ("source", "destination"):
        peer = req.get(side) or {}
        p = getattr(ctx, side)
        if "ip" in peer:
            p.address.socket_address.address = str(peer["ip"])
            p.address.socket_address.port_value = peer.get("port", 0)
        if "principal" in peer:
            p.principal = peer["principal"]
        for k, v in (peer.get("labels") or {}).items():
            p.labels[k] = v
    if "sni" in req:
        ctx.tls_session.sni = req["sni"]
    ctx.context_extensions["namespace"] = req["namespace"]
    ctx.request.time.FromDatetime(_time(req))
    http = ctx.request.http
    http.method, http.path, http.host, http.scheme = req["method"], req["path"], req["host"], req["scheme"]
    http.size = req.get("size", 0)
    headers = {":method": req["method"], ":path": req["path"], ":authority": req["host"], **_headers(req)}
    raw = req.get("raw_headers")
    if raw:  # Envoy's encode_raw_headers: the bytes as they came
        for k, v in headers.items():
            http.header_map.headers.add(key=k, raw_value=v.encode())
        for k, v in raw.items():
            http.header_map.headers.add(key=k, raw_value=v)
    else:
        for k, v in headers.items():
            http.headers[k] = v
    for ns, value in (req.get("metadata") or {}).items():
        ctx.metadata_context.filter_metadata[ns].CopyFrom(_struct(value))
    return dict(CheckRequestBag(msg).materialize())


def _http(req: dict[str, Any]) -> dict[str, Any]:
    pairs: list[tuple[str, str]] = [
        ("Host", req["host"]),
        ("X-Original-URI", req["path"]),
        ("X-Original-Method", req["method"]),
        ("X-Forwarded-Proto", req["scheme"]),
        ("X-Mixerd-Ext-Namespace", req["namespace"]),
    ]
    if "ip" in (req.get("source") or {}):
        pairs.append(("X-Real-IP", str(req["source"]["ip"])))
    pairs.extend(_headers(req).items())
    # aiohttp decodes header bytes as UTF-8 with surrogateescape
    pairs.extend((k, v.decode("utf-8", "surrogateescape")) for k, v in (req.get("raw_headers") or {}).items())
    bag = HttpRequestBag("GET", "/authz", pairs, now=_time(req), extension_headers=True)
    out = dict(bag.materialize())
    control = set(FRONTENDS["ext_authz_http"]["control_headers"])
    out["request.headers"] = {k: v for k, v in out["request.headers"].items() if k not in control}
    return out


def _method_number(name: str) -> int:
    enum = accesslog_pb2.HTTPRequestProperties.DESCRIPTOR.fields_by_name["request_method"].enum_type
    return int(enum.values_by_name[name].number)


def _accesslog(req: dict[str, Any]) -> dict[str, Any]:
    ns = req["namespace"]
    dest = req.get("destination") or {}
    message = als_pb2.StreamAccessLogsMessage()
    message.identifier.log_name = "als"
    message.identifier.node.id = f"sidecar~{dest.get('ip', '10.0.0.1')}~app-1.{ns}~{ns}.svc.cluster.local"
    entry = message.http_logs.log_entry.add()
    c = entry.common_properties
    src = req.get("source") or {}
    if "ip" in src:
        c.downstream_remote_address.socket_address.address = str(src["ip"])
        c.downstream_remote_address.socket_address.port_value = src.get("port", 0)
    if "ip" in dest:
        c.downstream_local_address.socket_address.address = str(dest["ip"])
        c.downstream_local_address.socket_address.port_value = dest.get("port", 0)
    c.upstream_cluster = f"inbound|{dest.get('port', 80)}||"
    c.start_time.FromDatetime(_time(req))
    if "principal" in src:
        c.tls_properties.peer_certificate_properties.subject_alt_name.add(uri=src["principal"])
    if "principal" in dest:
        c.tls_properties.local_certificate_properties.subject_alt_name.add(uri=dest["principal"])
    if "sni" in req:
        c.tls_properties.tls_sni_hostname = req["sni"]
    for mns, value in (req.get("metadata") or {}).items():
        c.metadata.filter_metadata[mns].CopyFrom(_struct(value))
    r = entry.request
    r.request_method = _method_number(req["method"])
    r.scheme, r.authority, r.path = req["scheme"], req["host"], req["path"]
    headers = _headers(req)
    r.request_id = headers.get("x-request-id", "")
    r.user_agent = headers.get("user-agent", "")
    r.referer = headers.get("referer", "")
    r.request_body_bytes = req.get("size", 0)
    for k, v in headers.items():
        r.request_headers[k] = v
    # protobuf strings are UTF-8: Envoy can only log undecodable bytes replaced
    for k, v in (req.get("raw_headers") or {}).items():
        r.request_headers[k] = v.decode("utf-8", "replace")
    converted = StreamState().convert(message)
    (bag,) = converted.bags
    return dict(bag)


def _ratelimit(req: dict[str, Any]) -> dict[str, Any]:
    msg = rls_pb2.RateLimitRequest(domain="d")
    d = msg.descriptors.add()
    d.entries.add(key="namespace", value=req["namespace"])
    if "ip" in (req.get("source") or {}):
        d.entries.add(key="remote_address", value=str(req["source"]["ip"]))
    d.entries.add(
        key="destination_cluster", value=f"inbound|{(req.get('destination') or {}).get('port', 80)}||"
    )
    (allocation,) = decode_request(msg)
    return dict(allocation.bag)


BUILDERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "ext_authz_grpc": _grpc,
    "ext_authz_http": _http,
    "accesslog": _accesslog,
    "ratelimit": _ratelimit,
}


def _plain(attrs: dict[str, Any]) -> dict[str, Any]:
    return {k: dict(v) if hasattr(v, "items") else v for k, v in attrs.items()}


def _carries(frontend: str, name: str) -> bool:
    spec = FRONTENDS[frontend]
    only = spec.get("carries_only")
    if only is not None:
        return name in only
    return name not in (spec.get("cannot_carry") or {})


def test_every_frontend_has_a_builder_and_every_limit_has_a_reason() -> None:
    assert set(FRONTENDS) == set(BUILDERS)
    for name, spec in FRONTENDS.items():
        for attr, reason in (spec.get("cannot_carry") or {}).items():
            assert isinstance(reason, str) and reason.strip(), f"{name}: {attr} needs a reason"


@pytest.mark.parametrize("case", TABLE["cases"], ids=[c["name"] for c in TABLE["cases"]])
@pytest.mark.parametrize("frontend", sorted(BUILDERS))
def test_expected_attributes(case: dict[str, Any], frontend: str) -> None:
    got = _plain(BUILDERS[frontend](case["request"]))
    for name, want in case["attributes"].items():
        if _carries(frontend, name):
            assert name in got, f"{frontend} does not give {name}"
            assert got[name] == want, f"{frontend}: {name}"
        else:
            assert name not in got, f"{frontend} gives {name}, which the table says it cannot carry"


@pytest.mark.parametrize("case", TABLE["cases"], ids=[c["name"] for c in TABLE["cases"]])
def test_one_value_per_attribute_across_frontends(case: dict[str, Any]) -> None:
    seen = {f: _plain(build(case["request"])) for f, build in BUILDERS.items()}
    for (fa, a), (fb, b) in itertools.combinations(seen.items(), 2):
        for name in sorted(set(a) & set(b)):
            assert a[name] == b[name], f"{name}: {fa} gives {a[name]!r}, {fb} gives {b[name]!r}"
