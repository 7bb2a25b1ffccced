"""Geometric verification of the top candidates: local features, ratio test, RANSAC homography.

The first stage (embeddings) ranks references; this second stage checks the best few by
matching local features (SIFT by default, ORB as a faster patent-free-era fallback) and
fitting a homography with RANSAC. Logos are planar, so a true match yields many inliers of
one plausible homography; the reference's outline projected through it localises the logo
in the listing photo. Reference features are extracted once at indexing time and stored as
opaque bytes (:meth:`LocalFeatures.to_bytes`, a NumPy ``.npz`` loaded with
``allow_pickle=False``; never pickle).

Score fusion (:func:`fuse_scores`)::

    fused = embedding_score + weight * min(inliers, inlier_cap) / inlier_cap
    (with an accepted verification, embedding_score counts as at least cosine_floor;
     with a confirmed one, at least confirmed_floor)

``inliers`` is the count of an *accepted* verification (0 otherwise, see
:attr:`Verification.accepted_inliers`). The bonus lies in ``[0, weight]``, so the fused score
is monotone non-decreasing in both arguments, equals the embedding score when there is no
geometric support, and stays in the thresholds' range [-1, 2] for weight <= 1. The floor
exists because a logo small in a photo has a low whole-region cosine however many of its
keypoints RANSAC confirms, while chance homographies that pass the sanity checks are rare
(on the tuning set, 0-2 of 100 logo-free listings among 10 voted candidates each). Thresholds
are tuned on the fused score. With ``enabled=False`` the fused score is the embedding score.

An accepted verification is also *confirmed* when the listing's region, rectified by the
homography, lines up with the reference's edges (:func:`rectified_similarity`, on a 64 px
thumbnail stored with each logo's features). Chance homographies pass the geometric checks
with a few inliers but land on unrelated texture; only confirmed matches are held to the
thresholds table's ``logo:verified`` entry (:mod:`detector.thresholds`).

Cost on a 2-core CPU (measured): query features for a 640x480 photo ~65 ms (SIFT, up to
2000 keypoints); verify() ~0.4 ms median per pair (~3 ms for detailed logos); a reference's
features take ~7 KiB. Flat one-colour marks yield few keypoints (often < 30), so
verification mostly confirms detailed logos; region embeddings must carry flat ones.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import cache, cached_property
from itertools import pairwise
from typing import Any, Literal

import numpy as np
from PIL import Image

from detector.errors import ConfigError, DetectorError, ImageLoadError

Method = Literal["sift", "orb"]
_METHODS: tuple[str, ...] = ("sift", "orb")
_FORMAT_VERSION = 1
APPEARANCE_SIDE = 64  # pixels of a reference's appearance thumbnail (4 KiB a logo)


@dataclass(frozen=True, eq=False)
class LocalFeatures:
    """Keypoints and descriptors of one image.

    Attributes:
        keypoints: float32 (n, 2) x, y in pixels of the *original* image (not the working copy).
        descriptors: uint8 (n, d): SIFT (d=128; OpenCV's SIFT values are integers 0-255, so
            uint8 is exact and 4x smaller) or ORB (d=32, binary).
        image_size: (width, height) of the original image.
        scale: Working-copy size / original size (<= 1), kept so pixel tolerances can be
            expressed at the resolution the features were found at.
        method: ``"sift"`` or ``"orb"``; features of different methods never match.
        content: (x0, y0, x1, y1) of the image's content (transparent/uniform borders
            excluded), original pixels. Its projection is the box reported by :func:`verify`,
            so a padded reference view localises the logo itself, not the padding.
        silhouette: Optional uint8 (s, s) canonical mask of a logo reference's mark
            (:func:`detector.silhouettes.canonical_mask`), kept with the features so the
            scorer can check shapes; None for query features and product photos.
        logo_box: Optional (x0, y0, x1, y1) of the brand's logo on a product photo, pixels of
            the image the features were found on (the ``logo_box`` attribute a brand gives
            with the photo); the scorer checks that this area, not only the scene, is in
            the listing (:func:`logo_area_verdict`). None when unknown.
        appearance: Optional uint8 (s, s) greyscale thumbnail of the content box (logo
            references, :func:`appearance_thumbnail`): :func:`verify` compares it with the
            listing's region rectified by the homography. None: no such check.
        pixels: The working copy the features were found on (uint8, ``scale`` times the
            original size): greyscale (h, w), or (h, w, 2) greyscale and chroma when
            extracted with ``chroma``. Kept in memory for :func:`verify`'s appearance check;
            never stored.
    """

    keypoints: np.ndarray
    descriptors: np.ndarray
    image_size: tuple[int, int]
    scale: float
    method: str
    content: tuple[int, int, int, int]
    silhouette: np.ndarray | None = None
    logo_box: tuple[int, int, int, int] | None = None
    appearance: np.ndarray | None = None
    pixels: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.keypoints.shape[0])

    @cached_property
    def matchable(self) -> np.ndarray:
        """Descriptors as matched: RootSIFT float32 for SIFT (computed once: a listing's
        are matched against a dozen references), the binary ones for ORB."""
        return root_sift(self.descriptors) if self.method == "sift" else self.descriptors

    @property
    def nbytes(self) -> int:
        """Memory held by the arrays a stored blob decodes to (``pixels`` excluded)."""
        arrays = (self.keypoints, self.descriptors, self.silhouette, self.appearance)
        return sum(a.nbytes for a in arrays if a is not None)

    def to_bytes(self) -> bytes:
        """Serialise to a compact ``.npz`` (no pickle); inverse of :meth:`from_bytes`."""
        buffer = io.BytesIO()
        extra = {} if self.silhouette is None else {"silhouette": self.silhouette.astype(np.uint8)}
        if self.logo_box is not None:
            extra["logo_box"] = np.array(self.logo_box, dtype=np.int64)
        if self.appearance is not None:
            extra["appearance"] = self.appearance.astype(np.uint8)
        np.savez(
            buffer,
            **extra,
            version=np.array([_FORMAT_VERSION], dtype=np.int32),
            method=np.array([_METHODS.index(self.method)], dtype=np.int32),
            image_size=np.array(self.image_size, dtype=np.int64),
            content=np.array(self.content, dtype=np.int64),
            scale=np.array([self.scale], dtype=np.float64),
            keypoints=np.ascontiguousarray(self.keypoints, dtype=np.float32),
            descriptors=np.ascontiguousarray(self.descriptors, dtype=np.uint8),
        )
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> LocalFeatures:
        """Load features written by :meth:`to_bytes`.

        Raises:
            DetectorError: The bytes are not a valid features blob (corrupt, wrong version,
                inconsistent shapes). Loading never unpickles.
        """
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                arrays = {name: npz[name] for name in npz.files}
            version = int(arrays["version"][0])
            method = _METHODS[int(arrays["method"][0])]
            width, height = (int(v) for v in arrays["image_size"])
            x0, y0, x1, y1 = (int(v) for v in arrays["content"])
            scale = float(arrays["scale"][0])
            keypoints, descriptors = arrays["keypoints"], arrays["descriptors"]
            silhouette = arrays.get("silhouette")  # absent in blobs of older indexes
            logo_box = arrays.get("logo_box")
            logo_box = None if logo_box is None else tuple(int(v) for v in logo_box)
            appearance = arrays.get("appearance")  # absent in blobs of older indexes
        except Exception as e:  # zipfile/ValueError/KeyError/IndexError: all mean "corrupt"
            raise DetectorError(f"invalid local-features blob: {e}") from e
        if version != _FORMAT_VERSION:
            raise DetectorError(f"local-features format {version} is not supported")
        if (
            keypoints.dtype != np.float32
            or descriptors.dtype != np.uint8
            or keypoints.ndim != 2
            or keypoints.shape[1] != 2
            or descriptors.ndim != 2
            or descriptors.shape[0] != keypoints.shape[0]
        ):
            raise DetectorError(
                f"invalid local-features blob: keypoints {keypoints.dtype}{keypoints.shape}, "
                f"descriptors {descriptors.dtype}{descriptors.shape}"
            )
        for name, square in (("silhouette", silhouette), ("appearance", appearance)):
            if square is not None and (square.dtype != np.uint8 or square.ndim != 2 or square.shape[0] != square.shape[1]):
                raise DetectorError(f"invalid local-features blob: {name} {square.dtype}{square.shape}")
        if logo_box is not None and (len(logo_box) != 4 or not (logo_box[0] < logo_box[2] and logo_box[1] < logo_box[3])):
            raise DetectorError(f"invalid local-features blob: logo_box {logo_box}")
        return cls(
            keypoints, descriptors, (width, height), scale, method, (x0, y0, x1, y1), silhouette, logo_box,
            appearance,
        )


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
        min_inliers: Fewest RANSAC inliers (distinct query keypoints) to accept.
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
            (self.method in _METHODS,
             f"method must be one of {', '.join(_METHODS)}, got {self.method!r}"),
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
            (0.0 <= self.min_corner_angle < 90.0,
             f"min_corner_angle must be in [0, 90), got {self.min_corner_angle}"),
        ]
        checks += [(v > 0, f"{k} must be > 0, got {v}") for k, v in positive.items()]
        checks += [(v >= lo, f"{k} must be >= {lo}, got {v}") for k, (v, lo) in at_least.items()]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)


@dataclass(frozen=True)
class Verification:
    """Outcome of verifying one (query, reference) pair.

    Attributes:
        inliers: RANSAC inliers, counted as distinct query keypoints (0 if no model was fit).
        matches: Matches that passed the ratio test.
        homography: 3x3 reference-to-query homography as nested tuples, or None.
        box: The reference outline projected into the query, as an axis-aligned
            (x0, y0, x1, y1) box clipped to the query image, or None.
        accepted: True when inliers >= min_inliers and the homography passed sanity checks.
        reason: Why it was rejected ("" when accepted), for analysts and debugging.
        logo_keypoints: Reference keypoints inside the reference's ``logo_box`` (0 without one).
        logo_inliers: How many of them are RANSAC inliers.
        logo_box: The logo box projected into the query (clipped), when a homography was fit.
        appearance: Edge agreement of the rectified listing region with the reference's
            appearance thumbnail (:func:`rectified_similarity`), when it was checked.
        confirmed: Accepted, and the appearance (when checked) reaches ``min_appearance``.
    """

    inliers: int
    matches: int
    homography: tuple[tuple[float, ...], ...] | None
    box: tuple[int, int, int, int] | None
    accepted: bool
    reason: str = ""
    logo_keypoints: int = 0
    logo_inliers: int = 0
    logo_box: tuple[int, int, int, int] | None = None
    appearance: float | None = None
    confirmed: bool = False

    @property
    def accepted_inliers(self) -> int:
        """Inliers to fuse: the count when accepted, else 0."""
        return self.inliers if self.accepted else 0


def extract_features(
    image: Image.Image, *, max_side: int, max_features: int, method: str = "sift", chroma: bool = False
) -> LocalFeatures:
    """Detect keypoints and compute descriptors on a downscaled copy: greyscale, and with
    ``chroma`` its chroma channel too.

    Args:
        image: Any-mode PIL image (transparency is composited on white).
        max_side: Longer side of the working copy (never upscaled).
        max_features: Keypoints kept, strongest first (over both channels with ``chroma``).
        method: ``"sift"`` or ``"orb"``.
        chroma: Also detect on the chroma channel (:func:`chroma_channel`), at half the
            working copy's resolution, so a mark that differs from its background in colour
            but hardly in brightness (red on grey, green on grey) has keypoints at all.

    Returns:
        Features with keypoints in the original image's pixel coordinates.

    Raises:
        ImageLoadError: Not a PIL image, or empty.
        ConfigError: Unknown method or non-positive limits.

    Example:
        >>> f = extract_features(Image.new("RGB", (64, 64)), max_side=64, max_features=100)
        >>> len(f), f.method
        (0, 'sift')
    """
    import cv2  # deferred: opencv is an optional extra ("verify")

    from detector.reference_prep import composite_on_white, content_box

    if method not in _METHODS:
        raise ConfigError(f"method must be one of {', '.join(_METHODS)}, got {method!r}")
    if max_side < 1 or max_features < 1:
        raise ConfigError(f"max_side and max_features must be >= 1, got {max_side}, {max_features}")
    if not isinstance(image, Image.Image):
        raise ImageLoadError("<image>", f"expected a PIL image, got {type(image).__name__}")
    width, height = image.size
    if width < 1 or height < 1:
        raise ImageLoadError("<image>", f"empty image of size {image.size}")

    scale = min(1.0, max_side / max(width, height))
    working = composite_on_white(image).convert("RGB")
    if scale < 1.0:
        working = working.resize(
            (max(1, round(width * scale)), max(1, round(height * scale))), Image.Resampling.LANCZOS
        )
    grey = np.asarray(working.convert("L"))
    channels = [(grey, 1)]  # (channel, its pixel size in working-copy pixels)
    pixels = grey
    if chroma and min(working.size) >= 2:
        # Half resolution: a JPEG stores chroma at half resolution anyway (4:2:0), and it
        # costs a quarter of the full-size pass.
        channels.append((chroma_channel(working.reduce(2)), 2))
        pixels = np.dstack([grey, chroma_channel(working)])
    def detect(channel: np.ndarray) -> tuple[Any, Any]:
        detector = cv2.SIFT_create(nfeatures=max_features) if method == "sift" else cv2.ORB_create(nfeatures=max_features)
        return detector.detectAndCompute(channel, None)

    # The other channels run in worker threads: OpenCV's own threads leave a core idle for
    # part of each extraction (measured, grey + chroma of 640x480 photos: 57 -> 48 ms).
    pending = [_channel_pool().submit(detect, channel) for channel, _ in channels[1:]]
    results = [detect(channels[0][0])] + [p.result() for p in pending]
    found: list[tuple[float, float, float, np.ndarray]] = []  # (x, y, response, descriptor)
    for (keypoints, descriptors), (_, step) in zip(results, channels):
        if descriptors is not None:  # x, y: continuous working-copy coordinates
            found += [((k.pt[0] + 0.5) * step, (k.pt[1] + 0.5) * step, k.response, d)
                      for k, d in zip(keypoints, descriptors)]
    found.sort(key=lambda f: -f[2])  # the strongest over all channels
    found = found[:max_features]
    dim = 128 if method == "sift" else 32
    if not found:
        points = np.zeros((0, 2), dtype=np.float32)
        descriptors = np.zeros((0, dim), dtype=np.uint8)
    else:
        # Working-copy pixel centres back to original coordinates.
        points = (np.array([f[:2] for f in found], dtype=np.float32) / scale - 0.5).astype(np.float32)
        descriptors = np.clip(np.rint(np.stack([f[3] for f in found])), 0, 255).astype(np.uint8)
    content = content_box(image) or (0, 0, width, height)
    return LocalFeatures(points, descriptors, (width, height), float(scale), method, content, pixels=pixels)


def mirror_features(features: LocalFeatures) -> LocalFeatures:
    """The SIFT features of the horizontally mirrored image, without extracting them again.

    SIFT finds the mirror image of the same keypoints in a mirrored image, and a mirrored
    keypoint's descriptor is its descriptor with the rows of its 4x4 grid reversed and its
    gradient orientations negated (the keypoint's own orientation ``a`` becomes ``180 - a``,
    so the frame's y axis flips). Measured on a 640x480 listing photo against extracting
    again: 90 % of the keypoints are found again at the mirrored position (within half a
    pixel: OpenCV places keypoints a quarter pixel off), their descriptors differ by a
    median 6 % (L1, relative) from the extracted ones; the extraction costs ~30 ms.

    Raises:
        ConfigError: ORB features (their binary tests have no such permutation).
    """
    if features.method != "sift":
        raise ConfigError(f"only SIFT features can be mirrored, got {features.method!r}")
    width = features.image_size[0]
    keypoints = features.keypoints.copy()
    keypoints[:, 0] = (width - 1) - keypoints[:, 0]  # pixel centres
    x0, y0, x1, y1 = features.content
    logo_box = features.logo_box
    if logo_box is not None:
        logo_box = (width - logo_box[2], logo_box[1], width - logo_box[0], logo_box[3])
    return replace(
        features,
        keypoints=keypoints,
        descriptors=np.ascontiguousarray(features.descriptors[:, _SIFT_MIRRORED]),
        content=(width - x1, y0, width - x0, y1),
        silhouette=_flipped(features.silhouette),
        logo_box=logo_box,
        appearance=_flipped(features.appearance),
        pixels=_flipped(features.pixels),
    )


def _flipped(array: np.ndarray | None) -> np.ndarray | None:
    return None if array is None else np.ascontiguousarray(array[:, ::-1])


def _sift_mirror_permutation() -> np.ndarray:
    """Column order that turns SIFT descriptors into their mirror images' (see
    :func:`mirror_features`): OpenCV lays a descriptor out as (row, column, orientation bin)
    of a 4x4 grid of 8-bin histograms."""
    order = np.empty(128, dtype=np.int64)
    for row in range(4):
        for col in range(4):
            for o in range(8):
                order[((3 - row) * 4 + col) * 8 + (-o) % 8] = (row * 4 + col) * 8 + o
    return order


_SIFT_MIRRORED = _sift_mirror_permutation()


@cache
def _channel_pool() -> ThreadPoolExecutor:
    """Threads for the extra channels of :func:`extract_features` (shared; a few callers
    extracting at once queue briefly rather than oversubscribe the cores)."""
    return ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2), thread_name_prefix="features")


def chroma_channel(image: Image.Image) -> np.ndarray:
    """max(R, G, B) - min(R, G, B) per pixel, uint8: 0 on white, grey and black, high on
    saturated colour whatever its hue (so a hue-shifted logo keeps its keypoints)."""
    import cv2

    red, green, blue = cv2.split(np.asarray(image.convert("RGB")))  # 10x numpy's max(axis=2)
    return cv2.subtract(cv2.max(cv2.max(red, green), blue), cv2.min(cv2.min(red, green), blue))


def query_features(image: Image.Image, config: VerifyConfig) -> LocalFeatures:
    """Features of a listing photo with the query limits of ``config``."""
    return extract_features(
        image, max_side=config.query_max_side, max_features=config.query_max_features,
        method=config.method, chroma=config.chroma,
    )


def reference_features(image: Image.Image, config: VerifyConfig) -> LocalFeatures:
    """Features of a reference view with the reference limits of ``config``; store ``to_bytes()``."""
    return extract_features(
        image, max_side=config.reference_max_side, max_features=config.reference_max_features,
        method=config.method, chroma=config.chroma,
    )


Neighbours = tuple[np.ndarray, np.ndarray]
"""(indices, distances), each (n, 2): a reference's descriptors' two nearest query descriptors."""


def nearest_two(query: LocalFeatures, references: Sequence[LocalFeatures]) -> list[Neighbours | None]:
    """For each reference, the two nearest query descriptors of each of its descriptors.

    SIFT: one exact search (FAISS, a BLAS matrix product) for all references together —
    they are all matched against the same listing, and batched this is ~3x faster than a
    brute-force matcher per reference (15 references of 100-600 keypoints against 1,000:
    9.5 vs 30 ms on 2 cores). ORB: OpenCV's Hamming matcher per reference.

    Returns:
        Per reference, (indices, Euclidean / Hamming distances), or None where there is
        nothing to match (fewer than two query or one reference keypoint, another method).
    """
    import cv2

    usable = [len(query) >= 2 and len(r) >= 1 and r.method == query.method for r in references]
    found: list[Neighbours | None] = [None] * len(references)
    if query.method == "sift":
        rows = [root_sift(r.descriptors) for r, ok in zip(references, usable) if ok]
        if rows:
            import faiss

            squared, indices = faiss.knn(np.concatenate(rows), query.matchable, 2)
            distances = np.sqrt(np.maximum(squared, 0.0))
            offsets = np.cumsum([0] + [len(r) for r in rows])
            matched = [i for i, ok in enumerate(usable) if ok]
            for i, (start, stop) in zip(matched, pairwise(offsets)):
                found[i] = (indices[start:stop], distances[start:stop])
        return found
    matcher = cv2.BFMatcher(cv2.NORM_HAMMING)
    for i, (reference, ok) in enumerate(zip(references, usable)):
        if ok:
            pairs = matcher.knnMatch(reference.descriptors, query.matchable, k=2)
            full = [p if len(p) == 2 else (p[0], p[0]) for p in pairs]  # a lone match fails the ratio test
            found[i] = (np.array([[p[0].trainIdx, p[1].trainIdx] for p in full], dtype=np.int64).reshape(-1, 2),
                        np.array([[p[0].distance, p[1].distance] for p in full], dtype=np.float32).reshape(-1, 2))
    return found


def verify(
    query: LocalFeatures, reference: LocalFeatures, config: VerifyConfig, neighbours: Neighbours | None = None
) -> Verification:
    """Match reference features into the query and fit a RANSAC homography.

    Each reference keypoint is matched to its two nearest query keypoints (the query has
    many more, mostly background) and kept if it passes the ratio test.

    Args:
        query: Features of the listing photo.
        reference: Features of the reference (e.g. from :meth:`LocalFeatures.from_bytes`).
        config: Thresholds.
        neighbours: The reference's entry of :func:`nearest_two` when already computed
            (the scorer batches its candidates); computed here when None.

    Returns:
        A Verification; ``accepted`` is False with a ``reason`` when evidence is missing or
        the homography is degenerate (tiny/huge/flipped area, non-convex outline, shear).

    Raises:
        ConfigError: The two feature sets were made with different methods.

    Example:
        >>> empty = extract_features(Image.new("RGB", (32, 32)), max_side=32, max_features=10)
        >>> verify(empty, empty, VerifyConfig()).accepted
        False
    """
    import cv2

    if query.method != reference.method:
        raise ConfigError(f"cannot match {reference.method} features against {query.method}")
    if len(query) < 2 or len(reference) < 2:
        return Verification(0, 0, None, None, False, "too few keypoints")

    indices, distances = neighbours if neighbours is not None else nearest_two(query, [reference])[0]
    good_refs = np.flatnonzero(distances[:, 0] < config.ratio * distances[:, 1])  # reference keypoints
    good_queries = indices[good_refs, 0]  # their matches in the query
    if len(good_refs) < config.min_inliers:
        return Verification(0, len(good_refs), None, None, False, f"{len(good_refs)} ratio-test matches")

    src = reference.keypoints[good_refs].reshape(-1, 1, 2)
    dst = query.keypoints[good_queries].reshape(-1, 1, 2)
    # The tolerance is meant at the resolution features were found at; points are in original px.
    threshold = config.ransac_reproj_threshold / query.scale
    homography, mask = cv2.findHomography(
        src, dst, cv2.RANSAC, threshold, maxIters=config.ransac_max_iters, confidence=0.995
    )
    if homography is None or mask is None:
        return Verification(0, len(good_refs), None, None, False, "no homography found")
    inlier_idx = np.flatnonzero(mask.ravel())
    # Several reference points snapping to one query point is not independent evidence.
    inliers = len(np.unique(good_queries[inlier_idx]))
    as_tuple = tuple(tuple(float(v) for v in row) for row in homography)

    outline = _project_outline(homography, reference.content)
    x0, y0, x1, y1 = reference.content
    reason = _degenerate(outline, (x1 - x0, y1 - y0), query.image_size, config)
    box = _clipped_box(outline, query.image_size) if outline is not None else None
    if not reason and inliers < config.min_inliers:
        reason = f"{inliers} inliers < {config.min_inliers}"
    if not reason and box is None:
        reason = "projected outline lies outside the query"
    appearance = None
    if not reason and config.min_appearance > -1 and reference.appearance is not None and query.pixels is not None:
        appearance = rectified_similarity(query, reference, homography)
    confirmed = not reason and (appearance is None or appearance >= config.min_appearance)
    logo = {}
    if reference.logo_box is not None:
        lx0, ly0, lx1, ly1 = reference.logo_box
        points = reference.keypoints
        inside = (points[:, 0] >= lx0) & (points[:, 0] < lx1) & (points[:, 1] >= ly0) & (points[:, 1] < ly1)
        inlier_refs = good_refs[inlier_idx]  # distinct: each reference keypoint matches once
        projected = _project_outline(homography, reference.logo_box)
        logo = {
            "logo_keypoints": int(inside.sum()),
            "logo_inliers": int(inside[inlier_refs].sum()),
            "logo_box": _clipped_box(projected, query.image_size) if projected is not None else None,
        }
    return Verification(
        inliers, len(good_refs), as_tuple, box, not reason, reason, appearance=appearance, confirmed=confirmed, **logo
    )


def appearance_thumbnail(features: LocalFeatures, side: int = APPEARANCE_SIDE) -> np.ndarray | None:
    """The content box of the image ``features`` were found on, greyscale, ``side`` x ``side``
    (aspect not kept: the rectified listing region is resampled the same way); None when
    the features do not hold their working copy.
    """
    import cv2

    if features.pixels is None:
        return None
    x0, y0, x1, y1 = (round(v * features.scale) for v in features.content)
    grey = features.pixels if features.pixels.ndim == 2 else features.pixels[..., 0]
    height, width = grey.shape
    crop = grey[max(0, y0) : min(height, max(y1, y0 + 1)), max(0, x0) : min(width, max(x1, x0 + 1))]
    if crop.size == 0:
        return None
    return cv2.resize(crop, (side, side), interpolation=cv2.INTER_AREA)


def rectified_similarity(query: LocalFeatures, reference: LocalFeatures, homography: np.ndarray) -> float:
    """How well the listing region the homography maps the reference onto lines up with the
    reference's edges: edge-orientation agreement in [-1, 1] on the appearance grid.

    Both are resampled to the reference's appearance thumbnail; at each pixel near one of
    the reference's edges, the cosine between the two gradients' *doubled* angles (blind to
    the gradient's sign, so to recolouring and inversion), weighted by the reference's edge
    strength. A true match lines the mark's edges up; a chance homography, or the same logo
    shifted by a sixth of its size, lands on unrelated texture (measured, two detailed logos
    pasted on a busy photo: 0.55-0.58 aligned, 0.03 shifted, where a plain gradient
    correlation gave 0.07-0.20 aligned; the thin Ferrari horse at other placements on the
    same photo 0.15-0.47, as the photo's own edges show between its strokes). When the
    query's pixels hold a chroma channel, its orientation tensor is added to the greyscale
    one, so a mark that differs from the photo only in colour still shows its edges (a red
    mark on a grey photo of the same brightness). Needs ``query.pixels`` and
    ``reference.appearance``.
    """
    import cv2

    if query.pixels is None or reference.appearance is None:
        raise ValueError("rectified_similarity needs the query's pixels and the reference's appearance")
    side = reference.appearance.shape[0]
    work = 2 * side  # sample finer, then average down like the thumbnail was
    x0, y0, x1, y1 = reference.content
    grid_to_reference = np.array(
        [[(x1 - x0) / work, 0.0, x0], [0.0, (y1 - y0) / work, y0], [0.0, 0.0, 1.0]]
    )
    to_working = np.diag([query.scale, query.scale, 1.0])
    grid_to_query = to_working @ np.asarray(homography, dtype=np.float64) @ grid_to_reference
    patch = cv2.warpPerspective(
        query.pixels, grid_to_query, (work, work),
        flags=cv2.WARP_INVERSE_MAP | cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE,
    )
    patch = cv2.resize(patch, (side, side), interpolation=cv2.INTER_AREA)
    (ua, va), (ub, vb) = _doubled_angle(reference.appearance), _doubled_angle(patch)
    strength_a, strength_b = np.hypot(ua, va), np.hypot(ub, vb)  # squared gradient norms
    agreement = (ua * ub + va * vb) / (strength_a * strength_b + 1e-6)
    edges = (strength_a > 0.0625 * strength_a.max()).astype(np.uint8)  # |g| above a quarter of the max
    near = cv2.dilate(edges, np.ones((5, 5), np.uint8)) > 0
    weight = np.sqrt(strength_a) * near
    return float((agreement * weight).sum() / max(float(weight.sum()), 1e-6))


def logo_area_verdict(result: Verification, config: VerifyConfig) -> int:
    """+1 when a product photo's logo area is matched, -1 when it is missing, 0 undecided.

    A re-posted product photo shows the whole photo, logo included. A listing photographed
    in the same scene (or cropped from the same stock photo) matches the scene's keypoints
    as well — hundreds of inliers — but not the logo's. So the share of the logo area's
    reference keypoints that are RANSAC inliers decides; too few keypoints there (a plain
    logo on a plain photo), or no homography, decide nothing.

    Example:
        >>> h = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
        >>> v = Verification(300, 320, h, None, True, logo_keypoints=40, logo_inliers=0)
        >>> logo_area_verdict(v, VerifyConfig())
        -1
    """
    if result.homography is None or result.logo_keypoints == 0:
        return 0
    share = result.logo_inliers / result.logo_keypoints
    if share >= config.logo_confirm_share and result.logo_inliers >= config.logo_min_inliers:
        return 1
    if share <= config.logo_missing_share and result.logo_keypoints >= config.logo_min_keypoints:
        return -1
    return 0


def fuse_scores(embedding_score: float, inliers: int, config: VerifyConfig, confirmed: bool = False) -> float:
    """First-stage score plus a bounded geometric bonus.

    ``fused = base + weight * min(inliers, inlier_cap) / inlier_cap`` where ``base`` is the
    embedding score, raised to ``cosine_floor`` when there are inliers (to ``confirmed_floor``
    when the verification is also ``confirmed``); the embedding score unchanged when
    verification is disabled. Pass :attr:`Verification.accepted_inliers` (0 for unverified or
    rejected candidates).

    Example:
        >>> fuse_scores(0.6, 25, VerifyConfig(weight=0.4, inlier_cap=50))
        0.8
        >>> round(fuse_scores(0.3, 25, VerifyConfig(weight=0.4, inlier_cap=50, cosine_floor=0.7)), 6)
        0.9
        >>> round(fuse_scores(0.3, 25, VerifyConfig(weight=0.4, inlier_cap=50, confirmed_floor=0.85), True), 6)
        1.05
    """
    if not config.enabled:
        return float(embedding_score)
    support = min(max(int(inliers), 0), config.inlier_cap) / config.inlier_cap
    floor = max(config.cosine_floor, config.confirmed_floor if confirmed else -1.0)
    base = max(float(embedding_score), floor) if support > 0 else float(embedding_score)
    return base + config.weight * support


# --- internals -----------------------------------------------------------------------------


def root_sift(descriptors: np.ndarray) -> np.ndarray:
    """RootSIFT (Arandjelovic & Zisserman 2012): L1-normalise, square-root.

    Euclidean distance on it is the Hellinger kernel on SIFT histograms, which matches
    noticeably better than plain L2 at no cost.
    """
    d = descriptors.astype(np.float32)
    return np.sqrt(d / np.maximum(d.sum(axis=1, keepdims=True), 1e-7))


def _doubled_angle(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gradient as (gx^2 - gy^2, 2 gx gy): its angle doubled, so opposite gradients agree."""
    import cv2

    pixels = image.astype(np.float32)
    gx = cv2.Sobel(pixels, cv2.CV_32F, 1, 0)
    gy = cv2.Sobel(pixels, cv2.CV_32F, 0, 1)
    u, v = gx * gx - gy * gy, 2 * gx * gy
    if u.ndim == 3:  # several channels: their tensors add up (Di Zenzo's colour gradient)
        u, v = u.sum(axis=2), v.sum(axis=2)
    return u, v


def _project_outline(
    homography: np.ndarray, box: tuple[int, int, int, int]
) -> np.ndarray | None:
    """The box's corners (clockwise from top-left on screen) mapped into the query, (4, 2)."""
    x0, y0, x1, y1 = box
    corners = np.array([[x0, y0, 1], [x1, y0, 1], [x1, y1, 1], [x0, y1, 1]], dtype=np.float64)
    projected = corners @ homography.T
    if np.any(projected[:, 2] <= 1e-9):
        return None  # a corner maps through the horizon: not a view of a planar logo
    return projected[:, :2] / projected[:, 2:3]


def _degenerate(
    outline: np.ndarray | None,
    ref_size: tuple[int, int],
    query_size: tuple[int, int],
    config: VerifyConfig,
) -> str:
    """Reason the projected outline is implausible, or "" if it looks like a real view."""
    if outline is None:
        return "outline crosses the horizon"
    edges = np.roll(outline, -1, axis=0) - outline
    # z of consecutive edge cross products: all positive for a convex, non-flipped quad
    # (image y points down, corners clockwise on screen => positive in this convention).
    following = np.roll(edges, -1, axis=0)
    turns = edges[:, 0] * following[:, 1] - edges[:, 1] * following[:, 0]
    if np.all(turns < 0):
        return "mirrored outline"
    if not np.all(turns > 0):
        return "non-convex outline"
    x, y = outline[:, 0], outline[:, 1]
    area = 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))
    fraction = area / float(query_size[0] * query_size[1])
    if fraction < config.min_area_fraction:
        return f"projected area {fraction:.2e} of the query is too small"
    if fraction > config.max_area_fraction:
        return f"projected area {fraction:.2f}x the query is too large"
    lengths = np.linalg.norm(edges, axis=1)  # top, right, bottom, left
    w, h = ref_size
    aspect_change = ((lengths[0] + lengths[2]) / (lengths[1] + lengths[3])) / (w / h)
    perspective = max(
        lengths[0] / lengths[2], lengths[2] / lengths[0], lengths[1] / lengths[3],
        lengths[3] / lengths[1],
    )
    if max(aspect_change, 1 / aspect_change, perspective) > config.max_distortion:
        return "outline too stretched or foreshortened"
    cosines = -np.sum(edges * following, axis=1) / (lengths * np.roll(lengths, -1))
    smallest = float(np.degrees(np.arccos(np.clip(cosines, -1.0, 1.0))).min())
    if smallest < config.min_corner_angle:
        return f"outline too sheared (corner of {smallest:.0f} degrees)"
    return ""


def _clipped_box(outline: np.ndarray, size: tuple[int, int]) -> tuple[int, int, int, int] | None:
    width, height = size
    x0 = int(np.clip(np.floor(outline[:, 0].min()), 0, width))
    y0 = int(np.clip(np.floor(outline[:, 1].min()), 0, height))
    x1 = int(np.clip(np.ceil(outline[:, 0].max()), 0, width))
    y1 = int(np.clip(np.ceil(outline[:, 1].max()), 0, height))
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1
