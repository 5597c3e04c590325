"""Intake: the one path a report takes, from the raw point to a stored (and dispatched) incident.

The native API, Open311 and the CLI all call :func:`report`; none holds an intake step of its
own. In order, each done once:

1. the time: ``reported_at`` defaults to now, and a time from the future is refused;
2. the point: converted once from the caller's CRS to WGS84;
3. the matter: read once from the dispatch context's catalogue (an unknown one is refused
   before anything is stored); its priority and kinds travel with the report from here on;
4. the place: located once in the area hierarchy (a point outside names itself as sent);
5. the scope: the caller's :meth:`Scope.check_report` on the street and grid found;
6. storing: the incident and its first events in one transaction, the duplicate check inside
   it (:func:`gridgov.store.create_incident`);
7. dispatching, when asked and the report was registered
   (:func:`gridgov.store.dispatch_reported`, which reads nothing of the incident back).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gridgov import dispatch, store
from gridgov.catalog import Matter
from gridgov.crs import normalize_crs, to_wgs84
from gridgov.errors import CRSError, InputError, OutsideDistrictError
from gridgov.service.clock import sent_time
from gridgov.service.scope import Scope
from gridgov.store import SYSTEM_ACTOR, Engine
from gridgov.text_rules import check_text
from gridgov.workflow import Role, State


@dataclass(frozen=True)
class Report:
    """What became of a report: everything a front end answers.

    ``incident`` is the incident as stored (WGS84 point, UTC time). ``state`` is the workflow
    state it ended in (``dispatched`` when a unit was assigned). ``decision`` is the dispatch
    decision when it was dispatched (or decided, on a dry run); ``duplicate_of`` and ``reason``
    say why a report was not dispatched.
    """

    incident: dispatch.Incident
    placement: dispatch.Placement
    priority: int
    state: str
    source: str | None
    description: str | None
    created_at: datetime
    decision: dispatch.Decision | None = None
    duplicate_of: str | None = None
    reason: str | None = None
    stored: bool = True

    @property
    def incident_id(self) -> str:
        """The incident's id."""
        return self.incident.incident_id

    def incident_fields(self) -> dict[str, Any]:
        """The incident as stored, field by field (an incident row, without reading it back)."""
        placement = self.placement
        return {
            "incident_id": self.incident.incident_id,
            "matter_code": self.incident.matter_code,
            "priority": self.priority,
            "status": self.state,
            "lon": self.incident.lon,
            "lat": self.incident.lat,
            "reported_at": self.incident.reported_at,
            "street_code": placement.street_code,
            "community_code": placement.community_code,
            "grid_code": placement.grid_code,
            "microgrid_code": placement.microgrid_code,
            "source": self.source,
            "created_at": self.created_at,
            "updated_at": self.created_at,
            "duplicate_of": self.duplicate_of,
            "description": self.description,
        }


def new_incident_id(prefix: str, now: datetime) -> str:
    """A fresh incident id: ``<prefix>-<UTC time>-<random>``."""
    return f"{prefix}-{now.astimezone(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"


