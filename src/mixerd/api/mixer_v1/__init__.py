"""Istio Mixer's gRPC API (``istio.mixer.v1.Mixer``): ``convert`` (wire <-> bags, pure) and
``service`` (the servicer)."""
