"""Appending workflow events inside a caller's transaction (used by every store module).

The one way the store writes an event: read the incident's latest event, let
:func:`gridgov.workflow.next_event` validate and build the next one, insert it and set the
incident's status to its new state, all on the caller's connection, so the event and whatever
else the caller writes (a dispatch, released units, notices) commit or roll back together.
Only a new incident's first events skip the reading: its creator builds them
(:func:`build_event`) and inserts them with the incident, in the same transaction.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, select

from gridgov.store.many_rows import RowsInsert, RowsUpdate
from gridgov.store.models import EVENTS, INCIDENTS
from gridgov.workflow import (
    EVENT_COLUMNS,
    Action,
    Event,
    Role,
    Satisfaction,
    State,
    next_event,
)

#: Actor of the events the store records by itself (dispatch commits, re-queues, reloads).
SYSTEM_ACTOR = "gridgov"
#: The actor of a report event made by a person: their contact details never enter the log.
REPORTER_ACTOR = "reporter"


def event_from_row(row: Any) -> Event:
    """Turn a row of the ``events`` table into an :class:`gridgov.workflow.Event`."""
    m = row._mapping
    return Event(
        incident_id=m["incident_id"],
        seq=int(m["seq"]),
        at=m["at"],
        actor=m["actor"],
        role=Role(m["role"]),
        action=Action(m["action"]),
        from_state=None if m["from_state"] is None else State(m["from_state"]),
        to_state=State(m["to_state"]),
        reason=m["reason"],
        office_id=m["office_id"],
        street_code=m["street_code"],
        level=m["level"],
        stage=m["stage"],
        satisfaction=None if m["satisfaction"] is None else Satisfaction(m["satisfaction"]),
        data=dict(m["data"] or {}),
    )


# Statements of every append, built once (SQLAlchemy then reuses their cache keys).
_LAST_EVENT = (
    select(EVENTS)
    .where(EVENTS.c.incident_id == bindparam("incident_id"))
    .order_by(EVENTS.c.seq.desc())
    .limit(1)
)
_LATER = EVENTS.alias("later")
# The latest event of each of several incidents (none has a later one).
_LAST_EVENTS = select(EVENTS).where(
    EVENTS.c.incident_id.in_(bindparam("ids", expanding=True)),
    ~select(_LATER.c.seq)
    .where(_LATER.c.incident_id == EVENTS.c.incident_id, _LATER.c.seq > EVENTS.c.seq)
    .exists(),
)
_INSERT_EVENTS = RowsInsert(EVENTS, EVENT_COLUMNS)


def read_last_event(connection: Connection, incident_id: str) -> Event | None:
    """The incident's latest event (None when it has none)."""
    row = connection.execute(_LAST_EVENT, {"incident_id": incident_id}).first()
    return None if row is None else event_from_row(row)


def read_incident_events(connection: Connection, incident_id: str) -> list[Event]:
    """Every event of one incident, in order."""
    rows = connection.execute(
        select(EVENTS).where(EVENTS.c.incident_id == incident_id).order_by(EVENTS.c.seq)
    ).all()
    return [event_from_row(r) for r in rows]


def insert_events(connection: Connection, events: list[Event]) -> None:
    """Insert already validated events (no status update)."""
    if events:
        _INSERT_EVENTS.run(connection, [e.to_row() for e in events])


def build_event(
    last: Event | None,
    incident_id: str,
    action: Action | str,
    *,
    at: datetime,
    actor: str = SYSTEM_ACTOR,
    role: Role | str = Role.SYSTEM,
    clamp: bool = False,
    reason: str | None = None,
    office_id: str | None = None,
    street_code: str | None = None,
    level: str | None = None,
    stage: str | None = None,
    satisfaction: Satisfaction | str | None = None,
    data: Mapping[str, Any] | None = None,
) -> Event:
    """The event that follows ``last`` (None: the incident's first), validated, not stored.

    For a caller that knows the incident's latest event for certain (it has just created the
    incident in its own transaction) and writes the events itself (:func:`insert_events`).
    ``clamp`` as in :func:`append_event`.

    Raises
    ------
    InvalidTransitionError
        The action is not allowed after ``last``.
    """
    if clamp and last is not None and at.tzinfo is not None and at < last.at:
        at = last.at
    return next_event(
        last,
        action,
        incident_id=incident_id,
        at=at,
        actor=actor,
        role=role,
        reason=reason,
        office_id=office_id,
        street_code=street_code,
        level=level,
        stage=stage,
        satisfaction=satisfaction,
        data=data,
    )


