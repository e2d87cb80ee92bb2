"""Envoy external authorization front-ends: ext_authz over gRPC (``service``), and one HTTP
forward-auth endpoint for Envoy's ``http_service``, nginx ``auth_request`` and Traefik
ForwardAuth (``http``). ``convert`` holds the pure mappings between those requests and mixerd's
attributes and decisions; its docstring documents them.
"""

from mixerd.api.ext_authz.convert import HTTP_STATUS, BadRequest, QuotaPlan, Verdict, decide
from mixerd.api.ext_authz.http import HttpAuthzOptions, build_http_authz_app, build_http_authz_server
from mixerd.api.ext_authz.service import ExtAuthzService

__all__ = [
    "HTTP_STATUS",
    "BadRequest",
    "ExtAuthzService",
    "HttpAuthzOptions",
    "QuotaPlan",
    "Verdict",
    "build_http_authz_app",
    "build_http_authz_server",
    "decide",
]
