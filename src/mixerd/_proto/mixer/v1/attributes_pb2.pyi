import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Attributes(_message.Message):
    __slots__ = ("attributes",)
    class AttributeValue(_message.Message):
        __slots__ = ("string_value", "int64_value", "double_value", "bool_value", "bytes_value", "timestamp_value", "duration_value", "string_map_value")
        STRING_VALUE_FIELD_NUMBER: _ClassVar[int]
        INT64_VALUE_FIELD_NUMBER: _ClassVar[int]
        DOUBLE_VALUE_FIELD_NUMBER: _ClassVar[int]
        BOOL_VALUE_FIELD_NUMBER: _ClassVar[int]
        BYTES_VALUE_FIELD_NUMBER: _ClassVar[int]
        TIMESTAMP_VALUE_FIELD_NUMBER: _ClassVar[int]
        DURATION_VALUE_FIELD_NUMBER: _ClassVar[int]
        STRING_MAP_VALUE_FIELD_NUMBER: _ClassVar[int]
        string_value: str
        int64_value: int
        double_value: float
        bool_value: bool
        bytes_value: bytes
        timestamp_value: _timestamp_pb2.Timestamp
        duration_value: _duration_pb2.Duration
        string_map_value: Attributes.StringMap
        def __init__(self, string_value: _Optional[str] = ..., int64_value: _Optional[int] = ..., double_value: _Optional[float] = ..., bool_value: _Optional[bool] = ..., bytes_value: _Optional[bytes] = ..., timestamp_value: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., duration_value: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., string_map_value: _Optional[_Union[Attributes.StringMap, _Mapping]] = ...) -> None: ...
    class StringMap(_message.Message):
        __slots__ = ("entries",)
        class EntriesEntry(_message.Message):
            __slots__ = ("key", "value")
            KEY_FIELD_NUMBER: _ClassVar[int]
            VALUE_FIELD_NUMBER: _ClassVar[int]
            key: str
            value: str
            def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
        ENTRIES_FIELD_NUMBER: _ClassVar[int]
        entries: _containers.ScalarMap[str, str]
        def __init__(self, entries: _Optional[_Mapping[str, str]] = ...) -> None: ...
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Attributes.AttributeValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Attributes.AttributeValue, _Mapping]] = ...) -> None: ...
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    attributes: _containers.MessageMap[str, Attributes.AttributeValue]
    def __init__(self, attributes: _Optional[_Mapping[str, Attributes.AttributeValue]] = ...) -> None: ...

class CompressedAttributes(_message.Message):
    __slots__ = ("words", "strings", "int64s", "doubles", "bools", "timestamps", "durations", "bytes", "string_maps")
    class StringsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: int
        def __init__(self, key: _Optional[int] = ..., value: _Optional[int] = ...) -> None: ...
    class Int64sEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: int
        def __init__(self, key: _Optional[int] = ..., value: _Optional[int] = ...) -> None: ...
    class DoublesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: float
        def __init__(self, key: _Optional[int] = ..., value: _Optional[float] = ...) -> None: ...
    class BoolsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: bool
        def __init__(self, key: _Optional[int] = ..., value: _Optional[bool] = ...) -> None: ...
    class TimestampsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: _timestamp_pb2.Timestamp
        def __init__(self, key: _Optional[int] = ..., value: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
    class DurationsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: _duration_pb2.Duration
        def __init__(self, key: _Optional[int] = ..., value: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...
    class BytesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: bytes
        def __init__(self, key: _Optional[int] = ..., value: _Optional[bytes] = ...) -> None: ...
    class StringMapsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: StringMap
        def __init__(self, key: _Optional[int] = ..., value: _Optional[_Union[StringMap, _Mapping]] = ...) -> None: ...
    WORDS_FIELD_NUMBER: _ClassVar[int]
    STRINGS_FIELD_NUMBER: _ClassVar[int]
    INT64S_FIELD_NUMBER: _ClassVar[int]
    DOUBLES_FIELD_NUMBER: _ClassVar[int]
    BOOLS_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMPS_FIELD_NUMBER: _ClassVar[int]
    DURATIONS_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    STRING_MAPS_FIELD_NUMBER: _ClassVar[int]
    words: _containers.RepeatedScalarFieldContainer[str]
    strings: _containers.ScalarMap[int, int]
    int64s: _containers.ScalarMap[int, int]
    doubles: _containers.ScalarMap[int, float]
    bools: _containers.ScalarMap[int, bool]
    timestamps: _containers.MessageMap[int, _timestamp_pb2.Timestamp]
    durations: _containers.MessageMap[int, _duration_pb2.Duration]
    bytes: _containers.ScalarMap[int, bytes]
    string_maps: _containers.MessageMap[int, StringMap]
    def __init__(self, words: _Optional[_Iterable[str]] = ..., strings: _Optional[_Mapping[int, int]] = ..., int64s: _Optional[_Mapping[int, int]] = ..., doubles: _Optional[_Mapping[int, float]] = ..., bools: _Optional[_Mapping[int, bool]] = ..., timestamps: _Optional[_Mapping[int, _timestamp_pb2.Timestamp]] = ..., durations: _Optional[_Mapping[int, _duration_pb2.Duration]] = ..., bytes: _Optional[_Mapping[int, bytes]] = ..., string_maps: _Optional[_Mapping[int, StringMap]] = ...) -> None: ...

class StringMap(_message.Message):
    __slots__ = ("entries",)
    class EntriesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: int
        def __init__(self, key: _Optional[int] = ..., value: _Optional[int] = ...) -> None: ...
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.ScalarMap[int, int]
    def __init__(self, entries: _Optional[_Mapping[int, int]] = ...) -> None: ...
