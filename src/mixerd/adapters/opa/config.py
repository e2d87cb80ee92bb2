"""The ``opa`` adapter's params, read field by field (pure, no I/O).

Mixer's params (``mixer/adapter/opa/config/config.proto``), camelCase or snake_case:

===============  ========  ====================================================================
field            default   meaning
===============  ========  ====================================================================
``policy``       (none)    Rego modules (texts), compiled together; module ``i`` is
                           ``opa_policy.<i>`` in messages and its problems are at ``policy[i]``
``checkMethod``  (none)    the rule to query: ``data.<package>.<rule>``
``failClose``    false     deny (instead of allow) when the answer is not a boolean, and when
                           the config has problems
===============  ========  ====================================================================

mixerd-specific:

===============  ========  ====================================================================
``dryRun``       false     decide, log and count, but allow every check
===============  ========  ====================================================================

:func:`parse_params` separates *type errors* (a field of the wrong type, an unknown field: always
config errors) from *problems* (no ``checkMethod``, no policy, a ``checkMethod`` mixerd cannot
query), which ``failClose`` turns into denials instead of config errors, as in Mixer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from mixerd.adapter import ConfigError, Params
from mixerd.adapters.opa.engine import check_method_problem

__all__ = ["OpaParams", "parse_params"]

_KNOWN: Final = ("policy", "check_method", "fail_close", "dry_run")


@dataclass(frozen=True, slots=True)
class OpaParams:
    policy: tuple[str, ...] = ()
    check_method: str = ""
    fail_close: bool = False
    dry_run: bool = False
    policy_key: str = "policy"
    """How the config spelled ``policy`` (for error paths)."""


def parse_params(config: Mapping[str, Any] | None) -> tuple[OpaParams, list[ConfigError], list[ConfigError]]:
    """The params, the type errors and the problems (each with its field path)."""
    p = Params(config)
    policy_key, raw_policy = p.raw("policy")
    policy: list[str] = []
    if raw_policy is not None:
        if not isinstance(raw_policy, list):
            p.error(policy_key, f"expected a list of Rego modules (strings), got {type(raw_policy).__name__}")
        else:
            for i, module in enumerate(raw_policy):
                if isinstance(module, str):
                    policy.append(module)
                else:
                    p.error(
                        f"{policy_key}[{i}]",
                        f"expected a Rego module (a string), got {type(module).__name__}",
                    )
    check_method = p.str("check_method")
    fail_close = p.bool("fail_close")
    dry_run = p.bool("dry_run")
    type_errors = p.errors + p.unknown_fields(_KNOWN)

    problems: list[ConfigError] = []
    method_key = p.raw("check_method")[0]
    if not check_method:
        problems.append(ConfigError(method_key, "check method is not configured"))
    else:
        why = check_method_problem(check_method)
        if why is not None:
            problems.append(ConfigError(method_key, why))
    if not policy and not any(e.path.startswith(policy_key) for e in type_errors):
        problems.append(ConfigError(policy_key, "policies are not configured"))
    params = OpaParams(tuple(policy), check_method, fail_close, dry_run, policy_key)
    return params, type_errors, problems
