"""Mixer's global dictionary: the 222 words that compressed attributes index into.

The list is read with every scalar as the string it is written as (``true`` stays
``"true"``). It is append-only and its order is part of the wire format: index ``i >= 0`` in a
``CompressedAttributes`` message names ``GLOBAL_DICTIONARY[i]``.
"""

from __future__ import annotations

from importlib import resources
from types import MappingProxyType
from typing import Final

import yaml

__all__ = ["GLOBAL_DICTIONARY", "GLOBAL_INDEX"]


def _load() -> tuple[str, ...]:
    text = resources.files("mixerd.attribute").joinpath("data/global_dictionary.yaml").read_text("utf-8")
    words = yaml.load(text, Loader=yaml.BaseLoader)  # every word is a string, as written
    if not isinstance(words, list) or not words:
        raise RuntimeError("the packaged global dictionary is corrupt (expected a list of words)")
    return tuple(str(w) for w in words)


GLOBAL_DICTIONARY: Final[tuple[str, ...]] = _load()
"""The words, in wire order."""

GLOBAL_INDEX: Final = MappingProxyType({w: i for i, w in reversed(list(enumerate(GLOBAL_DICTIONARY)))})
"""word -> its first index. (Read as strings, the status codes appear twice: ``'200'`` and ``200``.)"""
