"""Generated modules of OTLP's logs.v1 (package mixerd.otlp.logs.v1)."""
