"""The incident workflow against the store: transitions, supervision, notices, history, and the
appointment consultations of power 1.

Every transition goes through :func:`gridgov.workflow.next_event` (the pure state machine) and
is stored as an append-only row of ``events`` in the same transaction as its side effects:

- ``resolve``, ``return``, ``requeue`` and ``cancel`` end the incident's active assignments and
  free its units (back to available, or off duty);
- ``return`` and ``reopen`` leave the incident ``registered``: the caller dispatches it again
  (:func:`gridgov.store.dispatch_stored` then leaves the returning office out);
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

import geopandas as gpd
import pandas as pd
import shapely
from sqlalchemy import Connection, Engine, and_, func, insert, or_, select, text, update
from sqlalchemy.exc import IntegrityError

from gridgov.catalog import Catalog
from gridgov.errors import (
    ConsultationError,
    InputError,
    InvalidTransitionError,
    NotFoundError,
    StoreError,
)
from gridgov.model import UnitStatus
from gridgov.settings import get_settings
from gridgov.store.engine import begin_write, translate_errors
from gridgov.store.journal import (
    SYSTEM_ACTOR,
    append_event,
    event_from_row,
    insert_events,
    read_last_event,
)
from gridgov.store.models import (
    ASSIGNMENTS,
    CONSULTATIONS,
    EVENTS,
    INCIDENTS,
    NOTICES,
    OFFICES,
    OPINIONS,
    UNITS,
)
from gridgov.store.repository import end_active_assignments, read_catalog
from gridgov.workflow import (
    CLOCK_STATES,
    EVENT_COLUMNS,
    TRANSITIONS,
    Action,
    Event,
    Overdue,
    Role,
    Satisfaction,
    State,
    events_from_frame,
    list_overdue,
    plan_supervision,
    replay,
)

__all__ = [
    "CONSULTATION_COLUMNS",
    "NOTICE_COLUMNS",
    "apply_action",
    "check_head_move",
    "import_history",
    "list_overdue_stored",
    "read_consultations",
    "read_events",
    "read_notices",
    "record_consultation",
    "record_street_opinion",
    "supervise_stored",
]

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
#: Columns of :func:`read_consultations`.
CONSULTATION_COLUMNS = (
    "consultation_id",
    "office_id",
    "department",
    "street_code",
    "head_name",
    "proposed_move",
    "consulted_at",
    "letter",
    "opinion",
    "opinion_text",
    "opinion_at",
    "recorded_by",
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


# --------------------------------------------------------------------------------------------
# transitions
# --------------------------------------------------------------------------------------------


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
        select(INCIDENTS.c.incident_id, INCIDENTS.c.reporter)
        .where(or_(INCIDENTS.c.incident_id == master, INCIDENTS.c.duplicate_of == master))
        .order_by(INCIDENTS.c.incident_id)
    ).all()
    written = 0
    for row in rows:
        if not row.reporter:
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
            recipient=row.reporter,
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

    The incident row is locked (``FOR UPDATE`` on PostgreSQL; ``BEGIN IMMEDIATE`` serialises
    writers on SQLite), its latest event read, the next one validated by
    :func:`gridgov.workflow.next_event` and inserted, and ``incidents.status`` set, all with the
    side effects listed in the module docstring, in one transaction.

    Parameters
    ----------
    engine
        The store.
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
        also ``duplicate_of``, which is then linked on the incident).
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
    with translate_errors(engine), begin_write(engine) as connection:
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


# --------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# supervision
# --------------------------------------------------------------------------------------------


def supervise_stored(engine: Engine, at: datetime, catalog: Catalog | None = None) -> list[Overdue]:
    """Record the supervision (督办) due at instant ``at``: one event and one notice per item.

    :func:`gridgov.workflow.plan_supervision` runs on the open incidents' logs (events at or
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
        The matters catalogue (deadlines); the stored one (:func:`read_catalog`) when None.

    Returns
    -------
    list of gridgov.workflow.Overdue
        The items recorded, in the order of :func:`gridgov.workflow.plan_supervision`.

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

    :func:`gridgov.workflow.list_overdue` on the logs :func:`supervise_stored` reads, with the
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


