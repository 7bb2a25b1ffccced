"""The indexing job: walk a brand's reference images, embed them, add them to an index.

Work is committed to the index in chunks, each one atomic. An interrupted run therefore loses
at most the chunk in flight, and a rerun skips every image whose content (sha256) is already
indexed, so it continues where it stopped and ends with the same index.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from detector.descriptor_store import sync_descriptor_store
from detector.errors import ConfigError, DetectorError, ImageLoadError
from detector.images import load_image, read_bytes, sha256_bytes
from detector.index_factory import DEFAULT_MEMORY_BUDGET, resolve_factory
from detector.reference_manifest import Failure, ReferenceItem, collect_references
from detector.reference_prep import ReferencePrepConfig, reference_views
from detector.shape_library import LIBRARY_FILE
from detector.shape_sync import save_synced_library, stored_masks
from detector.signals.base import ReferenceImage
from detector.signals.mark_locator import (
    brand_logo_features,
    relocate_brand_products,
    with_located_mark,
)
from detector.signals.reference_side import reference_side_data
from detector.verify import LocalFeatures, VerifyConfig
from index.atomic import atomic_write_json
from index.open import create_index, index_exists, open_index
from index.protocol import VectorIndex
from index.records import NewReference

__all__ = [
    "Failure", "IndexingReport", "IndexingTarget", "PreparedReference", "ReferenceItem", "add_prepared",
    "collect_references", "index_references", "locate_marks", "open_indexing_target", "prep_config_for",
    "prepare_reference", "relocate_marks", "remove_references", "run_indexing", "verify_config_of", "write_report",
]

log = logging.getLogger(__name__)


def prep_config_for(preset: Any) -> ReferencePrepConfig:
    """Reference preparation options of a model preset (its ``reference_prep`` defaults)."""
    return ReferencePrepConfig(**preset.defaults.get("reference_prep", {}))


@dataclass
class IndexingReport:
    """Outcome of an indexing run."""

    added: int = 0
    skipped: int = 0
    failed: list[Failure] = field(default_factory=list)
    interrupted: bool = False
    seconds: float = 0.0
    report_path: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "added": self.added,
            "skipped_already_indexed": self.skipped,
            "failed": [{"item": f.item, "reason": f.reason} for f in self.failed],
            "interrupted": self.interrupted,
            "seconds": round(self.seconds, 3),
        }


# ---------------------------------------------------------------------- the job
@dataclass(frozen=True)
class PreparedReference:
    """A reference ready to embed: its model views, local features and attributes."""

    item: ReferenceItem
    sha256: str
    views: list[Image.Image]
    features: LocalFeatures | None
    attributes: dict[str, Any]  # the item's, with the text read on a logo (``read_text``)


def index_references(
    items: Sequence[ReferenceItem],
    index: VectorIndex,
    embedder: Any,
    *,
    chunk_size: int = 128,
    prep: ReferencePrepConfig | None = None,
    verify_config: VerifyConfig | None = None,
    progress: Callable[[int], None] | None = None,
    workers: int = 2,
    read_text: bool = False,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
) -> IndexingReport:
    """Embed ``items`` and add them to a writable ``index``, one atomic commit per chunk.

    Items whose content is already indexed are skipped; unreadable images are reported and
    skipped. A KeyboardInterrupt stops after the last committed chunk and returns a report
    with ``interrupted=True`` (nothing committed is lost).

    Args:
        items: From :func:`collect_references`.
        index: Writable index built for ``embedder``'s fingerprint.
        embedder: The model (``embed`` + ``fingerprint``).
        chunk_size: Images per commit.
        prep: Reference preparation (trim, pad, extra views).
        verify_config: When verification is enabled, local features are stored with each record.
        progress: Called with the number of items finished after each chunk.
        workers: Threads that read and decode images while the model runs.
        read_text: OCR each logo and store the text read (its wordmark) as the reference's
            ``ocr_text`` attribute: the brand's names for the text signal (needs the ``text`` extra).
        memory_budget: Bytes the descriptor store may take when this run rebuilds it
            (:func:`detector.descriptor_store.code_for`).
    """
    if not embedder.fingerprint.is_compatible(index.fingerprint):
        raise DetectorError(
            f"index {index.path} holds another model's vectors "
            f"({index.fingerprint.describe_difference(embedder.fingerprint)})"
        )
    prep = prep or ReferencePrepConfig()
    want_features = verify_config is not None and verify_config.enabled
    report = IndexingReport()
    started = time.perf_counter()
    shapes_added = False
    try:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            for chunk in _chunks(items, chunk_size):
                prepared = _prepare_chunk(chunk, index, pool, prep, verify_config if want_features else None, report,
                                          read_text=read_text)
                if prepared:
                    updates: dict[int, bytes] = {}
                    if want_features:
                        assert verify_config is not None
                        prepared, updates = locate_marks(prepared, index, verify_config)
                    _commit(prepared, index, embedder, report, updates)
                    shapes_added |= any(p.item.kind == "logo" and p.features is not None
                                        and p.features.silhouette is not None for p in prepared)
                if progress:
                    progress(len(chunk))
    except KeyboardInterrupt:
        report.interrupted = True
    # The store is synced even when nothing was added: that finishes a sync a killed run left
    # undone, or rebuilds a store deleted to re-code it (a no-op costs a look at the ids).
    sync_side_indexes(index, shapes=shapes_added, features=want_features, memory_budget=memory_budget)
    report.seconds = time.perf_counter() - started
    return report


def sync_side_indexes(index: VectorIndex, *, shapes: bool, features: bool,
                      memory_budget: int = DEFAULT_MEMORY_BUDGET) -> None:
    """Bring the structures kept beside the index up to its last commit, once an indexing run
    has committed: the shape library (``shapes``: logos with silhouettes were added) and the
    descriptor store (``features``: local features were stored; a rebuild fits its codes to
    ``memory_budget``). Until then, or after a crash, scorers catch up on what these files
    miss by themselves (in memory)."""
    if shapes:
        save_synced_library(index, lambda ids: stored_masks(index, ids))
    if features:  # one store segment a run
        sync_descriptor_store(index, memory_budget=memory_budget)


def _chunks(items: Sequence[ReferenceItem], size: int) -> Iterator[Sequence[ReferenceItem]]:
    for start in range(0, len(items), max(1, size)):
        yield items[start : start + size]


def _prepare_chunk(
    chunk: Sequence[ReferenceItem],
    index: VectorIndex,
    pool: ThreadPoolExecutor,
    prep: ReferencePrepConfig,
    verify_config: VerifyConfig | None,
    report: IndexingReport,
    *,
    read_text: bool = False,
) -> list[PreparedReference]:
    blobs: list[tuple[ReferenceItem, bytes]] = []
    for item in chunk:
        try:
            blobs.append((item, read_bytes(item.path)))
        except ImageLoadError as e:
            report.failed.append(Failure(str(item.path), e.reason))
    present = index.existing_sha256(sha256_bytes(b) for _, b in blobs)
    fresh, seen = [], set(present)
    for item, data in blobs:
        sha = sha256_bytes(data)
        if sha in seen:
            report.skipped += 1
            continue
        seen.add(sha)
        fresh.append((item, data, sha))

    def prepare(entry: tuple[ReferenceItem, bytes, str]) -> PreparedReference | Failure:
        return prepare_reference(*entry, prep, verify_config, read_text=read_text)

    prepared = []
    for result in pool.map(prepare, fresh):
        if isinstance(result, Failure):
            report.failed.append(result)
        else:
            prepared.append(result)
    return prepared


def prepare_reference(
    item: ReferenceItem,
    data: bytes,
    sha: str,
    prep: ReferencePrepConfig,
    verify_config: VerifyConfig | None,
    *,
    read_text: bool = False,
) -> PreparedReference | Failure:
    """Decode one reference's bytes into its views and local features (``verify_config``:
    when verification is on); an unreadable image or a bad attribute gives a Failure."""
    try:
        # RGBA when transparent: trimming and a logo's silhouette read its alpha channel
        # (composited on white, a mark that touches the image's corners has no border).
        image = load_image(data, name=str(item.path), keep_alpha=True)
        views = reference_views(image, item.kind, prep)
        features = None
        if verify_config is not None:
            reference = ReferenceImage(image, views[0], item.kind, item.attributes)
            features = replace(reference_side_data(reference, verify_config), pixels=None)
        attributes = dict(item.attributes)
        if read_text and item.kind == "logo":
            attributes.update(logo_text(image))
        return PreparedReference(item, sha, views, features, attributes)
    except ImageLoadError as e:
        return Failure(str(item.path), e.reason)
    except ValueError as e:  # a bad logo_box attribute: this item fails, the rest go on
        return Failure(str(item.path), str(e))


def locate_marks(
    prepared: list[PreparedReference], index: VectorIndex, config: VerifyConfig
) -> tuple[list[PreparedReference], dict[int, bytes]]:
    """Locate the brand's logo on each product photo of the chunk (its brand's logos in the
    index and in the chunk), and re-locate the stored product photos of every brand the chunk
    brings logos for: their new records go into the chunk's commit (``aux_updates``)."""
    new_logos: dict[str, list[LocalFeatures]] = {}
    for p in prepared:
        if p.item.kind == "logo" and p.features is not None:
            new_logos.setdefault(p.item.brand, []).append(p.features)
    product_brands = {p.item.brand for p in prepared if p.item.kind == "product" and p.features is not None}
    logos = brand_logo_features(index, product_brands)
    located = []
    for p in prepared:
        if p.item.kind == "product" and p.features is not None:
            brand_logos = logos[p.item.brand] + new_logos.get(p.item.brand, [])
            p = replace(p, features=with_located_mark(p.features, brand_logos, config))
        located.append(p)
    updates = relocate_brand_products(index, new_logos, config, extra_logos=new_logos) if new_logos else {}
    return located, updates


