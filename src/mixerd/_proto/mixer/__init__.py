"""Generated modules of Mixer's API (package istio.mixer)."""
