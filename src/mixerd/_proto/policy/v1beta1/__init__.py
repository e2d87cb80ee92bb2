"""Generated modules of policy/v1beta1 (Istio's adapter model)."""
