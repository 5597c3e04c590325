"""The live feed's queries: what changed in a caller's scope since a cursor.

The command centre's wall display polls these about once a second, so they are built to be
cheap when nothing changed, and correct with any number of server processes (nothing is kept
in memory between two polls: the cursor the client sends back holds all the state).

- Incidents, assignments and status changes all append to the event log
  (:data:`~gridgov.store.models.EVENTS`), whose ``event_id`` only grows. The cursor keeps an
  event id of the whole log and how many events in scope lie in the :data:`LOOKBACK` ids up to
  it. A poll counts the events in scope past that id: none, and the cursor stays (so the
  answer is "not modified", even while other streets are busy); some, and the cursor moves to
  the newest id. On PostgreSQL ids are handed out before commit, so an event can become
  visible after one with a larger id: the poll also counts the window below the cursor again,
  and when that count grew, the answer covers the whole window. (Sending an incident twice is
  harmless: its current row replaces the shown one.) Every count reads an index range of the
  ids between two polls, or of :data:`LOOKBACK` ids, however long the log; a cursor more than
  :data:`ADVANCE` ids behind is moved up even when nothing in scope changed.
- Units change without an event (status by hand, AVL positions, release). Every write of a
  unit's row gives it a larger ``change_seq`` and records the writing transaction in
  ``change_xid`` (a trigger, migrations 0011 and 0013). A write that a database snapshot S
  does not see was made by a transaction running at S or begun after it, whose id is at least
  S's ``xmin`` (its oldest running transaction): the cursor keeps that mark and the count and
  sum of change numbers of the rows in scope at or above it. A later write, even one that
  took its number before the cursor and committed after, adds a row to that index range or
  raises one row's number, so it changes the count or the sum. When nothing is running, the
  range is empty; under load it holds the rows of the transactions around S. Only the rows
  of the range are sent. (On SQLite, numbers follow commit order: the mark is the largest
  number plus one.)
- A dataset load (new areas, units) changes the dataset version: the client starts over.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from sqlalchemy import (
    BigInteger,
    Boolean,
    Engine,
    and_,
    bindparam,
    case,
    exists,
    func,
    literal_column,
    select,
    type_coerce,
)
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import NullType

from gridgov.errors import CredentialRefusedError, InputError
from gridgov.model import UNIT_COLUMNS
from gridgov.store.access import credential_is_live
from gridgov.store.dispatch_rows import ASSIGNMENT_COLUMNS
from gridgov.store.engine import at_or_above, read_statements, translate_errors
from gridgov.store.incident_rows import INCIDENT_COLUMNS
from gridgov.store.models import ASSIGNMENTS, CREDENTIALS, DATASETS, EVENTS, INCIDENTS, UNITS
from gridgov.store.unit_snapshot import _raw_wkb

__all__ = [
    "ADVANCE",
    "LOOKBACK",
    "OVER_STATUSES",
    "FeedScope",
    "LiveChanges",
    "LiveState",
    "dataset_version",
    "parse_cursor",
    "read_live",
    "units_probe",
]

#: Event ids below the cursor in which an event committed out of id order is still caught.
LOOKBACK = 256
#: How far the log may run past a cursor before it is moved up with nothing to send.
ADVANCE = 2048
#: Incident statuses that are over; the same set as ``gridgov.maps.CLOSED_STATUSES`` (the
#: store does not import the map module and its folium).
OVER_STATUSES = ("cancelled", "closed", "evaluated", "rejected")
_WGS84 = "EPSG:4326"
_CURSOR = re.compile(r"^(\d{1,18})\.(\d{1,18})\.(\d{1,18})-(\d{1,18})\.(\d{1,24})\.(\d{1,18})$")
# The cursors handed out before migration 0013 (units by a window of change numbers): a wall
# that sends one after an upgrade starts over instead of being refused at every poll.
_OLD_CURSOR = re.compile(r"^(\d{1,18})\.(\d{1,18})\.(\d{1,18})-(\d{1,24})\.(\d{1,18})$")
#: The dataset of an old cursor: none is ever this, so the poll starts over.
_STARTS_OVER = -1


class FeedScope(Protocol):
    """What a caller may see (:class:`gridgov.service.scope.Scope` is one): keyword filters
    of incidents (``street_code``, ``grid_code``, ``unit_id`` = ever assigned to this unit)
    and of units (``street_code``, ``unit_id``); an empty mapping means the whole district."""

    def incident_filters(self) -> Mapping[str, Any]: ...
    def unit_filters(self) -> Mapping[str, Any]: ...


def _incident_clauses(filters: Mapping[str, Any]) -> list[ColumnElement[bool]]:
    out: list[ColumnElement[bool]] = []
    for name, value in filters.items():
        if name == "unit_id":
            assigned = select(ASSIGNMENTS.c.incident_id).where(ASSIGNMENTS.c.unit_id == value)
            out.append(INCIDENTS.c.incident_id.in_(assigned))
        elif name in ("street_code", "grid_code"):
            out.append(INCIDENTS.c[name] == value)
        else:
            msg = f"unknown incident filter {name!r}"
            raise ValueError(msg)
    return out


def _unit_clauses(filters: Mapping[str, Any]) -> list[ColumnElement[bool]]:
    out: list[ColumnElement[bool]] = []
    for name, value in filters.items():
        if name not in ("street_code", "unit_id"):
            msg = f"unknown unit filter {name!r}"
            raise ValueError(msg)
        out.append(UNITS.c[name] == value)
    return out


@dataclass(frozen=True)
class LiveState:
    """Where the store stands, in one caller's scope."""

    last_event: int
    n_events: int
    units_mark: int  # the snapshot's mark: rows written since are at or above it
    units_n: int  # rows in scope at or above the mark, and the sum of their change numbers
    units_sum: int
    dataset: int

    @property
    def cursor(self) -> str:
        """The opaque text a client sends back (``since``)."""
        return (
            f"{self.last_event}.{self.n_events}.{self.units_mark}-"
            f"{self.units_n}.{self.units_sum}.{self.dataset}"
        )


