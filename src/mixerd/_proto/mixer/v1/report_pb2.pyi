from mixerd._proto.mixer.v1 import attributes_pb2 as _attributes_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ReportRequest(_message.Message):
    __slots__ = ("attributes", "default_words", "global_word_count", "repeated_attributes_semantics")
    class RepeatedAttributesSemantics(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        DELTA_ENCODING: _ClassVar[ReportRequest.RepeatedAttributesSemantics]
        INDEPENDENT_ENCODING: _ClassVar[ReportRequest.RepeatedAttributesSemantics]
    DELTA_ENCODING: ReportRequest.RepeatedAttributesSemantics
    INDEPENDENT_ENCODING: ReportRequest.RepeatedAttributesSemantics
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_WORDS_FIELD_NUMBER: _ClassVar[int]
    GLOBAL_WORD_COUNT_FIELD_NUMBER: _ClassVar[int]
    REPEATED_ATTRIBUTES_SEMANTICS_FIELD_NUMBER: _ClassVar[int]
    attributes: _containers.RepeatedCompositeFieldContainer[_attributes_pb2.CompressedAttributes]
    default_words: _containers.RepeatedScalarFieldContainer[str]
    global_word_count: int
    repeated_attributes_semantics: ReportRequest.RepeatedAttributesSemantics
    def __init__(self, attributes: _Optional[_Iterable[_Union[_attributes_pb2.CompressedAttributes, _Mapping]]] = ..., default_words: _Optional[_Iterable[str]] = ..., global_word_count: _Optional[int] = ..., repeated_attributes_semantics: _Optional[_Union[ReportRequest.RepeatedAttributesSemantics, str]] = ...) -> None: ...

class ReportResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
