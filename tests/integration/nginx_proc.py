"""Run a real nginx (Debian's ``/usr/sbin/nginx``, built with the auth_request module) on loopback.

:func:`auth_request_config` is the config mixerd's tests and benchmark use: ``location /`` asks
mixerd (``auth_request /_mixerd``) and passes the injected ``x-user-id`` to the upstream;
``location = /_mixerd`` proxies the subrequest to mixerd's HTTP endpoint with the original method
and URI. :func:`start_nginx` runs it in the foreground in a temporary directory (its own prefix,
pid file and logs) and waits until it accepts connections.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support.net import port_open
from tests.support.proc import stop_process

__all__ = ["NginxProcess", "auth_request_config", "nginx_binary", "start_nginx"]

INSTALL_HINT = (
    "nginx with the auth_request module is required for this test: `apt-get install nginx` "
    "(Debian's build includes --with-http_auth_request_module), or run `make system-deps`."
)


def nginx_binary() -> str:
    for candidate in ("/usr/sbin/nginx", shutil.which("nginx")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise AssertionError(INSTALL_HINT)


def auth_request_config(
    *, listen_port: int, mixerd_port: int, upstream_port: int, auth_target: str = "mixerd", workers: int = 1
) -> str:
    """nginx.conf text. ``auth_target="mixerd"`` asks mixerd; ``"static"`` answers every
    subrequest with ``204`` from nginx itself (the benchmark's baseline)."""
    if auth_target == "mixerd":
        auth_location = """
        location = /_mixerd {
            internal;
            proxy_pass http://mixerd;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Original-URI $request_uri;
            proxy_set_header X-Original-Method $request_method;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Forwarded-Host $host;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }"""
    elif auth_target == "static":
        auth_location = """
        location = /_mixerd {
            internal;
            return 204;
        }"""
    else:
        raise ValueError(f"auth_target must be 'mixerd' or 'static', not {auth_target!r}")
    return f"""
worker_processes {workers};
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path tmp/body;
    proxy_temp_path tmp/proxy;
    fastcgi_temp_path tmp/fastcgi;
    uwsgi_temp_path tmp/uwsgi;
    scgi_temp_path tmp/scgi;
    upstream mixerd {{ server 127.0.0.1:{mixerd_port}; keepalive 64; }}
    upstream app {{ server 127.0.0.1:{upstream_port}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{listen_port};
        location / {{
            auth_request /_mixerd;
            auth_request_set $mixerd_user $upstream_http_x_user_id;
            proxy_set_header X-User-Id $mixerd_user;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass http://app;
        }}
        {auth_location}
    }}
}}
"""


@dataclass
class NginxProcess:
    proc: subprocess.Popen[bytes]
    port: int
    prefix: Path

    def log(self) -> str:
        path = self.prefix / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        stop_process(self.proc, sig=signal.SIGQUIT)  # graceful: finish requests, then exit


def start_nginx(prefix: Path, config_text: str, port: int, *, timeout: float = 10.0) -> NginxProcess:
    """Run nginx in the foreground with ``prefix`` as its prefix directory."""
    binary = nginx_binary()
    prefix.mkdir(parents=True, exist_ok=True)
    (prefix / "tmp").mkdir(exist_ok=True)
    # Workers run as an unprivileged user when the master runs as root: let them into the prefix.
    for p in (prefix, prefix / "tmp"):
        p.chmod(0o755)
    (prefix / "nginx.conf").write_text(config_text)
    error_log = prefix / "error.log"
    cmd = [
        binary,
        "-p",
        str(prefix),
        "-c",
        str(prefix / "nginx.conf"),
        "-e",
        str(error_log),
        "-g",
        f"daemon off; pid {prefix / 'nginx.pid'}; error_log {error_log} warn;",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, cwd=prefix)
    np = NginxProcess(proc, port, prefix)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"nginx exited with {proc.returncode}:\n{np.log()[-4000:]}")
        if port_open(port):
            return np
        time.sleep(0.05)
    np.stop()
    raise AssertionError(f"nginx did not listen on {port} within {timeout}s:\n{np.log()[-4000:]}")
