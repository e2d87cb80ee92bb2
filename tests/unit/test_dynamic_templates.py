"""Templates from ``template`` resources (mixerd.templates.dynamic) and out-of-process handler
config (adapter resources, handlers with ``adapter:`` and ``connection``)."""

from __future__ import annotations

import base64
import datetime as _dt
import re

import pytest
from google.protobuf import descriptor_pb2, struct_pb2

from mixerd._proto.mixer.adapter.model.v1beta1 import extensions_pb2
from mixerd._proto.mixer.template.listentry import template_handler_service_pb2 as listentry_pb2
from mixerd._proto.mixer.template.metric import template_handler_service_pb2 as metric_pb2
from mixerd.attribute import IPAddress, ValueType, stock_manifest
from mixerd.config import StaticAdapterCatalog, build_snapshot, parse_text
from mixerd.config.remote import encode_adapter_config, remote_adapter
from mixerd.runtime.handlers import HandlerTable, build_handler_table
from mixerd.templates import ANY, TEMPLATES, MapOf, Variety, compile_instance
from mixerd.templates.dynamic import (
    DescriptorError,
    decode_instance,
    encode_instance,
    remote_service,
    template_from_descriptor,
)


def descriptor_set(*modules: object, rename: dict[str, str] | None = None) -> str:
    """A base64 FileDescriptorSet of ``modules`` and everything they import (as protoc's
    ``--include_imports`` writes it)."""
    files: list[descriptor_pb2.FileDescriptorProto] = []
    seen: set[str] = set()

    def add(fd: object) -> None:
        if fd.name in seen:  # type: ignore[attr-defined]
            return
        for dep in fd.dependencies:  # type: ignore[attr-defined]
            add(dep)
        seen.add(fd.name)  # type: ignore[attr-defined]
        proto = descriptor_pb2.FileDescriptorProto()
        fd.CopyToProto(proto)  # type: ignore[attr-defined]
        files.append(proto)

    for m in modules:
        add(m.DESCRIPTOR)  # type: ignore[attr-defined]
    return base64.b64encode(descriptor_pb2.FileDescriptorSet(file=files).SerializeToString()).decode()


def test_a_template_resource_describes_a_template_like_the_built_in_one() -> None:
    t = template_from_descriptor("mymetric", descriptor_set(metric_pb2))
    builtin = TEMPLATES["metric"]
    assert t.variety is Variety.REPORT
    assert dict(t.fields) == {
        "value": ANY,
        "dimensions": MapOf(ANY),
        "monitored_resource_type": ValueType.STRING,
        "monitored_resource_dimensions": MapOf(ANY),
    }
    assert set(t.fields) == set(builtin.fields)
    assert t.remote is not None and t.remote.path == "/metric.HandleMetricService/HandleMetric"


def test_instances_round_trip_through_instance_msg() -> None:
    t = template_from_descriptor("mymetric", descriptor_set(metric_pb2))
    b = compile_instance(
        "m.instance.ns",
        t,
        {"value": "request.size", "dimensions": {"ip": "source.ip", "t": "request.time"}},
        stock_manifest(),
    )
    when = _dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=_dt.UTC)
    inst = b.build({"request.size": 7, "source.ip": IPAddress(bytes([10, 0, 0, 1])), "request.time": when})
    assert remote_service(t) is t.remote
    msg = encode_instance(t, t.remote, inst)
    wire = metric_pb2.InstanceMsg.FromString(msg.SerializeToString())  # what an adapter decodes
    assert wire.name == "m.instance.ns"
    assert wire.value.int64_value == 7
    assert wire.dimensions["ip"].ip_address_value.value == bytes([10, 0, 0, 1])
    assert wire.dimensions["t"].timestamp_value.value.ToDatetime(tzinfo=_dt.UTC) == when
    assert decode_instance(t, msg) == inst
    # the compiled-in template has the same wire form
    builtin = TEMPLATES["metric"]
    remote = remote_service(builtin)
    assert remote is not None
    b2 = compile_instance("m.instance.ns", "metric", {"value": "request.size"}, stock_manifest())
    assert encode_instance(builtin, remote, b2.build({"request.size": 7})).value.int64_value == 7


@pytest.mark.parametrize(
    ("descriptor", "message"),
    [
        ("not base64!", "not a base64 FileDescriptorSet"),
        ("", "the FileDescriptorSet holds no files"),
        (descriptor_set(extensions_pb2), "no Handle<Name>Service in the descriptor"),
    ],
)
def test_unusable_descriptors_are_refused_with_the_reason(descriptor: str, message: str) -> None:
    with pytest.raises(DescriptorError, match=re.escape(message)):
        template_from_descriptor("t", descriptor)


def test_a_descriptor_missing_an_import_is_refused() -> None:
    fds = descriptor_pb2.FileDescriptorSet.FromString(base64.b64decode(descriptor_set(listentry_pb2)))
    kept = [f for f in fds.file if not f.name.endswith("policy/v1beta1/type.proto")]
    text = base64.b64encode(descriptor_pb2.FileDescriptorSet(file=kept).SerializeToString()).decode()
    with pytest.raises(DescriptorError, match=re.escape("imports 'mixerd/_proto/policy/v1beta1/type.proto'")):
        template_from_descriptor("t", text)


