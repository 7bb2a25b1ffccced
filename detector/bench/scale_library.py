"""The scale benchmark's libraries: a small real seed, replicated into N synthetic references.

The *seed* is a benchmark set (:func:`detector.bench.dataset.build_benchmark_set`, logos only)
rendered, embedded and indexed for real (:func:`detector.indexing.run_indexing`). Its brands
that appear on the set's listing photos are the *planted* logos; the others are *templates*.

A library of N references is a new index holding every seed reference as stored, plus
N - seed synthetic logos made from the templates through the index's ordinary
:meth:`~index.store.ReferenceIndex.add`: each synthetic logo takes a template's vectors and
side data (local features, silhouette, appearance thumbnail: the same shapes and sizes) with
cheap perturbations, so it costs what a real logo costs on disk and in the scorer, without
rendering or embedding one. Synthetic vectors are the template's views with multiplicative
noise (cosine ~0.78 to the template, non-negative and sparse like the model's own vectors):
they crowd the template's neighbourhood, not the planted logos', so the planted logos' recall
measures the index, not an adversarial library.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from detector.errors import ConfigError
from detector.features import LocalFeatures
from detector.index_factory import DEFAULT_MEMORY_BUDGET
from index.records import NewReference
from index.store import ReferenceIndex

SEED_GROUPS = ("logo_large", "logo_small", "neg_nologo")
# A synthetic view is its template's with every component scaled by a Gamma(shape, 1/shape) draw
# (mean 1): cosine ~0.78 to the template and ~0.6 between two copies, and, like the model's
# real vectors (effnet's pooled features are post-ReLU: non-negative, ~60 % zeros, two real
# logos at cosine ~0.38), non-negative and as sparse as the template. Isotropic Gaussian noise
# (norm 0.85 before, the same cosine to the template) put the copies off that manifold, where
# a graph index finds the real logos' neighbours far worse than it would in a real library
# (docs/scale.md).
VECTOR_NOISE_SHAPE = 1.5
DESCRIPTOR_NOISE = 6  # +- SIFT descriptor units (0..255) added per element
SYNTHETIC_LOGOS_PER_BRAND = 3


@dataclass(frozen=True)
class Seed:
    """A real, indexed seed set."""

    root: Path
    index_dir: Path
    labels_path: Path
    planted_brands: tuple[str, ...]
    references: int
    indexing_seconds: float  # real rendering excluded: embedding, features, commits


@dataclass(frozen=True)
class LibraryBuild:
    """How one library was built."""

    path: Path
    references: int
    synthetic: int
    seconds: float
    disk_bytes: int
    store_sync_seconds: float | None = None  # syncing the descriptor store into a library built earlier


def build_seed(root: Path, *, preset: str, n_brands: int, queries_per_class: int, seed: int = 0,
               random_weights: bool = False, say: Callable[[str], None] = print) -> Seed:
    """Render, embed and index the seed set under ``root`` (reused when already built)."""
    from detector.bench.dataset import build_benchmark_set
    from detector.bench.labels import read_labels
    from detector.indexing import run_indexing

    key = hashlib.sha256(json.dumps([preset, n_brands, queries_per_class, seed, random_weights]).encode()).hexdigest()[:10]
    folder = root / f"seed-{preset}-{n_brands}-{key}"
    bench = build_benchmark_set(folder / "set", n_brands=n_brands, n_unindexed=1, queries_per_class=queries_per_class,
                                seed=seed, groups=SEED_GROUPS, product_photo_fraction=0.0)
    index_dir, done = folder / "index", folder / "indexed.json"
    if not done.is_file():
        shutil.rmtree(index_dir, ignore_errors=True)  # an interrupted build starts again
        say(f"seed: indexing {bench.n_references} real logos with {preset}")
        options = {"random_weights": True} if random_weights else None
        report = run_indexing(bench.manifest_path, index_dir, preset=preset, factory="Flat", embedder_options=options)
        done.write_text(json.dumps({"seconds": report.seconds, "added": report.added}))
    info = json.loads(done.read_text())
    labels = read_labels(bench.labels_path)
    planted = tuple(sorted({lab.brand for lab in labels if lab.brand is not None}))
    return Seed(folder, index_dir, bench.labels_path, planted, int(info["added"]), float(info["seconds"]))


class SyntheticLogos:
    """Perturbed copies of the templates' stored vectors and side data."""

    def __init__(self, vectors: list[np.ndarray], blobs: list[bytes], seed: int = 0) -> None:
        if not vectors:
            raise ConfigError("the scale benchmark needs at least one template logo (a seed brand without listings)")
        self._vectors = vectors
        self._features = [LocalFeatures.from_bytes(b) for b in blobs]
        self._seed = seed

    def make(self, number: int) -> tuple[NewReference, np.ndarray, bytes]:
        """The ``number``-th synthetic logo: its record, ``(views, dim)`` vectors and side data
        (drawn from ``(seed, number)`` alone, so a resumed build makes the same logos)."""
        t = number % len(self._vectors)
        rng = np.random.default_rng([self._seed, number])
        views = self._vectors[t]
        vectors = views * rng.gamma(VECTOR_NOISE_SHAPE, 1 / VECTOR_NOISE_SHAPE, views.shape).astype(np.float32)
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return self._record(number), vectors.astype(np.float32), self._side_data(self._features[t], rng).to_bytes()

    @staticmethod
    def _side_data(f: LocalFeatures, rng: np.random.Generator) -> LocalFeatures:
        d = f.descriptors.astype(np.int16) + rng.integers(-DESCRIPTOR_NOISE, DESCRIPTOR_NOISE + 1, f.descriptors.shape, dtype=np.int16)
        k = f.keypoints + rng.uniform(-1.0, 1.0, f.keypoints.shape).astype(np.float32)
        changes: dict[str, Any] = {"keypoints": k, "descriptors": np.clip(d, 0, 255).astype(np.uint8)}
        if f.silhouette is not None:  # a one-pixel shift: same size, another mask
            changes["silhouette"] = np.roll(f.silhouette, tuple(rng.integers(-1, 2, 2)), axis=(0, 1))
        if f.appearance is not None:
            a = f.appearance.astype(np.int16) + rng.integers(-4, 5, f.appearance.shape, dtype=np.int16)
            changes["appearance"] = np.clip(a, 0, 255).astype(np.uint8)
        return replace(f, **changes)

    @staticmethod
    def _record(number: int) -> NewReference:
        digest = hashlib.sha256(f"scale-synthetic-{number}".encode()).hexdigest()
        return NewReference(brand=f"synthetic-{number // SYNTHETIC_LOGOS_PER_BRAND:07d}", sha256=digest,
                            source=f"synthetic/{number:07d}.png", kind="logo")


