"""Errors of the expression language: one for bad expressions, one for failed evaluations."""

from __future__ import annotations

__all__ = ["CompileError", "EvaluationError"]


class CompileError(ValueError):
    """An expression could not be parsed, type-checked or compiled: a configuration error.

    ``reason`` is the message Mixer gives for the same expression (the conformance data compares it
    exactly); ``position`` is the 0-based character offset in ``expression`` the error points at,
    or ``None`` when no single place is to blame. ``str()`` adds the position to the reason.
    """

    expression: str
    reason: str
    position: int | None

    def __init__(self, expression: str, reason: str, position: int | None = None) -> None:
        super().__init__(reason)
        self.expression = expression
        self.reason = reason
        self.position = position

    def __str__(self) -> str:
        if self.position is None:
            return self.reason
        return f"{self.reason} at position {self.position}"

    def __repr__(self) -> str:
        return f"CompileError({self.expression!r}, {self.reason!r}, {self.position!r})"


class EvaluationError(Exception):
    """Evaluating a compiled expression against an attribute bag failed: a request-time error.

    The message follows Mixer's (``lookup failed: 'source.ip'``, ``could not convert 1.2 to
    IP_ADDRESS``...). ``position`` is the 0-based offset of the part of the expression that failed
    when it is known (a missing attribute, a badly typed value), else ``None``.
    """

    message: str
    position: int | None

    def __init__(self, message: str, position: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.position = position

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"EvaluationError({self.message!r})"