# --------------------------------------------------------------------------------------------
# importing a history (a simulation's incidents and events)
# --------------------------------------------------------------------------------------------

_INCIDENT_REQUIRED = ("incident_id", "matter_code", "reported_at")
_INCIDENT_OPTIONAL = (
    "priority",
    "street_code",
    "community_code",
    "grid_code",
    "microgrid_code",
    "source",
    "reporter",
    "description",
    "created_at",
)


def _listed(problems: list[str]) -> str:
    shown = problems[:_MAX_LISTED]
    more = len(problems) - len(shown)
    return "; ".join(shown) + (f"; and {more} more" if more > 0 else "")


def _points(incidents_df: pd.DataFrame, problems: list[str]) -> list[Any]:
    if isinstance(incidents_df, gpd.GeoDataFrame) and "geometry" in incidents_df.columns:
        gdf = incidents_df
        if gdf.crs is not None and not gdf.crs.equals("EPSG:4326"):
            gdf = gdf.to_crs("EPSG:4326")
        geoms = list(gdf.geometry)
    elif {"lon", "lat"} <= set(incidents_df.columns):
        geoms = list(
            shapely.points(
                incidents_df["lon"].to_numpy(dtype=float), incidents_df["lat"].to_numpy(dtype=float)
            )
        )
    else:
        problems.append("incidents need a point geometry (GeoDataFrame) or lon/lat columns")
        return []
    ids = incidents_df["incident_id"].tolist()
    for incident_id, geom in zip(ids, geoms, strict=True):
        if geom is None or geom.is_empty or geom.geom_type != "Point":
            problems.append(f"incident {incident_id}: no point geometry")
    return geoms


