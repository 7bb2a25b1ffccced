"""Fusion and decision: each candidate's evidence → one score → each brand's best → the flag.

The fused score of a candidate (see docs/scoring.md):

* a product photo checked by the logo-area signal: ``cosine + logo_weight`` when its mark
  (given or located at indexing) is matched in the listing or the whole frame agrees at
  re-post grade, else ``cosine - logo_weight`` (mark missing, undecided or not found: a
  product match never counts on the whole-frame cosine alone);
* otherwise ``fuse_scores(cosine, accepted inliers)`` (:func:`detector.verify.fuse_scores`)
  ``+ shape_bonus`` when a mark's shape passes the reference's floor, and with
  ``shape_score`` at least ``shape_score + shape_score_weight * support``. A cosine that
  comes from a mark's silhouette counts only when the shape confirms it
  (``silhouettes.confirm_iou``; else the best over the other regions);
* evidence of any other signal with a ``score`` raises the candidate's score to it; when it
  decides the score and declares a ``threshold_basis`` (the text signal), the match is held to
  the ``<kind>:<basis>`` threshold and takes that evidence's box.

A listing is flagged for the highest-scoring brand whose score reaches its own threshold
(:mod:`detector.thresholds`: per brand, per kind, per verified kind).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from PIL import Image

from detector.scoring_config import ScoringConfig
from detector.shape_scores import shape_bonus, shape_support
from detector.signals.base import Evidence
from detector.signals.embedding import SilhouetteCosine
from detector.signals.local_features import GeometricEvidence
from detector.signals.logo_area import LogoAreaEvidence
from detector.signals.shape import ShapeEvidence
from detector.thresholds import Thresholds, threshold_key
from detector.verdict import Box, ScoredMatch, Verdict
from detector.verify import fuse_scores

# Evidence the rules above read field by field; any other signal's is fused by its ``score``.
_DEDICATED = (SilhouetteCosine, GeometricEvidence, ShapeEvidence, LogoAreaEvidence)


@dataclass(frozen=True)
class BrandScore:
    """Best evidence for one brand in one listing image (what evaluation consumes)."""

    brand: str
    score: float
    kind: str
    ref_id: int
    verified: bool = False
    basis: str | None = None  # the evidence that decided the score, when it has its own key

    @property
    def threshold_key(self) -> str:
        """Which thresholds entry this evidence is held to (:func:`threshold_key`)."""
        return threshold_key(self.kind, self.verified, self.basis)


def fuse(
    candidates: Sequence[ScoredMatch], evidence: Mapping[int, Mapping[str, Evidence]], config: ScoringConfig
) -> list[ScoredMatch]:
    """Each candidate with its fused score, best first (ties by ref id). ``evidence`` holds,
    per ref id, each signal's evidence by signal name."""
    fused = [fuse_one(m, evidence.get(m.ref_id, {}), config) for m in candidates]
    fused.sort(key=lambda m: (-m.score, m.ref_id))
    return fused


def fuse_one(m: ScoredMatch, evidence: Mapping[str, Evidence], config: ScoringConfig) -> ScoredMatch:
    """One candidate's fused score (see the module docstring)."""
    by_type = {type(e): e for e in evidence.values()}
    others = {name: e for name, e in evidence.items() if not isinstance(e, _DEDICATED)}
    area = by_type.get(LogoAreaEvidence)
    if isinstance(area, LogoAreaEvidence):
        # A product match counts only with evidence about its mark (matched) or re-post-grade
        # agreement of the whole frame. Without either, the score is reduced by logo_weight
        # rather than capped: fusion does not know the per-brand thresholds (tuned afterwards
        # on this score), and a reduction keeps the score monotone in the cosine, so products
        # still rank among themselves; with logo_weight 0.1, a cosine <= 1 then stays below
        # every product threshold above 0.9.
        sign = 1 if area.counts else -1
        m = replace(m, score=m.cosine + config.verify.logo_weight * sign, inliers=area.inliers,
                    box=area.box or m.box, logo_area=area.label)
    elif len(others) < len(evidence):
        m = _fuse_image_evidence(m, by_type, config)
    return _with_other_signals(m, others) if others else m


