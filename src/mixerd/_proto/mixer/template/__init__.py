"""Generated modules of mixer/template (Istio's adapter model)."""
