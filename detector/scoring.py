"""Detector: open an index and a model once, score listing images many times.

Scoring flow for one listing image::

    load ──► regions (whole frame + windows + proposals) [+ their mark silhouettes]
         ──► embed (one batch) ──► index search per region ──► best allowed region per reference
         [+ references the photo's local descriptors vote for (detector.local_search)]
         [+ logo references the photo's marks resemble in shape (silhouettes.search)]
         ──► verify the top candidates (local features + RANSAC; silhouette shape check)
         ──► fuse ──► thresholds ──► Verdict

Kinds are matched for what they are: a ``product`` reference (an official product photo) is
matched by the whole frame only, a ``logo`` reference by any region.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np
from PIL import Image, ImageOps

from detector.errors import ConfigError, DetectorError, ImageLoadError
from detector.images import DEFAULT_MAX_PIXELS, ImageSource, load_image
from detector.local_search import LocalFeatureIndex
from detector.regions import FRAME_SOURCES, Region, RegionConfig, crop_regions, propose_regions
from detector.silhouettes import (
    CANONICAL_SIDE,
    QueryShapes,
    SilhouetteConfig,
    canonical_mask,
    component_boxes,
    distinct_ious,
    generic_ious,
    query_mask,
    shape_bonus,
    shape_floor,
    shape_support,
    silhouette_image,
)
from detector.thresholds import Thresholds, default_thresholds_path, load_thresholds, threshold_key
from detector.verdict import Box, ScoredMatch, Verdict
from detector.verify import (
    LocalFeatures,
    Neighbours,
    Verification,
    VerifyConfig,
    fuse_scores,
    logo_area_verdict,
    mirror_features,
    nearest_two,
    query_features,
    verify,
)
from index.records import Fingerprint, Reference
from index.store import ReferenceIndex

log = logging.getLogger(__name__)

FEATURES_CACHE_BYTES = 256 * 2**20  # decoded reference features (LocalFeatures.nbytes) kept between calls


@dataclass(frozen=True)
class ScoringConfig:
    """Knobs of the scoring flow. Defaults come from the model preset's ``scoring`` section.

    Attributes:
        top_k: Matches reported per image.
        search_k: Neighbours fetched per region before merging (>= top_k).
        regions: Query-side region proposals (disabled = whole frame only).
        verify: Geometric verification of the top candidates (disabled = cosine only).
        silhouettes: Mark silhouettes of the first regions, embedded and shape-checked.
        search_params: FAISS search parameters, e.g. ``{"efSearch": 128}``.
        max_pixels: Decompression-bomb guard for listing images.
    """

    top_k: int = 5
    search_k: int = 20
    regions: RegionConfig = field(default_factory=RegionConfig)
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    silhouettes: SilhouetteConfig = field(default_factory=SilhouetteConfig)
    search_params: dict[str, Any] = field(default_factory=dict)
    max_pixels: int = DEFAULT_MAX_PIXELS

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> ScoringConfig:
        data = dict(data or {})
        unknown = set(data) - {"top_k", "search_k", "regions", "verify", "silhouettes", "search_params", "max_pixels"}
        if unknown:
            raise ConfigError(f"unknown scoring option(s): {', '.join(sorted(unknown))}")
        base = cls()
        return cls(
            top_k=int(data.get("top_k", base.top_k)),
            search_k=int(data.get("search_k", base.search_k)),
            regions=_override(base.regions, data.get("regions")),
            verify=_override(base.verify, data.get("verify")),
            silhouettes=_override(base.silhouettes, data.get("silhouettes")),
            search_params=dict(data.get("search_params", {})),
            max_pixels=int(data.get("max_pixels", base.max_pixels)),
        )


# Named scoring profiles, applied over a preset's own ``scoring`` defaults. "thorough" finds
# more logos inside photos (a few regions and colour components, their mark silhouettes, shape
# and RANSAC checks, the mirrored listing) at about a third of the default's speed
# (effnet-lite0, 2-core CPU: 3.96 vs 12.6 images/s); see README "Benchmarks" for measured figures.
PROFILES: dict[str, dict[str, Any]] = {
    "fast": {},
    # The preset's defaults without the shape search: the whole frame and local features only
    # (effnet-lite0 on the benchmark: 16.1 vs 12.6 images/s, logos in photos found less often).
    "lean": {"silhouettes": {"enabled": False}},
    "thorough": {
        "regions": {"enabled": True, "max_regions": 5, "embed_crops": False},
        "verify": {"enabled": True, "mirrored": True},
        # The library's silhouette settings, whatever the preset's (effnet-lite0's default only
        # searches marks by shape): marks' silhouettes embedded, shapes checked and added; a
        # shape another brand's logo or a generic shape (a star) comes close to counts less.
        "silhouettes": {**asdict(SilhouetteConfig()), "enabled": True, "distinct_margin": 0.05},
    },
}


def resolve_scoring(preset_defaults: dict[str, Any], options: dict[str, Any] | None) -> tuple[ScoringConfig, str | None]:
    """Scoring settings as preset defaults < ``options["profile"]`` < the other options.

    Returns:
        The config and the profile name (None when not given).

    Raises:
        ConfigError: Unknown profile or option.
    """
    options = dict(options or {})
    profile = options.pop("profile", None)
    if profile is not None and profile not in PROFILES:
        raise ConfigError(f"unknown scoring profile {profile!r}; choose from {', '.join(PROFILES)}")
    merged = merge_options(preset_defaults, PROFILES[profile] if profile else {})
    return ScoringConfig.from_dict(merge_options(merged, options)), profile


def merge_options(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Scoring options ``overrides`` on top of ``base``, section by section (regions, verify)."""
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_options(merged[key], value)
        else:
            merged[key] = value
    return merged


