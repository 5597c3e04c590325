"""The incident workflow: append-only events, notices, consultations; incidents learn their
duplicates, reporters and descriptions; dispatcher statuses become workflow states.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from gridgov.store.models import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# Frozen copies, as in 0001: later changes need a new revision.
_ACTIONS = (
    "report",
    "register",
    "reject",
    "dispatch",
    "acknowledge",
    "arrive",
    "resolve",
    "verify",
    "reopen",
    "close",
    "evaluate",
    "return",
    "requeue",
    "supervise",
    "cancel",
)
_ROLES = (
    "system",
    "reporter",
    "grid_worker",
    "dispatcher",
    "commander",
    "unit",
    "office",
    "district",
)
_STATES = (
    "reported",
    "registered",
    "rejected",
    "dispatched",
    "acknowledged",
    "on_scene",
    "resolved",
    "verified",
    "closed",
    "evaluated",
    "cancelled",
)
_SATISFACTION = ("satisfied", "basically_satisfied", "dissatisfied")
_NOTICE_KINDS = ("supervision", "outcome")
_RECIPIENT_KINDS = ("office", "department", "reporter")
_OPINIONS = ("agree", "disagree", "conditional")
#: Dispatcher statuses of 0002 -> workflow states (the dispatch rows keep their own status).
_STATUS_MAP = (("pending", "registered"), ("unassigned", "registered"), ("partial", "dispatched"))

_APPEND_ONLY = "events are append-only"
_PG_FUNCTION = f"""
CREATE FUNCTION events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '{_APPEND_ONLY}: % on events is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'record a new event (gridgov.store.apply_action) instead';
END
$$
"""


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _create_append_only_triggers(postgres: bool) -> None:
    # The log is the record the assessment is computed from: nothing may rewrite it, whatever
    # the client (the application never updates or deletes an event; this enforces it).
    if postgres:
        op.execute(_PG_FUNCTION)
        op.execute(
            "CREATE TRIGGER events_no_update_delete BEFORE UPDATE OR DELETE ON events "
            "FOR EACH ROW EXECUTE FUNCTION events_append_only()"
        )
        op.execute(
            "CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events "
            "FOR EACH STATEMENT EXECUTE FUNCTION events_append_only()"
        )
        return
    for operation in ("UPDATE", "DELETE"):
        op.execute(
            f"CREATE TRIGGER events_no_{operation.lower()} BEFORE {operation} ON events "
            f"BEGIN SELECT RAISE(ABORT, '{_APPEND_ONLY}: {operation} on events is not allowed'); "
            "END"
        )


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"

    op.create_table(
        "events",
        sa.Column("event_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("incident_id", sa.String(64), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("from_state", sa.String(16), nullable=True),
        sa.Column("to_state", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("office_id", sa.String(64), nullable=True),
        sa.Column("street_code", sa.String(18), nullable=True),
        sa.Column("level", sa.String(16), nullable=True),
        sa.Column("stage", sa.String(16), nullable=True),
        sa.Column("satisfaction", sa.String(32), nullable=True),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("event_id", name="pk_events"),
        sa.ForeignKeyConstraint(
            ["incident_id"], ["incidents.incident_id"], name="fk_events_incident_id_incidents"
        ),
        sa.UniqueConstraint("incident_id", "seq", name="uq_events_incident_id_seq"),
        sa.CheckConstraint("seq >= 1", name=op.f("ck_events_seq")),
        sa.CheckConstraint(_in("action", _ACTIONS), name=op.f("ck_events_action")),
        sa.CheckConstraint(_in("role", _ROLES), name=op.f("ck_events_role")),
        sa.CheckConstraint(_in("to_state", _STATES), name=op.f("ck_events_to_state")),
        sa.CheckConstraint(
            "satisfaction IS NULL OR " + _in("satisfaction", _SATISFACTION),
            name=op.f("ck_events_satisfaction"),
        ),
    )
    op.create_index("ix_events_action_at", "events", ["action", "at"])
    op.create_index("ix_events_office_id", "events", ["office_id"])
    op.create_index("ix_events_street_code_at", "events", ["street_code", "at"])
    _create_append_only_triggers(postgres)

    op.create_table(
        "notices",
        sa.Column("notice_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("incident_id", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("level", sa.String(16), nullable=True),
        sa.Column("stage", sa.String(16), nullable=True),
        sa.Column("recipient_kind", sa.String(16), nullable=False),
        sa.Column("recipient", sa.Text(), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("notice_id", name="pk_notices"),
        sa.ForeignKeyConstraint(
            ["incident_id"], ["incidents.incident_id"], name="fk_notices_incident_id_incidents"
        ),
        sa.CheckConstraint(_in("kind", _NOTICE_KINDS), name=op.f("ck_notices_kind")),
        sa.CheckConstraint(
            _in("recipient_kind", _RECIPIENT_KINDS), name=op.f("ck_notices_recipient_kind")
        ),
    )
    op.create_index("ix_notices_incident_id", "notices", ["incident_id"])
    op.create_index("ix_notices_kind_created_at", "notices", ["kind", "created_at"])
    op.create_index(
        "ix_notices_recipient_kind_recipient", "notices", ["recipient_kind", "recipient"]
    )

    op.create_table(
        "consultations",
        sa.Column("consultation_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("office_id", sa.String(64), nullable=False),
        sa.Column("department", sa.Text(), nullable=False),
        sa.Column("street_code", sa.String(18), nullable=False),
        sa.Column("head_name", sa.Text(), nullable=False),
        sa.Column("proposed_move", sa.Text(), nullable=False),
        sa.Column("consulted_at", UTCDateTime(), nullable=False),
        sa.Column("letter", sa.Text(), nullable=False),
        sa.Column("opinion", sa.String(16), nullable=True),
        sa.Column("opinion_text", sa.Text(), nullable=True),
        sa.Column("opinion_at", UTCDateTime(), nullable=True),
        sa.Column("recorded_by", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("consultation_id", name="pk_consultations"),
        sa.CheckConstraint(
            "opinion IS NULL OR " + _in("opinion", _OPINIONS), name=op.f("ck_consultations_opinion")
        ),
        sa.CheckConstraint(
            "(opinion IS NULL) = (opinion_at IS NULL)", name=op.f("ck_consultations_answered")
        ),
    )
    op.create_index("ix_consultations_office_id", "consultations", ["office_id"])
    op.create_index("ix_consultations_street_code", "consultations", ["street_code"])

    # ADD COLUMN ... REFERENCES works on both backends without rebuilding incidents (SQLite
    # allows it for a column whose default is NULL).
    fk = "fk_incidents_duplicate_of_incidents"
    if postgres:
        op.add_column("incidents", sa.Column("duplicate_of", sa.String(64), nullable=True))
        op.create_foreign_key(fk, "incidents", "incidents", ["duplicate_of"], ["incident_id"])
    else:
        op.execute(
            f"ALTER TABLE incidents ADD COLUMN duplicate_of VARCHAR(64) "
            f"CONSTRAINT {fk} REFERENCES incidents (incident_id)"
        )
    op.add_column("incidents", sa.Column("reporter", sa.Text(), nullable=True))
    op.add_column("incidents", sa.Column("description", sa.Text(), nullable=True))
    op.create_index("ix_incidents_duplicate_of", "incidents", ["duplicate_of"])

    for old, new in _STATUS_MAP:
        op.execute(f"UPDATE incidents SET status = '{new}' WHERE status = '{old}'")


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    # Back to the dispatcher's statuses, as near as they go.
    op.execute("UPDATE incidents SET status = 'pending' WHERE status IN ('reported', 'registered')")
    op.execute(
        "UPDATE incidents SET status = 'dispatched' "
        "WHERE status IN ('acknowledged', 'on_scene', 'resolved', 'verified')"
    )
    op.execute(
        "UPDATE incidents SET status = 'closed' "
        "WHERE status IN ('rejected', 'evaluated', 'cancelled')"
    )
    op.drop_index("ix_incidents_duplicate_of", table_name="incidents")
    if postgres:
        op.drop_constraint("fk_incidents_duplicate_of_incidents", "incidents", type_="foreignkey")
    for column in ("description", "reporter", "duplicate_of"):
        op.execute(f"ALTER TABLE incidents DROP COLUMN {column}")
    op.drop_table("consultations")
    op.drop_table("notices")
    if postgres:
        op.execute("DROP TABLE events")  # TRUNCATE-free: the triggers go with the table
        op.execute("DROP FUNCTION events_append_only()")
    else:
        op.drop_table("events")
