"""Open311 GeoReport v2: the matters catalogue as services, incidents as service requests.

Citizens' and field staff's phone apps speak GeoReport v2 (http://wiki.open311.org/GeoReport_v2)
here, mounted at ``/open311/v2``. Every resource answers in JSON or XML as its extension asks
(``services.json``, ``services.xml``; :mod:`api.open311_answers`), and errors come back in the
spec's error list, in the same format, from :mod:`api.error_answers`. This module holds
discovery, the services and filing; reading requests back is :mod:`api.open311_lists`, whose
routes this module's router mounts.

How gridgov maps onto the spec:

- A **service** is a matter of the catalogue; ``service_code`` is the matter code.
- A **service request** is an incident, whichever channel reported it. Its ``status`` is
  ``closed`` once the workflow reached closed, evaluated, rejected or cancelled, and ``open``
  before. Reporters' personal data (the ``email``, ``phone``, names, account and device sent
  with a request) is kept for the outcome notice and never shown by a GET. An incident reported
  by staff is listed without its description and media and with a rough position
  (:meth:`gridgov.service.scope.Scope.shows_request_in_full`).
- **Filing** (``POST requests``) takes the spec's form-encoded fields and an ``api_key`` issued
  to a citizen app (``gridgov token issue citizen``). A position is required: this service
  does not geocode ``address_string``. ``crs`` (wgs84, gcj02, bd09) is our extension for
  phones whose map SDK gives GCJ-02 or BD-09. The report goes through the one intake path,
  :func:`gridgov.service.intake.report`, and is dispatched at once. A request created here
  has a ``token`` equal to its ``service_request_id``.
- **Photos**: ``POST requests`` also takes ``multipart/form-data`` with a ``media`` file (the
  media-handling extension, :data:`EXTENSIONS_URL`, listed in the discovery answer), checked
  and stored as the report's evidence photo by :mod:`gridgov.service.media`. Its ``media_url``
  is shown only when the reporter sent ``media_publish=true``.
- The incidents table has no columns for the spec's ``address_string``, ``media_url`` and
  attributes, so they are appended to the stored description as ``[Open311] name: value``
  lines, where staff read them too; GET splits them off again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import parse_qsl, urlsplit
from zoneinfo import ZoneInfo

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Path, Request
from pydantic import BaseModel, Field

from api import open311_lists
from api.deps import ContextDep, EngineDep, SettingsDep
from api.open311_answers import (
    EXTRA_PREFIX,
    SOURCE,
    FormatPath,
    Jurisdiction,
    check_jurisdiction,
    invalid,
    openapi_responses,
    render,
    w3c,
)
from api.open311_lists import read_requests
from api.rate_limits import note_failed_auth
from gridgov import store
from gridgov.dispatch import DispatchContext
from gridgov.errors import UnknownMatterError
from gridgov.service import intake, media
from gridgov.service.scope import scope_for
from gridgov.store.service_requests import services_changed_at
from gridgov.workflow import State

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

__all__ = ["router"]

router = APIRouter(tags=["open311"])

SPEC_URL = "http://wiki.open311.org/GeoReport_v2"
EXTENSIONS_URL = "http://wiki.open311.org/GeoReport_v2/Extensions/"
#: The spec caps a description at 4,000 characters.
DESCRIPTION_MAX = 4000
_CONTACT_MAX = 200
_FORM_MAX_BYTES = 64 * 1024


# --------------------------------------------------------------------------------------------
# the JSON shapes (the XML carries the same fields; see each route)
# --------------------------------------------------------------------------------------------


class Endpoint(BaseModel):
    specification: str
    url: str
    changeset: str
    type: Literal["production", "test"]
    formats: list[str]


class Extension(BaseModel):
    name: str
    url: str
    description: str


class Discovery(BaseModel):
    changeset: str = Field(description="When the service list last changed (W3C datetime).")
    contact: str
    key_service: str
    endpoints: list[Endpoint]
    extensions: list[Extension] = Field(description="The spec extensions this endpoint speaks.")


class Service(BaseModel):
    service_code: str = Field(description="The matter code of the gridgov catalogue.")
    service_name: str
    description: str
    metadata: bool = Field(description="True: the service definition lists attributes.")
    type: Literal["realtime", "batch", "blackbox"]
    keywords: str
    group: str = Field(description="The matter's domain.")


class AttributeValue(BaseModel):
    key: str
    name: str


class Attribute(BaseModel):
    variable: bool
    code: str
    datatype: Literal["string", "number", "datetime", "text", "singlevaluelist", "multivaluelist"]
    required: bool
    datatype_description: str | None
    order: int
    description: str
    values: list[AttributeValue] = []


class ServiceDefinition(BaseModel):
    service_code: str
    attributes: list[Attribute]


class Created(BaseModel):
    service_request_id: str
    token: str
    service_notice: str
    account_id: str | None


#: Optional attributes every service takes (``attribute[landmark]=...`` when filing).
ATTRIBUTES: tuple[Attribute, ...] = (
    Attribute(
        variable=True,
        code="landmark",
        datatype="string",
        required=False,
        datatype_description="Free text, at most 200 characters.",
        order=1,
        description="A landmark, shop sign or door number near the problem, to help the unit "
        "find it.",
    ),
)


# --------------------------------------------------------------------------------------------
# discovery and services
# --------------------------------------------------------------------------------------------


def _changeset(engine: Engine, tz: ZoneInfo) -> str:
    return w3c(services_changed_at(engine), tz) or "1970-01-01T00:00:00+00:00"


@router.get(
    "/discovery.{format}",
    response_model=Discovery,
    summary="Service discovery: where the endpoint is and what it speaks",
    responses=openapi_responses(
        {
            "changeset": "2026-11-27T08:00:00+08:00",
            "contact": "The street command centre operating this service.",
            "key_service": "API keys are issued by the operators (gridgov token issue citizen).",
            "endpoints": [
                {
                    "specification": SPEC_URL,
                    "url": "https://example.org/open311/v2",
                    "changeset": "2026-11-27T08:00:00+08:00",
                    "type": "production",
                    "formats": ["application/json", "text/xml"],
                }
            ],
        },
        "<discovery><changeset>2026-11-27T08:00:00+08:00</changeset>...<endpoints><endpoint>"
        "<specification>http://wiki.open311.org/GeoReport_v2</specification>...</endpoint>"
        "</endpoints></discovery>",
    ),
)
def discovery(request: Request, engine: EngineDep, settings: SettingsDep, fmt: FormatPath) -> Any:
    changeset = _changeset(engine, ZoneInfo(settings.display_tz))
    path = request.url.path
    url = str(request.base_url).rstrip("/") + path[: path.rindex("/discovery.")]
    body = {
        "changeset": changeset,
        "contact": "The street command centre operating this service.",
        "key_service": "API keys for filing requests are issued by the operators "
        "(`gridgov token issue citizen --label <app>`).",
        "endpoints": [
            {
                "specification": SPEC_URL,
                "url": url,
                "changeset": changeset,
                "type": "production",
                "formats": ["application/json", "text/xml"],
            }
        ],
        "extensions": [
            {
                "name": "media",
                "url": EXTENSIONS_URL,
                "description": "Media handling: POST requests also takes multipart/form-data "
                "with a `media` file (JPEG, PNG or WebP); send `media_publish=true` to let "
                "GET requests show it as `media_url`.",
            }
        ],
    }
    return render(fmt, body, "discovery")


def _services(ctx: DispatchContext) -> list[dict[str, Any]]:
    services = ctx.catalog.open311_services()
    for service in services:
        service["metadata"] = bool(ATTRIBUTES)
    return services


@router.get(
    "/services.{format}",
    response_model=list[Service],
    summary="The services: one per matter of the coordination catalogue",
    responses=openapi_responses(
        [
            {
                "service_code": "FS-02",
                "service_name": "Blocked fire lane or escape route",
                "description": "Parked cars, stalls or stored goods blocking a fire lane.",
                "metadata": True,
                "type": "realtime",
                "keywords": "消防通道,fire lane",
                "group": "fire safety",
            }
        ],
        "<services><service><service_code>FS-02</service_code>...</service></services>",
    ),
)
def list_services(ctx: ContextDep, _: Jurisdiction, fmt: FormatPath) -> Any:
    return render(fmt, _services(ctx), "services", "service")


@router.get(
    "/services/{service_code}.{format}",
    response_model=ServiceDefinition,
    summary="A service definition: the optional attributes a request may carry",
    responses=openapi_responses(
        {"service_code": "FS-02", "attributes": [ATTRIBUTES[0].model_dump()]},
        "<service_definition><service_code>FS-02</service_code><attributes><attribute>"
        "<variable>true</variable><code>landmark</code>...</attribute></attributes>"
        "</service_definition>",
    ),
)
def service_definition(
    ctx: ContextDep,
    _: Jurisdiction,
    service_code: Annotated[str, Path(examples=["FS-02"])],
    fmt: FormatPath,
) -> Any:
    if service_code not in ctx.catalog:
        raise HTTPException(404, f"no service {service_code!r}")
    body = {
        "service_code": service_code,
        "attributes": [a.model_dump() for a in ATTRIBUTES],
    }
    return render(fmt, body, "service_definition")


# --------------------------------------------------------------------------------------------
# filing a request
# --------------------------------------------------------------------------------------------

_FORM_FIELDS: dict[str, tuple[str, str]] = {
    "api_key": ("string", "Required. An API key issued to the app (gridgov token issue)."),
    "jurisdiction_id": ("string", "Optional; this service's jurisdiction when given."),
    "service_code": ("string", "Required. The matter code (GET services)."),
    "lat": ("number", "Required: the problem's latitude (this service does not geocode)."),
    "long": ("number", "Required: the problem's longitude."),
    "crs": ("string", "Extension: wgs84 (default), gcj02 (AMap, Tencent) or bd09 (Baidu)."),
    "address_string": ("string", "Optional, kept with the description; lat/long locate."),
    "address_id": ("string", "Not supported: send lat/long."),
    "description": ("string", "What is wrong (at most 4,000 characters)."),
    "media_url": ("string", "An http(s) URL of a photo."),
    "media": ("string", "Extension (multipart/form-data only): a JPEG, PNG or WebP photo."),
    "media_publish": ("string", "Extension: true to show the media photo as media_url."),
    "email": ("string", "Optional contact for the outcome notice; never shown by GET."),
    "phone": ("string", "Optional contact; never shown by GET."),
    "first_name": ("string", "Optional; never shown by GET."),
    "last_name": ("string", "Optional; never shown by GET."),
    "device_id": ("string", "Optional; never shown by GET."),
    "account_id": ("string", "Optional; kept with the contacts, never echoed or shown by GET."),
    "attribute[landmark]": ("string", "Optional attribute (see the service definition)."),
}

_POST_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/x-www-form-urlencoded": {
                "schema": {
                    "type": "object",
                    "required": ["api_key", "service_code", "lat", "long"],
                    "properties": {
                        name: {"type": kind, "description": text}
                        for name, (kind, text) in _FORM_FIELDS.items()
                    },
                },
                "example": {
                    "api_key": "gg_0123456789abcdef_secret",
                    "service_code": "FS-02",
                    "lat": "30.6843",
                    "long": "104.0551",
                    "description": "Cars parked across the fire lane behind building 3.",
                    "phone": "13800000000",
                    "attribute[landmark]": "behind the 7-Eleven",
                },
            },
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["api_key", "service_code", "lat", "long"],
                    "properties": {
                        name: {"type": kind, "description": text}
                        | ({"format": "binary"} if name == "media" else {})
                        for name, (kind, text) in _FORM_FIELDS.items()
                    },
                },
            },
        },
    }
}


async def read_form(request: Request) -> dict[str, str]:
    """The form-encoded body (the spec's POST encoding), or the media extension's multipart
    one, field by field.

    Parsed here rather than by FastAPI's ``Form`` so that the ``attribute[code]`` fields,
    whose names are not known in advance, come through.
    """
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        return await _read_multipart(request)
    if content_type != "application/x-www-form-urlencoded":
        raise HTTPException(
            415,
            "send the request form-encoded (application/x-www-form-urlencoded), as "
            "GeoReport v2 specifies, or as multipart/form-data with a media file",
        )
    body = await request.body()
    if len(body) > _FORM_MAX_BYTES:
        raise HTTPException(413, f"the form is larger than {_FORM_MAX_BYTES} bytes")
    try:
        pairs = parse_qsl(
            body.decode("utf-8"), keep_blank_values=True, encoding="utf-8", errors="strict"
        )
    except (UnicodeDecodeError, ValueError):
        raise invalid(
            [("body", "body", "not valid form encoding (UTF-8, percent-encoded)")]
        ) from None
    return {name: value.strip() for name, value in pairs}


async def _read_multipart(request: Request) -> dict[str, str]:
    """The media extension's multipart form: the text fields, and the ``media`` file kept on
    ``request.state.open311_media`` as ``(name, bytes)`` (the size limit was enforced while
    the body streamed in: :mod:`api.body_limit`)."""
    form = await request.form(max_files=1, max_fields=100, max_part_size=_FORM_MAX_BYTES)
    fields: dict[str, str] = {}
    for name, value in form.multi_items():
        if isinstance(value, str):
            fields[name] = value.strip()
        elif name == "media":
            data = await value.read()
            # A form whose file input was left empty sends an empty part: no photo.
            if data or value.filename:
                request.state.open311_media = (value.filename or "media", data)
        else:
            raise invalid([("body", name, "only the media field may carry a file")])
    return fields


Form = Annotated[dict[str, str], Depends(read_form)]


def _citizen(request: Request, engine: Engine, api_key: str | None) -> store.Credential:
    """The credential of a live citizen API key (403 otherwise)."""
    if not api_key:
        raise HTTPException(403, "api_key is required to file a request")
    credential = store.resolve_credential(engine, api_key)
    if credential is None or credential.kind != "api_key" or credential.role != "citizen":
        note_failed_auth(request, api_key)
        raise HTTPException(403, "api_key is unknown, revoked or expired")
    return credential


def _number(form: Mapping[str, str], name: str, problems: list[tuple[str, str, str]]) -> float:
    try:
        value = float(form[name])
    except ValueError:
        problems.append(("body", name, "must be a number (decimal degrees)"))
        return float("nan")
    if not np.isfinite(value):
        problems.append(("body", name, "must be a finite number"))
    return value


def _parse_filing(form: Mapping[str, str]) -> tuple[float, float, str, dict[str, str]]:
    """Check every field, then raise one error that names each bad one (the matter and the
    point are the intake's to check)."""
    problems: list[tuple[str, str, str]] = []
    if not form.get("service_code", ""):
        problems.append(("body", "service_code", "is required (see GET services)"))
    lat = _number(form, "lat", problems)
    lon = _number(form, "long", problems)
    crs = form.get("crs") or "wgs84"
    if crs not in ("wgs84", "gcj02", "bd09"):
        problems.append(("body", "crs", "must be wgs84, gcj02 or bd09"))
    if len(form.get("description", "")) > DESCRIPTION_MAX:
        problems.append(("body", "description", f"is longer than {DESCRIPTION_MAX} characters"))
    media = form.get("media_url", "")
    if media:
        parts = urlsplit(media)
        if parts.scheme not in ("http", "https") or not parts.netloc or len(media) > 2000:
            problems.append(("body", "media_url", "must be an http(s) URL"))
    for name in (
        "email",
        "phone",
        "first_name",
        "last_name",
        "device_id",
        "account_id",
        "address_string",
    ):
        if len(form.get(name, "")) > _CONTACT_MAX:
            problems.append(("body", name, f"is longer than {_CONTACT_MAX} characters"))
    known = {a.code for a in ATTRIBUTES}
    attributes = {}
    for name, value in form.items():
        if not name.startswith("attribute["):
            continue
        attr = name[len("attribute[") : -1] if name.endswith("]") else ""
        if attr not in known:
            listed = ", ".join(sorted(known)) or "none"
            problems.append(("body", name, f"unknown attribute (this service takes {listed})"))
        elif len(value) > _CONTACT_MAX:
            problems.append(("body", name, f"is longer than {_CONTACT_MAX} characters"))
        elif value:
            attributes[attr] = value
    if problems:
        raise invalid(problems)
    return lon, lat, crs, attributes


def _stored_description(form: Mapping[str, str], attributes: Mapping[str, str]) -> str | None:
    # A reporter's own "[Open311] " lines are defused so GET cannot mistake them for ours.
    text = form.get("description", "").replace(EXTRA_PREFIX, "(Open311) ")
    extras = {
        "address_string": form.get("address_string", ""),
        **{f"attribute[{k}]": v for k, v in attributes.items()},
        "media_url": form.get("media_url", ""),
    }
    lines = [f"{EXTRA_PREFIX}{name}: {value}" for name, value in extras.items() if value]
    if not lines:
        return text or None
    return "\n".join([text, *lines]) if text else "\n".join(lines)


def _reporter(form: Mapping[str, str], credential_id: str) -> str:
    """Who to tell the outcome: the contacts given (kept private), and always the app's key."""
    name = " ".join(p for p in (form.get("first_name", ""), form.get("last_name", "")) if p)
    parts = [
        f"{label}:{value}"
        for label, value in (
            ("email", form.get("email", "")),
            ("phone", form.get("phone", "")),
            ("name", name),
            ("account", form.get("account_id", "")),
            ("device", form.get("device_id", "")),
        )
        if value
    ]
    return "; ".join([*parts, f"api_key:{credential_id}"])


@router.post(
    "/requests.{format}",
    status_code=201,
    response_model=list[Created],
    summary="File a service request (form-encoded, with an api_key)",
    description="Takes the GeoReport v2 form fields; `lat` and `long` are required (addresses "
    "are not geocoded), `crs` says whether they are WGS84 (default), GCJ-02 or BD-09. The "
    "request is registered and dispatched at once. A report of the same matter close to an "
    "open request is kept and linked to it: the answer is still 201, and its `service_notice` "
    "names the open request. Honours `Idempotency-Key`.",
    openapi_extra=_POST_OPENAPI,
    responses={
        201: {
            "content": {
                "application/json": {
                    "example": [
                        {
                            "service_request_id": "O311-20261127T101500-1a2b3c4d",
                            "token": "O311-20261127T101500-1a2b3c4d",
                            "service_notice": "Received and dispatched to 西安路综合执法中队 "
                            "(综合执法局).",
                            "account_id": None,
                        }
                    ]
                },
                "text/xml": {
                    "schema": {"type": "string"},
                    "example": "<service_requests><request><service_request_id>O311-..."
                    "</service_request_id>...</request></service_requests>",
                },
            }
        }
    },
)
def create_request(
    request: Request,
    engine: EngineDep,
    ctx: ContextDep,
    settings: SettingsDep,
    form: Form,
    fmt: FormatPath,
) -> Any:
    citizen = _citizen(request, engine, form.get("api_key"))
    credential_id = citizen.credential_id
    check_jurisdiction(
        ctx, settings, form.get("jurisdiction_id") or request.query_params.get("jurisdiction_id")
    )
    if not form.get("lat") or not form.get("long"):
        raise HTTPException(
            400,
            "lat and long are required: this service cannot geocode address_string or "
            "address_id; send the problem's position (WGS84, or say crs=gcj02 or crs=bd09)",
        )
    lon, lat, crs, attributes = _parse_filing(form)
    upload = getattr(request.state, "open311_media", None)
    # Checked before the report is taken: a bad photo refuses the request, nothing stored.
    photos = media.check_photos([upload] if upload else [], settings)
    try:
        report = intake.report(
            engine,
            ctx,
            matter_code=form["service_code"],
            lon=lon,
            lat=lat,
            crs=crs,
            id_prefix="O311",
            source=SOURCE,
            reporter=_reporter(form, credential_id),
            description=_stored_description(form, attributes),
            scope=scope_for(citizen),
            actor=f"citizen:{credential_id}",
            role="system",
        )
    except UnknownMatterError as exc:
        raise invalid([("body", "service_code", str(exc))]) from None
    media.attach(
        engine,
        settings,
        report.incident_id,
        "report",
        photos,
        actor=f"citizen:{credential_id}",
        public=form.get("media_publish", "").lower() == "true",
    )
    if report.duplicate_of is not None:
        notice = (
            f"This repeats open request {report.duplicate_of} (the same matter close by); it "
            "is linked to it, and the outcome of that request will be yours."
        )
    elif report.state == str(State.DISPATCHED):
        rows = read_requests(engine, 1, incident_ids=[report.incident_id])
        agency = rows[0]["agency"] if rows else None
        notice = f"Received and dispatched to {agency}." if agency else "Received and dispatched."
    elif report.state == str(State.REGISTERED) and report.dispatch_mode == "confirm":
        notice = "Received and registered; a dispatcher will confirm who is sent."
    elif report.state == str(State.REGISTERED):
        notice = "Received and registered; a unit will be dispatched as soon as one is free."
    else:
        notice = "Received; a dispatcher will register it."
    answer = {
        "service_request_id": report.incident_id,
        "token": report.incident_id,
        "service_notice": notice,
        # Not echoed: the answer is stored for Idempotency-Key replays, and an account id is
        # the reporter's personal data, which lives in the (erasable) reporters table only.
        "account_id": None,
    }
    return render(fmt, [answer], "service_requests", "request", status=201)


# The reading side's routes (GET requests, one request, a token), after the filing route.
router.include_router(open311_lists.router)
