"""AVL gateways: many units' position fixes in one request, stored in one statement.

A radio or vehicle-tracking platform forwards its units' fixes together. Each fix gets its own
answer (:func:`gridgov.service.fleet.record_fixes`): ``accepted``, ``stale``, ``unknown_unit``,
``out_of_scope`` or ``invalid``; a bad fix never costs the good ones. The caller moves only
the units of its scope (an admin the district, a dispatcher its street's, a unit itself).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import AwareDatetime, BaseModel, Field

from api.auth import Principal, require
from api.deps import EngineDep, SettingsDep
from api.schemas import CrsName
from gridgov.service import fleet
from gridgov.service.scope import POSITION_SENDERS

router = APIRouter(prefix="/units", tags=["units"])

#: Fixes one request may carry.
MAX_FIXES = 5000

PositionSender = Annotated[Principal, Depends(require(*POSITION_SENDERS))]


class FixIn(BaseModel):
    unit_id: str = Field(min_length=1, max_length=64)
    # Checked per fix by the service (a bad one is answered, not the whole batch refused).
    lon: float = Field(examples=[104.05])
    lat: float = Field(examples=[30.69])
    crs: CrsName = "wgs84"
    at: AwareDatetime | None = Field(default=None, description="Time of the fix; default now.")


class FixBatchIn(BaseModel):
    fixes: list[FixIn] = Field(min_length=1, max_length=MAX_FIXES)

    model_config = {
        "json_schema_extra": {
            "examples": [{"fixes": [{"unit_id": "U-0001", "lon": 104.05, "lat": 30.69}]}]
        }
    }


class FixAnswerOut(BaseModel):
    unit_id: str
    result: fleet.FixOutcome = Field(
        description="accepted (stored, fresh); stale (older than the stored fix, or too old "
        "for dispatch: see stored); unknown_unit; out_of_scope; invalid (see reason)."
    )
    stored: bool
    lon: float | None = None
    lat: float | None = None
    at: datetime | None = None
    reason: str | None = None


class FixBatchOut(BaseModel):
    results: list[FixAnswerOut]
    counts: dict[str, int] = Field(description="Fixes per result.")


@router.post(
    "/positions",
    response_model=FixBatchOut,
    summary="Record many units' AVL position fixes (a gateway's batch)",
)
def record_positions(
    body: FixBatchIn, principal: PositionSender, engine: EngineDep, settings: SettingsDep
) -> dict[str, Any]:
    answers = fleet.record_fixes(
        engine,
        [fleet.SentFix(f.unit_id, f.lon, f.lat, f.crs, f.at) for f in body.fixes],
        principal.scope,
        max_age=timedelta(minutes=settings.position_max_age_min),
    )
    counts: dict[str, int] = {}
    results = []
    for a in answers:
        counts[a.result] = counts.get(a.result, 0) + 1
        results.append(
            {
                "unit_id": a.unit_id,
                "result": a.result,
                "stored": a.stored,
                "lon": a.lon,
                "lat": a.lat,
                "at": a.at,
                "reason": a.reason,
            }
        )
    return {"results": results, "counts": counts}
