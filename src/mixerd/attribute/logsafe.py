"""Making request-derived text safe to put in a log line.

Attribute values, quota names, header values, paths and the messages of errors that quote them
come from callers. Written to a log as they are, a value holding a line feed forges a second log
line, an escape sequence repaints a terminal, a bidirectional override reorders what a reader
sees, and a 1 MB value floods the log. :func:`logsafe` is the one way mixerd logs such text.
"""

from __future__ import annotations

from typing import Final

__all__ = ["LOGSAFE_LIMIT", "logsafe"]

LOGSAFE_LIMIT: Final = 256
"""Characters of a value kept by default; the rest is replaced by a marker giving its length."""


def logsafe(value: object, limit: int = LOGSAFE_LIMIT) -> str:
    """``value`` as text fit for one log line.

    * Characters Python does not consider printable are escaped the way ``repr`` writes them:
      C0 controls (``\\n``, ``\\r``, ``\\x1b`` ...), DEL (``\\x7f``), C1 controls (``\\x85``
      ...), and the other non-printing code points (line and paragraph separators, format
      characters such as the bidirectional overrides: ``\\u202e``). Backslashes and quotes are
      left alone, so ordinary text reads as it was sent.
    * Text longer than ``limit`` characters is cut there and ends with
      ``...[N more characters]``.

    Text that needs neither comes back unchanged (the same object for a ``str``).
    """
    text = value if type(value) is str else str(value)
    if len(text) > limit:
        text = f"{text[:limit]}...[{len(text) - limit} more characters]"
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
