"""Server settings: command-line flags, with ``MIXERD_*`` environment variables as defaults."""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from mixerd.attribute import parse_duration
from mixerd.config.k8s.target import is_k8s_url, parse_url
from mixerd.console.correlate import parse_order

__all__ = ["TLS_LISTENERS", "Settings", "add_arguments", "parse_address", "parse_workers"]


@dataclass(frozen=True, slots=True)
class Settings:
    config: tuple[Path, ...] = ()
    """Config files or directories; empty (and no ``config_url``) means the embedded default config."""
    config_url: str = ""
    """A ``k8s://`` URL (given as ``--config``): config from Kubernetes custom resources instead of files."""
    grpc_address: str = "0.0.0.0:9091"
    monitoring_address: str = "0.0.0.0:15014"
    prometheus_address: str = "0.0.0.0:42422"
    """Where prometheus handlers' metrics are served (Mixer's port); empty disables that listener."""
    http_authz_address: str = "0.0.0.0:9192"
    """The HTTP authorization endpoint (Envoy http_service, nginx auth_request); empty disables it."""
    default_namespace: str = "istio-system"
    check_deadline: float = 1.0
    check_cache_entries: int = 10_000
    """Entries of the decision cache (Check answers reused while valid, emptied by every config
    change); 0 disables it."""
    fail_closed: bool = False
    """Deny a Check when a check or quota rule's match, or an instance it sends to a handler, cannot
    be evaluated (rules without a mixerd.io/fail-closed annotation). Off: Mixer's behaviour."""
    drain_timeout: float = 10.0
    config_debounce: float = 0.5
    config_resync: float = 30.0
    k8s_write_status: bool = False
    """With a ``k8s://`` config: write resources' validation errors as Kubernetes Events on them."""
    k8s_missing_retry: float = 30.0
    """With a ``k8s://`` config: seconds between looks for a kind whose CRD is not installed."""
    log_level: str = "info"
    http_authz_prefix: str = ""
    """Path prefix stripped from HTTP authorization request lines (Envoy's http_service.path_prefix)."""
    http_authz_extension_headers: bool = False
    """Read X-Mixerd-Ext-<key> headers as ext_authz context extensions (only behind a proxy that sets
    or clears them)."""
    http_authz_read_timeout: float = 30.0
    """Seconds an HTTP authorization connection may take to send a complete request (from its
    opening or from the previous answer); slower or idle connections are closed."""
    http_authz_max_connections: int = 1024
    """Open HTTP authorization connections beyond this are closed as they arrive."""
    ratelimit_shadow: bool = False
    """Rate-limit service: decide and record, but never answer OVER_LIMIT."""
    ratelimit_shadow_domains: str = ""
    ratelimit_failure_mode: str = "allow"
    accesslog_reporter_kinds: str = ""
    accesslog_queue_entries: int = 10000
    accesslog_batch_entries: int = 100
    accesslog_enqueue_timeout: float = 1.0
    accesslog_drop: str = "oldest"
    debug_remote: bool = False
    """Serve /debug/* (the policy in force) to clients that are not on loopback."""
    max_request_words: int = 100_000
    """Mixer API: words in one request's message dictionaries together."""
    max_attributes: int = 10_000
    """Mixer API: attributes in one attribute set."""
    max_report_sets: int = 10_000
    """Mixer API: attribute sets in one Report."""
    max_map_entries: int = 10_000
    """Mixer API: entries in one string map attribute."""
    max_decoded_values: int = 1_000_000
    """Mixer API: attributes plus string-map entries in one request (RESOURCE_EXHAUSTED)."""
    tls_cert: str = ""
    """PEM certificate chain every listener serves over TLS; empty: plaintext (see server/tls.py)."""
    tls_key: str = ""
    """The certificate's PEM private key (unencrypted)."""
    tls_client_ca: str = ""
    """PEM CA bundle: listeners with one require client certificates signed by its CAs."""
    grpc_tls_cert: str | None = None
    """Per listener (grpc, monitoring, prometheus, http_authz): replaces ``tls_cert`` ... for that
    listener; None: the general setting applies; '' turns it off for that listener."""
    grpc_tls_key: str | None = None
    grpc_tls_client_ca: str | None = None
    monitoring_tls_cert: str | None = None
    monitoring_tls_key: str | None = None
    monitoring_tls_client_ca: str | None = None
    prometheus_tls_cert: str | None = None
    prometheus_tls_key: str | None = None
    prometheus_tls_client_ca: str | None = None
    http_authz_tls_cert: str | None = None
    http_authz_tls_key: str | None = None
    http_authz_tls_client_ca: str | None = None
    tls_reload_interval: float = 1.0
    """Seconds between reads of the TLS files (a changed certificate is served after at most this)."""
    console_store: str = ""
    """Where the console keeps hops, decisions, spans and logs: ``sqlite:///path``,
    ``postgresql://...``, or ``off``; empty means SQLite under ``$XDG_STATE_HOME/mixerd`` (else
    ``./mixerd-state``)."""
    console_retention: str = "24h"
    """How long console records are kept (a Go duration; ``0`` keeps them until ``console_max_rows``)."""
    console_max_rows: int = 1_000_000
    """Most hops (and as many decisions, spans, logs) the console keeps; the oldest go first; 0: no bound."""
    console_address: str = ""
    """Where the console API is served; empty means on the monitoring listener."""
    console_decisions: bool = True
    """Record every Check / ext_authz / rate-limit decision in the console."""
    console_remote: bool = False
    """Serve the console API to clients that are not on loopback (it shows who called what)."""
    console_transaction_headers: str = "x-transaction-id,traceparent,x-b3-traceid,x-request-id"
    """The headers whose value is a request's transaction key, first present wins."""
    allow_slow_protobuf: bool = False
    workers: str = "1"
    """Worker processes serving the same ports (``auto``: one per usable core); 1 serves in this
    process (see server/workers.py)."""

    @property
    def worker_count(self) -> int:
        """:attr:`workers` as a number (``auto``: the cores this process may run on)."""
        return parse_workers(self.workers)

    def to_json(self) -> str:
        """These settings as JSON (how the supervisor hands them to its workers)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values["config"] = [str(p) for p in self.config]
        return json.dumps(values)

    @classmethod
    def from_json(cls, text: str) -> Settings:
        values = json.loads(text)
        values["config"] = tuple(Path(p) for p in values["config"])
        return cls(**values)

    @property
    def console_enabled(self) -> bool:
        return self.console_store.strip().lower() != "off"

    @property
    def console_retention_seconds(self) -> float:
        return parse_duration(self.console_retention).total_seconds()

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Settings:
        """Settings from parsed flags; ``ValueError`` for a bad true/false environment value."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            if hasattr(args, f.name) and getattr(args, f.name) is not None:
                value = getattr(args, f.name)
                values[f.name] = _bool(value, f.name) if isinstance(f.default, bool) else value
        if "config" in values:
            urls = [c for c in values["config"] if is_k8s_url(str(c))]
            paths = [c for c in values["config"] if not is_k8s_url(str(c))]
            if urls and (paths or len(urls) > 1):
                raise ValueError(
                    "--config: a k8s:// URL is the only config source; it cannot be combined with files "
                    "or another URL (give namespaces as k8s://?namespaces=a,b)"
                )
            if urls:
                parse_url(str(urls[0]))  # a bad URL is reported before anything starts
                values["config_url"] = str(urls[0])
            values["config"] = tuple(Path(p) for p in paths)
        for name in _POSITIVE:
            if name in values and values[name] < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {values[name]}")
        if values.get("check_cache_entries", 0) < 0:
            raise ValueError(f"--check-cache-entries must be 0 or more, got {values['check_cache_entries']}")
        retention = values.get("console_retention")
        if retention is not None:
            try:
                if parse_duration(retention).total_seconds() < 0:
                    raise ValueError
            except ValueError:
                raise ValueError(
                    f"--console-retention: expected a duration such as 24h or 7d, got {retention!r}"
                ) from None
        if values.get("console_max_rows", 0) < 0:
            raise ValueError("--console-max-rows must be 0 (no bound) or more")
        order = values.get("console_transaction_headers")
        if order is not None:
            try:
                parse_order(order)
            except ValueError as exc:
                raise ValueError(f"--console-transaction-headers: {exc}") from None
        retry = values.get("k8s_missing_retry")
        if retry is not None and not retry > 0:
            raise ValueError(f"--k8s-missing-retry must be above 0 seconds, got {retry}")
        workers = values.get("workers")
        if workers is not None:
            parse_workers(workers)
        interval = values.get("tls_reload_interval")
        if interval is not None and not 0 < interval <= 3600:
            raise ValueError(
                f"--tls-reload-interval must be above 0 and at most 3600 seconds, got {interval}"
            )
        return cls(**values)