def parse_cursor(text: str) -> LiveState:
    """A cursor from :attr:`LiveState.cursor`.

    Raises
    ------
    InputError
        Not a cursor this feed hands out.
    """
    match = _CURSOR.match(text.strip())
    if match is not None:
        return LiveState(*(int(g) for g in match.groups()))
    if _OLD_CURSOR.match(text.strip()) is not None:
        return LiveState(0, 0, 0, 0, 0, _STARTS_OVER)
    msg = f"since must be a cursor from an earlier answer of the feed; got {text[:60]!r}"
    raise InputError(msg)


@dataclass(frozen=True)
class LiveChanges:
    """One answer of the feed.

    Attributes
    ----------
    state
        The store now (its cursor goes back to the client).
    changed
        Whether anything changed since the client's cursor; when not, the frames are empty.
    reset
        The client must drop what it shows and take these incidents (first call, or a new
        dataset).
    gdf_incidents
        Incidents to show or update (every open one on a reset; otherwise those with events
        since the cursor, open or not: the client removes the ones that are over).
    gdf_assignments
        The active assignments of those incidents, with routes.
    df_events
        Their whole history (``incident_id``, ``seq``, ``at``, ``action``, ``to_state``,
        ``actor``, ``reason``).
    gdf_units
        The units in scope written since the cursor (every one on a reset), else None.
    gdf_assigned_units
        The units of those assignments, wherever they are commanded (a route from a
        neighbouring street's unit starts at its position).
    """

    state: LiveState
    changed: bool
    reset: bool
    gdf_incidents: gpd.GeoDataFrame
    gdf_assignments: gpd.GeoDataFrame
    df_events: pd.DataFrame
    gdf_units: gpd.GeoDataFrame | None
    gdf_assigned_units: gpd.GeoDataFrame


_EVENT_COLUMNS = ("incident_id", "seq", "at", "action", "to_state", "actor", "reason")
_UNIT_EXTRA = ("busy_incident_id", "position_time")


def _geoframe(rows: list[Any], columns: tuple[str, ...], geoms: Any) -> gpd.GeoDataFrame:
    df = pd.DataFrame([tuple(r) for r in rows], columns=list(columns))
    return gpd.GeoDataFrame(df, geometry=gpd.GeoSeries(geoms, crs=_WGS84), crs=_WGS84)