def report(
    engine: Engine,
    ctx: dispatch.DispatchContext,
    *,
    matter_code: str,
    lon: float,
    lat: float,
    crs: str = "wgs84",
    reported_at: datetime | None = None,
    incident_id: str | None = None,
    id_prefix: str = "RPT",
    source: str | None = None,
    reporter: str | None = None,
    description: str | None = None,
    dispatch_now: bool = True,
    check_duplicates: bool = True,
    scope: Scope | None = None,
    actor: str = SYSTEM_ACTOR,
    role: Role | str = Role.SYSTEM,
    now: datetime | None = None,
    dry_run: bool = False,
) -> Report:
    """Take a report in: check it, store it with its first events, and dispatch it.

    Parameters
    ----------
    engine
        The store (:func:`gridgov.store.open_store`).
    ctx
        The dispatch context (:func:`gridgov.store.context_from_store`): areas, catalogue,
        travel model.
    matter_code
        The matter (a code of the catalogue).
    lon, lat
        The point as the caller sent it, in ``crs``.
    crs
        ``wgs84``, ``gcj02``, ``bd09`` or an EPSG code.
    reported_at
        When it was reported (timezone-aware; a phone may send later); default ``now``.
    incident_id
        The caller's own id; default ``<id_prefix>-<time>-<random>``.
    id_prefix
        The prefix of a generated id (``API``, ``CLI``...).
    source
        Who reported it (``api``, ``cli``, ``open311``...), kept as given.
    reporter
        Who to tell the outcome (personal data: kept on the incident only).
    description
        What the reporter said.
    dispatch_now
        Dispatch a registered report at once (default).
    check_duplicates
        False when the caller knows the report is a distinct incident.
    scope
        The caller's scope; its ``check_report`` refuses a place outside it.
    actor, role
        Recorded on the dispatch event.
    now
        The intake time (default: the current time).
    dry_run
        Decide but store nothing (and lock nothing): ``stored`` is False and ``state`` is the
        state the report would have reached.

    Returns
    -------
    Report

    Raises
    ------
    UnknownMatterError, OutsideDistrictError, CRSError, InputError
        Nothing was stored.
    ForbiddenError
        The scope refuses the place; nothing was stored.
    """
    now = _utc_now(now)
    check_text(description, "description")
    check_text(reporter, "reporter")
    reported_at = sent_time(reported_at, now, "reported_at")
    wlon, wlat = _wgs84(lon, lat, crs)
    matter = ctx.catalog.get(matter_code)
    incident = dispatch.Incident(
        incident_id=incident_id or new_incident_id(id_prefix, now),
        matter_code=matter.code,
        lon=wlon,
        lat=wlat,
        reported_at=reported_at,
    )
    try:
        placement = dispatch.locate_incident(incident, ctx)
    except OutsideDistrictError:
        raise outside_district(ctx, lon, lat, crs) from None
    if scope is not None:
        scope.check_report(placement.street_code, placement.grid_code)
    answer = _Answer(incident, placement, matter, source, description, now)
    if dry_run:
        decision = store.decide_stored(
            engine, ctx, incident, now=now, placement=placement, matter=matter
        )
        state = str(State.DISPATCHED) if decision.assignments else str(State.REGISTERED)
        return answer.report(state, decision=decision, stored=False)
    stored = store.create_incident(
        engine,
        incident,
        placement,
        source=source,
        now=now,
        reporter=reporter,
        description=description,
        check_duplicates=check_duplicates,
        matter=matter,
    )
    if stored.state != str(State.REGISTERED) or not dispatch_now:
        return answer.report(stored.state, duplicate_of=stored.duplicate_of, reason=stored.reason)
    decision = store.dispatch_reported(
        engine, ctx, incident, placement, matter, now=now, actor=actor, role=role
    )
    state = str(State.DISPATCHED) if decision.assignments else str(State.REGISTERED)
    return answer.report(state, decision=decision)


@dataclass(frozen=True)
class _Answer:
    incident: dispatch.Incident
    placement: dispatch.Placement
    matter: Matter
    source: str | None
    description: str | None
    now: datetime

    def report(self, state: str, **kwargs: Any) -> Report:
        return Report(
            incident=self.incident,
            placement=self.placement,
            priority=self.matter.priority,
            state=state,
            source=self.source,
            description=self.description,
            created_at=self.now,
            **kwargs,
        )


def _utc_now(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    if now.tzinfo is None or now.utcoffset() is None:
        msg = f"now must be a timezone-aware datetime, got {now!r}"
        raise InputError(msg)
    return now.astimezone(UTC)


def _wgs84(lon: float, lat: float, crs: str) -> tuple[float, float]:
    x, y = to_wgs84(lon, lat, normalize_crs(crs))
    return float(x[0]), float(y[0])


def outside_district(
    ctx: dispatch.DispatchContext, lon: float, lat: float, crs: str
) -> OutsideDistrictError:
    """The error for a point outside the district, naming it as the caller sent it.

    It says so when the point would lie inside had it been sent as GCJ-02: phones often send
    map-SDK (GCJ-02) positions labelled WGS84, and the shift of a few hundred metres can carry
    a point across the boundary.
    """
    name = normalize_crs(crs)
    error = OutsideDistrictError(lon, lat, name)
    if name == "wgs84":
        try:
            x, y = to_wgs84(lon, lat, "gcj02")
        except CRSError:
            return error
        try:
            ctx.locator.locate_one(float(x[0]), float(y[0]))
        except OutsideDistrictError:
            return error
        error.args = (
            f"{error.args[0]}; it would lie inside as GCJ-02: if it comes from a Chinese "
            "map SDK (AMap, Tencent), send crs=gcj02",
        )
    return error
