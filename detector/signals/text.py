"""Text: brand names read in the listing photo (offline OCR), matched to the brands' names.

Many marks are words, and counterfeiters misspell them on purpose ("Guccci", "Adibas") so
that image matching misses them. This signal reads the listing's text lines
(:mod:`detector.ocr`, in a worker thread while the model embeds), matches each line to the
indexed brands' names with the fuzzy index of :mod:`detector.brand_names`, proposes each
matched brand's references as candidates and supports them with a :class:`TextEvidence` whose
``score`` is its calibrated score::

    score = text.score * confidence - text.distance_penalty * distance
            - text.ordinary_penalty * (the name is an ordinary word)

(``confidence``: the OCR's, ``distance``: edits between the text read and the name, after
folding). Fusion raises the candidate's score to it; a match whose score the text decided is
held to the ``<kind>:text`` threshold (:func:`detector.thresholds.threshold_key`).

A brand's names (:func:`brand_names_of`): its id with separators as spaces, the manifest's
``names`` attribute and the text OCR read on its logo references at indexing
(``ocr_text`` attribute, :func:`logo_text_attributes`). Names too generic to identify a brand
never match alone (:func:`detector.brand_names.generic_names`).

With ``text.regions`` (off by default) the lines' boxes are also offered to the other signals
as regions (:meth:`TextSignal.offer_regions`, :mod:`detector.text_regions`): the line and
squares left of and above it, where an emblem sits.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any, ClassVar

from detector.brand_names import OCR_ATTRIBUTE, BrandNameIndex, NameMatch, brand_names_of, fold
from detector.ocr import OcrConfig, OcrLine, ocr_available, shared_reader
from detector.regions import Region
from detector.signals.base import Evidence, Listing, Signal
from detector.signals.geometry import Stealable, listing_pool
from detector.text_regions import line_regions
from detector.verdict import Box, ScoredMatch
from index.protocol import VectorIndex
from index.records import Reference

if TYPE_CHECKING:
    from detector.scoring_config import ScoringConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TextConfig:
    """Settings of the text signal (scoring option ``text``).

    Attributes:
        enabled: Off: the signal takes no part even where a profile lists it.
        working_size, min_box_height, max_boxes, min_confidence: OCR (:class:`~detector.ocr.OcrConfig`).
        score: Score of an exact name read with confidence 1.
        distance_penalty: Subtracted per edit between the text read and the name.
        ordinary_penalty: Subtracted when the brand's name is itself an ordinary word (a
            listing reading "UNITY" or "BOOTS" alone is weak evidence of those brands).
        refs_per_brand: References of a matched brand proposed as candidates (logos first).
        regions: Offer the other signals regions around the lines read (any text, matched or
            not: a counterfeit's emblem often sits next to a plain word), embedded and
            segmented like the proposed regions (:mod:`detector.text_regions`). Off by
            default, ``thorough`` included: on the text benchmark's lockups it flagged 3 of
            15 logos beside ordinary words instead of 1, for +37 % of ``thorough``'s time.
        region_lines: The tallest lines given regions.
        region_reach: Side of the emblem squares left of and above a line, in line heights.
    """

    enabled: bool = True
    working_size: int = 640
    min_box_height: int = 8
    max_boxes: int = 12
    min_confidence: float = 0.6
    score: float = 1.1
    distance_penalty: float = 0.05
    ordinary_penalty: float = 0.2
    refs_per_brand: int = 2
    regions: bool = False  # measured: a little recall for a third more time (docs/text.md)
    region_lines: int = 2
    region_reach: float = 2.5

    def ocr(self) -> OcrConfig:
        return OcrConfig(self.working_size, self.min_box_height, self.max_boxes, self.min_confidence)


@dataclass(frozen=True)
class TextEvidence(Evidence):
    """A brand name read in the listing: the text read, the name it matched, the edit
    distance, the OCR's confidence and the line's box. ``score`` is its calibrated score."""

    threshold_basis: ClassVar[str] = "text"  # a score it decides is held to ``<kind>:text``

    read: str = ""
    name: str = ""
    distance: int = 0
    confidence: float = 0.0
    box: Box | None = None

    @property
    def reason(self) -> str:
        return f"read {self.read!r} ≈ {self.name}, distance {self.distance}"

    def detail(self) -> dict[str, Any]:
        return {"score": self.score, "read": self.read, "name": self.name, "distance": self.distance,
                "confidence": self.confidence, "box": list(self.box) if self.box else None,
                "reason": self.reason}  # fmt: skip


@dataclass(frozen=True)
class BrandTexts:
    """Per index generation: the fuzzy index of the brands' names and each brand's refs."""

    names: BrandNameIndex
    refs: dict[str, tuple[int, ...]]  # brand -> ref ids, logos first


def logo_text_attributes(lines: Sequence[OcrLine], min_confidence: float = 0.8) -> dict[str, list[str]]:
    """The ``ocr_text`` attribute stored with a logo reference: its confident lines with letters."""
    kept = [line.text for line in lines if line.confidence >= min_confidence and len(fold(line.text)) >= 3]
    return {OCR_ATTRIBUTE: kept} if kept else {}


def build_brand_texts(index: VectorIndex) -> BrandTexts:
    refs: dict[str, list[tuple[int, int]]] = {}
    collected: list[Reference] = []
    for ref in index.references():
        collected.append(ref)
        refs.setdefault(ref.brand, []).append((ref.kind != "logo", ref.id))
    ordered = {brand: tuple(rid for _, rid in sorted(ids)) for brand, ids in refs.items()}
    return BrandTexts(BrandNameIndex(brand_names_of(collected)), ordered)


@dataclass
class _TextScan:
    lines: Stealable[tuple[OcrLine, ...]]
    matches: dict[str, tuple[NameMatch, OcrLine]] | None = None


class TextSignal(Signal):
    """Brand names read in the photo (needs the ``text`` extra: rapidocr-onnxruntime)."""

    name = "text"

    @classmethod
    def active(cls, config: ScoringConfig) -> bool:
        """On when ``text.enabled`` and the OCR package is installed (else logged, once)."""
        if config.text.enabled and not ocr_available():
            _warn_missing()
            return False
        return config.text.enabled

    def brand_texts(self, index: VectorIndex) -> BrandTexts:
        return self.references.per_generation(self.name, index, lambda: build_brand_texts(index))

    def start(self, listing: Listing) -> None:
        reader = shared_reader(self.config.text.ocr())
        reader.engine()  # load the models here, not in a worker: a missing package fails the call
        listing.state[self.name] = _TextScan(Stealable(listing_pool(), reader.read, listing.image))

    def matches(self, listing: Listing) -> dict[str, tuple[NameMatch, OcrLine]]:
        """Each matched brand's closest name match and the line it was read in."""
        scan: _TextScan = listing.state[self.name]
        if scan.matches is None:
            names = self.brand_texts(listing.index).names
            best: dict[str, tuple[NameMatch, OcrLine]] = {}
            for line in scan.lines.result():
                for m in names.match_text(line.text):
                    prior = best.get(m.brand)
                    if prior is None or _strength(m, line, self.config) > _strength(*prior, self.config):
                        best[m.brand] = (m, line)
            scan.matches = best
        return scan.matches

    def offer_regions(self, listing: Listing) -> list[Region]:
        """Regions around the tallest lines read (waits for the OCR: the regions are embedded
        with the listing's, so the text is read before the model runs)."""
        text = self.config.text
        if not text.regions:
            return []
        boxes = [line.box for line in listing.state[self.name].lines.result()]
        return line_regions(boxes, listing.image.size, lines=text.region_lines, reach=text.region_reach)

    def propose(self, listing: Listing, candidates: Sequence[ScoredMatch]) -> list[list[int]]:
        refs = self.brand_texts(listing.index).refs
        n = self.config.text.refs_per_brand
        return [list(refs.get(brand, ())[:n]) for brand in self.matches(listing)]

    def evidence(self, listing: Listing, candidates: Sequence[ScoredMatch]) -> dict[int, Evidence]:
        found = self.matches(listing)
        out: dict[int, Evidence] = {}
        for m in candidates:
            if m.brand in found:
                match, line = found[m.brand]
                out[m.ref_id] = TextEvidence(
                    score=round(_strength(match, line, self.config), 4), read=match.read, name=match.name,
                    distance=match.distance, confidence=line.confidence, box=line.box,
                )  # fmt: skip
        return out


@cache
def _warn_missing() -> None:
    log.warning("the text signal is listed but rapidocr-onnxruntime is not installed "
                "(pip install 'counterfeit-detector[text]'): scoring without it")


def _strength(match: NameMatch, line: OcrLine, config: ScoringConfig) -> float:
    text = config.text
    return text.score * line.confidence - text.distance_penalty * match.distance - text.ordinary_penalty * match.ordinary
