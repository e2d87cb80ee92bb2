"""The adapter SDK: how adapters describe themselves, validate config, build handlers and answer.

See :mod:`mixerd.adapter.sdk` for the contract and :mod:`mixerd.adapter.testing` for the harness.
"""

from mixerd.adapter.env import WORKER_COUNT, Clock, Env, ManualClock, SystemClock
from mixerd.adapter.params import Params, camel_case
from mixerd.adapter.ratelog import WARN_INTERVAL, RateLimitedWarning
from mixerd.adapter.registry import ENTRY_POINT_GROUP, AdapterNotFound, get_adapter, load_adapters
from mixerd.adapter.results import (
    OK,
    CheckResult,
    Code,
    DirectHttpResponse,
    QuotaArgs,
    QuotaResult,
    Status,
    code_name,
)
from mixerd.adapter.sdk import Builder, ConfigError, Handler, Info, InstanceInfo, handler_method
from mixerd.adapter.secrets import REDACTED, redact_url
from mixerd.adapter.values import stringify

__all__ = [
    "ENTRY_POINT_GROUP",
    "OK",
    "REDACTED",
    "WARN_INTERVAL",
    "WORKER_COUNT",
    "AdapterNotFound",
    "Builder",
    "CheckResult",
    "Clock",
    "Code",
    "ConfigError",
    "DirectHttpResponse",
    "Env",
    "Handler",
    "Info",
    "InstanceInfo",
    "ManualClock",
    "Params",
    "QuotaArgs",
    "QuotaResult",
    "RateLimitedWarning",
    "Status",
    "SystemClock",
    "camel_case",
    "code_name",
    "get_adapter",
    "handler_method",
    "load_adapters",
    "redact_url",
    "stringify",
]
