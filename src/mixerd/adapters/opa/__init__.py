"""The ``opa`` adapter (Mixer 1.4's): authorization instances decided by Rego policies, in process.

Example (Mixer's own)::

    apiVersion: config.istio.io/v1alpha2
    kind: handler
    metadata: {name: opahandler, namespace: istio-system}
    spec:
      compiledAdapter: opa
      params:
        checkMethod: data.mixerauthz.allow
        failClose: true
        policy:
        - |
          package mixerauthz
          default allow = false
          allow { input.subject.user == "admin" }

Params: :mod:`mixerd.adapters.opa.config`; the input document, results and failClose:
:mod:`mixerd.adapters.opa.handler`; compiling and evaluating Rego: :mod:`mixerd.adapters.opa.engine`.
"""

from mixerd.adapter import Info
from mixerd.adapters.opa.config import OpaParams
from mixerd.adapters.opa.handler import REJECTED, OpaBuilder, OpaHandler, input_document

__all__ = ["INFO", "REJECTED", "OpaBuilder", "OpaHandler", "OpaParams", "input_document"]

INFO = Info(
    name="opa",
    description="Decides authorization instances with Rego policies (Open Policy Agent's language), "
    "evaluated in process.",
    templates=("authorization",),
    builder=OpaBuilder,
)
