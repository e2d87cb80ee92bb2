"""Out-of-process adapters as config sees them: what an ``adapter`` resource declares, and how a
handler's ``params`` become the ``adapter_config`` (a ``google.protobuf.Any``) sent to it.

An ``adapter`` resource names the templates the adapter serves and, in ``config``, a base64
``FileDescriptorSet`` whose ``Params`` message is the adapter's config: a handler's params are
encoded with it (field names in snake_case or lowerCamelCase, unknown fields rejected). A handler
that names one of mixerd's own adapters with ``connection.address`` (an adapter served by
``mixerd adapter serve``, always in a session), or an adapter whose resource has no ``config``
descriptor, sends its params as a ``google.protobuf.Struct``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from google.protobuf import any_pb2, json_format, message_factory, struct_pb2

from mixerd.templates.dynamic import DescriptorError, descriptor_files

__all__ = [
    "STRUCT_CONFIG",
    "RemoteAdapter",
    "builtin_remote_adapter",
    "encode_adapter_config",
    "remote_adapter",
]

STRUCT_CONFIG: Final = "google.protobuf.Struct"
"""The config message of mixerd's own adapters served out of process."""


@dataclass(frozen=True, slots=True, eq=False)
class RemoteAdapter:
    """An adapter reached over Mixer's gRPC adapter model."""

    name: str
    templates: tuple[str, ...]
    session_based: bool = False
    config_class: type = struct_pb2.Struct
    """The protobuf class of the adapter's config (``Params`` of its descriptor; a Struct when
    it declares none)."""
    fingerprint: str = ""
    """SHA-256 of what the adapter resource declares (a changed declaration means new handlers)."""


def remote_adapter(name: str, templates: tuple[str, ...], session_based: bool, config: str) -> RemoteAdapter:
    """The adapter an ``adapter`` resource declares; raises :class:`DescriptorError` when its
    ``config`` descriptor is unusable."""
    cls: type = struct_pb2.Struct
    if config.strip():
        found = [m for m in _messages(descriptor_files(config)) if m.name == "Params"]
        if len(found) != 1:
            raise DescriptorError(
                f"the config descriptor must define exactly one message named 'Params' (found {len(found)})"
            )
        cls = message_factory.GetMessageClass(found[0])
    declared = json.dumps([name, list(templates), session_based, config.strip()])
    return RemoteAdapter(name, templates, session_based, cls, hashlib.sha256(declared.encode()).hexdigest())


def builtin_remote_adapter(name: str, templates: tuple[str, ...]) -> RemoteAdapter:
    """One of mixerd's own adapters served out of process (``mixerd adapter serve``): params
    travel as a Struct, in a session (so the served adapter's builder sees every instance the
    handler receives, with its inferred types, as in process)."""
    return RemoteAdapter(name, templates, True, struct_pb2.Struct)


def _messages(files: list[Any]) -> list[Any]:
    out = []
    for fd in files:
        stack = list(fd.message_types_by_name.values())
        while stack:
            m = stack.pop()
            out.append(m)
            stack.extend(m.nested_types)
    return out


def encode_adapter_config(adapter: RemoteAdapter, params: Mapping[str, Any]) -> any_pb2.Any:
    """The handler's ``params`` as the adapter's config in an Any. Raises ``ValueError`` saying
    which field is wrong."""
    msg = adapter.config_class()
    try:
        json_format.ParseDict(dict(params), msg)
    except json_format.ParseError as exc:
        raise ValueError(str(exc)) from None
    out = any_pb2.Any()
    out.Pack(msg)
    return out
