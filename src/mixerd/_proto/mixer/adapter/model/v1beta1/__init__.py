"""Generated modules of mixer/adapter/model/v1beta1 (Istio's adapter model)."""
