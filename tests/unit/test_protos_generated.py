"""The generated Mixer v1 modules: up to date with proto/, and wire-compatible with Mixer."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from mixerd._proto.mixer.v1 import attributes_pb2, check_pb2, mixer_pb2, mixer_pb2_grpc, report_pb2

ROOT = Path(__file__).resolve().parents[2]
GENERATED = ROOT / "src" / "mixerd" / "_proto"

F = FieldDescriptor
SCALAR_NAMES = {
    F.TYPE_SINT32: "sint32",
    F.TYPE_INT32: "int32",
    F.TYPE_UINT32: "uint32",
    F.TYPE_INT64: "int64",
    F.TYPE_DOUBLE: "double",
    F.TYPE_BOOL: "bool",
    F.TYPE_STRING: "string",
    F.TYPE_BYTES: "bytes",
}


def _generated_files(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def test_regenerating_gives_identical_files(tmp_path: Path) -> None:
    assert importlib.util.find_spec("grpc_tools") is not None, (
        "grpcio-tools is not installed (it is in the dev extra: make install)"
    )
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_protos.py"), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    fresh = _generated_files(tmp_path / "mixerd" / "_proto")
    committed = _generated_files(GENERATED)
    assert sorted(fresh) == sorted(committed), "run scripts/gen_protos.py: the set of generated files differs"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"run scripts/gen_protos.py: out of date: {stale}"


def _type_name(field: FieldDescriptor) -> str:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        key, value = field.message_type.fields_by_name["key"], field.message_type.fields_by_name["value"]
        return f"map<{_type_name(key)}, {_type_name(value)}>"
    prefix = "repeated " if field.is_repeated else ""
    if field.type == F.TYPE_MESSAGE:
        return prefix + str(field.message_type.full_name)
    if field.type == F.TYPE_ENUM:
        return prefix + str(field.enum_type.full_name)
    return prefix + SCALAR_NAMES[field.type]


def _shape(message: Descriptor) -> dict[str, tuple[int, str]]:
    return {f.name: (f.number, _type_name(f)) for f in message.fields}


# The field tables of the Mixer v1 API (Istio 1.4), as the design reference lists them.
EXPECTED: dict[str, dict[str, tuple[int, str]]] = {
    "istio.mixer.v1.CompressedAttributes": {
        "words": (1, "repeated string"),
        "strings": (2, "map<sint32, sint32>"),
        "int64s": (3, "map<sint32, int64>"),
        "doubles": (4, "map<sint32, double>"),
        "bools": (5, "map<sint32, bool>"),
        "timestamps": (6, "map<sint32, google.protobuf.Timestamp>"),
        "durations": (7, "map<sint32, google.protobuf.Duration>"),
        "bytes": (8, "map<sint32, bytes>"),
        "string_maps": (9, "map<sint32, istio.mixer.v1.StringMap>"),
    },
    "istio.mixer.v1.StringMap": {"entries": (1, "map<sint32, sint32>")},
    "istio.mixer.v1.Attributes": {"attributes": (1, "map<string, istio.mixer.v1.Attributes.AttributeValue>")},
    "istio.mixer.v1.Attributes.AttributeValue": {
        "string_value": (2, "string"),
        "int64_value": (3, "int64"),
        "double_value": (4, "double"),
        "bool_value": (5, "bool"),
        "bytes_value": (6, "bytes"),
        "timestamp_value": (7, "google.protobuf.Timestamp"),
        "duration_value": (8, "google.protobuf.Duration"),
        "string_map_value": (9, "istio.mixer.v1.Attributes.StringMap"),
    },
    "istio.mixer.v1.Attributes.StringMap": {"entries": (1, "map<string, string>")},
    "istio.mixer.v1.CheckRequest": {
        "attributes": (1, "istio.mixer.v1.CompressedAttributes"),
        "global_word_count": (2, "uint32"),
        "deduplication_id": (3, "string"),
        "quotas": (4, "map<string, istio.mixer.v1.CheckRequest.QuotaParams>"),
    },
    "istio.mixer.v1.CheckRequest.QuotaParams": {"amount": (1, "int64"), "best_effort": (2, "bool")},
    "istio.mixer.v1.CheckResponse": {
        "precondition": (2, "istio.mixer.v1.CheckResponse.PreconditionResult"),
        "quotas": (3, "map<string, istio.mixer.v1.CheckResponse.QuotaResult>"),
    },
    "istio.mixer.v1.CheckResponse.PreconditionResult": {
        "status": (1, "google.rpc.Status"),
        "valid_duration": (2, "google.protobuf.Duration"),
        "valid_use_count": (3, "int32"),
        "referenced_attributes": (5, "istio.mixer.v1.ReferencedAttributes"),
        "route_directive": (6, "istio.mixer.v1.RouteDirective"),
    },
    "istio.mixer.v1.CheckResponse.QuotaResult": {
        "valid_duration": (1, "google.protobuf.Duration"),
        "granted_amount": (2, "int64"),
        "referenced_attributes": (5, "istio.mixer.v1.ReferencedAttributes"),
        "status": (6, "google.rpc.Status"),
    },
    "istio.mixer.v1.ReferencedAttributes": {
        "words": (1, "repeated string"),
        "attribute_matches": (2, "repeated istio.mixer.v1.ReferencedAttributes.AttributeMatch"),
    },
    "istio.mixer.v1.ReferencedAttributes.AttributeMatch": {
        "name": (1, "sint32"),
        "condition": (2, "istio.mixer.v1.ReferencedAttributes.Condition"),
        "regex": (3, "string"),
        "map_key": (4, "sint32"),
    },
    "istio.mixer.v1.HeaderOperation": {
        "name": (1, "string"),
        "value": (2, "string"),
        "operation": (3, "istio.mixer.v1.HeaderOperation.Operation"),
    },
    "istio.mixer.v1.RouteDirective": {
        "request_header_operations": (1, "repeated istio.mixer.v1.HeaderOperation"),
        "response_header_operations": (2, "repeated istio.mixer.v1.HeaderOperation"),
        "direct_response_code": (3, "uint32"),
        "direct_response_body": (4, "string"),
    },
    "istio.mixer.v1.ReportRequest": {
        "attributes": (1, "repeated istio.mixer.v1.CompressedAttributes"),
        "default_words": (2, "repeated string"),
        "global_word_count": (3, "uint32"),
        "repeated_attributes_semantics": (4, "istio.mixer.v1.ReportRequest.RepeatedAttributesSemantics"),
    },
    "istio.mixer.v1.ReportResponse": {},
    "google.rpc.Status": {
        "code": (1, "int32"),
        "message": (2, "string"),
        "details": (3, "repeated google.protobuf.Any"),
    },
}

EXPECTED_ENUMS = {
    "istio.mixer.v1.ReferencedAttributes.Condition": {
        "CONDITION_UNSPECIFIED": 0,
        "ABSENCE": 1,
        "EXACT": 2,
        "REGEX": 3,
    },
    "istio.mixer.v1.HeaderOperation.Operation": {"REPLACE": 0, "REMOVE": 1, "APPEND": 2},
    "istio.mixer.v1.ReportRequest.RepeatedAttributesSemantics": {
        "DELTA_ENCODING": 0,
        "INDEPENDENT_ENCODING": 1,
    },
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_message_fields_match_mixer(name: str) -> None:
    message = descriptor_pool.Default().FindMessageTypeByName(name)
    assert _shape(message) == EXPECTED[name]


@pytest.mark.parametrize("name", sorted(EXPECTED_ENUMS))
def test_enum_values_match_mixer(name: str) -> None:
    enum = descriptor_pool.Default().FindEnumTypeByName(name)
    assert {v.name: v.number for v in enum.values} == EXPECTED_ENUMS[name]


def test_precondition_result_reserves_field_4() -> None:
    message = check_pb2.CheckResponse.PreconditionResult.DESCRIPTOR
    assert 4 not in message.fields_by_number
    assert message.file.serialized_pb.count(b"J\x04\x08\x04\x10\x05") == 1  # reserved range [4, 5)


def test_service_is_istio_mixer_v1_mixer() -> None:
    service = descriptor_pool.Default().FindServiceByName("istio.mixer.v1.Mixer")
    assert service.file is mixer_pb2.DESCRIPTOR
    methods = {m.name: (m.input_type.full_name, m.output_type.full_name) for m in service.methods}
    assert methods == {
        "Check": ("istio.mixer.v1.CheckRequest", "istio.mixer.v1.CheckResponse"),
        "Report": ("istio.mixer.v1.ReportRequest", "istio.mixer.v1.ReportResponse"),
    }
    assert hasattr(mixer_pb2_grpc, "MixerStub") and hasattr(mixer_pb2_grpc, "add_MixerServicer_to_server")


def test_packages_and_paths() -> None:
    for module in (attributes_pb2, check_pb2, report_pb2, mixer_pb2):
        assert module.DESCRIPTOR.package == "istio.mixer.v1"
        assert module.DESCRIPTOR.name.startswith("mixerd/_proto/mixer/v1/")
        assert module.__name__.startswith("mixerd._proto.mixer.v1.")


def test_status_comes_from_the_installed_google_rpc_module() -> None:
    from google.rpc import status_pb2

    status_field = check_pb2.CheckResponse.PreconditionResult.DESCRIPTOR.fields_by_name["status"]
    assert status_field.message_type is status_pb2.Status.DESCRIPTOR
    assert status_pb2.Status.DESCRIPTOR.file.name == "google/rpc/status.proto"
    result = check_pb2.CheckResponse.PreconditionResult()
    result.status.code = 7
    assert isinstance(result.status, status_pb2.Status)
    # The google/rpc/status.proto under proto/third_party is for protoc only: nothing generated from it.
    assert not (GENERATED / "google").exists()
    assert not any(p.name.startswith("status_pb2") for p in GENERATED.rglob("*"))


def test_wire_bytes_of_a_small_check_request() -> None:
    # sint32 keys use zigzag: key -1 -> 1, value 17 -> 34.
    req = check_pb2.CheckRequest(
        attributes=attributes_pb2.CompressedAttributes(words=["w"], strings={-1: 17}), global_word_count=222
    )
    assert req.SerializeToString() == b"\n\x09\n\x01w\x12\x04\x08\x01\x10\x22\x10\xde\x01"
