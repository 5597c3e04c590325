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
   it (:func:`gridgov.store.create_incident`), linked in that transaction to the
   Idempotency-Key the request holds, if any (:func:`holding_key`; a key claimed with the
   report is inserted there);
7. dispatching, when asked, the report was registered and its street dispatches at once
   (:func:`gridgov.service.dispatch_mode.decide`: a street in confirm mode holds it)
   (:func:`gridgov.store.dispatch_reported`, which reads nothing of the incident back).

Steps 6 and 7 run in micro-batches (:mod:`gridgov.service.intake_batch`, unless
``intake_batch_max`` is 0): reports that arrive while others are being stored are stored in
one transaction and decided together on one snapshot of the units, each request still
answered with its own outcome and decision.

Exactly once: a request that runs again under a key whose earlier run stored an incident and
then failed (a killed worker, a lost database) resumes that incident (:func:`_resume`): it is
dispatched if it is still queued, and answered as stored. Once an incident is stored the report
is answered as stored, never refused: a dispatch that cannot be made leaves it registered and
says why (``reason``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from gridgov import dispatch, store
from gridgov.catalog import Matter
from gridgov.crs import normalize_crs, to_wgs84
from gridgov.errors import CRSError, InputError, NotFoundError, OutsideDistrictError
from gridgov.service import dispatch_mode, intake_batch
from gridgov.service.clock import sent_time
from gridgov.service.scope import Scope
from gridgov.settings import get_settings
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
    dispatch_mode: str | None = None

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


@dataclass(frozen=True)
class _HeldKey:
    claim: store.KeyClaim
    incident_id: str | None


#: The Idempotency-Key the current request holds (the API's middleware sets it around the
#: request, and the route's thread inherits it), so that the front ends need not carry it.
_held_key: ContextVar[_HeldKey | None] = ContextVar("gridgov_held_key", default=None)


@contextmanager
def holding_key(claim: store.KeyClaim, incident_id: str | None = None) -> Iterator[None]:
    """Run the body as the holder of ``claim``: a report it takes in is linked to the key, or,
    when an earlier run under the key stored ``incident_id``, that incident is resumed."""
    token = _held_key.set(_HeldKey(claim, incident_id))
    try:
        yield
    finally:
        _held_key.reset(token)


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
    held = None if dry_run else _held_key.get()
    if held is not None and held.incident_id is not None:
        return _resume(
            engine,
            ctx,
            held.incident_id,
            dispatch_now=dispatch_now,
            actor=actor,
            role=role,
            now=now,
        )
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
        decided = store.decide_stored(
            engine, ctx, incident, now=now, placement=placement, matter=matter
        )
        state = str(State.DISPATCHED) if decided.assignments else str(State.REGISTERED)
        return answer.report(state, decision=decided, stored=False)
    create: dict[str, Any] = {
        "incident": incident,
        "placement": placement,
        "source": source,
        "now": now,
        "reporter": reporter,
        "description": description,
        "check_duplicates": check_duplicates,
        "matter": matter,
        "claim": None if held is None else held.claim,
    }
    most = get_settings().intake_batch_max
    decision: dispatch.Decision | None = None
    if most > 0:
        if dispatch_now:
            # In this request's thread, not in the intake's turn, which all reports share.
            dispatch.presnap(ctx, incident, matter.required_kinds)
        outcome = intake_batch.submit(
            engine,
            ctx,
            create,
            matter=matter,
            now=now,
            dispatch_now=dispatch_now,
            actor=actor,
            role=role,
            most=most,
        )
        stored, mode, decision = outcome.stored, outcome.mode, outcome.decision
    else:
        stored = store.create_incident(engine, **create)
        # The street's dispatch mode: held for a dispatcher's confirmation, or dispatched.
        mode = dispatch_mode.decide(engine, placement.street_code, matter.priority)
    if stored.state != str(State.REGISTERED) or not dispatch_now or not mode.at_once:
        return answer.report(
            stored.state,
            duplicate_of=stored.duplicate_of,
            reason=stored.reason or (mode.reason if dispatch_now else None),
            dispatch_mode=mode.mode,
        )
    if decision is None:
        try:
            decision = store.dispatch_reported(
                engine, ctx, incident, placement, matter, now=now, actor=actor, role=role
            )
        except InputError as exc:
            # Stored, so answered as stored: the report is not refused for a dispatch that
            # could not be made (it stays queued for a dispatcher, or changed meanwhile).
            return _stored_report(engine, ctx, incident.incident_id, f"not dispatched: {exc}")
    state = str(State.DISPATCHED) if decision.assignments else str(State.REGISTERED)
    return answer.report(state, decision=decision, dispatch_mode=mode.mode)


def _resume(
    engine: Engine,
    ctx: dispatch.DispatchContext,
    incident_id: str,
    *,
    dispatch_now: bool,
    actor: str,
    role: Role | str,
    now: datetime,
) -> Report:
    """The report an earlier run under the same key stored: dispatched now if asked and still
    queued, and answered as stored (its other fields come from the store, not the request)."""
    stored = _stored_report(engine, ctx, incident_id)
    if (
        not dispatch_now
        or stored.state != str(State.REGISTERED)
        or not dispatch_mode.decide(engine, stored.placement.street_code, stored.priority).at_once
    ):
        return stored
    try:
        decision = store.dispatch_stored(engine, ctx, incident_id, now=now, actor=actor, role=role)
    except InputError as exc:  # changed meanwhile (the earlier run, still alive, dispatched it)
        return _stored_report(engine, ctx, incident_id, f"not dispatched: {exc}")
    state = str(State.DISPATCHED) if decision.assignments else str(State.REGISTERED)
    return Report(
        incident=stored.incident,
        placement=stored.placement,
        priority=stored.priority,
        state=state,
        source=stored.source,
        description=stored.description,
        created_at=stored.created_at,
        decision=decision,
    )


def _stored_report(
    engine: Engine, ctx: dispatch.DispatchContext, incident_id: str, reason: str | None = None
) -> Report:
    """A stored incident as a :class:`Report` (read back: used only off the hot path)."""
    gdf, _ = store.query_incidents(engine, incident_ids=[incident_id], limit=None)
    if gdf.empty:  # pragma: no cover - an incident linked to a key is never deleted
        msg = f"no incident {incident_id!r} in the store"
        raise NotFoundError(msg)
    row = gdf.iloc[0]
    incident = dispatch.Incident(
        incident_id=str(row["incident_id"]),
        matter_code=str(row["matter_code"]),
        lon=float(row.geometry.x),
        lat=float(row.geometry.y),
        reported_at=pd.Timestamp(row["reported_at"]).to_pydatetime(),
    )
    return Report(
        incident=incident,
        placement=dispatch.locate_incident(incident, ctx),
        priority=int(row["priority"]),
        state=str(row["status"]),
        source=_text(row["source"]),
        description=_text(row["description"]),
        created_at=pd.Timestamp(row["created_at"]).to_pydatetime(),
        duplicate_of=_text(row["duplicate_of"]),
        reason=reason,
    )


def _text(value: Any) -> str | None:
    return None if value is None or pd.isna(value) else str(value)


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
