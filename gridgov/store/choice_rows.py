"""A dispatcher's decisions in the store: chosen units committed, units released or added to an
incident at work, the streets' dispatch modes, and the dispatcher-made dispatches read back.

A chosen dispatch commits exactly as an automatic one does (:mod:`gridgov.store.dispatch_rows`:
the incident locked, then the units, each re-checked free under its lock), in ONE transaction
with the record of the choice on the dispatch row. A unit another transaction took meanwhile is
never assigned twice: nothing is written and :class:`UnitsTakenError` names it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import pandas as pd
from sqlalchemy import Connection, Engine, and_, func, insert, select, type_coerce, update

from gridgov import dispatch
from gridgov.errors import GridgovError, InputError, NotFoundError
from gridgov.model import UnitStatus
from gridgov.store.decision_rows import Attempts as _Attempts
from gridgov.store.decision_rows import assignment_rows, insert_assignments, insert_dispatches
from gridgov.store.dispatch_rows import (
    _commit_within,
    _decide_without_returned,
    _lock_incidents,
    _lock_units,
    _returned_units,
    _UnitsTaken,
)
from gridgov.store.district_load import end_active_assignments
from gridgov.store.engine import begin_write, translate_errors
from gridgov.store.incident_rows import (
    WORKING,
    _aware,
    _incident_from_row,
    _read_incident_row,
)
from gridgov.store.journal import append_event
from gridgov.store.many_rows import any_of
from gridgov.store.models import (
    ASSIGNMENTS,
    DISPATCHES,
    EVENTS,
    INCIDENTS,
    STREET_MODES,
    UNITS,
    UTCDateTime,
)
from gridgov.store.unit_rows import _free_status, _lock_unit
from gridgov.store.unit_snapshot import _snapshot_pool
from gridgov.workflow import Action, Event, Role


class UnitsTakenError(GridgovError):
    """Units chosen for an incident are no longer free (another dispatcher took them)."""

    def __init__(self, unit_ids: Sequence[str]) -> None:
        super().__init__(f"unit(s) {', '.join(unit_ids)} were taken meanwhile")
        self.unit_ids = tuple(unit_ids)


def options_stored(
    engine: Engine,
    ctx: dispatch.DispatchContext,
    incident_id: str,
    *,
    now: datetime,
    taken: Sequence[str] = (),
) -> tuple[dispatch.Options, str]:
    """The recommendation for a stored incident as it would be taken now, and every candidate
    (:func:`gridgov.dispatch.dispatch_options`), with the incident's state. Nothing is
    locked or written; busy units are in the snapshot, so the picker says why they are out.
    ``taken``: units another transaction holds (not committed yet, so the snapshot may still
    show them free), left out.

    Raises
    ------
    NotFoundError
        No such incident.
    InputError
        The point lies too far from the roads of a mode its units use.
    """
    now = _aware(now, "now")
    with translate_errors(engine), engine.connect() as connection:
        row = _read_incident_row(connection, incident_id)
        returned = _returned_units(connection, incident_id)
    incident = _incident_from_row(row)
    matter = ctx.catalog.get(incident.matter_code)
    kinds = [str(k) for k in matter.required_kinds]
    pool = _snapshot_pool(engine, ctx, kinds, True, now)
    placement = dispatch.locate_incident(incident, ctx)
    options = dispatch.dispatch_options(incident, pool, ctx, matter, placement, taken=taken)
    if returned.offices:
        # The recommendation is what the automatic dispatch would send: the offices that
        # returned the incident are passed over unless no other unit of a kind can go.
        options.recommendation = _decide_without_returned(
            engine,
            ctx,
            incident,
            returned,
            now=now,
            exclude=frozenset(taken),
            routes=True,
            allow_preemption=True,
            placement=placement,
            matter=matter,
        )
    return options, str(row.status)


def commit_choice(
    engine: Engine,
    decision: dispatch.Decision,
    *,
    now: datetime,
    actor: str,
    role: Role | str,
    override: bool,
    reason: str | None,
    recommended: dispatch.Decision,
) -> int:
    """Commit the decision a dispatcher chose, recording the choice; returns the dispatch id.

    Raises
    ------
    UnitsTakenError
        A chosen unit is no longer available; nothing was written.
    InputError
        The incident is no longer queued for dispatch; nothing was written.
    """
    now = _aware(now, "now")
    try:
        with translate_errors(engine), begin_write(engine) as connection:
            _commit_within(connection, decision, now, _Attempts(count=1), actor=actor, role=role)
            dispatch_id = connection.execute(
                select(func.max(DISPATCHES.c.dispatch_id)).where(
                    DISPATCHES.c.incident_id == decision.incident.incident_id
                )
            ).scalar_one()
            connection.execute(
                update(DISPATCHES)
                .where(DISPATCHES.c.dispatch_id == dispatch_id)
                .values(
                    decided_by=actor,
                    override=override,
                    override_reason=reason,
                    recommended_units=[a.unit_id for a in recommended.assignments],
                    recommended_time_s=sum(float(a.time_s) for a in recommended.assignments),
                    chosen_time_s=sum(float(a.time_s) for a in decision.assignments),
                )
            )
    except _UnitsTaken as taken:
        raise UnitsTakenError(taken.unit_ids) from None
    return int(dispatch_id)


def change_units(
    engine: Engine,
    incident_id: str,
    action: Action,
    *,
    now: datetime,
    actor: str,
    role: Role | str,
    reason: str | None,
    release: str | None = None,
    add: dispatch.Decision | None = None,
    min_left: int = 1,
) -> Event:
    """Release one unit of an incident at work, add one, or both (a reassignment), in ONE
    transaction with the ``action`` event that records it.

    ``add`` is a decision holding the unit(s) to add (written as a dispatch row of its own,
    so its assignments keep their travel times and routes). The incident keeps its state.
    ``min_left``: at least this many units must stay on the incident after the change.

    Raises
    ------
    NotFoundError
        The unit to release is not working on this incident.
    InputError
        The change would leave fewer than ``min_left`` units, or the incident is not at work.
    UnitsTakenError
        A unit to add is no longer available; nothing was written.
    """
    now = _aware(now, "now")
    try:
        with translate_errors(engine), begin_write(engine) as connection:
            return _change_within(
                connection, incident_id, action, now, actor, role, reason, release, add, min_left
            )
    except _UnitsTaken as taken:
        raise UnitsTakenError(taken.unit_ids) from None


def _change_within(
    connection: Connection,
    incident_id: str,
    action: Action,
    now: datetime,
    actor: str,
    role: Role | str,
    reason: str | None,
    release: str | None,
    add: dispatch.Decision | None,
    min_left: int,
) -> Event:
    statuses = _lock_incidents(connection, [incident_id])
    status = statuses.get(incident_id)
    if status is None:
        msg = f"no incident {incident_id!r}"
        raise NotFoundError(msg)
    if status not in WORKING:
        msg = f"incident {incident_id} is {status}: units change only while it is at work"
        raise InputError(msg)
    active = set(
        connection.execute(
            select(ASSIGNMENTS.c.unit_id).where(
                ASSIGNMENTS.c.incident_id == incident_id, ASSIGNMENTS.c.active.is_(True)
            )
        ).scalars()
    )
    added = [] if add is None else [a.unit_id for a in add.assignments]
    if release is not None and release not in active:
        msg = f"unit {release} is not working on incident {incident_id}"
        raise NotFoundError(msg)
    if sorted(set(added) & active):
        msg = f"unit(s) {', '.join(sorted(set(added) & active))} already work on {incident_id}"
        raise InputError(msg)
    left = len(active) - (release is not None) + len(added)
    if left < min_left:
        msg = (
            f"unit {release} is the last one on incident {incident_id}: reassign it to another "
            "unit, or cancel the incident"
        )
        raise InputError(msg)
    data: dict[str, Any] = {}
    if add is not None and add.assignments:
        gone, _ = _lock_units(connection, add, statuses)
        if gone:
            raise _UnitsTaken(gone)
        connection.execute(
            update(UNITS)
            .where(UNITS.c.unit_id.in_(added))
            .values(status=str(UnitStatus.BUSY), busy_incident_id=incident_id)
        )
        dispatch_id = insert_dispatches(connection, [add], now, [_Attempts(count=1)], [[]])[0]
        connection.execute(
            update(DISPATCHES)
            .where(DISPATCHES.c.dispatch_id == dispatch_id)
            .values(decided_by=actor)
        )
        insert_assignments(connection, assignment_rows(connection, [add], [dispatch_id], now))
        data.update(
            dispatch_id=dispatch_id,
            added=added,
            kinds=[str(a.kind) for a in add.assignments],
            time_s=[float(a.time_s) for a in add.assignments],
        )
    if release is not None:
        unit = _lock_unit(connection, release)
        end_active_assignments(
            connection,
            now,
            reason or str(action),
            and_(ASSIGNMENTS.c.unit_id == release, ASSIGNMENTS.c.incident_id == incident_id),
            requeue=False,
        )
        if unit.busy_incident_id == incident_id:
            connection.execute(
                update(UNITS)
                .where(UNITS.c.unit_id == release)
                .values(status=_free_status(unit.on_duty), busy_incident_id=None)
            )
        data["released"] = release
    return append_event(
        connection,
        incident_id,
        action,
        at=now,
        clamp=True,
        actor=actor,
        role=role,
        reason=reason,
        data=data,
    )


# --------------------------------------------------------------------------------------------
# dispatch modes
# --------------------------------------------------------------------------------------------


def read_street_mode(engine: Engine, street_code: str) -> tuple[str, bool]:
    """A street's dispatch mode and whether priority-1 matters stay automatic
    (``("auto", True)`` for a street never set)."""
    with translate_errors(engine), engine.connect() as connection:
        return read_street_modes_within(connection, [street_code])[street_code]


_STREET_MODES = select(
    STREET_MODES.c.street_code, STREET_MODES.c.mode, STREET_MODES.c.priority1_auto
).where(any_of(STREET_MODES.c.street_code, "streets"))


def read_street_modes_within(
    connection: Connection, street_codes: Sequence[str]
) -> dict[str, tuple[str, bool]]:
    """:func:`read_street_mode` of several streets, in one query on the caller's connection."""
    wanted = sorted(set(street_codes))
    found = {
        r.street_code: (str(r.mode), bool(r.priority1_auto))
        for r in connection.execute(_STREET_MODES, {"streets": wanted})
    }
    return {code: found.get(code, ("auto", True)) for code in wanted}


