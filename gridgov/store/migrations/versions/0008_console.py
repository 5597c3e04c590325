"""The dispatcher's workspace: a dispatcher's choice recorded on the dispatch, a dispatch mode
per street, and the log's three unit actions (release, reassign, backup).

- ``dispatches`` gains who chose (``decided_by``), whether the choice overrode the
  recommendation, the reason, the recommended units and the summed travel times of the
  recommended and chosen units. Every existing row is the system's automatic dispatch: NULL.
- ``street_modes``: one row per street that is not in the default ``auto`` mode.
- ``events.action`` accepts ``release``, ``reassign`` and ``backup``. PostgreSQL changes the
  CHECK in place; SQLite rebuilds the table (rows copied as they are), and the append-only
  triggers, which go with the old table, are created again.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from gridgov.store.models import UTCDateTime

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# Frozen copies, as in earlier revisions: later changes need a new revision.
_OLD_ACTIONS = (
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
_ACTIONS = (*_OLD_ACTIONS, "release", "reassign", "backup")
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
_APPEND_ONLY = "events are append-only"


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _events_as_in_0003(actions: tuple[str, ...]) -> sa.Table:
    """The events table of 0003 (for SQLite's copy), with the given actions allowed."""
    return sa.Table(
        "events",
        sa.MetaData(),
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
        sa.CheckConstraint("seq >= 1", name="ck_events_seq"),
        sa.CheckConstraint(_in("action", actions), name="ck_events_action"),
        sa.CheckConstraint(_in("role", _ROLES), name="ck_events_role"),
        sa.CheckConstraint(_in("to_state", _STATES), name="ck_events_to_state"),
        sa.CheckConstraint(
            "satisfaction IS NULL OR " + _in("satisfaction", _SATISFACTION),
            name="ck_events_satisfaction",
        ),
        sa.Index("ix_events_action_at", "action", "at"),
        sa.Index("ix_events_office_id", "office_id"),
        sa.Index("ix_events_street_code_at", "street_code", "at"),
    )


def _set_actions(actions: tuple[str, ...], old: tuple[str, ...]) -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_constraint(op.f("ck_events_action"), "events", type_="check")
        op.create_check_constraint(op.f("ck_events_action"), "events", _in("action", actions))
        return
    with op.batch_alter_table(
        "events", recreate="always", copy_from=_events_as_in_0003(old)
    ) as batch:
        batch.drop_constraint(op.f("ck_events_action"), type_="check")
        batch.create_check_constraint(op.f("ck_events_action"), _in("action", actions))
    # The rebuilt table has no triggers: the log is append-only again from here on.
    for operation in ("UPDATE", "DELETE"):
        op.execute(f"DROP TRIGGER IF EXISTS events_no_{operation.lower()}")
        op.execute(
            f"CREATE TRIGGER events_no_{operation.lower()} BEFORE {operation} ON events "
            f"BEGIN SELECT RAISE(ABORT, '{_APPEND_ONLY}: {operation} on events is not allowed'); "
            "END"
        )


def upgrade() -> None:
    with op.batch_alter_table("dispatches") as batch:
        batch.add_column(sa.Column("decided_by", sa.Text(), nullable=True))
        batch.add_column(sa.Column("override", sa.Boolean(), nullable=True))
        batch.add_column(sa.Column("override_reason", sa.Text(), nullable=True))
        batch.add_column(sa.Column("recommended_units", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("recommended_time_s", sa.Float(), nullable=True))
        batch.add_column(sa.Column("chosen_time_s", sa.Float(), nullable=True))
    op.create_table(
        "street_modes",
        sa.Column("street_code", sa.String(18), nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("priority1_auto", sa.Boolean(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("updated_by", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("street_code", name="pk_street_modes"),
        sa.CheckConstraint("mode IN ('auto', 'confirm')", name=op.f("ck_street_modes_mode")),
    )
    _set_actions(_ACTIONS, _OLD_ACTIONS)


def downgrade() -> None:
    # Events of the new actions cannot be expressed in 0005's log: refuse rather than drop them.
    bind = op.get_bind()
    n = bind.execute(
        sa.text("SELECT count(*) FROM events WHERE action IN ('release', 'reassign', 'backup')")
    ).scalar_one()
    if n:
        msg = f"{n} release/reassign/backup events exist; revisions before 0008 cannot hold them"
        raise RuntimeError(msg)
    _set_actions(_OLD_ACTIONS, _ACTIONS)
    op.drop_table("street_modes")
    for column in (
        "chosen_time_s",
        "recommended_time_s",
        "recommended_units",
        "override_reason",
        "override",
        "decided_by",
    ):
        # In place on both backends (SQLite >= 3.35): rebuilding dispatches would trip the
        # foreign key assignments hold on it.
        op.execute(f"ALTER TABLE dispatches DROP COLUMN {column}")
