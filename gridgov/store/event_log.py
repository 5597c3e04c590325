"""The incident workflow in the store: transitions, the append-only event log, notices and
supervision.

Every transition goes through :func:`gridgov.workflow.next_event` (the pure state machine) and
is stored as an append-only row of ``events`` in the same transaction as its side effects:

- ``resolve``, ``return``, ``requeue`` and ``cancel`` end the incident's active assignments and
  free its units (back to available, or off duty);
- ``return`` and ``reopen`` leave the incident ``registered``;
  :func:`gridgov.service.actions.act` dispatches it again in the same transaction
  (:func:`gridgov.store.dispatch_within` leaves the returning office out);
- ``close`` and ``cancel`` write an ``outcome`` notice to the incident's reporter and to the
  reporter of every duplicate linked to it;
- ``supervise`` writes a ``supervision`` notice to the responsible office (street level) or its
  department (district level).

An invalid transition raises :class:`gridgov.errors.InvalidTransitionError` and writes nothing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd
from sqlalchemy import Connection, Engine, insert, or_, select, text, update

from gridgov.catalog import Catalog
from gridgov.errors import (
    InputError,
    NotFoundError,
)
from gridgov.model import UnitStatus
from gridgov.settings import get_settings
from gridgov.sla_clocks import CLOCK_STATES, Overdue, list_overdue, plan_supervision
from gridgov.store.district_load import end_active_assignments
from gridgov.store.district_read import read_catalog
from gridgov.store.engine import begin_write, translate_errors
from gridgov.store.journal import (
    SYSTEM_ACTOR,
    append_event,
    event_from_row,
    read_last_event,
)
from gridgov.store.models import (
    ASSIGNMENTS,
    EVENTS,
    INCIDENTS,
    NOTICES,
    OFFICES,
    UNITS,
)
from gridgov.workflow import (
    EVENT_COLUMNS,
    TRANSITIONS,
    Action,
    Event,
    Role,
    Satisfaction,
)

#: Columns of :func:`read_notices`.
NOTICE_COLUMNS = (
    "notice_id",
    "incident_id",
    "created_at",
    "kind",
    "level",
    "stage",
    "recipient_kind",
    "recipient",
    "message",
    "data",
)
#: Actions after which the incident's units are no longer out on it.
_RELEASING = frozenset({Action.RESOLVE, Action.RETURN, Action.REQUEUE, Action.CANCEL})
#: Actions whose office defaults to the latest dispatch's: what the department (through its
#: units) does, and the supervision of the office responsible.
_DEPARTMENT_ACTIONS = frozenset(
    {Action.ACKNOWLEDGE, Action.ARRIVE, Action.RESOLVE, Action.RETURN, Action.SUPERVISE}
)
#: Actions that end an incident for its reporter (and for the reporters of its duplicates).
_OUTCOMES = {Action.CLOSE: ("closed", "已办结"), Action.CANCEL: ("cancelled", "已撤销")}
_STAGE_ZH = {"acknowledge": "响应", "arrive": "到场", "resolve": "办结"}
# One key for PostgreSQL's advisory lock: two supervision runs never plan the same items twice.
_SUPERVISE_LOCK = 7_311_004
_MAX_LISTED = 20


def _aware(when: Any, what: str) -> datetime:
    if not isinstance(when, datetime) or when.tzinfo is None or when.utcoffset() is None:
        msg = f"{what} must be a timezone-aware datetime, got {when!r}"
        raise InputError(msg)
    return when.astimezone(UTC)


def _local(when: datetime) -> str:
    return when.astimezone(ZoneInfo(get_settings().display_tz)).strftime("%Y-%m-%d %H:%M")


def _lock_incident(connection: Connection, incident_id: str) -> Any:
    row = connection.execute(
        select(INCIDENTS).where(INCIDENTS.c.incident_id == incident_id).with_for_update()
    ).first()
    if row is None:
        msg = f"no incident {incident_id!r} in the store"
        raise NotFoundError(msg)
    return row


def _latest_dispatch_office(connection: Connection, incident_id: str) -> str | None:
    return connection.execute(
        select(EVENTS.c.office_id)
        .where(EVENTS.c.incident_id == incident_id, EVENTS.c.action == str(Action.DISPATCH))
        .order_by(EVENTS.c.seq.desc())
        .limit(1)
    ).scalar()


def _unit_office(connection: Connection, unit_id: str) -> str | None:
    row = connection.execute(
        select(UNITS.c.unit_id, UNITS.c.office_id).where(UNITS.c.unit_id == unit_id)
    ).first()
    if row is None:
        msg = f"no unit {unit_id!r} in the store"
        raise NotFoundError(msg)
    return row.office_id


def _free_units(connection: Connection, incident_id: str, at: datetime, reason: str) -> list[str]:
    """End the incident's active assignments and free the units working on it."""
    units = connection.execute(
        select(UNITS.c.unit_id, UNITS.c.on_duty)
        .where(UNITS.c.busy_incident_id == incident_id)
        .order_by(UNITS.c.unit_id)
        .with_for_update()
    ).all()
    end_active_assignments(
        connection, at, reason, ASSIGNMENTS.c.incident_id == incident_id, requeue=False
    )
    for unit in units:
        free = UnitStatus.AVAILABLE if unit.on_duty else UnitStatus.OFF_DUTY
        connection.execute(
            update(UNITS)
            .where(UNITS.c.unit_id == unit.unit_id)
            .values(status=str(free), busy_incident_id=None)
        )
    return [u.unit_id for u in units]