def _none(value: Any) -> Any:
    if value is None or value is pd.NaT:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def import_history(
    engine: Engine, incidents_df: pd.DataFrame, events_df: pd.DataFrame
) -> dict[str, int]:
    """Store a finished history (e.g. a simulated month): its incidents and their event logs.

    Everything is checked first and every problem listed in one error: columns, duplicate or
    already stored ids, each incident's log replayed with :func:`gridgov.workflow.replay`, the
    incidents' ``status`` (when given) equal to their log's final state, events of unknown
    incidents, incidents without events, and ``duplicate_of`` naming an unknown incident. Then
    all rows are inserted in one transaction; nothing is written when anything is wrong.

    Parameters
    ----------
    engine
        The store.
    incidents_df
        ``incident_id``, ``matter_code``, ``reported_at`` (aware) and a point: a GeoDataFrame's
        geometry or ``lon``/``lat`` (WGS84); optional ``priority``, ``status``, ``street_code``,
        ``community_code``, ``grid_code``, ``microgrid_code``, ``duplicate_of``, ``source``,
        ``reporter``, ``description``, ``created_at``.
    events_df
        :data:`gridgov.workflow.EVENT_COLUMNS` (``at`` timezone-aware).

    Returns
    -------
    dict
        ``{"incidents": n, "events": m}`` stored.

    Raises
    ------
    InputError
        Listing every problem found; nothing was written.
    """
    problems: list[str] = []
    missing = [c for c in _INCIDENT_REQUIRED if c not in incidents_df.columns]
    if missing:
        msg = f"cannot import the history: incidents lack column(s) {', '.join(missing)}"
        raise InputError(msg)
    try:
        events = events_from_frame(events_df)
    except InputError as exc:
        msg = f"cannot import the history: {exc}"
        raise InputError(msg) from exc
    ids = [str(i) for i in incidents_df["incident_id"]]
    seen: set[str] = set()
    for incident_id in ids:
        if incident_id in seen:
            problems.append(f"incident {incident_id}: listed twice")
        seen.add(incident_id)
    logs: dict[str, list[Event]] = {}
    for event in events:
        logs.setdefault(event.incident_id, []).append(event)
    unknown = sorted(set(logs) - seen)
    if unknown:
        problems.append(f"events of unknown incident(s): {', '.join(unknown[:_MAX_LISTED])}")
    states: dict[str, State] = {}
    for incident_id in ids:
        log = logs.get(incident_id)
        if not log:
            problems.append(f"incident {incident_id}: no events")
            continue
        try:
            states[incident_id] = replay(log)
        except InvalidTransitionError as exc:
            problems.append(str(exc))
    if "status" in incidents_df.columns:
        for incident_id, status in zip(ids, incidents_df["status"], strict=True):
            state = states.get(incident_id)
            if state is not None and _none(status) is not None and str(status) != str(state):
                problems.append(
                    f"incident {incident_id}: status {status} but its events end in {state}"
                )
    reported = pd.to_datetime(incidents_df["reported_at"])
    if getattr(reported.dt, "tz", None) is None:
        problems.append("incidents' reported_at holds naive times; give timezone-aware times")
    geoms = _points(incidents_df, problems)
    duplicate_of = (
        [_none(v) for v in incidents_df["duplicate_of"]]
        if "duplicate_of" in incidents_df.columns
        else [None] * len(ids)
    )
    with translate_errors(engine), begin_write(engine) as connection:
        stored = _stored_ids(connection, ids + [d for d in duplicate_of if d is not None])
        clash = sorted(seen & stored)
        if clash:
            problems.append(f"incident(s) already stored: {', '.join(clash[:_MAX_LISTED])}")
        for incident_id, master in zip(ids, duplicate_of, strict=True):
            if master is not None and str(master) not in seen | stored:
                problems.append(f"incident {incident_id}: duplicate_of {master} is unknown")
        if problems:
            msg = f"cannot import the history ({len(problems)} problem(s)): {_listed(problems)}"
            raise InputError(msg)
        rows = _incident_rows(incidents_df, ids, geoms, reported, states, logs)
        try:
            connection.execute(insert(INCIDENTS), rows)
            links = [{"i": i, "m": str(m)} for i, m in zip(ids, duplicate_of, strict=True) if m]
            if links:
                # Linked after every row exists: duplicates may come before their incident.
                for link in links:
                    connection.execute(
                        update(INCIDENTS)
                        .where(INCIDENTS.c.incident_id == link["i"])
                        .values(duplicate_of=link["m"])
                    )
            insert_events(connection, events)
        except IntegrityError as exc:
            msg = f"the database rejected the history, nothing was imported: {exc.orig}"
            raise StoreError(msg) from exc
    return {"incidents": len(rows), "events": len(events)}


def _stored_ids(connection: Connection, ids: list[str]) -> set[str]:
    found: set[str] = set()
    unique = sorted(set(ids))
    for start in range(0, len(unique), 1000):
        chunk = unique[start : start + 1000]
        found.update(
            r[0]
            for r in connection.execute(
                select(INCIDENTS.c.incident_id).where(INCIDENTS.c.incident_id.in_(chunk))
            )
        )
    return found


def _incident_rows(
    incidents_df: pd.DataFrame,
    ids: list[str],
    geoms: list[Any],
    reported: pd.Series,
    states: dict[str, State],
    logs: dict[str, list[Event]],
) -> list[dict[str, Any]]:
    optional = {c: incidents_df[c].tolist() for c in _INCIDENT_OPTIONAL if c in incidents_df}
    reported_at = reported.dt.tz_convert(UTC).dt.to_pydatetime().tolist()
    rows = []
    for k, incident_id in enumerate(ids):
        log = logs[incident_id]
        row: dict[str, Any] = {
            "incident_id": incident_id,
            "matter_code": str(incidents_df["matter_code"].iloc[k]),
            "geometry": geoms[k],
            "reported_at": reported_at[k],
            "status": str(states[incident_id]),
            "created_at": reported_at[k],
            "updated_at": max(e.at for e in log),
            "duplicate_of": None,
        }
        for column in _INCIDENT_OPTIONAL:
            row.setdefault(column, None)
            if column in optional:
                value = _none(optional[column][k])
                if column == "created_at" and value is not None:
                    value = pd.Timestamp(value).to_pydatetime()
                elif column == "priority" and value is not None:
                    value = int(value)
                elif value is not None:
                    value = str(value)
                row[column] = value if value is not None else row[column]
        if row["created_at"] is None:
            row["created_at"] = reported_at[k]
        rows.append(row)
    return rows


