"""What every Envoy front-end shares: the Envoy -> Istio attribute mapping (:mod:`.attributes`)."""
