"""Logo collections a benchmark set can be drawn from: brand namespaces with no brand in common.

* ``simple-icons`` (default): monochrome marks of ~3,400 brands (:mod:`detector.bench.logos`).
* ``crypto``: the colour icons of the npm package ``cryptocurrency-icons`` (``svg/color``),
  coloured discs with a glyph; brand names ``crypto-<symbol>``.
* ``flags``: the 4:3 country and region flags of the npm package ``flag-icons``
  (``flags/4x3``), look-alikes by nature; brand names ``flag-<code>``.

simple-icons slugs never contain ``-``, so the prefixes keep the namespaces apart. The npm
packages are read straight from their ``npm pack`` tarballs (no extraction) in
:func:`collections_dir` (``$COUNTERFEIT_LOGO_COLLECTIONS``, default
``<sys.prefix>/share/logo-collections``, where ``scripts/setup_env.sh`` puts them).

Every collection renders tight RGBA crops with cairosvg and picks brands in a seeded order of
its sorted names, skipping marks that look like one already taken (simple-icons compares
silhouettes; the colour collections compare small colour thumbnails, since their silhouettes
are all discs or rectangles, and drop only marks that look identical: look-alike flags and coins
are what these collections are for).
"""

from __future__ import annotations

import functools
import io
import os
import re
import sys
import tarfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from detector.bench import logos
from detector.errors import ConfigError

DEFAULT_COLLECTION = "simple-icons"
ENV_DIR = "COUNTERFEIT_LOGO_COLLECTIONS"

# Two colour marks count as the same mark when under 1 % of their 32x32 thumbnails' pixels (on
# white) differ by more than 64 in some channel: the flags of Chad and Romania (0 %) or Monaco
# and Indonesia, and files that are copies. Look-alikes stay: Italy and Mexico differ in 3 % (the
# emblem), Bolivia and Ghana in 2.3 %, Bitcoin and Bitcoin Plus in 15 %.
_THUMB_SIZE = 32
_THUMB_DIFFERENT = 64
_DUPLICATE_SHARE = 0.01
_ALPHA_ON = 32
_MIN_COVERAGE = 0.004


@dataclass(frozen=True)
class NpmSource:
    """An npm package whose tarball holds one SVG per brand."""

    package: str
    version: str
    member_dir: str  # inside the tarball, e.g. "package/svg/color/"
    prefix: str  # brand-name prefix, e.g. "crypto-"
    skip: tuple[str, ...] = ()  # file stems that are not brands (generic placeholders)

    @property
    def tarball(self) -> str:
        return f"{self.package}-{self.version}.tgz"

    @property
    def fetch_command(self) -> str:
        return f"npm pack {self.package}@{self.version} --pack-destination {collections_dir()}"


NPM_SOURCES: dict[str, NpmSource] = {
    "crypto": NpmSource(
        "cryptocurrency-icons", "0.18.1", "package/svg/color/", "crypto-", skip=("generic",)
    ),
    "flags": NpmSource("flag-icons", "7.5.0", "package/flags/4x3/", "flag-"),
}
COLLECTIONS: tuple[str, ...] = (DEFAULT_COLLECTION, *NPM_SOURCES)


def collections_dir() -> Path:
    """Where the npm tarballs are looked for (``$COUNTERFEIT_LOGO_COLLECTIONS`` overrides)."""
    env = os.environ.get(ENV_DIR)
    return Path(env) if env else Path(sys.prefix) / "share" / "logo-collections"


class LogoCollection:
    """A namespace of brands and how their logos render.

    Attributes:
        name: One of :data:`COLLECTIONS`.
        monochrome: Marks are one colour (a recolour paints the whole mark; colour marks keep
            their inner structure through a tint instead).
    """

    name: str
    monochrome: bool

    def names(self) -> list[str]:
        """Every brand name, sorted (a stable order for seeded choices)."""
        raise NotImplementedError

    def colour(self, name: str) -> str:
        """The mark's main colour, six hex digits (a recolour moves away from it)."""
        raise NotImplementedError

    def render(self, name: str, size: int) -> Image.Image:
        """The mark cropped tight, longest side ``size`` pixels, RGBA."""
        raise NotImplementedError

    def select(
        self,
        count: int,
        *,
        seed: int,
        candidates: Sequence[str] | None = None,
        exclude: Iterable[str] = (),
    ) -> list[str]:
        """``count`` distinct-looking brands in a seeded order (see :func:`logos.select_brands`)."""
        raise NotImplementedError

    def usable(self) -> int:
        """How many distinct-looking brands the collection holds."""
        raise NotImplementedError


