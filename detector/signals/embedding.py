"""Embedding search: the listing's whole frame (and regions, and views other signals add,
such as mark silhouettes) embedded in one model batch and searched in the FAISS index.

It is the signal every profile has: its candidates come first, and every other signal's
proposals are scored by their best allowed region's cosine (:meth:`EmbeddingSignal.by_cosine`),
so that the fused score has one scale. Kinds are matched for what they are: a ``product``
reference (an official product photo) by the whole frame only, a ``logo`` by any region.

With ``normalise.enabled`` every cosine is normalised against a background set
(:mod:`detector.background`): each view's cosines less ``beta`` times its k-th highest cosine
to the background. The background is embedded with the detector's model
(``EmbeddingSignal.embed``, set by the detector) once per index and model and stored with the
index.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from detector.background import build_background, normalised, offsets_for
from detector.regions import FRAME_SOURCES, OFFERED_SOURCES, Region, crop_regions, propose_regions
from detector.signals.base import Evidence, Listing, Signal
from detector.verdict import ScoredMatch
from index.records import Reference

if TYPE_CHECKING:
    from detector.scoring_config import ScoringConfig
    from detector.signals.reference_data import ReferenceData


@dataclass
class EmbeddingScan:
    """The listing's embedded views and their search results (rows aligned with ``regions``)."""

    regions: list[Region]
    crops: list[Image.Image]
    vectors: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    scores: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    ref_ids: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.int64))
    # Candidates matched best by a mark's silhouette -> their best cosine over the other regions.
    unconfirmed: dict[int, float] = field(default_factory=dict)
    # Per view, what background normalisation takes off its cosines (None: normalisation off).
    offsets: np.ndarray | None = None

    def cosines(self, rows: Sequence[int] | slice, stored: np.ndarray) -> np.ndarray:
        """Cosines (normalised when on) of the views ``rows`` to a reference's stored vectors."""
        similarity = self.vectors[rows] @ stored.T
        return similarity if self.offsets is None else normalised(similarity, self.offsets[rows])


@dataclass(frozen=True)
class SilhouetteCosine(Evidence):
    """A candidate whose best cosine comes from a mark's silhouette: ``plain`` is its best
    cosine over the other regions, what counts unless the shape confirms the mark."""

    plain: float = 0.0

    def detail(self) -> dict[str, float]:
        return {"plain_cosine": self.plain}