def append_event(
    connection: Connection,
    incident_id: str,
    action: Action | str,
    *,
    at: datetime,
    actor: str = SYSTEM_ACTOR,
    role: Role | str = Role.SYSTEM,
    last: Event | None = None,
    clamp: bool = False,
    reason: str | None = None,
    office_id: str | None = None,
    street_code: str | None = None,
    level: str | None = None,
    stage: str | None = None,
    satisfaction: Satisfaction | str | None = None,
    data: Mapping[str, Any] | None = None,
    incident_values: Mapping[str, Any] | None = None,
) -> Event:
    """Validate, insert and apply the incident's next event on ``connection``.

    Parameters
    ----------
    last
        The incident's latest event when the caller has read it already (under its lock);
        read here otherwise.
    clamp
        For events the store records by itself: a time before the latest event (clocks of
        different callers differ a little) is moved up to it instead of refused, so the log
        never runs backwards.
    incident_values
        Other columns of the incident to set in the same UPDATE as its status (one statement
        instead of two for a caller that changes both).

    Raises
    ------
    InvalidTransitionError
        The action is not allowed now (nothing was written; the caller's transaction decides).
    """
    if last is None:
        last = read_last_event(connection, incident_id)
    event = build_event(
        last,
        incident_id,
        action,
        at=at,
        actor=actor,
        role=role,
        clamp=clamp,
        reason=reason,
        office_id=office_id,
        street_code=street_code,
        level=level,
        stage=stage,
        satisfaction=satisfaction,
        data=data,
    )
    _INSERT_EVENTS.run(connection, [event.to_row()])
    _apply(connection, [_applied(incident_id, event, incident_values)])
    return event


_NOT_EVENT_ARGS = ("incident_id", "action", "incident_values")


def last_events(connection: Connection, incident_ids: Sequence[str]) -> dict[str, Event]:
    """The latest event of each of ``incident_ids`` that has one, in one statement."""
    if not incident_ids:
        return {}
    return {
        row.incident_id: event_from_row(row)
        for row in connection.execute(_LAST_EVENTS, {"ids": sorted(set(incident_ids))})
    }


def append_events(
    connection: Connection,
    appends: Sequence[Mapping[str, Any]],
    *,
    lasts: Mapping[str, Event] | None = None,
) -> list[Event]:
    """:func:`append_event` for several incidents, one event each, in three statements.

    Each item holds ``incident_id``, ``action`` and :func:`append_event`'s keyword arguments
    (``last`` excepted). The latest events are read here, all at once, unless the caller read
    them (``lasts``, :func:`last_events`, in the same transaction with the incidents locked;
    an incident missing from it has no event yet): then the two statements left read nothing,
    and may be sent together (:func:`gridgov.store.engine.sent_together`).
    """
    if not appends:
        return []
    ids = [a["incident_id"] for a in appends]
    if len(set(ids)) != len(ids):
        msg = "append_events takes one event per incident"
        raise ValueError(msg)
    if lasts is None:
        lasts = last_events(connection, ids)
    events: list[Event] = []
    applied: list[dict[str, Any]] = []
    for a in appends:
        kwargs = {k: v for k, v in a.items() if k not in _NOT_EVENT_ARGS}
        event = build_event(lasts.get(a["incident_id"]), a["incident_id"], a["action"], **kwargs)
        events.append(event)
        applied.append(_applied(a["incident_id"], event, a.get("incident_values")))
    _INSERT_EVENTS.run(connection, [e.to_row() for e in events])
    _apply(connection, applied)
    return events


def _applied(
    incident_id: str, event: Event, incident_values: Mapping[str, Any] | None
) -> dict[str, Any]:
    """What an event sets on its incident: its state and time, and the caller's other columns
    (one statement instead of two for a caller that changes both)."""
    return {
        **(incident_values or {}),
        "incident_id": incident_id,
        "status": str(event.to_state),
        "updated_at": event.at,
    }


def _apply(connection: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """Set each incident's row of ``rows``: one statement for the rows that set the same
    columns (nearly always all of them)."""
    by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        by_columns.setdefault(tuple(sorted(c for c in row if c != "incident_id")), []).append(row)
    for columns, same in by_columns.items():
        _status_update(columns).write(connection, same)


@functools.cache
def _status_update(sets: tuple[str, ...]) -> RowsUpdate:
    """The UPDATE of many incidents' columns ``sets``, built once per set of columns."""
    return RowsUpdate(INCIDENTS, keys=["incident_id"], sets=sets)