_POSITIVE = (
    "max_request_words",
    "max_attributes",
    "max_report_sets",
    "max_map_entries",
    "max_decoded_values",
)


_HELP = {
    "grpc_address": "gRPC API address (Mixer API, ext_authz, rate limit, access log) [default: %(default)s]",
    "monitoring_address": "monitoring HTTP address: /metrics /healthz /readyz /version /debug/* "
    "[default: %(default)s]",
    "prometheus_address": "address serving the prometheus adapter's /metrics, '' to disable "
    "[default: %(default)s]",
    "http_authz_address": "HTTP authorization endpoint for Envoy http_service / nginx auth_request, '' to disable "
    "[default: %(default)s]",
    "default_namespace": "config namespace whose rules apply to every namespace [default: %(default)s]",
    "check_deadline": "seconds a Check waits for its handlers [default: %(default)s]",
    "check_cache_entries": "Check answers kept for reuse by requests that agree on every attribute the answer "
    "read, while the handlers say they are valid; emptied by every config change; 0 disables "
    "[default: %(default)s]",
    "fail_closed": "deny a Check when a check or quota rule's match, or an instance it sends to a handler, "
    "cannot be evaluated (default: the rule does not apply, as in Mixer); a rule's annotation "
    'mixerd.io/fail-closed: "true"|"false" overrides it',
    "drain_timeout": "seconds a config change waits for in-flight requests before closing old handlers "
    "[default: %(default)s]",
    "config_debounce": "seconds to wait for a burst of config file changes to settle [default: %(default)s]",
    "config_resync": "seconds between full re-reads of the config files [default: %(default)s]",
    "k8s_write_status": "with --config k8s://: write each invalid resource's errors as a Kubernetes Event on "
    "it (kubectl describe shows them; needs the 'create' verb on events), once per object generation and "
    "problem",
    "k8s_missing_retry": "with --config k8s://: seconds between looks for a config kind whose CRD is not "
    "installed (it counts as empty meanwhile) [default: %(default)s]",
    "log_level": "debug, info, warning or error [default: %(default)s]",
    "http_authz_prefix": "path prefix to strip from HTTP authorization request lines (Envoy "
    "http_service.path_prefix)",
    "http_authz_extension_headers": "read X-Mixerd-Ext-<key> request headers as ext_authz context extensions "
    "(enable only behind a proxy that sets or clears them)",
    "http_authz_read_timeout": "seconds an HTTP authorization connection may take to send a complete request, "
    "from its opening or the previous answer; slow or idle connections are closed [default: %(default)s]",
    "http_authz_max_connections": "open HTTP authorization connections beyond this are closed as they arrive "
    "[default: %(default)s]",
    "ratelimit_shadow": "rate-limit service in shadow mode: decide, charge and count, but always answer OK",
    "ratelimit_shadow_domains": "comma-separated rate-limit domains in shadow mode",
    "ratelimit_failure_mode": "when a quota handler fails: 'allow' (answer OK, count the error) or 'error' "
    "(UNAVAILABLE; Envoy's failure_mode_deny decides) [default: %(default)s]",
    "accesslog_reporter_kinds": "access-log service: 'log_name=inbound|outbound,...' (default: from the "
    "Istio cluster name, else inbound)",
    "accesslog_queue_entries": "access-log entries queued before streams wait [default: %(default)s]",
    "accesslog_batch_entries": "access-log entries dispatched per batch [default: %(default)s]",
    "accesslog_enqueue_timeout": "seconds a stream waits for queue room before entries are dropped "
    "[default: %(default)s]",
    "debug_remote": "serve /debug/routes and /debug/config to clients that are not on loopback (they show "
    "the policy in force; default: loopback clients only)",
    "accesslog_drop": "which entries to drop when the queue stays full: oldest or newest [default: %(default)s]",
    "max_request_words": "Mixer API: most words in one request's dictionaries, all together; more is "
    "INVALID_ARGUMENT [default: %(default)s]",
    "max_attributes": "Mixer API: most attributes in one attribute set; more is INVALID_ARGUMENT "
    "[default: %(default)s]",
    "max_report_sets": "Mixer API: most attribute sets in one Report; more is INVALID_ARGUMENT "
    "[default: %(default)s]",
    "max_map_entries": "Mixer API: most entries in one string map attribute; more is INVALID_ARGUMENT "
    "[default: %(default)s]",
    "max_decoded_values": "Mixer API: most attributes plus string-map entries in one request; more is "
    "RESOURCE_EXHAUSTED [default: %(default)s]",
    "tls_cert": "PEM certificate chain: every listener serves TLS with it (default: plaintext). Files are "
    "re-read every --tls-reload-interval and a changed certificate is served without a restart",
    "tls_key": "PEM private key (unencrypted) of --tls-cert",
    "tls_client_ca": "PEM CA bundle: listeners require a client certificate signed by one of its CAs (mTLS); "
    "the certificate's spiffe:// URI SAN becomes the attribute mixerd.caller.principal",
    "console_store": "console store: sqlite:///PATH, postgresql://USER:PASSWORD@HOST:PORT/DB or off "
    "(default: SQLite under $XDG_STATE_HOME/mixerd, else ./mixerd-state)",
    "console_retention": "how long the console keeps records, e.g. 24h or 168h [default: %(default)s]",
    "console_max_rows": "most hops the console keeps (and as many decisions, spans, logs); 0 for no bound "
    "[default: %(default)s]",
    "console_address": "serve the console API on this address instead of the monitoring listener",
    "console_decisions": "record every policy decision in the console [default: %(default)s]",
    "console_remote": "serve the console API to clients that are not on loopback (it shows who called what; "
    "default: loopback clients only)",
    "console_transaction_headers": "request headers holding the transaction key, first present wins "
    "[default: %(default)s]",
    "workers": "worker processes serving the same gRPC and HTTP authorization ports (the kernel spreads "
    "connections among them), supervised by this process, which serves the monitoring and prometheus "
    "ports with every worker's metrics merged; 'auto': one per core; 1 serves in this process "
    "[default: %(default)s]",
    "tls_reload_interval": "seconds between checks of the TLS files for a new certificate [default: %(default)s]",
}

