"""Query groups of the bench datasets and the ground-truth label of each query image.

A built set's ``labels.jsonl`` holds one :class:`QueryLabel` per line; :func:`read_labels`
reads it back.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from detector.errors import ConfigError

GROUPS: tuple[str, ...] = (
    "copy",
    "product_repost",
    "logo_large",
    "logo_small",
    "mirrored",
    "recoloured",
    "neg_unindexed",
    "neg_nologo",
)
NEGATIVE_GROUPS: tuple[str, ...] = ("neg_unindexed", "neg_nologo")
SAMPLE_GROUPS: tuple[str, ...] = tuple(g for g in GROUPS if g != "product_repost")


@dataclass(frozen=True)
class QueryLabel:
    """Ground truth for one listing/query image.

    Attributes:
        image: Image path relative to the labels file.
        brand: Indexed brand shown, or None for negatives.
        kind: ``"logo"`` or ``"product"`` (which reference kind it derives from), None for
            negatives.
        group: Transformation class, one of :data:`GROUPS`.
        box: ``[x0, y0, x1, y1]`` of the logo's painted pixels in image pixels (x1, y1
            exclusive), or None when no logo is visible.
        area_fraction: Box area / image area, or None.
        width_fraction: Box width / image width, or None.
        logo: Slug of the icon actually drawn (equals ``brand`` for positives; an unindexed
            brand for ``neg_unindexed``), or None.
        product_id: Product id of the source reference for ``product_repost``, else None.
    """

    image: str
    brand: str | None
    kind: str | None
    group: str
    box: tuple[int, int, int, int] | None
    area_fraction: float | None = None
    width_fraction: float | None = None
    logo: str | None = None
    product_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["box"] = list(self.box) if self.box is not None else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QueryLabel:
        box = data.get("box")
        return cls(
            image=str(data["image"]),
            brand=data.get("brand"),
            kind=data.get("kind"),
            group=str(data["group"]),
            box=tuple(int(v) for v in box) if box is not None else None,  # type: ignore[arg-type]
            area_fraction=data.get("area_fraction"),
            width_fraction=data.get("width_fraction"),
            logo=data.get("logo"),
            product_id=data.get("product_id"),
        )


def read_labels(path: str | os.PathLike[str]) -> list[QueryLabel]:
    """Read a ``labels.jsonl`` file.

    Args:
        path: The labels file; image paths in it are relative to its folder.

    Returns:
        Labels in file order.

    Raises:
        ConfigError: The file is missing or a line is not a valid label.

    Example:
        >>> labels = read_labels("sample/labels.jsonl")  # doctest: +SKIP
        >>> [l.image for l in labels if l.brand is None][:1]  # doctest: +SKIP
        ['listings/neg_nologo_00000.jpg']
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read labels file {path}: {e}") from e
    labels = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            labels.append(QueryLabel.from_dict(json.loads(line)))
        except (ValueError, KeyError, TypeError) as e:
            raise ConfigError(f"{path}:{number}: not a valid label: {e}") from e
    return labels
