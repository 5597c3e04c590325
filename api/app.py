"""The app factory. ``gridgov serve`` runs :func:`create_app` under uvicorn."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from sqlalchemy.engine import Engine

from api.body_limit import BodyLimitMiddleware, allow_larger_body
from api.error_answers import install_error_handlers
from api.idempotency import IdempotencyMiddleware
from api.input_guard import InputGuardMiddleware
from api.rate_limits import RateLimitMiddleware
from api.replica_reads import WriteNotes
from api.retention_sweep import install_retention_sweep
from api.web_headers import WebHeadersMiddleware
from gridgov import __version__, store
from gridgov.errors import GridgovError
from gridgov.service import turn_process
from gridgov.settings import Settings, get_settings
from gridgov.store.read_routing import ReadRouting

DESCRIPTION = """\
gridgov's service for a street command centre under Chengdu's five-powers reform.

- **/api/v1**: the native API for dispatchers, commanders, units, grid workers and analysts
  (bearer tokens from `gridgov token issue`).
- **/open311/v2**: Open311 GeoReport v2 for citizens' and field staff's phone apps (JSON and
  XML; an `api_key` to file requests).

Positions are WGS84 unless a `crs` of `gcj02` or `bd09` says otherwise. Every POST honours an
`Idempotency-Key` header: a retry returns the first answer and creates nothing new.
"""

TAGS: list[dict[str, Any]] = [
    {"name": "health", "description": "Liveness and readiness."},
    {"name": "areas", "description": "The area hierarchy as GeoJSON, and point location."},
    {"name": "roads", "description": "The stored road network per map viewport, by class."},
    {"name": "units", "description": "Stationed units: status and AVL positions."},
    {"name": "incidents", "description": "Reports, dispatch and the workflow."},
    {"name": "assessment", "description": "KPIs and rankings of offices, departments, streets."},
    {"name": "media", "description": "Evidence photos; the field page's reports and tasks."},
    {
        "name": "consultations",
        "description": "Plans, projects and decisions the streets are consulted on (powers 2, 4).",
    },
    {"name": "open311", "description": "Open311 GeoReport v2."},
    {"name": "console", "description": "The dispatcher's workspace (/console): choices, modes."},
    {"name": "live", "description": "The command centre's live wall display (/) and its feed."},
]


def create_app(settings: Settings | None = None, *, engine: Engine | None = None) -> FastAPI:
    """Build the service over a store (default: ``settings.database_url``)."""
    from api import console_page, field_page, live_stream, open311, wall_display
    from api.routes import (
        area_routes,
        assessment_routes,
        console_routes,
        consultation_routes,
        docs_pages,
        health,
        incidents,
        media_routes,
        position_routes,
        reporter_contact,
        road_routes,
        unit_routes,
    )

    settings = settings or get_settings()
    engine = engine if engine is not None else store.open_store(settings.database_url)
    app = FastAPI(
        title="gridgov",
        version=__version__,
        description=DESCRIPTION,
        openapi_tags=TAGS,
        license_info={"name": "Apache-2.0", "identifier": "Apache-2.0"},
        # Served from the vendored assets instead (api/routes/docs_pages.py).
        docs_url=None,
        redoc_url=None,
    )
    app.state.engine = engine
    app.state.settings = settings
    replica = (
        store.open_store(settings.database_replica_url) if settings.database_replica_url else None
    )
    app.state.reads = ReadRouting(engine, replica)
    install_error_handlers(app)
    app.add_middleware(IdempotencyMiddleware)
    app.add_middleware(WriteNotes)
    app.add_middleware(InputGuardMiddleware)
    # Photos (multipart only) may be as large as media_max_bytes; everything else keeps the
    # default body limit. One middleware owns both limits.
    for upload_path in (
        r"^/api/v1/incidents/[^/]+/media$",
        r"^/api/v1/field/",
        r"^/open311/v2/requests(\.json|\.xml)?$",
    ):
        allow_larger_body(
            app,
            upload_path,
            settings.media_max_bytes,
            multipart_only=True,
            setting="media_max_bytes",
        )
    # Added last, so they run first: bodies are limited before anything reads them, and a
    # flooding or guessing client is refused before its body is read at all.
    app.add_middleware(BodyLimitMiddleware)
    app.add_middleware(RateLimitMiddleware)
    # Outermost: every answer, a 413 or 429 too, gets the security and CORS headers.
    app.add_middleware(WebHeadersMiddleware)
    app.include_router(health.router)
    # A request tries the routers in this order (about 10 µs each): the paths every wall,
    # phone and vehicle calls many times a second come first. No two routers share a path.
    app.include_router(wall_display.router)
    app.include_router(live_stream.router)
    for module in (
        position_routes,  # before unit_routes: /units/positions is not /units/{unit_id}
        unit_routes,
        incidents,
        area_routes,
        road_routes,
        media_routes,
        console_routes,
        reporter_contact,
        assessment_routes,
        consultation_routes,
    ):
        app.include_router(module.router, prefix="/api/v1")
    app.include_router(open311.router, prefix="/open311/v2")
    app.include_router(media_routes.public_router, prefix="/open311/v2")
    app.include_router(docs_pages.router)
    app.include_router(field_page.router)
    app.include_router(console_page.router)
    from gridgov.maps import STATIC_DIR

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    install_retention_sweep(app)
    return app


def app_from_env() -> FastAPI:
    """uvicorn's factory (``uvicorn --factory api.app:app_from_env``): settings from the
    environment, so every worker process builds its own engine, and loads its district before
    it serves (:func:`warm_up`)."""
    app = create_app()
    warm_up(app)
    return app


def warm_up(app: FastAPI) -> None:
    """Load what the first report would otherwise wait for: the dispatch context (areas,
    catalogue, road network) and the units' snapshot, then settle the heap around them
    (:func:`gridgov.store.settle_heap`). A store with no district yet is left as it is (the
    first request loads it, as before)."""
    engine = app.state.engine
    try:
        ctx = store.context_from_store(engine)
        kinds = sorted({str(k) for m in ctx.catalog.matters for k in m.required_kinds})
        store.available_pool(engine, ctx, kinds, now=datetime.now(UTC))
    except GridgovError:
        return
    # What was just loaded lives as long as the process: out of the full garbage collections.
    store.settle_heap()
    # Started now, in the background: batches dispatch in this process until it is ready.
    turn_process.start(engine)
