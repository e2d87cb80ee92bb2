"""Generated modules of mixer/template/listentry (Istio's adapter model)."""
