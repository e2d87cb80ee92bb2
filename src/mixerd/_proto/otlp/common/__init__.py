"""Generated modules of OTLP's common (package mixerd.otlp.common)."""
