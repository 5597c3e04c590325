"""Incidents: reports, lists, one incident with its history, workflow actions, batch dispatch.

Scoping is done in SQL (:func:`gridgov.store.query_incidents`): a caller never loads what it may
not see, and an incident outside its scope answers 404 exactly as a missing one does.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, HTTPException, Path, Query
from pydantic import AwareDatetime, BaseModel, Field

from api.auth import Principal, not_found, require
from api.deps import ContextDep, EngineDep, SettingsDep
from api.schemas import CrsName, outside_district, parse_bbox, plain, to_wgs84_point
from gridgov import store
from gridgov.dispatch import Incident, locate_incident
from gridgov.errors import InputError, NotFoundError, OutsideDistrictError
from gridgov.service.scope import BATCH_DISPATCHERS, READERS, REPORTERS
from gridgov.workflow import ALLOWED_ROLES, Action, Role, Satisfaction, State

router = APIRouter(prefix="/incidents", tags=["incidents"])

#: A phone's clock may run a little ahead; more than this is refused as an error.
CLOCK_SKEW = timedelta(minutes=5)
#: Actions a client takes through the API (dispatch, requeue and supervise are the system's).
ApiAction = Literal[
    "register",
    "reject",
    "acknowledge",
    "arrive",
    "resolve",
    "return",
    "verify",
    "reopen",
    "close",
    "evaluate",
    "cancel",
]
STATES = tuple(str(s) for s in State)

Reader = Annotated[Principal, Depends(require(*READERS))]
Reporter = Annotated[Principal, Depends(require(*REPORTERS))]
Actor = Reporter
Commander = Annotated[Principal, Depends(require(*BATCH_DISPATCHERS))]


# --------------------------------------------------------------------------------------------
# schemas
# --------------------------------------------------------------------------------------------


class IncidentIn(BaseModel):
    """A report. ``lon``/``lat`` are in ``crs``."""

    matter_code: str = Field(min_length=1, max_length=64, examples=["FS-01"])
    lon: float = Field(ge=-180, le=180, examples=[104.05])
    lat: float = Field(ge=-90, le=90, examples=[30.69])
    crs: CrsName = "wgs84"
    description: str | None = Field(default=None, max_length=4000)
    reporter: str | None = Field(
        default=None, max_length=200, description="Who to tell the outcome (phone, account)."
    )
    reported_at: AwareDatetime | None = Field(
        default=None, description="When it was reported (a phone may send later); default now."
    )
    incident_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9._:-]+$",
        description="The client's own id; default API-<time>-<random>.",
    )
    dispatch: bool = Field(default=True, description="Dispatch at once (default).")

    model_config = {
        "json_schema_extra": {
            "examples": [
                {"matter_code": "FS-01", "lon": 104.05, "lat": 30.69, "description": "smoke"},
                {"matter_code": "CG-01", "lon": 104.0525, "lat": 30.6875, "crs": "gcj02"},
            ]
        }
    }


class EventOut(BaseModel):
    seq: int
    at: datetime
    actor: str
    role: str
    action: str
    from_state: str | None
    to_state: str
    reason: str | None = None
    office_id: str | None = None
    street_code: str | None = None
    level: str | None = None
    stage: str | None = None
    satisfaction: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)


class IncidentOut(BaseModel):
    incident_id: str
    matter_code: str
    priority: int | None
    status: str = Field(description="The workflow state.")
    lon: float
    lat: float
    reported_at: datetime
    street_code: str | None
    community_code: str | None
    grid_code: str | None
    microgrid_code: str | None
    source: str | None
    created_at: datetime
    updated_at: datetime
    duplicate_of: str | None
    description: str | None


class CreatedOut(IncidentOut):
    reason: str | None = Field(default=None, description="Why it was not dispatched, if not.")
    dispatch: dict[str, Any] | None = Field(
        default=None, description="The dispatch decision with its explanation."
    )


class IncidentDetail(IncidentOut):
    events: list[EventOut]
    dispatch: dict[str, Any] | None = Field(
        default=None, description="The latest dispatch with its explanation and assignments."
    )


class IncidentPage(BaseModel):
    items: list[IncidentOut]
    total: int
    limit: int
    offset: int


class ActionIn(BaseModel):
    reason: str | None = Field(
        default=None, max_length=2000, description="Required for return, reopen, reject, cancel."
    )
    satisfaction: Satisfaction | None = Field(default=None, description="For evaluate.")
    category: Literal["invalid", "duplicate"] | None = Field(
        default=None, description="For reject: why."
    )
    duplicate_of: str | None = Field(default=None, max_length=64, description="For a duplicate.")


class ActionOut(BaseModel):
    incident_id: str
    status: str
    event: EventOut
    dispatch: dict[str, Any] | None = Field(
        default=None, description="Set when a return or reopen dispatched it again."
    )


class BatchIn(BaseModel):
    incident_ids: list[str] | None = Field(
        default=None, max_length=1000, description="Default: every queued incident in scope."
    )


class BatchItem(BaseModel):
    incident_id: str
    status: str = Field(description="assigned, partial, unassigned or skipped")
    units: list[str]
    reason: str | None = None


class BatchOut(BaseModel):
    items: list[BatchItem]
    dispatched: int
    unassigned: int


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _scope(principal: Principal) -> dict[str, Any]:
    """The query filters that confine a caller to what it may see (its scope's; a role that
    reads no incidents is refused with 403)."""
    return principal.scope.incident_filters()


def _incident_dict(row: Any) -> dict[str, Any]:
    return {
        "incident_id": row.incident_id,
        "matter_code": row.matter_code,
        "priority": plain(row.priority),
        "status": row.status,
        "lon": float(row.geometry.x),
        "lat": float(row.geometry.y),
        "reported_at": plain(row.reported_at),
        "street_code": plain(row.street_code),
        "community_code": plain(row.community_code),
        "grid_code": plain(row.grid_code),
        "microgrid_code": plain(row.microgrid_code),
        "source": plain(row.source),
        "created_at": plain(row.created_at),
        "updated_at": plain(row.updated_at),
        "duplicate_of": plain(row.duplicate_of),
        "description": plain(row.description),
    }


def _visible(engine: Any, principal: Principal, incident_id: str) -> dict[str, Any]:
    gdf, _ = store.query_incidents(engine, incident_ids=[incident_id], limit=1, **_scope(principal))
    if gdf.empty:
        raise not_found("incident", incident_id)
    return _incident_dict(next(gdf.itertuples(index=False)))


def _events(engine: Any, incident_id: str) -> list[dict[str, Any]]:
    df = store.read_events(engine, incident_id=incident_id)
    return [
        {str(k): plain(v) if k != "data" else (v or {}) for k, v in row.items()}
        for row in df.to_dict("records")
    ]


def _local_naive(value: datetime | None, tz: str) -> datetime | None:
    """A query time: naive times are read in the display time zone (Asia/Shanghai)."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=ZoneInfo(tz))
    return value


