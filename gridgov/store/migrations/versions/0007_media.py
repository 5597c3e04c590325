"""Evidence photos of incidents: one row per photo and event, the files on disk.

The files live under the media root (``GRIDGOV_MEDIA_ROOT``), one directory per incident, named
by the SHA-256 of the bytes uploaded; the row holds what the photo says of itself (size,
dimensions, EXIF time and GPS) and, once removed, who removed it and why.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from gridgov.store.models import UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# A frozen copy: a later change needs a new revision.
_KINDS = ("report", "resolve", "verify")


def upgrade() -> None:
    kinds = ", ".join(f"'{k}'" for k in _KINDS)
    op.create_table(
        "media",
        sa.Column("media_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("incident_id", sa.String(64), nullable=False),
        sa.Column("event_seq", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("content_type", sa.String(32), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("taken_at", UTCDateTime(), nullable=True),
        sa.Column("gps_lon", sa.Float(), nullable=True),
        sa.Column("gps_lat", sa.Float(), nullable=True),
        sa.Column("public", sa.Boolean(), nullable=False),
        sa.Column("uploaded_at", UTCDateTime(), nullable=False),
        sa.Column("uploaded_by", sa.Text(), nullable=False),
        sa.Column("removed_at", UTCDateTime(), nullable=True),
        sa.Column("removed_by", sa.Text(), nullable=True),
        sa.Column("removed_reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("media_id", name="pk_media"),
        sa.ForeignKeyConstraint(
            ["incident_id"],
            ["incidents.incident_id"],
            name="fk_media_incident_id_incidents",
        ),
        sa.UniqueConstraint(
            "incident_id", "event_seq", "sha256", name="uq_media_incident_id_event_seq_sha256"
        ),
        sa.CheckConstraint(f"kind IN ({kinds})", name=op.f("ck_media_kind")),
        sa.CheckConstraint(
            "(removed_at IS NULL) = (removed_reason IS NULL)",
            name=op.f("ck_media_removed_with_reason"),
        ),
    )
    op.create_index("ix_media_incident_id", "media", ["incident_id"])


def downgrade() -> None:
    op.drop_index("ix_media_incident_id", table_name="media")
    op.drop_table("media")