def _notice(
    connection: Connection,
    *,
    incident_id: str,
    created_at: datetime,
    kind: str,
    recipient_kind: str,
    recipient: str | None,
    message: str,
    level: str | None = None,
    stage: str | None = None,
    data: Mapping[str, Any] | None = None,
) -> None:
    connection.execute(
        insert(NOTICES).values(
            incident_id=incident_id,
            created_at=created_at,
            kind=kind,
            level=level,
            stage=stage,
            recipient_kind=recipient_kind,
            recipient=recipient,
            message=message,
            data=dict(data or {}),
        )
    )


def _outcome_notices(connection: Connection, event: Event) -> int:
    """Tell the incident's reporter, and the reporter of each linked duplicate, how it ended."""
    outcome, outcome_zh = _OUTCOMES[event.action]
    master = event.incident_id
    rows = connection.execute(
        select(INCIDENTS.c.incident_id, INCIDENTS.c.reporter_id)
        .where(or_(INCIDENTS.c.incident_id == master, INCIDENTS.c.duplicate_of == master))
        .order_by(INCIDENTS.c.incident_id)
    ).all()
    written = 0
    for row in rows:
        if not row.reporter_id:
            continue  # nobody to tell
        yours = row.incident_id == master
        about = "您反映的问题" if yours else f"您反映的问题（与事件 {master} 重复）"
        what = (
            f"your report {row.incident_id}"
            if yours
            else f"your report {row.incident_id} (a duplicate of incident {master})"
        )
        why = f"; reason: {event.reason}" if event.reason else ""
        _notice(
            connection,
            incident_id=row.incident_id,
            created_at=event.at,
            kind="outcome",
            recipient_kind="reporter",
            # The opaque id: whoever delivers it looks the contact up (and finds none once
            # erased); the notice itself holds no personal data.
            recipient=row.reporter_id,
            message=f"{about}{outcome_zh}。 / {what} was {outcome} on {_local(event.at)}{why}.",
            data={"outcome": outcome, "incident_id": master, "duplicate": not yours},
        )
        written += 1
    return written


def _department_of(connection: Connection, office_id: str | None) -> str | None:
    if office_id is None:
        return None
    return connection.execute(
        select(OFFICES.c.department).where(OFFICES.c.office_id == office_id)
    ).scalar()


def _supervision_notice(connection: Connection, event: Event, matter_code: str) -> None:
    """The supervision (督办) order: to the office at street level, its department above."""
    office = event.office_id
    if event.level == "district":
        recipient_kind = "department"
        recipient = _department_of(connection, office) or office
    else:
        recipient_kind, recipient = "office", office
    level_zh = "区级督办" if event.level == "district" else "街道督办"
    stage_zh = _STAGE_ZH.get(str(event.stage), str(event.stage))
    overdue = event.data.get("overdue_by_min")
    late = f" overdue by {overdue:.0f} min" if isinstance(overdue, int | float) else " overdue"
    message = (
        f"{level_zh}：事件 {event.incident_id}（{matter_code}）{stage_zh}超时。 / "
        f"{event.level}-level supervision: incident {event.incident_id} ({matter_code}) "
        f"{event.stage}{late}; responsible office {office or 'unknown'}."
    )
    _notice(
        connection,
        incident_id=event.incident_id,
        created_at=event.at,
        kind="supervision",
        level=event.level,
        stage=event.stage,
        recipient_kind=recipient_kind,
        recipient=recipient,
        message=message,
        data={"seq": event.seq, "office_id": office, **dict(event.data)},
    )


