"""The field page at ``/field``: grid workers and units report, act and verify from a phone.

The page, its script and style live in ``gridgov/static/field/`` and call the native API with
the bearer token taken from the URL fragment (``/field#token=gg_...``, as the wall display
does). Served from here, beside it: the web app manifest and the service worker. The worker
must be served from ``/field/`` for its scope to cover the page; it caches the page and its
assets (all from this server: Leaflet from ``/static/vendor``, no CDN) so the page opens with
no network, and the page queues what it sends meanwhile (see ``field.js``).

The page holds no rule: the report, the actions and their photos are the API's
(:mod:`api.routes.media_routes`), and the AVL fixes go to the units route.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, JSONResponse, Response

from api.deps import ContextDep, SettingsDep
from gridgov.maps import STATIC_DIR, tile_sources

__all__ = ["FIELD_DIR", "router"]

router = APIRouter(include_in_schema=False)

#: The field page's files.
FIELD_DIR = Path(STATIC_DIR) / "field"
_HEADERS = {
    # Revalidated each time, so a new release reaches phones; the service worker caches.
    "Cache-Control": "no-cache",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


@router.get("/field")
def field_page() -> Response:
    return FileResponse(FIELD_DIR / "index.html", media_type="text/html", headers=_HEADERS)


@router.get("/field/manifest.webmanifest")
def manifest() -> Response:
    return FileResponse(
        FIELD_DIR / "manifest.webmanifest",
        media_type="application/manifest+json",
        headers=_HEADERS,
    )


@router.get("/field/sw.js")
def service_worker() -> Response:
    # Served under /field/ but controlling the page at /field itself: allow that scope.
    headers = {**_HEADERS, "Service-Worker-Allowed": "/field"}
    return FileResponse(FIELD_DIR / "sw.js", media_type="text/javascript", headers=headers)


@router.get("/field/matters.json")
def matters(ctx: ContextDep) -> Response:
    """The matters the page searches by keyword (public, like Open311's service list)."""
    body = [
        {
            "code": m.code,
            "zh": m.name_zh,
            "en": m.name_en,
            "keywords": list(m.keywords),
            "priority": m.priority,
        }
        for m in ctx.catalog.matters
    ]
    return JSONResponse(body, headers=_HEADERS)


@router.get("/field/config.json")
def config(settings: SettingsDep) -> Response:
    """The page's base map, as configured (``map_base``): tile layers (none by default, so
    nothing is loaded from outside), or the stored roads drawn per view."""
    body = {
        "tiles": tile_sources(settings.map_base, settings.tianditu_key),
        "roads": settings.map_base == "roads",
    }
    return JSONResponse(body, headers=_HEADERS)
