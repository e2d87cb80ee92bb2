"""Generated modules of OTLP's resource.v1 (package mixerd.otlp.resource.v1)."""
