"""Evidence photos of incidents, and the field page's requests that carry them.

- ``POST /incidents/{id}/media``: photos of the report, the resolution or the verification;
- ``GET /incidents/{id}/media`` (their metadata, in the order of the events), the clean copy
  and the thumbnail of each; ``DELETE`` one with a reason (its row keeps who and why);
- ``POST /field/reports`` and ``POST /field/incidents/{id}/actions/{action}``: a report, or a
  resolve, verify or reopen, together with its photos in one multipart request: the photos are
  checked first, so a bad one refuses the whole request and nothing is stored;
- ``GET /field/tasks``: the caller's "my tasks" list;
- ``GET /open311/v2/media/{id}/{media_id}``: the one public copy, of a photo whose reporter
  agreed to publish it (Open311's ``media_url``).

Photos are visible exactly where their incident is: another street's photo answers 404 like a
missing one. The size limit is :mod:`api.body_limit`'s, before any of this runs.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, File, Form, HTTPException, Path, Query, UploadFile
from fastapi.responses import FileResponse
from pydantic import AwareDatetime, BaseModel, Field

from api.auth import Principal, require
from api.deps import ContextDep, EngineDep, SettingsDep
from api.routes import incidents
from api.routes.incidents import ActionIn, ActionOut, CreatedOut, IncidentOut
from api.schemas import CrsName
from gridgov import store
from gridgov.service import intake, media
from gridgov.service.scope import BATCH_DISPATCHERS, READERS, REPORTERS
from gridgov.store.task_rows import active_incidents_of_unit, incidents_from_source
from gridgov.workflow import Role

router = APIRouter(tags=["media"])
public_router = APIRouter(tags=["open311"])

Reader = Annotated[Principal, Depends(require(*READERS))]
Reporter = Annotated[Principal, Depends(require(*REPORTERS))]
Remover = Annotated[Principal, Depends(require(*BATCH_DISPATCHERS))]
IncidentId = Annotated[str, Path(max_length=64)]
# Bounded like the column (a 32-bit integer), so a huge id is a 422, never a database error.
MediaId = Annotated[int, Path(ge=1, le=2**31 - 1)]
Photos = Annotated[
    list[UploadFile],
    File(description="JPEG, PNG or WebP photos (judged by their content); at most 3."),
]
_FILE_HEADERS = {
    "Cache-Control": "private, max-age=86400",
    "X-Content-Type-Options": "nosniff",
    "Content-Disposition": "inline",
}
#: Where a field report's source names the credential that filed it ("my reports").
FIELD_SOURCE = "field:{credential_id}"


class MediaOut(BaseModel):
    media_id: int
    incident_id: str
    event_seq: int = Field(description="The event the photo documents (its seq).")
    kind: Literal["report", "resolve", "verify"]
    content_type: str
    size_bytes: int = Field(description="Of the photo as uploaded.")
    width: int
    height: int
    taken_at: datetime | None = Field(description="From the photo's EXIF, when it says.")
    gps_lon: float | None = Field(description="From the photo's EXIF GPS (WGS84).")
    gps_lat: float | None
    public: bool = Field(description="The reporter agreed to publish it (Open311 media_url).")
    uploaded_at: datetime
    uploaded_by: str
    removed_at: datetime | None
    removed_by: str | None
    removed_reason: str | None
    url: str | None = Field(description="The copy without EXIF; null once removed.")
    thumbnail_url: str | None


class MediaList(BaseModel):
    incident_id: str
    items: list[MediaOut]


class FieldCreatedOut(CreatedOut):
    media: list[MediaOut]


class FieldActionOut(ActionOut):
    media: list[MediaOut]


class TasksOut(BaseModel):
    role: str
    unit_id: str | None = Field(description="The caller's unit (it sends its AVL fixes).")
    grid_code: str | None = Field(description="A grid worker's grid.")
    assigned: list[IncidentOut] = Field(description="A unit's incidents: active assignments.")
    to_verify: list[IncidentOut] = Field(description="A grid worker's: resolved in its grid.")
    reported: list[IncidentOut] = Field(description="Reports filed from this credential's page.")


def _out(item: dict[str, Any]) -> dict[str, Any]:
    base = f"/api/v1/incidents/{item['incident_id']}/media/{item['media_id']}"
    removed = item["removed_at"] is not None
    return {
        **{k: v for k, v in item.items() if k in MediaOut.model_fields},
        "url": None if removed else base,
        "thumbnail_url": None if removed else f"{base}/thumbnail",
    }


def _read_uploads(files: list[UploadFile]) -> list[tuple[str, bytes]]:
    # Each file is already on disk (spooled) and under the request's limit.
    return [(f.filename or "photo", f.file.read()) for f in files if f.filename or f.size]


def _file(stored: media.StoredFile) -> FileResponse:
    return FileResponse(stored.path, media_type=stored.content_type, headers=_FILE_HEADERS)


# --------------------------------------------------------------------------------------------
# photos of an incident
# --------------------------------------------------------------------------------------------


@router.post(
    "/incidents/{incident_id}/media",
    response_model=list[MediaOut],
    status_code=201,
    summary="Add photos to the report, resolution or verification of an incident",
    responses={
        404: {"description": "No such incident in scope, or no event of that kind yet."},
        413: {"description": "Larger than media_max_bytes (refused while streaming)."},
        415: {"description": "Not a JPEG, PNG or WebP photo by its content."},
    },
)
def add_photos(
    incident_id: IncidentId,
    principal: Reporter,
    engine: EngineDep,
    settings: SettingsDep,
    kind: Annotated[Literal["report", "resolve", "verify"], Form()],
    photo: Photos,
) -> list[dict[str, Any]]:
    incidents._visible(engine, principal, incident_id)
    photos = media.check_photos(_read_uploads(photo), settings)
    if not photos:
        raise HTTPException(422, "send at least one photo in the photo field")
    stored = media.attach(engine, settings, incident_id, kind, photos, actor=principal.actor)
    return [_out(m) for m in stored]


@router.get(
    "/incidents/{incident_id}/media",
    response_model=MediaList,
    summary="The photos of an incident in the order of its events (removed ones say why)",
)
def list_photos(incident_id: IncidentId, principal: Reader, engine: EngineDep) -> dict[str, Any]:
    incidents._visible(engine, principal, incident_id)
    return {
        "incident_id": incident_id,
        "items": [_out(m) for m in media.photos_of(engine, incident_id)],
    }


@router.get(
    "/incidents/{incident_id}/media/{media_id}",
    response_class=FileResponse,
    summary="A photo, without its EXIF",
    responses={200: {"content": {"image/jpeg": {}, "image/png": {}, "image/webp": {}}}},
)
def get_photo(
    incident_id: IncidentId,
    media_id: MediaId,
    principal: Reader,
    engine: EngineDep,
    settings: SettingsDep,
) -> FileResponse:
    incidents._visible(engine, principal, incident_id)
    return _file(media.media_file(engine, settings, incident_id, media_id, thumbnail=False))


@router.get(
    "/incidents/{incident_id}/media/{media_id}/thumbnail",
    response_class=FileResponse,
    summary="A photo's thumbnail (JPEG, at most 320 px a side)",
    responses={200: {"content": {"image/jpeg": {}}}},
)
def get_thumbnail(
    incident_id: IncidentId,
    media_id: MediaId,
    principal: Reader,
    engine: EngineDep,
    settings: SettingsDep,
) -> FileResponse:
    incidents._visible(engine, principal, incident_id)
    return _file(media.media_file(engine, settings, incident_id, media_id, thumbnail=True))


@router.delete(
    "/incidents/{incident_id}/media/{media_id}",
    response_model=MediaOut,
    summary="Remove a photo (its files go; the record of who removed it and why stays)",
)
def remove_photo(
    incident_id: IncidentId,
    media_id: MediaId,
    principal: Remover,
    engine: EngineDep,
    settings: SettingsDep,
    reason: Annotated[str, Query(min_length=1, max_length=2000, description="Why (required).")],
) -> dict[str, Any]:
    incidents._visible(engine, principal, incident_id)
    item = media.remove(
        engine, settings, incident_id, media_id, actor=principal.actor, reason=reason
    )
    return _out(item)


# --------------------------------------------------------------------------------------------
# the field page's requests
# --------------------------------------------------------------------------------------------


@router.post(
    "/field/reports",
    response_model=FieldCreatedOut,
    status_code=201,
    summary="Report an incident with its photos (multipart; the field page)",
    responses={
        403: {"description": "The point lies outside the caller's street or grid."},
        413: {"description": "Larger than media_max_bytes (refused while streaming)."},
        415: {"description": "A photo is not a JPEG, PNG or WebP by its content."},
    },
)
def field_report(
    principal: Reporter,
    engine: EngineDep,
    ctx: ContextDep,
    settings: SettingsDep,
    matter_code: Annotated[str, Form(min_length=1, max_length=64)],
    lon: Annotated[float, Form(ge=-180, le=180)],
    lat: Annotated[float, Form(ge=-90, le=90)],
    crs: Annotated[CrsName, Form()] = "wgs84",
    description: Annotated[str | None, Form(max_length=4000)] = None,
    reported_at: Annotated[AwareDatetime | None, Form()] = None,
    incident_id: Annotated[
        str | None, Form(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")
    ] = None,
    photo: Photos = [],  # noqa: B006 - FastAPI copies a parameter's default per request
) -> dict[str, Any]:
    photos = media.check_photos(_read_uploads(photo), settings)
    report = intake.report(
        engine,
        ctx,
        matter_code=matter_code,
        lon=lon,
        lat=lat,
        crs=crs,
        reported_at=reported_at,
        incident_id=incident_id,
        id_prefix="FLD",
        source=FIELD_SOURCE.format(credential_id=principal.credential.credential_id),
        description=description,
        scope=principal.scope,
        actor=principal.actor,
        role=Role.SYSTEM,
    )
    stored = media.attach(
        engine, settings, report.incident_id, "report", photos, actor=principal.actor
    )
    decision = None if report.decision is None else report.decision.to_json()
    return {
        **report.incident_fields(),
        "reason": report.reason,
        "dispatch": decision,
        "media": [_out(m) for m in stored],
    }


@router.post(
    "/field/incidents/{incident_id}/actions/{action}",
    response_model=FieldActionOut,
    summary="Resolve, verify or reopen with photos (multipart; the field page)",
    responses={
        403: {"description": "The caller's role may not take this action."},
        404: {"description": "No such incident in the caller's scope."},
        409: {"description": "The incident's state does not allow the action (nothing changed)."},
        413: {"description": "Larger than media_max_bytes (refused while streaming)."},
        415: {"description": "A photo is not a JPEG, PNG or WebP by its content."},
    },
)
def field_action(
    incident_id: IncidentId,
    action: Literal["resolve", "verify", "reopen"],
    principal: Reporter,
    engine: EngineDep,
    ctx: ContextDep,
    settings: SettingsDep,
    reason: Annotated[str | None, Form(max_length=2000)] = None,
    photo: Photos = [],  # noqa: B006 - FastAPI copies a parameter's default per request
) -> dict[str, Any]:
    photos = media.check_photos(_read_uploads(photo), settings)
    # The native route takes the action: the same role, scope and assignment checks.
    result = incidents.act(incident_id, action, principal, engine, ctx, ActionIn(reason=reason))
    stored = media.attach(
        engine,
        settings,
        incident_id,
        media.KIND_OF_ACTION[action],
        photos,
        actor=principal.actor,
        event_seq=int(result["event"]["seq"]),
    )
    return {**result, "media": [_out(m) for m in stored]}


@router.get("/field/tasks", response_model=TasksOut, summary="My tasks (the field page)")
def field_tasks(principal: Reader, engine: EngineDep) -> dict[str, Any]:
    """A unit: the incidents it is on now. A grid worker: its grid's resolved incidents,
    waiting for verification on site. Everyone: the reports this credential filed from the
    field page. All within the caller's scope."""
    scope = principal.scope
    filters = scope.incident_filters()

    def read(ids: list[str] | None = None, **extra: Any) -> list[dict[str, Any]]:
        if ids is not None and not ids:
            return []
        gdf, _ = store.query_incidents(engine, incident_ids=ids, limit=200, **filters, **extra)
        return [incidents._incident_dict(r) for r in gdf.itertuples(index=False)]

    unit = scope.acting_unit
    grid = scope.grid_code if scope.role == "grid_worker" else None
    source = FIELD_SOURCE.format(credential_id=principal.credential.credential_id)
    return {
        "role": scope.role,
        "unit_id": unit,
        "grid_code": grid,
        "assigned": read(active_incidents_of_unit(engine, unit)) if unit else [],
        "to_verify": read(status=["resolved"]) if grid else [],
        "reported": read(incidents_from_source(engine, source)),
    }


# --------------------------------------------------------------------------------------------
# Open311's public copy
# --------------------------------------------------------------------------------------------


@public_router.get(
    "/media/{service_request_id}/{media_id}",
    response_class=FileResponse,
    summary="The photo of a request whose reporter agreed to publish it (its media_url)",
    responses={200: {"content": {"image/jpeg": {}, "image/png": {}, "image/webp": {}}}},
)
def public_photo(
    service_request_id: Annotated[str, Path(max_length=64)],
    media_id: MediaId,
    engine: EngineDep,
    settings: SettingsDep,
) -> FileResponse:
    stored = media.public_file(engine, settings, service_request_id, media_id)
    headers = {**_FILE_HEADERS, "Cache-Control": "public, max-age=3600"}
    return FileResponse(stored.path, media_type=stored.content_type, headers=headers)
