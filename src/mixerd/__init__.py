"""mixerd: a policy and telemetry hub for service meshes.

Istio Mixer's configuration model, expression language and gRPC API, rebuilt in Python,
and driven by today's Envoy APIs (ext_authz, rate limit service, access-log service).
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