TLS_LISTENERS = {
    "grpc": "gRPC",
    "monitoring": "monitoring",
    "prometheus": "prometheus adapter",
    "http_authz": "HTTP authorization",
}
"""The listeners with TLS settings of their own (``<name>_tls_cert`` ...), and their titles."""
for _name, _title in TLS_LISTENERS.items():
    _HELP[f"{_name}_tls_cert"] = (
        f"--tls-cert for the {_title} listener only; '' serves it in plaintext (default: --tls-cert)"
    )
    _HELP[f"{_name}_tls_key"] = f"--tls-key for the {_title} listener only (default: --tls-key)"
    _HELP[f"{_name}_tls_client_ca"] = (
        f"--tls-client-ca for the {_title} listener only; '' asks no client certificate (default: --tls-client-ca)"
    )


def _env(name: str, environ: Mapping[str, str]) -> str | None:
    return environ.get("MIXERD_" + name.upper())


def add_arguments(parser: argparse.ArgumentParser, environ: Mapping[str, str] | None = None) -> None:
    """Add the server flags; each defaults to ``MIXERD_<NAME>`` from the environment."""
    env = os.environ if environ is None else environ
    defaults = Settings()
    cfg = _env("config", env)
    parser.add_argument(
        "--config",
        "-c",
        action="append",
        metavar="PATH",
        default=_config_env(cfg) if cfg else None,
        help="config file or directory (repeatable; watched for changes), or k8s:// to read the config "
        "from Kubernetes custom resources (k8s:///path/to/kubeconfig, k8s://?namespaces=a,b; see the "
        "README's 'Config from Kubernetes'). Without it mixerd serves its embedded default config. "
        "Env: MIXERD_CONFIG (paths separated by the path separator, or one k8s:// URL)",
    )
    for f in fields(Settings):
        if f.name in ("config", "config_url", "allow_slow_protobuf"):
            continue
        default = getattr(defaults, f.name)
        raw = _env(f.name, env)
        flag = "--" + f.name.replace("_", "-")
        help_text = _HELP.get(f.name, "") + f" Env: MIXERD_{f.name.upper()}"
        if isinstance(default, bool):
            # A bad environment value is reported when the command runs (Settings.from_args), not
            # while building the parser: it must not break commands that do not serve.
            parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=raw if raw else default, help=help_text
            )
            continue
        # A string default goes through ``type`` when the arguments are parsed, so a bad
        # environment value is reported like a bad flag (with the variable's name). A None
        # default is an optional text (not given: None).
        parser.add_argument(
            flag,
            metavar="FILE" if f.name.endswith(("tls_cert", "tls_key", "tls_client_ca")) else None,
            type=_typed(str if default is None else type(default), f"MIXERD_{f.name.upper()}"),
            default=raw if raw is not None else default,
            help=help_text,
        )
    raw = _env("allow_slow_protobuf", env)
    parser.add_argument(
        "--allow-slow-protobuf",
        action="store_true",
        default=raw if raw else False,
        help="start even if protobuf runs on its pure-Python backend (about 100x slower). "
        "Env: MIXERD_ALLOW_SLOW_PROTOBUF",
    )


