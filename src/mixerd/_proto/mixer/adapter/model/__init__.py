"""Generated modules of mixer/adapter/model (Istio's adapter model)."""