def apply_action(
    engine: Engine,
    incident_id: str,
    action: Action | str,
    *,
    at: datetime,
    actor: str,
    role: Role | str,
    reason: str | None = None,
    satisfaction: Satisfaction | str | None = None,
    unit_id: str | None = None,
    data: Mapping[str, Any] | None = None,
    office_id: str | None = None,
    level: str | None = None,
    stage: str | None = None,
) -> Event:
    """Take one workflow action on a stored incident, with its side effects, atomically.

    :func:`record_action` in a transaction of its own. The incident row is locked (``FOR
    UPDATE`` on PostgreSQL; ``BEGIN IMMEDIATE`` serialises writers on SQLite), its latest event
    read, the next one validated by :func:`gridgov.workflow.next_event` and inserted, and
    ``incidents.status`` set, all with the side effects listed in the module docstring, in one
    transaction. (:func:`gridgov.service.actions.act` adds the dispatch again after a return or
    reopen, in the same transaction.)

    Returns
    -------
    gridgov.workflow.Event
        The recorded event.
    """
    with translate_errors(engine), begin_write(engine) as connection:
        return record_action(
            connection,
            incident_id,
            action,
            at=at,
            actor=actor,
            role=role,
            reason=reason,
            satisfaction=satisfaction,
            unit_id=unit_id,
            data=data,
            office_id=office_id,
            level=level,
            stage=stage,
        )


def record_action(
    connection: Connection,
    incident_id: str,
    action: Action | str,
    *,
    at: datetime,
    actor: str,
    role: Role | str,
    reason: str | None = None,
    satisfaction: Satisfaction | str | None = None,
    unit_id: str | None = None,
    data: Mapping[str, Any] | None = None,
    office_id: str | None = None,
    level: str | None = None,
    stage: str | None = None,
) -> Event:
    """Take one workflow action on a stored incident, with its side effects, inside the caller's
    write transaction (:func:`gridgov.store.write_transaction`).

    The incident row is locked, its latest event read, the next one validated by
    :func:`gridgov.workflow.next_event` and inserted, and ``incidents.status`` set, with the
    side effects listed in the module docstring.

    Parameters
    ----------
    connection
        The write transaction.
    incident_id
        The incident.
    action
        What is done (:class:`gridgov.workflow.Action`). A dispatch goes through
        :func:`gridgov.store.dispatch_stored`, which chooses the units.
    at
        When (timezone-aware; not before the incident's latest event).
    actor, role
        Who, in which capacity (:data:`gridgov.workflow.ALLOWED_ROLES`).
    reason
        Why (required for reject, reopen, return, requeue and cancel).
    satisfaction
        The reporter's evaluation (evaluate only).
    unit_id
        The unit acting (recorded in ``data``; its office becomes the event's office).
    data
        Extra facts. A reject needs ``category`` (``invalid`` or ``duplicate``; a duplicate
        also ``duplicate_of``, which is then linked on the incident; so is a cancel's).
    office_id
        The office concerned; by default the unit's office, or for acknowledge, arrive,
        resolve, return and supervise the office of the latest dispatch.
    level, stage
        For supervise: the level (street or district) and the overdue stage.

    Returns
    -------
    gridgov.workflow.Event
        The recorded event.

    Raises
    ------
    NotFoundError
        No such incident (or unit).
    InvalidTransitionError
        The action is not allowed now, by this role, or lacks a required field; nothing changed.
    InputError
        A dispatch (use dispatch_stored), or a duplicate of an unknown incident.
    """
    try:
        act = Action(action)
    except ValueError:
        act = None
    if act is Action.DISPATCH:
        msg = (
            "dispatch through gridgov.store.dispatch_stored, which chooses and assigns the units "
            "in the same transaction as the dispatch event"
        )
        raise InputError(msg)
    payload = dict(data or {})
    if unit_id is not None:
        payload.setdefault("unit_id", unit_id)
    incident = _lock_incident(connection, incident_id)
    last = read_last_event(connection, incident_id)
    if office_id is None and unit_id is not None:
        office_id = _unit_office(connection, unit_id)
    if office_id is None and act in _DEPARTMENT_ACTIONS:
        office_id = _latest_dispatch_office(connection, incident_id)
    event = append_event(
        connection,
        incident_id,
        action,
        at=at,
        actor=actor,
        role=role,
        last=last,
        reason=reason,
        office_id=office_id,
        level=level,
        stage=stage,
        satisfaction=satisfaction,
        data=payload,
    )
    if event.action is Action.REJECT and payload.get("category") == "duplicate":
        _link_duplicate(connection, incident_id, str(payload["duplicate_of"]))
    elif event.action is Action.CANCEL and payload.get("duplicate_of"):
        # A registered (or dispatched) incident found to repeat another ends linked to it.
        _link_duplicate(connection, incident_id, str(payload["duplicate_of"]))
    if event.action in _RELEASING:
        why = f"{event.action}: {event.reason}" if event.reason else str(event.action)
        _free_units(connection, incident_id, event.at, why)
    if event.action in _OUTCOMES:
        _outcome_notices(connection, event)
    if event.action is Action.SUPERVISE:
        _supervision_notice(connection, event, incident.matter_code)
    return event


