"""Generated modules of OTLP's collector.trace (package mixerd.otlp.collector.trace)."""
