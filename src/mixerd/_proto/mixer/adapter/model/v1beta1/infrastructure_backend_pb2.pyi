from google.protobuf import any_pb2 as _any_pb2
from google.rpc import status_pb2 as _status_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CreateSessionRequest(_message.Message):
    __slots__ = ("adapter_config", "inferred_types")
    class InferredTypesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _any_pb2.Any
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_any_pb2.Any, _Mapping]] = ...) -> None: ...
    ADAPTER_CONFIG_FIELD_NUMBER: _ClassVar[int]
    INFERRED_TYPES_FIELD_NUMBER: _ClassVar[int]
    adapter_config: _any_pb2.Any
    inferred_types: _containers.MessageMap[str, _any_pb2.Any]
    def __init__(self, adapter_config: _Optional[_Union[_any_pb2.Any, _Mapping]] = ..., inferred_types: _Optional[_Mapping[str, _any_pb2.Any]] = ...) -> None: ...

class CreateSessionResponse(_message.Message):
    __slots__ = ("session_id", "status")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    status: _status_pb2.Status
    def __init__(self, session_id: _Optional[str] = ..., status: _Optional[_Union[_status_pb2.Status, _Mapping]] = ...) -> None: ...

class ValidateRequest(_message.Message):
    __slots__ = ("adapter_config", "inferred_types")
    class InferredTypesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _any_pb2.Any
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_any_pb2.Any, _Mapping]] = ...) -> None: ...
    ADAPTER_CONFIG_FIELD_NUMBER: _ClassVar[int]
    INFERRED_TYPES_FIELD_NUMBER: _ClassVar[int]
    adapter_config: _any_pb2.Any
    inferred_types: _containers.MessageMap[str, _any_pb2.Any]
    def __init__(self, adapter_config: _Optional[_Union[_any_pb2.Any, _Mapping]] = ..., inferred_types: _Optional[_Mapping[str, _any_pb2.Any]] = ...) -> None: ...

class ValidateResponse(_message.Message):
    __slots__ = ("status",)
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: _status_pb2.Status
    def __init__(self, status: _Optional[_Union[_status_pb2.Status, _Mapping]] = ...) -> None: ...

class CloseSessionRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class CloseSessionResponse(_message.Message):
    __slots__ = ("status",)
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: _status_pb2.Status
    def __init__(self, status: _Optional[_Union[_status_pb2.Status, _Mapping]] = ...) -> None: ...
