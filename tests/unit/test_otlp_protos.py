"""The generated OTLP modules: the vendored OpenTelemetry protos with only the proto package renamed,
so their bytes are OTLP's and they live next to any other copy of the OpenTelemetry protos."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

from mixerd._proto.otlp.collector.logs.v1 import logs_service_pb2
from mixerd._proto.otlp.collector.trace.v1 import trace_service_pb2
from mixerd._proto.otlp.common.v1 import common_pb2
from mixerd._proto.otlp.logs.v1 import logs_pb2
from mixerd._proto.otlp.resource.v1 import resource_pb2
from mixerd._proto.otlp.trace.v1 import trace_pb2

ROOT = Path(__file__).resolve().parents[2]
UPSTREAM = ROOT / "proto" / "third_party"
MODULES = {
    "common/v1/common.proto": common_pb2,
    "resource/v1/resource.proto": resource_pb2,
    "trace/v1/trace.proto": trace_pb2,
    "logs/v1/logs.proto": logs_pb2,
    "collector/trace/v1/trace_service.proto": trace_service_pb2,
    "collector/logs/v1/logs_service.proto": logs_service_pb2,
}


def _unrenamed(text: str) -> str:
    return text.replace("mixerd.otlp.", "opentelemetry.proto.").replace(
        "mixerd/_proto/otlp/", "opentelemetry/proto/"
    )


def _comparable(fd: descriptor_pb2.FileDescriptorProto) -> descriptor_pb2.FileDescriptorProto:
    """``fd`` without what protoc adds to a descriptor set only (json names, source info)."""
    fd.ClearField("source_code_info")
    stack = list(fd.message_type)
    while stack:
        message = stack.pop()
        for field in message.field:
            field.ClearField("json_name")
        stack.extend(message.nested_type)
    return fd


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> dict[str, descriptor_pb2.FileDescriptorProto]:
    """The descriptors protoc makes of the unmodified upstream files."""
    assert importlib.util.find_spec("grpc_tools") is not None, "grpcio-tools is not installed (make install)"
    out = tmp_path_factory.mktemp("otlp") / "set.pb"
    files = [f"opentelemetry/proto/{name}" for name in MODULES]
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{UPSTREAM}", f"--descriptor_set_out={out}", *files],
        check=True,
        capture_output=True,
    )
    fds = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    return {fd.name: _comparable(fd) for fd in fds.file}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_generated_descriptor_is_upstream_but_for_the_package(
    name: str, upstream: dict[str, descriptor_pb2.FileDescriptorProto]
) -> None:
    ours = descriptor_pb2.FileDescriptorProto()
    MODULES[name].DESCRIPTOR.CopyToProto(ours)
    assert ours.name == f"mixerd/_proto/otlp/{name}"
    assert ours.package.startswith("mixerd.otlp.")
    renamed_back = descriptor_pb2.FileDescriptorProto.FromString(ours.SerializeToString())
    text = _unrenamed(str(_comparable(renamed_back)))
    assert text == str(upstream[f"opentelemetry/proto/{name}"])


def test_wire_bytes_are_otlp() -> None:
    # resource_spans(1) { scope_spans(2) { spans(2) { trace_id(1) span_id(2) name(5) kind(6) } } }
    span = b"\x0a\x10" + bytes(range(1, 17)) + b"\x12\x08" + bytes(range(1, 9)) + b"\x2a\x03GET" + b"\x30\x02"
    scope = b"\x12" + bytes([len(span)]) + span
    resource = b"\x12" + bytes([len(scope)]) + scope
    wire = b"\x0a" + bytes([len(resource)]) + resource
    request = trace_service_pb2.ExportTraceServiceRequest.FromString(wire)
    parsed = request.resource_spans[0].scope_spans[0].spans[0]
    assert parsed.trace_id == bytes(range(1, 17)) and parsed.span_id == bytes(range(1, 9))
    assert parsed.name == "GET" and parsed.kind == trace_pb2.Span.SPAN_KIND_SERVER
    assert request.SerializeToString() == wire
    # partial_success(1) { rejected_spans(1): 2, error_message(2): "x" }
    response = trace_service_pb2.ExportTraceServiceResponse()
    response.partial_success.rejected_spans = 2
    response.partial_success.error_message = "x"
    assert response.SerializeToString() == b"\x0a\x05\x08\x02\x12\x01x"
    logs = logs_service_pb2.ExportLogsServiceResponse()
    logs.partial_success.rejected_log_records = 2
    assert logs.SerializeToString() == b"\x0a\x02\x08\x02"


def test_lives_next_to_other_copies_of_the_opentelemetry_protos() -> None:
    # xds-protos installs an old copy of opentelemetry.proto.*, used by Envoy's OpenTelemetry
    # access-log config; the renamed package does not collide with it in the descriptor pool.
    code = (
        "import mixerd._proto.otlp.collector.trace.v1.trace_service_pb2\n"
        "import mixerd._proto.otlp.collector.logs.v1.logs_service_pb2\n"
        "import envoy.extensions.access_loggers.open_telemetry.v3.logs_service_pb2\n"
        "import opentelemetry.proto.collector.trace.v1.trace_service_pb2\n"
    )
    subprocess.run([sys.executable, "-W", "error", "-c", code], check=True, cwd=ROOT)
