"""Generated modules of mixer/adapter (Istio's adapter model)."""
