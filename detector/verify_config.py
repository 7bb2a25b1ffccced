"""Options of geometric verification and of the descriptor vote (:class:`VerifyConfig`)."""

from __future__ import annotations

from dataclasses import dataclass

from detector.errors import ConfigError
from detector.features import METHODS

ACCEPTANCES: tuple[str, ...] = ("count", "a_contrario")
CHANCE_AREAS: tuple[str, ...] = ("image", "matches")
RIVAL_TESTS: tuple[str, ...] = ("off", "on")


@dataclass(frozen=True)
class VerifyConfig:
    """Options of the verification stage.

    Attributes:
        enabled: False skips verification; fused score == embedding score.
        method: ``"sift"`` (robust to rotation/scale/recolouring) or ``"orb"`` (faster).
        chroma: Features also from the chroma channel (:func:`extract_features`), at query
            and at indexing time. Greyscale alone misses marks whose colour differs from
            the background but not their brightness: measured on benchmark seed 0
            (effnet-lite0, default scoring), rank-1 recall of large / small logos in photos
            0.26 / 0.14 without, 0.68 / 0.38 with, for ~11 ms more per 640x480 photo.
            An index built without it still works; re-index to give references theirs.
        ratio: Lowe's ratio test: keep a match if best < ratio * second-best distance.
        min_inliers: Fewest RANSAC inliers (distinct query keypoints) to accept (with
            ``acceptance`` ``"count"``).
        acceptance: ``"count"``: a fit is accepted with ``min_inliers`` inliers or more;
            ``"a_contrario"``: when its number of false alarms under the chance model of
            :mod:`detector.chance` is small, ``log10 NFA <= max_log_nfa`` — the inliers a fit
            needs then grow with the matches it chose from, the listing's size and the
            tolerance, instead of one count fitted to one logo collection. Either way
            :attr:`Verification.log_nfa` is reported.
        max_log_nfa: The a-contrario acceptance's bound on ``log10 NFA`` (0: fewer than one
            fit this good expected by chance over the listing's verified references).
        chance_area: The area chance matches spread over in the chance model: ``"image"``
            (the listing's) or ``"matches"`` (the convex hull of the ratio-test matches'
            listing positions; matches bunched in a small patch then fit a homography by
            chance, as measured on the benchmark: chance fits of 6-9 inliers had all their
            matches within 100-1,600 px^2 of a 640x480 listing).
        ransac_reproj_threshold: RANSAC inlier tolerance in pixels of the query's working copy.
        ransac_max_iters: RANSAC iterations.
        query_max_side: Query photos are downscaled to this longer side before extraction.
        query_max_features: Keypoints kept per query photo (strongest first).
        reference_max_side: Reference images are downscaled to this longer side.
        reference_max_features: Keypoints kept per reference.
        top_candidates: How many first-stage candidates per query get verified.
        kinds: Reference kinds that are verified. Logos only by default: a product photo is
            matched by its whole frame, and local features on a product photo mostly describe
            its scene, which honest listings photographed in similar scenes share.
        weight: Largest bonus verification can add to the embedding score.
        inlier_cap: Inliers at which the bonus saturates.
        min_area_fraction: Smallest projected reference area, as a fraction of the query area.
        max_area_fraction: Largest projected reference area, as a fraction of the query area.
        max_distortion: Largest ratio between the projected outline's side-length ratios and
            the reference's (rejects extreme stretch/perspective, typical of false fits).
        min_corner_angle: Smallest interior angle of the projected outline, degrees
            (rejects extreme shear: a real tilted logo keeps corners near 90).
        product_candidates: Product candidates (highest cosine first) whose reference knows
            its logo's box get the logo-area check (:func:`logo_area_verdict`); 0 turns it off.
        logo_weight: What the check adds to (logo area matched) or takes from (scene matched,
            logo area not) a product candidate's score.
        logo_confirm_share: Share of the reference keypoints in the logo area that must be
            RANSAC inliers (and at least ``logo_min_inliers``) for "matched". The box also
            holds scene around the mark (a ring, a thin wordmark), which a listing cropped from
            the same scene matches too; measured, top 3 product candidates: at 0.3, 4 of 262
            such candidates on seed 0 and 11 of 244 on seed 1 were "matched" (each a false
            flag); at 0.5, 1 and 0, while 76-80 % of re-posts stay "matched".
        logo_missing_share: At most this share, with at least ``logo_min_keypoints`` keypoints
            in the area, is "missing" (seed 0: re-posts all above 0.3 where the area had 3
            or more keypoints; same-scene listings 95 % at or below 0.2).
        logo_min_inliers: See ``logo_confirm_share``.
        logo_min_keypoints: See ``logo_missing_share``; fewer keypoints decide nothing.
        local_candidates: References found by voting with the listing's local descriptors
            (:class:`detector.local_search.LocalFeatureIndex`) that are verified besides
            the embedding's top candidates; 0 turns the search off. Measured on the tuning
            set it brings logos the embedding ranks low (small, recoloured, busy scenes).
        local_ratio: Ratio test of that vote, across references.
        rival_test: The ratio test across brands (:mod:`detector.rivals`): an inlier is the
            brand's own when its match is clearly closer (``ratio``) than any other brand's
            logo descriptor, since a part two brands' marks share is evidence for neither.
            ``"on"``: a fit with fewer than ``min_inliers`` own inliers rests on a shared
            part, and only its own inliers are fused into the score (a fit with enough keeps
            all, so its score is unchanged); ``"off"``: not applied (nor computed).
        rival_fits: The rival test across whole fits (:func:`detector.rivals.rival_fits`):
            ``"on"``: an accepted logo fit counts only when it has ``min_inliers`` inliers
            more than every other brand's accepted logo fit on the same listing area (box
            IoU >= 0.5); one that does not is rejected (reason ``rival fit``), since that area
            is a part the brands' marks share. ``"off"``: not applied.
        rival_ratio: An inlier is the brand's own when its match distance is below
            ``rival_ratio`` times the nearest other brand's logo descriptor: by default the
            verification's own Lowe ratio (0.75, "clearly closer"); 1.0 means merely closer.
            Measured trade-off (docs/benchmarks.md): 1.0 keeps the main benchmark's recall
            at the table (0.693) and removes fewer false flags on the flag sets (5 %, 5 %
            against 2.5 %, 2.5 % at 0.75, whose recall there is 0.670). Needs the descriptor vote (``local_candidates`` > 0).
        local_nprobe: Inverted lists the vote's search visits once the library is large
            enough for an inverted file (:mod:`detector.local_search`); fewer is faster and
            finds fewer of the exact nearest descriptors.
        mirrored: Also run that search on the mirrored listing and verify its candidates
            against it (a mirrored logo is still the brand's, and SIFT does not match
            mirror images); costs a second feature extraction and vote. Ignored while
            ``local_candidates`` is 0.
        cosine_floor: An accepted verification counts the embedding score as at least this
            (see :func:`fuse_scores`); -1 leaves it as it is.
        confirmed_floor: The same for a *confirmed* verification (see ``min_appearance``);
            -1: ``cosine_floor`` applies. A logo confirmed in a photo is then not outranked
            by a product photo of the same scene that its whole frame resembles (measured,
            effnet-lite0 default scoring, benchmark seed 0: rank-1 recall of small logos
            0.38 -> 0.48 at 0.85, recoloured 0.54 -> 0.66; the tuned thresholds move with
            it, recall at them is unchanged).
        min_appearance: An accepted verification of a reference with an appearance thumbnail
            is *confirmed* (:attr:`Verification.confirmed`; the scorer then holds the match
            to the ``<kind>:verified`` threshold) only when the listing's region, rectified
            by the homography, agrees with it at least this much (:func:`rectified_similarity`);
            -1: every accepted verification is confirmed. RANSAC over ~40 candidates a
            listing finds chance homographies with 6-12 inliers that pass every geometric
            check; measured on two benchmark tuning sets (seeds 0 and 2, effnet-lite0's
            default scoring), the 7 accepted verifications of a wrong brand agreed 0.06-0.45,
            147 of 156 true ones 0.5 or more (median 0.9). It does not reject: a thin logo
            on a cluttered photo can agree as little as 0.15 though truly there, so a
            verification that is not confirmed keeps its fused score and its kind's threshold.
    """

    enabled: bool = True
    method: str = "sift"
    chroma: bool = True
    ratio: float = 0.75
    min_inliers: int = 10
    ransac_reproj_threshold: float = 5.0
    ransac_max_iters: int = 2000
    query_max_side: int = 1024
    query_max_features: int = 2000
    reference_max_side: int = 512
    reference_max_features: int = 1000
    top_candidates: int = 10
    kinds: tuple[str, ...] = ("logo",)
    weight: float = 0.5
    inlier_cap: int = 50
    min_area_fraction: float = 0.0005
    max_area_fraction: float = 1.5
    max_distortion: float = 4.0
    min_corner_angle: float = 30.0
    product_candidates: int = 3
    logo_weight: float = 0.1
    logo_confirm_share: float = 0.5
    logo_missing_share: float = 0.2
    logo_min_inliers: int = 5
    logo_min_keypoints: int = 10
    local_candidates: int = 0
    local_ratio: float = 0.8
    local_nprobe: int = 16
    mirrored: bool = False
    cosine_floor: float = -1.0
    confirmed_floor: float = -1.0
    min_appearance: float = 0.5
    acceptance: str = "count"
    max_log_nfa: float = 0.0
    chance_area: str = "matches"
    rival_test: str = "on"
    rival_fits: str = "on"
    rival_ratio: float = 0.75

    @property
    def chance_tests(self) -> int:
        """References verified per listing at most, the ``N_tests`` of the chance model:
        the top candidates and the voted ones (twice with the mirrored listing)."""
        voted = self.local_candidates * (2 if self.mirrored else 1)
        return max(1, self.top_candidates + voted)

    def __post_init__(self) -> None:
        positive = {
            "ransac_reproj_threshold": self.ransac_reproj_threshold,
            "ransac_max_iters": self.ransac_max_iters,
            "inlier_cap": self.inlier_cap,
        }
        at_least = {
            "min_inliers": (self.min_inliers, 4),  # a homography needs 4 points
            "query_max_side": (self.query_max_side, 32),
            "reference_max_side": (self.reference_max_side, 32),
            "query_max_features": (self.query_max_features, 4),
            "reference_max_features": (self.reference_max_features, 4),
            "top_candidates": (self.top_candidates, 0),
            "max_distortion": (self.max_distortion, 1.0),
            "product_candidates": (self.product_candidates, 0),
            "logo_min_inliers": (self.logo_min_inliers, 1),
            "logo_min_keypoints": (self.logo_min_keypoints, 1),
            "local_candidates": (self.local_candidates, 0),
            "local_nprobe": (self.local_nprobe, 1),
        }
        checks = [
            (self.method in METHODS,
             f"method must be one of {', '.join(METHODS)}, got {self.method!r}"),
            (0.0 < self.ratio <= 1.0, f"ratio must be in (0, 1], got {self.ratio}"),
            (0.0 < self.local_ratio <= 1.0, f"local_ratio must be in (0, 1], got {self.local_ratio}"),
            (-1.0 <= self.cosine_floor <= 1.0, f"cosine_floor must be in [-1, 1], got {self.cosine_floor}"),
            (-1.0 <= self.confirmed_floor <= 1.0, f"confirmed_floor must be in [-1, 1], got {self.confirmed_floor}"),
            (-1.0 <= self.min_appearance <= 1.0, f"min_appearance must be in [-1, 1], got {self.min_appearance}"),
            (self.local_candidates == 0 or self.method == "sift",
             "local_candidates needs method 'sift' (ORB descriptors are binary)"),
            (0.0 <= self.weight <= 1.0, f"weight must be in [0, 1], got {self.weight}"),
            (0.0 <= self.logo_weight <= 1.0, f"logo_weight must be in [0, 1], got {self.logo_weight}"),
            (0.0 <= self.logo_missing_share < self.logo_confirm_share <= 1.0,
             (f"need 0 <= logo_missing_share < logo_confirm_share <= 1, got "
              f"{self.logo_missing_share}, {self.logo_confirm_share}")),
            (0.0 <= self.min_area_fraction < self.max_area_fraction,
             (f"need 0 <= min_area_fraction < max_area_fraction, got "
              f"{self.min_area_fraction}, {self.max_area_fraction}")),
            (self.acceptance in ACCEPTANCES,
             f"acceptance must be one of {', '.join(ACCEPTANCES)}, got {self.acceptance!r}"),
            (self.chance_area in CHANCE_AREAS,
             f"chance_area must be one of {', '.join(CHANCE_AREAS)}, got {self.chance_area!r}"),
            (0.0 < self.rival_ratio <= 1.0, f"rival_ratio must be in (0, 1], got {self.rival_ratio}"),
            (self.rival_fits in RIVAL_TESTS,
             f"rival_fits must be one of {', '.join(RIVAL_TESTS)}, got {self.rival_fits!r}"),
            (self.rival_test in RIVAL_TESTS,
             f"rival_test must be one of {', '.join(RIVAL_TESTS)}, got {self.rival_test!r}"),
            (-1000.0 <= self.max_log_nfa <= 10.0, f"max_log_nfa must be in [-1000, 10], got {self.max_log_nfa}"),
            (0.0 <= self.min_corner_angle < 90.0,
             f"min_corner_angle must be in [0, 90), got {self.min_corner_angle}"),
        ]
        checks += [(v > 0, f"{k} must be > 0, got {v}") for k, v in positive.items()]
        checks += [(v >= lo, f"{k} must be >= {lo}, got {v}") for k, (v, lo) in at_least.items()]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
