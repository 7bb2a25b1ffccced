"""What to index: a brand's reference images, from a folder (``REFS/<brand>/.../<image>``) or a
manifest (``.csv`` / ``.jsonl`` / ``.parquet``), as :class:`ReferenceItem` values; items that cannot be
read are reported as :class:`Failure` values, never raised."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detector.errors import ConfigError
from detector.images import IMAGE_EXTENSIONS
from index.records import KINDS

MANIFEST_FIELDS = ("path", "brand", "kind", "product_id", "attributes")


@dataclass(frozen=True)
class ReferenceItem:
    """One reference image to index: where it is and what it shows."""

    path: Path
    brand: str
    kind: str = "product"
    product_id: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    source: str | None = None  # what the record shows as its source; default: the path

    @property
    def display_source(self) -> str:
        return self.source or str(self.path)


@dataclass(frozen=True)
class Failure:
    """An item that could not be indexed, with the reason (also written to the report)."""

    item: str
    reason: str


# ---------------------------------------------------------------------- collecting inputs
def collect_references(refs: str | Path, *, default_kind: str = "product") -> tuple[list[ReferenceItem], list[Failure]]:
    """Read a reference folder or manifest into items.

    Args:
        refs: A folder laid out as ``REFS/<brand>/.../<image>``, or a manifest (.csv/.jsonl/.parquet)
            with fields ``path`` (relative to the manifest), ``brand`` and optional ``kind``
            (logo|product), ``product_id``, ``attributes`` (JSON object). Unknown columns are
            kept in ``attributes``.
        default_kind: Kind for folder items; an item inside a folder named ``logo``/``logos``,
            or whose file name starts with ``logo``, is a logo.

    Returns:
        The items, and the rows that could not be used (missing file, missing brand...).

    Raises:
        ConfigError: ``refs`` does not exist or is not a folder/.csv/.jsonl/.parquet.
    """
    refs = Path(refs)
    if default_kind not in KINDS:
        raise ConfigError(f"kind must be one of {', '.join(KINDS)}, got {default_kind!r}")
    if refs.is_dir():
        return _collect_folder(refs, default_kind), []
    if not refs.exists():
        raise ConfigError(f"references not found: {refs}")
    rows = read_manifest_rows(refs)
    items, failures = [], []
    for lineno, row in rows:
        try:
            items.append(_manifest_item(refs.parent, row))
        except ValueError as e:
            failures.append(Failure(f"{refs}:{lineno}", str(e)))
    return items, failures


def read_manifest_rows(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """The rows of a ``.csv``, ``.jsonl``/``.ndjson`` or ``.parquet`` manifest, each with the
    line (CSV, JSONL) or row number (Parquet, from 1) that names it in errors.

    Raises:
        ConfigError: Another suffix, a JSONL line that is not a JSON object, an unreadable
            Parquet file (or no ``pyarrow``: the ``ray`` extra installs it).
    """
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as fh:
            return list(enumerate(csv.DictReader(fh), start=2))
    if suffix in (".jsonl", ".ndjson"):
        rows = []
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ConfigError(f"{path}:{lineno}: not valid JSON: {e}") from e
            if not isinstance(row, dict):
                raise ConfigError(f"{path}:{lineno}: expected a JSON object")
            rows.append((lineno, row))
        return rows
    if suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError as e:
            raise ConfigError(f"{path}: reading a Parquet manifest needs pyarrow (the 'ray' extra)") from e
        try:
            table = pq.read_table(path)
        except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
            raise ConfigError(f"{path}: not a readable Parquet file: {e}") from e
        return list(enumerate(table.to_pylist(), start=1))
    raise ConfigError(f"{path}: expected a folder, a .csv, a .jsonl or a .parquet manifest")


def _collect_folder(root: Path, default_kind: str) -> list[ReferenceItem]:
    items = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root)
        if len(rel.parts) < 2 or path.suffix.lower() not in IMAGE_EXTENSIONS or path.name.startswith("."):
            continue
        folders = {part.lower() for part in rel.parts[1:-1]}
        is_logo = bool(folders & {"logo", "logos"}) or path.stem.lower().startswith("logo")
        items.append(ReferenceItem(path=path, brand=rel.parts[0], kind="logo" if is_logo else default_kind))
    return items


def _manifest_item(base: Path, row: dict[str, Any]) -> ReferenceItem:
    rel = str(row.get("path") or "").strip()
    brand = str(row.get("brand") or "").strip()
    if not rel:
        raise ValueError("missing 'path'")
    if not brand:
        raise ValueError(f"{rel}: missing 'brand'")
    kind = str(row.get("kind") or "product").strip().lower()
    if kind not in KINDS:
        raise ValueError(f"{rel}: kind must be one of {', '.join(KINDS)}, got {kind!r}")
    path = Path(rel) if Path(rel).is_absolute() else base / rel
    if not path.is_file():
        raise ValueError(f"{path}: file not found")
    attributes = row.get("attributes") or {}
    if isinstance(attributes, str):
        try:
            attributes = json.loads(attributes)
        except json.JSONDecodeError as e:
            raise ValueError(f"{rel}: attributes is not a JSON object: {e}") from e
    if not isinstance(attributes, dict):
        raise ValueError(f"{rel}: attributes must be a JSON object")
    extras = {k: v for k, v in row.items() if k not in MANIFEST_FIELDS and k is not None and v not in (None, "")}
    product_id = str(row["product_id"]).strip() if row.get("product_id") not in (None, "") else None
    return ReferenceItem(path=path, brand=brand, kind=kind, product_id=product_id, attributes={**extras, **attributes})
