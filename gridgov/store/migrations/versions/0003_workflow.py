"""The incident workflow: append-only events, notices, consultations; incidents learn their
duplicates, reporters and descriptions; dispatcher statuses become workflow states.

Incidents stored before this revision (by ``gridgov demo`` or ``gridgov dispatch`` of the
previous release) have no events, and every workflow action starts from the latest event: left
as they are, they could never be acknowledged, resolved or cancelled, and their units would stay
busy for good. So the upgrade writes each of them a history reconstructed from what the store
knows, and labels it as such: actor ``migration-0003``, a reason saying it was reconstructed
because it was recorded before the workflow existed, and ``data["reconstructed"] = true``. Only
facts the store holds are written; nothing is invented to make a log look complete.

- Every incident: ``report`` and ``register``, both at ``reported_at`` (role system; ``seq``
  orders them). The previous release queued every stored incident for dispatch, so it was, in
  effect, registered when stored.
- ``dispatched`` (0002's dispatched or partial): a ``dispatch`` at the time of its latest
  dispatch row that assigned units (role system, that row's level, office = the lead unit's
  office from ``units``, or None when that unit is gone; ``data`` has dispatch_id, the dispatch
  status, units, offices and kinds). An incident marked dispatched without any such row has
  nothing to support the dispatch, so it stays ``registered`` (queued for dispatch).
- ``closed``: no code of the previous release ever set it (the store knew it only as a name),
  so it was an operator's hand edit saying "this incident is over", without saying how. The
  workflow's ``closed`` means more: resolved on scene and verified by a grid worker. Keeping
  ``closed`` would take inventing acknowledge, arrive, resolve and verify events with made-up
  times, which would then count as responses and closures in the offices' assessment; leaving
  it ``registered`` or ``dispatched`` would bring finished work back to the queue and into
  supervision. So it ends ``cancelled``, the workflow's "ended without a recorded resolution":
  report, register, the dispatch when there was one, then ``cancel`` at ``updated_at`` (when it
  was last changed, so no later than its closing). The system role may not cancel; the closing
  was a person's act at the dispatch desk, so the event records role ``dispatcher`` (actor
  still ``migration-0003``). As an ``apply_action`` cancel does, its active assignments end and
  its units are free again. The downgrade maps ``cancelled`` back to ``closed``, so a round
  trip gives the 0002 status back.
- Times never run backwards in a log: a dispatch the store dates before ``reported_at`` is moved
  up to it, and ``data["recorded_at"]`` keeps the stored time.
- A status the previous release never used stops the upgrade with an error naming the
  incidents (nothing is changed): guessing what it meant would be worse than asking.

The incident's status ends equal to the last reconstructed event's ``to_state``, and every
reconstructed log replays cleanly through :func:`gridgov.workflow.replay` (checked in
tests/test_migration_backfill.py). The migration writes plain rows and does not import the
workflow module, so later changes there cannot change what this revision does.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

from gridgov.errors import StoreError
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


# ------------------------------------------------------------------------ history backfill

#: Who wrote the reconstructed events, and why (see the module docstring).
_BACKFILL_ACTOR = "migration-0003"
_BACKFILL_REASON = "reconstructed: recorded before the workflow existed"
_CANCEL_REASON = (
    "reconstructed: closed before the workflow existed, without a record of how it was "
    "handled, so it ends cancelled rather than closed"
)
#: The 0002 statuses after _STATUS_MAP: the only ones a store of the previous release holds.
_BACKFILL_STATUSES = ("registered", "dispatched", "closed")
#: Frozen copy of the dispatch levels a dispatch event may record.
_DISPATCH_LEVELS = ("community", "street", "neighbour", "district")
_RELEASE_REASON = "incident cancelled (reconstructed by migration 0003: it was closed before)"

# The tables as this revision leaves them (only the columns the backfill reads or writes).
_incidents = sa.table(
    "incidents",
    sa.column("incident_id", sa.String()),
    sa.column("status", sa.String()),
    sa.column("reported_at", UTCDateTime()),
    sa.column("updated_at", UTCDateTime()),
    sa.column("street_code", sa.String()),
    sa.column("source", sa.Text()),
)
_events = sa.table(
    "events",
    sa.column("incident_id", sa.String()),
    sa.column("seq", sa.Integer()),
    sa.column("at", UTCDateTime()),
    sa.column("actor", sa.Text()),
    sa.column("role", sa.String()),
    sa.column("action", sa.String()),
    sa.column("from_state", sa.String()),
    sa.column("to_state", sa.String()),
    sa.column("reason", sa.Text()),
    sa.column("office_id", sa.String()),
    sa.column("street_code", sa.String()),
    sa.column("level", sa.String()),
    sa.column("stage", sa.String()),
    sa.column("satisfaction", sa.String()),
    sa.column("data", sa.JSON()),
)
_dispatches = sa.table(
    "dispatches",
    sa.column("dispatch_id", sa.Integer()),
    sa.column("incident_id", sa.String()),
    sa.column("created_at", UTCDateTime()),
    sa.column("level", sa.String()),
    sa.column("status", sa.String()),
)
_assignments = sa.table(
    "assignments",
    sa.column("assignment_id", sa.Integer()),
    sa.column("dispatch_id", sa.Integer()),
    sa.column("incident_id", sa.String()),
    sa.column("unit_id", sa.String()),
    sa.column("kind", sa.String()),
    sa.column("role", sa.String()),
    sa.column("active", sa.Boolean()),
    sa.column("assigned_at", UTCDateTime()),
    sa.column("released_at", UTCDateTime()),
    sa.column("release_reason", sa.Text()),
)
_units = sa.table(
    "units",
    sa.column("unit_id", sa.String()),
    sa.column("office_id", sa.String()),
    sa.column("status", sa.String()),
    sa.column("on_duty", sa.Boolean()),
    sa.column("busy_incident_id", sa.String()),
)


def _without_events() -> Any:
    return ~sa.exists().where(_events.c.incident_id == _incidents.c.incident_id)


def _read_backfill(
    connection: sa.Connection,
) -> tuple[Sequence[Any], dict[str, Any], Sequence[Any]]:
    """The incidents without events, the latest dispatch of each that assigned units, and the
    assignments of those dispatches."""
    incidents = connection.execute(
        sa.select(_incidents).where(_without_events()).order_by(_incidents.c.incident_id)
    ).all()
    unknown = sorted({r.status for r in incidents} - set(_BACKFILL_STATUSES))
    if unknown:
        odd = [r.incident_id for r in incidents if r.status not in _BACKFILL_STATUSES]
        shown = ", ".join(odd[:10]) + (f" and {len(odd) - 10} more" if len(odd) > 10 else "")
        msg = (
            f"cannot upgrade the store to revision 0003: incidents {shown} have status "
            f"{', '.join(repr(s) for s in unknown)}, which the previous release never used "
            "(it knew pending, unassigned, dispatched, partial and closed), so their workflow "
            "history cannot be reconstructed; set their status to one of those by hand and "
            "run `gridgov init` again (nothing was changed)"
        )
        raise StoreError(msg)
    # Only dispatches that assigned someone made a call: an unassigned decision called nobody.
    called = sa.exists().where(_assignments.c.dispatch_id == _dispatches.c.dispatch_id)
    latest_ids = (
        sa.select(sa.func.max(_dispatches.c.dispatch_id))
        .join(_incidents, _incidents.c.incident_id == _dispatches.c.incident_id)
        .where(_without_events(), _incidents.c.status.in_(("dispatched", "closed")), called)
        .group_by(_dispatches.c.incident_id)
    )
    latest = {
        r.incident_id: r
        for r in connection.execute(
            sa.select(_dispatches).where(_dispatches.c.dispatch_id.in_(latest_ids))
        )
    }
    assignments = connection.execute(
        sa.select(_assignments)
        .where(_assignments.c.dispatch_id.in_(latest_ids))
        .order_by(_assignments.c.assignment_id)
    ).all()
    return incidents, latest, assignments


def _event(
    incident: Any,
    seq: int,
    at: datetime,
    action: str,
    from_state: str | None,
    to_state: str,
    **fields: Any,
) -> dict[str, Any]:
    data = {"reconstructed": True, **fields.pop("data", {})}
    row = {
        "incident_id": incident.incident_id,
        "seq": seq,
        "at": at,
        "actor": _BACKFILL_ACTOR,
        "role": "system",
        "action": action,
        "from_state": from_state,
        "to_state": to_state,
        "reason": _BACKFILL_REASON,
        "office_id": None,
        "street_code": incident.street_code,
        "level": None,
        "stage": None,
        "satisfaction": None,
        "data": data,
    }
    row.update(fields)
    return row


def _dispatch_event(
    incident: Any, dispatch: Any, assigned: list[Any], offices: dict[str, Any], after: datetime
) -> dict[str, Any]:
    units = [a.unit_id for a in assigned]
    lead = next((a.unit_id for a in assigned if a.role == "lead"), units[0])
    data: dict[str, Any] = {
        "dispatch_id": dispatch.dispatch_id,
        "status": dispatch.status,
        "units": units,
        "offices": [offices.get(u) for u in units],
        "kinds": [a.kind for a in assigned],
    }
    at = dispatch.created_at
    if at < after:
        data["recorded_at"] = at.isoformat()
        at = after
    level = dispatch.level
    if level is not None and level not in _DISPATCH_LEVELS:
        data["recorded_level"] = level
        level = None
    return _event(
        incident,
        3,
        at,
        "dispatch",
        "registered",
        "dispatched",
        office_id=offices.get(lead),
        level=level,
        data=data,
    )


def _cancel_closed(connection: sa.Connection, incident_id: str, at: datetime) -> None:
    """Release what a cancel releases: the incident's active assignments and busy units."""
    active = connection.execute(
        sa.select(_assignments.c.assignment_id, _assignments.c.assigned_at).where(
            _assignments.c.incident_id == incident_id, _assignments.c.active.is_(sa.true())
        )
    ).all()
    for assignment_id, assigned_at in active:
        # An assignment never ends before it began.
        connection.execute(
            sa.update(_assignments)
            .where(_assignments.c.assignment_id == assignment_id)
            .values(active=False, released_at=max(at, assigned_at), release_reason=_RELEASE_REASON)
        )
    connection.execute(
        sa.update(_units)
        .where(_units.c.busy_incident_id == incident_id)
        .values(
            busy_incident_id=None,
            status=sa.case(
                (
                    _units.c.status == "busy",
                    sa.case((_units.c.on_duty.is_(sa.true()), "available"), else_="off_duty"),
                ),
                else_=_units.c.status,
            ),
        )
    )


