import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.rpc import status_pb2 as _status_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class QuotaRequest(_message.Message):
    __slots__ = ("quotas",)
    class QuotaParams(_message.Message):
        __slots__ = ("amount", "best_effort")
        AMOUNT_FIELD_NUMBER: _ClassVar[int]
        BEST_EFFORT_FIELD_NUMBER: _ClassVar[int]
        amount: int
        best_effort: bool
        def __init__(self, amount: _Optional[int] = ..., best_effort: _Optional[bool] = ...) -> None: ...
    class QuotasEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: QuotaRequest.QuotaParams
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[QuotaRequest.QuotaParams, _Mapping]] = ...) -> None: ...
    QUOTAS_FIELD_NUMBER: _ClassVar[int]
    quotas: _containers.MessageMap[str, QuotaRequest.QuotaParams]
    def __init__(self, quotas: _Optional[_Mapping[str, QuotaRequest.QuotaParams]] = ...) -> None: ...

class QuotaResult(_message.Message):
    __slots__ = ("quotas",)
    class Result(_message.Message):
        __slots__ = ("valid_duration", "granted_amount", "status")
        VALID_DURATION_FIELD_NUMBER: _ClassVar[int]
        GRANTED_AMOUNT_FIELD_NUMBER: _ClassVar[int]
        STATUS_FIELD_NUMBER: _ClassVar[int]
        valid_duration: _duration_pb2.Duration
        granted_amount: int
        status: _status_pb2.Status
        def __init__(self, valid_duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., granted_amount: _Optional[int] = ..., status: _Optional[_Union[_status_pb2.Status, _Mapping]] = ...) -> None: ...
    class QuotasEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: QuotaResult.Result
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[QuotaResult.Result, _Mapping]] = ...) -> None: ...
    QUOTAS_FIELD_NUMBER: _ClassVar[int]
    quotas: _containers.MessageMap[str, QuotaResult.Result]
    def __init__(self, quotas: _Optional[_Mapping[str, QuotaResult.Result]] = ...) -> None: ...
