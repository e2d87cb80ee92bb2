"""Generated modules of OTLP's collector.trace.v1 (package mixerd.otlp.collector.trace.v1)."""
