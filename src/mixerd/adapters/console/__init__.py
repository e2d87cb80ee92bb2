"""The ``console`` adapter: records each reported call as a *hop* in the mixerd console.

Rules choose what is recorded, as for any adapter, and filter with the rule's ``match``. The
handler takes instances of two templates:

``attributes`` (the default configs' ``consolehop`` instance; no params)
    The instance is the call's attribute set itself: nothing is built per call, and the handler
    reads the attributes it needs by their standard names, as the ``logentry`` instance below
    would with these variables:
    ``reporter``: ``context.reporter.kind`` (``outbound``: the source's proxy, else the
    destination's); ``source.workload.namespace | source.namespace``, ``source.workload.name``,
    ``source.labels["app"]``, ``source.labels["version"]``, ``source.principal`` and the same of
    ``destination.*``, whose service is ``destination.service.host | request.host``;
    ``api.protocol | context.protocol | "http"``, ``request.method``, ``request.path``,
    ``request.host``, ``response.code``, ``context.proxy_error_code``, ``request.size``,
    ``response.size``, ``response.duration``, ``request.id | request.headers["x-request-id"]``
    and ``request.headers`` (the key and the trace context); the start is ``request.time``
    (the time of the report when absent). Absent attributes give empty values. Of
    ``request.headers`` the handler reads only the headers of its ``transactionHeaders``, the
    trace context's (``traceparent``, ``x-b3-traceid``, ``x-b3-spanid``, ``x-b3-parentspanid``,
    ``b3``) and ``x-request-id``, and says so: a Report decodes just those entries for it.
``logentry``
    Any logentry instance, read by variable name. The names are those of Istio's stock
    ``accesslog`` instance, so a rule sending that instance to a console handler is enough; the
    names the stock instance lacks add what it cannot say. It costs a few microseconds more per
    call than ``attributes`` (every variable is an expression evaluated into a new instance).

=========================  ======================================================================
``reporter``               ``source`` / ``destination`` (else from ``context.reporter.kind``)
``sourceNamespace`` ...    ``sourceWorkload``, ``sourceApp``, ``sourceVersion``, ``sourcePrincipal``
``destinationNamespace``   ``destinationWorkload``, ``destinationApp``, ``destinationVersion``,
                           ``destinationServiceHost``, ``destinationPrincipal``
``protocol``, ``method``   as is; ``url`` is the path, ``httpAuthority`` the host
``responseCode``           ``responseFlags``, ``requestSize``, ``responseSize``
``latency``                the duration (a duration, or Go duration text such as ``"12ms"``)
``requestId``              Envoy's ``x-request-id`` (``request.id``); it is also the key's
                           ``x-request-id`` when ``requestHeaders`` lacks that header
``requestHeaders``         the request's headers (``request.headers``): the transaction key and
                           the W3C / B3 trace context are read from them
``transactionId``          overrides the key taken from the headers
``traceId``, ``spanId``    override the trace context taken from the headers
=========================  ======================================================================

A logentry instance's ``timestamp`` is the start of the call. Params: ``transactionHeaders``, the headers
that carry the transaction key, first present wins (default ``x-transaction-id``, ``traceparent``,
``x-b3-traceid``, ``x-request-id``).

Hops go to the console's writer (``Env.shared("console")``) without waiting: the writer batches them
to the store off the request path. Where the server runs without a console (``--console-store
off``, ``mixerd validate``), hops are dropped and counted with reason ``console_off``.
"""

from __future__ import annotations

from typing import Final

from mixerd.adapter import Info
from mixerd.adapters.console.handler import (
    ConsoleBuilder,
    ConsoleHandler,
    HopSink,
    hop_from_attributes,
    hop_from_variables,
)

__all__ = ["INFO", "ConsoleBuilder", "ConsoleHandler", "HopSink", "hop_from_attributes", "hop_from_variables"]

INFO: Final = Info(
    name="console",
    description="Records reported calls as hops of the mixerd console (transactions, service graph).",
    templates=("attributes", "logentry"),
    builder=ConsoleBuilder,
    default_config={},
)
