"""Request bodies are limited while they stream in, before authentication and parsing.

A request whose ``Content-Length`` exceeds the limit is answered 413 at once, its body never
read; a body sent without a length (chunked) is counted as it arrives and refused the moment
it passes the limit. Either way the worker holds at most one chunk beyond the limit, so an
anonymous 400 MB POST costs no memory. The limit is ``settings.max_body_bytes`` (1 MB: JSON
and forms); a route that takes larger bodies (media uploads) registers its own with
:func:`allow_larger_body`. The answer closes the connection, since the rest of the body is
never read.
"""

from __future__ import annotations

import re
from collections.abc import Callable, MutableMapping
from typing import Any

from fastapi import FastAPI
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.error_answers import error_response

__all__ = ["BodyLimitMiddleware", "BodyTooLarge", "allow_larger_body", "body_limit"]

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


async def watch_body(
    app: ASGIApp,
    scope: Scope,
    receive: Receive,
    send: Send,
    look: Callable[[bytes], None],
    refusal: type[StarletteHTTPException],
) -> StarletteHTTPException | None:
    """Run ``app`` with every chunk of the request body shown to ``look`` as it streams in.

    ``look`` refuses the body by raising ``refusal`` (an HTTP error, so route code reading the
    body lets it through). Returned when it came before the answer started, for the caller
    to answer; raised again when part of an answer was sent already (the body limit's and the
    NUL guard's one mechanism).
    """
    started = False

    async def looked() -> Message:
        message = await receive()
        if message["type"] == "http.request":
            look(message.get("body", b""))
        return message

    async def watched(message: MutableMapping[str, Any]) -> None:
        nonlocal started
        if message["type"] == "http.response.start":
            started = True
        await send(message)

    try:
        await app(scope, looked, watched)
    except refusal as exc:
        if started:
            raise
        return exc
    return None


class BodyTooLarge(StarletteHTTPException):
    """Raised from ``receive`` when a streamed body passes the limit. An HTTP error, so route
    code that reads the body lets it through to the error answers as a 413."""

    def __init__(self, limit: int, setting: str = "max_body_bytes") -> None:
        # The message names the setting, so an operator knows which one to raise.
        super().__init__(
            413,
            f"the request body is larger than {limit} bytes ({setting})",
            {"connection": "close"},
        )
        self.limit = limit


def allow_larger_body(
    app: FastAPI,
    path_pattern: str,
    max_bytes: int,
    *,
    multipart_only: bool = False,
    setting: str = "the route's own limit",
) -> None:
    """Let the routes whose path matches ``path_pattern`` (a regular expression, anchored
    by the caller) take bodies up to ``max_bytes`` instead of the default limit; with
    ``multipart_only``, only multipart bodies (photos) get it; JSON and forms keep the default."""
    limits: list[tuple[re.Pattern[str], int, bool, str]] = getattr(app.state, "body_limits", [])
    limits.append((re.compile(path_pattern), max_bytes, multipart_only, setting))
    app.state.body_limits = limits


def body_limit(app: Any, path: str, content_type: bytes = b"") -> tuple[int, str]:
    """The body limit of a request and the setting that gives it: a registered route's own,
    else ``settings.max_body_bytes``."""
    multipart = content_type.split(b";")[0].strip().lower() == b"multipart/form-data"
    for pattern, max_bytes, multipart_only, setting in getattr(app.state, "body_limits", []):
        if pattern.match(path) and (multipart or not multipart_only):
            return int(max_bytes), setting
    return int(app.state.settings.max_body_bytes), "max_body_bytes"


async def _refuse(scope: Scope, receive: Receive, send: Send, status: int, message: str) -> None:
    code = "too_large" if status == 413 else "bad_request"
    response = error_response(
        Request(scope), status, code, message, headers={"connection": "close"}
    )
    await response(scope, receive, send)


class BodyLimitMiddleware:
    """Pure ASGI middleware; install it outside everything that reads a body."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        limit, setting = body_limit(scope["app"], scope["path"], headers.get(b"content-type", b""))
        declared = headers.get(b"content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                await _refuse(scope, receive, send, 400, "Content-Length must be a number")
                return
            if int(declared) > limit:
                await _refuse(scope, receive, send, 413, BodyTooLarge(limit, setting).detail)
                return
        received = 0

        def count(body: bytes) -> None:
            nonlocal received
            received += len(body)
            if received > limit:
                raise BodyTooLarge(limit, setting)

        refused = await watch_body(self.app, scope, receive, send, count, BodyTooLarge)
        if refused is not None:
            # Raised outside the routes' error answers (a middleware was reading the body).
            await _refuse(scope, receive, send, 413, str(refused.detail))
