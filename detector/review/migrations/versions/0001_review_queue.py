"""review queue: items, append-only decision log, users, sessions

Revision ID: 0001
Revises:
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "review_items",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("image_sha256", sa.String(64), nullable=False),
        sa.Column("listing_id", sa.String(256), nullable=False),
        sa.Column("seller_id", sa.String(256)),
        sa.Column("image_name", sa.String(1024), nullable=False),
        sa.Column("image_blob", sa.String(256)),
        sa.Column("image_url", sa.String(2048)),
        sa.Column("image_width", sa.Integer),
        sa.Column("image_height", sa.Integer),
        sa.Column("brand", sa.String(256), nullable=False, index=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("threshold", sa.Float, nullable=False),
        sa.Column("threshold_source", sa.String(256), nullable=False),
        sa.Column("match_key", sa.String(64), nullable=False),
        sa.Column("matches", sa.JSON, nullable=False),
        sa.Column("box", sa.JSON),
        sa.Column("reference_blobs", sa.JSON, nullable=False),
        sa.Column("model_fingerprint", sa.JSON, nullable=False),
        sa.Column("model_preset", sa.String(128), nullable=False),
        sa.Column("index_generation", sa.Integer),
        sa.Column("created_at", _TZ, nullable=False, index=True),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("decided_at", _TZ),
        sa.Column("decided_by", sa.String(128)),
        sa.UniqueConstraint("image_sha256", "listing_id", name="uq_review_items_image_listing"),
    )
    op.create_table(
        "review_decisions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("item_id", sa.Integer, sa.ForeignKey("review_items.id"), nullable=False, index=True),
        sa.Column("brand", sa.String(256), nullable=False, index=True),
        sa.Column("user_name", sa.String(128), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("previous", sa.String(16)),
        sa.Column("note", sa.Text),
        sa.Column("created_at", _TZ, nullable=False, index=True),
    )
    op.create_table(
        "review_users",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(128), nullable=False, unique=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("brand", sa.String(256)),
        sa.Column("token_hash", sa.String(256), nullable=False),
        sa.Column("disabled", sa.Boolean, nullable=False),
        sa.Column("created_at", _TZ, nullable=False),
    )
    op.create_table(
        "review_sessions",
        sa.Column("id_hash", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("review_users.id"), nullable=False, index=True),
        sa.Column("csrf", sa.String(64), nullable=False),
        sa.Column("created_at", _TZ, nullable=False),
        sa.Column("expires_at", _TZ, nullable=False),
    )
    # The decision log is append-only: the database itself refuses to change or delete a row.
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for event in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER review_decisions_no_{event.lower()} BEFORE {event} ON review_decisions "
                "BEGIN SELECT RAISE(ABORT, 'review_decisions is append-only'); END"
            )
    elif dialect == "postgresql":
        op.execute(
            "CREATE FUNCTION review_decisions_append_only() RETURNS trigger AS $$ "
            "BEGIN RAISE EXCEPTION 'review_decisions is append-only'; END $$ LANGUAGE plpgsql"
        )
        op.execute(
            "CREATE TRIGGER review_decisions_append_only BEFORE UPDATE OR DELETE ON review_decisions "
            "FOR EACH ROW EXECUTE FUNCTION review_decisions_append_only()"
        )


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS review_decisions_no_update")
        op.execute("DROP TRIGGER IF EXISTS review_decisions_no_delete")
    elif dialect == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS review_decisions_append_only ON review_decisions")
        op.execute("DROP FUNCTION IF EXISTS review_decisions_append_only()")
    for table in ("review_sessions", "review_users", "review_decisions", "review_items"):
        op.drop_table(table)