# --------------------------------------------------------------------------------------------
# appointment consultations (power 1)
# --------------------------------------------------------------------------------------------


def _text(value: Any, what: str, problems: list[str]) -> str:
    if not isinstance(value, str) or not value.strip():
        problems.append(f"{what} must be a non-empty text")
        return ""
    return value.strip()


def record_consultation(
    engine: Engine,
    *,
    office_id: str,
    head_name: str,
    proposed_move: str,
    letter: str,
    consulted_at: datetime,
    recorded_by: str,
    department: str | None = None,
    street_code: str | None = None,
) -> int:
    """Record a department's written consultation of the street before moving an office head.

    Parameters
    ----------
    office_id
        The stationed office whose head would move.
    head_name
        The head concerned.
    proposed_move
        What the department proposes (transfer, promotion, removal...).
    letter
        The department's written consultation (the letter's text).
    consulted_at
        When the street received it (timezone-aware).
    recorded_by
        Who recorded it.
    department, street_code
        Default to the stored office's.

    Returns
    -------
    int
        The consultation id.

    Raises
    ------
    InputError
        A missing text, a naive time, or an office the store does not hold with no
        department / street given.
    """
    problems: list[str] = []
    values = {
        "office_id": _text(office_id, "office_id", problems),
        "head_name": _text(head_name, "head_name", problems),
        "proposed_move": _text(proposed_move, "proposed_move", problems),
        "letter": _text(letter, "letter (the written consultation)", problems),
        "recorded_by": _text(recorded_by, "recorded_by", problems),
    }
    if not isinstance(consulted_at, datetime) or consulted_at.tzinfo is None:
        problems.append("consulted_at must be a timezone-aware datetime")
    with translate_errors(engine), begin_write(engine) as connection:
        office = connection.execute(
            select(OFFICES.c.department, OFFICES.c.street_code).where(
                OFFICES.c.office_id == office_id
            )
        ).first()
        department = department or (None if office is None else office.department)
        street_code = street_code or (None if office is None else office.street_code)
        if not department or not street_code:
            problems.append(
                f"office {office_id!r} is not in the store: give its department and street_code"
            )
        if problems:
            msg = "cannot record the consultation: " + "; ".join(problems)
            raise InputError(msg)
        consultation_id = connection.execute(
            insert(CONSULTATIONS)
            .values(
                **values,
                department=department,
                street_code=street_code,
                consulted_at=consulted_at.astimezone(UTC),
            )
            .returning(CONSULTATIONS.c.consultation_id)
        ).scalar_one()
    return int(consultation_id)


