"""Generated code vs a tree-walking reference interpreter of Mixer's semantics.

Random well-typed expressions (fixed seed) are compiled and evaluated over random bags; the value
or error and the reference log must equal what a direct reading of Mixer's IL semantics gives:
strict operands raise ``lookup failed`` for a missing attribute and read ``""`` for a missing map
key, ``|`` operands are "nillable" (absent falls through), ``&&``/``||``/``conditional``
short-circuit, extern calls evaluate every argument first.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from mixerd.attribute import MISSING, TrackingBag, ValueType
from mixerd.lang import FUNCTIONS, EvaluationError, compile, parse
from mixerd.lang import functions as fns
from mixerd.lang.syntax import Call, Constant, Node, Variable

V = ValueType
MANIFEST = {
    "a": V.STRING,
    "b": V.STRING,
    "c": V.STRING,
    "i": V.INT64,
    "j": V.INT64,
    "f": V.BOOL,
    "g": V.BOOL,
    "m": V.STRING_MAP,
    "n": V.STRING_MAP,
}
_ABSENT = object()


# --- reference interpreter --------------------------------------------------------------------


def _flatten(node: Node) -> list[Node]:
    if isinstance(node, Call) and node.name == "OR":
        return _flatten(node.args[0]) + _flatten(node.args[1])
    return [node]


def strict(node: Node, bag: Mapping[str, Any]) -> Any:
    if isinstance(node, Constant):
        return node.value
    if isinstance(node, Variable):
        value = bag.get(node.name, MISSING)
        if value is MISSING:
            raise EvaluationError(f"lookup failed: '{node.name}'")
        return value
    name, args = node.name, node.args
    if name == "OR":
        *heads, last = _flatten(node)
        for head in heads:
            value = nillable(head, bag)
            if value is not _ABSENT:
                return value
        return strict(last, bag)
    if name == "INDEX":
        target = strict(args[0], bag)
        return target.get(strict(args[1], bag), "")
    if name == "conditional":
        return strict(args[1] if strict(args[0], bag) else args[2], bag)
    if name == "LAND":
        return strict(args[0], bag) and strict(args[1], bag)
    if name == "LOR":
        return strict(args[0], bag) or strict(args[1], bag)
    operators: dict[str, Callable[[Any, Any], Any]] = {
        "EQ": lambda x, y: x == y,
        "NEQ": lambda x, y: x != y,
        "LT": lambda x, y: x < y,
        "GEQ": lambda x, y: x >= y,
        "ADD": lambda x, y: ((x + y + 2**63) % 2**64 - 2**63) if isinstance(x, int) else x + y,
    }
    if name in operators:
        left = strict(args[0], bag)
        return operators[name](left, strict(args[1], bag))
    if name == "size":
        return fns.size(strict(args[0], bag))
    operands = ([node.target] if node.target is not None else []) + list(args)
    values = [strict(operand, bag) for operand in operands]
    impl = FUNCTIONS[name].impl
    assert impl is not None
    return impl(*values)


def nillable(node: Node, bag: Mapping[str, Any]) -> Any:
    if isinstance(node, Variable):
        value = bag.get(node.name, MISSING)
        return _ABSENT if value is MISSING else value
    if isinstance(node, Call) and node.target is None and node.name == "INDEX":
        target = nillable(node.args[0], bag)
        if target is _ABSENT:
            return _ABSENT
        key = nillable(node.args[1], bag)
        if key is _ABSENT:
            return _ABSENT
        value = target.get(key, MISSING)
        return _ABSENT if value is MISSING else value
    if isinstance(node, Call) and node.target is None and node.name == "OR":
        for element in _flatten(node):
            value = nillable(element, bag)
            if value is not _ABSENT:
                return value
        return _ABSENT
    return strict(node, bag)


# --- random expressions and bags --------------------------------------------------------------


class Gen:
    def __init__(self, seed: int) -> None:
        self.r = random.Random(seed)

    def pick(self, *options: Callable[[int], str], depth: int) -> str:
        return self.r.choice(options)(depth)

    def string(self, depth: int) -> str:
        leaves = [lambda d: self.r.choice(["a", "b", "c", '"x"', '"y"', '""'])]
        if depth <= 0:
            return leaves[0](depth)
        d = depth - 1
        return self.pick(
            *leaves,
            *leaves,
            lambda _: f"{self.smap(d)}[{self.string(d)}]",
            lambda _: f"({self.string(d)} | {self.string(d)})",
            lambda _: f"{self.string(d)} | {self.string(d)} | {self.string(d)}",
            lambda _: f"conditional({self.boolean(d)}, {self.string(d)}, {self.string(d)})",
            lambda _: f"toLower({self.string(d)})",
            lambda _: f"({self.string(d)} + {self.string(d)})",
            lambda _: f"conditionalString({self.boolean(d)}, {self.string(d)}, {self.string(d)})",
            depth=depth,
        )

    def boolean(self, depth: int) -> str:
        leaves = [lambda d: self.r.choice(["f", "g", "true", "false"])]
        if depth <= 0:
            return leaves[0](depth)
        d = depth - 1
        return self.pick(
            *leaves,
            lambda _: f"({self.string(d)} == {self.string(d)})",
            lambda _: f"({self.string(d)} != {self.string(d)})",
            lambda _: f"({self.integer(d)} < {self.integer(d)})",
            lambda _: f"({self.integer(d)} >= {self.integer(d)})",
            lambda _: f"({self.boolean(d)} && {self.boolean(d)})",
            lambda _: f"({self.boolean(d)} || {self.boolean(d)})",
            lambda _: f"({self.boolean(d)} | {self.boolean(d)})",
            lambda _: f'match({self.string(d)}, "{self.r.choice(["x*", "*y", "x"])}")',
            lambda _: f"({self.string(d)}).startsWith({self.string(d)})",
            lambda _: f"conditional({self.boolean(d)}, {self.boolean(d)}, {self.boolean(d)})",
            depth=depth,
        )

    def integer(self, depth: int) -> str:
        leaves = [lambda d: self.r.choice(["i", "j", "0", "7"])]
        if depth <= 0:
            return leaves[0](depth)
        d = depth - 1
        return self.pick(
            *leaves,
            lambda _: f"({self.integer(d)} + {self.integer(d)})",
            lambda _: f"size({self.string(d)})",
            lambda _: f"({self.integer(d)} | {self.integer(d)})",
            lambda _: f"conditional({self.boolean(d)}, {self.integer(d)}, {self.integer(d)})",
            depth=depth,
        )

    def smap(self, depth: int) -> str:
        leaves = [lambda d: self.r.choice(["m", "n", "emptyStringMap()"])]
        if depth <= 0:
            return leaves[0](depth)
        d = depth - 1
        return self.pick(
            *leaves,
            *leaves,
            lambda _: f"({self.smap(d)} | {self.smap(d)})",
            lambda _: f"conditional({self.boolean(d)}, {self.smap(d)}, {self.smap(d)})",
            depth=depth,
        )

    def bag(self) -> dict[str, Any]:
        candidates: dict[str, Callable[[], Any]] = {
            "a": lambda: self.r.choice(["x", "y", "X", ""]),
            "b": lambda: self.r.choice(["x", "yx"]),
            "c": lambda: self.r.choice(["y", "c"]),
            "i": lambda: self.r.choice([0, 5, 2**63 - 1]),
            "j": lambda: self.r.choice([1, -3]),
            "f": lambda: self.r.choice([True, False]),
            "g": lambda: self.r.choice([True, False]),
            "m": lambda: self.r.choice([{}, {"x": "mx"}, {"x": "", "y": "x"}]),
            "n": lambda: self.r.choice([{"": "empty"}, {"y": "ny"}]),
        }
        return {name: make() for name, make in candidates.items() if self.r.random() < 0.6}


def outcome(fn: Callable[[Mapping[str, Any]], Any], attrs: Mapping[str, Any]) -> tuple[str, Any, list[str]]:
    bag = TrackingBag(attrs)
    try:
        value = fn(bag)
    except EvaluationError as exc:
        return "error", exc.message, bag.tracker.log()
    if isinstance(value, Mapping):
        value = dict(value)
    return "value", value, bag.tracker.log()


@pytest.mark.parametrize("seed", range(8))
def test_compiled_code_matches_the_reference_semantics(seed: int) -> None:
    gen = Gen(seed)
    makers = [gen.string, gen.boolean, gen.integer, gen.smap]
    checked = 0
    for n in range(60):
        text = makers[n % len(makers)](gen.r.randint(1, 4))
        expr = compile(text, MANIFEST)
        tree = parse(text)
        for _ in range(6):
            attrs = gen.bag()
            want = outcome(lambda bag, tree=tree: strict(tree, bag), attrs)  # type: ignore[misc]
            got = outcome(expr.evaluate, attrs)
            assert got == want, (text, attrs, expr.python_source)
            checked += 1
    assert checked == 360