class _SimpleIcons(LogoCollection):
    name = DEFAULT_COLLECTION
    monochrome = True

    def names(self) -> list[str]:
        return [info.slug for info in logos.list_icons()]

    def colour(self, name: str) -> str:
        return logos.get_icon(name).hex

    def render(self, name: str, size: int) -> Image.Image:
        return logos.render_logo(name, size)

    def select(self, count, *, seed, candidates=None, exclude=()):  # type: ignore[no-untyped-def]
        return logos.select_brands(count, seed=seed, candidates=candidates, exclude=exclude)

    def usable(self) -> int:
        return len(self.names())  # about 3,400: more than any bench size asks for


class _NpmCollection(LogoCollection):
    monochrome = False

    def __init__(self, name: str, source: NpmSource) -> None:
        self.name = name
        self.source = source

    def names(self) -> list[str]:
        return list(self._svgs())

    def _svgs(self) -> dict[str, bytes]:
        return _read_svgs(self.name, str(collections_dir() / self.source.tarball))

    def _svg(self, name: str) -> bytes:
        try:
            return self._svgs()[name]
        except KeyError as e:
            raise ConfigError(f"unknown {self.name} brand {name!r}") from e

    def colour(self, name: str) -> str:
        return _main_colour(self.name, name, self._svg(name))

    def render(self, name: str, size: int) -> Image.Image:
        if not 8 <= size <= 4096:
            raise ConfigError(f"logo size must be in 8..4096, got {size}")
        return _render_colour(self.name, name, self._svg(name), size)

    def _thumb(self, name: str) -> np.ndarray | None:
        try:
            return _thumbnail(self.name, name, self._svg(name))
        except ConfigError:
            return None

    def select(self, count, *, seed, candidates=None, exclude=()):  # type: ignore[no-untyped-def]
        if count < 0:
            raise ConfigError(f"brand count must be >= 0, got {count}")
        chosen = self._distinct(seed, candidates, exclude, count)
        if len(chosen) < count:
            raise ConfigError(
                f"only {len(chosen)} usable distinct {self.name} logos, {count} requested"
            )
        return chosen

    def usable(self) -> int:
        return len(self._distinct(0, None, (), None))

    def _distinct(
        self,
        seed: int,
        candidates: Sequence[str] | None,
        exclude: Iterable[str],
        count: int | None,
    ) -> list[str]:
        pool = sorted(candidates) if candidates is not None else self.names()
        excluded = set(exclude)
        taken = [t for t in (self._thumb(n) for n in sorted(excluded)) if t is not None]
        order = np.random.default_rng(np.random.SeedSequence([seed, 0x10605])).permutation(
            len(pool)
        )
        chosen: list[str] = []
        for idx in order:
            if count is not None and len(chosen) == count:
                break
            name = pool[int(idx)]
            if name in excluded:
                continue
            thumb = self._thumb(name)
            if thumb is None or any(_same_mark(thumb, t) for t in taken):
                continue
            chosen.append(name)
            taken.append(thumb)
        return chosen


@functools.cache
def get_collection(name: str = DEFAULT_COLLECTION) -> LogoCollection:
    """The collection called ``name``.

    Raises:
        ConfigError: Unknown name.
    """
    if name == DEFAULT_COLLECTION:
        return _SimpleIcons()
    if name in NPM_SOURCES:
        return _NpmCollection(name, NPM_SOURCES[name])
    raise ConfigError(f"unknown logo collection {name!r}; choose from {list(COLLECTIONS)}")


def check_available(name: str) -> None:
    """Raise ConfigError (saying how to fetch it) when a collection's files are missing."""
    collection = get_collection(name)
    if isinstance(collection, _NpmCollection):
        collection.names()


