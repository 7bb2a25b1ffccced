"""The signal package: a new signal is one module and a registry entry; the registry checks
names; fusion's rules; what the signals store per reference."""

from __future__ import annotations

import io
from dataclasses import dataclass

import pytest
from PIL import Image

from detector.errors import ConfigError
from detector.scoring import Detector, ScoringConfig
from detector.signals import DEFAULT_SIGNALS, Evidence, Listing, Signal, available, register
from detector.signals.registry import BUILTIN, check_names
from detector.verdict import ScoredMatch


@dataclass(frozen=True)
class NameHint(Evidence):
    word: str = ""

    def detail(self) -> dict[str, object]:
        return {"score": self.score, "word": self.word}


class BrandInFileName(Signal):
    """A trivial test signal: a listing whose file name contains a brand's name proposes that
    brand's references and supports them with a fixed score."""

    name = "brand_in_file_name"
    SCORE = 1.7

    def _brands(self, listing: Listing) -> dict[str, list[int]]:
        found: dict[str, list[int]] = {}
        for ref in listing.index.references():
            if ref.brand in listing.name:
                found.setdefault(ref.brand, []).append(ref.id)
        return found

    def propose(self, listing, candidates):
        return list(self._brands(listing).values())

    def evidence(self, listing, candidates):
        brands = self._brands(listing)
        return {m.ref_id: NameHint(score=self.SCORE, word=m.brand) for m in candidates if m.brand in brands}


def test_a_new_signal_is_one_class_and_a_registry_entry(tiny_index_dir, sample_set):
    register(BrandInFileName)
    assert "brand_in_file_name" in available()
    brand = min(p.name for p in sample_set.references_dir.iterdir())
    photo = io.BytesIO()
    Image.new("RGB", (96, 64), (200, 180, 160)).save(photo, format="PNG")  # a blank photo: nothing to see
    signals = list(DEFAULT_SIGNALS) + ["brand_in_file_name"]
    with Detector.open(tiny_index_dir, device="cpu", config={"signals": signals}) as det:
        verdict = det.score(photo.getvalue(), name=f"listing-{brand}.png")
        plain = det.score(photo.getvalue(), name="listing.png")
    assert verdict.flagged and verdict.brand == brand and verdict.score == pytest.approx(BrandInFileName.SCORE)
    top = verdict.matches[0]
    assert top.brand == brand and top.signals == {"brand_in_file_name": {"score": BrandInFileName.SCORE, "word": brand}}
    assert verdict.to_dict()["matches"][0]["signals"]["brand_in_file_name"]["word"] == brand  # in the JSON too
    assert all(not m.signals for m in plain.matches) and plain.score < BrandInFileName.SCORE


def test_the_registry_checks_signal_names():
    assert DEFAULT_SIGNALS == tuple(cls.name for cls in BUILTIN) == ScoringConfig().signals
    with pytest.raises(ConfigError, match="unknown signal.*registered: embedding"):
        check_names(("embedding", "nope"))
    with pytest.raises(ConfigError, match="twice"):
        check_names(("embedding", "shape", "shape"))
    with pytest.raises(ConfigError, match="must start with 'embedding'"):
        check_names(("shape", "embedding"))

    class Nameless(Signal):
        pass

    with pytest.raises(ConfigError, match="needs a name"):
        register(Nameless)


def test_a_profile_without_a_signal_scores_without_it(tiny_index_dir, sample_set):
    """Leaving a signal out of ``signals`` is the same as switching its section off."""
    listing = min((sample_set.labels_path.parent / "listings").glob("*.jpg"))
    no_verify = {"verify": {"enabled": False}}
    with Detector.open(tiny_index_dir, device="cpu", config=no_verify) as det:
        off = det.score(listing)
    without = {"signals": ["embedding", "shape"]}
    with Detector.open(tiny_index_dir, device="cpu", config=without) as det:
        names = [s.name for s in det.signals]
        assert names[0] == "embedding" and "local_features" not in names and "logo_area" not in names
        left_out = det.score(listing)
    assert [(m.ref_id, m.score, m.inliers) for m in left_out.matches] == [(m.ref_id, m.score, m.inliers) for m in off.matches]


def _candidate(**fields) -> ScoredMatch:
    base = {"ref_id": 1, "brand": "acme", "kind": "logo", "product_id": None, "score": 0.5, "source": "s",
            "cosine": 0.5}
    return ScoredMatch(**{**base, **fields})