def write_street_mode(
    engine: Engine, street_code: str, mode: str, priority1_auto: bool, *, now: datetime, by: str
) -> None:
    """Set a street's dispatch mode (one row per street, replaced)."""
    values = {
        "mode": mode,
        "priority1_auto": bool(priority1_auto),
        "updated_at": _aware(now, "now"),
        "updated_by": by,
    }
    with translate_errors(engine), begin_write(engine) as connection:
        done = connection.execute(
            update(STREET_MODES).where(STREET_MODES.c.street_code == street_code).values(**values)
        ).rowcount
        if not done:
            connection.execute(insert(STREET_MODES).values(street_code=street_code, **values))


# --------------------------------------------------------------------------------------------
# reading back
# --------------------------------------------------------------------------------------------


def dispatch_times(
    engine: Engine, incident_ids: Sequence[str]
) -> dict[str, tuple[datetime, datetime]]:
    """Incident → the times of its first and latest ``dispatch`` events (the SLA clocks'
    starts); incidents never dispatched are left out."""
    if not incident_ids:
        return {}
    e = EVENTS
    stmt = (
        select(
            e.c.incident_id,
            type_coerce(func.min(e.c.at), UTCDateTime()),
            type_coerce(func.max(e.c.at), UTCDateTime()),
        )
        .where(e.c.action == str(Action.DISPATCH), e.c.incident_id.in_(sorted(set(incident_ids))))
        .group_by(e.c.incident_id)
    )
    with translate_errors(engine), engine.connect() as connection:
        rows = connection.execute(stmt).all()
    return {r[0]: (r[1], r[2]) for r in rows}


