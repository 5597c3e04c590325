"""Incidents in the store: a report stored with its first events (the duplicate check inside
the same transaction), and incidents read back (scoped queries)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from shapely.geometry import Point
from sqlalchemy import (
    Connection,
    Engine,
    Float,
    bindparam,
    func,
    select,
    text,
)
from sqlalchemy.exc import IntegrityError

from gridgov import dispatch
from gridgov.catalog import Matter
from gridgov.crs import from_wgs84
from gridgov.duplicates import nearest_duplicate
from gridgov.errors import (
    InputError,
    NotFoundError,
    StoreError,
    UnknownMatterError,
)
from gridgov.settings import get_settings
from gridgov.store.engine import (
    begin_write,
    translate_errors,
)
from gridgov.store.idempotency_rows import (
    KeyClaim,
    KeyHeld,
    link_idempotency,
    link_idempotency_many,
)
from gridgov.store.journal import REPORTER_ACTOR, SYSTEM_ACTOR, build_event, insert_events
from gridgov.store.many_rows import RowsInsert
from gridgov.store.models import (
    ASSIGNMENTS,
    INCIDENTS,
    MATTERS,
    GeometryType,
)
from gridgov.store.reporter_rows import insert_reporter
from gridgov.store.unit_snapshot import _raw_position, _xy
from gridgov.workflow import OPEN_STATES, Action, Role, State

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
    "reporter_id",
    "description",
)
_WGS84 = "EPSG:4326"
_MAX_ID_LENGTH = 64
# Namespace of the advisory locks that serialise the duplicate check per matter (PostgreSQL).
_DUPLICATE_LOCK_SPACE = 7_311_003
# Statements run for every report, built once: SQLAlchemy then reuses their cache keys.
_MATTERS = select(MATTERS.c.code, MATTERS.c.priority)
_INSERT_INCIDENTS = RowsInsert(INCIDENTS, [c.name for c in INCIDENTS.columns])


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
    matter: Matter | None = None,
    claim: KeyClaim | None = None,
) -> StoredIncident:
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
        Who to tell the outcome (an account, a phone number): personal data, stored apart
        (:mod:`gridgov.store.reporter_rows`); the incident and its report event carry only
        its opaque ``reporter_id``.
    description
        What the reporter said.
    check_duplicates
        False when the caller knows the report is a distinct incident (a dispatcher entering
        one by hand).
    matter
        The incident's catalogue entry, when the caller has read it already (the intake
        does): its priority is stored as given. When None the stored catalogue is read.
    claim
        The Idempotency-Key the request holds: the incident is linked to it in the same
        transaction (:func:`gridgov.store.link_idempotency`), so that a retry resumes this
        incident instead of storing another. A claim made with the record
        (:func:`gridgov.store.claim_with_record`) is inserted there, linked.

    Returns
    -------
    StoredIncident
        The incident id (of the duplicate too: it is stored, linked and rejected) and the
        state it was stored in.

    Raises
    ------
    InputError
        Bad id, point or time, or an incident with this id exists already.
    UnknownMatterError
        The store holds a catalogue and the matter is not in it.
    StoreError
        The store is unreachable, or ``claim`` was taken over by a retry (nothing stored).
    KeyHeld
        ``claim`` was to be made with the record and another run holds its key (nothing
        stored).
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
        matter=matter,
        claim=claim,
    )


@dataclass(frozen=True)
class StoredIncident:
    """A report as :func:`create_incident` stored it: its state, and why when rejected."""

    incident_id: str
    state: str
    reason: str | None = None
    duplicate_of: str | None = None


def _store_report(
    engine: Engine,
    incident: dispatch.Incident,
    placement: dispatch.Placement | None,
    **kwargs: Any,
) -> StoredIncident:
    """:func:`create_incident`'s work; returns the state the report ended in."""
    with translate_errors(engine):
        try:
            with begin_write(engine) as connection:
                return _insert_report(connection, incident, placement, **kwargs)
        except IntegrityError as exc:
            raise _exists_already(incident.incident_id) from exc


def create_incidents(
    engine: Engine, reports: Sequence[dict[str, Any]]
) -> list[StoredIncident | Exception]:
    """Store many reports in ONE transaction, each as :func:`create_incident` stores one.

    ``reports`` are :func:`create_incident`'s arguments, one dict each (``incident`` and
    ``placement`` included), in arrival order: a report sees the ones before it (a duplicate
    of an earlier report of the same call is rejected as such). A report that fails (its id
    exists, its Idempotency-Key was taken over...) is rolled back alone, to a savepoint, and
    its error is returned in its place; the others are stored. A database failure stores
    none of them (:class:`~gridgov.errors.StoreError`).
    """
    with translate_errors(engine), begin_write(engine) as connection:
        return store_reports_within(connection, reports)


