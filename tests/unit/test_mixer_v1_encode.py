"""Check answers encoded from cached parts: byte for byte the serialized ``CheckResponse``, with the
validity of each call (a cached answer's counts down) and the references of each answer."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import pytest

from mixerd._proto.mixer.v1 import check_pb2
from mixerd.adapter import ManualClock
from mixerd.api.mixer_v1.client import build_check_request
from mixerd.api.mixer_v1.encode import (
    check_response_bytes,
    encode_precondition,
    encode_referenced,
    precondition_parts,
)
from mixerd.api.mixer_v1.service import MixerService
from mixerd.api.mixer_v1.wire import GLOBAL_WORD_COUNT, global_words
from mixerd.attribute import Condition, Reference
from mixerd.config import HeaderAction, MemoryStore, parse_text
from mixerd.runtime import HeaderOperation, RouteDirective, Runtime

DURATIONS = [
    dt.timedelta(0),
    dt.timedelta(seconds=59, microseconds=500_000),
    dt.timedelta(seconds=-3, microseconds=-250_000),
    dt.timedelta(microseconds=-1),
    dt.timedelta(microseconds=1),
    dt.timedelta(days=9000),
]
USES = [0, 1, 127, 128, 9999, -5, 2**31 - 1]
DIRECTIVES = [
    None,
    RouteDirective(
        (HeaderOperation("x-user", "alice"),), (HeaderOperation("set-cookie", "a=b", HeaderAction.APPEND),)
    ),
    RouteDirective((), (), 403, "blocked"),
]


@pytest.mark.parametrize("status", [(0, ""), (7, "deny:blocked"), (16, "ünïcode " * 40)])
@pytest.mark.parametrize("directive", DIRECTIVES)
def test_the_bytes_are_the_serialized_message(
    status: tuple[int, str], directive: RouteDirective | None
) -> None:
    code, message = status
    refs = [
        Reference("request.headers", "x-user", Condition.EXACT),
        Reference("source.ip", None, Condition.ABSENCE),
    ]
    referenced = encode_referenced(refs, (), 0)
    parts = precondition_parts(
        status_code=code, message=message, referenced=referenced, route_directive=directive
    )
    for duration in DURATIONS:
        for uses in USES:
            expected = check_pb2.CheckResponse(
                precondition=encode_precondition(
                    status_code=code,
                    message=message,
                    valid_duration=duration,
                    valid_use_count=uses,
                    referenced=referenced,
                    route_directive=directive,
                )
            ).SerializeToString()
            assert check_response_bytes(parts, duration, uses) == expected, (duration, uses)


CONFIG = """
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: deny, namespace: istio-system}
spec: {compiledAdapter: denier, params: {status: {code: 7, message: blocked}, validDuration: 10s, validUseCount: 3}}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: nothing, namespace: istio-system}
spec: {compiledTemplate: checknothing}
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: deny-blocked, namespace: istio-system}
spec:
  match: request.headers["x-user"] == "blocked"
  actions: [{handler: deny, instances: [nothing]}]
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: echo, namespace: istio-system}
spec:
  requestHeaderOperations:
  - name: x-echo
    values: ['request.headers["x-request-id"] | "none"']
"""


class _Context:
    async def abort(self, code: Any, details: str) -> None:
        raise AssertionError(f"{code}: {details}")


@pytest.fixture
async def served() -> AsyncIterator[tuple[MixerService, ManualClock]]:
    clock = ManualClock()
    rt = Runtime(MemoryStore(parse_text(CONFIG).resources), clock=clock)
    await rt.start()
    assert not rt.status.errors, rt.status.errors
    yield MixerService(rt.dispatcher), clock
    await rt.close()


async def test_a_cached_answer_counts_its_validity_down_and_keeps_its_references(
    served: tuple[MixerService, ManualClock],
) -> None:
    svc, clock = served
    request = build_check_request({"request.headers": {"x-user": "blocked", "x-request-id": "r1"}})
    first = await svc.Check(request.SerializeToString(), _Context())
    clock.advance(4)
    second = await svc.Check(request.SerializeToString(), _Context())
    third = await svc.Check(request.SerializeToString(), _Context())
    for resp in (first, second):
        assert resp.precondition.status.code == 7
        # header operations are not evaluated for a denial: x-request-id is no reference
        assert "x-user" in _names(resp) and "x-request-id" not in _names(resp)
    assert first.precondition.valid_duration.seconds == 10
    assert first.precondition.valid_use_count == 3
    assert second.precondition.valid_duration.seconds == 6  # counted down, not the first answer again
    # uses left, this one included (the entry's count starts at the answer's own)
    assert [r.precondition.valid_use_count for r in (first, second, third)] == [3, 3, 2]
    assert second.precondition.referenced_attributes == first.precondition.referenced_attributes
    assert third.precondition.referenced_attributes == first.precondition.referenced_attributes


async def test_header_operations_are_evaluated_for_every_cached_answer(
    served: tuple[MixerService, ManualClock],
) -> None:
    svc, _ = served
    answers = []
    for rid in ("r1", "r2", "r1"):
        request = build_check_request({"request.headers": {"x-user": "alice", "x-request-id": rid}})
        answers.append(await svc.Check(request.SerializeToString(), _Context()))
    echoed = [a.precondition.route_directive.request_header_operations[0].value for a in answers]
    assert echoed == ["r1", "r2", "r1"]
    for a in answers:  # the header operation read x-request-id: it is among the references
        assert a.precondition.status.code == 0
        assert len(a.precondition.referenced_attributes.attribute_matches) == len(
            answers[0].precondition.referenced_attributes.attribute_matches
        )
        assert "x-request-id" in _names(a)


def _names(resp: check_pb2.CheckResponse) -> list[str]:
    """The names and map keys the answer's referenced attributes name."""
    ra = resp.precondition.referenced_attributes
    g = global_words(GLOBAL_WORD_COUNT)
    words = list(ra.words)
    out = []
    for m in ra.attribute_matches:
        for i in (m.name, m.map_key):
            if 0 < i < len(g):
                out.append(g[i])
            elif i < 0:
                out.append(words[~i])
    return out
