"""Dispatch against the store: incidents, atomic assignments, and the units' availability.

The decision itself is :func:`gridgov.dispatch.dispatch_incident` (pure). This module gives it
a snapshot of the units and then commits the decision in ONE transaction, so that a unit's
change of status and its assignment are never seen apart, and two dispatchers never take the
same unit:

1. *snapshot*: read the candidate units (available and on duty, plus, for a priority-1 matter,
   the busy ones with the priority of their incident) without locking anything; the units'
   fixed columns (kind, street, office...) are kept per loaded dataset, so each snapshot
   reads only what changes (status, duty, busy incident, position);
2. *decide*: :func:`gridgov.dispatch.dispatch_incident` on that snapshot;
3. *commit*: in one write transaction, lock the incident row(s), then the chosen unit rows
   (PostgreSQL: ``SELECT ... FOR UPDATE SKIP LOCKED``; SQLite: the whole database, taken by
   ``BEGIN IMMEDIATE``), and re-check every chosen unit: still available and on duty, or, for a
   preemption, still busy on the incident it was chosen from. If one is not, or another
   transaction holds it, nothing is written: the transaction rolls back and the dispatch starts
   again at step 1 with those units excluded (recorded in the explanation). Otherwise the units
   become busy, the dispatch and its assignments are inserted, a preempted incident is
   re-queued (a ``requeue`` event), and the incident's ``dispatch`` event is recorded (when at
   least one unit was assigned), all before the one COMMIT.

A partial unique index (one active assignment per unit) backs this up in the database itself.
Incidents are inserted in their own transaction first (:func:`create_incident`, with their
``report`` and ``register`` events, or ``reject`` for a duplicate), so an incident is never
lost: it is ``registered`` until a dispatch commits, and stays so if dispatching fails or finds
no unit. An incident a department returned is dispatched again without the units of the
offices that returned it, unless no other unit of a kind can take it.
"""

from __future__ import annotations

import math
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from shapely.geometry import Point
from sqlalchemy import (
    BindParameter,
    Connection,
    Engine,
    and_,
    bindparam,
    func,
    insert,
    or_,
    select,
    text,
    type_coerce,
    update,
)
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.types import NullType

from gridgov import dispatch
from gridgov.catalog import Catalog, load_catalog
from gridgov.crs import from_wgs84
from gridgov.errors import (
    InputError,
    NotFoundError,
    OutsideDistrictError,
    StoreError,
    UnknownMatterError,
)
from gridgov.model import UnitStatus
from gridgov.network import StraightLine, TravelModel, build_network
from gridgov.roads import SPEEDS_KMH
from gridgov.settings import get_settings
from gridgov.store.engine import begin_write, translate_errors
from gridgov.store.journal import SYSTEM_ACTOR, append_event, build_event, insert_events
from gridgov.store.models import (
    ASSIGNMENTS,
    DATASETS,
    DISPATCHES,
    EVENTS,
    INCIDENTS,
    MATTERS,
    OFFICES,
    UNITS,
)
from gridgov.store.repository import (
    end_active_assignments,
    read_areas,
    read_roads,
)
from gridgov.workflow import OPEN_STATES, Action, Role, State, find_duplicate

#: Incident states the dispatcher works with (:class:`gridgov.workflow.State`). ``registered``:
#: waiting for a dispatch (new, re-queued after a preemption, returned by a department, reopened,
#: or dispatched before without any unit found); ``dispatched`` once a unit is assigned (a
#: partial decision too: the dispatch row keeps ``assigned`` / ``partial`` / ``unassigned``).
PENDING, DISPATCHED = str(State.REGISTERED), str(State.DISPATCHED)
#: States an incident may be dispatched from.
DISPATCHABLE = (PENDING,)
#: States of an incident whose units are out working on it (a preemption can re-queue it).
WORKING = (DISPATCHED, str(State.ACKNOWLEDGED), str(State.ON_SCENE))

#: Columns of :func:`read_incidents` (besides geometry).
INCIDENT_COLUMNS = (
    "incident_id",
    "matter_code",
    "priority",
    "status",
    "reported_at",
    "street_code",
    "community_code",
    "grid_code",
    "microgrid_code",
    "source",
    "created_at",
    "updated_at",
    "duplicate_of",
    "reporter",
    "description",
)
#: Columns of :func:`read_assignments` (besides the route geometry).
ASSIGNMENT_COLUMNS = (
    "assignment_id",
    "dispatch_id",
    "incident_id",
    "unit_id",
    "kind",
    "role",
    "level",
    "rule",
    "time_s",
    "over_max_travel",
    "preempts",
    "route_length_m",
    "active",
    "assigned_at",
    "released_at",
    "release_reason",
)
_WGS84 = "EPSG:4326"
# PostgreSQL's "try again" answers: serialization failure and deadlock detected.
_RETRY_SQLSTATES = frozenset({"40001", "40P01"})
_MAX_ID_LENGTH = 64
#: Rounds of decide-and-commit before a dispatch gives up (dispatch_stored's default).
_MAX_ATTEMPTS = 20
# Namespace of the advisory locks that serialise the duplicate check per matter (PostgreSQL).
_DUPLICATE_LOCK_SPACE = 7_311_003
# Statements run for every report, built once: SQLAlchemy then reuses their cache keys.
_MATTERS = select(MATTERS.c.code, MATTERS.c.priority)
_MAX_DATASET = select(func.max(DATASETS.c.id))
_INSERT_INCIDENT = insert(INCIDENTS)
_INSERT_DISPATCH = insert(DISPATCHES).returning(DISPATCHES.c.dispatch_id)
_IDS: BindParameter[Any] = bindparam("ids", expanding=True)
_LOCK_INCIDENTS = (
    select(INCIDENTS.c.incident_id, INCIDENTS.c.status)
    .where(INCIDENTS.c.incident_id.in_(_IDS))
    .order_by(INCIDENTS.c.incident_id)
    .with_for_update()
)
_LOCK_UNITS = (
    select(
        UNITS.c.unit_id,
        UNITS.c.status,
        UNITS.c.on_duty,
        UNITS.c.busy_incident_id,
        UNITS.c.office_id,
    )
    .where(UNITS.c.unit_id.in_(_IDS))
    .order_by(UNITS.c.unit_id)
    .with_for_update(skip_locked=True)
)
_SET_BUSY = (
    update(UNITS)
    .where(UNITS.c.unit_id.in_(_IDS))
    .values(status=str(UnitStatus.BUSY), busy_incident_id=bindparam("b_busy"))
)
_LAST_END = (
    select(ASSIGNMENTS.c.unit_id, func.max(ASSIGNMENTS.c.released_at))
    .where(ASSIGNMENTS.c.unit_id.in_(_IDS))
    .group_by(ASSIGNMENTS.c.unit_id)
)


class _UnitsTaken(Exception):
    """Raised inside the commit transaction to roll it back: these units are gone."""

    def __init__(self, unit_ids: Sequence[str]) -> None:
        super().__init__(", ".join(unit_ids))
        self.unit_ids = tuple(unit_ids)


# --------------------------------------------------------------------------------------------
# the dispatch context, built once per store
# --------------------------------------------------------------------------------------------


class _NoRoads(StraightLine):
    """The straight-line fallback, saying why it is used."""

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "reason": "no road network is loaded in the store"}


@dataclass
class _Cached:
    version: Any
    catalog: Catalog | None
    ctx: dispatch.DispatchContext | None = None


_CACHE: weakref.WeakKeyDictionary[Engine, _Cached] = weakref.WeakKeyDictionary()
_CACHE_LOCK = threading.Lock()


def _dataset_version(engine: Engine, connection: Connection | None = None) -> Any:
    """Changes whenever a dataset (areas, offices, units, roads, matters) is loaded."""
    if connection is not None:
        return connection.execute(_MAX_DATASET).scalar()
    with translate_errors(engine), engine.connect() as own:
        return own.execute(_MAX_DATASET).scalar()


def travel_from_store(engine: Engine) -> TravelModel:
    """The road network stored in ``engine``, or the straight-line fallback when none is.

    Raises
    ------
    InputError
        The stored roads cannot be built into a network (the message says why).
    """
    gdf_nodes, gdf_links = read_roads(engine)
    if gdf_links.empty:
        return _NoRoads()
    return build_network(gdf_nodes, _with_speeds(gdf_links))


