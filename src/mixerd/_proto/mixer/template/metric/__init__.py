"""Generated modules of mixer/template/metric (Istio's adapter model)."""