def _seed_rows(seed: Seed) -> tuple[list[NewReference], list[np.ndarray], list[bytes | None], list[int]]:
    """Every seed reference as stored, and the ids of the templates among them."""
    with ReferenceIndex.open(seed.index_dir) as index:
        refs = list(index.references())
        ids = [r.id for r in refs]
        vectors, aux = index.get_vectors(ids), index.get_aux(ids)
    planted = set(seed.planted_brands)
    records = [NewReference(brand=r.brand, sha256=r.sha256, source=r.source, kind=r.kind, product_id=r.product_id,
                            attributes=r.attributes) for r in refs]
    templates = [i for i, r in enumerate(refs) if r.brand not in planted and r.kind == "logo" and r.id in aux]
    return records, [vectors[i] for i in ids], [aux.get(i) for i in ids], templates


def _chunks(total: int, size: int) -> Iterator[range]:
    for start in range(0, total, size):
        yield range(start, min(start + size, total))


def _sync(index: ReferenceIndex, store: bool, store_from: int | None, memory_budget: int) -> None:
    """What indexing does after a commit: bring the descriptor store up to date."""
    if store:
        from detector.descriptor_store import STORE_FROM_REFERENCES, sync_descriptor_store

        sync_descriptor_store(index, store_from=store_from or STORE_FROM_REFERENCES, memory_budget=memory_budget)


def _sync_shapes(index: ReferenceIndex) -> None:
    """What an indexing run does once its logos are committed: save the shape library (masks,
    distinct floors) and, above the exact crossover, its inverted file, so the scorer loads them."""
    from detector.indexing import sync_side_indexes

    sync_side_indexes(index, shapes=True, features=False)


