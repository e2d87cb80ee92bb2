"""Generated modules of OTLP's common.v1 (package mixerd.otlp.common.v1)."""
