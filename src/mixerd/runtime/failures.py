"""Requests that could not be answered: what the caller is told, and the log line with the rest.

A Check or Quota that cannot be answered (a handler raised, answered nonsense or missed its
deadline; an instance could not be built; an attribute generator failed) raises
:class:`DispatchError` inside the runtime. Its text (``str(exc)``) is for mixerd's log only: it
carries adapters' exception messages, which can name hosts, paths, credentials and attribute
values. Every front-end answers the caller through :func:`failure_answer`: a fixed phrase and a
request id (``handler failure (request id 7f3a09c2e1b4d5a6)``), while one log line carries the
same id, the front-end, the handler and the detail (escaped with
:func:`~mixerd.attribute.logsafe`).

Request ids are 16 hex digits from ``os.urandom``, made only when something failed (nothing is
spent on requests that succeed). The request's own ``x-request-id`` (attribute ``request.id``) is
not used as the id: whoever sends the request chooses it, so a client could give its failures
the id of someone else's request. When a request has one, it is logged next to mixerd's id, so
the line can be found from either.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any, Final

from mixerd.adapter import Code
from mixerd.attribute import logsafe

__all__ = [
    "ATTRIBUTE_GENERATION_FAILURE",
    "HANDLER_DEADLINE",
    "HANDLER_FAILURE",
    "INSTANCE_FAILURE",
    "DispatchError",
    "failure_answer",
    "log_failure",
    "new_request_id",
]

_log = logging.getLogger(__name__)

HANDLER_FAILURE: Final = "handler failure"
HANDLER_DEADLINE: Final = "handler deadline exceeded"
INSTANCE_FAILURE: Final = "instance evaluation failure"
ATTRIBUTE_GENERATION_FAILURE: Final = "attribute generation failure"

_DETAIL_LIMIT: Final = 1000
_REQUEST_ID_LIMIT: Final = 128


class DispatchError(Exception):
    """The request could not be processed (a handler failed, an instance could not be built).

    ``str()`` is the detail, for logs only. ``public`` is one of the fixed phrases of this
    module, safe to show a caller; ``handler`` names the handler involved (``""`` if none).
    """

    def __init__(
        self, message: str, code: int = Code.INTERNAL, *, handler: str = "", public: str = HANDLER_FAILURE
    ) -> None:
        super().__init__(message)
        self.code = code
        self.handler = handler
        self.public = public


def new_request_id() -> str:
    """A fresh id for a failed request: 16 hex digits."""
    return os.urandom(8).hex()


def log_failure(
    api: str,
    method: str,
    detail: str,
    *,
    public: str = HANDLER_FAILURE,
    handler: str = "",
    attributes: Mapping[str, Any] | None = None,
) -> str:
    """Log one failed ``api`` ``method`` call under a new request id; return what the caller is
    told: ``<public> (request id <id>)``. ``detail`` may quote anything (it is escaped);
    ``attributes`` are the request's, for its ``request.id``."""
    rid = new_request_id()
    where = [f"request id {rid}"]
    if handler:
        where.append(f"handler {handler}")
    sent = _sent_request_id(attributes)
    if sent:
        where.append(f"x-request-id {logsafe(sent, _REQUEST_ID_LIMIT)}")
    _log.error("%s %s failed (%s): %s", api, method, ", ".join(where), logsafe(detail, _DETAIL_LIMIT))
    return f"{public} (request id {rid})"


def failure_answer(
    exc: DispatchError, *, api: str, method: str, attributes: Mapping[str, Any] | None = None
) -> str:
    """:func:`log_failure` for a :class:`DispatchError`: the caller's message."""
    return log_failure(api, method, str(exc), public=exc.public, handler=exc.handler, attributes=attributes)


def _sent_request_id(attributes: Mapping[str, Any] | None) -> str:
    if attributes is None:
        return ""
    try:
        rid = attributes.get("request.id")
    except Exception:  # a lazy wire bag may fail to convert; the id is only a courtesy
        return ""
    return rid if isinstance(rid, str) else ""
