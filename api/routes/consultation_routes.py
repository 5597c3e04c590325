"""Consultations of the streets on plans, projects and decisions (powers 2 and 4).

A department registers a plan, project or decision with its footprint; every street it reaches
gets a request. A street sees the requests addressed to it and answers them; the department
sees its own and records how it took each opinion; the district sees all. Residents'
suggestions, filed by staff in the field, attach to the open consultation whose footprint
covers them. Every rule is :mod:`gridgov.service.consultations`'s; who sees what is the
caller's scope's (:mod:`gridgov.service.scope`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import shapely
from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, Field

from api.auth import Principal, not_found, require
from api.deps import EngineDep
from api.schemas import CrsName, plain
from gridgov import store
from gridgov.crs import to_wgs84
from gridgov.footprints import read_footprint
from gridgov.service import consultations
from gridgov.service.scope import (
    CONSULTATION_ADOPTERS,
    CONSULTATION_ANSWERERS,
    CONSULTATION_READERS,
    CONSULTATION_REGISTRARS,
    REPORTERS,
)

router = APIRouter(prefix="/consultations", tags=["consultations"])

Reader = Annotated[Principal, Depends(require(*CONSULTATION_READERS))]
Registrar = Annotated[Principal, Depends(require(*CONSULTATION_REGISTRARS))]
Answerer = Annotated[Principal, Depends(require(*CONSULTATION_ANSWERERS))]
Adopter = Annotated[Principal, Depends(require(*CONSULTATION_ADOPTERS))]
Suggester = Annotated[Principal, Depends(require(*REPORTERS))]
RequestId = Annotated[int, Path(ge=1, le=2**31 - 1)]


class RegisterIn(BaseModel):
    item_code: str = Field(max_length=32, examples=["P-DET-09"])
    stage: str = Field(max_length=16, description="The stage (power 2) or step (power 4) now.")
    title: str = Field(max_length=500)
    letter: str = Field(max_length=20_000, description="What the streets are asked.")
    department: str | None = Field(
        default=None, max_length=200, description="Default: the caller's own department."
    )
    footprint: dict[str, Any] | str = Field(
        description="A GeoJSON geometry (or feature), or WKT: a polygon, a line, or a point "
        "with radius_m."
    )
    crs: str = Field(default="wgs84", max_length=16, description="wgs84, gcj02, bd09 or EPSG:n.")
    radius_m: float | None = Field(default=None, gt=0, le=20_000)
    buffer_m: float = Field(default=0.0, ge=0, le=5_000)


class RegisteredOut(BaseModel):
    consultation_id: int
    late: bool = Field(description="Registered after the stage its item was meant for.")
    streets: list[str]


class RequestOut(BaseModel):
    request_id: int
    consultation_id: int
    kind: str
    item_code: str | None
    stage: str | None
    late: bool | None
    title: str | None
    department: str
    street_code: str
    community_codes: list[str]
    direct: bool
    sent_at: datetime
    due_at: datetime
    due_estimated: bool
    answered_at: datetime | None
    opinion: str | None
    opinion_text: str | None
    adopted_at: datetime | None
    adoption: str | None
    adoption_reason: str | None
    accepted_at: datetime | None
    accepted: bool | None
    acceptance_reason: str | None
    refusals: int
    suggestions: int


class RequestList(BaseModel):
    items: list[RequestOut]
    total: int = Field(description="Requests in scope matching the filters, before paging.")
    limit: int
    offset: int


class CommunitySuggestions(BaseModel):
    street_code: str
    community_code: str | None
    count: int
    texts: list[str]


class ConsultationOut(BaseModel):
    consultation_id: int
    kind: str
    item_code: str
    stage: str
    late: bool
    title: str
    letter: str
    department: str
    registered_at: datetime
    buffer_m: float
    footprint: dict[str, Any] = Field(description="GeoJSON geometry, WGS84.")
    requests: list[RequestOut] = Field(description="The requests the caller sees.")
    suggestions: list[CommunitySuggestions] = Field(
        description="Residents' suggestions per community of the streets the caller sees."
    )


class RespondIn(BaseModel):
    opinion: Literal["agree", "conditional", "disagree"] = Field(
        description="agree, agree with conditions, or object."
    )
    text: str | None = Field(default=None, max_length=20_000)
    attachments: list[str] = Field(default_factory=list, max_length=20)


class AdoptIn(BaseModel):
    adoption: Literal["adopted", "partly", "not_adopted"]
    reason: str | None = Field(default=None, max_length=20_000)


class AcceptIn(BaseModel):
    accepted: bool
    reason: str | None = Field(default=None, max_length=20_000)


class SuggestionIn(BaseModel):
    lon: float = Field(ge=-180, le=180)
    lat: float = Field(ge=-90, le=90)
    crs: CrsName = "wgs84"
    text: str = Field(
        min_length=1, max_length=5_000, description="The suggestion; no names or phone numbers."
    )


class SuggestionOut(BaseModel):
    consultation_ids: list[int]


def _rows(frame: Any) -> list[dict[str, Any]]:
    return [{k: plain(v) for k, v in row.items()} for row in frame.to_dict("records")]


@router.post(
    "",
    response_model=RegisteredOut,
    status_code=201,
    summary="Register a plan, project or decision; its footprint decides the streets asked",
)
def register(body: RegisterIn, principal: Registrar, engine: EngineDep) -> dict[str, Any]:
    footprint = body.footprint if isinstance(body.footprint, str) else json.dumps(body.footprint)
    registered = consultations.register(
        engine,
        principal.scope,
        item_code=body.item_code,
        stage=body.stage,
        title=body.title,
        letter=body.letter,
        department=body.department or principal.scope.department or "",
        footprint=read_footprint(footprint, body.crs, body.radius_m, files=False),
        buffer_m=body.buffer_m,
        at=datetime.now(UTC),
        actor=principal.actor,
    )
    return {
        "consultation_id": registered.consultation_id,
        "late": registered.late,
        "streets": list(registered.streets),
    }


@router.get("", response_model=RequestList, summary="The requests in the caller's scope")
def list_requests(
    principal: Reader,
    engine: EngineDep,
    consultation_id: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    unanswered: Annotated[bool, Query(description="Only requests not answered yet.")] = False,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> dict[str, Any]:
    """Oldest first. A street sees the requests addressed to it, a department its own."""
    frame = consultations.requests_in_scope(engine, principal.scope, consultation_id)
    if unanswered:
        frame = frame[frame["answered_at"].isna()]
    items = _rows(frame.iloc[offset : offset + limit])
    return {"items": items, "total": len(frame), "limit": limit, "offset": offset}


@router.get("/{consultation_id}", response_model=ConsultationOut, summary="One consultation")
def get_consultation(
    consultation_id: RequestId, principal: Reader, engine: EngineDep
) -> dict[str, Any]:
    frame = store.read_footprint_consultations(engine, consultation_id=consultation_id)
    requests = consultations.requests_in_scope(engine, principal.scope, consultation_id)
    # A street that was not asked, or another department, sees no such consultation.
    if frame.empty or (requests.empty and not principal.scope.district_wide):
        raise not_found("consultation", str(consultation_id))
    row = frame.iloc[0]
    return {
        "consultation_id": int(row["consultation_id"]),
        "kind": row["kind"],
        "item_code": row["item_code"],
        "stage": row["stage"],
        "late": bool(row["late"]),
        "title": row["title"],
        "letter": row["letter"],
        "department": row["department"],
        "registered_at": row["consulted_at"].to_pydatetime(),
        "buffer_m": float(row["buffer_m"] or 0.0),
        "footprint": json.loads(shapely.to_geojson(row["footprint"])),
        "requests": _rows(requests),
        "suggestions": consultations.suggestions_by_community(
            engine, consultation_id, requests["street_code"].tolist()
        ),
    }


def _request(engine: Any, principal: Principal, request_id: int) -> dict[str, Any]:
    frame = consultations.requests_in_scope(engine, principal.scope)
    frame = frame[frame["request_id"] == request_id]
    if frame.empty:
        raise not_found("consultation request", str(request_id))
    return _rows(frame)[0]


def _step(
    action: Callable[..., Any],
    engine: Any,
    principal: Principal,
    request_id: int,
    **fields: Any,
) -> dict[str, Any]:
    """A step of a request by the caller, now (the service checks it may); answered with the
    request as the caller sees it afterwards."""
    action(
        engine, principal.scope, request_id, at=datetime.now(UTC), actor=principal.actor, **fields
    )
    return _request(engine, principal, request_id)


@router.post(
    "/requests/{request_id}/respond",
    response_model=RequestOut,
    summary="The street answers: agree, agree with conditions, or object",
    responses={409: {"description": "The street answered already."}},
)
def respond(
    request_id: RequestId, body: RespondIn, principal: Answerer, engine: EngineDep
) -> dict[str, Any]:
    return _step(
        consultations.respond,
        engine,
        principal,
        request_id,
        opinion=body.opinion,
        text=body.text,
        attachments=body.attachments,
    )


@router.post(
    "/requests/{request_id}/adopt",
    response_model=RequestOut,
    summary="The department records how it took the street's opinion",
    responses={409: {"description": "Not answered yet, or decided already."}},
)
def adopt(
    request_id: RequestId, body: AdoptIn, principal: Adopter, engine: EngineDep
) -> dict[str, Any]:
    return _step(
        consultations.adopt,
        engine,
        principal,
        request_id,
        adoption=body.adoption,
        reason=body.reason,
    )


@router.post(
    "/requests/{request_id}/accept",
    response_model=RequestOut,
    summary="The street signs off or refuses the project's acceptance",
    responses={409: {"description": "No say in acceptance, or signed off already."}},
)
def accept(
    request_id: RequestId, body: AcceptIn, principal: Answerer, engine: EngineDep
) -> dict[str, Any]:
    return _step(
        consultations.accept,
        engine,
        principal,
        request_id,
        accepted=body.accepted,
        reason=body.reason,
    )


@router.post(
    "/suggestions",
    response_model=SuggestionOut,
    status_code=201,
    summary="A resident's suggestion, attached to the open consultations covering it",
    responses={409: {"description": "No open consultation covers the point."}},
)
def suggest(body: SuggestionIn, principal: Suggester, engine: EngineDep) -> dict[str, Any]:
    x, y = to_wgs84(body.lon, body.lat, body.crs)
    attached = consultations.suggest(
        engine,
        principal.scope,
        lon=float(x[0]),
        lat=float(y[0]),
        text=body.text,
        at=datetime.now(UTC),
        actor=principal.actor,
    )
    return {"consultation_ids": attached}
