"""The five-powers assessment: KPIs, scores and rankings for a period, from the event log."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from api.auth import Principal, require
from api.deps import ContextDep, ReadEngineDep
from gridgov import store
from gridgov.assessment import assess
from gridgov.periods import Period
from gridgov.service.scope import ASSESSORS

router = APIRouter(tags=["assessment"])

Assessor = Annotated[Principal, Depends(require(*ASSESSORS))]


class AssessmentOut(BaseModel):
    period: str
    level: str
    street_code: str | None = Field(description="Only this street's calls and cases.")
    office_weight: float = Field(description="The street's weight in an office's assessment.")
    department_weight: float = Field(
        description="The street's weight in a department's annual performance."
    )
    kpi_weights: dict[str, float]
    rows: list[dict[str, Any]] = Field(
        description="One row per office, department, street or the district, ranked."
    )


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item"):
        return _clean(value.item())
    return value


@router.get(
    "/assessment",
    response_model=AssessmentOut,
    summary="KPIs and rankings for a month, quarter or year",
)
def assessment(
    principal: Assessor,
    engine: ReadEngineDep,
    ctx: ContextDep,
    period: Annotated[
        str,
        Query(
            description="A month (2026-10), a quarter (2026-Q4) or a year (2026), in the "
            "display time zone.",
            examples=["2026-10"],
        ),
    ],
    level: Literal["office", "department", "street", "district"] = "office",
    street_code: Annotated[str | None, Query(max_length=18)] = None,
) -> dict[str, Any]:
    """Commanders and dispatchers see their own street's assessment only."""
    street_code = principal.scope.assessment_street(street_code)
    span = Period.parse(period)
    result = assess(
        store.read_events(engine, until=span.end),
        store.read_incidents(engine),
        store.read_offices(engine),
        ctx.catalog,
        span,
        street_code=street_code,
    )
    table = {
        "office": result.offices,
        "department": result.departments,
        "street": result.streets,
        "district": result.district,
    }[level]
    rows = [{k: _clean(v) for k, v in row.items()} for row in table.to_dict("records")]
    return {
        "period": period,
        "level": level,
        "street_code": street_code,
        "office_weight": result.office_weight,
        "department_weight": result.department_weight,
        "kpi_weights": dict(result.kpi_weights),
        "rows": rows,
    }
