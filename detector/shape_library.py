"""The logo library's canonical masks as packed bits, with each logo's distinct floor kept
up to date incrementally.

A canonical mask (64 x 64, 0/1) packs into 512 bytes (an int8 row took 4,096). Two packed
masks' IoU follows exactly from their Hamming distance ``h`` and areas ``a``, ``b``:
``inter = (a + b - h) / 2`` and ``union = (a + b + h) / 2``; so a packed scan of one mask
against N gives the same float32 IoUs as :func:`detector.shape_scores.distinct_ious`' product.

Each logo keeps its best IoU with another brand's logo (as is or mirrored) and the logo that
set it. Adding a logo scans it once against the library (O(N) popcounts: its own floor, and
the logos whose floor it raises); withdrawing one rescans only the logos whose floor it set.
The full pairwise computation (O(N^2)) is never redone. Saved next to the index as
:data:`LIBRARY_FILE` (atomic write, an uncompressed ``.npz``); see :mod:`detector.shape_sync`
for how it follows the index. :meth:`ShapeLibrary.load` memory-maps the masks and brands from
that file (512 MB and ~110 MB at 1,000,000 logos): a scorer reads the rows of its shortlisted
logos, so they stay in the page cache, evictable, not on its heap.
"""

from __future__ import annotations

import hashlib
import io
import struct
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from detector.shape_scores import generic_ious
from detector.silhouettes import CANONICAL_SIDE

LIBRARY_FILE = "shape_library.npz"
_FORMAT = 1
_BYTES = CANONICAL_SIDE * CANONICAL_SIDE // 8
# New logos in one batch whose floors are scanned exactly; above, approximate (shape_floors.py).
# The crossover measured in docs/scale.md, "Approximate floors for a library computed from
# nothing".
EXACT_FLOORS_UP_TO = 2000
_SCAN_ROWS = 65536  # rows per popcount chunk: bounds the scan's temporary to ~32 MiB
_GENERIC_ROWS = 8192  # new logos per generic-shape product: bounds its float32 rows to 128 MiB


