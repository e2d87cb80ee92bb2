"""The ``k8s://`` config URL and the connection config it stands for.

URL forms (Mixer's ``--configStoreURL=k8s://`` and extensions):

``k8s://``
    every namespace; the connection from ``$KUBECONFIG`` (its first file), else the pod's service
    account (``KUBERNETES_SERVICE_HOST``/``_PORT`` and
    ``/var/run/secrets/kubernetes.io/serviceaccount/{token,ca.crt}``), else ``~/.kube/config``.
``k8s:///path/to/kubeconfig``
    that kubeconfig file (Mixer's form; ``k8s://?kubeconfig=PATH`` says the same).
``?namespaces=a,b``
    only these namespaces (cluster-scoped kinds are read whole).
``?context=NAME``
    a kubeconfig context other than its current one.

:func:`parse_url` is pure (it reads nothing); :func:`connection` reads the files.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import parse_qs, unquote, urlsplit

from mixerd.config.k8s.api import (
    SERVICE_ACCOUNT_DIR,
    ClusterConfig,
    KubeConfigError,
    in_cluster_config,
    load_kubeconfig,
)

__all__ = ["KubeTarget", "connection", "is_k8s_url", "parse_url"]

SCHEME: Final = "k8s:"
_PARAMS: Final = ("namespaces", "kubeconfig", "context")
_NAMESPACE_RE: Final = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def is_k8s_url(text: str) -> bool:
    """Whether a ``--config`` value names a Kubernetes cluster rather than a file."""
    return text.lower().startswith(SCHEME)


@dataclass(frozen=True, slots=True)
class KubeTarget:
    """What a ``k8s://`` URL asks for."""

    url: str
    kubeconfig: str = ""
    """A kubeconfig file; empty: ``$KUBECONFIG``, the service account, or ``~/.kube/config``."""
    context: str = ""
    namespaces: tuple[str, ...] = ()
    """Only these namespaces; empty: all."""


def parse_url(text: str) -> KubeTarget:
    """Parse a ``k8s://`` URL; ``ValueError`` says what is wrong and what to write instead."""
    if not is_k8s_url(text):
        raise ValueError(f"{text!r} is not a k8s:// URL")
    parts = urlsplit(text)
    if not text[len(SCHEME) :].startswith("//"):
        raise ValueError(f"{text!r}: expected k8s://, k8s:///path/to/kubeconfig or k8s://?namespaces=a,b")
    if parts.netloc:
        raise ValueError(
            f"{text!r}: a host in a k8s:// URL is not supported; the API server comes from the kubeconfig "
            "or the in-cluster service account (write k8s:///path/to/kubeconfig for a kubeconfig file)"
        )
    if parts.fragment:
        raise ValueError(f"{text!r}: a k8s:// URL has no #fragment")
    try:
        query = parse_qs(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError as exc:
        raise ValueError(f"{text!r}: bad query string: {exc}") from None
    for name, values in query.items():
        if name not in _PARAMS:
            raise ValueError(f"{text!r}: unknown parameter '{name}' (expected {', '.join(_PARAMS)})")
        if len(values) > 1:
            raise ValueError(f"{text!r}: parameter '{name}' given more than once")
    kubeconfig = unquote(parts.path) if parts.path not in ("", "/") else ""
    if "kubeconfig" in query:
        if kubeconfig:
            raise ValueError(
                f"{text!r}: give the kubeconfig either as the URL path or as ?kubeconfig=, not both"
            )
        kubeconfig = query["kubeconfig"][0]
        if not kubeconfig:
            raise ValueError(f"{text!r}: ?kubeconfig= needs a path")
    namespaces: tuple[str, ...] = ()
    if "namespaces" in query:
        names = [n.strip() for n in query["namespaces"][0].split(",")]
        bad = [n for n in names if not _NAMESPACE_RE.match(n)]
        if bad or not names:
            raise ValueError(
                f"{text!r}: namespaces: {', '.join(repr(b) for b in bad) or 'empty'} is not a namespace name "
                "(lower-case letters, digits and '-'); write ?namespaces=a,b"
            )
        namespaces = tuple(dict.fromkeys(names))
    context = query.get("context", [""])[0]
    if "context" in query and not context:
        raise ValueError(f"{text!r}: ?context= needs a context name")
    return KubeTarget(text, kubeconfig, context, namespaces)


def connection(
    target: KubeTarget,
    environ: Mapping[str, str] | None = None,
    sa_dir: Path = SERVICE_ACCOUNT_DIR,
    home: Path | None = None,
) -> ClusterConfig:
    """The connection config ``target`` stands for (reads the kubeconfig or service-account files).

    :class:`~mixerd.config.k8s.api.KubeConfigError` (a ``ValueError``) when there is none or it
    cannot be used: mixerd always verifies the API server's certificate, so a kubeconfig with
    ``insecure-skip-tls-verify`` is refused, and plain ``http://`` only reaches a loopback address
    (``kubectl proxy``).
    """
    environ = os.environ if environ is None else environ
    context = target.context or None
    if target.kubeconfig:
        config = load_kubeconfig(target.kubeconfig, context)
    else:
        env_paths = [p for p in environ.get("KUBECONFIG", "").split(os.pathsep) if p]
        default = (home if home is not None else Path.home()) / ".kube" / "config"
        if env_paths:
            config = load_kubeconfig(env_paths[0], context)
        elif environ.get("KUBERNETES_SERVICE_HOST") and not context:
            config = in_cluster_config(environ, sa_dir)
        elif default.is_file():
            config = load_kubeconfig(default, context)
        else:
            raise KubeConfigError(
                f"{target.url}: no kubeconfig ($KUBECONFIG is not set, {default} does not exist) and not "
                "running in a cluster (KUBERNETES_SERVICE_HOST is not set); write k8s:///path/to/kubeconfig"
            )
    if not config.verify:
        raise KubeConfigError(
            f"{config.source}: insecure-skip-tls-verify is set, but mixerd always verifies the API server's "
            "certificate; give the cluster's certificate-authority or certificate-authority-data instead"
        )
    if config.server.startswith("http://") and not _loopback(config.server):
        raise KubeConfigError(
            f"{config.source}: server {config.server} is plain http on a non-loopback address; use https "
            "(plain http is accepted only for a local kubectl proxy)"
        )
    return config


def _loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
