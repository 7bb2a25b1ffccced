"""The signal interface: one source of evidence about which references a listing shows.

A signal takes part in each phase of scoring one batch of listings (:mod:`detector.scoring`):

1. ``start``: extract what it needs from the listing (or abstain), possibly in a worker thread;
2. ``embed_views``: images it wants embedded with the listing's regions (e.g. mark silhouettes);
3. ``propose``: reference ids to add as candidates (each group is scored by the embedding's
   cosine and appended in turn, so candidates keep a stable order);
4. ``plan``: choose which candidates it will examine (and ask for shared work, such as the
   one batched descriptor matching of a listing);
5. ``evidence``: one :class:`Evidence` per candidate it examined.

:mod:`detector.fusion` turns the candidates and their evidence into scores and the decision.
At indexing time a signal may add fields to what is stored per reference
(:meth:`Signal.reference_fields`, gathered by :mod:`detector.signals.reference_side`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from PIL import Image

from detector.regions import Region
from detector.verdict import ScoredMatch
from index.store import ReferenceIndex

if TYPE_CHECKING:
    from detector.scoring_config import ScoringConfig
    from detector.signals.reference_data import ReferenceData


@dataclass
class Listing:
    """One listing image being scored, and what each signal found in it so far.

    Attributes:
        name: The image's name in the verdict.
        image: The loaded RGB image.
        index: The index snapshot the whole batch is scored against.
        state: Per signal name, whatever that signal keeps between phases.
    """

    name: str
    image: Image.Image
    index: ReferenceIndex
    state: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Evidence:
    """What one signal found about one candidate reference. Subclasses add their fields;
    :meth:`detail` is what a reviewer sees (JSON-serialisable).

    ``score``, when set, is a score in threshold units that this evidence supports on its
    own: :func:`detector.fusion.fuse` raises a candidate's score to it for signals it has no
    dedicated rule for (a new signal needs no change to fusion to be heard).
    """

    score: float | None = None

    def detail(self) -> dict[str, Any]:
        """The evidence's fields for a verdict's match (``ScoredMatch.signals``)."""
        return {"score": self.score}


class Signal:
    """Base class of a signal; every phase defaults to abstaining.

    Subclasses set :attr:`name` (the registry key and the key of their evidence) and
    override the phases they take part in.
    """

    name: ClassVar[str] = ""

    def __init__(self, config: ScoringConfig, references: ReferenceData) -> None:
        self.config = config
        self.references = references

    @classmethod
    def active(cls, config: ScoringConfig) -> bool:
        """Whether the settings switch this signal on (a profile may list it and disable it)."""
        return True

    def start(self, listing: Listing) -> None:
        """Begin extracting what this signal needs from the listing."""

    def embed_views(self, listing: Listing) -> list[tuple[Region, Image.Image]]:
        """Extra views of the listing to embed with its regions, each with its region."""
        return []

    def propose(self, listing: Listing, candidates: Sequence[ScoredMatch]) -> list[list[int]]:
        """Groups of reference ids to add as candidates, in order."""
        return []

    def plan(self, listing: Listing, candidates: Sequence[ScoredMatch]) -> None:
        """Choose the candidates to examine, once all are known."""

    def evidence(self, listing: Listing, candidates: Sequence[ScoredMatch]) -> dict[int, Evidence]:
        """Evidence per examined candidate's ref id."""
        return {}
