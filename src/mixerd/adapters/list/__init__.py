"""The ``list`` adapter (Mixer's ``listchecker``): white and black lists for the listentry template.

Registered twice with the same builder: as ``list`` and as ``listchecker``, the name Mixer configs
use (``compiledAdapter: listchecker``, legacy ``kind: listchecker``). A handler checks each
listentry ``value`` (a string, or an IP address) against a list made of ``overrides`` plus, when
``providerUrl`` is set, a list fetched every ``refreshInterval``.

Example (a blacklist of CIDR ranges fetched from a URL)::

    apiVersion: config.istio.io/v1alpha2
    kind: handler
    metadata: {name: badips, namespace: istio-system}
    spec:
      compiledAdapter: listchecker
      params:
        providerUrl: https://lists.example.com/bad-ips.yaml   # whitelist: [10.0.0.0/8, ...]
        refreshInterval: 60s
        ttl: 300s
        entryType: IP_ADDRESSES
        blacklist: true
        overrides: ["192.0.2.1"]

Params: :mod:`mixerd.adapters.list.config`; list formats and matching:
:mod:`mixerd.adapters.list.matcher`; fetching, refresh and expiry: :mod:`mixerd.adapters.list.handler`.
"""

from mixerd.adapter import Info
from mixerd.adapters.list.config import DEFAULT_CONFIG, ListParams
from mixerd.adapters.list.handler import ListBuilder, ListHandler, ListUnavailableError
from mixerd.adapters.list.matcher import EntryType

__all__ = [
    "INFO",
    "LISTCHECKER_INFO",
    "EntryType",
    "ListBuilder",
    "ListHandler",
    "ListParams",
    "ListUnavailableError",
]

_DESCRIPTION = "Checks whether a value is in a white or black list (strings, IP ranges or regexes)."

INFO = Info(
    name="list",
    description=_DESCRIPTION,
    templates=("listentry",),
    builder=ListBuilder,
    default_config=DEFAULT_CONFIG,
)
"""The adapter under its mixerd name, ``list``."""

LISTCHECKER_INFO = Info(
    name="listchecker",
    description=_DESCRIPTION,
    templates=("listentry",),
    builder=ListBuilder,
    default_config=DEFAULT_CONFIG,
)
"""The same adapter under Mixer's name, ``listchecker``."""