def remove_references(
    index: VectorIndex,
    *,
    ref_ids: Sequence[int] | None = None,
    brand: str | None = None,
    product_id: str | None = None,
    verify_config: VerifyConfig | None = None,
) -> int:
    """:meth:`ReferenceIndex.remove`, re-locating the marks of the product photos of every
    brand that loses logo references, in the same commit.

    Args:
        index: Writable index.
        ref_ids, brand, product_id: Which references (filters combine with AND).
        verify_config: Verification options; default: the index's preset's.

    Returns:
        Number of references removed.
    """
    if ref_ids is None and brand is None and product_id is None:
        raise ValueError("remove_references() needs ref_ids, brand and/or product_id")
    wanted = None if ref_ids is None else {int(i) for i in ref_ids}
    doomed = [
        r for r in index.references(brand)
        if (wanted is None or r.id in wanted) and (product_id is None or r.product_id == product_id)
    ]
    logo_brands = {r.brand for r in doomed if r.kind == "logo"}
    updates: dict[int, bytes] = {}
    if logo_brands:
        config = verify_config or verify_config_of(index)
        if config.enabled:
            exclude = frozenset(r.id for r in doomed)
            updates = relocate_brand_products(index, logo_brands, config, exclude=exclude)
    removed = index.remove(ref_ids=[r.id for r in doomed], aux_updates=updates) if doomed else 0
    if logo_brands and (Path(index.path) / LIBRARY_FILE).exists():  # the withdrawn logos' floors
        save_synced_library(index, lambda ids: stored_masks(index, ids))
    return removed


