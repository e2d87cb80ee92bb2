"""Templates defined by ``template`` resources, and the wire form of every template's instances.

A ``template`` resource carries a base64 ``FileDescriptorSet`` (what Mixer's template code
generator wrote): the proto file of the template's ``Handle<Name>Service`` with its
``InstanceMsg`` (the template's fields plus ``name``), its ``Handle<Name>Request`` and, for
CHECK_WITH_OUTPUT templates, an ``OutputMsg``; the file option ``template_variety`` says when
its instances are dispatched. :func:`template_from_descriptor` turns it into a
:class:`~mixerd.templates.Template` like the compiled-in ones: instances of it are compiled by
the same :func:`~mixerd.templates.compile_instance` and reach handlers as frozen dataclasses.

:func:`encode_instance` / :func:`decode_instance` convert an instance to and from its
``InstanceMsg`` (``istio.policy.v1beta1.Value`` for fields of any type, the policy wrapper
messages for IP addresses, timestamps ...). Pure: no I/O.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as _dt
import hashlib
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, FileDescriptor

from mixerd._proto.mixer.adapter.model.v1beta1 import extensions_pb2
from mixerd._proto.mixer.template.listentry import template_handler_service_pb2 as _listentry
from mixerd._proto.mixer.template.metric import template_handler_service_pb2 as _metric
from mixerd._proto.mixer.template.quota import template_handler_service_pb2 as _quota
from mixerd.attribute import URI, DNSName, EmailAddress, IPAddress, ValueType, type_of
from mixerd.templates.catalogue import (
    ANY,
    TEMPLATES,
    FieldType,
    MapOf,
    Message,
    RemoteService,
    Template,
    Variety,
)

__all__ = [
    "INSTANCE_NAME_FIELD",
    "DescriptorError",
    "decode_instance",
    "decode_output",
    "descriptor_files",
    "encode_instance",
    "encode_output",
    "remote_service",
    "template_from_descriptor",
]

INSTANCE_NAME_FIELD: Final = 72295727
"""Field number of ``name`` in every ``InstanceMsg``."""

_POLICY: Final = "istio.policy.v1beta1."
_WRAPPERS: Final[Mapping[str, ValueType]] = {
    _POLICY + "IPAddress": ValueType.IP_ADDRESS,
    _POLICY + "TimeStamp": ValueType.TIMESTAMP,
    _POLICY + "Duration": ValueType.DURATION,
    _POLICY + "DNSName": ValueType.DNS_NAME,
    _POLICY + "EmailAddress": ValueType.EMAIL_ADDRESS,
    _POLICY + "Uri": ValueType.URI,
    _POLICY + "StringMap": ValueType.STRING_MAP,
    "google.protobuf.Timestamp": ValueType.TIMESTAMP,
    "google.protobuf.Duration": ValueType.DURATION,
}
_SCALARS: Final[Mapping[int, ValueType]] = {
    FieldDescriptor.TYPE_STRING: ValueType.STRING,
    FieldDescriptor.TYPE_INT64: ValueType.INT64,
    FieldDescriptor.TYPE_INT32: ValueType.INT64,
    FieldDescriptor.TYPE_DOUBLE: ValueType.DOUBLE,
    FieldDescriptor.TYPE_FLOAT: ValueType.DOUBLE,
    FieldDescriptor.TYPE_BOOL: ValueType.BOOL,
}
_VARIETIES: Final = {
    extensions_pb2.TEMPLATE_VARIETY_CHECK: Variety.CHECK,
    extensions_pb2.TEMPLATE_VARIETY_REPORT: Variety.REPORT,
    extensions_pb2.TEMPLATE_VARIETY_QUOTA: Variety.QUOTA,
    extensions_pb2.TEMPLATE_VARIETY_ATTRIBUTE_GENERATOR: Variety.ATTRIBUTE_GENERATOR,
    extensions_pb2.TEMPLATE_VARIETY_CHECK_WITH_OUTPUT: Variety.CHECK_WITH_OUTPUT,
}


class DescriptorError(ValueError):
    """A template descriptor mixerd cannot use; the message says why."""


# --- descriptors -> templates --------------------------------------------------------------------


def template_from_descriptor(name: str, descriptor: str) -> Template:
    """The template ``name`` described by ``descriptor`` (a base64 ``FileDescriptorSet``).

    Raises :class:`DescriptorError` naming what is missing or unsupported.
    """
    pool, fds = _load(descriptor)
    # The file with the Handle service decides; Mixer takes the first service named Handle...
    for fdp in fds.file:
        for svc in fdp.service:
            if svc.name.startswith("Handle") and svc.method:
                fd = pool.FindFileByName(fdp.name)
                variety = _VARIETIES.get(fdp.options.Extensions[extensions_pb2.template_variety])
                if variety is None:
                    raise DescriptorError(f"'{fdp.name}': unknown template_variety")
                if variety is Variety.ATTRIBUTE_GENERATOR:
                    raise DescriptorError(
                        "ATTRIBUTE_GENERATOR templates are not supported out of process; use the "
                        "built-in kubernetesenv adapter or a CHECK_WITH_OUTPUT template"
                    )
                template = _template(name, variety, fd, svc.name)
                assert template.remote is not None
                fingerprint = hashlib.sha256(descriptor.strip().encode()).hexdigest()
                return dataclasses.replace(
                    template, remote=dataclasses.replace(template.remote, fingerprint=fingerprint)
                )
    raise DescriptorError(
        "no Handle<Name>Service in the descriptor (generate it with the template's handler service, "
        "as Mixer's template code generator does)"
    )


def descriptor_files(descriptor: str) -> list[FileDescriptor]:
    """The files of ``descriptor`` (a base64 ``FileDescriptorSet``), loaded into a private
    descriptor pool; raises :class:`DescriptorError`."""
    pool, fds = _load(descriptor)
    return [pool.FindFileByName(f.name) for f in fds.file]


def _load(descriptor: str) -> tuple[descriptor_pool.DescriptorPool, descriptor_pb2.FileDescriptorSet]:
    try:
        raw = base64.b64decode(descriptor.strip(), validate=True)
        fds = descriptor_pb2.FileDescriptorSet.FromString(raw)
    except (binascii.Error, ValueError) as exc:
        raise DescriptorError(f"not a base64 FileDescriptorSet: {exc}") from None
    if not fds.file:
        raise DescriptorError("the FileDescriptorSet holds no files")
    pool = descriptor_pool.DescriptorPool()
    by_name = {f.name: f for f in fds.file}
    added: set[str] = set()

    def add(fdp: descriptor_pb2.FileDescriptorProto, chain: tuple[str, ...]) -> None:
        if fdp.name in added:
            return
        for dep in fdp.dependency:
            if dep in chain:
                raise DescriptorError(f"import cycle through '{dep}'")
            if dep in by_name:
                add(by_name[dep], (*chain, dep))
            elif dep not in added:
                known = _well_known(dep)
                if known is None:
                    raise DescriptorError(f"'{fdp.name}' imports '{dep}', which the set does not hold")
                pool.Add(known)
                added.add(dep)
        try:
            pool.Add(fdp)
        except Exception as exc:  # protobuf raises TypeError or its own errors on bad descriptors
            raise DescriptorError(f"'{fdp.name}': {exc}") from None
        added.add(fdp.name)

    for fdp in fds.file:
        add(fdp, (fdp.name,))
    return pool, fds


def _well_known(name: str) -> descriptor_pb2.FileDescriptorProto | None:
    if not name.startswith("google/protobuf/"):
        return None
    try:
        fd = descriptor_pool.Default().FindFileByName(name)
    except KeyError:
        return None
    out = descriptor_pb2.FileDescriptorProto()
    fd.CopyToProto(out)
    return out


def remote_service(template: Template) -> RemoteService | None:
    """How ``template``'s instances reach an out-of-process adapter (``None``: mixerd knows no
    wire form for it)."""
    return template.remote if template.remote is not None else _BUILTIN_REMOTE.get(template.name)


def _service(fd: FileDescriptor, service_name: str) -> tuple[RemoteService, Descriptor | None]:
    svc = fd.services_by_name[service_name]
    method = svc.methods[0]
    request = method.input_type
    field = request.fields_by_name.get("instances") or request.fields_by_name.get("instance")
    if field is None or field.message_type is None:
        raise DescriptorError(f"'{request.full_name}' has no 'instance' or 'instances' message field")
    output = None
    response = method.output_type
    if "output" in response.fields_by_name:
        output = response.fields_by_name["output"].message_type
    type_msg = fd.message_types_by_name.get("Type")
    remote = RemoteService(
        f"/{svc.full_name}/{method.name}",
        message_factory.GetMessageClass(request),
        message_factory.GetMessageClass(field.message_type),
        message_factory.GetMessageClass(response),
        None if type_msg is None else message_factory.GetMessageClass(type_msg),
    )
    return remote, output


def _template(name: str, variety: Variety, fd: FileDescriptor, service_name: str) -> Template:
    remote, output = _service(fd, service_name)
    instance_desc = remote.instance.DESCRIPTOR  # type: ignore[attr-defined]
    fields = _fields(instance_desc, name, ())
    outputs: dict[str, ValueType] = {}
    if variety is Variety.CHECK_WITH_OUTPUT:
        if output is None:
            raise DescriptorError("a CHECK_WITH_OUTPUT template's response has no 'output' message")
        for f in output.fields:
            outputs[f.name] = _output_type(f)
    cls = _instance_class(name, fields)
    return Template(
        name,
        variety,
        cls,
        MappingProxyType(fields),
        MappingProxyType(outputs),
        description=f"defined by template resource '{name}' ({fd.package})",
        remote=remote,
    )


def _fields(desc: Descriptor, template: str, seen: tuple[str, ...]) -> dict[str, FieldType]:
    out: dict[str, FieldType] = {}
    for f in desc.fields:
        if f.number == INSTANCE_NAME_FIELD:
            continue
        out[f.name] = _field_type(f, template, seen)
    return out


def _field_type(f: FieldDescriptor, template: str, seen: tuple[str, ...]) -> FieldType:
    where = f"field '{f.full_name}'"
    if _is_map(f):
        value = f.message_type.fields_by_name["value"]
        if value.message_type is not None and value.message_type.full_name == _POLICY + "Value":
            return MapOf(ANY)
        if value.type == FieldDescriptor.TYPE_STRING:
            return MapOf(ValueType.STRING)
        raise DescriptorError(f"{where}: maps of {value.type_name or value.type} are not supported")
    if _is_repeated(f):
        raise DescriptorError(f"{where}: repeated fields are not supported in templates")
    if f.message_type is not None:
        full = f.message_type.full_name
        if full == _POLICY + "Value":
            return ANY
        if full in _WRAPPERS:
            return _WRAPPERS[full]
        if full in seen:
            raise DescriptorError(f"{where}: recursive message '{full}'")
        sub = _fields(f.message_type, template, (*seen, full))
        return Message(_instance_class(f"{template}.{f.message_type.name}", sub, nested=True), sub)
    vt = _SCALARS.get(f.type)
    if vt is None:
        raise DescriptorError(f"{where}: proto type {f.type} is not supported in templates")
    return vt


def _output_type(f: FieldDescriptor) -> ValueType:
    if _is_map(f):
        if f.message_type.fields_by_name["value"].type == FieldDescriptor.TYPE_STRING:
            return ValueType.STRING_MAP
        raise DescriptorError(f"output field '{f.full_name}': only maps of strings are supported")
    if f.message_type is not None and f.message_type.full_name in _WRAPPERS:
        return _WRAPPERS[f.message_type.full_name]
    vt = _SCALARS.get(f.type)
    if vt is None or _is_repeated(f):
        raise DescriptorError(f"output field '{f.full_name}': its type is not supported")
    return vt


def _is_repeated(f: FieldDescriptor) -> bool:
    return bool(f.is_repeated)


def _is_map(f: FieldDescriptor) -> bool:
    return _is_repeated(f) and f.message_type is not None and f.message_type.GetOptions().map_entry


def _instance_class(name: str, fields: Mapping[str, FieldType], nested: bool = False) -> type:
    """A frozen dataclass for the template's instances: ``name`` (not for nested messages) and
    one field per template field, ``None`` when the instance does not set it."""
    spec: list[Any] = [] if nested else [("name", str)]
    spec += [(f, Any, dataclasses.field(default=None)) for f in fields]
    cls_name = "".join(p[:1].upper() + p[1:] for p in name.replace("-", ".").split(".")) + "Instance"
    return dataclasses.make_dataclass(cls_name, spec, frozen=True, slots=True)


# --- instances <-> InstanceMsg -------------------------------------------------------------------


def encode_instance(template: Template, remote: RemoteService, instance: Any) -> Any:
    """``instance`` (a template instance) as the template's ``InstanceMsg``."""
    msg = remote.instance()
    setattr(msg, msg.DESCRIPTOR.fields_by_number[INSTANCE_NAME_FIELD].name, instance.name)
    _encode_fields(msg, template.fields, instance)
    return msg


