"""Generated modules of mixer/template/quota (Istio's adapter model)."""
