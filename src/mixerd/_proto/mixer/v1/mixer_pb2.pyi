from mixerd._proto.mixer.v1 import check_pb2 as _check_pb2
from mixerd._proto.mixer.v1 import report_pb2 as _report_pb2
from google.protobuf import descriptor as _descriptor
from typing import ClassVar as _ClassVar

DESCRIPTOR: _descriptor.FileDescriptor
