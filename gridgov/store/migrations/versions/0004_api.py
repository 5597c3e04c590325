"""API credentials (hashed tokens and keys) and the idempotency record of POSTs.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from gridgov.store.models import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# Frozen copies, as in earlier revisions: later changes need a new revision.
_ROLES = ("admin", "commander", "dispatcher", "unit", "grid_worker", "analyst", "citizen")
_KINDS = ("token", "api_key")


def _in(column: str, values: tuple[str, ...]) -> str:
    listed = ", ".join(f"'{v}'" for v in values)
    return f"{column} IN ({listed})"


def upgrade() -> None:
    op.create_table(
        "credentials",
        sa.Column("credential_id", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("secret_sha256", sa.String(64), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("street_code", sa.String(18), nullable=True),
        sa.Column("unit_id", sa.String(64), nullable=True),
        sa.Column("grid_code", sa.String(18), nullable=True),
        sa.Column("label", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=True),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("credential_id", name="pk_credentials"),
        sa.UniqueConstraint("secret_sha256", name="uq_credentials_secret_sha256"),
        sa.CheckConstraint(_in("kind", _KINDS), name=op.f("ck_credentials_kind")),
        sa.CheckConstraint(_in("role", _ROLES), name=op.f("ck_credentials_role")),
    )
    op.create_table(
        "idempotency",
        sa.Column("scope", sa.String(64), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("status", sa.Integer(), nullable=True),
        sa.Column("media_type", sa.Text(), nullable=True),
        sa.Column("body", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("scope", "key", name="pk_idempotency"),
    )
    op.create_index("ix_idempotency_created_at", "idempotency", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_idempotency_created_at", table_name="idempotency")
    op.drop_table("idempotency")
    op.drop_table("credentials")
