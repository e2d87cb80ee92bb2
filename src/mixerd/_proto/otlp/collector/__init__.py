"""Generated modules of OTLP's collector (package mixerd.otlp.collector)."""
