"""Open311 GeoReport v2: the matters catalogue as services, incidents as service requests.

Citizens' and field staff's phone apps speak GeoReport v2 (http://wiki.open311.org/GeoReport_v2)
here, mounted at ``/open311/v2``. Every resource answers in JSON or XML as its extension asks
(``services.json``, ``services.xml``), and errors come back in the spec's error list, in the
same format, from :mod:`api.error_answers`.

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

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import parse_qsl, urlsplit
from xml.etree import ElementTree as ET
from zoneinfo import ZoneInfo

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from api.deps import ContextDep, EngineDep, ReadEngineDep, SettingsDep
from api.rate_limits import note_failed_auth
from api.schemas import Crs
from gridgov import store
from gridgov.crs import from_wgs84
from gridgov.dispatch import DispatchContext
from gridgov.errors import InputError, UnknownMatterError
from gridgov.service import intake, media
from gridgov.service.clock import check_year
from gridgov.service.scope import OPEN311_SOURCE, PUBLIC, PUBLIC_COARSE_DECIMALS, scope_for
from gridgov.settings import Settings
from gridgov.store.service_requests import (
    read_service_requests,
    request_for_token,
    services_changed_at,
)
from gridgov.text_rules import xml_text
from gridgov.workflow import State

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

__all__ = ["CLOSED_STATES", "MAX_REQUESTS", "SOURCE", "WINDOW", "router"]

router = APIRouter(tags=["open311"])

#: The most requests one ``GET requests`` answers (newest first); narrow the filters for more.
MAX_REQUESTS = 1000
#: Requests per page of a list when the client names no page_size.
PAGE_SIZE = 100
#: The default and the longest date window of ``GET requests`` (the spec's 90 days).
WINDOW = timedelta(days=90)
#: Workflow states reported as ``closed``; every other state is ``open``.
CLOSED_STATES = frozenset(
    str(s) for s in (State.CLOSED, State.EVALUATED, State.REJECTED, State.CANCELLED)
)
#: ``incidents.source`` of requests filed here (only these have tokens).
SOURCE = OPEN311_SOURCE
SPEC_URL = "http://wiki.open311.org/GeoReport_v2"
EXTENSIONS_URL = "http://wiki.open311.org/GeoReport_v2/Extensions/"
#: The spec caps a description at 4,000 characters.
DESCRIPTION_MAX = 4000
_CONTACT_MAX = 200
_FORM_MAX_BYTES = 64 * 1024
_EXTRA = "[Open311] "
_XML_MEDIA = "text/xml; charset=utf-8"
#: States whose units are out on the incident: only then does a resolve deadline run.
_WORKING = frozenset(str(s) for s in (State.DISPATCHED, State.ACKNOWLEDGED, State.ON_SCENE))
#: What a request's status note says when its latest event gave no reason.
_STATE_NOTES = {
    State.REPORTED: "Received; a dispatcher will register it.",
    State.REGISTERED: "Registered; waiting for a unit to be dispatched.",
    State.DISPATCHED: "A unit has been dispatched.",
    State.ACKNOWLEDGED: "The responsible department has acknowledged it.",
    State.ON_SCENE: "Staff are on scene.",
    State.RESOLVED: "Resolved; waiting for verification on site.",
    State.VERIFIED: "Verified on site.",
    State.CLOSED: "Closed.",
    State.EVALUATED: "Closed; the reporter's evaluation is recorded.",
    State.REJECTED: "Rejected.",
    State.CANCELLED: "Cancelled.",
}

Format = Literal["json", "xml"]
FormatPath = Annotated[
    Format, Path(alias="format", description="Answer format: the resource's extension.")
]


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


class ServiceRequest(BaseModel):
    service_request_id: str
    status: Literal["open", "closed"]
    status_notes: str | None = Field(description="The latest outcome or reason.")
    service_name: str | None
    service_code: str
    description: str | None
    agency_responsible: str | None = Field(
        description="The office (and department) of the lead unit, once one is dispatched."
    )
    service_notice: str | None
    requested_datetime: str
    updated_datetime: str
    expected_datetime: str | None = Field(
        description="The matter's resolve deadline, counted from dispatch, while units work."
    )
    address: str | None
    address_id: str | None
    zipcode: str | None
    lat: float
    long: float
    media_url: str | None


class Created(BaseModel):
    service_request_id: str
    token: str
    service_notice: str
    account_id: str | None


class Token(BaseModel):
    service_request_id: str
    token: str


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
# rendering
# --------------------------------------------------------------------------------------------

# Tags of the items of a list-valued element, as the spec's XML examples name them.
_ITEM_TAGS = {
    "endpoints": "endpoint",
    "formats": "format",
    "attributes": "attribute",
    "values": "value",
    "extensions": "extension",
}


def _fill(element: ET.Element, value: Any) -> None:
    if isinstance(value, Mapping):
        for key, item in value.items():
            _fill(ET.SubElement(element, key), item)
    elif isinstance(value, list | tuple):
        tag = _ITEM_TAGS.get(element.tag, "item")
        for item in value:
            _fill(ET.SubElement(element, tag), item)
    elif isinstance(value, bool):
        element.text = "true" if value else "false"
    elif value is not None:
        element.text = xml_text(str(value))


def _render(
    fmt: Format, payload: Any, root: str, item: str | None = None, status: int = 200
) -> Response:
    """The answer in ``fmt``: a list of ``item`` elements under ``root``, or ``root`` itself."""
    if fmt == "json":
        return JSONResponse(payload, status_code=status)
    element = ET.Element(root)
    if item is None:
        _fill(element, payload)
    else:
        for entry in payload:
            _fill(ET.SubElement(element, item), entry)
    body = b'<?xml version="1.0" encoding="utf-8"?>' + ET.tostring(element, encoding="utf-8")
    return Response(body, status_code=status, media_type=_XML_MEDIA)


def _responses(example: Any, xml_example: str) -> dict[int | str, dict[str, Any]]:
    return {
        200: {
            "content": {
                "application/json": {"example": example},
                "text/xml": {"schema": {"type": "string"}, "example": xml_example},
            }
        }
    }


def _w3c(when: datetime | None, tz: ZoneInfo) -> str | None:
    return None if when is None else when.astimezone(tz).isoformat(timespec="seconds")


def _invalid(problems: Sequence[tuple[str, str, str]]) -> RequestValidationError:
    """A validation error naming each field: ``(where, field, message)`` triples."""
    return RequestValidationError(
        [
            {"loc": (where, name), "msg": message, "type": "value_error"}
            for where, name, message in problems
        ]
    )


# --------------------------------------------------------------------------------------------
# jurisdiction
# --------------------------------------------------------------------------------------------


def jurisdiction_of(ctx: DispatchContext, settings: Settings) -> str | None:
    """The jurisdiction_id this service answers for: the setting, else the district's code."""
    if settings.open311_jurisdiction:
        return settings.open311_jurisdiction
    gdf = ctx.gdf_areas
    codes = gdf.loc[gdf["level"].astype(str) == "district", "code"]
    return str(codes.iloc[0]) if len(codes) else None


