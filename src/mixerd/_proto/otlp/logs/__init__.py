"""Generated modules of OTLP's logs (package mixerd.otlp.logs)."""
