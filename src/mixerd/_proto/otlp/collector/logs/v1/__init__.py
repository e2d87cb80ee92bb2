"""Generated modules of OTLP's collector.logs.v1 (package mixerd.otlp.collector.logs.v1)."""
