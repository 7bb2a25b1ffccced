"""Helpers of the review-portal tests: fake verdicts, a filled queue, logging in via TestClient."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from detector.review.recorder import QueueRecorder, RecordContext
from detector.review.store import ReviewStore
from detector.review.users import add_user
from detector.verdict import ScoredMatch, Verdict

CONTEXT = RecordContext({"preset": "fake", "arch": "fake:arch"}, 7)


def photo(seed: int, size: tuple[int, int] = (320, 240)) -> bytes:
    img = Image.new("RGB", size, (40 + (seed * 37) % 200, 120, 160))
    ImageDraw.Draw(img).rectangle((0, 0, 8 + seed, 12), fill=(10, 10, 10))  # distinct content per seed
    draw = ImageDraw.Draw(img)
    draw.rectangle((60, 50, 180, 150), fill=(230, 230, 230))
    draw.ellipse((80, 70, 160, 130), fill=(200, 20, 40))
    out = io.BytesIO()
    img.save(out, format="JPEG")
    return out.getvalue()


def reference_file(folder: Path, brand: str) -> Path:
    path = folder / f"{brand}-logo.png"
    if not path.exists():
        img = Image.new("RGB", (128, 128), "white")
        ImageDraw.Draw(img).ellipse((20, 20, 108, 108), fill=(200, 20, 40))
        img.save(path)
    return path


def verdict(brand: str, score: float, *, threshold: float = 0.8, ref: Path | None = None,
            name: str = "listing.jpg") -> Verdict:
    match = ScoredMatch(ref_id=3, brand=brand, kind="logo", product_id=None, score=score,
                        source=str(ref or "missing.png"), cosine=score - 0.1, inliers=25, verified=True,
                        box=(60, 50, 180, 150))
    return Verdict(image=name, flagged=score >= threshold, brand=brand, score=score, threshold=threshold,
                   threshold_source="default", matches=(match,), box=(60, 50, 180, 150))


def fill(store: ReviewStore, folder: Path, brands: dict[str, int]) -> dict[str, list[int]]:
    """``n`` flagged items per brand; returns their ids by brand."""
    recorder = QueueRecorder(store)
    ids: dict[str, list[int]] = {}
    for b, (brand, n) in enumerate(brands.items()):
        ref = reference_file(folder, brand)
        for i in range(n):
            item_id = recorder.record(verdict(brand, 0.85 + i / 100, ref=ref), CONTEXT,
                                      image=photo(b * 10 + i), listing_id=f"{brand}-{i}", seller_id="s1")
            ids.setdefault(brand, []).append(item_id)
    return ids


def users(store: ReviewStore, *brands: str) -> dict[str, str]:
    with store.session() as db:
        tokens = {"analyst": add_user(db, "analyst", "analyst")}
        for brand in brands:
            tokens[brand] = add_user(db, f"brand-{brand}", "brand", brand)
    return tokens


def login(client: Any, token: str) -> str:
    """Log ``client`` in with ``token``; returns the session's CSRF token (from a page's form)."""
    page = client.get("/review/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    answer = client.post("/review/login", data={"token": token, "csrf": csrf}, follow_redirects=False)
    assert answer.status_code == 303, answer.text
    return page_csrf(client.get("/review/queue").text)


def page_csrf(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)