def _fuse_image_evidence(m: ScoredMatch, by_type: dict[type, Evidence], config: ScoringConfig) -> ScoredMatch:
    scfg = config.silhouettes
    geometric, shape, plain = by_type.get(GeometricEvidence), by_type.get(ShapeEvidence), by_type.get(SilhouetteCosine)
    cosine = m.cosine
    if isinstance(plain, SilhouetteCosine) and not (
        isinstance(shape, ShapeEvidence) and shape.iou >= max(scfg.confirm_iou, shape.floor)
    ):
        cosine = plain.plain
    score, inliers, box, located, mirrored, confirmed = cosine, m.inliers, m.box, False, False, False
    if isinstance(geometric, GeometricEvidence) and geometric.result is not None:
        result = geometric.result
        score = fuse_scores(cosine, result.accepted_inliers, config.verify, result.confirmed)
        inliers, confirmed, mirrored = result.inliers, result.confirmed, geometric.mirrored
        located = result.accepted and result.box is not None
        box = result.box if located else m.box
    iou = None
    if isinstance(shape, ShapeEvidence):
        iou = shape.iou
        if (support := shape_support(iou, shape.floor)) > 0:
            score += shape_bonus(iou, scfg, shape.floor)
            if scfg.shape_score > 0:
                score = max(score, scfg.shape_score + scfg.shape_score_weight * support)
            if not located:
                box = shape.box  # the shape located the mark; RANSAC did not
    return replace(m, score=score, inliers=inliers, box=box, shape_iou=iou, mirrored=mirrored, verified=confirmed)


def _with_other_signals(m: ScoredMatch, others: Mapping[str, Evidence]) -> ScoredMatch:
    score = max([m.score] + [e.score for e in others.values() if e.score is not None])
    details = {**m.signals, **{name: e.detail() for name, e in others.items()}}
    box = m.box
    decisive = [(name, e) for name, e in others.items() if e.score is not None and e.score == score > m.score]
    if decisive and decisive[0][1].threshold_basis:
        name, e = decisive[0]
        details[name] = {**details[name], "threshold_basis": e.threshold_basis}
        box = getattr(e, "box", None) or box
    return replace(m, score=score, signals=details, box=box)


def best_per_brand(candidates: Sequence[ScoredMatch]) -> list[BrandScore]:
    """Candidates must be sorted by score, best first; keeps each brand's first (best) one."""
    seen: dict[str, BrandScore] = {}
    for m in candidates:
        if m.brand not in seen:
            basis = next((d["threshold_basis"] for d in m.signals.values() if d.get("threshold_basis")), None)
            seen[m.brand] = BrandScore(m.brand, m.score, m.kind, m.ref_id, m.verified, basis)
    return list(seen.values())


def decide(
    name: str, image: Image.Image, candidates: Sequence[ScoredMatch], brand_scores: Sequence[BrandScore],
    thresholds: Thresholds, top_k: int,
) -> Verdict:
    """The verdict: the highest-scoring brand that reaches its own threshold is flagged; when
    none does, the best brand is reported unflagged with the threshold it missed."""
    top = tuple(candidates[:top_k])
    if not brand_scores:
        return Verdict(image=name, matches=top)
    by_ref = {m.ref_id: m for m in candidates}
    chosen, flagged = brand_scores[0], False
    for bs in brand_scores:
        if bs.score >= thresholds.for_match(bs.brand, bs.threshold_key).value:
            chosen, flagged = bs, True
            break
    applied = thresholds.for_match(chosen.brand, chosen.threshold_key)
    evidence = by_ref[chosen.ref_id]
    return Verdict(
        image=name, flagged=flagged, brand=chosen.brand, score=chosen.score,
        threshold=applied.value, threshold_source=applied.source, matches=top,
        box=_clip_box(evidence.box, image) if evidence.box is not None else None,
    )


def _clip_box(box: Box, image: Image.Image) -> Box:
    x0, y0, x1, y1 = box
    x0 = min(max(int(x0), 0), image.width)
    x1 = min(max(int(x1), x0), image.width)
    y0 = min(max(int(y0), 0), image.height)
    y1 = min(max(int(y1), y0), image.height)
    return (x0, y0, x1, y1)
