"""Stationed units: the list, status changes and AVL position fixes.

A fix older than ``settings.position_max_age_min`` is stale (the rule dispatch applies,
:func:`gridgov.dispatch.rules.position_is_stale`): dispatch then uses the unit's office
position instead, as CAD systems do, and the list marks it ``position_stale``. Which units a
caller sees is its scope's (:mod:`gridgov.service.scope`).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import AwareDatetime, BaseModel, Field
from starlette.concurrency import run_in_threadpool

from api.auth import Principal, not_found, refused, require, require_checked_in_statement
from api.deps import EngineDep, SettingsDep
from api.schemas import CrsName, plain
from gridgov import store
from gridgov.dispatch import position_is_stale
from gridgov.errors import CredentialRefusedError
from gridgov.model import ForceKind, UnitStatus
from gridgov.service import fleet
from gridgov.service.scope import POSITION_SENDERS, READERS, STATUS_SETTERS

router = APIRouter(prefix="/units", tags=["units"])


Reader = Annotated[Principal, Depends(require(*READERS))]
StatusSetter = Annotated[Principal, Depends(require(*STATUS_SETTERS))]
# The fix's own statement checks the token live (api/auth.py): no lookup of its own.
PositionSender = Annotated[Principal, Depends(require_checked_in_statement(*POSITION_SENDERS))]


class UnitOut(BaseModel):
    unit_id: str
    name: str
    kind: str
    office_id: str | None
    department: str
    street_code: str
    grid_code: str | None
    travel_mode: str
    status: str
    on_duty: bool
    busy_incident_id: str | None
    lon: float | None
    lat: float | None
    position_time: datetime | None
    position_source: str | None
    position_stale: bool = Field(
        description="No position, or an AVL fix older than position_max_age_min: dispatch "
        "uses the office's position instead."
    )


class UnitList(BaseModel):
    items: list[UnitOut]
    total: int


class StatusIn(BaseModel):
    status: UnitStatus
    on_duty: bool | None = None

    model_config = {"json_schema_extra": {"examples": [{"status": "off_duty", "on_duty": False}]}}


class PositionIn(BaseModel):
    lon: float = Field(ge=-180, le=180, examples=[104.05])
    lat: float = Field(ge=-90, le=90, examples=[30.69])
    crs: CrsName = "wgs84"
    at: AwareDatetime | None = Field(default=None, description="Time of the fix; default now.")


class PositionOut(BaseModel):
    unit_id: str
    stored: bool = Field(description="False when a newer fix was stored already (kept).")
    stale: bool = Field(description="The fix is too old to be used by dispatch.")
    lon: float
    lat: float
    at: datetime


def _max_age(settings: Any) -> timedelta:
    return timedelta(minutes=settings.position_max_age_min)


def _units(
    engine: Any, settings: Any, principal: Principal, unit_id: str | None = None
) -> list[dict[str, Any]]:
    scope = principal.scope
    if unit_id is None:
        gdf = store.read_units(engine, **scope.unit_filters())
    else:
        gdf = store.read_units(engine, unit_id=unit_id)
    # A position without a time is a home post (static), never stale.
    stale = position_is_stale(gdf["position_time"], datetime.now(UTC), _max_age(settings))
    out = []
    for row, too_old in zip(gdf.to_dict("records"), stale.tolist(), strict=True):
        if not scope.can_see_unit(row["unit_id"], row["street_code"]):
            continue
        geom = row["geometry"]
        when = plain(row["position_time"])
        out.append(
            {
                "unit_id": row["unit_id"],
                "name": row["name"],
                "kind": row["kind"],
                "office_id": plain(row["office_id"]),
                "department": row["department"],
                "street_code": row["street_code"],
                "grid_code": plain(row["grid_code"]),
                "travel_mode": row["travel_mode"],
                "status": row["status"],
                "on_duty": bool(row["on_duty"]),
                "busy_incident_id": plain(row["busy_incident_id"]),
                "lon": None if geom is None else float(geom.x),
                "lat": None if geom is None else float(geom.y),
                "position_time": when,
                "position_source": plain(row["position_source"]),
                "position_stale": geom is None or too_old,
            }
        )
    return out


def _own_unit(engine: Any, settings: Any, principal: Principal, unit_id: str) -> dict[str, Any]:
    # One row read: position fixes arrive from every unit every few seconds.
    for unit in _units(engine, settings, principal, unit_id):
        return unit
    raise not_found("unit", unit_id)


@router.get("", response_model=UnitList, summary="List units (in the caller's scope)")
def list_units(
    principal: Reader,
    engine: EngineDep,
    settings: SettingsDep,
    kind: Annotated[ForceKind | None, Query()] = None,
    status: Annotated[UnitStatus | None, Query()] = None,
    street_code: Annotated[str | None, Query(max_length=18)] = None,
    office_id: Annotated[str | None, Query(max_length=64)] = None,
    stale: Annotated[bool | None, Query(description="Only stale (true) or fresh (false).")] = None,
) -> dict[str, Any]:
    items = _units(engine, settings, principal)
    if kind is not None:
        items = [u for u in items if u["kind"] == kind.value]
    if status is not None:
        items = [u for u in items if u["status"] == status.value]
    if street_code is not None:
        items = [u for u in items if u["street_code"] == street_code]
    if office_id is not None:
        items = [u for u in items if u["office_id"] == office_id]
    if stale is not None:
        items = [u for u in items if u["position_stale"] is stale]
    return {"items": items, "total": len(items)}


@router.get("/{unit_id}", response_model=UnitOut, summary="One unit")
def get_unit(
    unit_id: Annotated[str, Path(max_length=64)],
    principal: Reader,
    engine: EngineDep,
    settings: SettingsDep,
) -> dict[str, Any]:
    return _own_unit(engine, settings, principal, unit_id)


@router.post(
    "/{unit_id}/status",
    response_model=UnitOut,
    summary="Set a unit's status (available, busy, off_duty) and on-duty flag",
    responses={422: {"description": "The unit is on an incident: resolve or return it."}},
)
def set_status(
    unit_id: Annotated[str, Path(max_length=64)],
    body: StatusIn,
    principal: StatusSetter,
    engine: EngineDep,
    settings: SettingsDep,
) -> dict[str, Any]:
    _own_unit(engine, settings, principal, unit_id)
    fleet.set_status(engine, unit_id, body.status, on_duty=body.on_duty)
    return _own_unit(engine, settings, principal, unit_id)


@router.post(
    "/{unit_id}/position",
    response_model=PositionOut,
    summary="Record an AVL position fix",
    responses={422: {"description": "Bad coordinates, or a fix from the future."}},
)
async def set_position(
    unit_id: Annotated[str, Path(max_length=64)],
    body: PositionIn,
    principal: PositionSender,
    engine: EngineDep,
    settings: SettingsDep,
    request: Request,
) -> dict[str, Any]:
    # A unit's scope is itself: another unit's id answers 404, like a missing one. One
    # statement checks that and the caller's token, and stores the fix. Async, with the store
    # in one worker thread: a plain route would also check its answer in a second one.
    try:
        fix = await run_in_threadpool(
            fleet.record_position,
            engine,
            unit_id,
            body.lon,
            body.lat,
            crs=body.crs,
            at=body.at,
            max_age=_max_age(settings),
            scope=principal.scope,
            credential_id=principal.credential.credential_id,
        )
    except CredentialRefusedError:
        raise refused(request) from None
    return {
        "unit_id": unit_id,
        "stored": fix.stored,
        "stale": fix.stale,
        "lon": fix.lon,
        "lat": fix.lat,
        "at": fix.at,
    }
