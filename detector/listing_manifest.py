"""What to score: listing images given on the command line (files, folders) or in a manifest
(``.jsonl`` / ``.csv`` / ``.parquet``, read by :func:`detector.reference_manifest.read_manifest_rows`)
of local paths or http(s) URLs, as :class:`ListingEntry` values in input order.

A manifest row names its image in ``image`` (as in a labelled set), ``path`` or ``url``; a
relative path is relative to the manifest's folder. A row without one is kept as an entry with
a ``problem``, so the backlog reports it as a failed item instead of stopping.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from detector.errors import ImageLoadError
from detector.images import DEFAULT_MAX_BYTES, read_bytes
from detector.inputs import expand_image_inputs
from detector.reference_manifest import read_manifest_rows

if TYPE_CHECKING:
    from detector.scoring import Detector
    from detector.verdict import Verdict

SOURCE_FIELDS = ("image", "path", "url")
URL_SCHEMES = ("http://", "https://")
URL_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class ListingEntry:
    """One listing image to score: its name in the output and where its bytes are."""

    name: str
    source: str  # a local path or an http(s) URL; "" when the row named none
    problem: str | None = None  # why the row cannot be scored (reported as the item's error)


def listing_entries(images: Sequence[str | Path] = (), manifest: str | Path | None = None) -> list[ListingEntry]:
    """Command-line images (files and folders, see :func:`expand_image_inputs`), then the
    manifest's rows, in order. Names are the paths as given (a manifest's: as resolved)."""
    entries = [ListingEntry(str(p), str(p)) for p in expand_image_inputs(images)]
    if manifest is not None:
        entries.extend(manifest_entries(Path(manifest)))
    return entries


def manifest_entries(manifest: Path) -> list[ListingEntry]:
    """The rows of a listing manifest as entries (see the module docstring).

    Raises:
        ConfigError: The manifest is missing or not a readable .jsonl/.csv/.parquet file.
    """
    from detector.errors import ConfigError

    if not manifest.is_file():
        raise ConfigError(f"listing manifest not found: {manifest}")
    entries = []
    for lineno, row in read_manifest_rows(manifest):
        value = next((str(row[f]).strip() for f in SOURCE_FIELDS if row.get(f) not in (None, "")), "")
        if not value:
            name = f"{manifest}:{lineno}"
            entries.append(ListingEntry(name, "", f"no {', '.join(SOURCE_FIELDS[:-1])} or {SOURCE_FIELDS[-1]}"))
        elif value.startswith(URL_SCHEMES):
            entries.append(ListingEntry(value, value))
        else:
            path = Path(value) if Path(value).is_absolute() else manifest.parent / value
            entries.append(ListingEntry(str(path), str(path)))
    return entries


def read_listing(entry: ListingEntry, *, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """The encoded bytes of a listing image (a local file or an http(s) URL).

    Raises:
        ImageLoadError: The row had no source, the file or URL cannot be read, or it is larger
            than ``max_bytes``.
    """
    if entry.problem is not None:
        raise ImageLoadError(entry.name, entry.problem)
    if not entry.source.startswith(URL_SCHEMES):
        return read_bytes(entry.source, max_bytes=max_bytes)
    try:
        with urllib.request.urlopen(entry.source, timeout=URL_TIMEOUT_S) as response:  # noqa: S310 (http(s) only)
            data = response.read(max_bytes + 1)
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise ImageLoadError(entry.name, f"cannot fetch URL: {getattr(e, 'reason', e)}") from e
    if len(data) > max_bytes:
        raise ImageLoadError(entry.name, f"larger than {max_bytes} bytes")
    return data


def score_entries(detector: Detector, entries: Iterable[ListingEntry]) -> list[Verdict]:
    """Score entries with a :class:`detector.scoring.Detector` (the local engine): an entry that
    cannot be read gives a failed verdict, the others are scored in one batch."""
    from detector.verdict import Verdict

    entries = list(entries)
    results: list[Verdict | None] = [None] * len(entries)
    blobs: list[str | bytes] = []
    names, positions = [], []
    for i, entry in enumerate(entries):
        try:
            # A local file goes to the detector by path, as 'score IMAGE' always did.
            is_url = entry.source.startswith(URL_SCHEMES)
            blobs.append(read_listing(entry) if is_url or entry.problem else entry.source)
            names.append(entry.name)
            positions.append(i)
        except ImageLoadError as e:
            results[i] = Verdict.failed(entry.name, str(e))
    for i, verdict in zip(positions, detector.score_many(blobs, names)):
        results[i] = verdict
    return [v for v in results if v is not None]
