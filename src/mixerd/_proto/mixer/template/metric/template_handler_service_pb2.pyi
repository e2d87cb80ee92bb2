from google.protobuf import any_pb2 as _any_pb2
from mixerd._proto.mixer.adapter.model.v1beta1 import extensions_pb2 as _extensions_pb2
from mixerd._proto.mixer.adapter.model.v1beta1 import report_pb2 as _report_pb2
from mixerd._proto.policy.v1beta1 import type_pb2 as _type_pb2
from mixerd._proto.policy.v1beta1 import value_type_pb2 as _value_type_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class HandleMetricRequest(_message.Message):
    __slots__ = ("instances", "adapter_config", "dedup_id")
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_CONFIG_FIELD_NUMBER: _ClassVar[int]
    DEDUP_ID_FIELD_NUMBER: _ClassVar[int]
    instances: _containers.RepeatedCompositeFieldContainer[InstanceMsg]
    adapter_config: _any_pb2.Any
    dedup_id: str
    def __init__(self, instances: _Optional[_Iterable[_Union[InstanceMsg, _Mapping]]] = ..., adapter_config: _Optional[_Union[_any_pb2.Any, _Mapping]] = ..., dedup_id: _Optional[str] = ...) -> None: ...

class InstanceMsg(_message.Message):
    __slots__ = ("name", "value", "dimensions", "monitored_resource_type", "monitored_resource_dimensions")
    class DimensionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _type_pb2.Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_type_pb2.Value, _Mapping]] = ...) -> None: ...
    class MonitoredResourceDimensionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _type_pb2.Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_type_pb2.Value, _Mapping]] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    MONITORED_RESOURCE_TYPE_FIELD_NUMBER: _ClassVar[int]
    MONITORED_RESOURCE_DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: _type_pb2.Value
    dimensions: _containers.MessageMap[str, _type_pb2.Value]
    monitored_resource_type: str
    monitored_resource_dimensions: _containers.MessageMap[str, _type_pb2.Value]
    def __init__(self, name: _Optional[str] = ..., value: _Optional[_Union[_type_pb2.Value, _Mapping]] = ..., dimensions: _Optional[_Mapping[str, _type_pb2.Value]] = ..., monitored_resource_type: _Optional[str] = ..., monitored_resource_dimensions: _Optional[_Mapping[str, _type_pb2.Value]] = ...) -> None: ...

class Type(_message.Message):
    __slots__ = ("value", "dimensions", "monitored_resource_dimensions")
    class DimensionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _value_type_pb2.ValueType
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_value_type_pb2.ValueType, str]] = ...) -> None: ...
    class MonitoredResourceDimensionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _value_type_pb2.ValueType
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_value_type_pb2.ValueType, str]] = ...) -> None: ...
    VALUE_FIELD_NUMBER: _ClassVar[int]
    DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    MONITORED_RESOURCE_DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    value: _value_type_pb2.ValueType
    dimensions: _containers.ScalarMap[str, _value_type_pb2.ValueType]
    monitored_resource_dimensions: _containers.ScalarMap[str, _value_type_pb2.ValueType]
    def __init__(self, value: _Optional[_Union[_value_type_pb2.ValueType, str]] = ..., dimensions: _Optional[_Mapping[str, _value_type_pb2.ValueType]] = ..., monitored_resource_dimensions: _Optional[_Mapping[str, _value_type_pb2.ValueType]] = ...) -> None: ...

class InstanceParam(_message.Message):
    __slots__ = ("value", "dimensions", "monitored_resource_type", "monitored_resource_dimensions")
    class DimensionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class MonitoredResourceDimensionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    VALUE_FIELD_NUMBER: _ClassVar[int]
    DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    MONITORED_RESOURCE_TYPE_FIELD_NUMBER: _ClassVar[int]
    MONITORED_RESOURCE_DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    value: str
    dimensions: _containers.ScalarMap[str, str]
    monitored_resource_type: str
    monitored_resource_dimensions: _containers.ScalarMap[str, str]
    def __init__(self, value: _Optional[str] = ..., dimensions: _Optional[_Mapping[str, str]] = ..., monitored_resource_type: _Optional[str] = ..., monitored_resource_dimensions: _Optional[_Mapping[str, str]] = ...) -> None: ...
