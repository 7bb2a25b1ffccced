"""Detector: open an index and a model once, score listing images many times.

A thin façade over the signals (:mod:`detector.signals`) and the fusion and decision
(:mod:`detector.fusion`). Scoring one batch of listing images::

    load ──► each signal starts on each listing (regions; local features and text in
             worker threads) ──► regions signals offer (around text read) join the listing's
         ──► marks segmented in the regions
         ──► embed every listing's views in one model batch ──► index search
         ──► candidates: the embedding's, then each signal's proposals (scored by cosine)
         ──► each signal plans, then gives evidence for the candidates it examined
         ──► fuse ──► best per brand ──► thresholds ──► Verdict
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from detector.errors import ConfigError, DetectorError, ImageLoadError
from detector.fusion import BrandScore, best_per_brand, decide, fuse
from detector.images import ImageSource, load_image
from detector.scoring_config import PROFILES, ScoringConfig, merge_options, resolve_scoring
from detector.signals import Evidence, Listing, build_signals
from detector.signals.embedding import EmbeddingSignal
from detector.signals.reference_data import ReferenceData
from detector.thresholds import Thresholds, default_thresholds_path, load_thresholds
from detector.verdict import Verdict
from index.open import index_spec, open_index
from index.protocol import VectorIndex
from index.records import Fingerprint

__all__ = ["PROFILES", "Analysis", "BrandScore", "Detector", "ScoringConfig", "merge_options", "resolve_scoring"]


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
        index: VectorIndex,
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
        self.signals = build_signals(self.config, ReferenceData())
        embedding = self.signals[0]
        if not isinstance(embedding, EmbeddingSignal):  # a subclass may replace it; it must come first
            raise ConfigError(f"the first signal must be an embedding signal, got {type(embedding).__name__}")
        self._embedding = embedding
        self._embedding.embed = self._embed  # the background set of score normalisation

    def _embed(self, images: list[Image.Image]) -> Any:
        with self._model_lock:
            return self.embedder.embed(images)

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
                key (see :data:`~detector.scoring_config.PROFILES`) applies that profile first
                and picks its thresholds.
            device, precision, batch_size: Embedder overrides.
            checkpoint: Local weights for the index's architecture (must match the index).
            preset: Preset name when it differs from the one recorded in the index.

        Raises:
            IndexStoreError: the index is missing or corrupt.
            DetectorError: the model does not match the index.
        """
        from detector.embedder import create_embedder

        index = open_index(index_dir, writable=False)
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
    def index(self) -> VectorIndex:
        return self._index

    @property
    def fingerprint(self) -> Fingerprint:
        return self.embedder.fingerprint

    def reload_index(self) -> bool:
        """Pick up a newer index generation from disk; in-flight calls finish on the old one."""
        with self._index_lock:
            if self._index.committed_generation() == self._index.generation:
                return False
            fresh = open_index(index_spec(self._index), writable=False)
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
        """Score already-loaded RGB images (all views of all images in one model batch)."""
        if not images:
            return []
        index = self._index  # one consistent index for the whole batch, even if reloaded meanwhile
        listings = [Listing(name, image, index) for image, name in zip(images, names)]
        others = self.signals[1:]
        for listing in listings:
            self._embedding.start(listing)
        for listing in listings:  # every listing's work is under way before any is waited for
            for signal in others:
                signal.start(listing)
        crops: list[Image.Image] = []
        for listing in listings:
            offered = [region for signal in others for region in signal.offer_regions(listing)]
            self._embedding.add_regions(listing, offered)
            extra = [view for signal in others for view in signal.embed_views(listing)]
            crops += self._embedding.finish_views(listing, extra)
        vectors = self._embed(crops)
        k = max(self.config.search_k, self.config.top_k)
        scores, ref_ids = index.search_vectors(vectors, k, params=self.config.search_params or None)
        start = 0
        for listing in listings:
            stop = start + len(self._embedding.scan(listing).regions)
            self._embedding.set_results(listing, vectors[start:stop], scores[start:stop], ref_ids[start:stop])
            start = stop
        return [self._analyse_one(listing) for listing in listings]

    def _analyse_one(self, listing: Listing) -> Analysis:
        candidates = self._embedding.candidates(listing)
        for signal in self.signals[1:]:
            for group in signal.propose(listing, candidates):
                candidates += self._embedding.by_cosine(listing, group, candidates)
        for signal in self.signals:
            signal.plan(listing, candidates)
        evidence: dict[int, dict[str, Evidence]] = {}
        for signal in self.signals:
            for rid, found in signal.evidence(listing, candidates).items():
                evidence.setdefault(rid, {})[signal.name] = found
        fused = fuse(candidates, evidence, self.config)
        brand_scores = best_per_brand(fused)
        verdict = decide(listing.name, listing.image, fused, brand_scores, self.thresholds, self.config.top_k)
        return Analysis(verdict, tuple(brand_scores))


def _name_of(source: ImageSource) -> str:
    if isinstance(source, (str, Path)):
        return str(source)
    return getattr(source, "name", None) or "<image>"
