"""A third-party out-of-process adapter, written only from Mixer's published adapter protos.

Run as a process: ``python tests/support/oop_adapter.py --address HOST:PORT --record FILE --gen DIR``.
It imports nothing of mixerd but generated protobuf and gRPC modules (the Mixer adapter model
and template services mixerd ships under ``mixerd._proto``, and the test's own ``checkoutput``
template and ``Params`` config compiled into ``DIR``), as an adapter author's code would.

It serves

* ``InfrastructureBackend``: Validate (refuses a config whose label is ``"invalid"``),
  CreateSession (session ids ``session-1``, ``session-2`` ...), CloseSession;
* ``HandleListEntryService``: denies (PERMISSION_DENIED) values listed in the config's
  ``blocked``, allows others, valid for 5 s or 7 uses;
* ``HandleMetricService``: accepts metrics;
* ``HandleQuotaService``: grants at most 2 of what is asked, valid 1 s;
* ``HandleCheckOutputService`` (a CHECK_WITH_OUTPUT template): allows, and outputs
  ``value = "<label>:<user>"`` and ``count = <size>``.

Every request is appended to ``FILE`` as one JSON line ``{"method": ..., "request": <base64 of
the request bytes>}`` so the test can decode exactly what mixerd sent.
"""

from __future__ import annotations

import argparse
import base64
import json
import signal
import sys
import threading
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, status_pb2


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--address", required=True)
    parser.add_argument("--record", type=Path, required=True)
    parser.add_argument("--gen", type=Path, required=True, help="directory of the generated test protos")
    ns = parser.parse_args()
    sys.path.insert(0, str(ns.gen))

    import config_pb2
    from checkoutput import template_handler_service_pb2 as co_pb2
    from checkoutput import template_handler_service_pb2_grpc as co_grpc

    from mixerd._proto.mixer.adapter.model.v1beta1 import check_pb2, quota_pb2, report_pb2
    from mixerd._proto.mixer.adapter.model.v1beta1 import infrastructure_backend_pb2 as ib
    from mixerd._proto.mixer.adapter.model.v1beta1 import infrastructure_backend_pb2_grpc as ib_grpc
    from mixerd._proto.mixer.template.listentry import template_handler_service_pb2_grpc as le_grpc
    from mixerd._proto.mixer.template.metric import template_handler_service_pb2_grpc as metric_grpc
    from mixerd._proto.mixer.template.quota import template_handler_service_pb2_grpc as quota_grpc

    lock = threading.Lock()
    sessions: dict[str, Any] = {}
    record = ns.record.open("a", encoding="utf-8")

    def log(method: str, request: Any) -> None:
        line = json.dumps(
            {"method": method, "request": base64.b64encode(request.SerializeToString()).decode()}
        )
        with lock:
            record.write(line + "\n")
            record.flush()

    def config_of(adapter_config: any_pb2.Any) -> Any:
        if adapter_config.type_url == "google.protobuf.Any.type_url":  # a session id
            return sessions[adapter_config.value.decode()]
        params = config_pb2.Params()
        if not adapter_config.Unpack(params):
            raise ValueError(f"unexpected config type {adapter_config.type_url}")
        return params

    class Backend(ib_grpc.InfrastructureBackendServicer):
        def Validate(self, request: Any, context: Any) -> Any:
            log("Validate", request)
            params = config_pb2.Params()
            request.adapter_config.Unpack(params)
            if params.label == "invalid":
                return ib.ValidateResponse(status=status_pb2.Status(code=code_pb2.INVALID_ARGUMENT))
            return ib.ValidateResponse(status=status_pb2.Status(code=code_pb2.OK))

        def CreateSession(self, request: Any, context: Any) -> Any:
            log("CreateSession", request)
            params = config_pb2.Params()
            request.adapter_config.Unpack(params)
            with lock:
                sid = f"session-{len(sessions) + 1}"
                sessions[sid] = params
            return ib.CreateSessionResponse(session_id=sid, status=status_pb2.Status(code=code_pb2.OK))

        def CloseSession(self, request: Any, context: Any) -> Any:
            log("CloseSession", request)
            return ib.CloseSessionResponse(status=status_pb2.Status(code=code_pb2.OK))

    class ListEntry(le_grpc.HandleListEntryServiceServicer):
        def HandleListEntry(self, request: Any, context: Any) -> Any:
            log("HandleListEntry", request)
            params = config_of(request.adapter_config)
            value = request.instance.value.string_value
            if value in params.blocked:
                status = status_pb2.Status(code=code_pb2.PERMISSION_DENIED, message=f"{value} is blocked")
            else:
                status = status_pb2.Status(code=code_pb2.OK)
            return check_pb2.CheckResult(
                status=status, valid_duration=duration_pb2.Duration(seconds=5), valid_use_count=7
            )

    class Metric(metric_grpc.HandleMetricServiceServicer):
        def HandleMetric(self, request: Any, context: Any) -> Any:
            log("HandleMetric", request)
            return report_pb2.ReportResult()

    class Quota(quota_grpc.HandleQuotaServiceServicer):
        def HandleQuota(self, request: Any, context: Any) -> Any:
            log("HandleQuota", request)
            out = quota_pb2.QuotaResult()
            for name, asked in request.quota_request.quotas.items():
                got = out.quotas[name]
                got.granted_amount = min(asked.amount, 2)
                got.valid_duration.seconds = 1
            return out

    class CheckOutput(co_grpc.HandleCheckOutputServiceServicer):
        def HandleCheckOutput(self, request: Any, context: Any) -> Any:
            log("HandleCheckOutput", request)
            params = config_of(request.adapter_config)
            return co_pb2.HandleCheckOutputResponse(
                result=check_pb2.CheckResult(
                    status=status_pb2.Status(code=code_pb2.OK),
                    valid_duration=duration_pb2.Duration(seconds=5),
                    valid_use_count=3,
                ),
                output=co_pb2.OutputMsg(
                    value=f"{params.label}:{request.instance.user}", count=request.instance.size.int64_value
                ),
            )

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    ib_grpc.add_InfrastructureBackendServicer_to_server(Backend(), server)
    le_grpc.add_HandleListEntryServiceServicer_to_server(ListEntry(), server)
    metric_grpc.add_HandleMetricServiceServicer_to_server(Metric(), server)
    quota_grpc.add_HandleQuotaServiceServicer_to_server(Quota(), server)
    co_grpc.add_HandleCheckOutputServiceServicer_to_server(CheckOutput(), server)
    server.add_insecure_port(ns.address)
    server.start()
    print("serving", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    server.stop(grace=1).wait()
    record.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
