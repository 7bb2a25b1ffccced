"""Read a labelled evaluation set (JSON Lines or CSV).

One row per listing photo::

    {"image": "listings/0001.jpg", "brand": "acme", "kind": "logo", "group": "test"}
    {"image": "listings/0002.jpg", "brand": null}

CSV takes the same fields as a header row (``image,brand,kind,group``). ``image`` is a path
relative to the labels file's folder. ``brand`` empty, null or absent marks a logo-free listing
(or a brand that is not indexed). ``kind`` (one of the reference kinds) and ``group`` (any tag:
split, transformation class...) are optional. Other fields, e.g. ``box``, are ignored. Every bad
row is reported with its line number in one :class:`LabelsError`.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from detector.evaluation.scores import EvaluationError, Query
from index.records import KINDS

MAX_LISTED_PROBLEMS = 20


class LabelsError(EvaluationError):
    """A labels file cannot be read or has bad rows.

    Attributes:
        path: The labels file.
        problems: ``(line number, message)`` per bad row (line 0: the file as a whole).
    """

    def __init__(self, path: Path, problems: list[tuple[int, str]]) -> None:
        self.path = path
        self.problems = problems
        shown = [f"  line {n}: {m}" if n else f"  {m}" for n, m in problems[:MAX_LISTED_PROBLEMS]]
        more = len(problems) - MAX_LISTED_PROBLEMS
        if more > 0:
            shown.append(f"  ... and {more} more")
        super().__init__(f"{path}: {len(problems)} problem(s)\n" + "\n".join(shown))


@dataclass(frozen=True)
class LabelSet:
    """Queries read from a labels file; ``Query.id`` is the image path as written in it.

    Attributes:
        source: The labels file.
        queries: One per row, in file order.
    """

    source: Path
    queries: tuple[Query, ...]

    @property
    def root(self) -> Path:
        """Folder the image paths are relative to."""
        return self.source.parent

    def image_path(self, i: int) -> Path:
        """Filesystem path of query ``i``'s image."""
        return self.root / self.queries[i].id

    def image_paths(self) -> list[Path]:
        return [self.root / q.id for q in self.queries]

    def missing_images(self) -> list[Path]:
        """Image paths that do not exist (checked on demand, not when reading)."""
        return [p for p in self.image_paths() if not p.is_file()]


def read_labels(path: str | Path) -> LabelSet:
    """Read a ``.jsonl``/``.ndjson`` or ``.csv`` labels file.

    Args:
        path: The labels file.

    Returns:
        LabelSet with one Query per row.

    Raises:
        LabelsError: Unreadable file, unknown extension, no rows, or bad rows (all listed with
            line numbers: missing image, non-string field, unknown kind, duplicate image).

    Example:
        >>> labels = read_labels("eval/labels.jsonl")  # doctest: +SKIP
        >>> labels.queries[0].brand, labels.image_path(0)  # doctest: +SKIP
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".ndjson", ".csv"):
        raise LabelsError(
            path, [(0, f"unknown labels format {suffix or '(none)'!r}; use .jsonl or .csv")]
        )
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: spreadsheets often write a BOM
    except (OSError, UnicodeDecodeError) as e:
        raise LabelsError(path, [(0, f"cannot read: {e}")]) from e
    problems: list[tuple[int, str]] = []
    rows = _jsonl_rows(text, problems) if suffix != ".csv" else _csv_rows(text, problems)
    queries: list[Query] = []
    first_line: dict[str, int] = {}
    for line, row in rows:
        try:
            query = _query(row)
        except (TypeError, ValueError) as e:
            problems.append((line, str(e)))
            continue
        if query.id in first_line:
            problems.append(
                (line, f"image {query.id!r} already labelled on line {first_line[query.id]}")
            )
            continue
        first_line[query.id] = line
        queries.append(query)
    if not queries and not problems:
        problems.append((0, "no labelled rows"))
    if problems:
        raise LabelsError(path, sorted(problems))
    return LabelSet(source=path, queries=tuple(queries))


def _jsonl_rows(text: str, problems: list[tuple[int, str]]) -> list[tuple[int, dict[str, Any]]]:
    rows = []
    for n, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
        except json.JSONDecodeError as e:
            problems.append((n, f"not valid JSON: {e.msg} (column {e.colno})"))
            continue
        if not isinstance(row, dict):
            problems.append((n, f"expected a JSON object, got {type(row).__name__}"))
            continue
        rows.append((n, row))
    return rows


def _csv_rows(text: str, problems: list[tuple[int, str]]) -> list[tuple[int, dict[str, Any]]]:
    reader = csv.DictReader(text.splitlines(keepends=True))
    try:
        fields = reader.fieldnames or []
    except csv.Error as e:
        problems.append((1, f"bad CSV header: {e}"))
        return []
    if "image" not in [f.strip() for f in fields]:
        problems.append(
            (1, f"CSV header must name an 'image' column; found {', '.join(fields) or 'nothing'}")
        )
        return []
    rows = []
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            problems.append((reader.line_num, f"bad CSV: {e}"))
            break
        if None in row:  # DictReader puts surplus cells under the key None
            problems.append(
                (reader.line_num, f"{len(fields) + len(row[None])} cells for {len(fields)} columns")
            )
            continue
        cleaned = {k.strip(): v for k, v in row.items() if k is not None}
        if all(v is None or not str(v).strip() for v in cleaned.values()):
            continue  # blank line
        rows.append((reader.line_num, cleaned))
    return rows


def _query(row: dict[str, Any]) -> Query:
    image = row.get("image")
    if not isinstance(image, str) or not image.strip():
        raise TypeError(f"'image' must be a non-empty path string, got {image!r}")
    kind = _optional_str(row, "kind")
    if kind is not None and kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; use one of {', '.join(KINDS)} or leave it empty")
    return Query(
        id=image.strip(),
        brand=_optional_str(row, "brand"),
        kind=kind,
        group=_optional_str(row, "group"),
    )


def _optional_str(row: dict[str, Any], key: str) -> str | None:
    value = row.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{key!r} must be a string or null, got {value!r}")
    return value.strip() or None