def relocate_marks(
    index: VectorIndex, brands: Sequence[str] | None = None, verify_config: VerifyConfig | None = None
) -> int:
    """Locate the logos on the product photos of ``brands`` (default: every brand) again from
    their stored records, in one commit (:meth:`ReferenceIndex.replace_aux`): after writing
    logo references through the raw index API, or for an index built before marks were
    located (its product records keep no candidate marks: only RANSAC locates there).

    Returns:
        How many product records changed.
    """
    config = verify_config or verify_config_of(index)
    if not config.enabled:
        return 0
    if brands is None:
        brands = sorted({r.brand for r in index.references() if r.kind == "product"})
    return index.replace_aux(relocate_brand_products(index, brands, config))


def verify_config_of(index: VectorIndex) -> VerifyConfig:
    """The verification options of the index's model preset (the defaults when unknown)."""
    from detector.models.registry import get_preset
    from detector.scoring_config import ScoringConfig

    try:
        preset = get_preset(index.fingerprint.preset)
    except DetectorError:  # an unknown or custom preset: the defaults locate marks as well
        return VerifyConfig()
    return ScoringConfig.from_dict(preset.defaults.get("scoring", {})).verify


def _commit(
    prepared: list[PreparedReference], index: VectorIndex, embedder: Any, report: IndexingReport,
    aux_updates: dict[int, bytes] | None = None,
) -> None:
    flat = [view for p in prepared for view in p.views]
    vectors = embedder.embed(flat)
    per_ref: list[np.ndarray] = []
    start = 0
    for p in prepared:
        per_ref.append(vectors[start : start + len(p.views)])
        start += len(p.views)
    add_prepared(prepared, per_ref, index, report, aux_updates)


