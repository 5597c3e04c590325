"""Planning participation (power 2) and major-decision advice (power 4) on the consultations of
power 1.

``consultations`` learns what a consultation is about (``kind``: appointment, planning,
decision), the catalogue item, the stage it was registered at and whether that was late, a
title, the footprint and its buffer. The office and head columns become optional, required (by
a CHECK) for appointments only; the rows already stored are appointments. Two new tables: the
streets asked (``consultation_requests``, one per street, with its working-day deadline) and
the append-only ``consultation_events`` (suggestions, answers, adoptions, acceptances,
supervisions). Credentials learn a ``department`` role, scoped by the department's name.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from gridgov.store.models import GeometryType, UTCDateTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_KINDS = ("appointment", "planning", "decision")
_OPINIONS = ("agree", "disagree", "conditional")
_ADOPTIONS = ("adopted", "partly", "not_adopted")
_ACTIONS = ("register", "suggest", "respond", "adopt", "accept", "supervise")
_ROLES_BEFORE = ("admin", "commander", "dispatcher", "unit", "grid_worker", "analyst", "citizen")
_ROLES = (*_ROLES_BEFORE, "department")
_APPEND_ONLY = "consultation records are append-only"
_TABLES = ("consultation_requests", "consultation_events")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _append_only(postgres: bool) -> None:
    # The record of who was asked and what became of each opinion is what the report counts.
    if postgres:
        op.execute(
            "CREATE FUNCTION consultation_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
            f"BEGIN RAISE EXCEPTION '{_APPEND_ONLY}: % on % is not allowed', TG_OP, TG_TABLE_NAME "
            "USING ERRCODE = 'insufficient_privilege'; END $$"
        )
    for table in _TABLES:
        if postgres:
            op.execute(
                f"CREATE TRIGGER {table}_no_update_delete BEFORE UPDATE OR DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION consultation_append_only()"
            )
            op.execute(
                f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION consultation_append_only()"
            )
            continue
        for operation in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER {table}_no_{operation.lower()} BEFORE {operation} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{_APPEND_ONLY}: {operation} on {table} is not "
                "allowed'); END"
            )


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    with op.batch_alter_table("consultations") as batch:
        batch.add_column(
            sa.Column("kind", sa.String(16), nullable=False, server_default="appointment")
        )
        batch.add_column(sa.Column("item_code", sa.String(32), nullable=True))
        batch.add_column(sa.Column("stage", sa.String(16), nullable=True))
        batch.add_column(sa.Column("late", sa.Boolean(), nullable=True))
        batch.add_column(sa.Column("title", sa.Text(), nullable=True))
        batch.add_column(sa.Column("footprint", GeometryType("GEOMETRY"), nullable=True))
        batch.add_column(sa.Column("buffer_m", sa.Float(), nullable=True))
        for column in ("office_id", "street_code", "head_name", "proposed_move"):
            batch.alter_column(column, nullable=True)
        batch.create_check_constraint("kind", _in("kind", _KINDS))
        batch.create_check_constraint(
            "appointment",
            "kind <> 'appointment' OR (office_id IS NOT NULL AND street_code IS NOT NULL "
            "AND head_name IS NOT NULL AND proposed_move IS NOT NULL)",
        )
        batch.create_check_constraint(
            "footprinted",
            "kind = 'appointment' OR (item_code IS NOT NULL AND stage IS NOT NULL "
            "AND footprint IS NOT NULL AND late IS NOT NULL)",
        )

    op.create_table(
        "consultation_requests",
        sa.Column("request_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("consultation_id", sa.Integer(), nullable=False),
        sa.Column("street_code", sa.String(18), nullable=False),
        sa.Column("community_codes", sa.JSON(), nullable=False),
        sa.Column("direct", sa.Boolean(), nullable=False),
        sa.Column("sent_at", UTCDateTime(), nullable=False),
        sa.Column("due_at", UTCDateTime(), nullable=False),
        sa.Column("due_estimated", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("request_id", name="pk_consultation_requests"),
        sa.ForeignKeyConstraint(
            ["consultation_id"],
            ["consultations.consultation_id"],
            name="fk_consultation_requests_consultation_id_consultations",
        ),
        sa.UniqueConstraint(
            "consultation_id",
            "street_code",
            name="uq_consultation_requests_consultation_id_street_code",
        ),
    )
    op.create_index(
        "ix_consultation_requests_street_code", "consultation_requests", ["street_code"]
    )
    op.create_table(
        "consultation_events",
        sa.Column("event_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("consultation_id", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=True),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("street_code", sa.String(18), nullable=True),
        sa.Column("community_code", sa.String(18), nullable=True),
        sa.Column("opinion", sa.String(16), nullable=True),
        sa.Column("adoption", sa.String(16), nullable=True),
        sa.Column("accepted", sa.Boolean(), nullable=True),
        sa.Column("level", sa.String(16), nullable=True),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("event_id", name="pk_consultation_events"),
        sa.ForeignKeyConstraint(
            ["consultation_id"],
            ["consultations.consultation_id"],
            name="fk_consultation_events_consultation_id_consultations",
        ),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["consultation_requests.request_id"],
            name="fk_consultation_events_request_id_consultation_requests",
        ),
        sa.CheckConstraint(_in("action", _ACTIONS), name=op.f("ck_consultation_events_action")),
        sa.CheckConstraint(
            "opinion IS NULL OR " + _in("opinion", _OPINIONS),
            name=op.f("ck_consultation_events_opinion"),
        ),
        sa.CheckConstraint(
            "adoption IS NULL OR " + _in("adoption", _ADOPTIONS),
            name=op.f("ck_consultation_events_adoption"),
        ),
    )
    op.create_index(
        "ix_consultation_events_consultation_id", "consultation_events", ["consultation_id"]
    )
    op.create_index("ix_consultation_events_request_id", "consultation_events", ["request_id"])
    op.create_index("ix_consultation_events_action_at", "consultation_events", ["action", "at"])
    _append_only(postgres)

    with op.batch_alter_table("credentials") as batch:
        batch.add_column(sa.Column("department", sa.Text(), nullable=True))
        batch.drop_constraint(op.f("ck_credentials_role"), type_="check")
        batch.create_check_constraint("role", _in("role", _ROLES))


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    op.execute("DELETE FROM credentials WHERE role = 'department'")
    with op.batch_alter_table("credentials") as batch:
        batch.drop_constraint(op.f("ck_credentials_role"), type_="check")
        batch.create_check_constraint("role", _in("role", _ROLES_BEFORE))
        batch.drop_column("department")
    op.drop_table("consultation_events")
    op.drop_table("consultation_requests")
    if postgres:
        op.execute("DROP FUNCTION consultation_append_only()")
    op.execute("DELETE FROM consultations WHERE kind <> 'appointment'")
    with op.batch_alter_table("consultations") as batch:
        for name in ("footprinted", "appointment", "kind"):
            batch.drop_constraint(op.f(f"ck_consultations_{name}"), type_="check")
        for column in ("office_id", "street_code", "head_name", "proposed_move"):
            batch.alter_column(column, nullable=False)
        for column in ("buffer_m", "footprint", "title", "late", "stage", "item_code", "kind"):
            batch.drop_column(column)
