"""Process wiring: settings, the gRPC and HTTP servers, signals, shutdown."""

from mixerd.server.app import Server, default_config_text, protobuf_backend
from mixerd.server.settings import Settings, add_arguments, parse_address

__all__ = ["Server", "Settings", "add_arguments", "default_config_text", "parse_address", "protobuf_backend"]
