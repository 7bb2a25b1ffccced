"""Benchmark classes for the text signal: brand names written on photos.

A small, self-contained set (it imports the benchmark's logo and photo modules, changes
neither): ``n_brands`` brands of the simple-icons catalogue whose names are words are indexed
by their logos (manifest ``names``: the brand's display name), and listing photos show text
(only, in the first classes):

* ``text_exact``: an indexed brand's name, in one of the system's fonts (``fc-list`` /
  ``/usr/share/fonts``; Pillow's default font when there are none), on a photo or on a
  product-like tag or box;
* ``text_misspelled``: the same with one edit (a letter changed, doubled, dropped or two
  swapped) or a look-alike letter (0/O, 1/l/I, rn/m, vv/w);
* ``logo_and_name``, ``logo_and_words``: the brand's logo set beside or above its name, or
  beside or above an ordinary phrase (a lockup: where the text's regions find the logo);
* ``text_other_brand``: the name of a brand that is not indexed (negative);
* ``text_ordinary``: ordinary words and phrases (negative);
* ``no_text``: benchmark photos with nothing added, some with printed text of their own
  (scikit-image's ``page`` and ``text``; negative).

Labels are the evaluation format (``image``, ``brand`` or null, ``kind``, ``group`` = class).
"""

from __future__ import annotations

import glob
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from detector.bench.logos import list_icons, render_logo, select_brands
from detector.bench.photos import load_photos, random_background

TEXT_ONLY = ("text_exact", "text_misspelled")
LOCKUPS = ("logo_and_name", "logo_and_words")  # the brand's logo set beside or above text
POSITIVE = TEXT_ONLY + LOCKUPS
NEGATIVE = ("text_other_brand", "text_ordinary", "no_text")
# Lockups last: each listing's draws are seeded by its class's position, so the first five
# classes are the same images as before the lockups were added.
CLASSES = TEXT_ONLY + NEGATIVE + LOCKUPS

ORDINARY = (
    "SUMMER SALE", "Handmade", "ORGANIC COTTON", "Fresh Coffee", "WEEKEND", "Garden Party",
    "Best Seller", "Happy Birthday", "Made with love", "FREE DELIVERY", "Morning", "Adventure",
    "Kitchen", "Holiday", "Mountain", "OCEAN BREEZE", "Vintage Denim", "Sunshine", "Street Food",
    "Midnight", "Travel Light", "Wild Flowers", "Good Vibes", "Homemade", "Bakery",
)
LOOK_ALIKES = (("o", "0"), ("O", "0"), ("l", "1"), ("I", "1"), ("i", "l"), ("m", "rn"), ("w", "vv"), ("S", "5"))


@dataclass(frozen=True)
class TextSet:
    root: Path
    manifest: Path  # the references to index (logos, with their names)
    labels: Path
    brands: tuple[str, ...]


def system_fonts() -> list[str]:
    """TrueType/OpenType fonts installed (Debian: fonts-dejavu, fonts-liberation, ...)."""
    found = sorted(set(glob.glob("/usr/share/fonts/**/*.ttf", recursive=True)
                       + glob.glob("/usr/share/fonts/**/*.otf", recursive=True)))  # fmt: skip
    return [f for f in found if "Math" not in f]  # symbol fonts draw no letters


