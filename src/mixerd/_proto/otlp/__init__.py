"""Generated modules of the OpenTelemetry protocol (OTLP), proto package renamed mixerd.otlp."""
