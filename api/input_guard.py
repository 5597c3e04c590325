"""No NUL and no control character reaches a route through the URL, and no NUL through a body.

PostgreSQL cannot hold NUL in text, so before this a NUL anywhere (``/incidents/abc%00def``, a
``\\u0000`` in JSON, ``%00`` in a form) reached the database and came back as a server error.
Here a path or query holding a control character, or a body holding a NUL in any of its
spellings (raw; a JSON escape; percent-encoded in a form), is answered 400 before any route
runs. The body is checked chunk by chunk as it streams (the body limit runs first). A
multipart body is not scanned: its photos are binary and hold NULs; its text fields meet the
same rule where intake checks free text (:func:`gridgov.text_rules.check_text`).
"""

from __future__ import annotations

import re
from urllib.parse import unquote

from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from api.body_limit import watch_body
from api.error_answers import error_response

__all__ = ["InputGuardMiddleware", "NulInBody"]

_CONTROL = re.compile("[\x00-\x1f\x7f]")
_NUL = re.compile(rb"\x00|\\u0000")
_NUL_FORM = re.compile(rb"\x00|%00")
_TAIL = 5  # the longest spelling less one: a NUL split across two chunks is still seen


class NulInBody(StarletteHTTPException):
    """Raised from ``receive`` when the body holds a NUL (an HTTP error: routes let it pass)."""

    def __init__(self) -> None:
        super().__init__(400, "the request body holds a NUL character")


async def _refuse(scope: Scope, receive: Receive, send: Send, message: str) -> None:
    response = error_response(Request(scope), 400, "bad_request", message)
    await response(scope, receive, send)


class InputGuardMiddleware:
    """Pure ASGI middleware."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        query = unquote(scope.get("query_string", b"").decode("latin-1"))
        if _CONTROL.search(scope["path"]) or _CONTROL.search(query):
            await _refuse(scope, receive, send, "the URL holds a control character")
            return
        tail = b""
        content_type = dict(scope["headers"]).get(b"content-type", b"").lower()
        if content_type.startswith(b"multipart/form-data"):
            await self.app(scope, receive, send)
            return
        form = content_type.startswith(b"application/x-www-form-urlencoded")
        nul = _NUL_FORM if form else _NUL

        def check(body: bytes) -> None:
            nonlocal tail
            if nul.search(tail + body):
                raise NulInBody
            tail = (tail + body)[-_TAIL:]

        refused = await watch_body(self.app, scope, receive, send, check, NulInBody)
        if refused is not None:
            await _refuse(scope, receive, send, str(refused.detail))