class EmbeddingSignal(Signal):
    """Whole frame, regions and other signals' views, embedded and searched."""

    name = "embedding"

    def __init__(self, config: ScoringConfig, references: ReferenceData) -> None:
        super().__init__(config, references)
        # The detector's model (a batch of images -> their vectors), for the background set.
        self.embed: Callable[[list[Image.Image]], np.ndarray] | None = None
        self._backgrounds: dict[tuple[str, int, int], np.ndarray] = {}
        self._background_lock = threading.Lock()

    def start(self, listing: Listing) -> None:
        regions = propose_regions(listing.image, self.config.regions)  # full frame first
        listing.state[self.name] = EmbeddingScan(regions, crop_regions(listing.image, regions))

    def scan(self, listing: Listing) -> EmbeddingScan:
        return listing.state[self.name]

    def add_regions(self, listing: Listing, offered: Sequence[Region]) -> None:
        """Add the regions other signals offer (:meth:`Signal.offer_regions`) after the
        proposed ones, with their crops: the other signals see them from their ``embed_views``."""
        scan = self.scan(listing)
        scan.regions += offered
        scan.crops += crop_regions(listing.image, list(offered))

    def finish_views(self, listing: Listing, extra: list[tuple[Region, Image.Image]]) -> list[Image.Image]:
        """The crops to embed for this listing: its frames and offered regions (all regions
        with ``embed_crops``) then ``extra``; the other proposed regions only served other
        signals (e.g. to find marks)."""
        scan = self.scan(listing)
        if not self.config.regions.embed_crops:
            kept = [i for i, r in enumerate(scan.regions) if r.source in FRAME_SOURCES | OFFERED_SOURCES]
            scan.regions[:] = [scan.regions[i] for i in kept]
            scan.crops[:] = [scan.crops[i] for i in kept]
        scan.regions += [region for region, _ in extra]
        scan.crops += [view for _, view in extra]
        return scan.crops

    def set_results(self, listing: Listing, vectors: np.ndarray, scores: np.ndarray, ref_ids: np.ndarray) -> None:
        scan = self.scan(listing)
        scan.vectors, scan.scores, scan.ref_ids = vectors, scores, ref_ids
        ncfg = self.config.normalise
        if ncfg.enabled:
            scan.offsets = offsets_for(vectors, self.background(listing), ncfg)
            scan.scores = normalised(scores, scan.offsets)

    def background(self, listing: Listing) -> np.ndarray:
        """The background vectors for the listing's index and the model (built on first use)."""
        index, ncfg = listing.index, self.config.normalise
        key = (str(index.path), ncfg.background, ncfg.seed)
        with self._background_lock:
            if key not in self._backgrounds:  # DetectorError when not stored and no model is set
                self._backgrounds[key] = build_background(index.path, index.fingerprint, ncfg, self.embed)
            return self._backgrounds[key]

    def candidates(self, listing: Listing) -> list[ScoredMatch]:
        """Each reference found by some region, scored by its best allowed region."""
        scan = self.scan(listing)
        best: dict[int, tuple[float, int]] = {}  # refs are looked up once for the whole image
        for r in range(len(scan.regions)):
            for s, rid in zip(scan.scores[r].tolist(), scan.ref_ids[r].tolist()):
                if rid >= 0 and (rid not in best or s > best[rid][0]):
                    best[rid] = (s, r)
        found = []
        for rid, ref in listing.index.get_references(best.keys()).items():
            cosine, region_idx = best_allowed(ref, rid, scan.regions, scan.scores, scan.ref_ids, best)
            if cosine is not None:
                found.append(candidate(ref, cosine, scan.regions[region_idx].box))
        return found

    def by_cosine(self, listing: Listing, ref_ids: Iterable[int], candidates: Sequence[ScoredMatch]) -> list[ScoredMatch]:
        """Candidates for those of ``ref_ids`` not among ``candidates`` yet, each scored by
        its best allowed region's cosine (its stored vectors read back from the index)."""
        scan = self.scan(listing)
        known = {m.ref_id for m in candidates}
        refs = listing.index.get_references([rid for rid in ref_ids if rid not in known])
        stored = listing.index.get_vectors(refs)
        added = []
        for rid, ref in refs.items():
            allowed = [r for r, region in enumerate(scan.regions)
                       if ref.kind != "product" or region.source in FRAME_SOURCES]
            if rid not in stored or not allowed:
                continue
            similarity = scan.cosines(allowed, stored[rid]).max(axis=1)  # best view per region
            best = int(similarity.argmax())
            added.append(candidate(ref, float(similarity[best]), scan.regions[allowed[best]].box))
        return added

    def plan(self, listing: Listing, candidates: Sequence[ScoredMatch]) -> None:
        """Find the candidates whose best similarity comes from a mark's silhouette, with their
        best similarity over the other regions."""
        scan = self.scan(listing)
        marks = [r for r, region in enumerate(scan.regions) if region.source == "silhouette"]
        others = [r for r, region in enumerate(scan.regions) if region.source != "silhouette"]
        if not marks or self.config.silhouettes.confirm_iou <= 0:
            return
        stored = listing.index.get_vectors(m.ref_id for m in candidates if m.kind != "product")
        for rid, views in stored.items():
            similarity = scan.cosines(slice(None), views)  # (regions, views)
            plain = float(similarity[others].max())  # region 0, the whole frame, is never a mark
            if float(similarity[marks].max()) > plain:
                scan.unconfirmed[rid] = plain

    def evidence(self, listing: Listing, candidates: Sequence[ScoredMatch]) -> dict[int, Evidence]:
        return {rid: SilhouetteCosine(plain=plain) for rid, plain in self.scan(listing).unconfirmed.items()}


def best_allowed(
    ref: Reference, rid: int, regions: list[Region], scores: np.ndarray, ref_ids: np.ndarray,
    best: dict[int, tuple[float, int]],
) -> tuple[float | None, int]:
    """Best cosine of a reference over the regions its kind may be matched by, and that
    region's position (``best``: each reference's best cosine and region over all regions)."""
    if ref.kind != "product":
        score, region_idx = best[rid]
        return score, region_idx
    # Product photos are matched by the whole frame only (full, or trimmed of its border).
    found: tuple[float | None, int] = (None, 0)
    for r, region in enumerate(regions):
        if region.source not in FRAME_SOURCES:
            continue
        hits = np.nonzero(ref_ids[r] == rid)[0]
        if len(hits) and (found[0] is None or scores[r][hits[0]] > found[0]):
            found = (float(scores[r][hits[0]]), r)
    return found


def candidate(ref: Reference, cosine: float, box: tuple[int, int, int, int] | None) -> ScoredMatch:
    """A candidate before fusion: its score is its cosine."""
    return ScoredMatch(
        ref_id=ref.id, brand=ref.brand, kind=ref.kind, product_id=ref.product_id,
        score=cosine, source=ref.source, cosine=cosine, inliers=None, box=box,
    )