def _encode_fields(msg: Any, fields: Mapping[str, FieldType], obj: Any) -> None:
    desc = msg.DESCRIPTOR
    for name, ftype in fields.items():
        value = getattr(obj, name, None)
        if value is None:
            continue
        fd = desc.fields_by_name.get(name)
        if fd is None:
            continue  # a compiled-in template field the wire form does not carry
        if isinstance(ftype, MapOf):
            target = getattr(msg, name)
            for k, v in value.items():
                if ftype.value is ANY:
                    _encode_value(target[k], v)
                else:
                    target[k] = str(v)
        elif isinstance(ftype, Message):
            _encode_fields(getattr(msg, name), ftype.fields, value)
        elif ftype is ANY:
            _encode_value(getattr(msg, name), value)
        elif fd.message_type is not None:
            _encode_wrapper(getattr(msg, name), value)
        else:
            setattr(msg, name, value)


def _encode_value(out: Any, value: Any) -> None:
    """Set the ``istio.policy.v1beta1.Value`` ``out`` to ``value`` (by its runtime type)."""
    vt = type_of(value)
    if vt is ValueType.STRING:
        out.string_value = value
    elif vt is ValueType.INT64:
        out.int64_value = value
    elif vt is ValueType.DOUBLE:
        out.double_value = value
    elif vt is ValueType.BOOL:
        out.bool_value = value
    elif vt is ValueType.IP_ADDRESS:
        out.ip_address_value.value = value.packed
    elif vt is ValueType.TIMESTAMP:
        out.timestamp_value.value.FromDatetime(value)
    elif vt is ValueType.DURATION:
        out.duration_value.value.FromTimedelta(value)
    elif vt is ValueType.EMAIL_ADDRESS:
        out.email_address_value.value = value
    elif vt is ValueType.DNS_NAME:
        out.dns_name_value.value = value
    elif vt is ValueType.URI:
        out.uri_value.value = value
    elif vt is ValueType.STRING_MAP:
        out.string_map_value.value.update({str(k): str(v) for k, v in value.items()})
    else:
        raise TypeError(f"{type(value).__name__} is not one of Mixer's value types")


