"""``mixerd check`` (see :mod:`mixerd.cli.client`)."""

from mixerd.cli.client import register_check as register

__all__ = ["register"]
