"""The whole matters catalogue in the store: its version, source, domain and event-class names,
and the file's order of its matters.

Once ``gridgov load`` has stored a catalogue, dispatch, Open311, reports and simulation read it
from the store, never from the file again. The ``matters`` rows already hold every field of a
matter; what they lacked is what the catalogue says beside them: the names of its domains (which
Open311 shows as service groups) and of its event major classes, and the order of the matters.
That goes in one ``catalogs`` row, which lists the codes of the matters it was stored with. The
``matters`` table is unchanged. Matters stored before this revision have no such row: they are
listed by code and a domain is named by its code until a catalogue is loaded again.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "catalogs",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("version", sa.Text(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("event_majors", sa.JSON(), nullable=False),
        sa.Column("domains", sa.JSON(), nullable=False),
        sa.Column("matter_codes", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_catalogs"),
        sa.CheckConstraint("id = 1", name=op.f("ck_catalogs_one_row")),
    )


def downgrade() -> None:
    op.drop_table("catalogs")