def store_reports_within(
    connection: Connection, reports: Sequence[dict[str, Any]]
) -> list[StoredIncident | Exception]:
    """:func:`create_incidents`' work inside the caller's write transaction."""
    out: list[StoredIncident | Exception] = []
    _lock_duplicate_checks(
        connection,
        [r["incident"].matter_code for r in reports if r.get("check_duplicates", True)],
    )
    if len(reports) > 1 and all(r.get("matter") is not None for r in reports):
        try:
            with connection.begin_nested():
                return list(_insert_together(connection, reports))
        except (IntegrityError, InputError, StoreError, KeyHeld):
            pass  # one of them is refused: each alone, below, so that only it fails
    for kwargs in reports:
        try:
            with connection.begin_nested():
                out.append(_insert_report(connection, **kwargs))
        except IntegrityError:
            out.append(_exists_already(kwargs["incident"].incident_id))
        except (InputError, StoreError, KeyHeld) as exc:
            out.append(exc)
    return out


def _insert_together(
    connection: Connection, reports: Sequence[dict[str, Any]]
) -> list[StoredIncident]:
    """Every report of ``reports`` as :func:`_insert_report` inserts it, in a few statements:
    one read of the duplicate candidates of all their matters, then one INSERT of the
    incidents, one of their events and one UPDATE of their Idempotency-Keys. Raises when any
    one of them cannot be stored (the caller then stores them one by one)."""
    candidates = _Candidates(connection, reports)
    rows, events, outcomes, claims = [], [], [], []
    for r in reports:
        incident = r["incident"]
        checked = r.get("check_duplicates", True)
        row, first, outcome = _prepare_report(
            connection,
            incident,
            r.get("placement"),
            source=r.get("source"),
            now=r.get("now"),
            reporter=r.get("reporter"),
            description=r.get("description"),
            matter=r["matter"],
            master=partial(candidates.master, incident) if checked else None,
        )
        candidates.add(incident, row["reported_at"], row["status"])
        rows.append(row)
        events.extend(first)
        outcomes.append(outcome)
        if r.get("claim") is not None:
            claims.append((r["claim"], incident.incident_id))
    _INSERT_INCIDENTS.run(connection, rows)
    insert_events(connection, events)
    link_idempotency_many(connection, claims)
    return outcomes


class _Candidates:
    """The open incidents a batch's reports may duplicate, read once, with the batch's own
    reports added as they are stored (a report may duplicate an earlier one of its batch).
    A report stored alone is a batch of one (:func:`_find_duplicate`).

    The candidates' points and the reports' own go to the metric CRS in one transformation
    for the whole batch (one per report before: most of the check's time)."""

    def __init__(self, connection: Connection, reports: Sequence[dict[str, Any]]) -> None:
        # matter -> (ids, reported_at, statuses, x_m, y_m)
        self._rows: dict[str, tuple[list[Any], list[Any], list[Any], list[float], list[float]]]
        self._rows = {}
        self._at: dict[str, tuple[float, float]] = {}  # a report's id -> its metric point
        checked = [r for r in reports if r.get("check_duplicates", True)]
        found: Sequence[Any] = []
        if checked:
            settings = get_settings()
            window = timedelta(hours=settings.duplicate_window_h)
            times = [r["incident"].reported_at.astimezone(UTC) for r in checked]
            params = {
                "matters": sorted({r["incident"].matter_code for r in checked}),
                "until": max(times),
                "since": min(times) - window,
            }
            stmt = _DUPLICATE_CANDIDATES_OF_MATTERS
            if connection.dialect.name == "postgresql":
                # Only the open incidents near one of the reports (the GiST index): a district
                # keeps thousands open within the window, and each row read is decoded and
                # projected here. SQLite reads the matters' rows and the radius test below
                # decides, as it does for these.
                stmt = _DUPLICATE_CANDIDATES_NEAR
                lats = [abs(float(r["incident"].lat)) for r in checked]
                params["near"] = shapely.MultiPoint(
                    [(float(r["incident"].lon), float(r["incident"].lat)) for r in checked]
                )
                params["degrees"] = _degrees_covering(settings.duplicate_radius_m, max(lats))
            found = connection.execute(stmt, params).all()
        if not found and len(reports) == 1:
            return  # a lone report with nothing near: nothing to measure, no transformation
        lon, lat = _xy([f.position for f in found])
        own = [r["incident"] for r in reports]
        xs, ys = _metric_xy(
            [*lon.tolist(), *(float(i.lon) for i in own)],
            [*lat.tolist(), *(float(i.lat) for i in own)],
        )
        n = len(found)
        for f, x, y in zip(found, xs[:n].tolist(), ys[:n].tolist(), strict=True):
            self._append(f.matter_code, f.incident_id, f.reported_at, f.status, x, y)
        for incident, x, y in zip(own, xs[n:].tolist(), ys[n:].tolist(), strict=True):
            self._at[incident.incident_id] = (x, y)

    def _append(self, matter: str, *row: Any) -> None:
        columns = self._rows.setdefault(matter, ([], [], [], [], []))
        for column, value in zip(columns, row, strict=True):
            column.append(value)

    def add(self, incident: dispatch.Incident, reported_at: datetime, status: str) -> None:
        x, y = self._at[incident.incident_id]
        self._append(incident.matter_code, incident.incident_id, reported_at, status, x, y)

    def master(
        self, incident: dispatch.Incident, reported_at: datetime
    ) -> tuple[str, float] | None:
        """The open incident this report duplicates and its distance (metres), or None."""
        ids, times, statuses, xs, ys = self._rows.get(incident.matter_code, ([], [], [], [], []))
        if not ids:
            return None
        settings = get_settings()
        x0, y0 = self._at[incident.incident_id]
        return nearest_duplicate(
            x0,
            y0,
            reported_at,
            zip(ids, xs, ys, times, statuses, strict=True),
            radius_m=settings.duplicate_radius_m,
            window=timedelta(hours=settings.duplicate_window_h),
        )


