"""Generated modules of OTLP's trace (package mixerd.otlp.trace)."""
