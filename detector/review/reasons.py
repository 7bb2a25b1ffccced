"""A queue item's verdict in plain words, for the reviewer (no jargon beyond "score")."""

from __future__ import annotations

from typing import Any

from detector.review.models import ReviewItem


def threshold_words(source: str, brand: str) -> str:
    """``brand:nike:logo`` -> "nike's own threshold for logo matches", and so on."""
    parts = source.split(":")
    if parts[0] == "brand" and len(parts) >= 2:
        kind = ":".join(parts[2:])
        return f"{parts[1]}'s own threshold" + (f" for {_kind_words(kind)} matches" if kind else "")
    if parts[0] == "kind" and len(parts) >= 2:
        return f"the threshold for {_kind_words(':'.join(parts[1:]))} matches"
    if source == "default":
        return "the default threshold"
    return f"the threshold ({source or 'unknown'})"


def _kind_words(key: str) -> str:
    kind, _, verified = key.partition(":")
    return f"geometrically verified {kind}" if verified else kind


def verdict_reasons(item: ReviewItem) -> list[str]:
    """Why the item is in the queue, then what each matched reference of its brand showed."""
    thr = threshold_words(item.threshold_source, item.brand)
    if item.kind == "flagged":
        lines = [f"Flagged as {item.brand}: its score {item.score:.3f} reached {thr}, {item.threshold:.3f}."]
    else:
        gap = item.threshold - item.score
        lines = [(f"Not flagged, but close: its score {item.score:.3f} is {gap:.3f} below {thr} "
                 f"({item.threshold:.3f}), so it was queued for a second look.")]
    for m in item.matches or []:
        if m.get("brand") == item.brand:
            lines.append(match_words(m))
    if item.box:
        lines.append("The red box on the listing photo is where the evidence was found.")
    return lines


def match_words(m: dict[str, Any]) -> str:
    """One matched reference's evidence as a sentence."""
    what = f"{m.get('kind', 'reference').capitalize()} reference #{m.get('ref_id')}"
    bits = [f"overall score {m.get('score', 0):.3f}", f"visual similarity {m.get('cosine', 0):.3f}"]
    if m.get("inliers") is not None:
        checked = "confirmed the match" if m.get("verified") else "did not confirm it"
        bits.append(f"the geometric check found {m['inliers']} matching keypoints and {checked}")
    if m.get("mirrored"):
        bits.append("the logo appears mirrored")
    if m.get("shape_iou") is not None:
        bits.append(f"outline overlap {m['shape_iou']:.2f}")
    area = m.get("logo_area")
    if area == "matched":
        bits.append("the product's logo area matched")
    elif area == "missing":
        bits.append("the product's logo area was not found")
    return f"{what}: " + "; ".join(bits) + "."