def _split(value: str | None, allowed: tuple[str, ...] | None, field: str) -> list[str] | None:
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    if allowed is not None:
        unknown = [v for v in items if v not in allowed]
        if unknown:
            msg = f"{field}: unknown value(s) {', '.join(unknown)}; expected {', '.join(allowed)}"
            raise InputError(msg)
    return items


# --------------------------------------------------------------------------------------------
# routes
# --------------------------------------------------------------------------------------------


@router.post(
    "",
    response_model=CreatedOut,
    status_code=201,
    summary="Report an incident (dispatched at once unless dispatch=false)",
    responses={
        403: {"description": "The point lies outside the caller's street or grid."},
        422: {"description": "Unknown matter, a point outside the district, bad coordinates."},
    },
)
def create(
    body: IncidentIn, principal: Reporter, engine: EngineDep, ctx: ContextDep
) -> dict[str, Any]:
    now = datetime.now(UTC)
    reported_at = body.reported_at.astimezone(UTC) if body.reported_at else now
    if reported_at > now + CLOCK_SKEW:
        msg = f"reported_at {reported_at.isoformat()} lies in the future"
        raise InputError(msg)
    lon, lat = to_wgs84_point(body.lon, body.lat, body.crs)
    ctx.catalog.get(body.matter_code)  # an unknown matter is refused before anything else
    incident = Incident(
        incident_id=body.incident_id or f"API-{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}",
        matter_code=body.matter_code,
        lon=lon,
        lat=lat,
        reported_at=reported_at,
    )
    try:
        placement = locate_incident(incident, ctx)
    except OutsideDistrictError:
        raise outside_district(ctx, body.lon, body.lat, body.crs) from None
    c = principal.credential
    if c.role == "grid_worker" and placement.grid_code != c.grid_code:
        raise HTTPException(403, f"a grid worker reports in its own grid ({c.grid_code})")
    if c.role in ("commander", "dispatcher", "unit") and placement.street_code != c.street_code:
        raise HTTPException(403, f"the point lies outside your street ({c.street_code})")
    report = store.report_incident(
        engine,
        ctx,
        incident,
        auto_dispatch=body.dispatch,
        source="api",
        now=now,
        reporter=body.reporter,
        description=body.description,
        actor=principal.actor,
        role=Role.SYSTEM,
    )
    # Answered from what was just stored: no read back (this is the hottest route).
    out = {
        "incident_id": report.incident_id,
        "matter_code": incident.matter_code,
        "priority": ctx.catalog.get(incident.matter_code).priority,
        "status": report.state,
        "lon": lon,
        "lat": lat,
        "reported_at": reported_at,
        "street_code": placement.street_code,
        "community_code": placement.community_code,
        "grid_code": placement.grid_code,
        "microgrid_code": placement.microgrid_code,
        "source": "api",
        "created_at": now,
        "updated_at": now,
        "duplicate_of": report.duplicate_of,
        "description": body.description,
    }
    out["reason"] = report.reason
    out["dispatch"] = None if report.decision is None else report.decision.to_json()
    return out