def _encode_wrapper(out: Any, value: Any) -> None:
    full = out.DESCRIPTOR.full_name
    if full == "google.protobuf.Timestamp":
        out.FromDatetime(value)
    elif full == "google.protobuf.Duration":
        out.FromTimedelta(value)
    elif full == _POLICY + "IPAddress":
        out.value = value.packed
    elif full == _POLICY + "TimeStamp":
        out.value.FromDatetime(value)
    elif full == _POLICY + "Duration":
        out.value.FromTimedelta(value)
    elif full == _POLICY + "StringMap":
        out.value.update({str(k): str(v) for k, v in value.items()})
    else:
        out.value = str(value)


def decode_instance(template: Template, msg: Any) -> Any:
    """The template instance an ``InstanceMsg`` carries (what :func:`encode_instance` wrote)."""
    name = getattr(msg, msg.DESCRIPTOR.fields_by_number[INSTANCE_NAME_FIELD].name)
    return template.instance_class(name=name, **_decode_fields(msg, template.fields))


def _decode_fields(msg: Any, fields: Mapping[str, FieldType]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    desc = msg.DESCRIPTOR
    for name, ftype in fields.items():
        fd = desc.fields_by_name.get(name)
        if fd is None:
            continue
        value = getattr(msg, name)
        if isinstance(ftype, MapOf):
            if value:
                out[name] = {k: _decode_value(v) if ftype.value is ANY else v for k, v in value.items()}
        elif isinstance(ftype, Message):
            if msg.HasField(name):
                out[name] = ftype.cls(**_decode_fields(value, ftype.fields))
        elif ftype is ANY:
            if msg.HasField(name):
                out[name] = _decode_value(value)
        elif fd.message_type is not None:
            if msg.HasField(name):
                out[name] = _decode_wrapper(value)
        elif value != fd.default_value:
            out[name] = value
    return out


def _decode_value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    inner = getattr(v, kind)
    if kind in ("string_value", "int64_value", "double_value", "bool_value"):
        return inner
    return _decode_wrapper(inner)


def _decode_wrapper(v: Any) -> Any:
    full = v.DESCRIPTOR.full_name
    if full == "google.protobuf.Timestamp":
        return v.ToDatetime(tzinfo=_dt.UTC)
    if full == "google.protobuf.Duration":
        return v.ToTimedelta()
    if full == _POLICY + "IPAddress":
        return IPAddress(v.value)
    if full == _POLICY + "TimeStamp":
        return v.value.ToDatetime(tzinfo=_dt.UTC)
    if full == _POLICY + "Duration":
        return v.value.ToTimedelta()
    if full == _POLICY + "StringMap":
        return dict(v.value)
    if full == _POLICY + "DNSName":
        return DNSName(v.value)
    if full == _POLICY + "EmailAddress":
        return EmailAddress(v.value)
    if full == _POLICY + "Uri":
        return URI(v.value)
    raise TypeError(f"unexpected message {full}")


def decode_output(template: Template, output: Any) -> dict[str, Any]:
    """A CHECK_WITH_OUTPUT answer's ``OutputMsg`` as ``{field: value}`` (fields left at their
    default are absent, as Mixer's output bag treats them)."""
    out: dict[str, Any] = {}
    desc = output.DESCRIPTOR
    for name in template.outputs:
        fd = desc.fields_by_name[name]
        value = getattr(output, name)
        if fd.message_type is not None and not _is_map(fd):
            if output.HasField(name):
                out[name] = _decode_wrapper(value)
        elif _is_map(fd):
            if value:
                out[name] = dict(value)
        elif value != fd.default_value:
            out[name] = value
    return out


def encode_output(output: Any, values: Mapping[str, Any]) -> None:
    """Fill the ``OutputMsg`` ``output`` from ``{field: value}`` (for serving a handler)."""
    desc = output.DESCRIPTOR
    for name, value in values.items():
        fd = desc.fields_by_name.get(name)
        if fd is None or value is None:
            continue
        if _is_map(fd):
            getattr(output, name).update({str(k): str(v) for k, v in value.items()})
        elif fd.message_type is not None:
            _encode_wrapper(getattr(output, name), value)
        else:
            setattr(output, name, value)


def _builtin(module: Any, service: str) -> RemoteService:
    remote, _ = _service(module.DESCRIPTOR, service)
    return remote


_BUILTIN_REMOTE: Final[Mapping[str, RemoteService]] = MappingProxyType(
    {
        "metric": _builtin(_metric, "HandleMetricService"),
        "listentry": _builtin(_listentry, "HandleListEntryService"),
        "quota": _builtin(_quota, "HandleQuotaService"),
    }
)
"""The compiled-in templates mixerd can send to (and serve from) out-of-process adapters."""

assert all(t in TEMPLATES for t in _BUILTIN_REMOTE)
