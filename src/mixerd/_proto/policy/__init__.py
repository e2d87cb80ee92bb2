"""Generated modules of Istio's policy API (package istio.policy)."""