def unit_jobs(
    engine: Engine, unit_ids: Sequence[str]
) -> tuple[dict[str, tuple[str, datetime]], dict[str, datetime]]:
    """For the unit board: unit → (incident, since) of its active assignment, and unit → when
    its last finished assignment ended."""
    if not len(unit_ids):
        return {}, {}
    a = ASSIGNMENTS
    ids = sorted(set(unit_ids))
    active_stmt = select(a.c.unit_id, a.c.incident_id, a.c.assigned_at).where(
        a.c.active.is_(True), a.c.unit_id.in_(ids)
    )
    ended_stmt = (
        select(a.c.unit_id, type_coerce(func.max(a.c.released_at), UTCDateTime()))
        .where(a.c.active.is_(False), a.c.unit_id.in_(ids))
        .group_by(a.c.unit_id)
    )
    with translate_errors(engine), engine.connect() as connection:
        active = {r[0]: (r[1], r[2]) for r in connection.execute(active_stmt)}
        ended = {r[0]: r[1] for r in connection.execute(ended_stmt)}
    return active, ended


#: Columns of :func:`read_choices`.
CHOICE_COLUMNS = (
    "dispatch_id",
    "incident_id",
    "street_code",
    "created_at",
    "decided_by",
    "override",
    "override_reason",
    "recommended_units",
    "recommended_time_s",
    "chosen_time_s",
)


def read_choices(
    engine: Engine, *, since: datetime | None = None, until: datetime | None = None
) -> pd.DataFrame:
    """The dispatches a dispatcher chose (confirmed or overrode), with the incident's street;
    ``since``/``until`` bound ``created_at`` (half-open). Backups are not choices."""
    d, i = DISPATCHES, INCIDENTS
    stmt = (
        select(
            d.c.dispatch_id,
            d.c.incident_id,
            i.c.street_code,
            d.c.created_at,
            d.c.decided_by,
            d.c.override,
            d.c.override_reason,
            d.c.recommended_units,
            d.c.recommended_time_s,
            d.c.chosen_time_s,
        )
        .join(i, i.c.incident_id == d.c.incident_id)
        .where(d.c.override.is_not(None))
        .order_by(d.c.dispatch_id)
    )
    if since is not None:
        stmt = stmt.where(d.c.created_at >= since)
    if until is not None:
        stmt = stmt.where(d.c.created_at < until)
    with translate_errors(engine), engine.connect() as connection:
        rows = connection.execute(stmt).all()
    df = pd.DataFrame([tuple(r) for r in rows], columns=list(CHOICE_COLUMNS))
    df["override"] = df["override"].astype(bool)
    for column in ("recommended_time_s", "chosen_time_s"):
        df[column] = df[column].astype(float)
    return df