def record_street_opinion(
    engine: Engine,
    consultation_id: int,
    *,
    opinion: str,
    opinion_at: datetime,
    opinion_text: str | None = None,
) -> None:
    """Record the street's opinion on a consultation (once).

    Parameters
    ----------
    consultation_id
        The consultation (:func:`record_consultation`).
    opinion
        ``agree``, ``disagree`` or ``conditional``.
    opinion_at
        When the street gave it (timezone-aware, not before the consultation).
    opinion_text
        The street's written opinion (required for ``disagree`` and ``conditional``).

    Raises
    ------
    NotFoundError
        No such consultation.
    ConsultationError
        It was answered already.
    InputError
        An unknown opinion, a missing text, or a bad time.
    """
    problems: list[str] = []
    if opinion not in OPINIONS:
        problems.append(f"opinion {opinion!r} must be one of {', '.join(OPINIONS)}")
    if opinion in ("disagree", "conditional") and not (opinion_text and opinion_text.strip()):
        problems.append(f"a {opinion} opinion needs its text (opinion_text)")
    if not isinstance(opinion_at, datetime) or opinion_at.tzinfo is None:
        problems.append("opinion_at must be a timezone-aware datetime")
    if problems:
        msg = "cannot record the street's opinion: " + "; ".join(problems)
        raise InputError(msg)
    with translate_errors(engine), begin_write(engine) as connection:
        row = connection.execute(
            select(CONSULTATIONS)
            .where(CONSULTATIONS.c.consultation_id == consultation_id)
            .with_for_update()
        ).first()
        if row is None:
            msg = f"no consultation {consultation_id} in the store"
            raise NotFoundError(msg)
        if row.opinion is not None:
            msg = (
                f"consultation {consultation_id} was answered already ({row.opinion} on "
                f"{_local(row.opinion_at)}); a new consultation is needed for a new opinion"
            )
            raise ConsultationError(msg)
        if opinion_at.astimezone(UTC) < row.consulted_at:
            msg = (
                f"the opinion ({_local(opinion_at)}) cannot come before the consultation "
                f"({_local(row.consulted_at)})"
            )
            raise InputError(msg)
        connection.execute(
            update(CONSULTATIONS)
            .where(CONSULTATIONS.c.consultation_id == consultation_id)
            .values(
                opinion=opinion,
                opinion_text=opinion_text,
                opinion_at=opinion_at.astimezone(UTC),
            )
        )


def read_consultations(
    engine: Engine,
    office_id: str | None = None,
    street_code: str | None = None,
    department: str | None = None,
) -> pd.DataFrame:
    """Read consultations, oldest first, optionally filtered.

    Returns
    -------
    pandas.DataFrame
        :data:`CONSULTATION_COLUMNS`, times in UTC (``opinion`` None while unanswered).
    """
    stmt = select(*[CONSULTATIONS.c[c] for c in CONSULTATION_COLUMNS]).order_by(
        CONSULTATIONS.c.consulted_at, CONSULTATIONS.c.consultation_id
    )
    filters = {"office_id": office_id, "street_code": street_code, "department": department}
    for column, value in filters.items():
        if value is not None:
            stmt = stmt.where(CONSULTATIONS.c[column] == value)
    with translate_errors(engine), engine.connect() as connection:
        rows = connection.execute(stmt).all()
    return _frame(rows, CONSULTATION_COLUMNS, ["consulted_at", "opinion_at"])


def check_head_move(engine: Engine, office_id: str, at: datetime) -> dict[str, Any]:
    """Check that an office head may be moved at ``at``: the street was consulted in writing
    and its opinion was recorded at or before ``at``.

    Returns
    -------
    dict
        The latest such consultation (:data:`CONSULTATION_COLUMNS`).

    Raises
    ------
    ConsultationError
        No consultation of the street about this office, or none answered by ``at``.
    """
    at = _aware(at, "at")
    with translate_errors(engine), engine.connect() as connection:
        answered = connection.execute(
            select(*[CONSULTATIONS.c[c] for c in CONSULTATION_COLUMNS])
            .where(
                and_(
                    CONSULTATIONS.c.office_id == office_id,
                    CONSULTATIONS.c.opinion.is_not(None),
                    CONSULTATIONS.c.opinion_at <= at,
                )
            )
            .order_by(CONSULTATIONS.c.opinion_at.desc(), CONSULTATIONS.c.consultation_id.desc())
            .limit(1)
        ).first()
        if answered is not None:
            return dict(answered._mapping)
        pending = connection.execute(
            select(func.count()).where(
                CONSULTATIONS.c.office_id == office_id, CONSULTATIONS.c.consulted_at <= at
            )
        ).scalar_one()
    why = (
        f"the street has not given its opinion on the {pending} consultation(s) about it yet"
        if pending
        else "the department has not consulted the street in writing"
    )
    msg = (
        f"the head of office {office_id} cannot be moved on {_local(at)}: {why}. The five-powers "
        "reform requires the department's written consultation of the street and the street's "
        "opinion before an office head is moved"
    )
    raise ConsultationError(msg)