def add_prepared(
    prepared: Sequence[PreparedReference],
    per_ref: Sequence[np.ndarray],
    index: VectorIndex,
    report: IndexingReport,
    aux_updates: dict[int, bytes] | None = None,
) -> None:
    """Commit embedded references (``per_ref``: each one's view vectors) in one atomic add."""
    records = [
        NewReference(
            brand=p.item.brand,
            sha256=p.sha256,
            source=p.item.display_source,
            kind=p.item.kind,
            product_id=p.item.product_id,
            attributes=p.attributes,
        )
        for p in prepared
    ]
    aux = [p.features.to_bytes() if p.features is not None else None for p in prepared]
    result = index.add(records, list(per_ref), aux=aux, aux_updates=aux_updates)
    report.added += len(result.added)
    report.skipped += len(result.skipped)


def logo_text(image: Image.Image) -> dict[str, Any]:
    """The ``ocr_text`` attribute of a logo: the text OCR reads on it, composited on white."""
    from detector.ocr import shared_reader
    from detector.signals.text import logo_text_attributes

    if image.mode in ("RGBA", "LA", "P"):
        canvas = Image.new("RGB", image.size, (255, 255, 255))
        canvas.paste(image.convert("RGBA"), mask=image.convert("RGBA").getchannel("A"))
        image = canvas
    return logo_text_attributes(shared_reader().read(image))


