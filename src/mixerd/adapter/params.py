"""Reading adapter params field by field, collecting every error with its path.

Handler params arrive as plain YAML data. :class:`Params` reads typed fields from them, accepts
Mixer's two spellings of a field (``maxAmount`` / ``max_amount``), applies defaults, and records
each problem as a :class:`~mixerd.adapter.sdk.ConfigError` instead of stopping at the first one::

    p = Params(config)
    max_amount = p.int("maxAmount", minimum=0)
    window = p.duration("validDuration", default=timedelta(0))
    names = [q.str("name", required=True) for _, q in p.list("quotas")]
    errors = p.errors + p.unknown_fields()
"""

from __future__ import annotations

import builtins
import datetime as _dt
import enum
import re
from collections.abc import Iterator, Mapping
from typing import Any, TypeVar

from mixerd.adapter.sdk import ConfigError
from mixerd.attribute import parse_duration

__all__ = ["Params", "camel_case"]

E = TypeVar("E", bound=enum.Enum)
_SNAKE_RE = re.compile(r"_([a-z0-9])")
_CAMEL_RE = re.compile(r"(?<=[a-z0-9])([A-Z])")


def camel_case(name: str) -> str:
    """``max_amount`` -> ``maxAmount``."""
    return _SNAKE_RE.sub(lambda m: m.group(1).upper(), name)


def snake_case(name: str) -> str:
    """``maxAmount`` -> ``max_amount``."""
    return _CAMEL_RE.sub(lambda m: "_" + m.group(1).lower(), name)


class Params:
    """A view of one params map at ``path``; errors are shared with the parent view."""

    def __init__(self, data: Any, path: builtins.str = "", errors: list[ConfigError] | None = None) -> None:
        self.path = path
        self.errors: list[ConfigError] = [] if errors is None else errors
        self._seen: set[builtins.str] = set()
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            self.error("", f"expected a map, got {type(data).__name__}")
            data = {}
        self.data: Mapping[builtins.str, Any] = data

    # -- plumbing ------------------------------------------------------------------------------

    def _at(self, name: builtins.str) -> builtins.str:
        return f"{self.path}.{name}" if self.path else name

    def error(self, name: builtins.str, message: builtins.str) -> None:
        self.errors.append(ConfigError(self._at(name) if name else self.path, message))

    def raw(self, name: builtins.str) -> tuple[builtins.str, Any]:
        """The value of ``name`` (camelCase or snake_case) and the key it was found under."""
        camel = camel_case(name)
        for key in (camel, name, snake_case(name)):
            if key in self.data:
                self._seen.add(key)
                return key, self.data[key]
        return camel, None

    def has(self, name: builtins.str) -> builtins.bool:
        return self.raw(name)[1] is not None

    def unknown_fields(self, known: tuple[builtins.str, ...] = ()) -> list[ConfigError]:
        """Errors for keys no reader asked for (call after reading every field)."""
        allowed = self._seen | {camel_case(k) for k in known} | {snake_case(k) for k in known} | set(known)
        return [ConfigError(self._at(str(k)), "unknown field") for k in self.data if str(k) not in allowed]

    # -- typed readers -------------------------------------------------------------------------

    def str(
        self, name: builtins.str, default: builtins.str = "", *, required: builtins.bool = False
    ) -> builtins.str:
        key, value = self.raw(name)
        if value is None:
            if required:
                self.error(key, "required")
            return default
        if not isinstance(value, builtins.str):
            self.error(key, f"expected a string, got {type(value).__name__}")
            return default
        if required and not value:
            self.error(key, "must not be empty")
        return builtins.str(value)

    def int(
        self, name: builtins.str, default: builtins.int = 0, *, minimum: builtins.int | None = None
    ) -> builtins.int:
        key, value = self.raw(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, str) and value.strip().lstrip("-").isdigit():
                value = int(value)
            else:
                self.error(key, f"expected an integer, got {value!r}")
                return default
        if minimum is not None and value < minimum:
            self.error(key, f"must be >= {minimum}, got {value}")
        return int(value)

    def float(self, name: builtins.str, default: builtins.float = 0.0) -> builtins.float:
        key, value = self.raw(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.error(key, f"expected a number, got {value!r}")
            return default
        return float(value)

    def bool(self, name: builtins.str, default: builtins.bool = False) -> builtins.bool:
        key, value = self.raw(name)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.error(key, f"expected true or false, got {value!r}")
            return default
        return value

    def duration(
        self,
        name: builtins.str,
        default: _dt.timedelta = _dt.timedelta(0),
        *,
        positive: builtins.bool = False,
    ) -> _dt.timedelta:
        """A duration written as ``"1.5s"``/``"10m"`` (protobuf JSON) or a number of seconds."""
        key, value = self.raw(name)
        if value is None:
            result = default
        elif isinstance(value, bool):
            self.error(key, f"expected a duration such as '10s', got {value!r}")
            return default
        elif isinstance(value, int | float):
            result = _dt.timedelta(seconds=value)
        elif isinstance(value, str):
            try:
                result = parse_duration(value)
            except ValueError:
                self.error(key, f"expected a duration such as '10s' or '500ms', got {value!r}")
                return default
        else:
            self.error(key, f"expected a duration such as '10s', got {type(value).__name__}")
            return default
        if result < _dt.timedelta(0):
            self.error(key, "must not be negative")
        elif positive and value is not None and result == _dt.timedelta(0):
            self.error(key, "must be greater than zero")
        return result

    def enum(self, name: builtins.str, cls: type[E], default: E) -> E:
        """An enum by name (case-insensitive) or number."""
        key, value = self.raw(name)
        if value is None:
            return default
        if isinstance(value, int) and not isinstance(value, bool):
            for member in cls:
                if member.value == value:
                    return member
        elif isinstance(value, str):
            for member in cls:
                if member.name.lower() == value.lower():
                    return member
        valid = ", ".join(m.name for m in cls)
        self.error(key, f"expected one of {valid}, got {value!r}")
        return default

    def str_list(self, name: builtins.str) -> list[builtins.str]:
        key, value = self.raw(name)
        if value is None:
            return []
        if not isinstance(value, list):
            self.error(key, f"expected a list of strings, got {type(value).__name__}")
            return []
        out = []
        for i, item in enumerate(value):
            if isinstance(item, str | int | float) and not isinstance(item, bool):
                out.append(str(item))
            else:
                self.error(f"{key}[{i}]", f"expected a string, got {type(item).__name__}")
        return out

    def str_map(self, name: builtins.str) -> dict[builtins.str, builtins.str]:
        key, value = self.raw(name)
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.error(key, f"expected a map of strings, got {type(value).__name__}")
            return {}
        return {str(k): str(v) for k, v in value.items()}

    def list(self, name: builtins.str) -> Iterator[tuple[builtins.int, Params]]:
        """Each element of a list of maps, as a nested :class:`Params` (errors flow up)."""
        key, value = self.raw(name)
        if value is None:
            return
        if not isinstance(value, list):
            self.error(key, f"expected a list, got {type(value).__name__}")
            return
        for i, item in enumerate(value):
            yield i, Params(item, self._at(f"{key}[{i}]"), self.errors)

    def child(self, name: builtins.str) -> Params:
        key, value = self.raw(name)
        return Params(value, self._at(key), self.errors)