def test_adapter_config_encodes_with_the_descriptor_params_or_a_struct() -> None:
    plain = remote_adapter("a", ("metric",), False, "")
    packed = encode_adapter_config(plain, {"x": [1, "two"]})
    assert packed.type_url == "type.googleapis.com/google.protobuf.Struct"
    assert struct_pb2.Struct.FromString(packed.value)["x"][1] == "two"
    # a descriptor without a Params message is refused
    with pytest.raises(DescriptorError, match="exactly one message named 'Params'"):
        remote_adapter("a", ("metric",), False, descriptor_set(metric_pb2))


CONFIG = """
kind: adapter
metadata: {name: remote, namespace: istio-system}
spec: {templates: [listentry]}
---
kind: handler
metadata: {name: noaddress, namespace: istio-system}
spec: {adapter: remote}
---
kind: handler
metadata: {name: tls, namespace: istio-system}
spec:
  adapter: remote
  connection: {address: "127.0.0.1:1", authentication: {tls: {caCertificates: /ca.pem}}}
---
kind: handler
metadata: {name: unknown, namespace: istio-system}
spec: {adapter: nosuch, connection: {address: "127.0.0.1:1"}}
---
kind: handler
metadata: {name: good, namespace: istio-system}
spec: {adapter: remote, connection: {address: "127.0.0.1:1"}, params: {a: b}}
---
kind: instance
metadata: {name: who, namespace: istio-system}
spec: {template: nosuchtemplate, params: {value: '"x"'}}
"""


def test_out_of_process_handler_config_errors_name_their_field() -> None:
    snap = build_snapshot(
        parse_text(CONFIG).resources, adapters=StaticAdapterCatalog({"list": ("listentry",)})
    )
    errors = [str(e) for e in snap.errors]
    assert errors == [
        "handler/noaddress.istio-system: spec.connection.address: missing: adapter 'remote' is out of "
        "process (a handler with `adapter:`), mixerd needs the address of its gRPC server",
        "handler/tls.istio-system: spec.connection.authentication: not supported: mixerd connects to "
        "out-of-process adapters in plaintext; reach a TLS adapter through a local proxy (e.g. an Envoy "
        "sidecar) instead",
        "handler/unknown.istio-system: spec.adapter: no adapter resource named 'nosuch' (an out-of-process "
        "adapter is declared with a `kind: adapter` resource listing its templates and config descriptor)",
        "instance/who.istio-system: spec.template: unknown template 'nosuchtemplate' (no template resource "
        "of that name, and no template built into mixerd)",
    ]
    good = snap.handlers["good.handler.istio-system"]
    assert good.remote is not None and good.remote.templates == ("listentry",)


def _params_descriptor() -> str:
    f = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(
        name="backend/config.proto",
        package="backend.config",
        syntax="proto3",
        message_type=[
            descriptor_pb2.DescriptorProto(
                name="Params",
                field=[f(name="label_name", number=1, type=f.TYPE_STRING, label=f.LABEL_OPTIONAL)],
            )
        ],
    )
    return base64.b64encode(descriptor_pb2.FileDescriptorSet(file=[fdp]).SerializeToString()).decode()


def test_handler_params_must_fit_the_adapter_config_descriptor() -> None:
    adapter = remote_adapter("backend", ("listentry",), False, _params_descriptor())
    packed = encode_adapter_config(adapter, {"labelName": "x"})  # lowerCamelCase or snake_case
    assert packed.type_url == "type.googleapis.com/backend.config.Params"
    assert packed.value == b"\n\x01x"
    text = f"""
kind: adapter
metadata: {{name: backend, namespace: istio-system}}
spec: {{templates: [listentry], config: "{_params_descriptor()}"}}
---
kind: handler
metadata: {{name: h, namespace: istio-system}}
spec: {{adapter: backend, connection: {{address: "127.0.0.1:1"}}, params: {{label_name: x, colour: red}}}}
"""
    snap = build_snapshot(parse_text(text).resources, adapters=StaticAdapterCatalog({}))
    (error,) = snap.errors
    assert str(error).startswith("handler/h.istio-system: spec.params: ")
    assert "colour" in str(error)


REUSE = """
kind: adapter
metadata: {{name: backend, namespace: istio-system}}
spec: {{templates: [listentry], session_based: {session}}}
---
kind: handler
metadata: {{name: h, namespace: istio-system}}
spec: {{adapter: backend, connection: {{address: "127.0.0.1:1"}}}}
---
kind: instance
metadata: {{name: who, namespace: istio-system}}
spec:
  template: listentry
  params: {{value: '"x"'}}
---
kind: rule
metadata: {{name: r, namespace: istio-system}}
spec: {{actions: [{{handler: h, instances: [who]}}]}}
"""


async def test_a_changed_adapter_resource_means_a_new_handler() -> None:
    def table(session: str, old: HandlerTable | None = None) -> HandlerTable:
        snap = build_snapshot(
            parse_text(REUSE.format(session=session)).resources, adapters=StaticAdapterCatalog({})
        )
        assert snap.errors == ()
        return build_handler_table(snap, {}, old)

    first = table("false")
    same = table("false", first)
    changed = table("true", same)
    assert (first.built, same.reused, changed.built) == (1, 1, 1)
    for t in (first, changed):
        for entry in t.entries.values():
            await entry.handler.close()