def _insert_report(
    connection: Connection,
    incident: dispatch.Incident,
    placement: dispatch.Placement | None,
    *,
    source: str | None,
    now: datetime | None,
    reporter: str | None,
    description: str | None,
    check_duplicates: bool,
    matter: Matter | None,
    claim: KeyClaim | None = None,
) -> StoredIncident:
    """Insert one report and its first events in the caller's write transaction."""
    row, events, outcome = _prepare_report(
        connection,
        incident,
        placement,
        source=source,
        now=now,
        reporter=reporter,
        description=description,
        matter=matter,
        master=(lambda at: _find_duplicate(connection, incident, at)) if check_duplicates else None,
    )
    _INSERT_INCIDENTS.run(connection, [row])
    insert_events(connection, events)
    if claim is not None:
        link_idempotency(connection, claim, incident.incident_id)
    return outcome


def _prepare_report(
    connection: Connection,
    incident: dispatch.Incident,
    placement: dispatch.Placement | None,
    *,
    source: str | None,
    now: datetime | None,
    reporter: str | None,
    description: str | None,
    matter: Matter | None,
    master: Callable[[datetime], tuple[str, float] | None] | None,
) -> tuple[dict[str, Any], list[Any], StoredIncident]:
    """A report's incident row, first events and outcome (its reporter row is inserted here);
    ``master`` finds the open incident it duplicates (None: no duplicate check)."""
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
        "description": description,
    }
    settings = get_settings()
    # The contact goes to its own (erasable) row; the append-only log names the
    # role and the opaque id, never the person.
    reporter_id = insert_reporter(connection, reporter, now) if reporter else None
    row["reporter_id"] = reporter_id
    data = {"source": source} if source else {}
    if reporter_id is not None:
        data["reporter_id"] = reporter_id
    report = build_event(
        None,
        incident.incident_id,
        Action.REPORT,
        at=reported_at,
        actor=REPORTER_ACTOR if reporter else (source or SYSTEM_ACTOR),
        role=Role.REPORTER if reporter else Role.SYSTEM,
        street_code=street_code,
        data=data or None,
    )
    if matter is not None:
        row["priority"] = matter.priority
    else:
        matters = dict(connection.execute(_MATTERS).all())
        if matters and incident.matter_code not in matters:
            raise UnknownMatterError(incident.matter_code)
        row["priority"] = matters.get(incident.matter_code)
    found = None if master is None else master(reported_at)
    if found is not None and found[0] == incident.incident_id:
        # The id is taken by an open incident nearby (itself): not a duplicate.
        raise _exists_already(incident.incident_id)
    row["duplicate_of"] = None if found is None else found[0]
    events = [report]
    outcome = StoredIncident(incident.incident_id, str(State.REPORTED))
    if found is not None:
        master_id, distance_m = found
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
        outcome = StoredIncident(
            incident.incident_id, str(State.REJECTED), rejected.reason, master_id
        )
    elif settings.auto_register:
        events.append(
            build_event(report, incident.incident_id, Action.REGISTER, at=now, clamp=True)
        )
        outcome = StoredIncident(incident.incident_id, str(State.REGISTERED))
    # The incident is new (its id is the primary key: a second insert fails with
    # IntegrityError, reported below), so its first events need no reading back:
    # it is inserted in its final state, then its events at once.
    row["status"] = str(events[-1].to_state)
    row["updated_at"] = events[-1].at
    return row, events, outcome