def _with_speeds(gdf_links: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """Links whose speed columns are complete: NULL speeds are taken from the road class."""
    speed_columns = [f"speed_{mode}_kmh" for mode in ("drive", "bike", "walk")]
    missing = gdf_links[speed_columns].isna()
    if not missing.any().any():
        return gdf_links
    if missing.all().all():
        # No speeds stored at all: the network maps road classes to speeds itself.
        return gdf_links.drop(columns=speed_columns)
    out = gdf_links.copy()
    unknown = sorted(set(out.loc[missing.any(axis=1), "road_class"].astype(str)) - set(SPEEDS_KMH))
    if unknown:
        msg = (
            f"stored road links have no speed and an unknown road class ({', '.join(unknown)}); "
            f"known classes: {', '.join(SPEEDS_KMH)}"
        )
        raise InputError(msg)
    for column in speed_columns:
        mode = column.split("_")[1]
        by_class = out["road_class"].map({c: v[mode] for c, v in SPEEDS_KMH.items()})
        out[column] = out[column].fillna(by_class)
    return out


def context_from_store(engine: Engine, catalog: Catalog | None = None) -> dispatch.DispatchContext:
    """The dispatch context of the district held in ``engine``, built once and then reused.

    The areas come from the store, the travel model from its roads
    (:func:`gridgov.network.build_network`), or the straight-line fallback when no roads are
    loaded (its ``describe()`` says so, and so every explanation does). The context is cached
    per engine and rebuilt only after a new dataset is loaded, so a server builds it once.

    Parameters
    ----------
    engine
        The store.
    catalog
        The matters catalogue; :func:`gridgov.catalog.load_catalog` (the configured file)
        when None.

    Raises
    ------
    StoreError
        The store holds no areas.
    """
    version = _dataset_version(engine)
    with _CACHE_LOCK:
        cached = _CACHE.get(engine)
        if (
            cached is not None
            and cached.ctx is not None
            and cached.version == version
            and cached.catalog is catalog
        ):
            return cached.ctx
        gdf_areas = read_areas(engine)
        if gdf_areas.empty:
            msg = "the store holds no areas; load a district first (`gridgov load`)"
            raise StoreError(msg)
        ctx = dispatch.build_context(
            gdf_areas,
            load_catalog() if catalog is None else catalog,
            travel_from_store(engine),
        )
        _CACHE[engine] = _Cached(version=version, catalog=catalog, ctx=ctx)
        return ctx


# --------------------------------------------------------------------------------------------
# incidents
# --------------------------------------------------------------------------------------------


def _check_incident(incident: dispatch.Incident) -> None:
    problems = []
    if not isinstance(incident.incident_id, str) or not incident.incident_id.strip():
        problems.append("incident_id must be a non-empty string")
    elif len(incident.incident_id) > _MAX_ID_LENGTH:
        problems.append(f"incident_id is longer than {_MAX_ID_LENGTH} characters")
    lon, lat = float(incident.lon), float(incident.lat)
    if not (math.isfinite(lon) and math.isfinite(lat) and -180 <= lon <= 180 and -90 <= lat <= 90):
        problems.append(f"({incident.lon}, {incident.lat}) is not a WGS84 longitude/latitude")
    if not isinstance(incident.reported_at, datetime) or incident.reported_at.tzinfo is None:
        problems.append("reported_at must be a timezone-aware datetime")
    if problems:
        msg = f"incident {incident.incident_id!r} cannot be stored: " + "; ".join(problems)
        raise InputError(msg)


def _aware(when: datetime, what: str) -> datetime:
    if not isinstance(when, datetime) or when.tzinfo is None:
        msg = f"{what} must be a timezone-aware datetime, got {when!r}"
        raise InputError(msg)
    return when.astimezone(UTC)


def create_incident(
    engine: Engine,
    incident: dispatch.Incident,
    placement: dispatch.Placement | None = None,
    *,
    source: str | None = None,
    now: datetime | None = None,
    reporter: str | None = None,
    description: str | None = None,
    check_duplicates: bool = True,
) -> str:
    """Store a new incident with its first events, in its own transaction, so it is never lost.

    The ``report`` event is dated ``reported_at``. Then, in the same transaction: a report of
    the same matter within ``settings.duplicate_radius_m`` of an open incident reported at most
    ``settings.duplicate_window_h`` before it is a duplicate: it is stored all the same, linked
    (``duplicate_of``) and rejected (``reject``, category ``duplicate``), and its reporter is
    told the outcome when that incident is closed or cancelled. Any other report is registered
    at once (``register``) when ``settings.auto_register`` is on, and stays ``reported`` for a
    dispatcher otherwise.

    Parameters
    ----------
    engine
        The store.
    incident
        The incident (WGS84, ``reported_at`` timezone-aware).
    placement
        Its codes, when the caller has located it already; dispatch fills them in otherwise.
    source
        Who reported it (``api``, ``cli``, a phone app...), kept as given.
    now
        The creation time (default: the current time).
    reporter
        Who to tell the outcome (an account, a phone number); the report event's actor.
    description
        What the reporter said.
    check_duplicates
        False when the caller knows the report is a distinct incident (a dispatcher entering
        one by hand).

    Returns
    -------
    str
        The incident id (of the duplicate too: it is stored, linked and rejected).

    Raises
    ------
    InputError
        Bad id, point or time, or an incident with this id exists already.
    UnknownMatterError
        The store holds a catalogue and the matter is not in it.
    """
    return _store_report(
        engine,
        incident,
        placement,
        source=source,
        now=now,
        reporter=reporter,
        description=description,
        check_duplicates=check_duplicates,
    ).incident_id


@dataclass(frozen=True)
class _Stored:
    incident_id: str
    state: str
    reason: str | None = None
    duplicate_of: str | None = None


def _store_report(
    engine: Engine,
    incident: dispatch.Incident,
    placement: dispatch.Placement | None,
    *,
    source: str | None,
    now: datetime | None,
    reporter: str | None,
    description: str | None,
    check_duplicates: bool,
) -> _Stored:
    """:func:`create_incident`'s work; returns the state the report ended in."""
    _check_incident(incident)
    now = _aware(now or datetime.now(UTC), "now")
    reported_at = incident.reported_at.astimezone(UTC)
    street_code = None if placement is None else placement.street_code
    row = {
        "incident_id": incident.incident_id,
        "matter_code": incident.matter_code,
        "geometry": Point(float(incident.lon), float(incident.lat)),
        "reported_at": reported_at,
        "status": str(State.REPORTED),
        "street_code": street_code,
        "community_code": None if placement is None else placement.community_code,
        "grid_code": None if placement is None else placement.grid_code,
        "microgrid_code": None if placement is None else placement.microgrid_code,
        "source": source,
        "created_at": now,
        "updated_at": now,
        "reporter": reporter,
        "description": description,
    }
    settings = get_settings()
    report = build_event(
        None,
        incident.incident_id,
        Action.REPORT,
        at=reported_at,
        actor=reporter or source or SYSTEM_ACTOR,
        role=Role.REPORTER if reporter else Role.SYSTEM,
        street_code=street_code,
        data={"source": source} if source else None,
    )
    with translate_errors(engine):
        try:
            with begin_write(engine) as connection:
                matters = dict(connection.execute(_MATTERS).all())
                if matters and incident.matter_code not in matters:
                    raise UnknownMatterError(incident.matter_code)
                row["priority"] = matters.get(incident.matter_code)
                master = (
                    _find_duplicate(connection, incident, reported_at) if check_duplicates else None
                )
                if master is not None and master[0] == incident.incident_id:
                    # The id is taken by an open incident nearby (itself): not a duplicate.
                    raise _exists_already(incident.incident_id)
                row["duplicate_of"] = None if master is None else master[0]
                events = [report]
                outcome = _Stored(incident.incident_id, str(State.REPORTED))
                if master is not None:
                    master_id, distance_m = master
                    rejected = build_event(
                        report,
                        incident.incident_id,
                        Action.REJECT,
                        at=now,
                        clamp=True,
                        reason=(
                            f"duplicate of {master_id}: the same matter {distance_m:.0f} m away "
                            f"(within {settings.duplicate_radius_m:g} m and "
                            f"{settings.duplicate_window_h:g} h)"
                        ),
                        data={
                            "category": "duplicate",
                            "duplicate_of": master_id,
                            "distance_m": round(distance_m, 1),
                        },
                    )
                    events.append(rejected)
                    outcome = _Stored(
                        incident.incident_id, str(State.REJECTED), rejected.reason, master_id
                    )
                elif settings.auto_register:
                    events.append(
                        build_event(
                            report, incident.incident_id, Action.REGISTER, at=now, clamp=True
                        )
                    )
                    outcome = _Stored(incident.incident_id, str(State.REGISTERED))
                # The incident is new (its id is the primary key: a second insert fails with
                # IntegrityError, reported below), so its first events need no reading back:
                # it is inserted in its final state, then its events at once.
                row["status"] = str(events[-1].to_state)
                row["updated_at"] = events[-1].at
                connection.execute(_INSERT_INCIDENT, row)
                insert_events(connection, events)
        except IntegrityError as exc:
            raise _exists_already(incident.incident_id) from exc
    return outcome


@dataclass(frozen=True)
class Report:
    """What became of a report: its state, and the dispatch decision when it was dispatched."""

    incident_id: str
    state: str
    placement: dispatch.Placement
    decision: dispatch.Decision | None = None
    duplicate_of: str | None = None
    reason: str | None = None


def report_incident(
    engine: Engine,
    ctx: dispatch.DispatchContext,
    incident: dispatch.Incident,
    *,
    auto_dispatch: bool = True,
    source: str | None = None,
    now: datetime | None = None,
    reporter: str | None = None,
    description: str | None = None,
    check_duplicates: bool = True,
    actor: str = SYSTEM_ACTOR,
    role: Role | str = Role.SYSTEM,
) -> Report:
    """Take a report in: check it, store it with its first events, and dispatch it.

    This is the one intake path (CLI, API and Open311 all use it). The matter and the point
    are checked before anything is stored (unknown matter, outside the district), then
    :func:`create_incident` stores it. A registered report is dispatched at once unless
    ``auto_dispatch`` is off; a duplicate, or a report waiting to be registered, is not.

    Raises
    ------
    UnknownMatterError, OutsideDistrictError, InputError
        Nothing was stored.
    """
    now = _aware(now or datetime.now(UTC), "now")
    ctx.catalog.get(incident.matter_code)
    placement = dispatch.locate_incident(incident, ctx)
    stored = _store_report(
        engine,
        incident,
        placement,
        source=source,
        now=now,
        reporter=reporter,
        description=description,
        check_duplicates=check_duplicates,
    )
    if stored.state != PENDING or not auto_dispatch:
        return Report(
            incident.incident_id,
            stored.state,
            placement,
            None,
            stored.duplicate_of,
            stored.reason,
        )
    # What dispatch_stored would read back: the incident as stored (UTC time, float point);
    # a brand-new incident has no return events, so no office is left out.
    stored_incident = dispatch.Incident(
        incident_id=incident.incident_id,
        matter_code=incident.matter_code,
        lon=float(incident.lon),
        lat=float(incident.lat),
        reported_at=incident.reported_at.astimezone(UTC),
    )
    decision = _dispatch_attempts(
        engine,
        ctx,
        stored_incident,
        _Returned(),
        now=now,
        max_attempts=_MAX_ATTEMPTS,
        routes=True,
        allow_preemption=True,
        actor=actor,
        role=role,
        placement=placement,
    )
    state = DISPATCHED if decision.assignments else PENDING
    return Report(incident.incident_id, state, placement, decision, None, None)


def _exists_already(incident_id: str) -> InputError:
    msg = f"incident {incident_id!r} exists already; nothing was changed"
    return InputError(msg)


def _metric_xy(lon: Any, lat: Any) -> tuple[np.ndarray, np.ndarray]:
    x, y = from_wgs84(lon, lat, get_settings().metric_crs)
    return np.asarray(x, dtype=float), np.asarray(y, dtype=float)


def _duplicate_candidates() -> Any:
    return select(
        INCIDENTS.c.incident_id,
        INCIDENTS.c.matter_code,
        INCIDENTS.c.reported_at,
        INCIDENTS.c.status,
        _raw_position(INCIDENTS.c.geometry),
    ).where(
        INCIDENTS.c.matter_code == bindparam("matter"),
        INCIDENTS.c.status.in_([str(s) for s in OPEN_STATES]),
        INCIDENTS.c.reported_at <= bindparam("until", type_=INCIDENTS.c.reported_at.type),
        INCIDENTS.c.reported_at >= bindparam("since", type_=INCIDENTS.c.reported_at.type),
    )


def _find_duplicate(
    connection: Connection, incident: dispatch.Incident, reported_at: datetime
) -> tuple[str, float] | None:
    """The open incident this report duplicates and how far it is (metres), or None.

    Distances are planar in the metric CRS (UTM 48N) on both backends, so SQLite and PostGIS
    give the same answer; the database only narrows the candidates to the same matter, open
    states and the time window.
    """
    settings = get_settings()
    window = timedelta(hours=settings.duplicate_window_h)
    if connection.dialect.name == "postgresql":
        # Two reports of one matter at once must not both miss each other (READ COMMITTED sees
        # neither uncommitted row): reports of the same matter take turns until commit. SQLite
        # serialises every writer with BEGIN IMMEDIATE already.
        connection.execute(
            text("SELECT pg_advisory_xact_lock(CAST(:space AS integer), hashtext(:matter))"),
            {"space": _DUPLICATE_LOCK_SPACE, "matter": incident.matter_code},
        )
    rows = connection.execute(
        _DUPLICATE_CANDIDATES,
        {
            "matter": incident.matter_code,
            "until": reported_at,
            "since": reported_at - window,
        },
    ).all()
    if not rows:
        return None
    lon, lat = _xy([r.position for r in rows])
    # The report's own point goes last, in the same (one) transformation.
    xs, ys = _metric_xy([*lon.tolist(), float(incident.lon)], [*lat.tolist(), float(incident.lat)])
    x0, y0 = xs[-1:], ys[-1:]
    xs, ys = xs[:-1], ys[:-1]
    # Only incidents within the radius can be the answer (find_duplicate computes the same
    # distances and takes the nearest of those): the others need no frame.
    near = np.flatnonzero(np.hypot(xs - x0[0], ys - y0[0]) <= settings.duplicate_radius_m)
    if not len(near):
        return None
    rows = [rows[i] for i in near.tolist()]
    xs, ys = xs[near], ys[near]
    open_incidents = pd.DataFrame(
        {
            "incident_id": [r.incident_id for r in rows],
            "matter_code": [r.matter_code for r in rows],
            "x_m": xs,
            "y_m": ys,
            "reported_at": pd.to_datetime([r.reported_at for r in rows], utc=True),
            "status": [r.status for r in rows],
        }
    )
    master = find_duplicate(
        incident.matter_code,
        float(x0[0]),
        float(y0[0]),
        reported_at,
        open_incidents,
        radius_m=settings.duplicate_radius_m,
        window=window,
    )
    if master is None:
        return None
    hit = open_incidents.loc[open_incidents["incident_id"] == master].iloc[0]
    return master, float(np.hypot(hit["x_m"] - x0[0], hit["y_m"] - y0[0]))


def _incident_from_row(row: Any) -> dispatch.Incident:
    geom = row.geometry
    return dispatch.Incident(
        incident_id=row.incident_id,
        matter_code=row.matter_code,
        lon=float(shapely.get_x(geom)),
        lat=float(shapely.get_y(geom)),
        reported_at=row.reported_at,
    )


def _read_incident_row(connection: Connection, incident_id: str) -> Any:
    row = connection.execute(
        select(INCIDENTS).where(INCIDENTS.c.incident_id == incident_id)
    ).first()
    if row is None:
        msg = f"no incident {incident_id!r} in the store"
        raise NotFoundError(msg)
    return row


def _not_dispatchable(incident_id: str, status: str) -> InputError:
    hint = {
        str(State.REPORTED): "register it first",
        str(State.REJECTED): "it was rejected",
    }.get(status, "only a return, re-queue or reopen puts it back in the queue")
    msg = (
        f"incident {incident_id!r} is {status}; only {' or '.join(DISPATCHABLE)} incidents are "
        f"dispatched ({hint})"
    )
    return InputError(msg)


# --------------------------------------------------------------------------------------------
# dispatching
# --------------------------------------------------------------------------------------------


@dataclass
class _Attempts:
    """What happened on the way to a committed decision."""

    count: int = 0
    taken: list[str] = field(default_factory=list)
    retried_errors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _UnitStatics:
    """The units' columns that change only when a dataset is loaded, one row per unit.

    Read once per dataset version and kept per engine (:data:`_STATICS`); a dispatch then
    reads only what changes between loads (status, duty, busy incident, position).
    """

    version: Any
    index: dict[str, int]  # unit id -> row
    rank: np.ndarray  # place of each id in str order (ties cannot happen: ids are unique)
    kind: np.ndarray
    street: np.ndarray
    mode: np.ndarray
    grid: np.ndarray
    office_lon: np.ndarray  # the office's position (NaN: no office, or it has no position)
    office_lat: np.ndarray


_STATICS: weakref.WeakKeyDictionary[Engine, _UnitStatics] = weakref.WeakKeyDictionary()
# A snapshot whose dataset version differs from the statics' is read again (a load committed
# in between); loads are rare maintenance actions, so a few rounds always settle it.
_SNAPSHOT_ROUNDS = 5
_VERSION = select(func.max(DATASETS.c.id)).scalar_subquery().label("version")


def _raw_position(column: Any) -> Any:
    # The driver's raw (hex) WKB, decoded in one vectorised call: per-row decoding was most of
    # a dispatch's time with a thousand grid workers.
    return type_coerce(column, NullType()).label("position")


_STATICS_UNITS = select(
    _VERSION,
    UNITS.c.unit_id,
    UNITS.c.kind,
    UNITS.c.street_code,
    UNITS.c.travel_mode,
    UNITS.c.grid_code,
    UNITS.c.office_id,
).order_by(UNITS.c.unit_id)
_STATICS_OFFICES = select(_VERSION, OFFICES.c.office_id, _raw_position(OFFICES.c.position))
_DUPLICATE_CANDIDATES = _duplicate_candidates()


def _strs(values: Sequence[Any]) -> np.ndarray:
    return np.array([None if v is None else str(v) for v in values], dtype=object)


# Little-endian 2-D WKB points: (geometry type, bytes before x) of plain WKB and of PostGIS's
# EWKB with an SRID (type flag 0x20000000, then the 4-byte SRID).
_POINT_LAYOUTS = {21: (1, 5), 25: (0x20000001, 9)}


def _xy(raw: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """Longitudes and latitudes of raw WKB points (NaN where missing or empty)."""
    if not raw:
        return np.zeros(0), np.zeros(0)
    fast = _xy_points(raw)
    if fast is not None:
        return fast
    values = np.empty(len(raw), dtype=object)
    values[:] = raw
    try:
        geoms = shapely.from_wkb(values)
    except TypeError:  # memoryviews (some drivers' blobs): converted one by one
        geoms = shapely.from_wkb(np.array([_raw_wkb(v) for v in raw], dtype=object))
    geoms[shapely.is_empty(geoms)] = None  # GEOS refuses the coordinates of an empty point
    return (
        np.asarray(shapely.get_x(geoms), dtype=float),
        np.asarray(shapely.get_y(geoms), dtype=float),
    )


def _xy_points(raw: Sequence[Any]) -> tuple[np.ndarray, np.ndarray] | None:
    """:func:`_xy` read straight from the bytes when every value is a little-endian 2-D point
    of one layout (what both backends store); None otherwise (then GEOS decodes them).

    Decoding a thousand points through GEOS took longer than the rest of a unit snapshot.
    """
    present = np.array([v is not None for v in raw], dtype=bool)
    values = [v for v in raw if v is not None]
    if not values:
        return np.full(len(raw), np.nan), np.full(len(raw), np.nan)
    first = values[0]
    if isinstance(first, str) and all(type(v) is str for v in values):
        try:
            buf = bytes.fromhex("".join(values))
        except ValueError:
            return None
        size = len(first) // 2
    elif isinstance(first, bytes) and all(type(v) is bytes for v in values):
        buf, size = b"".join(values), len(first)
    else:
        return None
    layout = _POINT_LAYOUTS.get(size)
    if layout is None or len(buf) != size * len(values):
        return None
    rows = np.frombuffer(buf, dtype=np.uint8).reshape(len(values), size)
    kind = rows[:, 1:5].copy().view("<u4").ravel()
    if not (np.all(rows[:, 0] == 1) and np.all(kind == layout[0])):
        return None
    start = layout[1]
    lon, lat = np.full(len(raw), np.nan), np.full(len(raw), np.nan)
    lon[present] = rows[:, start : start + 8].copy().view("<f8").ravel()
    lat[present] = rows[:, start + 8 : start + 16].copy().view("<f8").ravel()
    return lon, lat


def _read_statics(connection: Connection) -> _UnitStatics | None:
    """The statics as stored now; None when a load committed between the two reads."""
    units = connection.execute(_STATICS_UNITS).all()
    offices = connection.execute(_STATICS_OFFICES).all()
    versions = {r.version for r in units} | {r.version for r in offices}
    if len(versions) > 1:
        return None
    version = versions.pop() if versions else _dataset_version(connection.engine, connection)
    office_x, office_y = _xy([r.position for r in offices])
    office_row = {r.office_id: i for i, r in enumerate(offices)}
    at_office = np.array([office_row.get(r.office_id, -1) for r in units], dtype=np.int64)
    has_office = at_office >= 0
    office_lon, office_lat = np.full(len(units), np.nan), np.full(len(units), np.nan)
    office_lon[has_office] = office_x[at_office[has_office]]
    office_lat[has_office] = office_y[at_office[has_office]]
    ids = [str(r.unit_id) for r in units]
    rank = np.empty(len(ids), dtype=np.int64)
    rank[np.argsort(np.array(ids, dtype=object).astype(str), kind="stable")] = np.arange(len(ids))
    return _UnitStatics(
        version=version,
        index={u: i for i, u in enumerate(ids)},
        rank=rank,
        kind=_strs([r.kind for r in units]),
        street=_strs([r.street_code for r in units]),
        mode=_strs([r.travel_mode for r in units]),
        grid=_strs([r.grid_code for r in units]),
        office_lon=office_lon,
        office_lat=office_lat,
    )


def _unit_statics(engine: Engine, connection: Connection, version: Any) -> _UnitStatics | None:
    """The statics of dataset ``version`` (read on ``connection`` unless cached); None when the
    stored ones are of another version by now (the caller reads its snapshot again)."""
    with _CACHE_LOCK:
        cached = _STATICS.get(engine)
    if cached is not None and cached.version == version:
        return cached
    statics = _read_statics(connection)
    if statics is None:
        return None
    with _CACHE_LOCK:
        _STATICS[engine] = statics
    return statics if statics.version == version else None


_SNAPSHOTS: dict[tuple[tuple[str, ...], bool], Any] = {}


def _snapshot_statement(kinds: Sequence[str], with_busy: bool) -> Any:
    """The snapshot query of these kinds, built once (SQLAlchemy then reuses its cache key)."""
    key = (tuple(sorted(kinds)), with_busy)
    stmt = _SNAPSHOTS.get(key)
    if stmt is not None:
        return stmt
    units, incidents = UNITS, INCIDENTS
    status_ok = units.c.status == str(UnitStatus.AVAILABLE)
    if with_busy:
        status_ok = or_(status_ok, units.c.status == str(UnitStatus.BUSY))
    stmt = (
        select(
            _VERSION,
            units.c.unit_id,
            units.c.status,
            units.c.on_duty,
            units.c.busy_incident_id,
            incidents.c.priority.label("busy_priority"),
            # As the driver returns it: most units of a snapshot have no time to convert
            # (see _times), and a per-row result processor cost more than the rest of a row.
            type_coerce(units.c.position_time, NullType()).label("position_time"),
            _raw_position(units.c.position),
        )
        .select_from(
            units.outerjoin(incidents, units.c.busy_incident_id == incidents.c.incident_id)
        )
        .where(units.c.kind.in_(list(key[0])), units.c.on_duty.is_(True), status_ok)
        .order_by(units.c.unit_id)
    )
    _SNAPSHOTS[key] = stmt
    return stmt


def _snapshot_pool(
    engine: Engine,
    ctx: dispatch.DispatchContext,
    kinds: Sequence[str],
    with_busy: bool,
    now: datetime,
) -> Any:
    """The units dispatch may use, as the dispatcher's pool of arrays.

    Available units on duty; with ``with_busy`` also the busy ones, each with the incident it
    works on and that incident's priority, which is what preemption needs. Positions go
    through the same fallbacks as :func:`gridgov.dispatch.prepare_units`: a stale or missing
    one is replaced by the unit's office, or the unit is left out, and the note says which.
    """
    stmt = _snapshot_statement(kinds, with_busy)
    for _ in range(_SNAPSHOT_ROUNDS):
        # One connection (one pool checkout) for everything this attempt reads.
        with translate_errors(engine), engine.connect() as connection:
            rows = connection.execute(stmt).all()
            if not rows:
                return _pool(ctx, None, [], now, connection.dialect)
            statics = _unit_statics(engine, connection, rows[0].version)
            dialect = connection.dialect
        if statics is None:
            continue
        try:
            return _pool(ctx, statics, rows, now, dialect)
        except KeyError:
            # A unit the cached statics do not know: units were written without a dataset
            # entry (by hand, in SQL). Read the statics afresh rather than fail.
            with _CACHE_LOCK:
                if _STATICS.get(engine) is statics:
                    del _STATICS[engine]
    msg = "the units were reloaded again and again while dispatching; try again"
    raise StoreError(msg)


def _times(values: Sequence[Any], dialect: Any) -> list[datetime | None]:
    """Raw ``position_time`` values as the column type returns them (UTC-aware, or None)."""
    column_type = UNITS.c.position_time.type.dialect_impl(dialect)
    process = column_type.result_processor(dialect, None)
    if process is None:  # pragma: no cover - UTCDateTime always converts
        return list(values)
    return [None if v is None else process(v) for v in values]


def _pool(
    ctx: dispatch.DispatchContext,
    statics: _UnitStatics | None,
    rows: Sequence[Any],
    now: datetime,
    dialect: Any,
) -> Any:
    n = len(rows)
    # Columns of the snapshot's rows (see _snapshot_statement), transposed in one go.
    _, unit_ids, status, on_duty, busy, priority, times, positions = (
        zip(*rows, strict=True) if n else ((),) * 8
    )
    ids = _objects(unit_ids)
    at = np.array([statics.index[u] for u in unit_ids] if statics else [], dtype=np.int64)
    lon, lat = _xy(positions)
    office_lon = statics.office_lon[at] if statics else np.zeros(0)
    office_lat = statics.office_lat[at] if statics else np.zeros(0)
    stamps = _times(times, dialect)
    lon, lat, note = _effective_positions(lon, lat, stamps, office_lon, office_lat, now)
    empty = np.zeros(0, dtype=object)
    return dispatch.UnitPool.from_arrays(
        ctx,
        ids=ids,
        rank=statics.rank[at] if statics else np.zeros(0, dtype=np.int64),
        kind=statics.kind[at] if statics else empty,
        street=statics.street[at] if statics else empty,
        mode=statics.mode[at] if statics else empty,
        grid=statics.grid[at] if statics else empty,
        status=_objects(status),
        on_duty=np.array(on_duty, dtype=bool).reshape(n),
        lon=lon,
        lat=lat,
        note=note,
        busy_incident=_objects(busy),
        busy_priority=np.array(
            [np.nan if p is None else float(p) for p in priority], dtype=float
        ).reshape(n),
    )


def _objects(values: Sequence[Any]) -> np.ndarray:
    """A 1-d object array of ``values`` (str or None, as the driver returned them)."""
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def _effective_positions(
    lon: np.ndarray,
    lat: np.ndarray,
    times: Sequence[datetime | None],
    office_lon: np.ndarray,
    office_lat: np.ndarray,
    now: datetime,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`gridgov.dispatch.prepare_units` on arrays: the position dispatch uses, and why.

    A fresh (within ``settings.position_max_age_min``) or static (no time) position is kept;
    a stale or missing one falls back to the office, or the unit is left out (NaN).
    """
    max_age = timedelta(minutes=get_settings().position_max_age_min)
    n = len(lon)
    now = now.astimezone(UTC)
    stale = np.array([t is not None and now - t > max_age for t in times], dtype=bool)
    keep = np.isfinite(lon) & np.isfinite(lat) & ~stale
    has_office = np.isfinite(office_lon) & np.isfinite(office_lat)
    out_lon = np.where(keep, lon, np.where(has_office, office_lon, np.nan)).reshape(n)
    out_lat = np.where(keep, lat, np.where(has_office, office_lat, np.nan)).reshape(n)
    note = np.full(n, None, dtype=object)
    for i in np.flatnonzero(~keep).tolist():
        t = times[i]
        if stale[i] and t is not None:
            what = f"stale position ({t.astimezone(UTC).strftime('%Y-%m-%dT%H:%MZ')})"
        else:
            what = "no position"
        note[i] = f"{what}: office position used" if has_office[i] else f"{what}: left out"
    return out_lon, out_lat, note


def _raw_wkb(value: Any) -> bytes | str | None:
    if value is None or isinstance(value, bytes | str):
        return value
    return bytes(value)  # memoryview from some drivers


def _decide(
    engine: Engine,
    ctx: dispatch.DispatchContext,
    incident: dispatch.Incident,
    *,
    now: datetime,
    exclude: frozenset[str],
    routes: bool,
    allow_preemption: bool,
    placement: dispatch.Placement | None = None,
) -> dispatch.Decision:
    """Snapshot the units and let the pure dispatcher decide (nothing is locked here).

    ``placement`` is the incident's, when the caller has located it already.
    """
    matter = ctx.catalog.get(incident.matter_code)
    kinds = [str(k) for k in matter.required_kinds]
    with_busy = allow_preemption and matter.priority == 1
    pool = _snapshot_pool(engine, ctx, kinds, with_busy, now)
    if placement is None:
        placement = dispatch.locate_incident(incident, ctx)
    try:
        return dispatch.dispatch_pool(
            incident,
            pool,
            ctx,
            matter,
            placement,
            exclude=exclude,
            routes=routes,
            allow_preemption=allow_preemption,
        )
    except (OutsideDistrictError, UnknownMatterError):
        raise
    except InputError as exc:
        # The point is known and inside the district, but the road network cannot serve it
        # (farther than max_snap_m from the roads its units drive on). That is an answer, not
        # a lost incident: recorded as unassigned, with the reason, for a human to handle.
        return _refused(incident, ctx, matter, str(exc))


def _refused(
    incident: dispatch.Incident, ctx: dispatch.DispatchContext, matter: Any, reason: str
) -> dispatch.Decision:
    return dispatch.Decision(
        incident=incident,
        matter_code=matter.code,
        priority=matter.priority,
        placement=dispatch.locate_incident(incident, ctx),
        assignments=(),
        unfilled=tuple(matter.required_kinds),
        level=None,
        explanation={
            "method": "single",
            "travel_model": ctx.describe_travel(),
            "refused": reason,
        },
    )


def decide_stored(
    engine: Engine,
    ctx: dispatch.DispatchContext,
    incident: dispatch.Incident,
    *,
    now: datetime,
    routes: bool = True,
    allow_preemption: bool = True,
) -> dispatch.Decision:
    """What :func:`dispatch_stored` would decide for ``incident`` now: a dry run.

    The same snapshot (busy units with their incident's priority, for preemption), the same
    position fallbacks and the same refusal of points too far from the roads; nothing is
    stored and nothing is locked, so a real dispatch a moment later may choose differently.
    ``incident`` need not be stored.
    """
    return _decide(
        engine,
        ctx,
        incident,
        now=_aware(now, "now"),
        exclude=frozenset(),
        routes=routes,
        allow_preemption=allow_preemption,
    )


def dispatch_stored(
    engine: Engine,
    ctx: dispatch.DispatchContext,
    incident_id: str,
    *,
    now: datetime,
    max_attempts: int = _MAX_ATTEMPTS,
    routes: bool = True,
    allow_preemption: bool = True,
    actor: str = SYSTEM_ACTOR,
    role: Role | str = Role.SYSTEM,
) -> dispatch.Decision:
    """Dispatch a stored incident and commit the decision atomically.

    See the module docstring for the snapshot / decide / lock-and-check / commit cycle. The
    incident ends ``dispatched`` (with a ``dispatch`` event) when at least one unit is
    assigned, and stays ``registered`` when none is; its dispatch row and explanation are
    written in every case. Units taken meanwhile by another dispatcher are excluded and the
    decision is made again (the explanation's ``store`` part lists them). The units of offices
    that returned the incident are left out too, unless that leaves a kind unfilled: then they
    are candidates again for that kind (the explanation's ``returned`` part says which).

    Parameters
    ----------
    engine
        The store.
    ctx
        The dispatch context (:func:`context_from_store`).
    incident_id
        A stored incident (:func:`create_incident`) that is ``registered``.
    now
        The dispatch time (timezone-aware): positions older than the configured maximum age
        are stale, and the assignments start at this time.
    max_attempts
        Rounds of decide-and-commit before giving up (the incident then stays as it was).
    routes
        Store each assignment's route geometry.
    allow_preemption
        Let a priority-1 matter take a unit busy on a low-priority incident.
    actor, role
        Recorded on the dispatch event (default: the system).

    Returns
    -------
    gridgov.dispatch.Decision
        The decision that was committed.

    Raises
    ------
    NotFoundError
        No such incident.
    InputError
        The incident is not dispatchable (already dispatched); nothing was written.
    OutsideDistrictError
        It lies outside the district; nothing was written and it stays registered. (A point
        inside but too far from the roads is not an error: its dispatch is committed as
        ``unassigned`` with the reason in ``explanation["refused"]``.)
    UnknownMatterError
        Its matter is not in the catalogue.
    StoreError
        Every attempt found its units taken, or the database failed.
    """
    now = _aware(now, "now")
    if max_attempts < 1:
        msg = f"max_attempts must be at least 1, got {max_attempts}"
        raise InputError(msg)
    with translate_errors(engine), engine.connect() as connection:
        row = _read_incident_row(connection, incident_id)
        if row.status not in DISPATCHABLE:
            raise _not_dispatchable(incident_id, row.status)
        returned = _returned_units(connection, incident_id)
    return _dispatch_attempts(
        engine,
        ctx,
        _incident_from_row(row),
        returned,
        now=now,
        max_attempts=max_attempts,
        routes=routes,
        allow_preemption=allow_preemption,
        actor=actor,
        role=role,
    )


def _dispatch_attempts(
    engine: Engine,
    ctx: dispatch.DispatchContext,
    incident: dispatch.Incident,
    returned: _Returned,
    *,
    now: datetime,
    max_attempts: int,
    routes: bool,
    allow_preemption: bool,
    actor: str,
    role: Role | str,
    placement: dispatch.Placement | None = None,
) -> dispatch.Decision:
    """:func:`dispatch_stored`'s decide-and-commit rounds, for an incident known registered."""
    incident_id = incident.incident_id
    attempts = _Attempts()
    excluded: set[str] = set()
    while attempts.count < max_attempts:
        attempts.count += 1
        decision = _decide_without_returned(
            engine,
            ctx,
            incident,
            returned,
            now=now,
            exclude=frozenset(excluded),
            routes=routes,
            allow_preemption=allow_preemption,
            placement=placement,
        )
        try:
            _commit(engine, decision, now, attempts, actor=actor, role=role)
        except _UnitsTaken as taken:
            attempts.taken.extend(taken.unit_ids)
            excluded.update(taken.unit_ids)
            continue
        except IntegrityError as exc:  # pragma: no cover - the locks above prevent it
            msg = f"the database refused the dispatch of {incident_id!r}: {exc.orig}"
            raise StoreError(msg) from exc
        except DBAPIError as exc:
            sqlstate = getattr(exc.orig, "sqlstate", None)
            if sqlstate in _RETRY_SQLSTATES:
                # PostgreSQL gave up on this transaction (deadlock, serialisation): try again.
                attempts.retried_errors.append(str(sqlstate))
                continue
            with translate_errors(engine):
                raise
        return decision
    msg = (
        f"incident {incident_id!r} was not dispatched after {attempts.count} attempt(s): "
        f"its units kept being taken by other dispatchers ({', '.join(attempts.taken)}); "
        "it stays registered"
    )
    raise StoreError(msg)


@dataclass(frozen=True)
class _Returned:
    """Offices that returned an incident, and their units (by kind)."""

    offices: tuple[str, ...] = ()
    units: dict[str, str] = field(default_factory=dict)  # unit id -> kind


def _returned_units(connection: Connection, incident_id: str) -> _Returned:
    offices = sorted(
        {
            r[0]
            for r in connection.execute(
                select(EVENTS.c.office_id).where(
                    EVENTS.c.incident_id == incident_id,
                    EVENTS.c.action == str(Action.RETURN),
                    EVENTS.c.office_id.is_not(None),
                )
            )
        }
    )
    if not offices:
        return _Returned()
    units = dict(
        connection.execute(
            select(UNITS.c.unit_id, UNITS.c.kind).where(UNITS.c.office_id.in_(offices))
        ).all()
    )
    return _Returned(offices=tuple(offices), units=units)


def _decide_without_returned(
    engine: Engine,
    ctx: dispatch.DispatchContext,
    incident: dispatch.Incident,
    returned: _Returned,
    *,
    now: datetime,
    exclude: frozenset[str],
    routes: bool,
    allow_preemption: bool,
    placement: dispatch.Placement | None = None,
) -> dispatch.Decision:
    """Decide with the returning offices' units left out, unless a kind then finds nobody."""
    if not returned.offices:
        return _decide(
            engine,
            ctx,
            incident,
            now=now,
            exclude=exclude,
            routes=routes,
            allow_preemption=allow_preemption,
            placement=placement,
        )
    kwargs: dict[str, Any] = {"now": now, "routes": routes, "allow_preemption": allow_preemption}
    decision = _decide(engine, ctx, incident, exclude=exclude | set(returned.units), **kwargs)
    unfilled = {str(k) for k in decision.unfilled}
    readmitted = sorted({k for k in returned.units.values() if k in unfilled})
    if readmitted:
        # No other office can take these kinds: the returning office is asked again rather
        # than the incident left without anyone.
        keep_out = {u for u, k in returned.units.items() if k not in readmitted}
        decision = _decide(engine, ctx, incident, exclude=exclude | keep_out, **kwargs)
    excluded_units = sorted(u for u, k in returned.units.items() if k not in readmitted)
    note = (
        f"the units of {', '.join(returned.offices)} (which returned this incident) were left out"
    )
    if readmitted:
        note += (
            f", except for {', '.join(readmitted)}: no other unit of that kind could take it, "
            "so the returning office's units were candidates again"
        )
    decision.explanation["returned"] = {
        "offices": list(returned.offices),
        "excluded_units": excluded_units,
        "readmitted_kinds": readmitted,
        "note": note,
    }
    return decision


def _commit(
    engine: Engine,
    decision: dispatch.Decision,
    now: datetime,
    attempts: _Attempts,
    *,
    actor: str = SYSTEM_ACTOR,
    role: Role | str = Role.SYSTEM,
) -> None:
    """Lock, re-check and write one decision in ONE transaction (or raise and write nothing)."""
    incident_id = decision.incident.incident_id
    preempted = sorted({a.preempts for a in decision.assignments if a.preempts is not None})
    with begin_write(engine) as connection:
        # Incidents first, then units, each in id order: every writer takes locks in the same
        # order, so two of them can wait for each other but never deadlock.
        statuses = _lock_incidents(connection, [incident_id, *preempted])
        if statuses.get(incident_id) not in DISPATCHABLE:
            raise _not_dispatchable(incident_id, statuses.get(incident_id, "missing"))
        gone, offices = _lock_units(connection, decision, statuses)
        if gone:
            raise _UnitsTaken(gone)
        requeued = [_requeue(connection, x, incident_id, decision, now) for x in preempted]
        chosen = [a.unit_id for a in decision.assignments]
        if chosen:
            connection.execute(_SET_BUSY, {"ids": chosen, "b_busy": incident_id})
        dispatch_id = _insert_dispatch(connection, decision, now, attempts, requeued)
        _insert_assignments(connection, decision, dispatch_id, now)
        placement = decision.placement
        values = {
            "priority": decision.priority,
            "street_code": placement.street_code,
            "community_code": placement.community_code,
            "grid_code": placement.grid_code,
            "microgrid_code": placement.microgrid_code,
        }
        if chosen:
            # The street's call: the clocks of the response start here. A decision that found
            # nobody is recorded (dispatch row) but calls no one, so the incident stays queued.
            # The placement goes into the same UPDATE as the status.
            _record_dispatch(
                connection, decision, dispatch_id, now, offices, values, actor=actor, role=role
            )
        else:
            connection.execute(
                update(INCIDENTS)
                .where(INCIDENTS.c.incident_id == incident_id)
                .values(**values, updated_at=now)
            )


def _record_dispatch(
    connection: Connection,
    decision: dispatch.Decision,
    dispatch_id: int,
    now: datetime,
    offices: dict[str, str | None],
    incident_values: dict[str, Any],
    *,
    actor: str,
    role: Role | str,
) -> None:
    """The ``dispatch`` event; ``offices`` are the chosen units' (read when they were locked)."""
    unit_ids = [a.unit_id for a in decision.assignments]
    append_event(
        connection,
        decision.incident.incident_id,
        Action.DISPATCH,
        at=now,
        clamp=True,
        actor=actor,
        role=role,
        # The call belongs to the lead unit's office (an assisting one when the lead is unfilled).
        office_id=offices.get(
            next((a.unit_id for a in decision.assignments if a.role == "lead"), unit_ids[0])
        ),
        street_code=decision.placement.street_code,
        level=None if decision.level is None else str(decision.level),
        data={
            "dispatch_id": dispatch_id,
            "status": decision.status,
            "units": unit_ids,
            "offices": [offices.get(u) for u in unit_ids],
            "kinds": [str(a.kind) for a in decision.assignments],
            "unfilled": [str(k) for k in decision.unfilled],
        },
        incident_values=incident_values,
    )


def _lock_incidents(connection: Connection, incident_ids: Sequence[str]) -> dict[str, str]:
    rows = connection.execute(_LOCK_INCIDENTS, {"ids": sorted(set(incident_ids))})
    return {r.incident_id: r.status for r in rows}


def _lock_units(
    connection: Connection, decision: dispatch.Decision, incident_status: dict[str, str]
) -> tuple[list[str], dict[str, str | None]]:
    """Lock the chosen units (skipping rows another transaction holds).

    Returns the units gone, and the office of each unit locked.
    """
    chosen = {a.unit_id: a for a in decision.assignments}
    if not chosen:
        return [], {}
    found = {r.unit_id: r for r in connection.execute(_LOCK_UNITS, {"ids": sorted(chosen)})}
    gone = []
    for unit_id, a in sorted(chosen.items()):
        row = found.get(unit_id)
        if row is None:  # held by another transaction (PostgreSQL) or deleted by a reload
            gone.append(unit_id)
        elif a.preempts is None:
            if not (
                row.status == str(UnitStatus.AVAILABLE)
                and row.on_duty
                and row.busy_incident_id is None
            ):
                gone.append(unit_id)
        elif not (
            row.status == str(UnitStatus.BUSY)
            and row.busy_incident_id == a.preempts
            and incident_status.get(a.preempts) in WORKING
        ):
            gone.append(unit_id)
    return gone, {u: r.office_id for u, r in found.items()}


def _free_status(on_duty: Any) -> str:
    return str(UnitStatus.AVAILABLE) if on_duty else str(UnitStatus.OFF_DUTY)


def _requeue(
    connection: Connection,
    preempted: str,
    by: str,
    decision: dispatch.Decision,
    now: datetime,
) -> dict[str, Any]:
    """End every active assignment of a preempted incident and put it back in the queue.

    The preempted unit moves on to ``by``; the incident's other units are freed, so that a
    ``registered`` incident never has units out working on it and is dispatched again whole.
    The ``requeue`` event records it.
    """
    taken = {a.unit_id for a in decision.assignments if a.preempts == preempted}
    others = connection.execute(
        select(UNITS.c.unit_id, UNITS.c.on_duty)
        .where(UNITS.c.busy_incident_id == preempted, UNITS.c.unit_id.not_in(sorted(taken)))
        .order_by(UNITS.c.unit_id)
        .with_for_update()
    ).all()
    for unit_id in sorted(taken):
        end_active_assignments(
            connection,
            now,
            f"preempted by {by}",
            and_(ASSIGNMENTS.c.unit_id == unit_id, ASSIGNMENTS.c.incident_id == preempted),
            requeue=False,
        )
    for other in others:
        connection.execute(
            update(UNITS)
            .where(UNITS.c.unit_id == other.unit_id)
            .values(status=_free_status(other.on_duty), busy_incident_id=None)
        )
    end_active_assignments(
        connection,
        now,
        f"incident {preempted} re-queued: preempted by {by}",
        ASSIGNMENTS.c.incident_id == preempted,
        requeue=False,
    )
    append_event(
        connection,
        preempted,
        Action.REQUEUE,
        at=now,
        clamp=True,
        reason=f"preempted by {by}: its unit {', '.join(sorted(taken))} was taken for a "
        "priority-1 matter",
        data={"by": by, "units": sorted(taken), "freed": [o.unit_id for o in others]},
    )
    return {
        "incident_id": preempted,
        "units": sorted(taken),
        "freed": [other.unit_id for other in others],
    }


def _insert_dispatch(
    connection: Connection,
    decision: dispatch.Decision,
    now: datetime,
    attempts: _Attempts,
    requeued: list[dict[str, Any]],
) -> int:
    # The explanation part of decision.to_json(), without converting the rest (routes).
    explanation = dispatch.jsonable(decision.explanation)
    explanation["store"] = {
        "attempts": attempts.count,
        "taken_meanwhile": list(attempts.taken),
        "retried_database_errors": list(attempts.retried_errors),
        "unfilled": [str(k) for k in decision.unfilled],
        "requeued": requeued,
    }
    dispatch_id = connection.execute(
        _INSERT_DISPATCH,
        {
            "incident_id": decision.incident.incident_id,
            "created_at": now,
            "level": None if decision.level is None else str(decision.level),
            "status": decision.status,
            "travel_model": str(decision.explanation.get("travel_model", {}).get("kind", "")),
            "attempts": attempts.count,
            "explanation": explanation,
        },
    ).scalar_one()
    return int(dispatch_id)


def _insert_assignments(
    connection: Connection, decision: dispatch.Decision, dispatch_id: int, now: datetime
) -> None:
    if not decision.assignments:
        return
    unit_ids = [a.unit_id for a in decision.assignments]
    # A unit's history never runs backwards: a job starts no earlier than its last one ended
    # (callers' clocks may differ by a little; the rows are locked, so this is race-free).
    last_end = dict(connection.execute(_LAST_END, {"ids": unit_ids}).all())
    rows = []
    for a in decision.assignments:
        ended = last_end.get(a.unit_id)
        rows.append(
            {
                "dispatch_id": dispatch_id,
                "incident_id": decision.incident.incident_id,
                "unit_id": a.unit_id,
                "kind": str(a.kind),
                "role": a.role,
                "level": str(a.level),
                "rule": a.rule,
                "time_s": float(a.time_s),
                "over_max_travel": bool(a.over_max_travel),
                "preempts": a.preempts,
                "route": None if a.route is None else a.route.geometry,
                "route_length_m": None if a.route is None else float(a.route.length_m),
                "active": True,
                "assigned_at": now if ended is None else max(now, ended),
                "released_at": None,
                "release_reason": None,
            }
        )
    connection.execute(insert(ASSIGNMENTS), rows)


# --------------------------------------------------------------------------------------------
# units: release, status, position
# --------------------------------------------------------------------------------------------


def _lock_unit(connection: Connection, unit_id: str) -> Any:
    row = connection.execute(
        select(UNITS.c.unit_id, UNITS.c.status, UNITS.c.on_duty, UNITS.c.busy_incident_id)
        .where(UNITS.c.unit_id == unit_id)
        .with_for_update()
    ).first()
    if row is None:
        msg = f"no unit {unit_id!r} in the store"
        raise NotFoundError(msg)
    return row


def release_unit(
    engine: Engine,
    unit_id: str,
    *,
    now: datetime,
    reason: str = "released",
    incident_id: str | None = None,
) -> str | None:
    """Free a unit and end its active assignment, atomically.

    Parameters
    ----------
    engine
        The store.
    unit_id
        The unit.
    now
        When it became free (timezone-aware); an assignment never ends before it began.
    reason
        Recorded on the assignment (``done``, ``cancelled``...).
    incident_id
        Only release the unit from this incident: when it has been preempted and moved on
        meanwhile, nothing changes and None is returned.

    Returns
    -------
    str or None
        The incident the unit was released from (None when it was on none, or not on
        ``incident_id``). A busy unit becomes ``available`` (``off_duty`` when off duty).

    Raises
    ------
    NotFoundError
        No such unit.
    """
    now = _aware(now, "now")
    with translate_errors(engine), begin_write(engine) as connection:
        row = _lock_unit(connection, unit_id)
        if incident_id is not None and row.busy_incident_id != incident_id:
            return None
        # The unit's work ends; the incident keeps its status (finishing it is the workflow's).
        end_active_assignments(
            connection, now, reason, ASSIGNMENTS.c.unit_id == unit_id, requeue=False
        )
        if row.status == str(UnitStatus.BUSY):
            connection.execute(
                update(UNITS)
                .where(UNITS.c.unit_id == unit_id)
                .values(status=_free_status(row.on_duty), busy_incident_id=None)
            )
        return row.busy_incident_id if row.busy_incident_id is not None else None


def set_unit_status(
    engine: Engine,
    unit_id: str,
    status: UnitStatus | str,
    *,
    on_duty: bool | None = None,
) -> None:
    """Set a unit's status (and on-duty flag) by hand, atomically.

    ``busy`` marks it busy on something outside this store (no incident). A unit working on
    an incident is freed with :func:`release_unit` instead, which ends its assignment.

    Raises
    ------
    InputError
        An unknown status, or the unit is on an incident and would stop being busy.
    NotFoundError
        No such unit.
    """
    try:
        new = UnitStatus(status)
    except ValueError:
        msg = f"unknown unit status {status!r}; expected one of {', '.join(UnitStatus)}"
        raise InputError(msg) from None
    with translate_errors(engine), begin_write(engine) as connection:
        row = _lock_unit(connection, unit_id)
        if row.busy_incident_id is not None and new is not UnitStatus.BUSY:
            msg = (
                f"unit {unit_id} is working on incident {row.busy_incident_id}; "
                "release it (release_unit) instead of setting its status"
            )
            raise InputError(msg)
        values: dict[str, Any] = {"status": str(new)}
        if on_duty is not None:
            values["on_duty"] = bool(on_duty)
        connection.execute(update(UNITS).where(UNITS.c.unit_id == unit_id).values(**values))


def update_unit_position(
    engine: Engine,
    unit_id: str,
    lon: float,
    lat: float,
    at: datetime,
    *,
    source: str = "avl",
) -> bool:
    """Record a unit's position fix (WGS84), unless a newer one is stored already.

    AVL messages can arrive out of order; an older fix never overwrites a newer one.

    Returns
    -------
    bool
        Whether the position was stored.

    Raises
    ------
    InputError
        Not a WGS84 point, or ``at`` is not timezone-aware.
    NotFoundError
        No such unit.
    """
    lon, lat = float(lon), float(lat)
    if not (math.isfinite(lon) and math.isfinite(lat) and -180 <= lon <= 180 and -90 <= lat <= 90):
        msg = f"({lon}, {lat}) is not a WGS84 longitude/latitude"
        raise InputError(msg)
    at = _aware(at, "at")
    with translate_errors(engine), begin_write(engine) as connection:
        result = connection.execute(
            update(UNITS)
            .where(
                UNITS.c.unit_id == unit_id,
                or_(UNITS.c.position_time.is_(None), UNITS.c.position_time <= at),
            )
            .values(position=Point(lon, lat), position_time=at, position_source=source)
        )
        if result.rowcount:
            return True
        exists = connection.execute(
            select(UNITS.c.unit_id).where(UNITS.c.unit_id == unit_id)
        ).first()
    if exists is None:
        msg = f"no unit {unit_id!r} in the store"
        raise NotFoundError(msg)
    return False


# --------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------


def _geoframe(rows: Sequence[Any], columns: Sequence[str]) -> gpd.GeoDataFrame:
    df = pd.DataFrame([tuple(r) for r in rows], columns=[*columns, "geometry"])
    geoms = df.pop("geometry").tolist()
    return gpd.GeoDataFrame(df, geometry=gpd.GeoSeries(geoms, crs=_WGS84), crs=_WGS84)


def _utc_columns(df: pd.DataFrame, columns: Sequence[str]) -> None:
    for column in columns:
        df[column] = pd.to_datetime(df[column], utc=True)


def read_incidents(engine: Engine, status: str | Sequence[str] | None = None) -> gpd.GeoDataFrame:
    """Read stored incidents, oldest report first (ties by id).

    Parameters
    ----------
    engine
        The store.
    status
        Only incidents with this status (or any of these).

    Returns
    -------
    geopandas.GeoDataFrame
        :data:`INCIDENT_COLUMNS` + Point geometry (EPSG:4326), times in UTC.
    """
    table = INCIDENTS
    stmt = select(*[table.c[c] for c in INCIDENT_COLUMNS], table.c.geometry).order_by(
        table.c.reported_at, table.c.incident_id
    )
    if status is not None:
        wanted = [status] if isinstance(status, str) else list(status)
        stmt = stmt.where(table.c.status.in_(wanted))
    with translate_errors(engine), engine.connect() as connection:
        rows = connection.execute(stmt).all()
    gdf = _geoframe(rows, INCIDENT_COLUMNS)
    _utc_columns(gdf, ["reported_at", "created_at", "updated_at"])
    gdf["priority"] = gdf["priority"].astype("Int64")
    return gdf


def query_incidents(
    engine: Engine,
    *,
    incident_ids: Sequence[str] | None = None,
    status: Sequence[str] | None = None,
    matter_code: Sequence[str] | None = None,
    street_code: str | None = None,
    grid_code: str | None = None,
    unit_id: str | None = None,
    bbox: tuple[float, float, float, float] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int | None = 100,
    offset: int = 0,
    newest_first: bool = True,
) -> tuple[gpd.GeoDataFrame, int]:
    """Incidents matching every given filter, one page of them, and how many match in all.

    ``street_code``, ``grid_code`` and ``unit_id`` (ever assigned to it) are how callers scope
    what a user may see. ``bbox`` is ``(west, south, east, north)`` in WGS84; ``since`` and
    ``until`` bound ``reported_at`` (since inclusive, until exclusive).

    On PostgreSQL every filter runs in SQL (the box through the GIST index). SQLite stores
    geometry as plain WKB, so there the box is applied to the rows the other filters leave.

    Returns
    -------
    (geopandas.GeoDataFrame, int)
        :data:`INCIDENT_COLUMNS` + Point geometry, times in UTC; and the total count.
    """
    table = INCIDENTS
    conditions: list[Any] = []
    if incident_ids is not None:
        conditions.append(table.c.incident_id.in_(list(incident_ids)))
    if status:
        conditions.append(table.c.status.in_(list(status)))
    if matter_code:
        conditions.append(table.c.matter_code.in_(list(matter_code)))
    if street_code is not None:
        conditions.append(table.c.street_code == street_code)
    if grid_code is not None:
        conditions.append(table.c.grid_code == grid_code)
    if unit_id is not None:
        assigned = select(ASSIGNMENTS.c.incident_id).where(ASSIGNMENTS.c.unit_id == unit_id)
        conditions.append(table.c.incident_id.in_(assigned))
    if since is not None:
        conditions.append(table.c.reported_at >= _aware(since, "since"))
    if until is not None:
        conditions.append(table.c.reported_at < _aware(until, "until"))
    postgres = engine.dialect.name == "postgresql"
    if bbox is not None and postgres:
        conditions.append(table.c.geometry.op("&&")(func.ST_MakeEnvelope(*bbox, 4326)))
    order = (
        [table.c.reported_at.desc(), table.c.incident_id.desc()]
        if newest_first
        else [table.c.reported_at, table.c.incident_id]
    )
    columns = [*[table.c[c] for c in INCIDENT_COLUMNS], table.c.geometry]
    stmt = select(*columns).where(*conditions).order_by(*order)
    with translate_errors(engine), engine.connect() as connection:
        if bbox is None or postgres:
            total = int(
                connection.execute(
                    select(func.count()).select_from(table).where(*conditions)
                ).scalar_one()
            )
            if limit is not None:
                stmt = stmt.limit(limit)
            rows = connection.execute(stmt.offset(offset)).all()
        else:
            west, south, east, north = bbox
            kept = [
                r
                for r in connection.execute(stmt).all()
                if west <= r.geometry.x <= east and south <= r.geometry.y <= north
            ]
            total = len(kept)
            rows = kept[offset : None if limit is None else offset + limit]
    gdf = _geoframe(rows, INCIDENT_COLUMNS)
    _utc_columns(gdf, ["reported_at", "created_at", "updated_at"])
    gdf["priority"] = gdf["priority"].astype("Int64")
    return gdf, total


def read_assignments(
    engine: Engine,
    *,
    incident_id: str | None = None,
    unit_id: str | None = None,
    active: bool | None = None,
) -> gpd.GeoDataFrame:
    """Read assignments in the order they were made, optionally filtered.

    Returns
    -------
    geopandas.GeoDataFrame
        :data:`ASSIGNMENT_COLUMNS` + the route (LineString, None when not stored), times UTC.
    """
    table = ASSIGNMENTS
    stmt = select(*[table.c[c] for c in ASSIGNMENT_COLUMNS], table.c.route).order_by(
        table.c.assignment_id
    )
    if incident_id is not None:
        stmt = stmt.where(table.c.incident_id == incident_id)
    if unit_id is not None:
        stmt = stmt.where(table.c.unit_id == unit_id)
    if active is not None:
        stmt = stmt.where(table.c.active.is_(bool(active)))
    with translate_errors(engine), engine.connect() as connection:
        rows = connection.execute(stmt).all()
    gdf = _geoframe(rows, ASSIGNMENT_COLUMNS)
    _utc_columns(gdf, ["assigned_at", "released_at"])
    for column in ("active", "over_max_travel"):
        gdf[column] = gdf[column].astype(bool)
    for column in ("time_s", "route_length_m"):
        gdf[column] = gdf[column].astype(float)
    return gdf


def _assignment_json(row: Any) -> dict[str, Any]:
    out = {c: row._mapping[c] for c in ASSIGNMENT_COLUMNS}
    route = row._mapping["route"]
    out["route"] = None if route is None else shapely.geometry.mapping(route)
    return out


def read_dispatch(engine: Engine, incident_id: str) -> dict[str, Any]:
    """The latest dispatch of an incident, with its explanation and assignments.

    Returns
    -------
    dict
        ``dispatch_id``, ``incident_id``, ``created_at``, ``level``, ``status``
        (assigned / partial / unassigned), ``travel_model``, ``attempts``, ``explanation``
        (as the dispatcher wrote it, plus a ``store`` part: attempts, units taken meanwhile,
        re-queued incidents), ``assignments`` (routes as GeoJSON), ``incident`` (its row,
        with ``lon``/``lat``) and ``dispatches`` (how many times it was dispatched).

    Raises
    ------
    NotFoundError
        No such incident, or it was never dispatched.
    """
    with translate_errors(engine), engine.connect() as connection:
        incident = _read_incident_row(connection, incident_id)
        rows = connection.execute(
            select(DISPATCHES)
            .where(DISPATCHES.c.incident_id == incident_id)
            .order_by(DISPATCHES.c.dispatch_id.desc())
        ).all()
        if not rows:
            msg = f"incident {incident_id!r} has not been dispatched yet"
            raise NotFoundError(msg)
        latest = rows[0]
        assignments = connection.execute(
            select(*[ASSIGNMENTS.c[c] for c in ASSIGNMENT_COLUMNS], ASSIGNMENTS.c.route)
            .where(ASSIGNMENTS.c.dispatch_id == latest.dispatch_id)
            .order_by(ASSIGNMENTS.c.assignment_id)
        ).all()
    incident_out = {c: incident._mapping[c] for c in INCIDENT_COLUMNS}
    incident_out.update(lon=float(incident.geometry.x), lat=float(incident.geometry.y))
    return {
        **dict(latest._mapping),
        "assignments": [_assignment_json(a) for a in assignments],
        "incident": incident_out,
        "dispatches": len(rows),
    }


__all__ = [
    "ASSIGNMENT_COLUMNS",
    "DISPATCHABLE",
    "INCIDENT_COLUMNS",
    "context_from_store",
    "create_incident",
    "decide_stored",
    "dispatch_stored",
    "read_assignments",
    "read_dispatch",
    "read_incidents",
    "release_unit",
    "set_unit_status",
    "travel_from_store",
    "update_unit_position",
]