@dataclass(frozen=True, eq=False)  # arrays: compare fields with numpy, not ==
class ShapeLibrary:
    """Canonical masks of the logo references, in ref id order, and their distinct floors.

    Immutable: :meth:`with_added` and :meth:`without` return new libraries (a scorer's
    threads keep using the one they hold).
    """

    ids: np.ndarray  # (n,) int64 ref ids, ascending
    brands: np.ndarray  # (n,) str
    codes: np.ndarray  # (n, 512) uint8: np.packbits of the flattened 64 x 64 mask
    areas: np.ndarray  # (n,) int64 mask pixels
    other_best: np.ndarray  # (n,) float32 best IoU with another brand's logo, as is or mirrored
    other_source: np.ndarray  # (n,) int64 ref id of that logo (-1: none)
    generic: np.ndarray  # (n,) float32 best IoU with a generic shape (shape_scores.generic_ious)
    without_mask: frozenset[int] = frozenset()  # logo ids whose mark could not be separated

    @classmethod
    def empty(cls) -> ShapeLibrary:
        """A library without logos."""
        return cls(np.zeros(0, np.int64), np.zeros(0, "<U1"), np.zeros((0, _BYTES), np.uint8),
                   np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(0, np.int64),
                   np.zeros(0, np.float32))  # fmt: skip

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def nbytes(self) -> int:
        """Bytes held by the arrays (the codes dominate: 512 a logo)."""
        return sum(a.nbytes for a in (self.ids, self.brands, self.codes, self.areas, self.other_best,
                                      self.other_source, self.generic))  # fmt: skip

    @property
    def key(self) -> str:
        """SHA-256 of the ref ids and packed masks: what an inverted file over them holds
        (:mod:`detector.shape_lists`). A library loaded from a file takes the key saved with it,
        so a scorer need not read every mask at start (512 MB at 1,000,000 logos, which then
        stayed resident in its memory map); a library changed since computes its own."""
        cached = self.__dict__.get("_key")
        if cached is None:
            digest = hashlib.sha256()
            digest.update(np.ascontiguousarray(self.ids, dtype="<i8").tobytes())
            digest.update(np.ascontiguousarray(self.codes).data)
            cached = digest.hexdigest()
            object.__setattr__(self, "_key", cached)  # not a field: replace() makes a new library without it
        return cached

    def rows(self, positions: np.ndarray | slice | None = None) -> np.ndarray:
        """Flattened 0/1 int8 masks of these rows (all by default), as :meth:`QueryShapes.coarse`
        takes them."""
        codes = self.codes if positions is None else self.codes[positions]
        return np.unpackbits(codes, axis=1).view(np.int8)

    def distinct(self, ref_id: int) -> float | None:
        """A logo's best IoU with another brand's logo or a generic shape (None: not held)."""
        pos = int(np.searchsorted(self.ids, ref_id))
        if pos >= len(self.ids) or self.ids[pos] != ref_id:
            return None
        return float(max(self.other_best[pos], self.generic[pos]))

    def with_added(self, ids: Sequence[int], brands: Sequence[str], masks: Sequence[np.ndarray | None], *,
                   exact_floors_up_to: int = EXACT_FLOORS_UP_TO) -> ShapeLibrary:  # fmt: skip
        """This library with new logos (canonical masks; None: no mark, remembered only).

        Each new logo is scanned against the library as it grows: its floor is its best IoU
        with another brand's logo, and the logos whose floor it beats take it as theirs.
        Above ``exact_floors_up_to`` new logos at once (a library computed from nothing), the
        floors come from each logo's inverted-file shortlist instead
        (:func:`detector.shape_floors.approximate_floors`: never above the exact floor).
        Ids already held are ignored.
        """
        held = set(self.ids.tolist()) | self.without_mask
        lib = self
        skipped = set(self.without_mask)
        new = [(int(i), str(b), m) for i, b, m in zip(ids, brands, masks) if int(i) not in held]
        skipped |= {i for i, _, m in new if m is None}
        fresh = [(i, b, m) for i, b, m in new if m is not None]
        if fresh:
            packed = np.stack([_packed(m) for _, _, m in fresh])
            generic = np.concatenate([_generic_ious(packed[s : s + _GENERIC_ROWS])
                                      for s in range(0, len(packed), _GENERIC_ROWS)])  # fmt: skip
            new_ids = [i for i, _, _ in fresh]
            lib = _appended(lib, new_ids, [b for _, b, _ in fresh], packed, generic)
            positions = np.searchsorted(lib.ids, new_ids)
            if len(fresh) > exact_floors_up_to:
                from detector.shape_floors import approximate_floors

                approximate_floors(lib, positions)
            else:
                for pos in positions.tolist():
                    lib = lib._scanned_in(pos)
        return replace(lib, without_mask=frozenset(skipped))

    def without(self, ids: Sequence[int]) -> ShapeLibrary:
        """This library less these logos; the logos whose floor one of them set are rescanned."""
        gone = {int(i) for i in ids}
        keep = ~np.isin(self.ids, list(gone))
        lib = ShapeLibrary(self.ids[keep], self.brands[keep], self.codes[keep], self.areas[keep],
                           self.other_best[keep].copy(), self.other_source[keep].copy(), self.generic[keep],
                           self.without_mask - gone)  # fmt: skip
        for pos in np.flatnonzero(np.isin(lib.other_source, list(gone))).tolist():
            best, source = lib._best_other(pos)
            lib.other_best[pos], lib.other_source[pos] = best, source
        return lib

    # -- persistence ----------------------------------------------------------------------------

    def save(self, path: Path) -> None:
        """Write to ``path`` atomically (temp file, fsync, rename); no pickle."""
        from index.atomic import atomic_write

        def write(tmp: Path) -> None:
            buffer = io.BytesIO()
            np.savez(buffer, format=np.array(_FORMAT), ids=self.ids, brands=self.brands, codes=self.codes,
                     areas=self.areas, other_best=self.other_best, other_source=self.other_source,
                     generic=self.generic, without_mask=np.array(sorted(self.without_mask), np.int64),
                     key=np.array(self.key))  # fmt: skip
            tmp.write_bytes(buffer.getvalue())

        atomic_write(Path(path), write)

    @classmethod
    def load(cls, path: Path) -> ShapeLibrary:
        """Read a saved library, its masks and brands memory-mapped (read-only; a library
        written compressed is read whole). Raises ValueError (or OSError) when it is unreadable."""
        with np.load(Path(path), allow_pickle=False) as data:
            if int(data["format"]) != _FORMAT:
                raise ValueError(f"shape library format {int(data['format'])}, expected {_FORMAT}")
            # np.load has read the zip's directory: its entries say where each member lies.
            codes, brands = (_mapped_member(Path(path), data.zip.getinfo(f"{name}.npy"))
                             for name in ("codes", "brands"))
            codes = data["codes"].astype(np.uint8) if codes is None or codes.dtype != np.uint8 else codes
            lib = cls(data["ids"].astype(np.int64), data["brands"] if brands is None else brands, codes,
                      data["areas"].astype(np.int64), data["other_best"].astype(np.float32),
                      data["other_source"].astype(np.int64), data["generic"].astype(np.float32),
                      frozenset(data["without_mask"].tolist()))  # fmt: skip
            if "key" in data.files:  # saved with the arrays, in the same atomic file
                object.__setattr__(lib, "_key", str(data["key"]))
        n = len(lib.ids)
        if lib.codes.shape != (n, _BYTES) or any(len(a) != n for a in (lib.brands, lib.areas, lib.other_best,
                                                                         lib.other_source, lib.generic)):
            raise ValueError("shape library arrays of mismatched lengths")
        if n > 1 and not (np.diff(lib.ids) > 0).all():
            raise ValueError("shape library ids not ascending")
        return lib

    # -- scans ----------------------------------------------------------------------------------

    def ious_with(self, code: np.ndarray, area: int) -> np.ndarray:
        """float32 IoU of one packed mask with every logo (exact, from Hamming distances)."""
        words = self.codes.view(np.uint64)
        query = code.view(np.uint64)
        hamming = np.empty(len(self.ids), np.int64)
        for start in range(0, len(words), _SCAN_ROWS):
            chunk = words[start : start + _SCAN_ROWS]
            hamming[start : start + len(chunk)] = np.bitwise_count(chunk ^ query).sum(axis=1)
        total = self.areas + area
        inter = ((total - hamming) // 2).astype(np.float32)
        union = ((total + hamming) // 2).astype(np.float32)
        return inter / np.maximum(union, np.float32(1.0))

    def _pair_ious(self, pos: int) -> np.ndarray:
        """IoU of logo ``pos`` (as is or mirrored, the better) with every logo; 0 with its brand's."""
        code, area = self.codes[pos], int(self.areas[pos])
        ious = np.maximum(self.ious_with(code, area), self.ious_with(_mirrored(code), area))
        ious[self.brands == self.brands[pos]] = 0.0
        return ious

    def _best_other(self, pos: int) -> tuple[float, int]:
        ious = self._pair_ious(pos)
        if not len(ious) or ious.max() <= 0:
            return 0.0, -1
        best = int(np.argmax(ious))
        return float(ious[best]), int(self.ids[best])

    def _scanned_in(self, pos: int) -> ShapeLibrary:
        """Logo ``pos`` (just appended, floor unset) scanned against the others: its floor,
        and theirs raised where it comes closer. Mutates this library's floor arrays in place
        (called only on a fresh copy by :meth:`with_added`)."""
        ious = self._pair_ious(pos)
        ious[pos] = 0.0
        best = int(np.argmax(ious)) if len(ious) else pos
        if ious[best] > 0:
            self.other_best[pos], self.other_source[pos] = ious[best], self.ids[best]
        raised = ious > self.other_best
        self.other_best[raised] = ious[raised]
        self.other_source[raised] = self.ids[pos]
        return self


def _appended(lib: ShapeLibrary, ids: list[int], brands: list[str], packed: np.ndarray,
              generic: np.ndarray) -> ShapeLibrary:
    """A copy of ``lib`` with rows for new logos (floors 0, unset), kept in id order."""
    all_ids = np.concatenate([lib.ids, np.asarray(ids, np.int64)])
    # Ref ids only grow, so new logos usually come after the held ones: one copy, no reorder.
    order = slice(None) if (np.diff(all_ids) > 0).all() else np.argsort(all_ids, kind="stable")
    areas = np.unpackbits(packed, axis=1).sum(axis=1).astype(np.int64)
    width = max(lib.brands.dtype.itemsize // 4, max((len(b) for b in brands), default=1), 1)

    def joined(old: np.ndarray, new: np.ndarray) -> np.ndarray:
        return np.concatenate([old, new])[order]

    return ShapeLibrary(
        all_ids[order], joined(lib.brands.astype(f"<U{width}"), np.asarray(brands, f"<U{width}")),
        joined(lib.codes, packed), joined(lib.areas, areas),
        joined(lib.other_best, np.zeros(len(ids), np.float32)), joined(lib.other_source, np.full(len(ids), -1, np.int64)),
        joined(lib.generic, generic.astype(np.float32)), lib.without_mask,
    )  # fmt: skip


def _generic_ious(packed: np.ndarray) -> np.ndarray:
    """:func:`generic_ious` of packed masks (unpacked to float32: 16 KiB a row, hence chunks)."""
    return generic_ious(np.unpackbits(packed, axis=1).astype(np.float32))


def _packed(mask: np.ndarray) -> np.ndarray:
    """A canonical mask (resampled to :data:`CANONICAL_SIDE` if stored at another size) as packed bits."""
    import cv2

    if mask.shape != (CANONICAL_SIDE, CANONICAL_SIDE):
        mask = cv2.resize(mask.astype(np.uint8), (CANONICAL_SIDE, CANONICAL_SIDE), interpolation=cv2.INTER_NEAREST)
    return np.packbits(np.asarray(mask) > 0)


def _mapped_member(path: Path, info: zipfile.ZipInfo) -> np.ndarray | None:
    """The ``.npz`` member ``info`` of the file at ``path`` as a read-only memory map, or None
    when it is compressed (``np.savez`` stores members uncompressed, so their bytes lie in the
    file as a ``.npy`` would). Atomic rewrites replace the file, so a map stays valid."""
    if info.compress_type != zipfile.ZIP_STORED:
        return None
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)  # the member's local header: its name and extra field precede the data
        if local[:4] != b"PK\x03\x04":
            raise ValueError(f"{path}: member {info.filename} has no local header")
        name_length, extra_length = struct.unpack("<HH", local[26:30])
        f.seek(info.header_offset + 30 + name_length + extra_length)
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(f)
        offset = f.tell()
    if dtype.hasobject or fortran or not all(shape):
        return None  # nothing to map (an empty array), or not a plain C array
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)


def _mirrored(code: np.ndarray) -> np.ndarray:
    """The packed mask flipped left-right."""
    mask = np.unpackbits(code).reshape(CANONICAL_SIDE, CANONICAL_SIDE)
    return np.packbits(mask[:, ::-1])


def mirrored_codes(codes: np.ndarray) -> np.ndarray:
    """(n, 512) packed masks, each flipped left-right (chunked: the unpacked bits take 8x)."""
    out = np.empty_like(codes)
    for start in range(0, len(codes), _SCAN_ROWS // 8):
        chunk = np.unpackbits(codes[start : start + _SCAN_ROWS // 8], axis=1)
        flipped = chunk.reshape(len(chunk), CANONICAL_SIDE, CANONICAL_SIDE)[:, :, ::-1]
        out[start : start + len(chunk)] = np.packbits(flipped.reshape(len(chunk), -1), axis=1)
    return out
