"""The review queue: record verdicts once per listing image, list a brand's queue, decide.

:class:`ReviewStore` is the one entry point the service, the CLI and the portal use. Access is
always through a :class:`~detector.review.users.Principal` where it concerns one brand: a
brand user's view of an item that is not its brand's is the same as a missing item (None).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from detector.errors import ConfigError
from detector.review.blobs import BlobStore
from detector.review.db import open_engine, session_factory, sqlite_path
from detector.review.models import DECISIONS, ITEM_KINDS, STATUSES, Decision, ReviewItem, utcnow
from detector.review.users import Principal

ORDERS = ("newest", "score")
MAX_NOTE_CHARS = 2000


@dataclass(frozen=True)
class QueueFilter:
    """What a queue page shows. None: no filter on that field."""

    brand: str | None = None
    status: str | None = "pending"
    kind: str | None = None
    min_score: float | None = None
    max_score: float | None = None
    since: datetime | None = None
    until: datetime | None = None
    order: str = "newest"

    def __post_init__(self) -> None:
        if self.status is not None and self.status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}")
        if self.kind is not None and self.kind not in ITEM_KINDS:
            raise ValueError(f"kind must be one of {', '.join(ITEM_KINDS)}")
        if self.order not in ORDERS:
            raise ValueError(f"order must be one of {', '.join(ORDERS)}")


@dataclass(frozen=True)
class Page:
    items: list[ReviewItem]
    page: int
    per_page: int
    total: int

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.total / self.per_page))


class ReviewStore:
    """The queue in a database (any SQLAlchemy URL; a plain path is a SQLite file).

    Args:
        url: Database URL or SQLite file path; the schema is migrated on open.
        image_dir: Where listing and reference images are stored by content. Default: beside a
            SQLite file (``<file stem>-images/``); other databases need it, else images are kept
            only by reference (``image_url``).
        max_image_side, max_image_bytes: Bounds of a stored image (larger ones are downscaled).
    """

    def __init__(self, url: str | Path, *, image_dir: str | Path | None = None,
                 max_image_side: int = 1024, max_image_bytes: int = 2 * 1024 * 1024) -> None:
        self.engine = open_engine(url)
        self.url = self.engine.url.render_as_string(hide_password=True)
        self._sessions = session_factory(self.engine)
        if image_dir is None:
            db_file = sqlite_path(self.engine.url.render_as_string(hide_password=False))
            image_dir = db_file.with_name(db_file.stem + "-images") if db_file else None
        self.blobs = (BlobStore(image_dir, max_side=max_image_side, max_bytes=max_image_bytes)
                      if image_dir is not None else None)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions() as db:
            yield db

    def close(self) -> None:
        self.engine.dispose()

    # ------------------------------------------------------------------ recording
    def add_item(self, item: ReviewItem) -> int | None:
        """Insert ``item`` unless its (image sha256, listing id) is queued already.

        Returns:
            The new item's id, or None when it was already recorded.
        """
        with self.session() as db:
            exists = db.scalar(select(ReviewItem.id).where(
                ReviewItem.image_sha256 == item.image_sha256, ReviewItem.listing_id == item.listing_id))
            if exists is not None:
                return None
            db.add(item)
            try:
                db.commit()
            except IntegrityError:  # another instance recorded it between the check and now
                db.rollback()
                return None
            return item.id

    # ------------------------------------------------------------------ reading
    def queue(self, who: Principal, flt: QueueFilter, *, page: int = 1, per_page: int = 20) -> Page:
        """One page of the queue ``who`` may see (a brand user: its brand only)."""
        per_page = max(1, min(per_page, 100))
        page = max(1, page)
        query = self._scoped(select(ReviewItem), who)
        if flt.brand is not None:
            query = query.where(ReviewItem.brand == flt.brand)
        if flt.status is not None:
            query = query.where(ReviewItem.status == flt.status)
        if flt.kind is not None:
            query = query.where(ReviewItem.kind == flt.kind)
        if flt.min_score is not None:
            query = query.where(ReviewItem.score >= flt.min_score)
        if flt.max_score is not None:
            query = query.where(ReviewItem.score <= flt.max_score)
        if flt.since is not None:
            query = query.where(ReviewItem.created_at >= flt.since)
        if flt.until is not None:
            query = query.where(ReviewItem.created_at < flt.until)
        if flt.order == "score":
            query = query.order_by(ReviewItem.score.desc(), ReviewItem.id.desc())
        else:
            query = query.order_by(ReviewItem.created_at.desc(), ReviewItem.id.desc())
        with self.session() as db:
            total = db.scalar(select(func.count()).select_from(query.order_by(None).subquery())) or 0
            items = list(db.scalars(query.offset((page - 1) * per_page).limit(per_page)))
        return Page(items, page, per_page, total)

    def item(self, who: Principal, item_id: int) -> ReviewItem | None:
        """The item, or None when missing *or* not ``who``'s brand (never tell the two apart)."""
        with self.session() as db:
            return db.scalars(self._scoped(select(ReviewItem), who).where(ReviewItem.id == item_id)).one_or_none()

    def next_pending(self, who: Principal, after_id: int, brand: str | None = None) -> int | None:
        """The next pending item ``who`` may decide, newest first, other than ``after_id``."""
        query = self._scoped(select(ReviewItem.id), who).where(
            ReviewItem.status == "pending", ReviewItem.id != after_id)
        if brand:
            query = query.where(ReviewItem.brand == brand)
        with self.session() as db:
            return db.scalar(query.order_by(ReviewItem.created_at.desc(), ReviewItem.id.desc()).limit(1))

    def history(self, who: Principal, item_id: int) -> list[Decision]:
        if self.item(who, item_id) is None:
            return []
        with self.session() as db:
            return list(db.scalars(select(Decision).where(Decision.item_id == item_id).order_by(Decision.id)))

    def brands(self, who: Principal) -> list[str]:
        if not who.is_analyst:
            return [who.brand] if who.brand else []
        with self.session() as db:
            return list(db.scalars(select(ReviewItem.brand).distinct().order_by(ReviewItem.brand)))

    # ------------------------------------------------------------------ deciding
    def decide(self, who: Principal, item_id: int, decision: str, note: str | None = None) -> Decision | None:
        """Record ``who``'s decision on an item (appended to the audit log with the previous one).

        Returns:
            The log row, or None when ``who`` may not see the item (the caller answers 404).

        Raises:
            ValueError: Unknown decision or a note over 2,000 characters.
        """
        if decision not in DECISIONS:
            raise ValueError(f"decision must be one of {', '.join(DECISIONS)}")
        note = (note or "").strip() or None
        if note is not None and len(note) > MAX_NOTE_CHARS:
            raise ValueError(f"note is longer than {MAX_NOTE_CHARS} characters")
        with self.session() as db:
            item = db.scalars(
                self._scoped(select(ReviewItem), who).where(ReviewItem.id == item_id).with_for_update()
            ).one_or_none()
            if item is None:
                return None
            previous = item.status if item.status != "pending" else None
            now = utcnow()
            row = Decision(item_id=item.id, brand=item.brand, user_name=who.name, role=who.role,
                           decision=decision, previous=previous, note=note, created_at=now)
            db.add(row)
            item.status, item.decided_at, item.decided_by = decision, now, who.name
            db.commit()
            return row

    def decided_items(self) -> list[ReviewItem]:
        """Items whose current decision is confirmed or rejected (for tuning and export)."""
        with self.session() as db:
            return list(db.scalars(select(ReviewItem).where(
                ReviewItem.status.in_(("confirmed", "rejected"))).order_by(ReviewItem.id)))

    def image_file(self, rel: str | None) -> Path | None:
        if rel is None or self.blobs is None:
            return None
        return self.blobs.path(rel)

    @staticmethod
    def _scoped(query: Select[Any], who: Principal) -> Select[Any]:
        if who.is_analyst:
            return query
        if not who.brand:
            raise ConfigError(f"brand user {who.name} has no brand")
        return query.where(ReviewItem.brand == who.brand)
