"""Idempotency-Keys with a lease: the run holding a key, until when, and the incident it stored.

A claim used to be held until its request finished, so a worker killed mid-request left its key
answering "still running" for ever. Now a claim names its run (``claim_id``) and expires
(``lease_until``); a retry after the lease takes the key over. ``incident_id`` is set in the
transaction that stores the incident, so the run that takes over resumes that incident instead
of storing a second one. Keys claimed before this revision have no lease and count as expired.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from gridgov.store.models import UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("idempotency") as batch:
        batch.add_column(sa.Column("claim_id", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("lease_until", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("incident_id", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("idempotency") as batch:
        batch.drop_column("incident_id")
        batch.drop_column("lease_until")
        batch.drop_column("claim_id")
