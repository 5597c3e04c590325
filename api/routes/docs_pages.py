"""``/docs`` (Swagger UI) and ``/redoc`` from the vendored assets under ``/static/vendor``.

FastAPI's own pages load their scripts from a CDN and start Swagger UI with an inline script;
these load everything from this host and start it from a file, so they work on a closed network
and under a Content-Security-Policy without inline scripts (:mod:`api.web_headers`).
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

__all__ = ["REDOC", "SWAGGER", "router"]

router = APIRouter(include_in_schema=False)

SWAGGER = "/static/vendor/swagger-ui-dist-5.35.0"
REDOC = "/static/vendor/redoc-2.5.4"

_DOCS = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>gridgov API</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="{SWAGGER}/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="{SWAGGER}/swagger-ui-bundle.js"></script>
<script src="/static/gridgov/gridgov-docs.js"></script>
</body></html>
"""

_REDOC = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>gridgov API</title>
<link rel="icon" href="data:,"></head>
<body><redoc spec-url="/openapi.json"></redoc>
<script src="{REDOC}/redoc.standalone.js"></script>
</body></html>
"""


@router.get("/docs", response_class=HTMLResponse)
def swagger_ui() -> HTMLResponse:
    return HTMLResponse(_DOCS)


@router.get("/redoc", response_class=HTMLResponse)
def redoc() -> HTMLResponse:
    return HTMLResponse(_REDOC)
