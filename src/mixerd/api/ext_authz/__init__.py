"""Envoy external authorization front-ends: ext_authz over gRPC (``service``), and one HTTP
forward-auth endpoint for Envoy's ``http_service``, nginx ``auth_request`` and Traefik
ForwardAuth (``http``), both thin wire layers over one ``authorize`` path (quotas, dispatch,
decision, metrics). The pure parts: ``request`` (requests -> attributes), ``quotas`` (what a
Check charges: the config's quota plan merged with ``mixerd.quotas``) and ``verdict`` (decisions
-> answers); their docstrings document the mappings.
"""

from mixerd.api.ext_authz.authorize import Authorizer
from mixerd.api.ext_authz.http import HttpAuthzOptions, HttpAuthzServer, build_http_authz_server
from mixerd.api.ext_authz.request import BadRequest
from mixerd.api.ext_authz.service import ExtAuthzService
from mixerd.api.ext_authz.verdict import HTTP_STATUS, Verdict, decide

__all__ = [
    "HTTP_STATUS",
    "Authorizer",
    "BadRequest",
    "ExtAuthzService",
    "HttpAuthzOptions",
    "HttpAuthzServer",
    "Verdict",
    "build_http_authz_server",
    "decide",
]
