"""Helpers of the shape-search tests: the part of an index the shape sync reads."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace


@dataclass
class FakeIndex:
    """The part of ReferenceIndex that the shape sync reads: its path and its logos."""

    path: object
    logos: list[tuple[int, str]]

    def references(self):
        return iter(SimpleNamespace(id=i, brand=b, kind="logo") for i, b in self.logos)