@router.get("", response_model=IncidentPage, summary="List incidents (newest first)")
def list_incidents(
    principal: Reader,
    engine: EngineDep,
    settings: SettingsDep,
    status: Annotated[
        str | None,
        Query(description="Workflow states, comma-separated.", examples=["registered,dispatched"]),
    ] = None,
    matter_code: Annotated[str | None, Query(description="Matter codes, comma-separated.")] = None,
    street_code: Annotated[str | None, Query(max_length=18)] = None,
    bbox: Annotated[str | None, Query(description="west,south,east,north in `crs`.")] = None,
    crs: CrsName = "wgs84",
    since: Annotated[
        datetime | None, Query(description="Reported at or after (naive = display time zone).")
    ] = None,
    until: Annotated[datetime | None, Query(description="Reported before.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> dict[str, Any]:
    scope = principal.scope.street_filter(street_code)
    if scope is None:
        # Another street's incidents are invisible: an empty page, not a refusal.
        return {"items": [], "total": 0, "limit": limit, "offset": offset}
    gdf, total = store.query_incidents(
        engine,
        status=_split(status, STATES, "status"),
        matter_code=_split(matter_code, None, "matter_code"),
        bbox=parse_bbox(bbox, crs) if bbox is not None else None,
        since=_local_naive(since, settings.display_tz),
        until=_local_naive(until, settings.display_tz),
        limit=limit,
        offset=offset,
        **scope,
    )
    items = [_incident_dict(r) for r in gdf.itertuples(index=False)]
    return {"items": items, "total": total, "limit": limit, "offset": offset}


@router.get(
    "/{incident_id}",
    response_model=IncidentDetail,
    summary="One incident with its event history and latest dispatch",
    responses={404: {"description": "No such incident in the caller's scope."}},
)
def get_incident(
    incident_id: Annotated[str, Path(max_length=64)], principal: Reader, engine: EngineDep
) -> dict[str, Any]:
    out = _visible(engine, principal, incident_id)
    out["events"] = _events(engine, incident_id)
    try:
        out["dispatch"] = store.read_dispatch(engine, incident_id)
    except NotFoundError:
        out["dispatch"] = None
    return out


@router.post(
    "/{incident_id}/actions/{action}",
    response_model=ActionOut,
    summary="Take a workflow action (the street calls, the department responds)",
    responses={
        403: {"description": "The caller's role may not take this action."},
        404: {"description": "No such incident in the caller's scope."},
        409: {"description": "The incident's state does not allow the action (nothing changed)."},
    },
)
def act(
    incident_id: Annotated[str, Path(max_length=64)],
    action: ApiAction,
    principal: Actor,
    engine: EngineDep,
    ctx: ContextDep,
    body: ActionIn | None = None,
) -> dict[str, Any]:
    body = body or ActionIn()
    act_ = Action(action)
    role = principal.workflow_role
    data: dict[str, Any] = {}
    if act_ is Action.EVALUATE and principal.role in ("admin", "commander", "dispatcher"):
        # Staff record the reporter's evaluation (a phone call back), as the system, and say so.
        role = Role.SYSTEM
        data["recorded_by"] = principal.actor
    if role not in ALLOWED_ROLES[act_]:
        raise HTTPException(403, f"the {principal.role} role may not {action} an incident")
    _visible(engine, principal, incident_id)
    if body.category is not None:
        data["category"] = body.category
    if body.duplicate_of is not None:
        data["duplicate_of"] = body.duplicate_of
    if act_ is Action.REJECT:
        data.setdefault("category", "invalid")
    unit_id = principal.credential.unit_id if principal.role == "unit" else None
    if unit_id is not None:
        active = store.read_assignments(engine, incident_id=incident_id, active=True)
        if unit_id not in set(active["unit_id"]):
            raise HTTPException(403, f"unit {unit_id} is not assigned to incident {incident_id}")
    now = datetime.now(UTC)
    event = store.apply_action(
        engine,
        incident_id,
        act_,
        at=now,
        actor=principal.actor,
        role=role,
        reason=body.reason,
        satisfaction=body.satisfaction,
        unit_id=unit_id,
        data=data or None,
    )
    decision = None
    if event.action in (Action.RETURN, Action.REOPEN):
        decision = store.dispatch_stored(engine, ctx, incident_id, now=now).to_json()
    status = decision and ("dispatched" if decision["assignments"] else "registered")
    return {
        "incident_id": incident_id,
        "status": status or str(event.to_state),
        "event": event.to_row(),
        "dispatch": decision,
    }


@router.post(
    "/dispatch",
    response_model=BatchOut,
    summary="Dispatch queued incidents in the caller's scope, most urgent first",
)
def dispatch_batch(
    principal: Commander,
    engine: EngineDep,
    ctx: ContextDep,
    body: BatchIn | None = None,
) -> dict[str, Any]:
    """Each queued (registered) incident is dispatched in turn: priority first, then the oldest
    report, so that the most urgent matters take the nearest units. Ids outside the caller's
    scope, or not queued, are listed as skipped."""
    body = body or BatchIn()
    scope = _scope(principal)
    gdf, _ = store.query_incidents(
        engine,
        status=[str(State.REGISTERED)],
        incident_ids=body.incident_ids,
        limit=None,
        newest_first=False,
        **scope,
    )
    gdf = gdf.assign(_p=gdf["priority"].fillna(99)).sort_values(
        ["_p", "reported_at", "incident_id"], kind="stable"
    )
    items: list[dict[str, Any]] = []
    now = datetime.now(UTC)
    for incident_id in gdf["incident_id"]:
        decision = store.dispatch_stored(
            engine, ctx, incident_id, now=now, actor=principal.actor, role=Role.DISPATCHER
        )
        items.append(
            {
                "incident_id": incident_id,
                "status": decision.status,
                "units": [a.unit_id for a in decision.assignments],
                "reason": decision.explanation.get("refused"),
            }
        )
    found = set(gdf["incident_id"])
    for incident_id in body.incident_ids or []:
        if incident_id not in found:
            items.append(
                {
                    "incident_id": incident_id,
                    "status": "skipped",
                    "units": [],
                    "reason": "not queued for dispatch, or not in your scope",
                }
            )
    dispatched = sum(1 for i in items if i["status"] in ("assigned", "partial"))
    unassigned = sum(1 for i in items if i["status"] == "unassigned")
    return {"items": items, "dispatched": dispatched, "unassigned": unassigned}
