"""The ``opa`` builder and handler: Mixer 1.4's ``opa`` adapter, with Rego evaluated in process.

Behaviour (Mixer's ``mixer/adapter/opa/opa.go``):

* The input document is ``{"subject": {...}, "action": {...}}`` from the authorization instance:
  ``subject.user``, ``subject.groups``, ``subject.properties``, ``action.namespace``,
  ``action.service``, ``action.method``, ``action.path``, ``action.properties``; empty strings and
  empty maps are left out. ``subject.groups`` is a list holding the one ``groups`` string (the
  template field is a string; Mixer passed it this way and policies index it: ``groups[_]``).
  Property values that are not JSON types (timestamps, durations, IP addresses, bytes) are passed
  as text (:func:`mixerd.adapter.stringify`).
* ``true`` allows (OK); ``false`` denies: PERMISSION_DENIED ``opa: request was rejected``.
* An undefined result, a result that is not a boolean, or an evaluation error is "an issue":
  with ``failClose: true`` it denies (PERMISSION_DENIED ``opa: request was rejected``, plus
  ``. err: <error>`` for an evaluation error); with ``failClose: false`` (the default) it allows.
* Config problems (no ``checkMethod``, no policy, a module that does not compile): with
  ``failClose: false`` they are config errors, each with its field path (``policy[1]``), and the
  handler is not built; with ``failClose: true`` they are not config errors -- as in Mixer, the
  handler is built, logs each problem (with its path) at ERROR, and denies every check with
  ``opa: request was rejected``, so a broken policy never opens the door.
* Validity: a denial (by the policy or by failClose) carries ``valid_duration`` 0 and
  ``valid_use_count`` 0 (Mixer's zero result: not to be cached); an allow carries mixerd's
  default check validity (1 minute, 10000 uses: what Mixer filled in for an OK zero result).

mixerd-specific: ``dryRun: true`` evaluates and counts every decision but allows every check; a
decision that would have denied is logged (rate-limited, with a count). Every decision is counted
in ``mixerd_authz_decisions_total{policy=<handler>, action=allow|deny, dry_run}``.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from typing import Any, Final

from mixerd.adapter import (
    OK,
    Builder,
    CheckResult,
    Code,
    ConfigError,
    Env,
    Handler,
    InstanceInfo,
    RateLimitedWarning,
    Status,
    stringify,
)
from mixerd.adapter.authz_metrics import AuthzDecisions, decisions_of
from mixerd.adapters.opa.config import OpaParams, parse_params
from mixerd.adapters.opa.engine import CompiledPolicy, Evaluation, compile_policy
from mixerd.attribute import logsafe
from mixerd.templates import AuthorizationAction, AuthorizationInstance, AuthorizationSubject

__all__ = ["REJECTED", "OpaBuilder", "OpaHandler", "input_document"]

REJECTED: Final = "opa: request was rejected"
"""Mixer's message for every denial."""

_NO_CACHE: Final = _dt.timedelta(0)
_ALLOWED: Final = CheckResult(OK)
_DENIED: Final = CheckResult(Status(Code.PERMISSION_DENIED, REJECTED), _NO_CACHE, 0)


def _json_value(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else stringify(value)
    if isinstance(value, Mapping):
        return {str(k): _json_value(v) for k, v in value.items()}
    return stringify(value)


def _properties(props: Mapping[str, Any]) -> dict[str, Any] | None:
    if not props:
        return None
    return {str(k): _json_value(v) for k, v in props.items()}


def _subject(subject: AuthorizationSubject) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if subject.user:
        out["user"] = subject.user
    if subject.groups:
        out["groups"] = [subject.groups]
    props = _properties(subject.properties)
    if props is not None:
        out["properties"] = props
    return out


def _action(action: AuthorizationAction) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in ("namespace", "service", "method", "path"):
        value = getattr(action, name)
        if value:
            out[name] = value
    props = _properties(action.properties)
    if props is not None:
        out["properties"] = props
    return out


def input_document(instance: AuthorizationInstance) -> dict[str, Any]:
    """The Rego ``input`` for one authorization instance (Mixer's conversion)."""
    return {"action": _action(instance.action), "subject": _subject(instance.subject)}


class OpaHandler(Handler):
    """Evaluates the compiled policy for each authorization instance."""

    def __init__(
        self,
        params: OpaParams,
        policy: CompiledPolicy | None,
        env: Env,
        config_problems: tuple[ConfigError, ...] = (),
    ) -> None:
        self.params = params
        self.policy = policy
        """None when the config has problems (failClose: every check is denied)."""
        self.config_problems = config_problems
        self._name = env.name
        self._log = env.logger
        self._decisions: AuthzDecisions | None = decisions_of(env)
        self._dry_run_denials = RateLimitedWarning(env.clock, logger=env.logger)
        self._issues = RateLimitedWarning(env.clock, logger=env.logger)
        for problem in config_problems:
            self._log.error(
                "handler %s: params.%s (failClose: every check is denied until the config is fixed)",
                self._name,
                problem,
            )

    def _issue(self, why: str, error: str | None = None) -> CheckResult:
        """Mixer's handleFailClose: deny with failClose, else allow."""
        self._issues.add(1, f"handler {self._name}: {why}")
        if self.params.fail_close:
            message = REJECTED if error is None else f"{REJECTED}. err: {error}"
            return CheckResult(Status(Code.PERMISSION_DENIED, message), _NO_CACHE, 0)
        return _ALLOWED

    def decide(self, instance: AuthorizationInstance) -> CheckResult:
        """The enforced answer (before dry run)."""
        if self.policy is None:  # config problems under failClose (logged when built)
            return _DENIED
        result: Evaluation = self.policy.evaluate(input_document(instance))
        if result.error is not None:
            return self._issue(f"evaluation error: {logsafe(result.error)}", result.error)
        if not result.defined:
            return self._issue(f"{self.params.check_method} is undefined for a request")
        value = result.value
        if not isinstance(value, bool):
            return self._issue(f"{self.params.check_method} is {type(value).__name__}, not a boolean")
        return _ALLOWED if value else _DENIED

    def handle_authorization(self, instance: AuthorizationInstance) -> CheckResult:
        result = self.decide(instance)
        allowed = result.status.code == Code.OK
        dry_run = self.params.dry_run
        if self._decisions is not None:
            self._decisions.count(self._name, allowed, dry_run)
        if dry_run and not allowed:
            self._dry_run_denials.add(
                1,
                f"handler {self._name} (dry run) would deny user {logsafe(instance.subject.user, 100)!s} "
                f"{logsafe(instance.action.method, 20)} {logsafe(instance.action.path, 200)}: "
                f"{logsafe(result.status.message, 300)}",
            )
            return _ALLOWED
        return result


class OpaBuilder(Builder):
    def __init__(self, config: Mapping[str, Any], instances: Mapping[str, InstanceInfo]) -> None:
        super().__init__(config, instances)
        self.params, self._type_errors, self._problems = parse_params(config)
        self._policy: CompiledPolicy | None = None
        if not self._type_errors and not self._problems:
            self._policy, compile_problems = compile_policy(self.params.policy, self.params.check_method)
            for p in compile_problems:
                path = self.params.policy_key if p.module is None else f"{self.params.policy_key}[{p.module}]"
                self._problems.append(ConfigError(path, f"Rego: {p.message}"))

    def validate(self) -> list[ConfigError]:
        if self.params.fail_close:
            return list(self._type_errors)
        return self._type_errors + self._problems

    def build(self, env: Env) -> OpaHandler:
        problems = tuple(self._problems)
        return OpaHandler(self.params, None if problems else self._policy, env, problems)