def _backfill_events(connection: sa.Connection) -> None:
    """Write a reconstructed history for every incident without events (module docstring)."""
    incidents, latest, assignments = _read_backfill(connection)
    if not incidents:
        return
    offices = dict(connection.execute(sa.select(_units.c.unit_id, _units.c.office_id)).all())
    by_dispatch: dict[int, list[Any]] = {}
    for a in assignments:
        by_dispatch.setdefault(a.dispatch_id, []).append(a)
    events: list[dict[str, Any]] = []
    changed: list[dict[str, Any]] = []
    for incident in incidents:
        at = incident.reported_at
        report_data = {"source": incident.source} if incident.source else {}
        log = [
            _event(incident, 1, at, "report", None, "reported", data=report_data),
            _event(incident, 2, at, "register", "reported", "registered"),
        ]
        dispatch = latest.get(incident.incident_id)
        if dispatch is not None:
            assigned = by_dispatch[dispatch.dispatch_id]
            log.append(_dispatch_event(incident, dispatch, assigned, offices, at))
        if incident.status == "closed":
            last = log[-1]
            # Closed at the latest when last changed; never before its own history.
            cancel_at = max(incident.updated_at, last["at"])
            log.append(
                _event(
                    incident,
                    len(log) + 1,
                    cancel_at,
                    "cancel",
                    last["to_state"],
                    "cancelled",
                    role="dispatcher",
                    reason=_CANCEL_REASON,
                    data={"status_before": "closed"},
                )
            )
            _cancel_closed(connection, incident.incident_id, cancel_at)
        final = log[-1]
        if final["to_state"] != incident.status:
            changed.append(
                {
                    "b_incident_id": incident.incident_id,
                    "b_status": final["to_state"],
                    "b_updated_at": max(incident.updated_at, final["at"]),
                }
            )
        events.extend(log)
    connection.execute(sa.insert(_events), events)
    if changed:
        connection.execute(
            sa.update(_incidents)
            .where(_incidents.c.incident_id == sa.bindparam("b_incident_id"))
            .values(status=sa.bindparam("b_status"), updated_at=sa.bindparam("b_updated_at")),
            changed,
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
    _backfill_events(op.get_bind())


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
