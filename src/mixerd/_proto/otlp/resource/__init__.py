"""Generated modules of OTLP's resource (package mixerd.otlp.resource)."""
