"""The upload size limit, enforced while the body streams in, before anything holds it.

A multipart POST (photos) may carry at most ``settings.media_max_bytes``. A ``Content-Length``
above it is refused with 413 before a byte of the body is read; a body sent without one (chunked)
is counted as it arrives and refused the moment it passes the limit. This middleware sits
outside every other, the ``Idempotency-Key`` one included (which keeps a keyed body to
fingerprint it), so no layer ever holds more than the limit of one request.
"""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["TooLarge", "UploadLimitMiddleware"]


class TooLarge(HTTPException):
    """The body passed the limit while it was read. An HTTPException, so that when a route's
    form parsing meets it, the app answers 413 itself (FastAPI turns other errors met while
    parsing a body into 400)."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"the upload is larger than {max_bytes} bytes (media_max_bytes)")


def _is_multipart(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"content-type":
            return value.split(b";")[0].strip().lower() == b"multipart/form-data"
    return False


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class UploadLimitMiddleware:
    """Pure ASGI: counts the bytes of multipart bodies; other requests pass untouched."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _is_multipart(scope):
            await self.app(scope, receive, send)
            return
        declared = _declared_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(scope, send)
            return
        seen = 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise TooLarge(self.max_bytes)
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except TooLarge:
            if started:  # pragma: no cover - an answer cannot start before its body is read
                raise
            await self._refuse(scope, send)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        message = f"the upload is larger than {self.max_bytes} bytes (media_max_bytes)"
        if scope["path"].startswith("/open311/"):
            payload: object = [{"code": 413, "description": message}]
        else:
            payload = {"error": "too_large", "message": message, "fields": []}
        body = json.dumps(payload).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            # The rest of the body is not read: the connection cannot carry another request.
            (b"connection", b"close"),
        ]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})
