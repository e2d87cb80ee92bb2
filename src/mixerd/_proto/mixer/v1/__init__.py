"""Generated modules of Mixer's v1 API (package istio.mixer.v1)."""