def _event_count(
    connection: Connection, scope: list[ColumnElement[bool]], low: int, high: int | None = None
) -> tuple[int, int]:
    """The largest event id in scope (incident clauses ``scope``) above ``low`` (and at most
    ``high``), and the count."""
    where = [*scope, EVENTS.c.event_id > low]
    if high is not None:
        where.append(EVENTS.c.event_id <= high)
    stmt = select(func.max(EVENTS.c.event_id), func.count(EVENTS.c.event_id))
    if scope:
        stmt = stmt.select_from(
            EVENTS.join(INCIDENTS, EVENTS.c.incident_id == INCIDENTS.c.incident_id)
        )
    last, count = connection.execute(stmt.where(*where)).one()
    return int(last or 0), int(count or 0)


def _last_event(connection: Connection) -> int:
    # The primary key's largest value: one index probe, whatever the scope.
    return int(connection.execute(select(func.max(EVENTS.c.event_id))).scalar() or 0)


def _event_state(
    connection: Connection, scope: list[ColumnElement[bool]], since: LiveState | None, last: int
) -> tuple[int, int, bool, bool]:
    """The event part of the state, the log's largest id being ``last``: (id, count in the
    window below it, whether events in scope came since ``since``, whether one of them arrived
    late, below its id)."""
    if since is not None:
        _, new = _event_count(connection, scope, since.last_event, last)
        _, window = _event_count(connection, scope, since.last_event - LOOKBACK, since.last_event)
        late = window != since.n_events
        if not new and not late and last - since.last_event <= ADVANCE:
            return since.last_event, since.n_events, False, False
        _, count = _event_count(connection, scope, last - LOOKBACK, last)
        return last, count, bool(new) or late, late
    # First call, or starting over.
    _, count = _event_count(connection, scope, last - LOOKBACK, last)
    return last, count, True, False


def _unit_rows(
    connection: Connection, where: list[ColumnElement[bool]] | ColumnElement[bool]
) -> list[Any]:
    stmt = (
        select(
            *[UNITS.c[c] for c in UNIT_COLUMNS],
            *[UNITS.c[c] for c in _UNIT_EXTRA],
            # The driver's raw WKB: digested as it is, decoded only when sent.
            type_coerce(UNITS.c.position, NullType()).label("position"),
        )
        .where(*(where if isinstance(where, list) else [where]))
        .order_by(UNITS.c.unit_id)
    )
    return list(connection.execute(stmt).all())


