"""The review queue's tables (SQLAlchemy 2.x ORM): items, the append-only decision log, portal
users and their sessions. The schema itself is created by the Alembic migrations in
``migrations/`` (:mod:`detector.review.db`); these classes must match them."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

STATUSES = ("pending", "confirmed", "rejected", "skipped")
DECISIONS = ("confirmed", "rejected", "skipped")
ITEM_KINDS = ("flagged", "near")  # near: unflagged, within the configured margin below the threshold
ROLES = ("brand", "analyst")


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class ReviewItem(Base):
    """One listing image queued for its brand's review (unique per image sha256 + listing id)."""

    __tablename__ = "review_items"
    __table_args__ = (UniqueConstraint("image_sha256", "listing_id", name="uq_review_items_image_listing"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    image_sha256: Mapped[str] = mapped_column(String(64))
    listing_id: Mapped[str] = mapped_column(String(256), default="")
    seller_id: Mapped[str | None] = mapped_column(String(256), nullable=True)
    image_name: Mapped[str] = mapped_column(String(1024), default="")
    image_blob: Mapped[str | None] = mapped_column(String(256), nullable=True)  # content-addressed path
    image_url: Mapped[str | None] = mapped_column(String(2048), nullable=True)
    image_width: Mapped[int | None] = mapped_column(Integer, nullable=True)
    image_height: Mapped[int | None] = mapped_column(Integer, nullable=True)
    brand: Mapped[str] = mapped_column(String(256), index=True)
    kind: Mapped[str] = mapped_column(String(16), default="flagged")
    score: Mapped[float] = mapped_column(Float)
    threshold: Mapped[float] = mapped_column(Float)
    threshold_source: Mapped[str] = mapped_column(String(256), default="")
    match_key: Mapped[str] = mapped_column(String(64), default="")  # thresholds key of the top match
    matches: Mapped[list] = mapped_column(JSON, default=list)
    box: Mapped[list | None] = mapped_column(JSON, nullable=True)
    reference_blobs: Mapped[dict] = mapped_column(JSON, default=dict)  # ref_id -> blob path
    model_fingerprint: Mapped[dict] = mapped_column(JSON, default=dict)
    model_preset: Mapped[str] = mapped_column(String(128), default="")
    index_generation: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    decided_by: Mapped[str | None] = mapped_column(String(128), nullable=True)


class Decision(Base):
    """The audit log: one row per decision, never updated or deleted (the migrations add
    database triggers that refuse UPDATE and DELETE on SQLite and PostgreSQL)."""

    __tablename__ = "review_decisions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("review_items.id"), index=True)
    brand: Mapped[str] = mapped_column(String(256), index=True)
    user_name: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(16))
    decision: Mapped[str] = mapped_column(String(16))
    previous: Mapped[str | None] = mapped_column(String(16), nullable=True)
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)


class User(Base):
    """A portal user: a brand's reviewer (sees only that brand) or a platform analyst."""

    __tablename__ = "review_users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    brand: Mapped[str | None] = mapped_column(String(256), nullable=True)
    token_hash: Mapped[str] = mapped_column(String(256))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class LoginSession(Base):
    """A logged-in browser: the cookie holds a random id, the table only its sha256."""

    __tablename__ = "review_sessions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("review_users.id"), index=True)
    csrf: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
