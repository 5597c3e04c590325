"""The command centre's live wall display: the page at ``/`` and its feed.

``GET /`` is the command-centre map (areas, viewport hooks for micro-grids and roads, legend),
public like the areas themselves: it holds no incident and no unit. The page takes a bearer
token from its URL fragment (``/#token=gg_...``: a fragment never reaches the server, logs or
proxies), keeps it in ``sessionStorage`` and polls ``GET /api/v1/live`` with it about once a
second. The feed answers what changed in the caller's scope since the cursor the page sends
back, and 304 when nothing did; see :mod:`gridgov.store.live_feed` for how that stays correct on
PostgreSQL and with several server processes (nothing but a page cache lives in memory).

Scope: the caller's :class:`gridgov.service.scope.Scope` (the same as the incident and unit
routes): commanders and dispatchers get their street's incidents and units; grid workers the
incidents of their grid and their street's units; a unit the incidents it was sent to and
itself; admins and analysts the district.
"""

from __future__ import annotations

import hashlib
import html
import threading
import weakref
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import geopandas as gpd
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from api.auth import Principal, refused, require_checked_in_statement
from api.deps import EngineDep, SettingsDep
from api.replica_reads import read_engine
from gridgov import forking, maps, store
from gridgov.errors import CredentialRefusedError, InputError
from gridgov.maps.road_layer import SERVED_ROAD_URL
from gridgov.model import UNIT_COLUMNS
from gridgov.service.scope import READERS
from gridgov.settings import Settings
from gridgov.store.live_feed import (
    OVER_STATUSES,
    LiveChanges,
    LiveState,
    dataset_version,
    parse_cursor,
    read_live,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

__all__ = ["FEED_PATH", "live_answer", "router"]

router = APIRouter()

#: Where the page polls.
FEED_PATH = "/api/v1/live"
#: Time between two polls of the page (ms): a change shows within about this plus a request.
POLL_INTERVAL_MS = 1000
#: The viewport hook of the page: micro-grids of the visible box, in the compact form.
AREA_URL = "/api/v1/areas/{level}?bbox={west},{south},{east},{north}&zoom={zoom}&format=compact"
# The poll checks its caller's credential in its own statement (see _read).
Poller = Annotated[Principal, Depends(require_checked_in_statement(*READERS))]


# --------------------------------------------------------------------------------------------
# the feed
# --------------------------------------------------------------------------------------------


class LiveScopeOut(BaseModel):
    role: str
    street_code: str | None = None
    grid_code: str | None = None
    unit_id: str | None = None


class LiveAnswer(BaseModel):
    cursor: str = Field(description="Send it back as `since` (opaque).")
    changed: bool = Field(description="Whether anything changed since `since`.")
    reset: bool = Field(
        description="Drop every incident shown and take these (first call, or a new dataset)."
    )
    dataset: int = Field(description="Version of the loaded dataset (areas, units...).")
    server_time: datetime
    scope: LiveScopeOut
    incidents: dict[str, Any] = Field(
        description="Open incidents to show or update, in the map runtime's compact form "
        "(`gridgov.maps.incident_layer_json`: rows of [lat, lon, priority, incident_id, "
        "matter, status, reported, street, history, assignments, explanation])."
    )
    area_codes: dict[str, list[str | None]] = Field(
        description="Per incident in `incidents`: its street, community and grid codes (the "
        "page colours the areas by the open incidents in them)."
    )
    closed: list[str] = Field(description="Incidents now over (closed, cancelled...): remove.")
    routes: dict[str, Any] = Field(
        description="Route lines of the incidents sent (`gridgov.maps.route_layer_json`); "
        "replace the lines of every incident in `incidents` and `closed`."
    )
    units: dict[str, Any] | None = Field(
        description="The units in scope written since `since` (`gridgov.maps.unit_layer_json`; "
        "every one when `units_reset`), else null."
    )
    units_reset: bool = Field(
        default=False, description="`units` holds every unit in scope: drop the ones shown."
    )


def _etag(principal: Principal, state: LiveState) -> str:
    raw = f"{principal.credential.credential_id}|{state.cursor}".encode()
    return f'W/"{hashlib.blake2b(raw, digest_size=10).hexdigest()}"'


def _matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    wanted = etag.removeprefix("W/")
    tags = [t.strip().removeprefix("W/") for t in header.split(",")]
    return "*" in tags or wanted in tags


def _code(value: Any) -> str | None:
    return None if value is None or value != value else str(value)


def live_answer(principal: Principal, changes: LiveChanges) -> dict[str, Any]:
    scope = principal.scope
    gdf = changes.gdf_incidents
    over = gdf["status"].astype(str).isin(OVER_STATUSES)
    gdf_open = gdf[~over]
    return {
        "cursor": changes.state.cursor,
        "changed": changes.changed,
        "reset": changes.reset,
        "dataset": changes.state.dataset,
        "server_time": datetime.now(UTC).isoformat(),
        "scope": {
            "role": scope.role,
            "street_code": scope.street_code,
            "grid_code": scope.grid_code,
            "unit_id": scope.unit_id,
        },
        "incidents": maps.incident_layer_json(gdf_open, changes.gdf_assignments, changes.df_events),
        "area_codes": {
            str(row.incident_id): [
                _code(row.street_code),
                _code(row.community_code),
                _code(row.grid_code),
            ]
            for row in gdf_open.itertuples(index=False)
        },
        "closed": gdf.loc[over, "incident_id"].astype(str).tolist(),
        "routes": maps.route_layer_json(
            gdf_open, changes.gdf_assignments, changes.gdf_assigned_units
        ),
        "units": None if changes.gdf_units is None else maps.unit_layer_json(changes.gdf_units),
        "units_reset": changes.reset,
    }


@router.get(
    FEED_PATH,
    tags=["live"],
    response_model=LiveAnswer,
    summary="What changed on the map since a cursor (the wall display polls it)",
    responses={304: {"description": "Nothing changed since `since` (send If-None-Match)."}},
)
async def live_feed(
    request: Request,
    principal: Poller,
    engine: EngineDep,
    since: Annotated[
        str | None,
        Query(
            max_length=100,
            description="The `cursor` of the previous answer; without it, every open "
            "incident and every unit in scope.",
        ),
    ] = None,
) -> Response:
    """Incidents, assignments and status changes come from the event log, unit status and
    positions from a digest of the units in scope. Poll with `since` and `If-None-Match` (the
    previous answer's `ETag`): 304 means nothing changed. A dispatcher sees only the street's
    incidents and units."""
    state = parse_cursor(since) if since is not None else None
    try:
        # Async, with the store in one worker thread: a plain route would also check its
        # answer in a second one.
        changes = await run_in_threadpool(_read, request, engine, principal, state)
    except CredentialRefusedError:
        raise refused(request) from None
    etag = _etag(principal, changes.state)
    headers = {
        "ETag": etag,
        "Cache-Control": "no-cache, private",
        "Vary": "Authorization",
    }
    if not changes.changed and _matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    return JSONResponse(live_answer(principal, changes), headers=headers)


def _read(
    request: Request, engine: Engine, principal: Principal, state: LiveState | None
) -> LiveChanges:
    """The poll's read. With a cursor, its first statement also checks the caller's credential
    (the wall's usual poll: that one statement); the first snapshot (every open incident and
    unit) may come from a replica, so the credential is checked on the primary first. The
    cursor's numbers are the primary's own, so the polls after it read the primary."""
    credential_id = principal.credential.credential_id
    if state is None:
        if not store.credential_live(engine, credential_id):
            raise CredentialRefusedError()
        return read_live(read_engine(request), principal.scope, None)
    return read_live(engine, principal.scope, state, credential_id=credential_id)


# --------------------------------------------------------------------------------------------
# the page
# --------------------------------------------------------------------------------------------


@dataclass
class _Page:
    dataset: int
    html: str


_PAGES: weakref.WeakKeyDictionary[Engine, _Page] = weakref.WeakKeyDictionary()
_PAGE_LOCK = threading.Lock()
forking.renew_globals_in_child(__name__, _PAGE_LOCK=threading.Lock)


def _empty_units() -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame({c: [] for c in UNIT_COLUMNS}, geometry=[], crs="EPSG:4326")


def _empty_incidents() -> gpd.GeoDataFrame:
    columns = ("incident_id", "matter_code", "priority", "status", "reported_at", "street_code")
    return gpd.GeoDataFrame({c: [] for c in columns}, geometry=[], crs="EPSG:4326")


def build_page(engine: Engine, settings: Settings, dataset: int) -> str:
    """The live command-centre page of the stored district (no incident or unit in it)."""
    gdf_areas = store.read_stored_areas(engine)
    m = maps.command_centre_map(
        gdf_areas,
        _empty_units(),
        _empty_incidents(),
        area_url=AREA_URL,
        area_stats=False,
        with_heat=False,
        base=settings.map_base,
        tile_key=settings.tianditu_key,
        title="指挥中心 command centre · 实时 live",
    )
    maps.name_matters_from(m, store.read_catalog(engine))
    # The roads come per viewport from the road route, like the micro-grids.
    maps.add_road_layer(m, settings.map_base, url=SERVED_ROAD_URL)
    maps.add_live_feed(
        m,
        FEED_PATH,
        interval_ms=POLL_INTERVAL_MS,
        dataset=dataset,
        stream_url=f"{FEED_PATH}/stream",
    )
    return maps.render_html(m, assets="/static")


def _page(engine: Engine, settings: Settings) -> str:
    dataset = dataset_version(engine)
    cached = _PAGES.get(engine)
    if cached is not None and cached.dataset == dataset:
        return cached.html
    # One build per process and dataset: the page is a few MB of areas and takes seconds.
    with _PAGE_LOCK:
        cached = _PAGES.get(engine)
        if cached is None or cached.dataset != dataset:
            cached = _Page(dataset, build_page(engine, settings, dataset))
            _PAGES[engine] = cached
    return cached.html


_NO_DISTRICT = """<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">
<title>gridgov</title><link rel="icon" href="data:,"></head><body>
<h1>gridgov</h1><p>无辖区数据 no district is loaded yet ({reason}). Load one with
<code>gridgov load</code> and reload this page.</p></body></html>"""


@router.get("/", include_in_schema=False, response_class=HTMLResponse)
def command_centre_page(engine: EngineDep, settings: SettingsDep) -> Response:
    headers = {
        "Cache-Control": "no-cache",
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
    }
    try:
        page = _page(engine, settings)
    except InputError as exc:
        # An empty store: say so in the page rather than as a JSON error to a browser.
        body = _NO_DISTRICT.format(reason=html.escape(str(exc)))
        return HTMLResponse(body, status_code=503, headers=headers)
    return HTMLResponse(page, headers=headers)