def _config_env(value: str) -> list[str]:
    """``MIXERD_CONFIG``: one k8s:// URL (which has colons of its own), or paths joined by os.pathsep."""
    if is_k8s_url(value.strip()):
        return [value.strip()]
    return [p for p in value.split(os.pathsep) if p]


def _typed(typ: type, env_name: str) -> Any:
    def convert(text: str) -> Any:
        try:
            return typ(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"invalid {typ.__name__} value {text!r} (from the flag or {env_name})"
            ) from None

    return convert


def _bool(raw: Any, name: str) -> bool:
    if isinstance(raw, bool):
        return raw
    value = str(raw).strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"MIXERD_{name.upper()}: expected true or false, got {raw!r}")


def parse_workers(text: str) -> int:
    """``--workers``: a count of at least 1, or ``auto`` (the cores this process may use)."""
    value = str(text).strip().lower()
    if value == "auto":
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # not on Linux
            return max(1, os.cpu_count() or 1)
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"--workers: expected a number of processes (1 or more) or auto, got {text!r}")
    return int(value)


def parse_address(address: str) -> tuple[str, int]:
    """``host:port`` (or ``[v6]:port``) -> (host, port)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {address!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def is_loopback(remote: str | None) -> bool:
    """Whether a peer address is this machine's loopback (a Unix socket peer has none and is local)."""
    if not remote:
        return True
    try:
        addr = ipaddress.ip_address(remote.split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(addr, "ipv4_mapped", None)  # ::ffff:127.0.0.1 from a dual-stack listener
    return bool((mapped or addr).is_loopback)
