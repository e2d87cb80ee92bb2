"""Generated modules of OTLP's trace.v1 (package mixerd.otlp.trace.v1)."""
