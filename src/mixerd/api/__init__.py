"""The wire front-ends of mixerd: conversions between API messages and mixerd's values.

Each API version lives in its own subpackage (``mixerd.api.mixer_v1`` for Istio Mixer's
``istio.mixer.v1`` gRPC API). This layer is pure: the servers that use it live in
``mixerd.server``.
"""