def _link_duplicate(connection: Connection, incident_id: str, master: str) -> None:
    found = connection.execute(
        select(INCIDENTS.c.incident_id).where(INCIDENTS.c.incident_id == master)
    ).first()
    if found is None:
        msg = f"incident {incident_id!r} cannot duplicate {master!r}: no such incident"
        raise InputError(msg)
    connection.execute(
        update(INCIDENTS).where(INCIDENTS.c.incident_id == incident_id).values(duplicate_of=master)
    )


def _frame(rows: Sequence[Any], columns: Sequence[str], times: Sequence[str]) -> pd.DataFrame:
    # Object columns keep None as None (pandas would otherwise infer strings and make it NaN),
    # the same as gridgov.workflow.frame_from_events.
    values = list(zip(*[tuple(r) for r in rows], strict=True)) or [()] * len(columns)
    df = pd.DataFrame(
        {c: pd.Series(list(v), dtype=object) for c, v in zip(columns, values, strict=True)}
    )
    for column in times:
        df[column] = pd.to_datetime(df[column], utc=True)
    return df


def read_events(
    engine: Engine,
    incident_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> pd.DataFrame:
    """Read the event log, in time order (ties by incident and seq).

    Parameters
    ----------
    engine
        The store.
    incident_id
        Only this incident's events.
    since, until
        Only events with ``since <= at < until`` (timezone-aware).

    Returns
    -------
    pandas.DataFrame
        :data:`gridgov.workflow.EVENT_COLUMNS` and ``event_id``; ``at`` in UTC, ``data`` dicts.
    """
    columns = [*EVENT_COLUMNS, "event_id"]
    stmt = select(*[EVENTS.c[c] for c in columns]).order_by(
        EVENTS.c.at, EVENTS.c.incident_id, EVENTS.c.seq
    )
    if incident_id is not None:
        stmt = stmt.where(EVENTS.c.incident_id == incident_id)
    if since is not None:
        stmt = stmt.where(EVENTS.c.at >= _aware(since, "since"))
    if until is not None:
        stmt = stmt.where(EVENTS.c.at < _aware(until, "until"))
    with translate_errors(engine), engine.connect() as connection:
        rows = connection.execute(stmt).all()
    df = _frame(rows, columns, ["at"])
    df["seq"] = df["seq"].astype("int64")
    df["event_id"] = df["event_id"].astype("int64")
    df["data"] = pd.Series([dict(d or {}) for d in df["data"]], index=df.index, dtype=object)
    return df


def read_notices(
    engine: Engine,
    *,
    incident_id: str | None = None,
    kind: str | None = None,
    recipient_kind: str | None = None,
    recipient: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> pd.DataFrame:
    """Read notices in the order they were written, optionally filtered.

    Returns
    -------
    pandas.DataFrame
        :data:`NOTICE_COLUMNS`, ``created_at`` in UTC.
    """
    stmt = select(*[NOTICES.c[c] for c in NOTICE_COLUMNS]).order_by(NOTICES.c.notice_id)
    filters = {
        "incident_id": incident_id,
        "kind": kind,
        "recipient_kind": recipient_kind,
        "recipient": recipient,
    }
    for column, value in filters.items():
        if value is not None:
            stmt = stmt.where(NOTICES.c[column] == value)
    if since is not None:
        stmt = stmt.where(NOTICES.c.created_at >= _aware(since, "since"))
    if until is not None:
        stmt = stmt.where(NOTICES.c.created_at < _aware(until, "until"))
    with translate_errors(engine), engine.connect() as connection:
        rows = connection.execute(stmt).all()
    return _frame(rows, NOTICE_COLUMNS, ["created_at"])


def supervise_stored(engine: Engine, at: datetime, catalog: Catalog | None = None) -> list[Overdue]:
    """Record the supervision (督办) due at instant ``at``: one event and one notice per item.

    :func:`gridgov.sla_clocks.plan_supervision` runs on the open incidents' logs (events at or
    before ``at``); each planned item becomes a ``supervise`` event (role system, its stage,
    its level: street, or district once overdue by ``settings.supervise_district_after`` times
    the stage's deadline) and a ``supervision`` notice, all in one transaction. Running it again
    at the same instant records nothing new. An incident with events after ``at`` is left to a
    run at a later instant (its log cannot be extended in the past).

    Parameters
    ----------
    engine
        The store.
    at
        The instant (timezone-aware): the caller's clock, so tests control it.
    catalog
        The matters catalogue (deadlines); the stored one (:func:`~gridgov.store.read_catalog`)
        when None.

    Returns
    -------
    list of gridgov.sla_clocks.Overdue
        The items recorded, in the order of :func:`gridgov.sla_clocks.plan_supervision`.

    Raises
    ------
    UnknownMatterError
        An incident with a running clock has a matter the catalogue lacks.
    """
    at = _aware(at, "at")
    catalog = read_catalog(engine) if catalog is None else catalog
    district_after = get_settings().supervise_district_after
    with translate_errors(engine), begin_write(engine) as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(
                text("SELECT pg_advisory_xact_lock(CAST(:key AS bigint))"), {"key": _SUPERVISE_LOCK}
            )
        incidents, current = _clock_logs(connection, at)
        events = [e for log in current.values() for e in log]
        matters = {i: catalog.get(incidents[i]) for i in current}
        planned = plan_supervision(events, matters, at, district_after=district_after)
        recorded: list[Overdue] = []
        lasts = {i: log[-1] for i, log in current.items()}
        for item in planned:
            last = lasts[item.incident_id]
            if (last.to_state, Action.SUPERVISE) not in TRANSITIONS:
                continue
            deadline_min = (item.deadline - item.started_at).total_seconds() / 60
            event = append_event(
                connection,
                item.incident_id,
                Action.SUPERVISE,
                at=at,
                last=last,
                actor=SYSTEM_ACTOR,
                role=Role.SYSTEM,
                office_id=item.office_id,
                level=item.level,
                stage=str(item.stage),
                reason=(
                    f"{item.stage} overdue by {_minutes(item.overdue_by.total_seconds())} min "
                    f"(deadline {_local(item.deadline)}, {deadline_min:g} min from dispatch)"
                ),
                data={
                    "started_at": item.started_at.isoformat(),
                    "deadline": item.deadline.isoformat(),
                    "overdue_by_min": round(item.overdue_by.total_seconds() / 60, 2),
                },
            )
            lasts[item.incident_id] = event
            _supervision_notice(connection, event, incidents[item.incident_id])
            recorded.append(item)
    return recorded


def _clock_logs(
    connection: Connection, at: datetime
) -> tuple[dict[str, str], dict[str, list[Event]]]:
    """Matter codes and event logs of the incidents whose clocks may run, as of ``at``.

    A log that goes on after ``at`` is left out: it cannot take an event at ``at``.
    """
    clock_states = [str(s) for s in CLOCK_STATES]
    incidents = dict(
        connection.execute(
            select(INCIDENTS.c.incident_id, INCIDENTS.c.matter_code).where(
                INCIDENTS.c.status.in_(clock_states)
            )
        ).all()
    )
    if not incidents:
        return {}, {}
    rows = connection.execute(
        select(EVENTS)
        .join(INCIDENTS, INCIDENTS.c.incident_id == EVENTS.c.incident_id)
        .where(INCIDENTS.c.status.in_(clock_states))
        .order_by(EVENTS.c.incident_id, EVENTS.c.seq)
    ).all()
    logs: dict[str, list[Event]] = {}
    for row in rows:
        logs.setdefault(row.incident_id, []).append(event_from_row(row))
    current = {i: log for i, log in logs.items() if log and log[-1].at <= at}
    return incidents, current


def list_overdue_stored(
    engine: Engine, at: datetime, catalog: Catalog | None = None
) -> list[Overdue]:
    """What is overdue at instant ``at`` among the stored open incidents (nothing is written).

    :func:`gridgov.sla_clocks.list_overdue` on the logs :func:`supervise_stored` reads, with the
    configured ``supervise_district_after``; same order, same errors.
    """
    at = _aware(at, "at")
    catalog = read_catalog(engine) if catalog is None else catalog
    with translate_errors(engine), engine.connect() as connection:
        incidents, current = _clock_logs(connection, at)
    events = [e for log in current.values() for e in log]
    matters = {i: catalog.get(incidents[i]) for i in current}
    return list_overdue(events, matters, at, district_after=get_settings().supervise_district_after)


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f}" if math.isfinite(seconds) else "?"
