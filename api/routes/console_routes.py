"""The dispatcher's workspace API: recommendation, chosen units, release / reassign / backup,
the streets' dispatch modes, the queue and the unit board.

Every rule is :mod:`gridgov.service.manual`'s, :mod:`gridgov.service.dispatch_mode`'s or
:mod:`gridgov.service.workspace`'s; these routes check the caller's role and scope (an
incident or street outside it answers 404, as a missing one) and translate.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from api.auth import Principal, not_found, require
from api.deps import ContextDep, EngineDep
from gridgov import labels, store
from gridgov.service import dispatch_mode, manual, workspace
from gridgov.service.scope import CHOOSERS, MODE_SETTERS, READERS

router = APIRouter(tags=["console"])

Reader = Annotated[Principal, Depends(require(*READERS))]
Chooser = Annotated[Principal, Depends(require(*CHOOSERS))]
ModeSetter = Annotated[Principal, Depends(require(*MODE_SETTERS))]
IncidentId = Annotated[str, Path(max_length=64)]
UnitId = Annotated[str, Path(max_length=64)]
StreetCode = Annotated[str, Path(max_length=18, pattern=r"^[0-9A-Za-z-]+$")]


class ChoiceIn(BaseModel):
    units: dict[str, str] | None = Field(
        default=None,
        description="Force kind → unit id; omitted: the recommendation as it stands.",
        examples=[{"enforcement": "U-0001"}],
    )
    recommended: dict[str, str] | None = Field(
        default=None,
        description="The recommendation the dispatcher was shown (kind → unit); when the "
        "current one differs, the answer is 409 with the fresh recommendation.",
    )
    reason: str | None = Field(
        default=None, max_length=2000, description="Required when `units` override it."
    )


class BackupIn(BaseModel):
    unit_id: str | None = Field(default=None, max_length=64, description="Default: the fastest.")
    kind: str | None = Field(default=None, max_length=32, description="Default: the lead kind.")
    reason: str | None = Field(default=None, max_length=2000)


class ModeIn(BaseModel):
    mode: str = Field(pattern="^(auto|confirm)$", description="auto or confirm")
    priority1_auto: bool = Field(
        default=True, description="Priority-1 matters are dispatched at once in either mode."
    )


class ModeOut(BaseModel):
    street_code: str | None
    mode: str
    priority1_auto: bool


class EventAnswer(BaseModel):
    incident_id: str
    action: str
    event: dict[str, Any]


def _visible(engine: Any, principal: Principal, incident_id: str) -> None:
    gdf, _ = store.query_incidents(
        engine, incident_ids=[incident_id], limit=1, **principal.scope.incident_filters()
    )
    if gdf.empty:
        raise not_found("incident", incident_id)


@router.post(
    "/incidents/{incident_id}/recommendation",
    summary="The dispatch decision as it would be taken now, and every candidate (commits nothing)",
    responses={404: {"description": "No such incident in the caller's scope."}},
)
def recommendation(
    incident_id: IncidentId, principal: Chooser, engine: EngineDep, ctx: ContextDep
) -> dict[str, Any]:
    _visible(engine, principal, incident_id)
    return manual.recommendation_json(manual.recommend(engine, ctx, incident_id))


@router.post(
    "/incidents/{incident_id}/assignments",
    status_code=201,
    summary="Commit the units the dispatcher chose (an override needs a reason)",
    responses={
        404: {"description": "No such incident in the caller's scope."},
        409: {
            "description": "A unit was taken meanwhile, or the recommendation changed: the "
            "answer holds the fresh recommendation; nothing was committed."
        },
        422: {"description": "An override without a reason, or a unit that cannot go."},
    },
)
def assignments(
    incident_id: IncidentId,
    principal: Chooser,
    engine: EngineDep,
    ctx: ContextDep,
    body: ChoiceIn | None = None,
) -> Any:
    body = body or ChoiceIn()
    _visible(engine, principal, incident_id)
    choice = manual.assign(
        engine,
        ctx,
        incident_id,
        units=body.units,
        seen=body.recommended,
        reason=body.reason,
        actor=principal.actor,
        role=principal.workflow_role,
    )
    if choice.conflict is not None:
        return JSONResponse(
            status_code=409,
            content={"error": "conflict", "message": choice.conflict, **choice.to_json()},
        )
    return {"incident_id": incident_id, **choice.to_json()}


@router.delete(
    "/incidents/{incident_id}/assignments/{unit_id}",
    response_model=EventAnswer,
    summary="Release one unit of an incident at work, or reassign it (`replace_with`)",
    responses={404: {"description": "No such incident in scope, or the unit is not on it."}},
)
def release(
    incident_id: IncidentId,
    unit_id: UnitId,
    principal: Chooser,
    engine: EngineDep,
    ctx: ContextDep,
    reason: Annotated[str, Query(min_length=1, max_length=2000, description="Why.")],
    replace_with: Annotated[
        str | None, Query(max_length=64, description="Send this unit instead (a reassignment).")
    ] = None,
) -> dict[str, Any]:
    _visible(engine, principal, incident_id)
    if replace_with is None:
        event = manual.release(
            engine,
            incident_id,
            unit_id,
            reason=reason,
            actor=principal.actor,
            role=principal.workflow_role,
        )
    else:
        event = manual.reassign(
            engine,
            ctx,
            incident_id,
            unit_id,
            replace_with,
            reason=reason,
            actor=principal.actor,
            role=principal.workflow_role,
        )
    return {"incident_id": incident_id, "action": str(event.action), "event": event.to_row()}


@router.post(
    "/incidents/{incident_id}/backup",
    response_model=EventAnswer,
    summary="Add a backup unit to an incident at work",
    responses={404: {"description": "No such incident in the caller's scope."}},
)
def backup(
    incident_id: IncidentId,
    principal: Chooser,
    engine: EngineDep,
    ctx: ContextDep,
    body: BackupIn | None = None,
) -> dict[str, Any]:
    body = body or BackupIn()
    _visible(engine, principal, incident_id)
    event = manual.backup(
        engine,
        ctx,
        incident_id,
        unit_id=body.unit_id,
        kind=body.kind,
        reason=body.reason,
        actor=principal.actor,
        role=principal.workflow_role,
    )
    return {"incident_id": incident_id, "action": str(event.action), "event": event.to_row()}


@router.get(
    "/streets/{street_code}/dispatch-mode",
    response_model=ModeOut,
    summary="A street's dispatch mode (auto or confirm)",
)
def get_mode(street_code: StreetCode, principal: Reader, engine: EngineDep) -> dict[str, Any]:
    if not principal.scope.can_see_street(street_code):
        raise not_found("street", street_code)
    return dispatch_mode.decide(engine, street_code, None).to_json()


@router.put(
    "/streets/{street_code}/dispatch-mode",
    response_model=ModeOut,
    summary="Set a street's dispatch mode (commanders: their street; admins: any)",
)
def put_mode(
    street_code: StreetCode, body: ModeIn, principal: ModeSetter, engine: EngineDep
) -> dict[str, Any]:
    if not principal.scope.can_see_street(street_code):
        raise not_found("street", street_code)
    decision = dispatch_mode.set_mode(
        engine,
        principal.scope,
        street_code,
        body.mode,
        priority1_auto=body.priority1_auto,
        actor=principal.actor,
    )
    return decision.to_json()


@router.get("/console/queue", summary="The open incidents of the caller's scope, by stage")
def queue(principal: Reader, engine: EngineDep, ctx: ContextDep) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "server_time": now.isoformat(),
        "items": workspace.queue(engine, ctx, principal.scope, now=now),
    }


@router.get("/console/units", summary="The unit board of the caller's scope")
def unit_board(principal: Reader, engine: EngineDep) -> dict[str, Any]:
    return {"items": workspace.unit_board(engine, principal.scope)}


@router.get("/console/matters", summary="The catalogue for call taking: names and keywords")
def matters(principal: Reader, ctx: ContextDep) -> dict[str, Any]:
    del principal  # staff only; the catalogue itself is no secret
    return {
        "items": [
            {
                "code": m.code,
                "name_zh": m.name_zh,
                "name_en": m.name_en,
                "keywords": list(m.keywords),
                "priority": m.priority,
                "kinds": [str(k) for k in m.required_kinds],
            }
            for m in ctx.catalog
        ],
        "labels": labels.label_table(list(ctx.catalog)),
    }
