"""Rego compiled once, evaluated per check, in process (the ``regopy`` binding of rego-cpp).

:func:`compile_policy` parses each module (``params.policy[i]`` is module ``opa_policy.<i>``, as
Mixer named them), compiles them together into a bundle planned for one entry point -- the rule
``checkMethod`` names -- and returns a :class:`CompiledPolicy` or the problems, each with the index
of the module it is in (None for problems of the whole set).

:meth:`CompiledPolicy.evaluate` runs the plan against one input document; nothing is parsed again.
Each thread gets an interpreter of its own (an interpreter holds the input between ``set_input``
and the query), created on its first check. The answer is an :class:`Evaluation`: the value of the
rule, ``undefined``, or an evaluation error with what the engine said about it.

Engine facts this module accounts for (regopy 1.5): ``checkMethod`` is queried through the bundle's
entry point (``data.a.b`` is the entry point ``a/b``), because a plain query of a rule with a
``default`` answered ``undefined`` where OPA answers the default; an error during evaluation
(conflicting values of a complete rule, an unknown function) comes back as an error node, not an
exception; built-in errors (division by zero ...) make the expression undefined, as in OPA by
default.
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from regopy import Bundle, Interpreter, LogLevel, RegoError

__all__ = [
    "MODULE_PREFIX",
    "CompileProblem",
    "CompiledPolicy",
    "Evaluation",
    "check_method_problem",
    "compile_policy",
    "entry_point",
]

MODULE_PREFIX: Final = "opa_policy"
"""Module ``i`` of ``params.policy`` is named ``opa_policy.<i>`` (Mixer's names)."""

_CHECK_METHOD_RE: Final = re.compile(r"data(\.[A-Za-z_][A-Za-z0-9_]*){2,}")
_ERROR_RE: Final = re.compile(r"\(error (?:(\d+):)?")
_LENGTH_RE: Final = re.compile(r"(\d+):")


def check_method_problem(check_method: str) -> str | None:
    """Why ``check_method`` cannot be queried, or None."""
    if _CHECK_METHOD_RE.fullmatch(check_method):
        return None
    return (
        f"must name a rule as data.<package>.<rule> (for example data.mixerauthz.allow), got "
        f"{check_method[:100]!r}; other query forms are not supported: write the query as a rule "
        "of a policy module and name that rule"
    )


def entry_point(check_method: str) -> str:
    """``data.mixerauthz.allow`` -> ``mixerauthz/allow``."""
    return "/".join(check_method.split(".")[1:])


@dataclass(frozen=True, slots=True)
class CompileProblem:
    """A problem of one module (``module`` is its index in ``params.policy``) or of the set (None)."""

    module: int | None
    message: str


@dataclass(frozen=True, slots=True)
class Evaluation:
    """The outcome of one evaluation: ``value`` when ``defined``; ``error`` when it failed."""

    defined: bool
    value: Any = None
    error: str | None = None


_UNDEFINED: Final = Evaluation(False)
_ENGINE_ERROR: Final = (
    "the Rego engine reported an evaluation error without detail (such as conflicting values of a "
    "complete rule, or a call of an unknown function)"
)


def _length_prefixed(text: str, pos: int) -> tuple[str, int] | None:
    """The ``<n>:<n characters>`` token at ``pos`` and the position after it."""
    m = _LENGTH_RE.match(text, pos)
    if m is None:
        return None
    start = m.end()
    end = start + int(m.group(1))
    return text[start:end], end


def _line_col(source: str, offset: int) -> tuple[int, int]:
    data = source.encode()[:offset].decode(errors="replace")
    line = data.count("\n") + 1
    return line, len(data) - (data.rfind("\n") + 1) + 1


def engine_errors(text: str, sources: Mapping[str, str] | None = None) -> list[tuple[str | None, str]]:
    """The ``(file, message)`` of each error in the engine's error text (its error-tree form:
    ``(error 12:opa_policy.0|10|3 (errormsg 15:Invalid literal) ...)``), with ``line N column M``
    added when the file's source is in ``sources``. Text in no known form is returned whole."""
    found: list[tuple[str | None, str]] = []
    for m in _ERROR_RE.finditer(text):
        file: str | None = None
        location = ""
        pos = m.end()
        if m.group(1) is not None:
            file = text[pos : pos + int(m.group(1))]
            pos += int(m.group(1))
            span = re.match(r"\|(\d+)\|(\d+)", text[pos:])
            if span is not None and sources is not None and file in sources:
                line, col = _line_col(sources[file], int(span.group(1)))
                location = f"line {line} column {col}: "
        msg_at = text.find("(errormsg ", pos)
        message = None
        if msg_at >= 0:
            token = _length_prefixed(text, msg_at + len("(errormsg "))
            if token is not None:
                message = token[0]
        found.append((file, location + (message or "error (no message from the Rego engine)")))
    if not found:
        found.append((None, " ".join(text.split())[:500] or "error (no message from the Rego engine)"))
    return found


def _new_interpreter() -> Interpreter:
    interpreter = Interpreter()
    interpreter.log_level = LogLevel.NONE  # the engine would print compile diagnostics to stdout
    return interpreter


def _module_index(name: str | None) -> int | None:
    if name is None or not name.startswith(MODULE_PREFIX + "."):
        return None
    tail = name[len(MODULE_PREFIX) + 1 :]
    return int(tail) if tail.isdigit() else None


def compile_policy(
    modules: Sequence[str], check_method: str
) -> tuple[CompiledPolicy | None, list[CompileProblem]]:
    """Parse and compile ``modules`` for ``check_method`` (which :func:`check_method_problem`
    accepted). Returns the compiled policy, or None and every problem found.

    The last few compilations are kept (the config layer validates a handler and the runtime
    then builds it: one compilation, not two); the bundle is read-only and shared, each
    :class:`CompiledPolicy` has interpreters of its own."""
    entry = entry_point(check_method)
    bundle, problems = _compile(tuple(modules), entry)
    return (None if bundle is None else CompiledPolicy(bundle, entry)), list(problems)


@functools.lru_cache(maxsize=16)
def _compile(modules: tuple[str, ...], entry: str) -> tuple[Bundle | None, tuple[CompileProblem, ...]]:
    interpreter = _new_interpreter()
    sources = {f"{MODULE_PREFIX}.{i}": text for i, text in enumerate(modules)}
    problems: list[CompileProblem] = []
    for name, text in sources.items():
        index = _module_index(name)
        if not text.strip():
            problems.append(CompileProblem(index, "empty module: a module starts with 'package <name>'"))
            continue
        if not re.match(r"\s*(#[^\n]*\n\s*)*package\s", text):
            # The engine accepts a module without a package clause (and then defines nothing).
            problems.append(CompileProblem(index, "a module must start with 'package <name>'"))
            continue
        try:
            interpreter.add_module(name, text)
        except RegoError as exc:
            for file, message in engine_errors(str(exc), sources):
                problems.append(CompileProblem(_module_index(file) if file else index, message))
    if problems:
        return None, tuple(problems)
    try:
        bundle = interpreter.build(None, [entry])
    except RegoError as exc:
        return None, tuple(CompileProblem(_module_index(f), m) for f, m in engine_errors(str(exc), sources))
    return bundle, ()


class CompiledPolicy:
    """A bundle planned for one entry point; :meth:`evaluate` is safe from any thread."""

    __slots__ = ("_bundle", "_entry", "_local")

    def __init__(self, bundle: Bundle, entry: str) -> None:
        self._bundle = bundle
        self._entry = entry
        self._local = threading.local()

    def _interpreter(self) -> Interpreter:
        interpreter: Interpreter | None = getattr(self._local, "interpreter", None)
        if interpreter is None:
            interpreter = self._local.interpreter = _new_interpreter()
        return interpreter

    def evaluate(self, document: Mapping[str, Any]) -> Evaluation:
        """The entry point's value for the input ``document`` (JSON types only)."""
        interpreter = self._interpreter()
        try:
            interpreter.set_input(document)
            output = interpreter.query_bundle_entrypoint(self._bundle, self._entry)
        except RegoError as exc:
            return Evaluation(False, error=_error_text(str(exc)))
        except ValueError:
            # The binding could not read the answer as JSON: the engine answered an error tree
            # (a call of a function that does not exist answers this way).
            return Evaluation(False, error=_ENGINE_ERROR)
        if not output.ok():
            return Evaluation(False, error=_ENGINE_ERROR)
        results = output.results
        if not results or not results[0].expressions:
            return _UNDEFINED
        return Evaluation(True, results[0].expressions[0])


def _error_text(text: str) -> str:
    return "; ".join(message for _, message in engine_errors(text))