def build_library(seed: Seed, path: Path, size: int, *, factory: str = "Flat", chunk: int = 10_000,
                  create_options: dict[str, Any] | None = None, store: bool = True, store_from: int | None = None,
                  memory_budget: int = DEFAULT_MEMORY_BUDGET, say: Callable[[str], None] = print) -> LibraryBuild:
    """An index of ``size`` references at ``path``: the seed's plus synthetic logos; with
    ``store``, the descriptor store synced after each commit as indexing does (from
    ``store_from`` references, default the store's own threshold; its code fitted to
    ``memory_budget``); the shape library saved
    once at the end, as after one indexing run.

    Each chunk of ``chunk`` references is one atomic commit (the project's ``add``; a factory
    that needs training is staged, as indexing stages it, when ``create_options`` say
    ``train_after_vectors``), so a build stopped half-way leaves a readable index, and the next
    call continues it from its last commit (synthetic logo ``n`` is the same whenever it is
    made; the planted logos, added last, are skipped as duplicates if they are in already). A
    ``built.json`` marks a finished library, reused as is; ``seconds`` adds up the runs that
    built it.
    """
    done = path / "built.json"
    if done.is_file():  # reused; a library built without the store gets it now, as indexing would
        info = json.loads(done.read_text())
        synced = None
        if store:
            started = time.perf_counter()
            with ReferenceIndex.open(path / "index", writable=True) as index:
                _sync(index, store, store_from, memory_budget)
            synced = time.perf_counter() - started
        return LibraryBuild(path, info["references"], info["synthetic"], info["seconds"], _disk_bytes(path / "index"),
                            synced)
    records, vectors, aux, templates = _seed_rows(seed)
    synthetic = max(0, size - len(records))
    maker = SyntheticLogos([vectors[i] for i in templates], [aux[i] for i in templates])  # type: ignore[misc]
    started = time.perf_counter()
    with _open_or_create(seed, path, factory, create_options) as (index, earlier_seconds):
        made_so_far = min(len(index), synthetic)  # synthetic logos come first, in number order
        if made_so_far:
            say(f"library {size}: continuing after {made_so_far:,} synthetic references")
        for part in _chunks(synthetic - made_so_far, chunk):
            numbers = range(made_so_far + part.start, made_so_far + part.stop)
            made = [maker.make(n) for n in numbers]
            index.add([m[0] for m in made], [m[1] for m in made], aux=[m[2] for m in made])
            _save_progress(path, earlier_seconds + time.perf_counter() - started)
            _sync(index, store, store_from, memory_budget)
            say(f"library {size}: {numbers.stop:,}/{synthetic:,} synthetic references "
                f"({time.perf_counter() - started:.0f} s)")
        index.add(records, vectors, aux=aux)  # last: the planted logos compete with a full library
        _sync(index, store, store_from, memory_budget)
        _sync_shapes(index)
    seconds = earlier_seconds + time.perf_counter() - started
    info = {"references": len(records) + synthetic, "synthetic": synthetic, "seconds": round(seconds, 2)}
    done.write_text(json.dumps(info))
    (path / PROGRESS).unlink(missing_ok=True)
    return LibraryBuild(path, info["references"], synthetic, seconds, _disk_bytes(path / "index"))


PROGRESS = "building.json"  # seconds spent by the runs so far, kept while a build is unfinished


@contextmanager
def _open_or_create(seed: Seed, path: Path, factory: str,
                    create_options: dict[str, Any] | None) -> Iterator[tuple[ReferenceIndex, float]]:
    """The unfinished library at ``path`` (and the seconds spent on it), or a new one."""
    progress = path / PROGRESS
    if (path / "index" / "manifest.json").is_file() and progress.is_file():
        with ReferenceIndex.open(path / "index", writable=True) as index:
            if factory in (index.factory, index.staged_factory):
                yield index, float(json.loads(progress.read_text())["seconds"])
                return
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    with ReferenceIndex.open(seed.index_dir) as seed_index:
        fingerprint = seed_index.fingerprint
    with ReferenceIndex.create(path / "index", fingerprint=fingerprint, factory=factory, **(create_options or {})) as index:
        _save_progress(path, 0.0)
        yield index, 0.0


def _save_progress(path: Path, seconds: float) -> None:
    from index.atomic import atomic_write_json

    atomic_write_json(path / PROGRESS, {"seconds": round(seconds, 2)})


def _disk_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
