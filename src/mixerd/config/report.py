"""Text report of a snapshot's problems (what ``mixerd validate`` prints)."""

from __future__ import annotations

from collections import Counter

from mixerd.config.model import ATTRIBUTE_MANIFEST, ResourceError
from mixerd.config.snapshot import Snapshot

__all__ = ["format_report", "summary_line"]


def _n(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _line(label: str, problem: ResourceError, show_sources: bool) -> str:
    text = f"{label}: {problem}"
    if show_sources and problem.source is not None:
        text += f"  [{problem.source}]"
    return text


def summary_line(snapshot: Snapshot) -> str:
    """What is in effect and how many problems, on one line."""
    manifests = Counter(k.kind for k in snapshot.resources)[ATTRIBUTE_MANIFEST]
    security = ""
    if snapshot.security:
        kinds = Counter(k.kind for k in snapshot.security)
        security = (
            f", {_n(len(snapshot.security), 'security resource')} ("
            + ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items()))
            + ")"
        )
    return (
        f"in effect: {_n(manifests, 'attribute manifest')} ({_n(len(snapshot.manifest), 'attribute')}), "
        f"{_n(len(snapshot.instances), 'instance')}, {_n(len(snapshot.handlers), 'handler')}, "
        f"{_n(len(snapshot.rules), 'rule')}, {_n(len(snapshot.quota_specs), 'quota spec')}, "
        f"{_n(len(snapshot.quota_spec_bindings), 'quota spec binding')}{security}; "
        f"{_n(len(snapshot.errors), 'error')}, {_n(len(snapshot.warnings), 'warning')}, "
        f"{len(snapshot.ignored)} ignored"
    )


def format_report(
    snapshot: Snapshot, *, show_sources: bool = True, show_warnings: bool = True, show_ignored: bool = True
) -> str:
    """One line per error, warning and ignored document, then the summary line::

    error: rule/r.istio-system: spec.match: unknown attribute 'x'  [rules.yaml:2 (document 1)]
    """
    lines = [_line("error", e, show_sources) for e in snapshot.errors]
    if show_warnings:
        lines += [_line("warning", w, show_sources) for w in snapshot.warnings]
    if show_ignored:
        for ig in snapshot.ignored:
            text = f"ignored: {ig}"
            if show_sources and ig.source is not None:
                text += f"  [{ig.source}]"
            lines.append(text)
    lines.append(summary_line(snapshot))
    return "\n".join(lines) + "\n"
