"""The runtime: config snapshot -> handler table -> routing table -> dispatcher, and the
controller that rebuilds them on every config change."""

from mixerd.runtime.controller import AdapterRegistryCatalog, Runtime, RuntimeStatus
from mixerd.runtime.dispatcher import (
    DEFAULT_VALID_DURATION,
    DEFAULT_VALID_USE_COUNT,
    CheckOutcome,
    Dispatcher,
    HeaderOperation,
    QuotaOutcome,
    RouteDirective,
    request_namespace,
)
from mixerd.runtime.failures import DispatchError, failure_answer, log_failure, new_request_id
from mixerd.runtime.handlers import HandlerEntry, HandlerTable, build_handler_table, handler_signature
from mixerd.runtime.metrics import RuntimeMetrics
from mixerd.runtime.quotas import EMPTY_QUOTA_PLAN, QuotaPlan
from mixerd.runtime.routing import RoutingTable, build_routing_table

__all__ = [
    "DEFAULT_VALID_DURATION",
    "DEFAULT_VALID_USE_COUNT",
    "EMPTY_QUOTA_PLAN",
    "AdapterRegistryCatalog",
    "CheckOutcome",
    "DispatchError",
    "Dispatcher",
    "HandlerEntry",
    "HandlerTable",
    "HeaderOperation",
    "QuotaOutcome",
    "QuotaPlan",
    "RouteDirective",
    "RoutingTable",
    "Runtime",
    "RuntimeMetrics",
    "RuntimeStatus",
    "build_handler_table",
    "build_routing_table",
    "failure_answer",
    "handler_signature",
    "log_failure",
    "new_request_id",
    "request_namespace",
]
