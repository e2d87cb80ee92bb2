from google.protobuf import any_pb2 as _any_pb2
from mixerd._proto.mixer.adapter.model.v1beta1 import check_pb2 as _check_pb2
from mixerd._proto.mixer.adapter.model.v1beta1 import extensions_pb2 as _extensions_pb2
from mixerd._proto.policy.v1beta1 import type_pb2 as _type_pb2
from mixerd._proto.policy.v1beta1 import value_type_pb2 as _value_type_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class HandleListEntryRequest(_message.Message):
    __slots__ = ("instance", "adapter_config", "dedup_id")
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_CONFIG_FIELD_NUMBER: _ClassVar[int]
    DEDUP_ID_FIELD_NUMBER: _ClassVar[int]
    instance: InstanceMsg
    adapter_config: _any_pb2.Any
    dedup_id: str
    def __init__(self, instance: _Optional[_Union[InstanceMsg, _Mapping]] = ..., adapter_config: _Optional[_Union[_any_pb2.Any, _Mapping]] = ..., dedup_id: _Optional[str] = ...) -> None: ...

class InstanceMsg(_message.Message):
    __slots__ = ("name", "value")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: _type_pb2.Value
    def __init__(self, name: _Optional[str] = ..., value: _Optional[_Union[_type_pb2.Value, _Mapping]] = ...) -> None: ...

class Type(_message.Message):
    __slots__ = ("value",)
    VALUE_FIELD_NUMBER: _ClassVar[int]
    value: _value_type_pb2.ValueType
    def __init__(self, value: _Optional[_Union[_value_type_pb2.ValueType, str]] = ...) -> None: ...

class InstanceParam(_message.Message):
    __slots__ = ("value",)
    VALUE_FIELD_NUMBER: _ClassVar[int]
    value: str
    def __init__(self, value: _Optional[str] = ...) -> None: ...
