"""The signal interface: one source of evidence about which references a listing shows.

A signal takes part in each phase of scoring one batch of listings (:mod:`detector.scoring`):

1. ``start``: extract what it needs from the listing (or abstain), possibly in a worker thread;
2. ``offer_regions``: regions of the listing it found worth looking at (e.g. around a line of
   text), offered to the others: embedded with the listing's regions and segmented for marks
   (:data:`detector.regions.OFFERED_SOURCES`); called once every signal has started;
3. ``embed_views``: images it wants embedded with the listing's regions (e.g. mark silhouettes);
   the listing's regions, offered ones included, are known by then;
4. ``propose``: reference ids to add as candidates (each group is scored by the embedding's
   cosine and appended in turn, so candidates keep a stable order);
5. ``plan``: choose which candidates it will examine (and ask for shared work, such as the
   one batched descriptor matching of a listing);
6. ``evidence``: one :class:`Evidence` per candidate it examined.

:mod:`detector.fusion` turns the candidates and their evidence into scores and the decision.
At indexing time a signal declares what it stores per reference (:meth:`Signal.reference_fields`,
gathered by :mod:`detector.signals.reference_side`), mirroring what it reads while scoring.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from PIL import Image

from detector.regions import Region
from detector.verdict import ScoredMatch
from index.protocol import VectorIndex

if TYPE_CHECKING:
    from detector.features import LocalFeatures
    from detector.scoring_config import ScoringConfig
    from detector.signals.reference_data import ReferenceData
    from detector.verify_config import VerifyConfig


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
    index: VectorIndex
    state: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ReferenceImage:
    """A reference being indexed, as the signals see it at indexing time.

    Attributes:
        image: As uploaded (RGBA when transparent: a logo's silhouette reads its alpha).
        view: Its first prepared view (trimmed, padded), where local features are found.
        kind: ``logo`` or ``product``.
        attributes: The manifest's attributes (e.g. a product photo's ``logo_box``).
    """

    image: Image.Image
    view: Image.Image
    kind: str
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Evidence:
    """What one signal found about one candidate reference. Subclasses add their fields;
    :meth:`detail` is what a reviewer sees (JSON-serialisable).

    ``score``, when set, is a score in threshold units that this evidence supports on its
    own: :func:`detector.fusion.fuse` raises a candidate's score to it for signals it has no
    dedicated rule for (a new signal needs no change to fusion to be heard).

    ``threshold_basis``, when set (e.g. ``"text"``), names the thresholds key suffix a match
    is held to when this evidence's score decided it (``<kind>:<basis>``,
    :func:`detector.thresholds.threshold_key`).
    """

    threshold_basis: ClassVar[str | None] = None

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
    def reference_fields(cls, reference: ReferenceImage, stored: LocalFeatures, config: VerifyConfig) -> dict[str, Any]:
        """Fields of the reference's stored side data (:class:`~detector.features.LocalFeatures`)
        this signal fills at indexing time; ``stored`` holds the local features and the fields
        of the signals before it (:func:`detector.signals.reference_side.reference_side_data`)."""
        return {}

    @classmethod
    def active(cls, config: ScoringConfig) -> bool:
        """Whether the settings switch this signal on (a profile may list it and disable it)."""
        return True

    def start(self, listing: Listing) -> None:
        """Begin extracting what this signal needs from the listing."""

    def offer_regions(self, listing: Listing) -> list[Region]:
        """Regions of the listing offered to the other signals (their ``source`` one of
        :data:`~detector.regions.OFFERED_SOURCES`), after every signal's :meth:`start`."""
        return []

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
