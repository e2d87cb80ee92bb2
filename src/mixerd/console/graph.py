"""The service graph, in Kiali's shape, from the stored per-edge rollups (no Prometheus needed).

``GET /api/v1/graph`` answers :func:`graph`::

    {"graphType": "workload", "duration": 60.0,
     "elements": {
       "nodes": [{"data": {"id", "nodeType", "namespace", "workload", "app", "version", "service"}}],
       "edges": [{"data": {"id", "source", "target",
                           "traffic": {"protocol",
                                       "rates": {"http", "httpPercentErr", "httpDenied"},
                                       "responses": {"200": 118, "503": 2}},
                           "responseTime"}}]}}

**Nodes.** Ids follow Kiali's (without its cluster part): ``wl_<ns>_<workload>`` (``nodeType``
``workload``), ``app_<ns>_<app>`` and ``vapp_<ns>_<app>_<version>`` (both ``app``),
``svc_<ns>_<service>`` (``service``), and one ``unknown`` node (``unknown``, every field
``unknown``) for callers outside the mesh. Fields a node does not aggregate over are empty (an app
node has no workload). Per graph type:

- ``workload``: a workload node per workload;
- ``app``: an app node per app; a workload without an ``app`` label stays a workload node;
- ``versionedApp``: an app node per app and version; without a version, the app node; without an
  app, the workload node;
- ``service``: a service node per destination service. The traffic a workload sends leaves from the
  service that workload is called through (the one that brought it the most requests in the
  rollups); a workload nobody calls (an ingress gateway, a job) stays a workload node.

A destination whose workload is unknown (the call left the mesh) is its service's node, or the
``unknown`` node when the service is unknown too. A service node's ``service`` is the short name of
the destination host (``reviews`` for ``reviews.shop.svc.cluster.local``; other hosts as they are)
and its namespace the destination's, else the host's.

**Edges**, one per source and target node, id ``<source id>-><target id>``. A call reported by both
proxies counts once: for each workload edge (source and destination namespace and workload) the
rollups of one reporter only, ``source`` when the caller's proxy reported any, else
``destination`` (callers outside the mesh, or whose proxy does not report), else the rest.
Denials are the exception: the proxy that refused a call flags it (``UAEX``, ``RL``) and the
other one only sees the 403 or 429 (with Istio the callee's proxy asks for the decision), so a
workload edge's denials are those of the reporter that flagged the most.

**Traffic.** Numbers, not Kiali's strings, and not rounded (format them for display):
``rates.http`` requests per second over ``duration_s``, ``rates.httpDenied`` denied requests (by
policy: ``UAEX``/``RL``) per second, ``rates.httpPercentErr`` the percentage (0..100) of requests
that failed (5xx or no answer: the console's error, not Kiali's 4xx-and-5xx). ``responses``: the
number of requests per response code over the duration (``"0"``: no answer). ``protocol``: the
edge's most used protocol as reported (``http``, ``grpc``, ``tcp`` ...); every request counts in
``rates.http`` whatever its protocol. ``responseTime``: the p95 latency in milliseconds,
interpolated in Istio's buckets as Prometheus's ``histogram_quantile`` does, null when no
durations were recorded.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from mixerd.console import stats
from mixerd.console.model import Peer, Reporter
from mixerd.console.store.base import EdgeRollup

__all__ = ["GRAPH_TYPES", "UNKNOWN_NODE", "GraphType", "graph", "service_name"]

GraphType = Literal["workload", "app", "versionedApp", "service"]
GRAPH_TYPES: tuple[str, ...] = get_args(GraphType)

UNKNOWN_NODE = "unknown"

Json = dict[str, Any]

_UNKNOWN = ("", "unknown")
_NODE_FIELDS = ("namespace", "workload", "app", "version", "service")
_REPORTER_RANK = {Reporter.SOURCE.value: 0, Reporter.DESTINATION.value: 1}


@dataclass(slots=True)
class _Traffic:
    """Rollups added up: of one graph edge."""

    count: int = 0
    errors: int = 0
    denied: int = 0
    codes: Counter[int] = field(default_factory=Counter)
    protocols: Counter[str] = field(default_factory=Counter)
    histograms: list[Sequence[int]] = field(default_factory=list)


class _Group:
    """Rollups of one reporter, source, destination, protocol and response code (every time
    bucket) added up; what follows runs per group, not per rollup."""

    __slots__ = (
        "count",
        "denied",
        "destination",
        "errors",
        "histograms",
        "protocol",
        "reporter",
        "response_code",
        "source",
    )

    def __init__(self, r: EdgeRollup) -> None:
        self.reporter, self.source, self.destination = r.reporter, r.source, r.destination
        self.protocol, self.response_code = r.protocol, r.response_code
        self.count = self.errors = self.denied = 0
        self.histograms: list[Sequence[int]] = []


def graph(rollups: Iterable[EdgeRollup], graph_type: str, duration_s: float) -> Json:
    """The graph of ``rollups`` (those of the chosen namespaces and window, as the store gives
    them) as ``graph_type`` (one of :data:`GRAPH_TYPES`), rates over ``duration_s`` seconds.
    :class:`ValueError` for an unknown graph type or a duration that is not positive."""
    if graph_type not in GRAPH_TYPES:
        raise ValueError(f"unknown graph type {graph_type!r} (known: {', '.join(GRAPH_TYPES)})")
    if not duration_s > 0:
        raise ValueError(f"graph duration must be positive, got {duration_s!r}")

    groups: dict[tuple[object, ...], _Group] = {}
    for r in rollups:
        src, dst = r.source, r.destination
        key = (
            r.reporter,
            r.protocol,
            r.response_code,
            src.namespace,
            src.workload,
            src.app,
            src.version,
            dst.namespace,
            dst.workload,
            dst.app,
            dst.version,
            dst.service,
        )
        group = groups.get(key)
        if group is None:
            group = groups[key] = _Group(r)
        group.count += r.count
        group.errors += r.errors
        group.denied += r.denied
        if r.histogram:
            group.histograms.append(r.histogram)
    ordered = [groups[k] for k in sorted(groups, key=str)]

    # One reporter per workload edge, so a call both proxies reported counts once.
    best: dict[tuple[tuple[str, str], tuple[str, str]], int] = {}
    for g in ordered:
        edge_key = (_ident(g.source), _ident(g.destination))
        rank = _REPORTER_RANK.get(g.reporter, 2)
        if rank < best.get(edge_key, 3):
            best[edge_key] = rank

    entry = _entry_services(ordered) if graph_type == "service" else {}
    nodes: dict[str, dict[str, str]] = {}
    edges: dict[tuple[str, str], _Traffic] = defaultdict(_Traffic)
    for g in ordered:
        if _REPORTER_RANK.get(g.reporter, 2) != best[_ident(g.source), _ident(g.destination)]:
            continue
        source = _source_node(g.source, graph_type, entry)
        target = _destination_node(g.destination, graph_type)
        _add_node(nodes, source)
        _add_node(nodes, target)
        edge = edges[source["id"], target["id"]]
        edge.count += g.count
        edge.errors += g.errors
        edge.codes[g.response_code] += g.count
        edge.protocols[g.protocol] += g.count
        edge.histograms.extend(g.histograms)

    # Denials from the reporter that flagged the most of them, per workload edge: the proxy that
    # refused a call marks it (UAEX, RL), the other one only sees the 403 or 429.
    denials: dict[tuple[str, str], dict[tuple[object, ...], Counter[int]]] = defaultdict(
        lambda: defaultdict(Counter)
    )
    for g in ordered:
        if g.denied:
            source = _source_node(g.source, graph_type, entry)
            target = _destination_node(g.destination, graph_type)
            rank = _REPORTER_RANK.get(g.reporter, 2)
            denials[source["id"], target["id"]][_ident(g.source), _ident(g.destination)][rank] += g.denied
    for edge_id, by_workload_edge in denials.items():
        if edge_id in edges:
            edges[edge_id].denied = sum(max(ranks.values()) for ranks in by_workload_edge.values())

    return {
        "graphType": graph_type,
        "duration": float(duration_s),
        "elements": {
            "nodes": [{"data": nodes[k]} for k in sorted(nodes)],
            "edges": [_edge_json(s, t, edges[s, t], duration_s) for s, t in sorted(edges)],
        },
    }


def service_name(host: str, namespace: str = "") -> str:
    """The short name of a destination service host: ``reviews`` for
    ``reviews.shop.svc.cluster.local`` (or ``reviews.shop``, with ``namespace`` ``shop``); any other
    host as it is."""
    parts = host.split(".")
    if len(parts) >= 3 and parts[2] == "svc":
        return parts[0]
    if len(parts) == 2 and namespace and parts[1] == namespace:
        return parts[0]
    return host


def _known(value: str) -> bool:
    return value not in _UNKNOWN


def _ident(peer: Peer) -> tuple[str, str]:
    return (
        peer.namespace if _known(peer.namespace) else "",
        peer.workload if _known(peer.workload) else "",
    )


def _ns(peer: Peer) -> str:
    return peer.namespace if _known(peer.namespace) else UNKNOWN_NODE


def _node(id_: str, node_type: str, **values: str) -> dict[str, str]:
    data = {"id": id_, "nodeType": node_type}
    data.update({f: values.get(f, "") for f in _NODE_FIELDS})
    return data


def _unknown() -> dict[str, str]:
    return _node(UNKNOWN_NODE, "unknown", **dict.fromkeys(_NODE_FIELDS, UNKNOWN_NODE))


def _workload_node(peer: Peer) -> dict[str, str]:
    ns = _ns(peer)
    app = peer.app if _known(peer.app) else ""
    version = peer.version if _known(peer.version) else ""
    return _node(
        f"wl_{ns}_{peer.workload}", "workload", namespace=ns, workload=peer.workload, app=app, version=version
    )


def _service_node(peer: Peer) -> dict[str, str]:
    host = peer.service
    ns = _ns(peer)
    if ns == UNKNOWN_NODE:
        parts = host.split(".")
        if len(parts) >= 3 and parts[2] == "svc":
            ns = parts[1]
    name = service_name(host, ns)
    return _node(f"svc_{ns}_{name}", "service", namespace=ns, service=name)


def _app_or_workload_node(peer: Peer, graph_type: str) -> dict[str, str]:
    ns = _ns(peer)
    if graph_type in ("app", "versionedApp") and _known(peer.app):
        if graph_type == "versionedApp" and _known(peer.version):
            return _node(
                f"vapp_{ns}_{peer.app}_{peer.version}",
                "app",
                namespace=ns,
                app=peer.app,
                version=peer.version,
            )
        return _node(f"app_{ns}_{peer.app}", "app", namespace=ns, app=peer.app)
    return _workload_node(peer)


def _destination_node(peer: Peer, graph_type: str) -> dict[str, str]:
    if graph_type == "service" and _known(peer.service):
        return _service_node(peer)
    if _known(peer.workload):
        return _app_or_workload_node(peer, graph_type)
    if _known(peer.service):
        return _service_node(peer)
    return _unknown()


def _source_node(peer: Peer, graph_type: str, entry: dict[tuple[str, str], Peer]) -> dict[str, str]:
    if not _known(peer.workload):
        return _unknown()
    if graph_type == "service":
        service = entry.get(_ident(peer))
        return _service_node(service) if service is not None else _workload_node(peer)
    return _app_or_workload_node(peer, graph_type)


def _entry_services(groups: Iterable[_Group]) -> dict[tuple[str, str], Peer]:
    """For each destination workload, the service that brought it the most requests."""
    counts: dict[tuple[str, str], Counter[tuple[str, str]]] = defaultdict(Counter)
    for g in groups:
        dst = g.destination
        if _known(dst.workload) and _known(dst.service):
            counts[_ident(dst)][dst.namespace, dst.service] += g.count
    entry = {}
    for workload, services in counts.items():
        (namespace, host), _ = min(services.items(), key=lambda item: (-item[1], item[0]))
        entry[workload] = Peer(namespace=namespace, service=host)
    return entry


def _add_node(nodes: dict[str, dict[str, str]], node: dict[str, str]) -> None:
    """Add ``node``, completing an existing one of the same id: an empty field takes the new value;
    of two different values, the smaller stays (the answer must not depend on the rollups' order)."""
    have = nodes.get(node["id"])
    if have is None:
        nodes[node["id"]] = node
        return
    for f in _NODE_FIELDS:
        if node[f] and (not have[f] or node[f] < have[f]):
            have[f] = node[f]


def _edge_json(source: str, target: str, edge: _Traffic, duration_s: float) -> Json:
    protocol = min(edge.protocols.items(), key=lambda item: (-item[1], item[0]))[0]
    p95 = stats.quantile(0.95, [sum(column) for column in zip(*edge.histograms, strict=True)])
    response_time = None if p95 is None else float(p95)
    return {
        "data": {
            "id": f"{source}->{target}",
            "source": source,
            "target": target,
            "traffic": {
                "protocol": protocol,
                "rates": {
                    "http": edge.count / duration_s,
                    "httpPercentErr": 100 * edge.errors / edge.count if edge.count else 0.0,
                    "httpDenied": edge.denied / duration_s,
                },
                "responses": {str(code): n for code, n in sorted(edge.codes.items())},
            },
            "responseTime": response_time,
        }
    }
