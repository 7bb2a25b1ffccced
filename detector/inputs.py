"""Expanding command-line image arguments (files and folders) into an ordered list of files."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from detector.images import IMAGE_EXTENSIONS


def expand_image_inputs(inputs: Iterable[str | Path]) -> list[Path]:
    """Files are kept as given (so a bad one is reported, not dropped); folders are walked
    recursively for image files, in sorted order. Input order is preserved."""
    paths: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            paths.extend(
                sorted(p for p in path.rglob("*")
                       if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))
            )
        else:
            paths.append(path)
    return paths
