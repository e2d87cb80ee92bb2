"""``mixerd report`` (see :mod:`mixerd.cli.client`)."""

from mixerd.cli.client import register_report as register

__all__ = ["register"]
