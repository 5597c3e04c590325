"""Security headers on every answer, and CORS for Open311 (none elsewhere).

Every answer gets ``X-Content-Type-Options: nosniff``, ``Referrer-Policy: no-referrer`` and a
``Content-Security-Policy`` that forbids framing (``frame-ancestors 'none'``: the live wall and
every other page). The policy's scripts:

- API answers (JSON, XML): nothing may load at all (``default-src 'none'``);
- ``/docs``, ``/redoc`` and any other page: scripts from this host only, no inline script;
  images also from ``blob:`` (the field page previews its photos); scripts themselves carry
  this policy, since a service worker runs under its script's own;
- the live wall at ``/``: a folium page, whose map is built by inline scripts, so there (only)
  ``'unsafe-inline'`` scripts are allowed; images may come from the configured tile server.

CORS: a browser-based Open311 client on another origin may GET and POST ``/open311/...`` when
its origin is in ``settings.open311_cors_origins`` (default ``*``); a preflight answers 204 with
the allowed methods and headers. No other path answers CORS, so the native API stays
same-origin.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["WebHeadersMiddleware", "content_security_policy"]

_COMMON = "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
_API_CSP = f"default-src 'none'; {_COMMON}"
_PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    f"img-src 'self' data: blob:; worker-src 'self' blob:; connect-src 'self'; {_COMMON}"
)
# Folium writes the map as inline scripts; tiles may come from any configured server.
_LIVE_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    f"img-src 'self' data: blob: https: http:; connect-src 'self'; {_COMMON}"
)
_OPEN311 = "/open311/"
_CORS_METHODS = "GET, POST"
_CORS_HEADERS = ("accept", "content-type", "idempotency-key")
_CORS_EXPOSED = "Idempotent-Replayed, Retry-After"


def content_security_policy(path: str, content_type: str) -> str:
    """The policy of an answer: by page (the live wall, other pages) or API."""
    if path == "/":
        return _LIVE_CSP
    # A script's own policy governs it when it runs as a worker (the field page's service
    # worker fetches and caches this host's files), so scripts get the pages' policy.
    if content_type.startswith(("text/html", "text/javascript", "application/javascript")):
        return _PAGE_CSP
    return _API_CSP


def _allowed_origin(origin: str, allowed: list[str]) -> str | None:
    if "*" in allowed:
        return "*"
    return origin if origin in allowed else None


class WebHeadersMiddleware:
    """Pure ASGI middleware: headers added as the answer starts; Open311 preflights answered."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        cors_origin = None
        # Only Open311 answers CORS: other requests' headers are not even decoded.
        headers: dict[str, str] = {}
        if path.startswith(_OPEN311):
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        origin = headers.get("origin")
        if origin is not None:
            allowed = list(scope["app"].state.settings.open311_cors_origins)
            cors_origin = _allowed_origin(origin, allowed)
            if scope["method"] == "OPTIONS" and "access-control-request-method" in headers:
                await self._preflight(scope, receive, send, headers, cors_origin)
                return

        async def with_headers(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                out = MutableHeaders(scope=message)
                out.setdefault("X-Content-Type-Options", "nosniff")
                out.setdefault("Referrer-Policy", "no-referrer")
                out.setdefault(
                    "Content-Security-Policy",
                    content_security_policy(path, out.get("content-type", "")),
                )
                if cors_origin is not None:
                    out["Access-Control-Allow-Origin"] = cors_origin
                    out["Access-Control-Expose-Headers"] = _CORS_EXPOSED
                    if cors_origin != "*":
                        out.add_vary_header("Origin")
            await send(message)

        await self.app(scope, receive, with_headers)

    async def _preflight(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        headers: dict[str, str],
        cors_origin: str | None,
    ) -> None:
        method = headers["access-control-request-method"].upper()
        asked = [
            h.strip().lower()
            for h in headers.get("access-control-request-headers", "").split(",")
            if h.strip()
        ]
        if cors_origin is None or method not in ("GET", "POST") or set(asked) - set(_CORS_HEADERS):
            # Not allowed: an answer without CORS headers, which the browser refuses.
            response = Response(status_code=403, headers={"X-Content-Type-Options": "nosniff"})
        else:
            cors = {
                "Access-Control-Allow-Origin": cors_origin,
                "Access-Control-Allow-Methods": _CORS_METHODS,
                "Access-Control-Allow-Headers": ", ".join(_CORS_HEADERS),
                "Access-Control-Max-Age": "600",
                "X-Content-Type-Options": "nosniff",
            }
            if cors_origin != "*":
                cors["Vary"] = "Origin"
            response = Response(status_code=204, headers=cors)
        await response(scope, receive, send)
