"""Local features: the listing's descriptors vote for references (:mod:`detector.local_search`),
and the top candidates are verified by descriptor matching and a RANSAC homography
(:func:`detector.verify.verify`), with the appearance check of the rectified region.

With ``verify.mirrored`` the mirrored listing votes and is verified too (SIFT alone cannot
see a mirrored logo); the better verification counts, reported with ``mirrored`` and its box
mapped back to the listing's pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from PIL import ImageOps

from detector.descriptor_vote import StoredDescriptorIndex
from detector.local_search import LocalFeatureIndex
from detector.rivals import BrandNeighbours, OwnerBrands, rival_fits
from detector.signals.base import Evidence, Listing, ReferenceImage, Signal
from detector.signals.geometry import STATE_KEY, GeometricMatching, listing_pool, nearest_pairs
from detector.verdict import Box, ScoredMatch
from detector.verify import (
    LocalFeatures,
    Verification,
    VerifyConfig,
    appearance_thumbnail,
    mirror_features,
    query_features,
    verify,
)


@dataclass(frozen=True)
class GeometricEvidence(Evidence):
    """A RANSAC verification of one candidate (against the mirrored listing when that was
    the better one, its boxes mapped back)."""

    result: Verification | None = None
    mirrored: bool = False

    def detail(self) -> dict[str, object]:
        r = self.result
        return {} if r is None else {"inliers": r.inliers, "accepted": r.accepted, "reason": r.reason,
                                     "confirmed": r.confirmed, "mirrored": self.mirrored, "log_nfa": r.log_nfa,
                                     "own_inliers": r.own_inliers}


@dataclass
class _VoteScan:
    voted: frozenset[int] = frozenset()  # references the listing's descriptors voted for
    mirrored: LocalFeatures | None = None  # the mirrored listing's features (verify.mirrored)
    mirrored_voted: frozenset[int] = frozenset()
    ransac: tuple[int, ...] = ()  # candidates to verify, in ranked order
    # The vote's neighbour search with its owners' brands, kept for the rival test
    # (verify.rival_test "on"); the same for the mirrored listing.
    rivals: BrandNeighbours | None = None
    mirrored_rivals: BrandNeighbours | None = None


class LocalFeatureSignal(Signal):
    """Descriptor vote (candidates) and RANSAC verification (evidence)."""

    name = "local_features"

    @classmethod
    def active(cls, config) -> bool:
        return config.verify.enabled

    @classmethod
    def reference_fields(cls, reference: ReferenceImage, stored: LocalFeatures, config: VerifyConfig) -> dict:
        """A logo's appearance thumbnail (verification's appearance check); the local
        features themselves are the stored record's base (reference_side)."""
        return {"appearance": appearance_thumbnail(stored)} if reference.kind == "logo" else {}

    def start(self, listing: Listing) -> None:
        vcfg = self.config.verify
        # Extracted in a worker thread while the regions and the model run: the embedder
        # leaves a core free for image decoding, idle by now.
        pending = listing_pool().submit(query_features, listing.image, vcfg) if vcfg.local_candidates > 0 else None
        listing.state[STATE_KEY] = GeometricMatching(listing.image, vcfg, pending)
        listing.state[self.name] = _VoteScan()

    def propose(self, listing: Listing, candidates: Sequence[ScoredMatch]) -> list[list[int]]:
        vcfg = self.config.verify
        if vcfg.local_candidates <= 0:
            return []
        features = listing.state[STATE_KEY].features()
        scan: _VoteScan = listing.state[self.name]
        scan.voted, scan.rivals = self._vote(listing, features)
        groups = [list(scan.voted)]
        if vcfg.mirrored:  # a mirrored logo is still the brand's
            scan.mirrored = (mirror_features(features) if vcfg.method == "sift"
                             else query_features(ImageOps.mirror(listing.image), vcfg))
            scan.mirrored_voted, scan.mirrored_rivals = self._vote(listing, scan.mirrored)
            groups.append(list(scan.mirrored_voted))
        return groups

    def _vote(
        self, listing: Listing, features: LocalFeatures
    ) -> tuple[frozenset[int], BrandNeighbours | None]:
        """The references voted for, and (rival test on) the neighbour search with its
        owners' brands."""
        vcfg = self.config.verify
        index, brands = self._vote_index(listing)
        near = index.neighbours(features)
        votes = index.vote(features, vcfg.local_candidates, vcfg.local_ratio, near=near)
        rivals = BrandNeighbours.of(near, brands) if near is not None and vcfg.rival_test == "on" else None
        return frozenset(rid for rid, _ in votes), rivals

    def _vote_index(self, listing: Listing) -> tuple[LocalFeatureIndex | StoredDescriptorIndex, OwnerBrands]:
        """The local descriptors of the index's current generation and their owners'
        brands, gathered on first use: the on-disk store's (memory-mapped) when the index
        keeps one, else all in memory."""

        def build() -> tuple[LocalFeatureIndex | StoredDescriptorIndex, OwnerBrands]:
            kinds = set(self.config.verify.kinds)
            refs = [r for r in listing.index.references() if r.kind in kinds]
            ids = [r.id for r in refs]
            nprobe = self.config.verify.local_nprobe
            index: LocalFeatureIndex | StoredDescriptorIndex | None = StoredDescriptorIndex.open(
                listing.index.path, ids, lambda missing: self.references.features(listing.index, missing), nprobe)
            if index is None:
                index = LocalFeatureIndex.from_features(self.references.features(listing.index, ids), nprobe)
            return index, OwnerBrands.of({r.id: r.brand for r in refs})

        return self.references.per_generation("local_vote", listing.index, build)

    def plan(self, listing: Listing, candidates: Sequence[ScoredMatch]) -> None:
        """Verify the top candidates by cosine and every one the descriptors voted for."""
        vcfg = self.config.verify
        scan: _VoteScan = listing.state[self.name]
        voted = scan.voted | scan.mirrored_voted
        ranked = ranked_eligible(candidates, vcfg.kinds)
        chosen = [m.ref_id for i, m in enumerate(ranked) if i < vcfg.top_candidates or m.ref_id in voted]
        stored = self.references.features(listing.index, chosen)
        scan.ransac = tuple(rid for rid in chosen if rid in stored)
        listing.state[STATE_KEY].request((rid, stored[rid]) for rid in scan.ransac)

    def evidence(self, listing: Listing, candidates: Sequence[ScoredMatch]) -> dict[int, Evidence]:
        scan: _VoteScan = listing.state[self.name]
        if not scan.ransac:
            return {}
        matching: GeometricMatching = listing.state[STATE_KEY]
        vcfg = self.config.verify
        stored = self.references.features(listing.index, scan.ransac)
        features = matching.features()
        flipped_ids = [rid for rid in scan.ransac if rid in scan.mirrored_voted]
        flipped_neighbours = nearest_pairs(scan.mirrored, flipped_ids, stored)
        brand_of = {m.ref_id: m.brand for m in candidates}
        found: dict[int, Evidence] = {}
        for rid in scan.ransac:
            brand = brand_of.get(rid, "")
            rivals = scan.rivals.rivals(brand) if scan.rivals is not None else None
            result = verify(features, stored[rid], vcfg, matching.neighbours(rid), rivals)
            mirrored = False
            if scan.mirrored is not None and rid in scan.mirrored_voted:
                flipped_rivals = scan.mirrored_rivals.rivals(brand) if scan.mirrored_rivals is not None else None
                flipped = verify(scan.mirrored, stored[rid], vcfg, flipped_neighbours[rid], flipped_rivals)
                if flipped.accepted_inliers > result.accepted_inliers:
                    result, mirrored = unmirrored(flipped, listing.image.width), True
            found[rid] = GeometricEvidence(result=result, mirrored=mirrored)
        if vcfg.rival_fits == "on":
            self._reject_rival_fits(found, candidates)
        return found

    def _reject_rival_fits(self, found: dict[int, GeometricEvidence], candidates: Sequence[ScoredMatch]) -> None:
        """Reject the logo fits another brand's logo fit on the same area explains nearly as
        well. Product photos are left out: two brands' photos of one scene share their
        background, and the logo-area check (:mod:`detector.signals.logo_area`) decides those."""
        logos = {m.ref_id: m.brand for m in candidates if m.kind == "logo"}
        accepted = {
            rid: (logos[rid], e.result.box, e.result.inliers)
            for rid, e in found.items() if rid in logos and e.result is not None and e.result.accepted
        }  # fmt: skip
        for rid, rival in rival_fits(accepted, self.config.verify.min_inliers).items():
            evidence = found[rid]
            assert evidence.result is not None
            rejected = replace(evidence.result, accepted=False, confirmed=False,
                               reason=f"rival fit: another brand's fit on this area has {rival} inliers")
            found[rid] = replace(evidence, result=rejected)


def ranked_eligible(candidates: Sequence[ScoredMatch], kinds: Sequence[str]) -> list[ScoredMatch]:
    """The candidates of the kinds verification covers, best cosine first (ties keep order)."""
    return sorted((m for m in candidates if m.kind in kinds), key=lambda m: -m.cosine)


def unmirrored(result: Verification, width: int) -> Verification:
    """A verification against the mirrored listing, with its boxes back in the listing's pixels."""

    def flip(box: Box | None) -> Box | None:
        return None if box is None else (width - box[2], box[1], width - box[0], box[3])

    return replace(result, box=flip(result.box), logo_box=flip(result.logo_box))
