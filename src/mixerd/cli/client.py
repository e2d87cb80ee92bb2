"""``mixerd check`` and ``mixerd report``: a command-line Mixer client (what Mixer's mixc was)."""

from __future__ import annotations

import argparse
import sys
import uuid
from typing import Any

import grpc

from mixerd.cli.attrs import add_attribute_arguments, attributes_from_args, manifest_from_args, split_quotas

__all__ = ["register_check", "register_report"]


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--server", "-s", default="127.0.0.1:9091", help="mixerd gRPC address [default: %(default)s]"
    )
    p.add_argument(
        "--timeout", type=float, default=5.0, help="seconds to wait for the answer [default: %(default)s]"
    )
    p.add_argument(
        "--tls-ca",
        metavar="FILE",
        help="connect over TLS, trusting the server certificates signed by this PEM CA bundle",
    )
    p.add_argument("--tls-cert", metavar="FILE", help="PEM client certificate to present (with --tls-ca)")
    p.add_argument("--tls-key", metavar="FILE", help="PEM private key of --tls-cert")
    p.add_argument(
        "--tls-server-name",
        metavar="NAME",
        help="the name the server certificate must have (default: the --server host)",
    )
    add_attribute_arguments(p)


def _channel(args: argparse.Namespace) -> grpc.Channel:
    """A channel to ``--server``: plaintext, or TLS with ``--tls-ca`` (``OSError``: a file cannot
    be read; ``ValueError``: an incomplete setting)."""
    if not args.tls_ca:
        if args.tls_cert or args.tls_key or args.tls_server_name:
            raise ValueError("--tls-cert, --tls-key and --tls-server-name need --tls-ca")
        return grpc.insecure_channel(args.server)
    if bool(args.tls_cert) != bool(args.tls_key):
        raise ValueError("--tls-cert and --tls-key go together")

    def read(path: str | None) -> bytes | None:
        if not path:
            return None
        with open(path, "rb") as f:
            return f.read()

    creds = grpc.ssl_channel_credentials(read(args.tls_ca), read(args.tls_key), read(args.tls_cert))
    options = [("grpc.ssl_target_name_override", args.tls_server_name)] if args.tls_server_name else []
    return grpc.secure_channel(args.server, creds, options=options)


def _open(args: argparse.Namespace) -> grpc.Channel | None:
    try:
        return _channel(args)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


def register_check(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "check",
        help="send a Check (and optional quotas) to a server and print the answer",
        description="Build a Mixer CheckRequest from attributes, send it, and print status, validity, "
        "referenced attributes, route directive and quota grants, then what a proxy would do. "
        "Exit status: 0 allowed, 3 denied, 4 a quota granted less than asked, 1 the call failed, "
        "2 bad input.",
    )
    _common(p)
    p.add_argument(
        "--quota",
        "-q",
        action="append",
        default=[],
        metavar="NAME[=AMOUNT]",
        help="a quota to allocate (repeatable)",
    )
    p.add_argument("--best-effort", action="store_true", help="allocate quotas best effort")
    p.add_argument("--repeat", type=int, default=1, help="send the request N times (e.g. to exhaust a quota)")
    p.set_defaults(func=run_check)


def register_report(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "report",
        help="send a Report of one attribute set (or --repeat N of them in one batch)",
        description="Build a Mixer ReportRequest (compressed attributes, independent encoding) and send it.",
    )
    _common(p)
    p.add_argument("--repeat", type=int, default=1, help="attribute sets in the batch [default: %(default)s]")
    p.set_defaults(func=run_report)


def _load(args: argparse.Namespace) -> dict[str, Any] | None:
    try:
        return attributes_from_args(args, manifest_from_args(args))
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


def run_check(args: argparse.Namespace) -> int:
    import yaml

    from mixerd._proto.mixer.v1 import mixer_pb2_grpc
    from mixerd.api.mixer_v1.client import build_check_request, decode_check_response

    values = _load(args)
    if values is None:
        return 2
    quotas = split_quotas(args.quota)
    status = 0
    opened = _open(args)
    if opened is None:
        return 2
    with opened as channel:
        stub = mixer_pb2_grpc.MixerStub(channel)
        for i in range(max(1, args.repeat)):
            req = build_check_request(
                values,
                quotas={name: (amount, args.best_effort) for name, amount in quotas.items()},
                dedup_id=str(uuid.uuid4()),
            )
            try:
                resp = stub.Check(req, timeout=args.timeout)
            except grpc.RpcError as exc:
                print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)
                return 1
            if args.repeat > 1:
                print(f"--- check {i + 1}")
            print(yaml.safe_dump(decode_check_response(resp), sort_keys=False).rstrip())
            status, verdict = _verdict(resp, quotas, args.best_effort)
            print(f"=> {verdict}")
    return status


def _verdict(resp: Any, quotas: dict[str, int], best_effort: bool) -> tuple[int, str]:
    """What a proxy would do with this answer, and the exit status that says it:
    0 allowed, 3 denied by the precondition, 4 a quota granted less than asked."""
    code = resp.precondition.status.code
    if code != 0:
        from mixerd.adapter import code_name

        return 3, f"denied ({code_name(code)})"
    short = [
        name
        for name, amount in quotas.items()
        if (granted := resp.quotas[name].granted_amount if name in resp.quotas else 0) < amount
        and not (best_effort and granted > 0)
    ]
    if short:
        return 4, "quota exhausted: " + ", ".join(short)
    return 0, "allowed"


def run_report(args: argparse.Namespace) -> int:
    from mixerd._proto.mixer.v1 import mixer_pb2_grpc
    from mixerd.api.mixer_v1.client import build_report_request

    values = _load(args)
    if values is None:
        return 2
    req = build_report_request([values] * max(1, args.repeat))
    opened = _open(args)
    if opened is None:
        return 2
    with opened as channel:
        try:
            mixer_pb2_grpc.MixerStub(channel).Report(req, timeout=args.timeout)
        except grpc.RpcError as exc:
            print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
    print(f"reported {max(1, args.repeat)} attribute set(s)")
    return 0