# ---------------------------------------------------------------- tarball + rendering
@functools.cache
def _read_svgs(collection: str, tarball: str) -> dict[str, bytes]:
    source = NPM_SOURCES[collection]
    path = Path(tarball)
    if not path.is_file():
        raise ConfigError(
            f"logo collection {collection!r} needs {path}; fetch it with: "
            f"mkdir -p {path.parent} && {source.fetch_command} (or run scripts/setup_env.sh; "
            f"${ENV_DIR} sets another folder)"
        )
    out: dict[str, bytes] = {}
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:
                if not (
                    member.isfile()
                    and member.name.startswith(source.member_dir)
                    and member.name.endswith(".svg")
                ):
                    continue
                stem = member.name[len(source.member_dir) : -len(".svg")]
                if "/" in stem or stem in source.skip:
                    continue
                name = source.prefix + re.sub(r"[^a-z0-9-]", "", stem.lower())
                handle = tar.extractfile(member)
                if handle is None or name == source.prefix or name in out:
                    continue
                out[name] = handle.read()
    except (OSError, tarfile.TarError) as e:
        raise ConfigError(f"cannot read {path}: {e}; delete it and fetch it again") from e
    if not out:
        raise ConfigError(f"{path} holds no SVG under {source.member_dir}")
    return dict(sorted(out.items()))


@functools.lru_cache(maxsize=256)
def _render_png(collection: str, name: str, svg: bytes, canvas: int) -> bytes:
    import cairosvg

    # A square canvas: the SVG keeps its aspect (preserveAspectRatio "meet"); crop after.
    return cairosvg.svg2png(bytestring=svg, output_width=canvas, output_height=canvas)


def _render_colour(collection: str, name: str, svg: bytes, size: int) -> Image.Image:
    canvas = min(2 * size, 4096)
    with Image.open(io.BytesIO(_render_png(collection, name, svg, canvas))) as png:
        image = png.convert("RGBA")
    alpha = np.asarray(image.getchannel("A"))
    if (alpha >= _ALPHA_ON).mean() < _MIN_COVERAGE:
        raise ConfigError(f"{collection} logo {name!r} renders blank")
    box = Image.fromarray((alpha >= _ALPHA_ON).astype(np.uint8) * 255).getbbox()
    assert box is not None
    image = image.crop(box)
    scale = size / max(image.size)
    new_size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(new_size, Image.Resampling.LANCZOS)


def _same_mark(a: np.ndarray, b: np.ndarray) -> bool:
    differs = np.abs(a - b).max(axis=2) > _THUMB_DIFFERENT
    return float(differs.mean()) < _DUPLICATE_SHARE


@functools.lru_cache(maxsize=4096)
def _thumbnail(collection: str, name: str, svg: bytes) -> np.ndarray:
    """32x32 RGB of the mark padded square on white (int16), for identical-mark checks."""
    logo = _render_colour(collection, name, svg, 48)
    side = max(logo.size)
    square = Image.new("RGBA", (side, side), (255, 255, 255, 255))
    square.alpha_composite(logo, ((side - logo.width) // 2, (side - logo.height) // 2))
    small = square.convert("RGB").resize((_THUMB_SIZE,) * 2, Image.Resampling.BILINEAR)
    return np.asarray(small, dtype=np.int16)


@functools.lru_cache(maxsize=4096)
def _main_colour(collection: str, name: str, svg: bytes) -> str:
    """The most common clearly coloured (not near-white/near-black) colour, else the mean."""
    rgba = np.asarray(_render_colour(collection, name, svg, 48)).reshape(-1, 4)
    rgb = rgba[rgba[:, 3] >= 128, :3].astype(np.int64)
    if len(rgb) == 0:
        return "808080"
    spread = rgb.max(axis=1) - rgb.min(axis=1)
    coloured = rgb[spread >= 40]
    if len(coloured):
        quant = coloured // 32
        keys, counts = np.unique(
            quant[:, 0] * 64 + quant[:, 1] * 8 + quant[:, 2], return_counts=True
        )
        top = keys[int(np.argmax(counts))]
        pick = coloured[(quant[:, 0] * 64 + quant[:, 1] * 8 + quant[:, 2]) == top]
        colour = pick.mean(axis=0)
    else:
        colour = rgb.mean(axis=0)
    return "".join(f"{round(float(c)):02X}" for c in colour)
