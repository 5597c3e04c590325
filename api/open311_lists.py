"""Open311 reads: service requests from the store's rows to JSON or XML, a page at a time.

``GET requests`` (filtered, newest first, in pages of ``page_size`` numbered by ``page``, the
GeoReport v2 paging extension: a ``Link`` header and ``X-More-Pages`` say when another page
follows), ``GET requests/{id}`` and ``GET tokens/{token}``. Rows come from
:mod:`gridgov.store.service_requests` as the public may read them; a staff report is shown
without its words and media and with a rough position.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any, Literal
from zoneinfo import ZoneInfo

from fastapi import APIRouter, HTTPException, Path, Query, Request
from pydantic import BaseModel, Field

from api.deps import ContextDep, EngineDep, ReadEngineDep, SettingsDep
from api.open311_answers import (
    EXTRA_PREFIX,
    SOURCE,
    FormatPath,
    Jurisdiction,
    invalid,
    openapi_responses,
    render,
    w3c,
)
from api.schemas import Crs
from gridgov.crs import from_wgs84
from gridgov.dispatch import DispatchContext
from gridgov.errors import InputError, UnknownMatterError
from gridgov.service import media
from gridgov.service.clock import check_year
from gridgov.service.scope import PUBLIC, PUBLIC_COARSE_DECIMALS
from gridgov.settings import Settings
from gridgov.store.service_requests import read_service_requests, request_for_token
from gridgov.workflow import State

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

__all__ = ["CLOSED_STATES", "MAX_REQUESTS", "PAGE_SIZE", "WINDOW", "router"]

# Tagged "open311" by the router that mounts it (api.open311.router).
router = APIRouter()

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


# --------------------------------------------------------------------------------------------
# the JSON shapes (the XML carries the same fields)
# --------------------------------------------------------------------------------------------


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


class Token(BaseModel):
    service_request_id: str
    token: str


# --------------------------------------------------------------------------------------------
# reading requests
# --------------------------------------------------------------------------------------------


def read_requests(
    engine: Engine, limit: int, offset: int = 0, **filters: Any
) -> list[dict[str, Any]]:
    """Service requests matching ``filters`` (newest first, at most ``limit`` after skipping
    ``offset``), as the public may read them: Open311 reads carry no credential, so their
    scope is the public's."""
    return read_service_requests(
        engine, limit=limit, offset=offset, **filters, **PUBLIC.service_request_filters()
    )


def _split_description(text: str | None, source: str | None) -> tuple[str | None, dict[str, str]]:
    """The reporter's words, and the spec fields filing (api.open311) stored after them."""
    if not text or source != SOURCE:
        return text, {}
    kept, extras = [], {}
    for line in text.split("\n"):
        name, sep, value = line.removeprefix(EXTRA_PREFIX).partition(": ")
        if line.startswith(EXTRA_PREFIX) and sep:
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
                "requested_datetime": w3c(row["reported_at"], tz),
                "updated_datetime": w3c(row["updated_at"], tz),
                "expected_datetime": w3c(expected, tz),
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
        raise invalid([("query", "end_date", "must not be before start_date")])
    if end - start > WINDOW:
        raise invalid(
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
    responses=openapi_responses([_REQUEST_EXAMPLE], _REQUESTS_XML),
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
            raise invalid([("query", "service_request_id", f"at most {MAX_REQUESTS} ids at once")])
        filters: dict[str, Any] = {"incident_ids": ids}
    else:
        filters = _filters(ctx, tz, service_code, start_date, end_date, status)
    # One row past the page says whether another page follows.
    rows = read_requests(engine, page_size + 1, offset=(page - 1) * page_size, **filters)
    more = len(rows) > page_size
    listed = _with_media(request, engine, _service_requests(rows[:page_size], ctx, settings, crs))
    answer = render(fmt, listed, "service_requests", "request")
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
        raise invalid(problems)
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
    responses=openapi_responses([_REQUEST_EXAMPLE], _REQUESTS_XML),
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
    rows = read_requests(engine, 1, incident_ids=[service_request_id])
    if not rows:
        raise HTTPException(404, f"no service request {service_request_id!r}")
    answer = _with_media(request, engine, _service_requests(rows, ctx, settings, crs))
    return render(fmt, answer, "service_requests", "request")


@router.get(
    "/tokens/{token}.{format}",
    response_model=list[Token],
    summary="The service request a token stands for",
    responses=openapi_responses(
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
    return render(fmt, body, "service_requests", "request")
