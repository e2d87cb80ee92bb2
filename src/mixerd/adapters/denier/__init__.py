"""The ``denier`` adapter: every check fails with the configured status.

Params (Mixer's ``denier`` config): ``status`` (``code`` and ``message``; default
FAILED_PRECONDITION), ``validDuration`` (default 5s) and ``validUseCount`` (default 1000), which
tell the caller how long it may cache the denial. Quota requests are granted nothing.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from typing import Any

from mixerd.adapter import (
    Builder,
    CheckResult,
    Code,
    ConfigError,
    Env,
    Handler,
    Info,
    InstanceInfo,
    Params,
    QuotaArgs,
    QuotaResult,
    Status,
)

__all__ = ["INFO", "DenierHandler"]


class DenierHandler(Handler):
    def __init__(self, result: CheckResult) -> None:
        self.result = result

    def handle_checknothing(self, instance: Any) -> CheckResult:
        return self.result

    def handle_listentry(self, instance: Any) -> CheckResult:
        return self.result

    def handle_quota(self, instance: Any, args: QuotaArgs) -> QuotaResult:
        return QuotaResult(status=self.result.status, valid_duration=self.result.valid_duration, amount=0)


class _DenierBuilder(Builder):
    def __init__(self, config: Mapping[str, Any], instances: Mapping[str, InstanceInfo]) -> None:
        super().__init__(config, instances)
        p = Params(config)
        status = p.child("status")
        code = status.int("code", default=Code.FAILED_PRECONDITION)
        if not 0 <= code <= 16:
            status.error("code", f"expected a gRPC status code (0-16), got {code}")
        message = status.str("message")
        valid_duration = p.duration("validDuration", default=_dt.timedelta(seconds=5))
        valid_use_count = p.int("validUseCount", default=1000, minimum=0)
        self.errors = p.errors + status.unknown_fields(("details",)) + p.unknown_fields()
        self.result = CheckResult(Status(code, message), valid_duration, valid_use_count)

    def validate(self) -> list[ConfigError]:
        return self.errors

    def build(self, env: Env) -> DenierHandler:
        return DenierHandler(self.result)


INFO = Info(
    name="denier",
    description="Denies every check with a configured status.",
    templates=("checknothing", "listentry", "quota"),
    builder=_DenierBuilder,
    default_config={
        "status": {"code": int(Code.FAILED_PRECONDITION)},
        "validDuration": "5s",
        "validUseCount": 1000,
    },
)
