"""Incidents: reports, lists, one incident with its history, workflow actions, batch dispatch.

Scoping is done in SQL (:func:`gridgov.store.query_incidents`): a caller never loads what it may
not see, and an incident outside its scope answers 404 exactly as a missing one does.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, HTTPException, Path, Query
from pydantic import AwareDatetime, BaseModel, Field
from starlette.concurrency import run_in_threadpool

from api.auth import Principal, not_found, require
from api.deps import ContextDep, EngineDep, ReadEngineDep, SettingsDep
from api.schemas import CrsName, parse_bbox, plain
from gridgov import store
from gridgov.errors import InputError, NotFoundError
from gridgov.service import actions, assign, intake
from gridgov.service.clock import check_year
from gridgov.service.scope import BATCH_DISPATCHERS, READERS, REPORTERS
from gridgov.workflow import ALLOWED_ROLES, Action, Role, Satisfaction, State

router = APIRouter(prefix="/incidents", tags=["incidents"])

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
    dispatch_mode: str | None = Field(
        default=None,
        description="Its street's dispatch mode: auto, or confirm (held for a dispatcher).",
    )
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
    skipped: int
    method: str = Field(description="optimal: the jointly optimal assignment.")
    objective_s: float = Field(
        description="The minimised total: priority-weighted travel seconds plus open slots."
    )
    greedy_objective_s: float = Field(description="The same total for greedy nearest-first.")
    gain: float = Field(description="Relative reduction against greedy (0.1 = 10 % lower).")


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
    check_year(value, "a query time")
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
async def create(body: IncidentIn, principal: Reporter, engine: EngineDep) -> dict[str, Any]:
    # Async, with the whole report in one worker thread: this is the hottest write, and each
    # hop between the event loop and a thread (a sync dependency, a sync endpoint, the answer's
    # check) costs about as much as a small query.
    return await run_in_threadpool(_create, body, principal, engine)


def _create(body: IncidentIn, principal: Principal, engine: Any) -> dict[str, Any]:
    report = intake.report(
        engine,
        store.context_from_store(engine),
        matter_code=body.matter_code,
        lon=body.lon,
        lat=body.lat,
        crs=body.crs,
        reported_at=body.reported_at,
        incident_id=body.incident_id,
        id_prefix="API",
        source="api",
        reporter=body.reporter,
        description=body.description,
        dispatch_now=body.dispatch,
        scope=principal.scope,
        actor=principal.actor,
        role=Role.SYSTEM,
    )
    # Answered from what was just stored: no read back (this is the hottest route).
    decision = None if report.decision is None else report.decision.to_json()
    return {
        **report.incident_fields(),
        "reason": report.reason,
        "dispatch_mode": report.dispatch_mode,
        "dispatch": decision,
    }


@router.get("", response_model=IncidentPage, summary="List incidents (newest first)")
def list_incidents(
    principal: Reader,
    engine: ReadEngineDep,
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
    if act_ is Action.EVALUATE and principal.scope.records_evaluations:
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
    unit_id = principal.scope.acting_unit
    if unit_id is not None:
        active = store.read_assignments(engine, incident_id=incident_id, active=True)
        if unit_id not in set(active["unit_id"]):
            raise HTTPException(403, f"unit {unit_id} is not assigned to incident {incident_id}")
    result = actions.act(
        engine,
        ctx,
        incident_id,
        act_,
        at=datetime.now(UTC),
        actor=principal.actor,
        role=role,
        reason=body.reason,
        satisfaction=body.satisfaction,
        unit_id=unit_id,
        data=data or None,
    )
    return {
        "incident_id": incident_id,
        "status": result.state,
        "event": result.event.to_row(),
        "dispatch": None if result.decision is None else result.decision.to_json(),
    }


@router.post(
    "/dispatch",
    response_model=BatchOut,
    summary="Dispatch the queued incidents in the caller's scope together, optimally",
)
def dispatch_batch(
    principal: Commander,
    engine: EngineDep,
    ctx: ContextDep,
    body: BatchIn | None = None,
) -> dict[str, Any]:
    """The queued (registered) incidents in the caller's scope are assigned together, so as to
    minimise the priority-weighted total travel time (each unit at most once), and committed in
    one transaction; ``gain`` is the reduction against greedy nearest-first. Ids outside the
    caller's scope, not queued, or changed meanwhile (cancelled...) are listed as skipped."""
    body = body or BatchIn()
    outcome = assign.dispatch_queue(
        engine,
        ctx,
        incident_ids=body.incident_ids,
        filters=principal.scope.incident_filters(),
        actor=principal.actor,
        role=Role.DISPATCHER,
    )
    return outcome.to_json()
