"""Envoy's rate limit service (``envoy.service.ratelimit.v3.RateLimitService``) over Mixer quotas:
``convert`` (RateLimitRequest <-> quota allocations, pure) and ``service`` (the servicer).

The mapping users configure against is documented in :mod:`mixerd.api.ratelimit.convert`.
"""

from mixerd.api.ratelimit.convert import (
    Allocation,
    Decision,
    decide,
    decode_request,
    encode_response,
    limit_unit,
)

__all__ = ["Allocation", "Decision", "decide", "decode_request", "encode_response", "limit_unit"]