def _font(fonts: list[str], rng: np.random.Generator, size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    if fonts:
        return ImageFont.truetype(fonts[int(rng.integers(len(fonts)))], size)
    return ImageFont.load_default(size)


def word_brands(count: int, *, seed: int, exclude: tuple[str, ...] = ()) -> list[str]:
    """Brands whose display name is letters and spaces, 5 to 16 characters."""
    ok = [i.slug for i in list_icons() if re.fullmatch(r"[A-Za-z][A-Za-z ]{3,14}[A-Za-z]", i.title)]
    return select_brands(count, seed=seed, candidates=ok, exclude=exclude)


def misspell(name: str, rng: np.random.Generator) -> str:
    """One edit or one look-alike letter, never the name itself."""
    for _ in range(20):
        options = [(a, b) for a, b in LOOK_ALIKES if a in name]
        if options and rng.random() < 0.4:
            a, b = options[int(rng.integers(len(options)))]
            spots = [i for i in range(len(name)) if name.startswith(a, i)]
            i = spots[int(rng.integers(len(spots)))]
            out = name[:i] + b + name[i + len(a):]
        else:
            letters = [i for i, c in enumerate(name) if c.isalpha()]
            i = letters[int(rng.integers(1, len(letters)))]  # keep the first letter
            edit = int(rng.integers(4))
            c = name[i]
            if edit == 0:
                out = name[:i] + c + name[i:]  # doubled
            elif edit == 1:
                out = name[:i] + name[i + 1:]  # dropped
            elif edit == 2 and name[i - 1].isalpha():
                out = name[: i - 1] + c + name[i - 1] + name[i + 1:]  # swapped
            else:
                new = "abcdefghijklmnopqrstuvwxyz"[int(rng.integers(26))]
                out = name[:i] + (new.upper() if c.isupper() else new) + name[i + 1:]
        if out.lower() != name.lower():
            return out
    return name + name[-1]


def draw_text(image: Image.Image, text: str, rng: np.random.Generator, fonts: list[str],
              emblem: Image.Image | None = None) -> Image.Image:  # fmt: skip
    """``text`` on the photo: directly in a contrasting colour, or on a light tag / dark box;
    17 to 68 px high (on 480 px), a third of them turned by 3 to 12 degrees. With ``emblem``
    (an RGBA logo), the logo is set beside the text (3 in 5) or above it, 1.2 to 2.2 times
    the text's height (a lockup); the draws for the text alone are unchanged."""
    w, h = image.size
    size = int(rng.integers(max(12, h // 28), max(16, h // 7)))
    font = _font(fonts, rng, size)
    if rng.random() < 0.5:
        text = text.upper()
    probe = ImageDraw.Draw(image)
    x0, y0, x1, y1 = probe.textbbox((0, 0), text, font=font)
    beside, mark = False, None
    if emblem is not None:
        beside = bool(rng.random() < 0.6)
        side = max(24, round(float(rng.uniform(1.2, 2.2)) * (y1 - y0)))
        mark = emblem.copy()
        mark.thumbnail((side, side), Image.Resampling.LANCZOS)
    room = w * 0.85 - (mark.width + size // 2 if beside and mark is not None else 0)
    while x1 - x0 > room and size > 12:
        size = int(size * 0.85)
        font = _font(fonts, rng, size)
        x0, y0, x1, y1 = probe.textbbox((0, 0), text, font=font)
    tw, th = int(x1 - x0), int(y1 - y0)
    gap = size // 2
    mark_w = mark.width + gap if beside and mark is not None else 0
    mark_h = mark.height + gap if not beside and mark is not None else 0
    bw = max(tw + mark_w, mark.width if mark is not None else 0)
    bh = max(th + mark_h, mark.height if beside and mark is not None else 0)
    pad = size // 3
    bx = int(rng.integers(pad + 8, max(pad + 9, w - bw - pad - 8)))
    by = int(rng.integers(pad + 8, max(pad + 9, h - bh - pad - 8)))
    x, y = bx + mark_w, by + mark_h + (bh - th) // 2 * beside
    tw, th = bw, bh  # the tag and the turn are around the whole block
    layer = Image.new("RGBA", image.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    style = rng.random()
    if style < 0.6:  # a tag or box on the product
        light = style < 0.35
        fill = tuple(int(v) for v in (rng.integers(215, 250, 3) if light else rng.integers(10, 60, 3)))
        draw.rectangle((bx - pad, by - pad, bx + tw + pad, by + th + pad), fill=(*fill, 255))
        ink = tuple(int(v) for v in (rng.integers(0, 70, 3) if light else rng.integers(200, 256, 3)))
    else:  # printed on the photo: the colour that contrasts with the area
        patch = np.asarray(image.crop((bx, by, bx + tw, by + th)).convert("L"), dtype=np.float32)
        ink = (250, 250, 245) if patch.mean() < 128 else (15, 15, 20)
    draw.text((x - x0, y - y0), text, fill=(*ink, 255), font=font)
    if mark is not None:  # left of the text, centred on it; or above it, centred
        mx = bx if beside else bx + (tw - mark.width) // 2
        my = by + (th - mark.height) // 2 if beside else by
        layer.alpha_composite(mark, (mx, my))
    if rng.random() < 1 / 3:
        angle = float(rng.uniform(3, 12)) * (1 if rng.random() < 0.5 else -1)
        layer = layer.rotate(angle, resample=Image.Resampling.BICUBIC, center=(bx + tw / 2, by + th / 2))
    return Image.alpha_composite(image.convert("RGBA"), layer).convert("RGB")


def build_text_set(root: str | Path, *, n_brands: int = 40, per_class: int = 20, seed: int = 0,
                   size: tuple[int, int] = (640, 480)) -> TextSet:  # fmt: skip
    """Write the references (logos + names manifest), the listings and their labels."""
    root = Path(root)
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "listings").mkdir(parents=True, exist_ok=True)
    titles = {i.slug: i.title for i in list_icons()}
    brands = word_brands(n_brands, seed=seed)
    others = word_brands(per_class, seed=seed + 1000, exclude=tuple(brands))
    fonts = system_fonts()
    photos = load_photos()
    rows = []
    for slug in brands:
        path = root / "refs" / f"{slug}.png"
        render_logo(slug, 256).save(path)
        rows.append({"path": f"refs/{slug}.png", "brand": slug, "kind": "logo", "names": [titles[slug]]})
    manifest = root / "refs.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    labels = []
    for c, cls in enumerate(CLASSES):
        for i in range(per_class):
            rng = np.random.default_rng([seed, c, i])
            photo = photos[int(rng.integers(len(photos)))]
            image = random_background(rng, size, photo=photo)
            brand = None
            emblem = None
            if cls in LOCKUPS:
                brand = brands[int(rng.integers(len(brands)))]
                text = titles[brand] if cls == "logo_and_name" else ORDINARY[i % len(ORDINARY)]
                emblem = render_logo(brand, 256)
            elif cls in POSITIVE:
                brand = brands[int(rng.integers(len(brands)))]
                text = titles[brand] if cls == "text_exact" else misspell(titles[brand], rng)
            elif cls == "text_other_brand":
                text = titles[others[i % len(others)]]
            elif cls == "text_ordinary":
                text = ORDINARY[i % len(ORDINARY)]
            else:
                text = ""
            if text:
                image = draw_text(image, text, rng, fonts, emblem)
            name = f"listings/{cls}_{i:03d}.jpg"
            image.convert("RGB").save(root / name, quality=int(rng.integers(60, 92)))
            labels.append({"image": name, "brand": brand, "kind": "logo" if brand else None, "group": cls, "text": text})
    labels_path = root / "labels.jsonl"
    labels_path.write_text("".join(json.dumps(r) + "\n" for r in labels))
    return TextSet(root, manifest, labels_path, tuple(brands))
