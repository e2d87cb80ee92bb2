import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.rpc import status_pb2 as _status_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CheckResult(_message.Message):
    __slots__ = ("status", "valid_duration", "valid_use_count")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    VALID_DURATION_FIELD_NUMBER: _ClassVar[int]
    VALID_USE_COUNT_FIELD_NUMBER: _ClassVar[int]
    status: _status_pb2.Status
    valid_duration: _duration_pb2.Duration
    valid_use_count: int
    def __init__(self, status: _Optional[_Union[_status_pb2.Status, _Mapping]] = ..., valid_duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., valid_use_count: _Optional[int] = ...) -> None: ...
