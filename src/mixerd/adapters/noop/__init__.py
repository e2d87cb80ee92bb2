"""The ``noop`` adapter: accepts every template Mixer's noop accepted and does nothing.

Checks answer OK, quotas grant what was asked, reports are dropped. Useful as a rule target while
writing config, and as the baseline in benchmarks.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping, Sequence
from typing import Any

from mixerd.adapter import (
    Builder,
    CheckResult,
    ConfigError,
    Env,
    Handler,
    Info,
    InstanceInfo,
    QuotaArgs,
    QuotaResult,
)

__all__ = ["INFO", "NoopHandler"]

_CHECK_OK = CheckResult()


class NoopHandler(Handler):
    def handle_checknothing(self, instance: Any) -> CheckResult:
        return _CHECK_OK

    def handle_listentry(self, instance: Any) -> CheckResult:
        return _CHECK_OK

    def handle_authorization(self, instance: Any) -> CheckResult:
        return _CHECK_OK

    def handle_quota(self, instance: Any, args: QuotaArgs) -> QuotaResult:
        return QuotaResult(valid_duration=_dt.timedelta(minutes=1), amount=args.amount)

    def handle_metric(self, instances: Sequence[Any]) -> None:
        return None

    def handle_logentry(self, instances: Sequence[Any]) -> None:
        return None

    def handle_tracespan(self, instances: Sequence[Any]) -> None:
        return None

    def handle_reportnothing(self, instances: Sequence[Any]) -> None:
        return None


class _NoopBuilder(Builder):
    def __init__(self, config: Mapping[str, Any], instances: Mapping[str, InstanceInfo]) -> None:
        super().__init__(config, instances)

    def validate(self) -> list[ConfigError]:
        return []

    def build(self, env: Env) -> NoopHandler:
        return NoopHandler()


INFO = Info(
    name="noop",
    description="Does nothing: checks pass, quotas are granted, reports are dropped.",
    templates=(
        "authorization",
        "checknothing",
        "reportnothing",
        "listentry",
        "logentry",
        "metric",
        "quota",
        "tracespan",
    ),
    builder=_NoopBuilder,
)