def _exists_already(incident_id: str) -> InputError:
    msg = f"incident {incident_id!r} exists already; nothing was changed"
    return InputError(msg)


def _metric_xy(lon: Any, lat: Any) -> tuple[np.ndarray, np.ndarray]:
    x, y = from_wgs84(lon, lat, get_settings().metric_crs)
    return np.asarray(x, dtype=float), np.asarray(y, dtype=float)


# One statement for any number of matters, the locks taken in the order of the sorted list.
_LOCK_DUPLICATE_CHECKS = text(
    "SELECT count(pg_advisory_xact_lock(CAST(:space AS integer), hashtext(m))) "
    "FROM (SELECT m FROM unnest(CAST(:matters AS text[])) AS m ORDER BY m) AS ordered"
)


def _lock_duplicate_checks(connection: Connection, matters: Sequence[str]) -> None:
    """Take the duplicate check's turn for ``matters``, in sorted order (PostgreSQL).

    Two reports of one matter at once must not both miss each other (READ COMMITTED sees
    neither uncommitted row): reports of the same matter take turns until commit. A batch takes
    all its matters' turns first, in one order, so two batches never wait for each other in a
    circle (the locks are re-entrant: the check of each report takes its own again). SQLite
    serialises every writer with BEGIN IMMEDIATE already.
    """
    if connection.dialect.name != "postgresql" or not matters:
        return
    connection.execute(
        _LOCK_DUPLICATE_CHECKS, {"space": _DUPLICATE_LOCK_SPACE, "matters": sorted(set(matters))}
    )


def _find_duplicate(
    connection: Connection, incident: dispatch.Incident, reported_at: datetime
) -> tuple[str, float] | None:
    """The open incident this report duplicates and how far it is (metres), or None: the
    batch's check (:class:`_Candidates`) for a batch of one, so that both read the same
    candidates.

    Distances are planar in the metric CRS (UTM 48N) on both backends, so SQLite and PostGIS
    give the same answer; the database only narrows the candidates (the matter, open states,
    the time window and, on PostGIS, the surroundings).
    """
    _lock_duplicate_checks(connection, [incident.matter_code])
    return _Candidates(connection, [{"incident": incident}]).master(incident, reported_at)


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


# The candidates of a batch's matters (one matter for a report stored alone).
_DUPLICATE_CANDIDATES_OF_MATTERS = select(
    INCIDENTS.c.incident_id,
    INCIDENTS.c.matter_code,
    INCIDENTS.c.reported_at,
    INCIDENTS.c.status,
    _raw_position(INCIDENTS.c.geometry),
).where(
    INCIDENTS.c.matter_code.in_(bindparam("matters", expanding=True)),
    INCIDENTS.c.status.in_([str(s) for s in OPEN_STATES]),
    INCIDENTS.c.reported_at <= bindparam("until", type_=INCIDENTS.c.reported_at.type),
    INCIDENTS.c.reported_at >= bindparam("since", type_=INCIDENTS.c.reported_at.type),
)


# The same, narrowed to the incidents within ``degrees`` of one of the points ``near``.
_DUPLICATE_CANDIDATES_NEAR = _DUPLICATE_CANDIDATES_OF_MATTERS.where(
    func.ST_DWithin(
        INCIDENTS.c.geometry,
        bindparam("near", type_=GeometryType("MULTIPOINT")),
        bindparam("degrees", type_=Float),
    )
)


def _degrees_covering(radius_m: float, abs_lat: float) -> float:
    """A distance in degrees (planar, on longitude and latitude) that every point within
    ``radius_m`` metres of a point at latitude ±``abs_lat`` lies within. A degree of longitude
    is 111.32 km times the cosine of the latitude, a degree of latitude at least 110.57 km;
    the factor 1.25 covers the metric CRS's scale (UTM's is within 0.1 % of true) and the
    latitude's change across the radius."""
    per_degree = 110_574.0 * math.cos(math.radians(min(abs_lat + 1.0, 89.0)))
    return 1.25 * radius_m / per_degree


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