def _override(obj: Any, values: dict[str, Any] | None) -> Any:
    if not values:
        return obj
    try:
        return replace(obj, **{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
    except TypeError as e:
        raise ConfigError(f"bad {type(obj).__name__} option: {e}") from e


@dataclass(frozen=True)
class BrandScore:
    """Best evidence for one brand in one listing image (what evaluation consumes)."""

    brand: str
    score: float
    kind: str
    ref_id: int
    verified: bool = False

    @property
    def threshold_key(self) -> str:
        """Which thresholds entry this evidence is held to (:func:`threshold_key`)."""
        return threshold_key(self.kind, self.verified)


@dataclass(frozen=True)
class Analysis:
    """Everything scoring found for one image; ``verdict`` is its public summary."""

    verdict: Verdict
    brand_scores: tuple[BrandScore, ...] = ()


class Detector:
    """Scores listing images against a reference index. Thread-safe; open once, score many.

    Example:
        >>> det = Detector.open("refs-index")                       # doctest: +SKIP
        >>> det.score("listing.jpg").flagged                        # doctest: +SKIP
        True
    """

    def __init__(
        self,
        index: ReferenceIndex,
        embedder: Any,
        *,
        thresholds: Thresholds,
        config: ScoringConfig | None = None,
    ) -> None:
        if not embedder.fingerprint.is_compatible(index.fingerprint):
            raise DetectorError(
                f"index {index.path} was built with another model "
                f"({index.fingerprint.describe_difference(embedder.fingerprint)}); "
                "score with the index's model or rebuild the index with this one"
            )
        self._index = index
        self.embedder = embedder
        self.thresholds = thresholds
        self.config = config or ScoringConfig()
        # One model call at a time: on CPU parallel calls only fight over the same cores, and
        # the service batches concurrent requests into one call anyway.
        self._model_lock = threading.Lock()
        self._index_lock = threading.Lock()
        self._local: tuple[int, LocalFeatureIndex] | None = None  # (index generation, its descriptors)
        self._local_lock = threading.Lock()
        self._logo_shapes_cache: _LogoShapes | None = None
        # Decoded reference features of the current index generation (decoding costs ~1 ms).
        self._features: dict[int, LocalFeatures] = {}
        self._features_bytes = 0  # LocalFeatures.nbytes held in self._features
        self._unreadable: set[int] = set()  # refs whose blob failed to decode (logged once)
        self._features_generation = -1
        self._features_lock = threading.Lock()

    # ------------------------------------------------------------------ construction
    @classmethod
    def open(
        cls,
        index_dir: str | Path,
        *,
        thresholds: str | Path | Thresholds | None = None,
        config: ScoringConfig | dict[str, Any] | None = None,
        device: str = "auto",
        precision: str | None = None,
        checkpoint: str | Path | None = None,
        batch_size: int | None = None,
        preset: str | None = None,
    ) -> Detector:
        """Open an index read-only and load the model it was built with.

        Args:
            index_dir: Index directory made by ``counterfeit index build``.
            thresholds: A thresholds file or table; default: the preset's shipped file.
            config: Scoring options over the preset's ``scoring`` defaults; a ``"profile"``
                key (see :data:`PROFILES`) applies that profile first and picks its thresholds.
            device, precision, batch_size: Embedder overrides.
            checkpoint: Local weights for the index's architecture (must match the index).
            preset: Preset name when it differs from the one recorded in the index.

        Raises:
            IndexStoreError: the index is missing or corrupt.
            DetectorError: the model does not match the index.
        """
        from detector.embedder import create_embedder

        index = ReferenceIndex.open(index_dir, writable=False)
        fp = index.fingerprint
        try:  # whatever fails below (model, options, thresholds), the index is closed
            embedder = create_embedder(
                preset or fp.preset,
                device=device,
                precision=precision,
                checkpoint=checkpoint,
                batch_size=batch_size,
                random_weights=fp.weights.startswith("random:") and checkpoint is None,
            )
            profile = None
            if isinstance(config, ScoringConfig):
                scoring = config
            else:
                scoring, profile = resolve_scoring(embedder.preset.defaults.get("scoring", {}), config)
            if isinstance(thresholds, Thresholds):
                table = thresholds
            else:
                table = load_thresholds(thresholds or default_thresholds_path(embedder.preset.name, profile))
            return cls(index, embedder, thresholds=table, config=scoring)
        except Exception:
            index.close()
            raise

    @property
    def index(self) -> ReferenceIndex:
        return self._index

    @property
    def fingerprint(self) -> Fingerprint:
        return self.embedder.fingerprint

    def reload_index(self) -> bool:
        """Pick up a newer index generation from disk; in-flight calls finish on the old one."""
        with self._index_lock:
            if self._index.committed_generation() == self._index.generation:
                return False
            fresh = ReferenceIndex.open(self._index.path, writable=False)
            if fresh.generation == self._index.generation:
                fresh.close()
                return False
            if not fresh.fingerprint.is_compatible(self.embedder.fingerprint):
                fresh.close()
                raise DetectorError(f"index {fresh.path} on disk now holds another model's vectors")
            self._index = fresh  # the old object is left to the garbage collector
            return True

    def close(self) -> None:
        self._index.close()

    def __enter__(self) -> Detector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ public scoring API
    def score(self, image: ImageSource, *, name: str | None = None) -> Verdict:
        """Score one image. Raises ImageLoadError for an unreadable image."""
        analysis = self.analyse_images([load_image(image, name=name, max_pixels=self.config.max_pixels)],
                                       [name or _name_of(image)])[0]
        return analysis.verdict

    def score_many(self, images: Sequence[ImageSource], names: Sequence[str] | None = None) -> list[Verdict]:
        """Score a batch; a bad image gives a verdict with ``error`` set, the rest are scored."""
        return [a.verdict for a in self.analyse_many(images, names)]

    def analyse_many(self, images: Sequence[ImageSource], names: Sequence[str] | None = None) -> list[Analysis]:
        """Like :meth:`score_many` but also returns every brand's best score (for evaluation)."""
        names = list(names) if names is not None else [_name_of(s) for s in images]
        if len(names) != len(images):
            raise ValueError("names must have one entry per image")
        loaded: list[Image.Image] = []
        positions: list[int] = []
        results: list[Analysis | None] = [None] * len(images)
        for i, (source, name) in enumerate(zip(images, names)):
            try:
                loaded.append(load_image(source, name=name, max_pixels=self.config.max_pixels))
                positions.append(i)
            except ImageLoadError as e:
                results[i] = Analysis(Verdict.failed(name, str(e)))
        for pos, analysis in zip(positions, self.analyse_images(loaded, [names[p] for p in positions])):
            results[pos] = analysis
        return [r for r in results if r is not None]

    # ------------------------------------------------------------------ the flow
    def analyse_images(self, images: Sequence[Image.Image], names: Sequence[str]) -> list[Analysis]:
        """Score already-loaded RGB images (all regions of all images in one model batch)."""
        if not images:
            return []
        cfg, scfg = self.config, self.config.silhouettes
        index = self._index  # one consistent index for the whole batch, even if reloaded meanwhile
        # Local features (and marks that are only searched by shape) are found in worker
        # threads while the regions and model run here: the embedder leaves a core free for
        # image decoding, idle by now. Marks no worker has started by the time they are needed
        # are segmented here instead (_Stealable).
        pool = _features_pool()
        background_marks = scfg.enabled and not scfg.embed
        pending: list[Future[LocalFeatures] | None] = [None] * len(images)
        shapes_per_image: list[_Stealable[_Marks] | _Marks] = []
        regions_per_image = [propose_regions(img, cfg.regions) for img in images]  # full frame first
        crops: list[Image.Image] = []
        for i, (img, regions) in enumerate(zip(images, regions_per_image)):
            if cfg.verify.enabled and cfg.verify.local_candidates > 0:  # then every listing needs them
                pending[i] = pool.submit(query_features, img, cfg.verify)
            region_crops = crop_regions(img, regions)
            marks: list[tuple[np.ndarray, np.ndarray, Box]] = []
            if background_marks:
                shapes_per_image.append(_Stealable(pool, self._marks_searched, index, list(region_crops), list(regions)))
            else:
                marks, shapes = self._find_marks(index, region_crops, regions)
                shapes_per_image.append(shapes)
            if not cfg.regions.embed_crops:  # the other regions only served to find marks
                frames = sum(r.source in FRAME_SOURCES for r in regions)
                del regions[frames:], region_crops[frames:]
            short = min(img.size)
            regions += [  # each embedded mark's own box
                Region(box, "silhouette", max(box[2] - box[0], box[3] - box[1]) / short) for _, _, box in marks
            ]
            crops += region_crops + [silhouette_image(mask) for mask, _, _ in marks]
        with self._model_lock:
            vectors = self.embedder.embed(crops)
        k = max(cfg.search_k, cfg.top_k)
        scores, ref_ids = index.search_vectors(vectors, k, params=cfg.search_params or None)
        out: list[Analysis] = []
        start = 0
        for img, name, regions, shapes, features in zip(images, names, regions_per_image, shapes_per_image, pending):
            stop = start + len(regions)
            out.append(self._analyse_one(
                index, img, name, regions, vectors[start:stop], scores[start:stop], ref_ids[start:stop],
                shapes.result() if isinstance(shapes, _Stealable) else shapes, features,
            ))
            start = stop
        return out

    def _find_marks(
        self, index: ReferenceIndex, crops: list[Image.Image], regions: list[Region]
    ) -> tuple[list[tuple[np.ndarray, np.ndarray, Box]], _Marks]:
        """The marks of one listing (:meth:`_marks`) and their :class:`_Marks`, with the logo
        references the shape search found; with ``embed``, only the marks some logo
        resembles (``min_shape_iou``): their silhouettes are to be embedded."""
        scfg = self.config.silhouettes
        marks = self._marks(crops, regions)
        shapes = QueryShapes([c for _, c, _ in marks], scfg)
        found: tuple[int, ...] = ()
        embed_filter = scfg.embed and scfg.min_shape_iou > 0
        if marks and (embed_filter or scfg.search > 0):
            logos = self._logo_shapes(index)
            coarse = shapes.coarse(logos.rows)  # (marks, logo references)
            if scfg.search > 0 and coarse.size:
                best = coarse.max(axis=0)
                order = np.argsort(-best, kind="stable")[: scfg.search]
                found = tuple(int(logos.ids[j]) for j in order if best[j] > 0)
            if embed_filter:
                resembled = [i for i, iou in enumerate(coarse.max(axis=1).tolist()) if iou >= scfg.min_shape_iou]
                marks, shapes = [marks[i] for i in resembled], shapes.subset(resembled)
        return marks, _Marks(shapes, [box for _, _, box in marks], found=found)

    def _marks_searched(self, index: ReferenceIndex, crops: list[Image.Image], regions: list[Region]) -> _Marks:
        """:meth:`_find_marks` for marks that are only searched by shape, not embedded."""
        return self._find_marks(index, crops, regions)[1]

    def _marks(
        self, crops: list[Image.Image], regions: list[Region]
    ) -> list[tuple[np.ndarray, np.ndarray, Box]]:
        """(mask, canonical mask, box in the image) of the mark in each of the first regions."""
        scfg = self.config.silhouettes
        if not scfg.enabled:
            return []
        found = []
        pairs = list(zip(crops[: scfg.max_regions], (r.box for r in regions)))
        if scfg.component_marks:
            image = crops[0]  # region 0 is always the whole frame
            pairs += [(image.crop(box), box) for box in component_boxes(image, scfg)]
        for crop, region in pairs:
            mask = query_mask(crop, scfg)
            if mask is None:
                continue
            box = _mask_box(mask, region)
            if scfg.refine and mask.mean() < scfg.refine_below:
                mask, box = self._refined_mark(crop, region, box, mask)
            canonical = canonical_mask(mask)
            if canonical is not None:
                found.append((mask, canonical, box))
        return found

    def _refined_mark(
        self, crop: Image.Image, region: Box, box: Box, mask: np.ndarray
    ) -> tuple[np.ndarray, Box]:
        """Segment again in a tight, padded crop around a small mark; keep the first pass
        if the second finds nothing."""
        x0, y0, x1, y1 = box
        pad_x, pad_y = max(2, (x1 - x0) // 6), max(2, (y1 - y0) // 6)
        tight = (
            max(region[0], x0 - pad_x), max(region[1], y0 - pad_y),
            min(region[2], x1 + pad_x), min(region[3], y1 + pad_y),
        )
        local = (tight[0] - region[0], tight[1] - region[1], tight[2] - region[0], tight[3] - region[1])
        finer = query_mask(crop.crop(local), self.config.silhouettes)
        if finer is None:
            return mask, box
        return finer, _mask_box(finer, tight)

    def _analyse_one(
        self,
        index: ReferenceIndex,
        image: Image.Image,
        name: str,
        regions: list[Region],
        vectors: np.ndarray,
        scores: np.ndarray,
        ref_ids: np.ndarray,
        shapes: _Marks,
        pending: Future[LocalFeatures] | None = None,
    ) -> Analysis:
        # Best region per reference; refs are looked up once for the whole image.
        best: dict[int, tuple[float, int]] = {}
        for r in range(len(regions)):
            for s, rid in zip(scores[r].tolist(), ref_ids[r].tolist()):
                if rid >= 0 and (rid not in best or s > best[rid][0]):
                    best[rid] = (s, r)
        refs = index.get_references(best.keys())
        candidates: list[ScoredMatch] = []
        for rid, ref in refs.items():
            cosine, region_idx = self._best_allowed(ref, rid, regions, scores, ref_ids, best)
            if cosine is None:
                continue
            box = regions[region_idx].box
            candidates.append(_match(ref, cosine, cosine, None, box))
        vcfg = self.config.verify
        local = _LocalSearch()
        if vcfg.enabled and vcfg.local_candidates > 0:
            features = pending.result() if pending is not None else query_features(image, vcfg)
            added, voted = self._voted(index, features, regions, vectors, candidates)
            candidates += added
            local = _LocalSearch(features, voted)
            if vcfg.mirrored:  # a mirrored logo is still the brand's; SIFT alone cannot see it
                flipped = (mirror_features(features) if vcfg.method == "sift"
                           else query_features(ImageOps.mirror(image), vcfg))
                added, voted = self._voted(index, flipped, regions, vectors, candidates)
                candidates += added
                local = replace(local, mirrored=flipped, mirrored_voted=voted)
        if shapes.found:  # logos whose shape a mark resembles, whatever their cosine
            candidates += self._by_cosine(index, shapes.found, candidates, regions, vectors)
        if len(shapes.query):
            per_mark = self.config.silhouettes.per_mark_candidates
            shapes = replace(
                shapes,
                picks=frozenset(
                    rid for r, region in enumerate(regions) if region.source == "silhouette"
                    for rid in ref_ids[r][:per_mark].tolist() if rid >= 0
                ) | frozenset(shapes.found),
                unconfirmed=self._silhouette_matched(index, regions, vectors, candidates),
            )
        candidates = self._verify(index, image, candidates, shapes, local)
        candidates.sort(key=lambda m: (-m.score, m.ref_id))
        brand_scores = _best_per_brand(candidates)
        verdict = self._decide(name, image, candidates, brand_scores)
        return Analysis(verdict, tuple(brand_scores))

    @staticmethod
    def _best_allowed(
        ref: Reference,
        rid: int,
        regions: list[Region],
        scores: np.ndarray,
        ref_ids: np.ndarray,
        best: dict[int, tuple[float, int]],
    ) -> tuple[float | None, int]:
        """Best cosine of a reference over the regions its kind may be matched by."""
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

    def _silhouette_matched(
        self, index: ReferenceIndex, regions: list[Region], vectors: np.ndarray, candidates: list[ScoredMatch]
    ) -> dict[int, float]:
        """Candidates whose best similarity comes from a mark's silhouette, with their best
        similarity over the other regions (what counts unless the shape confirms them)."""
        marks = [r for r, region in enumerate(regions) if region.source == "silhouette"]
        others = [r for r, region in enumerate(regions) if region.source != "silhouette"]
        if not marks or self.config.silhouettes.confirm_iou <= 0:
            return {}
        stored = index.get_vectors(m.ref_id for m in candidates if m.kind != "product")
        found = {}
        for rid, views in stored.items():
            similarity = vectors @ views.T  # (regions, views)
            plain = float(similarity[others].max())  # region 0, the whole frame, is never a mark
            if float(similarity[marks].max()) > plain:
                found[rid] = plain
        return found

    def _logo_shapes(self, index: ReferenceIndex) -> _LogoShapes:
        """Canonical masks of ``index``'s logo references (and, with ``distinct_margin``,
        how distinct each is), gathered once per index generation."""
        with self._local_lock:
            cached = self._logo_shapes_cache
            if cached is None or cached.generation != index.generation:
                logos = [r for r in index.references() if r.kind == "logo"]
                features = self._reference_features(index, [r.id for r in logos])
                kept = [r for r in logos if r.id in features and features[r.id].silhouette is not None]
                rows = (np.stack([_canonical_rows(features[r.id].silhouette) for r in kept]) if kept
                        else np.zeros((0, CANONICAL_SIDE**2), np.int8))
                distinct: dict[int, float] = {}
                if self.config.silhouettes.distinct_margin is not None:
                    as_float = rows.astype(np.float32)
                    floors = np.maximum(distinct_ious(as_float, [r.brand for r in kept]), generic_ious(as_float))
                    distinct = dict(zip((r.id for r in kept), floors.tolist()))
                cached = _LogoShapes(index.generation, np.array([r.id for r in kept], dtype=np.int64), rows, distinct)
                self._logo_shapes_cache = cached
            return cached

    def _local_index(self, index: ReferenceIndex) -> LocalFeatureIndex:
        """The local descriptors of ``index``'s current generation, gathered on first use."""
        with self._local_lock:
            if self._local is None or self._local[0] != index.generation:
                kinds = set(self.config.verify.kinds)
                ids = [r.id for r in index.references() if r.kind in kinds]
                features = self._reference_features(index, ids)
                self._local = (index.generation, LocalFeatureIndex.from_features(features, self.config.verify.local_nprobe))
            return self._local[1]

    def _reference_features(self, index: ReferenceIndex, ref_ids: Sequence[int]) -> dict[int, LocalFeatures]:
        """Stored local features by ref id, decoded once per index generation (up to
        :data:`FEATURES_CACHE_BYTES` of them kept). A corrupt blob is logged and
        treated as absent: that candidate is not verified, the listing is still scored (logged
        once per index generation, not for every listing that meets it)."""
        with self._features_lock:
            if self._features_generation != index.generation:
                self._features, self._features_bytes, self._unreadable = {}, 0, set()
                self._features_generation = index.generation
            found = {rid: self._features[rid] for rid in ref_ids if rid in self._features}
            skip = set(found) | self._unreadable
        decoded: dict[int, LocalFeatures] = {}
        unreadable: set[int] = set()
        missing = [rid for rid in dict.fromkeys(ref_ids) if rid not in skip]
        for start in range(0, len(missing), 1000):
            for rid, blob in index.get_aux(missing[start : start + 1000]).items():
                try:
                    decoded[rid] = LocalFeatures.from_bytes(blob)
                except DetectorError as e:
                    unreadable.add(rid)
                    log.warning("reference %d: unreadable local features, not verified (%s)", rid, e)
        if decoded or unreadable:
            with self._features_lock:
                if self._features_generation == index.generation:
                    self._unreadable |= unreadable
                    fresh = {rid: f for rid, f in decoded.items() if rid not in self._features}
                    added = sum(f.nbytes for f in fresh.values())
                    if self._features_bytes + added > FEATURES_CACHE_BYTES:
                        self._features, self._features_bytes = {}, 0
                    self._features.update(fresh)
                    self._features_bytes += added
        return {**found, **decoded}

    def _voted(
        self,
        index: ReferenceIndex,
        features: LocalFeatures,
        regions: list[Region],
        vectors: np.ndarray,
        candidates: list[ScoredMatch],
    ) -> tuple[list[ScoredMatch], frozenset[int]]:
        """References the listing's local descriptors vote for (:mod:`detector.local_search`):
        those not yet candidates, scored by their best allowed region's cosine, and all voted ids."""
        vcfg = self.config.verify
        votes = self._local_index(index).vote(features, vcfg.local_candidates, vcfg.local_ratio)
        voted = frozenset(rid for rid, _ in votes)
        return self._by_cosine(index, voted, candidates, regions, vectors), voted

    @staticmethod
    def _by_cosine(
        index: ReferenceIndex, ref_ids: Iterable[int], candidates: list[ScoredMatch],
        regions: list[Region], vectors: np.ndarray,
    ) -> list[ScoredMatch]:
        """Candidates for those of ``ref_ids`` not among ``candidates`` yet, each scored by
        its best allowed region's cosine (its stored vectors read back from the index)."""
        known = {m.ref_id for m in candidates}
        refs = index.get_references([rid for rid in ref_ids if rid not in known])
        stored = index.get_vectors(refs)
        added = []
        for rid, ref in refs.items():
            allowed = [r for r, region in enumerate(regions) if ref.kind != "product" or region.source in FRAME_SOURCES]
            if rid not in stored or not allowed:
                continue
            similarity = (vectors[allowed] @ stored[rid].T).max(axis=1)  # best view per region
            best = int(similarity.argmax())
            cosine = float(similarity[best])
            added.append(_match(ref, cosine, cosine, None, regions[allowed[best]].box))
        return added

    def _verify(
        self,
        index: ReferenceIndex,
        image: Image.Image,
        candidates: list[ScoredMatch],
        shapes: _Marks,
        local: _LocalSearch | None = None,
    ) -> list[ScoredMatch]:
        """Second stage on the top candidates (and those voted for by local descriptors):
        local features + RANSAC, and the shape check. The query's features come from the
        ``local`` search when it ran, else are extracted once, on first need. References
        voted for by the mirrored listing are also verified against it; the better
        verification counts, and a mirrored one reports ``mirrored`` and an unmirrored box.

        ``score = fuse_scores(cosine, accepted inliers) + weight * support``, where support is
        how far the best aligned IoU is above the reference's floor
        (:func:`~detector.silhouettes.shape_support`), and with ``shape_score`` at least
        ``shape_score + shape_score_weight * support``; a cosine that comes from a mark's
        silhouette counts only when the shape confirms it (``silhouettes.confirm_iou``; else
        the best over the other regions); a product photo that knows its logo's box instead
        gets ``cosine ± logo_weight`` when its logo area is matched / missing
        (:func:`detector.verify.logo_area_verdict`).
        """
        vcfg, scfg = self.config.verify, self.config.silhouettes
        check_shapes = scfg.enabled and len(shapes.query) > 0
        if not (vcfg.enabled or check_shapes) or not candidates:
            return candidates
        eligible = [m for m in candidates if m.kind in vcfg.kinds]
        top = vcfg.top_candidates if vcfg.enabled else 0
        top = max(top, scfg.top_candidates if check_shapes else 0)
        local = local or _LocalSearch()
        features, voted = local.features, local.voted | local.mirrored_voted
        ranked = sorted(eligible, key=lambda m: -m.cosine)
        chosen = ranked[:top] + [m for m in ranked[top:] if m.ref_id in voted or m.ref_id in shapes.picks]
        products = [m for m in candidates if m.kind == "product" and m.kind not in vcfg.kinds]
        products = sorted(products, key=lambda m: -m.cosine)[: vcfg.product_candidates] if vcfg.enabled else []
        stored = self._reference_features(index, [m.ref_id for m in chosen + products])
        # Every reference RANSAC will see, matched against the listing in one search.
        ransac = [m.ref_id for rank, m in enumerate(chosen)
                  if vcfg.enabled and m.ref_id in stored and (rank < vcfg.top_candidates or m.ref_id in voted)]
        ransac += [m.ref_id for m in products if m.ref_id in stored and stored[m.ref_id].logo_box is not None]
        if ransac and features is None:
            features = query_features(image, vcfg)
        neighbours = _nearest(features, ransac, stored)
        mirrored_neighbours = _nearest(local.mirrored, [r for r in ransac if r in local.mirrored_voted], stored)
        distinct = self._logo_shapes(index).distinct if check_shapes and scfg.distinct_margin is not None else {}
        checked: dict[int, ScoredMatch] = {}
        for rank, m in enumerate(chosen):
            reference = stored.get(m.ref_id)
            if reference is None:
                continue
            cosine, inliers, box, iou, mark = m.cosine, m.inliers, m.box, None, -1
            located = mirrored = confirmed = False
            shape_candidate = rank < scfg.top_candidates or m.ref_id in shapes.picks
            floor = 1.0
            if check_shapes and shape_candidate and reference.silhouette is not None:
                iou, mark = shapes.query.match(reference.silhouette)
                floor = shape_floor(reference.silhouette, scfg)
                if m.ref_id in distinct:  # a shape another brand's logo shares identifies neither
                    floor = max(floor, distinct[m.ref_id] + (scfg.distinct_margin or 0.0))
            if m.ref_id in shapes.unconfirmed and (iou is None or iou < max(scfg.confirm_iou, floor)):
                cosine = shapes.unconfirmed[m.ref_id]
            score = cosine
            if m.ref_id in neighbours:  # verified (see ``ransac``)
                result = verify(features, reference, vcfg, neighbours[m.ref_id])
                if local.mirrored is not None and m.ref_id in local.mirrored_voted:
                    flipped = verify(local.mirrored, reference, vcfg, mirrored_neighbours[m.ref_id])
                    if flipped.accepted_inliers > result.accepted_inliers:
                        result, mirrored = _unmirrored(flipped, image.width), True
                score, inliers = fuse_scores(cosine, result.accepted_inliers, vcfg, result.confirmed), result.inliers
                confirmed = result.confirmed
                located = result.accepted and result.box is not None
                box = result.box if located else m.box
            if iou is not None and (support := shape_support(iou, floor)) > 0:
                score += shape_bonus(iou, scfg, floor)
                if scfg.shape_score > 0:
                    score = max(score, scfg.shape_score + scfg.shape_score_weight * support)
                if not located:
                    box = shapes.boxes[mark]  # the shape located the mark; RANSAC did not
            checked[m.ref_id] = replace(
                m, score=score, inliers=inliers, box=box, shape_iou=iou, mirrored=mirrored, verified=confirmed
            )
        for m in products:  # the product photo's logo area must be in the listing, not only its scene
            reference = stored.get(m.ref_id)
            if reference is None or reference.logo_box is None:
                continue
            result = verify(features, reference, vcfg, neighbours[m.ref_id])
            outcome = logo_area_verdict(result, vcfg)
            checked[m.ref_id] = replace(
                m,
                score=m.cosine + vcfg.logo_weight * outcome,
                inliers=result.inliers,
                box=result.logo_box if outcome > 0 and result.logo_box else m.box,
                logo_area=_LOGO_AREA[outcome],
            )
        for m in candidates:  # never checked: a silhouette's similarity is unconfirmed
            if m.ref_id not in checked and m.ref_id in shapes.unconfirmed:
                checked[m.ref_id] = replace(m, score=shapes.unconfirmed[m.ref_id])
        return [checked.get(m.ref_id, m) for m in candidates]

    def _decide(
        self, name: str, image: Image.Image, candidates: list[ScoredMatch], brand_scores: list[BrandScore]
    ) -> Verdict:
        top = tuple(candidates[: self.config.top_k])
        if not brand_scores:
            return Verdict(image=name, matches=top)
        by_ref = {m.ref_id: m for m in candidates}
        chosen, flagged = brand_scores[0], False
        for bs in brand_scores:  # highest-scoring brand that reaches its own threshold wins
            if bs.score >= self.thresholds.for_match(bs.brand, bs.threshold_key).value:
                chosen, flagged = bs, True
                break
        applied = self.thresholds.for_match(chosen.brand, chosen.threshold_key)
        evidence = by_ref[chosen.ref_id]
        return Verdict(
            image=name,
            flagged=flagged,
            brand=chosen.brand,
            score=chosen.score,
            threshold=applied.value,
            threshold_source=applied.source,
            matches=top,
            box=_clip_box(evidence.box, image) if evidence.box is not None else None,
        )


@dataclass(frozen=True)
class _Marks:
    """The marks found in one query image: their shapes and where each lies."""

    query: QueryShapes
    boxes: list[Box]
    found: tuple[int, ...] = ()  # logo references the shape search found (silhouettes.search)
    picks: frozenset[int] = frozenset()  # those and each mark's own best references (per_mark_candidates)
    # References matched best by a mark's silhouette -> their similarity over the other regions.
    unconfirmed: dict[int, float] = field(default_factory=dict)


@dataclass(frozen=True)
class _LogoShapes:
    """The canonical masks of one index generation's logo references."""

    generation: int
    ids: np.ndarray  # ref id of each row
    rows: np.ndarray  # (n, CANONICAL_SIDE**2) flattened 0/1 masks, int8 (QueryShapes.coarse)
    distinct: dict[int, float]  # ref id -> best IoU with another brand's logo or a generic shape (distinct_margin)


@dataclass(frozen=True)
class _LocalSearch:
    """What the local-descriptor search found for one listing (empty when it did not run)."""

    features: LocalFeatures | None = None  # the listing's
    voted: frozenset[int] = frozenset()  # references its descriptors voted for
    mirrored: LocalFeatures | None = None  # the mirrored listing's (verify.mirrored)
    mirrored_voted: frozenset[int] = frozenset()


T = TypeVar("T")


class _Stealable(Generic[T]):
    """A task queued on a worker pool that the thread needing its result runs itself when no
    worker has started it yet: the feature thread is the busier one (SIFT on two channels),
    so the caller segments a listing's marks while a worker extracts its features."""

    def __init__(self, pool: ThreadPoolExecutor, fn: Callable[..., T], *args: Any) -> None:
        self._call = (fn, args)
        self._future = pool.submit(fn, *args)

    def result(self) -> T:
        if self._future.cancel():  # not started: run it here rather than wait behind the queue
            fn, args = self._call
            return fn(*args)
        return self._future.result()


@cache
def _features_pool() -> ThreadPoolExecutor:
    """Threads that extract listings' local features while the scorer embeds (shared by all
    detectors; half the cores, since OpenCV's extraction is itself multi-threaded). Not
    ``detector.verify``'s channel pool: these tasks wait on that one's."""
    return ThreadPoolExecutor(max_workers=max(1, (os.cpu_count() or 2) // 2), thread_name_prefix="listing-features")


def _nearest(
    query: LocalFeatures | None, ref_ids: list[int], stored: dict[int, LocalFeatures]
) -> dict[int, Neighbours | None]:
    """:func:`detector.verify.nearest_two` for these references, by id."""
    if query is None or not ref_ids:
        return {}
    return dict(zip(ref_ids, nearest_two(query, [stored[rid] for rid in ref_ids])))


def _canonical_rows(mask: np.ndarray) -> np.ndarray:
    """A stored canonical mask as one int8 0/1 row at :data:`CANONICAL_SIDE` (older indexes
    may hold another size)."""
    import cv2

    if mask.shape != (CANONICAL_SIDE, CANONICAL_SIDE):
        mask = cv2.resize(mask.astype(np.uint8), (CANONICAL_SIDE, CANONICAL_SIDE), interpolation=cv2.INTER_NEAREST)
    return (mask > 0).astype(np.int8).ravel()


def _unmirrored(result: Verification, width: int) -> Verification:
    """A verification against the mirrored listing, with its boxes back in the listing's pixels."""

    def flip(box: Box | None) -> Box | None:
        return None if box is None else (width - box[2], box[1], width - box[0], box[3])

    return replace(result, box=flip(result.box), logo_box=flip(result.logo_box))


_LOGO_AREA = {1: "matched", -1: "missing", 0: "undecided"}


def _match(ref: Reference, score: float, cosine: float, inliers: int | None, box: Box | None) -> ScoredMatch:
    return ScoredMatch(
        ref_id=ref.id,
        brand=ref.brand,
        kind=ref.kind,
        product_id=ref.product_id,
        score=score,
        source=ref.source,
        cosine=cosine,
        inliers=inliers,
        box=box,
    )


def _best_per_brand(candidates: Sequence[ScoredMatch]) -> list[BrandScore]:
    """Candidates must be sorted by score, best first; keeps each brand's first (best) one."""
    seen: dict[str, BrandScore] = {}
    for m in candidates:
        if m.brand not in seen:
            seen[m.brand] = BrandScore(m.brand, m.score, m.kind, m.ref_id, m.verified)
    return list(seen.values())


def _mask_box(mask: np.ndarray, region: Box) -> Box:
    """The mask's extent (it is at the clustering resolution) in the image's pixels."""
    ys, xs = np.nonzero(mask)
    x0, y0, x1, y1 = region
    sx, sy = (x1 - x0) / mask.shape[1], (y1 - y0) / mask.shape[0]
    return (
        x0 + int(xs.min() * sx), y0 + int(ys.min() * sy),
        min(x1, x0 + int(np.ceil((xs.max() + 1) * sx))), min(y1, y0 + int(np.ceil((ys.max() + 1) * sy))),
    )


def _clip_box(box: Box, image: Image.Image) -> Box:
    x0, y0, x1, y1 = box
    x0 = min(max(int(x0), 0), image.width)
    x1 = min(max(int(x1), x0), image.width)
    y0 = min(max(int(y0), 0), image.height)
    y1 = min(max(int(y1), y0), image.height)
    return (x0, y0, x1, y1)


def _name_of(source: ImageSource) -> str:
    if isinstance(source, (str, Path)):
        return str(source)
    return getattr(source, "name", None) or "<image>"
