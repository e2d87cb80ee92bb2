"""Generated modules of OTLP's collector.logs (package mixerd.otlp.collector.logs)."""