def test_fusion_rules():
    from detector.fusion import fuse, fuse_one
    from detector.signals.embedding import SilhouetteCosine
    from detector.signals.local_features import GeometricEvidence
    from detector.signals.logo_area import LogoAreaEvidence
    from detector.signals.shape import ShapeEvidence
    from detector.verify import Verification, fuse_scores

    config = ScoringConfig.from_dict({"verify": {"weight": 0.4, "inlier_cap": 50}, "silhouettes": {"enabled": True}})
    m = _candidate()
    assert fuse_one(m, {}, config) == m  # no evidence: the cosine stands
    accepted = Verification(25, 30, ((1.0, 0, 0), (0, 1.0, 0), (0, 0, 1.0)), (1, 2, 3, 4), True, confirmed=True)
    verified = fuse_one(m, {"local_features": GeometricEvidence(result=accepted)}, config)
    assert verified.score == pytest.approx(fuse_scores(0.5, 25, config.verify, True)) and verified.verified
    assert verified.box == (1, 2, 3, 4) and verified.inliers == 25
    # a silhouette's cosine counts only when the shape confirms the mark
    plain = {"embedding": SilhouetteCosine(plain=0.2)}
    assert fuse_one(m, plain, config).score == pytest.approx(0.2)
    confirmed = {**plain, "shape": ShapeEvidence(iou=0.99, floor=0.6, box=(5, 5, 9, 9))}
    shaped = fuse_one(m, confirmed, config)
    assert shaped.score > 0.5 and shaped.shape_iou == 0.99 and shaped.box == (5, 5, 9, 9)
    # a product photo's logo area moves its cosine by logo_weight
    product = _candidate(kind="product")
    missing = fuse_one(product, {"logo_area": LogoAreaEvidence(outcome=-1, inliers=300)}, config)
    assert missing.score == pytest.approx(0.5 - config.verify.logo_weight) and missing.logo_area == "missing"
    # re-post-grade agreement of the whole frame counts, unless the known mark is seen missing
    repost = fuse_one(product, {"logo_area": LogoAreaEvidence(outcome=0, repost=True)}, config)
    assert repost.score == pytest.approx(0.5 + config.verify.logo_weight) and repost.logo_area == "repost"
    swapped = fuse_one(product, {"logo_area": LogoAreaEvidence(outcome=-1, repost=True)}, config)
    assert swapped.score == pytest.approx(0.5 - config.verify.logo_weight)
    # a product candidate below the verified top ones has no evidence about its mark: never its cosine alone
    unchecked = fuse_one(product, {"logo_area": LogoAreaEvidence(mark="unchecked")}, config)
    assert unchecked.score == pytest.approx(0.5 - config.verify.logo_weight)
    assert unchecked.logo_area == "not checked" and unchecked.inliers is None
    # best first, ties by ref id
    ranked = fuse([_candidate(ref_id=3), _candidate(ref_id=2), _candidate(ref_id=4, score=0.9, cosine=0.9)], {}, config)
    assert [r.ref_id for r in ranked] == [4, 2, 3]


def test_each_signal_declares_what_it_stores_per_reference():
    import numpy as np
    from PIL import ImageDraw

    from detector.signals.base import ReferenceImage
    from detector.signals.reference_side import reference_side_data
    from detector.verify import VerifyConfig

    logo = Image.new("RGBA", (120, 120), (0, 0, 0, 0))
    ImageDraw.Draw(logo).polygon([(10, 100), (60, 10), (110, 100)], fill=(200, 30, 30, 255))
    stored = reference_side_data(ReferenceImage(logo, logo.convert("RGB"), "logo"), VerifyConfig())
    assert stored.silhouette is not None and stored.appearance is not None and stored.logo_box is None
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 300, 3), dtype=np.uint8))
    view = photo.resize((150, 100))
    product = ReferenceImage(photo, view, "product", {"logo_box": [30, 40, 130, 140]})
    stored = reference_side_data(product, VerifyConfig())
    assert stored.logo_box == (15, 20, 65, 70) and stored.silhouette is None and stored.appearance is None
    with pytest.raises(ValueError, match="logo_box"):
        reference_side_data(ReferenceImage(photo, view, "product", {"logo_box": [0, 0, 900, 10]}), VerifyConfig())