def write_report(index_dir: str | Path, operation: str, report: IndexingReport) -> Path:
    """Write the run's report (added / skipped / failed with reasons) into the index directory."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    path = Path(index_dir) / "reports" / f"{operation}-{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, {"operation": operation, **report.to_dict()})
    report.report_path = path
    return path


@dataclass
class IndexingTarget:
    """What an indexing job works on: the items, the open writable index and its model."""

    items: list[ReferenceItem]
    failures: list[Failure]  # manifest rows that could not be used
    index: VectorIndex
    embedder: Any
    verify_config: VerifyConfig
    prep: ReferencePrepConfig
    report_dir: Path  # where the run's report goes (a Milvus store's side folder)


def open_indexing_target(
    refs: str | Path,
    index_dir: str | Path,
    *,
    preset: str | None = None,
    factory: str = "Flat",
    create: bool = True,
    default_kind: str = "product",
    embedder_options: dict[str, Any] | None = None,
    prep: ReferencePrepConfig | None = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
) -> IndexingTarget:
    """Collect the references, load the model and open (or create) the index for writing.

    The arguments are :func:`run_indexing`'s. The caller closes ``target.index``.
    """
    from detector.embedder import create_embedder

    items, failures = collect_references(refs, default_kind=default_kind)
    exists = index_exists(index_dir)
    if not exists and not create:
        raise ConfigError(f"no index at {index_dir}; create it with 'counterfeit index build'")
    existing_preset = None
    if exists:
        with open_index(index_dir) as ro:
            existing_preset = ro.fingerprint.preset
            random = ro.fingerprint.weights.startswith("random:")
    options = dict(embedder_options or {})
    if existing_preset is not None and preset is None:
        preset = existing_preset
        options.setdefault("random_weights", random)
    embedder = create_embedder(preset or "clip-vit-b-32", **options)
    scoring = embedder.preset.defaults.get("scoring", {})
    from detector.scoring import ScoringConfig

    config = ScoringConfig.from_dict(scoring)
    prep = prep or prep_config_for(embedder.preset)
    if exists:
        index = open_index(index_dir, writable=True, fingerprint=embedder.fingerprint)
    else:
        choice = resolve_factory(factory, items, prep, embedder.fingerprint.dim, memory_budget)
        index = create_index(index_dir, fingerprint=embedder.fingerprint, factory=choice.factory,
                             build_params=choice.build_params, search_params=choice.search_params,
                             train_after_vectors=choice.training_vectors)
    return IndexingTarget(items, failures, index, embedder, config.verify, prep, Path(index.path))


def run_indexing(
    refs: str | Path,
    index_dir: str | Path,
    *,
    preset: str | None = None,
    factory: str = "Flat",
    create: bool = True,
    default_kind: str = "product",
    embedder_options: dict[str, Any] | None = None,
    chunk_size: int = 128,
    progress: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
    prep: ReferencePrepConfig | None = None,
    read_text: bool = False,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
) -> IndexingReport:
    """The ``index build``/``index add`` job: collect, embed, commit, write a report.

    Args:
        refs: Reference folder or manifest (see :func:`collect_references`).
        index_dir: Index directory, or ``milvus-lite:PATH`` / ``milvus://HOST:PORT/COLLECTION?side=DIR``
            (:func:`index.open.open_index`); created when ``create`` and absent.
        preset: Model preset; default: the index's own, or ``clip-vit-b-32`` for a new index.
        factory: FAISS factory string for a new index (Milvus: "Flat" or "HNSW<M>"), or "auto":
            chosen from the references' estimated vector count (:mod:`detector.index_factory`).
        create: Allow creating the index (``index build``); ``index add`` requires it to exist.
        default_kind: Kind of folder items that are not recognisably logos.
        embedder_options: Overrides for :func:`detector.embedder.create_embedder`.
        chunk_size: Images per atomic commit.
        progress: Called with the count of items done after each chunk.
        on_total: Called once with the number of items to process.
        prep: Reference preparation; default: the preset's ``reference_prep`` defaults.
        read_text: OCR the logos for the brands' names (:func:`index_references`).
        memory_budget: Bytes the faiss index may take, for ``factory="auto"``, and the
            descriptor store, when this run rebuilds it.
    """
    target = open_indexing_target(
        refs, index_dir, preset=preset, factory=factory, create=create, default_kind=default_kind,
        embedder_options=embedder_options, prep=prep, memory_budget=memory_budget,
    )
    if on_total:
        on_total(len(target.items))
    with target.index:
        report = index_references(
            target.items, target.index, target.embedder, chunk_size=chunk_size, prep=target.prep,
            verify_config=target.verify_config, progress=progress, read_text=read_text, memory_budget=memory_budget,
        )
    report.failed[:0] = target.failures
    write_report(target.report_dir, "build" if create else "add", report)
    return report