def _mark_now(dialect: str) -> Any:
    """The mark of the statement's own snapshot: every unit write it does not see has a
    ``change_xid`` at or above it (see the module's notes)."""
    if dialect == "postgresql":
        return literal_column("pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
    return select(func.coalesce(func.max(UNITS.c.change_seq), 0) + 1).scalar_subquery()


def _written_since(scope: list[ColumnElement[bool]], mark: Any) -> list[ColumnElement[bool]]:
    """The unit rows in scope at or above ``mark``: an index range, the rows of the
    transactions since the mark's snapshot (bounded above: :func:`at_or_above`)."""
    return [*scope, *at_or_above(UNITS.c.change_xid, mark)]


def _count_and_sum_columns() -> tuple[Any, Any]:
    """The count and the sum of change numbers of unit rows: what a cursor keeps and
    compares."""
    return func.count(), func.coalesce(func.sum(UNITS.c.change_seq), 0)


def _count_and_sum_of(where: list[ColumnElement[bool]], name: str) -> Any:
    """:func:`_count_and_sum_columns` of the rows ``where`` selects, for a larger statement:
    a derived table ``name`` of one row (``n``, ``total``), so that the range is scanned once
    for both (two scalar subqueries scanned it twice, at every quiet poll)."""
    count, total = _count_and_sum_columns()
    return select(count.label("n"), total.label("total")).where(*where).subquery(name)


def _count_and_sum(connection: Connection, where: list[ColumnElement[bool]]) -> tuple[int, int]:
    # One statement of its own: both in one scan of the range.
    n, total = connection.execute(select(*_count_and_sum_columns()).where(*where)).one()
    return int(n), int(total)


@functools.cache
def units_probe() -> Any:
    """The statement a process's listener (:mod:`gridgov.store.change_signals`) probes the
    units with on PostgreSQL: its own snapshot's mark, then the count and sum at or above the
    previous probe's mark (bound as ``last``) and at or above its own. A change of the first
    pair since the previous probe is a write that probe did not see, however late it
    committed: the rule a poll applies (:func:`_unit_state`), for the whole store."""
    mark = select(_mark_now("postgresql")).scalar_subquery()
    since_last = _count_and_sum_of(_written_since([], bindparam("last", type_=BigInteger)), "l")
    since_mark = _count_and_sum_of(_written_since([], mark), "m")
    return select(
        mark, since_last.c.n, since_last.c.total, since_mark.c.n, since_mark.c.total
    ).select_from(since_last, since_mark)


def _unit_state(
    connection: Connection, scope: list[ColumnElement[bool]], since: LiveState | None
) -> tuple[int, int, int, bool]:
    """(mark, count and sum at or above it, whether units in scope were written since)."""
    if since is not None:
        n, total = _count_and_sum(connection, _written_since(scope, since.units_mark))
        if (n, total) == (since.units_n, since.units_sum):
            return since.units_mark, since.units_n, since.units_sum, False
    # The mark first, then what lies above it: a write committed in between is counted now
    # and, being above the mark, again at the next poll (sent twice, never missed).
    mark = int(connection.execute(select(_mark_now(connection.dialect.name))).scalar_one())
    n, total = _count_and_sum(connection, _written_since(scope, mark))
    return mark, n, total, True


def _units_frame(rows: list[Any]) -> gpd.GeoDataFrame:
    columns = (*UNIT_COLUMNS, *_UNIT_EXTRA)
    raw = np.array([_raw_wkb(r[-1]) for r in rows], dtype=object)
    geoms = shapely.from_wkb(raw) if len(raw) else np.array([], dtype=object)
    gdf = _geoframe([r[:-1] for r in rows], columns, geoms)
    gdf["on_duty"] = gdf["on_duty"].astype(bool)
    gdf["position_time"] = pd.to_datetime(gdf["position_time"], utc=True)
    return gdf


def _incidents(
    connection: Connection,
    scope: list[ColumnElement[bool]],
    since: LiveState | None,
    late: bool,
) -> gpd.GeoDataFrame:
    where = list(scope)
    if since is None:
        where.append(INCIDENTS.c.status.not_in(list(OVER_STATUSES)))
    else:
        # An event that arrived late (below the cursor): send the whole window.
        low = since.last_event - LOOKBACK if late else since.last_event
        touched = select(EVENTS.c.incident_id).where(EVENTS.c.event_id > low)
        where.append(INCIDENTS.c.incident_id.in_(touched))
    stmt = (
        select(*[INCIDENTS.c[c] for c in INCIDENT_COLUMNS], INCIDENTS.c.geometry)
        .where(*where)
        .order_by(INCIDENTS.c.reported_at, INCIDENTS.c.incident_id)
    )
    rows = connection.execute(stmt).all()
    gdf = _geoframe([r[:-1] for r in rows], INCIDENT_COLUMNS, [r[-1] for r in rows])
    for column in ("reported_at", "created_at", "updated_at"):
        gdf[column] = pd.to_datetime(gdf[column], utc=True)
    gdf["priority"] = gdf["priority"].astype("Int64")
    return gdf


def _assignments(connection: Connection, ids: list[str]) -> gpd.GeoDataFrame:
    rows: list[Any] = []
    # In chunks: SQLite caps the parameters of one statement.
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        stmt = (
            select(*[ASSIGNMENTS.c[c] for c in ASSIGNMENT_COLUMNS], ASSIGNMENTS.c.route)
            .where(and_(ASSIGNMENTS.c.incident_id.in_(chunk), ASSIGNMENTS.c.active.is_(True)))
            .order_by(ASSIGNMENTS.c.assignment_id)
        )
        rows.extend(connection.execute(stmt).all())
    gdf = _geoframe([r[:-1] for r in rows], ASSIGNMENT_COLUMNS, [r[-1] for r in rows])
    gdf["active"] = gdf["active"].astype(bool)
    gdf["time_s"] = gdf["time_s"].astype(float)
    return gdf


def _events(connection: Connection, ids: list[str]) -> pd.DataFrame:
    rows: list[Any] = []
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        stmt = (
            select(*[EVENTS.c[c] for c in _EVENT_COLUMNS])
            .where(EVENTS.c.incident_id.in_(chunk))
            .order_by(EVENTS.c.incident_id, EVENTS.c.seq)
        )
        rows.extend(connection.execute(stmt).all())
    df = pd.DataFrame([tuple(r) for r in rows], columns=list(_EVENT_COLUMNS))
    df["at"] = pd.to_datetime(df["at"], utc=True)
    return df


@functools.cache
def _empty_changes() -> tuple[
    gpd.GeoDataFrame, gpd.GeoDataFrame, pd.DataFrame, None, gpd.GeoDataFrame
]:
    # Built once per process (a GeoDataFrame costs more than the poll's queries); readers
    # never change them.
    return (
        _geoframe([], INCIDENT_COLUMNS, []),
        _geoframe([], ASSIGNMENT_COLUMNS, []),
        pd.DataFrame(columns=list(_EVENT_COLUMNS)),
        None,
        _units_frame([]),
    )


def dataset_version(engine: Engine) -> int:
    """The version of the loaded dataset (areas, units...): the ``dataset`` of the feed's
    answers; 0 before the first load."""
    with translate_errors(engine), engine.connect() as connection:
        return int(connection.execute(select(func.max(DATASETS.c.id))).scalar() or 0)


def _unchanged(
    connection: Connection, scope: FeedScope, since: LiveState, credential_id: str | None
) -> bool:
    """Whether nothing changed in scope since ``since``, in one statement (one snapshot):
    the same counts :func:`_event_state` and :func:`_unit_state` compare, read together; and,
    given ``credential_id``, whether that credential is still live (the same statement, so
    that a poll from a caller this process knows costs one statement).

    Raises
    ------
    CredentialRefusedError
        The credential is unknown, revoked or expired.
    """
    incidents, units = scope.incident_filters(), scope.unit_filters()
    stmt = _unchanged_statement(tuple(sorted(incidents)), tuple(sorted(units)))
    params: dict[str, Any] = {
        "b_last": since.last_event,
        "b_low": since.last_event - LOOKBACK,
        "b_units_mark": since.units_mark,
        # With no credential to check (b_check false) the statement answers "live".
        "b_credential": credential_id,
        "b_check": credential_id is not None,
        "b_now": datetime.now(UTC),
    }
    params.update({f"i_{k}": v for k, v in incidents.items()})
    params.update({f"u_{k}": v for k, v in units.items()})
    row = connection.execute(stmt, params).one()
    dataset, last, new, window, n_units, total, live = (int(v or 0) for v in row)
    if not live:
        raise CredentialRefusedError
    return (
        dataset == since.dataset
        and since.last_event <= last <= since.last_event + ADVANCE
        and new == 0
        and window == since.n_events
        and n_units == since.units_n
        and total == since.units_sum
    )


@functools.cache
def _unchanged_statement(incident_keys: tuple[str, ...], unit_keys: tuple[str, ...]) -> Any:
    """:func:`_unchanged`'s statement for scopes filtering on these keys, built once (the wall
    polls it every second from every display): the scope's values and the cursor's numbers
    are bound."""
    incident_scope = _incident_clauses({k: bindparam(f"i_{k}") for k in incident_keys})
    unit_scope = _unit_clauses({k: bindparam(f"u_{k}") for k in unit_keys})
    last = bindparam("b_last", type_=BigInteger)

    def events(*where: ColumnElement[bool]) -> Any:
        ids = select(EVENTS.c.event_id)
        if incident_scope:
            ids = ids.select_from(
                EVENTS.join(INCIDENTS, EVENTS.c.incident_id == INCIDENTS.c.incident_id)
            )
        return ids.where(*incident_scope, *where)

    written = _count_and_sum_of(
        _written_since(unit_scope, bindparam("b_units_mark", type_=BigInteger)), "w"
    )
    live = select(CREDENTIALS.c.credential_id).where(
        credential_is_live(
            CREDENTIALS.c.__getitem__,
            bindparam("b_credential", type_=CREDENTIALS.c.credential_id.type),
            bindparam("b_now", type_=CREDENTIALS.c.expires_at.type),
        )
    )
    return select(
        select(func.max(DATASETS.c.id)).scalar_subquery(),
        select(func.max(EVENTS.c.event_id)).scalar_subquery(),
        # Whether any event in scope is past the cursor (the first one found answers), and
        # how many lie in the window below it: ids are unique, so at most LOOKBACK, and the
        # limit tells the planner so (its estimate stays small however long the log).
        exists(events(EVENTS.c.event_id > last)),
        select(func.count())
        .select_from(
            events(
                EVENTS.c.event_id > bindparam("b_low", type_=BigInteger), EVENTS.c.event_id <= last
            )
            .limit(LOOKBACK)
            .subquery()
        )
        .scalar_subquery(),
        written.c.n,
        written.c.total,
        case(
            (bindparam("b_check", type_=Boolean).is_(False), 1),
            (exists(live), 1),
            else_=0,
        ),
    ).select_from(written)


def read_live(
    engine: Engine,
    scope: FeedScope,
    since: LiveState | None = None,
    *,
    credential_id: str | None = None,
) -> LiveChanges:
    """What changed in ``scope`` since the cursor ``since`` (everything when None).

    Parameters
    ----------
    engine
        The store.
    scope
        What the caller may see (its incident and unit filters).
    since
        The state of the client's last answer (:func:`parse_cursor`).
    credential_id
        The caller's credential, checked live in the poll's first statement (with ``since``;
        without it, the caller checks it).

    Returns
    -------
    LiveChanges
        With ``changed`` False (and nothing read but the state) when ``since`` is current.

    Raises
    ------
    CredentialRefusedError
        ``credential_id`` is unknown, revoked or expired; nothing was read.
    """
    incident_scope = _incident_clauses(scope.incident_filters())
    unit_scope = _unit_clauses(scope.unit_filters())
    with translate_errors(engine), read_statements(engine).connect() as connection:
        if since is not None and _unchanged(connection, scope, since, credential_id):
            # The wall's usual poll: one statement, no frame.
            return LiveChanges(since, False, False, *_empty_changes())
        # The state first: anything committed after it is sent now or on the next poll,
        # never skipped.
        dataset = int(connection.execute(select(func.max(DATASETS.c.id))).scalar() or 0)
        last_event = _last_event(connection)
        # A new dataset, or a cursor ahead of this log (another store's): start over.
        reset = since is None or since.dataset != dataset or since.last_event > last_event
        last, count, events_changed, late = _event_state(
            connection, incident_scope, None if reset else since, last_event
        )
        umark, un, usum, units_changed = _unit_state(
            connection, unit_scope, None if reset else since
        )
        state = LiveState(last, count, umark, un, usum, dataset)
        if since == state:
            # Nothing changed: no frame is built (the wall polls this every second).
            return LiveChanges(state, False, False, *_empty_changes())
        empty_incidents, empty_assignments, empty_events, _, empty_units = _empty_changes()
        if reset or events_changed:
            gdf_incidents = _incidents(connection, incident_scope, None if reset else since, late)
            ids = gdf_incidents["incident_id"].astype(str).tolist()
            gdf_assignments = _assignments(connection, ids)
            df_events = _events(connection, ids)
            unit_ids = sorted(set(gdf_assignments["unit_id"].astype(str)))
            gdf_assigned = _units_frame(
                [
                    r
                    for start in range(0, len(unit_ids), 500)
                    for r in _unit_rows(
                        connection, UNITS.c.unit_id.in_(unit_ids[start : start + 500])
                    )
                ]
            )
        else:
            gdf_assigned = empty_units
            gdf_incidents, gdf_assignments, df_events = (
                empty_incidents,
                empty_assignments,
                empty_events,
            )
        gdf_units = None
        if reset:
            gdf_units = _units_frame(_unit_rows(connection, unit_scope))
        elif units_changed and since is not None:
            # The rows at or above the cursor's mark: every unit written since, and those the
            # cursor's snapshot saw there already (sent again: a row replaces itself).
            written = _written_since(unit_scope, since.units_mark)
            gdf_units = _units_frame(_unit_rows(connection, written))
    return LiveChanges(
        state, True, reset, gdf_incidents, gdf_assignments, df_events, gdf_units, gdf_assigned
    )