def _check_jurisdiction(ctx: DispatchContext, settings: Settings, given: str | None) -> None:
    # Absent is fine: this service answers for one jurisdiction only.
    if given is None or given == "":
        return
    ours = jurisdiction_of(ctx, settings)
    if given != ours:
        raise HTTPException(
            404, f"unknown jurisdiction_id {given!r}; this service answers for {ours!r}"
        )


def jurisdiction_query(
    ctx: ContextDep,
    settings: SettingsDep,
    jurisdiction_id: Annotated[
        str | None,
        Query(
            description="Optional; when given it must be this service's jurisdiction (the "
            "district code by default).",
            examples=["510106000000"],
        ),
    ] = None,
) -> None:
    _check_jurisdiction(ctx, settings, jurisdiction_id)


Jurisdiction = Annotated[None, Depends(jurisdiction_query)]


# --------------------------------------------------------------------------------------------
# discovery and services
# --------------------------------------------------------------------------------------------


def _changeset(engine: Engine, tz: ZoneInfo) -> str:
    return _w3c(services_changed_at(engine), tz) or "1970-01-01T00:00:00+00:00"


@router.get(
    "/discovery.{format}",
    response_model=Discovery,
    summary="Service discovery: where the endpoint is and what it speaks",
    responses=_responses(
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
    return _render(fmt, body, "discovery")


def _services(ctx: DispatchContext) -> list[dict[str, Any]]:
    services = ctx.catalog.open311_services()
    for service in services:
        service["metadata"] = bool(ATTRIBUTES)
    return services


@router.get(
    "/services.{format}",
    response_model=list[Service],
    summary="The services: one per matter of the coordination catalogue",
    responses=_responses(
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
    return _render(fmt, _services(ctx), "services", "service")


@router.get(
    "/services/{service_code}.{format}",
    response_model=ServiceDefinition,
    summary="A service definition: the optional attributes a request may carry",
    responses=_responses(
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
    return _render(fmt, body, "service_definition")


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
        raise _invalid(
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
            raise _invalid([("body", name, "only the media field may carry a file")])
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
        raise _invalid(problems)
    return lon, lat, crs, attributes


def _stored_description(form: Mapping[str, str], attributes: Mapping[str, str]) -> str | None:
    # A reporter's own "[Open311] " lines are defused so GET cannot mistake them for ours.
    text = form.get("description", "").replace(_EXTRA, "(Open311) ")
    extras = {
        "address_string": form.get("address_string", ""),
        **{f"attribute[{k}]": v for k, v in attributes.items()},
        "media_url": form.get("media_url", ""),
    }
    lines = [f"{_EXTRA}{name}: {value}" for name, value in extras.items() if value]
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
    _check_jurisdiction(
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
        raise _invalid([("body", "service_code", str(exc))]) from None
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
        rows = _read_requests(engine, 1, incident_ids=[report.incident_id])
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
    return _render(fmt, [answer], "service_requests", "request", status=201)


# --------------------------------------------------------------------------------------------
# reading requests
# --------------------------------------------------------------------------------------------


def _read_requests(
    engine: Engine, limit: int, offset: int = 0, **filters: Any
) -> list[dict[str, Any]]:
    """Service requests matching ``filters`` (newest first, at most ``limit`` after skipping
    ``offset``), as the public may read them: Open311 reads carry no credential, so their
    scope is the public's."""
    return read_service_requests(
        engine, limit=limit, offset=offset, **filters, **PUBLIC.service_request_filters()
    )


def _split_description(text: str | None, source: str | None) -> tuple[str | None, dict[str, str]]:
    """The reporter's words, and the spec fields this module stored after them."""
    if not text or source != SOURCE:
        return text, {}
    kept, extras = [], {}
    for line in text.split("\n"):
        name, sep, value = line.removeprefix(_EXTRA).partition(": ")
        if line.startswith(_EXTRA) and sep:
            extras[name] = value
        else:
            kept.append(line)
    return "\n".join(kept) or None, extras


def _area_names(ctx: DispatchContext) -> dict[str, str]:
    """Names of the levels an address names (not the ten thousand micro-grids)."""
    gdf = ctx.gdf_areas
    gdf = gdf[gdf["level"].astype(str).isin(["district", "street", "community"])]
    return dict(zip(gdf["code"].astype(str), gdf["name"].astype(str), strict=True))


def _address(names: Mapping[str, str], codes: Iterable[str | None]) -> str | None:
    parts = [names[c] for c in codes if c is not None and c in names]
    return ", ".join(parts) or None


def _service_requests(
    rows: Sequence[Mapping[str, Any]], ctx: DispatchContext, settings: Settings, crs: str
) -> list[dict[str, Any]]:
    tz = ZoneInfo(settings.display_tz)
    if not rows:
        return []
    xs, ys = from_wgs84(
        [float(r["geometry"].x) for r in rows], [float(r["geometry"].y) for r in rows], crs
    )
    gdf = ctx.gdf_areas
    district = gdf.loc[gdf["level"].astype(str) == "district", "code"]
    district_code = str(district.iloc[0]) if len(district) else None
    names = _area_names(ctx)
    out = []
    for row, x, y in zip(rows, xs, ys, strict=True):
        try:
            matter = ctx.catalog.get(row["matter_code"])
        except UnknownMatterError:
            matter = None
        description, extras = _split_description(row["description"], row["source"])
        digits = 7
        if not PUBLIC.shows_request_in_full(row["source"]):
            # A staff report was never published: no words, no media, a rough position.
            description, extras, digits = None, {}, PUBLIC_COARSE_DECIMALS
        state = row["status"]
        note = row["note_reason"]
        if not note and row["note_state"] is not None:
            note = _STATE_NOTES.get(State(row["note_state"]))
        expected = None
        if matter is not None and state in _WORKING and row["dispatched_at"] is not None:
            expected = row["dispatched_at"] + timedelta(hours=matter.resolve_h)
        address = extras.get("address_string") or _address(
            names, (row["community_code"], row["street_code"], district_code)
        )
        out.append(
            {
                "service_request_id": row["incident_id"],
                "status": "closed" if state in CLOSED_STATES else "open",
                "status_notes": note,
                "service_name": None if matter is None else matter.name_en,
                "service_code": row["matter_code"],
                "description": description,
                "agency_responsible": row["agency"],
                "service_notice": None
                if row["duplicate_of"] is None
                else f"Duplicates request {row['duplicate_of']}; its outcome applies.",
                "requested_datetime": _w3c(row["reported_at"], tz),
                "updated_datetime": _w3c(row["updated_at"], tz),
                "expected_datetime": _w3c(expected, tz),
                "address": address,
                "address_id": None,
                "zipcode": None,
                "lat": round(float(y), digits),
                "long": round(float(x), digits),
                "media_url": extras.get("media_url"),
            }
        )
    return out


def _with_media(
    request: Request, engine: Engine, answer: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """``media_url`` of the photos their reporters agreed to publish (others show none)."""
    published = media.public_photos(engine, [r["service_request_id"] for r in answer])
    base = str(request.base_url).rstrip("/")
    for item in answer:
        media_id = published.get(item["service_request_id"])
        if media_id is not None:
            item["media_url"] = f"{base}/open311/v2/media/{item['service_request_id']}/{media_id}"
    return answer


def _csv(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def _parse_when(
    value: str | None, name: str, tz: ZoneInfo, problems: list[tuple[str, str, str]]
) -> datetime | None:
    if value is None or value == "":
        return None
    try:
        when = check_year(datetime.fromisoformat(value), name)
    except ValueError:
        problems.append(("query", name, "must be a W3C datetime such as 2026-11-01T00:00:00Z"))
        return None
    except InputError as exc:
        problems.append(("query", name, str(exc)))
        return None
    # A date or time without an offset is read in the jurisdiction's own time zone.
    return when if when.tzinfo is not None else when.replace(tzinfo=tz)


def _window(
    start: datetime | None, end: datetime | None, now: datetime
) -> tuple[datetime, datetime]:
    if start is None and end is None:
        return now - WINDOW, now
    if start is None:
        assert end is not None
        return end - WINDOW, end
    if end is None:
        return start, start + WINDOW
    if end < start:
        raise _invalid([("query", "end_date", "must not be before start_date")])
    if end - start > WINDOW:
        raise _invalid(
            [("query", "end_date", f"the span from start_date may not exceed {WINDOW.days} days")]
        )
    return start, end


_REQUEST_EXAMPLE = {
    "service_request_id": "O311-20261127T101500-1a2b3c4d",
    "status": "open",
    "status_notes": "A unit has been dispatched.",
    "service_name": "Blocked fire lane or escape route",
    "service_code": "FS-02",
    "description": "Cars parked across the fire lane behind building 3.",
    "agency_responsible": "西安路综合执法中队 (综合执法局)",
    "service_notice": None,
    "requested_datetime": "2026-11-27T18:15:00+08:00",
    "updated_datetime": "2026-11-27T18:15:01+08:00",
    "expected_datetime": "2026-11-28T06:15:01+08:00",
    "address": "X社区, 西安路街道, 金牛区",
    "address_id": None,
    "zipcode": None,
    "lat": 30.6843,
    "long": 104.0551,
    "media_url": None,
}
_REQUESTS_XML = (
    "<service_requests><request><service_request_id>O311-20261127T101500-1a2b3c4d"
    "</service_request_id><status>open</status>...</request></service_requests>"
)


@router.get(
    "/requests.{format}",
    response_model=list[ServiceRequest],
    summary="Service requests, newest first, a page at a time",
    description="Filters combine. `service_request_id` (comma-separated) overrides all the "
    "others. Without dates the window is the last 90 days; a window may not span more than "
    f"90 days. Pages of `page_size` requests (default {PAGE_SIZE}, at most {MAX_REQUESTS}), "
    "newest first, numbered from 1 by `page` (the GeoReport v2 paging extension): when "
    'another page follows, the `Link` header names it (`rel="next"`) and `X-More-Pages` is '
    "`true`. Reporters' contact details are never returned.",
    responses=_responses([_REQUEST_EXAMPLE], _REQUESTS_XML),
)
def list_requests(
    request: Request,
    engine: ReadEngineDep,
    ctx: ContextDep,
    settings: SettingsDep,
    _: Jurisdiction,
    fmt: FormatPath,
    service_request_id: Annotated[
        str | None, Query(description="Comma-separated ids; overrides every other filter.")
    ] = None,
    service_code: Annotated[
        str | None, Query(description="Comma-separated service codes.", examples=["FS-02"])
    ] = None,
    start_date: Annotated[
        str | None,
        Query(description="Earliest requested_datetime (W3C).", examples=["2026-11-01T00:00:00Z"]),
    ] = None,
    end_date: Annotated[str | None, Query(description="Latest requested_datetime (W3C).")] = None,
    status: Annotated[
        str | None, Query(description="open, closed, or both comma-separated.")
    ] = None,
    crs: Crs = "wgs84",
    page: Annotated[int, Query(ge=1, le=100_000, description="Page number, from 1.")] = 1,
    page_size: Annotated[
        int, Query(ge=1, le=MAX_REQUESTS, description="Requests per page.")
    ] = PAGE_SIZE,
) -> Any:
    tz = ZoneInfo(settings.display_tz)
    ids = _csv(service_request_id)
    if ids:
        if len(ids) > MAX_REQUESTS:
            raise _invalid([("query", "service_request_id", f"at most {MAX_REQUESTS} ids at once")])
        filters: dict[str, Any] = {"incident_ids": ids}
    else:
        filters = _filters(ctx, tz, service_code, start_date, end_date, status)
    # One row past the page says whether another page follows.
    rows = _read_requests(engine, page_size + 1, offset=(page - 1) * page_size, **filters)
    more = len(rows) > page_size
    listed = _with_media(request, engine, _service_requests(rows[:page_size], ctx, settings, crs))
    answer = _render(fmt, listed, "service_requests", "request")
    links = []
    if more:
        links.append(f'<{request.url.include_query_params(page=page + 1)}>; rel="next"')
    if page > 1:
        links.append(f'<{request.url.include_query_params(page=page - 1)}>; rel="prev"')
    if links:
        answer.headers["Link"] = ", ".join(links)
    answer.headers["X-More-Pages"] = "true" if more else "false"
    return answer


def _filters(
    ctx: DispatchContext,
    tz: ZoneInfo,
    service_code: str | None,
    start_date: str | None,
    end_date: str | None,
    status: str | None,
) -> dict[str, Any]:
    """The store's filters for a list of requests (the query's own, checked)."""
    problems: list[tuple[str, str, str]] = []
    codes = _csv(service_code)
    unknown = [c for c in codes if c not in ctx.catalog]
    if unknown:
        problems.append(("query", "service_code", f"unknown {', '.join(unknown)}"))
    statuses = set(_csv(status))
    if statuses - {"open", "closed"}:
        problems.append(("query", "status", "must be open, closed or open,closed"))
    start = _parse_when(start_date, "start_date", tz, problems)
    end = _parse_when(end_date, "end_date", tz, problems)
    if problems:
        raise _invalid(problems)
    start, end = _window(start, end, datetime.now(UTC))
    filters: dict[str, Any] = {"reported_from": start, "reported_to": end, "matter_codes": codes}
    if statuses == {"open"}:
        filters["exclude_statuses"] = sorted(CLOSED_STATES)
    elif statuses == {"closed"}:
        filters["statuses"] = sorted(CLOSED_STATES)
    return filters


@router.get(
    "/requests/{service_request_id}.{format}",
    response_model=list[ServiceRequest],
    summary="One service request",
    responses=_responses([_REQUEST_EXAMPLE], _REQUESTS_XML),
)
def get_request(
    request: Request,
    engine: EngineDep,
    ctx: ContextDep,
    settings: SettingsDep,
    _: Jurisdiction,
    service_request_id: Annotated[str, Path(examples=["O311-20261127T101500-1a2b3c4d"])],
    fmt: FormatPath,
    crs: Crs = "wgs84",
) -> Any:
    rows = _read_requests(engine, 1, incident_ids=[service_request_id])
    if not rows:
        raise HTTPException(404, f"no service request {service_request_id!r}")
    answer = _with_media(request, engine, _service_requests(rows, ctx, settings, crs))
    return _render(fmt, answer, "service_requests", "request")


@router.get(
    "/tokens/{token}.{format}",
    response_model=list[Token],
    summary="The service request a token stands for",
    responses=_responses(
        [
            {
                "service_request_id": "O311-20261127T101500-1a2b3c4d",
                "token": "O311-20261127T101500-1a2b3c4d",
            }
        ],
        "<service_requests><request><service_request_id>O311-...</service_request_id>"
        "<token>O311-...</token></request></service_requests>",
    ),
)
def get_token(
    engine: EngineDep,
    _: Jurisdiction,
    token: Annotated[str, Path(examples=["O311-20261127T101500-1a2b3c4d"])],
    fmt: FormatPath,
) -> Any:
    # Requests filed here get their id as token at once; other channels' incidents have none.
    found = request_for_token(engine, token, source=SOURCE)
    if found is None:
        raise HTTPException(404, f"no service request for token {token!r}")
    body = [{"service_request_id": found, "token": token}]
    return _render(fmt, body, "service_requests", "request")
