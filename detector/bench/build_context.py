"""What every item generator of a dataset build shares, and what makes its bytes reproducible.

Each item (reference or query) draws from its own generator seeded by ``(seed, stage, group,
index)`` and is written with fixed JPEG encoder settings, so the same :class:`BuildParams`
give byte-identical files whatever the order or process an item is made in.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from detector.bench.logo_collections import LogoCollection, get_collection
from detector.bench.transforms import Box

# Stage codes mixed into every item's seed so items of different stages never share streams.
STAGE_SCENE, STAGE_PRODUCT, STAGE_QUERY, STAGE_PICK = 1, 2, 3, 4


@dataclass(frozen=True)
class BuildParams:
    """Everything that determines the bytes of a dataset (also written to dataset.json)."""

    kind: str
    seed: int
    brands: tuple[str, ...]
    unindexed: tuple[str, ...]
    groups: tuple[str, ...]
    per_class: int
    product_fraction: float
    brands_per_scene: int
    image_size: tuple[int, int]
    reference_size: int
    query_dir: str
    # Added later: dataset.json leaves each out while it has the value every earlier build had
    # (see LEGACY_DEFAULTS), so those builds keep their bytes and stay reusable.
    collection: str = "simple-icons"  # detector.bench.logo_collections name
    backgrounds: str = "photos"  # "photos" | "studio" (detector.bench.studio)
    logo_boxes: bool = True  # product rows carry their logo's box


# Values of the later BuildParams fields that builds made before they existed had.
LEGACY_DEFAULTS = {"collection": "simple-icons", "backgrounds": "photos", "logo_boxes": True}
BACKGROUNDS: tuple[str, ...] = ("photos", "studio")


@dataclass(frozen=True)
class Product:
    """A product-photo reference and the box of the logo pasted on it."""

    slug: str
    product_id: str
    path: str  # relative to the dataset root
    box: Box


@dataclass(frozen=True)
class BuildContext:
    """What every item job gets: the target folder, the parameters, the product references."""

    root: Path
    params: BuildParams
    products: tuple[Product, ...] = ()

    @property
    def logos(self) -> LogoCollection:
        return get_collection(self.params.collection)


def item_rng(*key: int) -> np.random.Generator:
    """The generator of one item, seeded by its key, e.g. ``(seed, stage, index)``."""
    return np.random.default_rng(np.random.SeedSequence([int(k) for k in key]))


def save_jpeg(image: Image.Image, path: Path, quality: int) -> None:
    # Fixed encoder settings: same pixels + same settings -> same bytes.
    buffer = io.BytesIO()
    image.convert("RGB").save(
        buffer, format="JPEG", quality=quality, subsampling=2, optimize=False, progressive=False
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue())
