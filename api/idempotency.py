"""``Idempotency-Key`` on every POST: a phone that retries gets the first answer back.

The first request with a key claims it in the store (an INSERT on the key, so exactly one of two
racing requests wins, whichever worker each reaches), runs, and its answer is stored. A retry
with the same key and the same request gets that answer again, marked ``Idempotent-Replayed:
true``, and changes nothing. The same key with a different request is refused (422), and a retry
that arrives while the first is still running is told to wait (409 with ``Retry-After``).
Answers of 5xx are not kept: the claim is released so that a retry runs again.

Keys are scoped by the caller's credentials (the Authorization header) and the path, so two
callers never share a key; the request fingerprint covers the method, path, query, content type
and body, and so an Open311 ``api_key`` sent in the form too.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gridgov import store

__all__ = ["HEADER", "IdempotencyMiddleware"]

HEADER = "idempotency-key"
REPLAYED = "idempotent-replayed"
_MAX_KEY = 255


def _error(status: int, code: str, message: str, path: str) -> tuple[int, bytes, str]:
    if path.startswith("/open311/"):
        body: Any = [{"code": status, "description": message}]
    else:
        body = {
            "error": code,
            "message": message,
            "fields": [{"field": "Idempotency-Key", "in": "header", "message": message}],
        }
    return status, json.dumps(body).encode(), "application/json"


class IdempotencyMiddleware:
    """Pure ASGI middleware (no per-request task switching beyond the store calls)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        raw_key = headers.get(HEADER.encode())
        if raw_key is None:
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        key = raw_key.decode("latin-1").strip()
        if not key or len(key) > _MAX_KEY or not key.isprintable():
            await _send(
                send,
                *_error(
                    400,
                    "bad_request",
                    "Idempotency-Key must be 1 to 255 printable characters",
                    path,
                ),
            )
            return
        body = await _read_body(receive)
        auth = headers.get(b"authorization", b"")
        key_scope = hashlib.sha256(auth + b"|" + path.encode()).hexdigest()
        content_type, body_print = _without_boundary(headers.get(b"content-type", b""), body)
        fingerprint = hashlib.sha256(
            b"\x00".join(
                [
                    scope["method"].encode(),
                    path.encode(),
                    scope.get("query_string", b""),
                    content_type,
                    body_print,
                ]
            )
        ).hexdigest()
        engine = scope["app"].state.engine
        claim = await anyio.to_thread.run_sync(
            store.claim_idempotency, engine, key_scope, key, fingerprint
        )
        if claim.outcome == "replay":
            assert claim.status is not None
            await _send(send, claim.status, claim.body or b"", claim.media_type, replayed=True)
            return
        if claim.outcome == "mismatch":
            await _send(
                send,
                *_error(
                    422,
                    "idempotency_key_reused",
                    "this Idempotency-Key was used for a different request",
                    path,
                ),
            )
            return
        if claim.outcome == "in_flight":
            await _send(
                send,
                *_error(
                    409,
                    "idempotency_in_flight",
                    "a request with this Idempotency-Key is still running; retry shortly",
                    path,
                ),
                retry_after=True,
            )
            return
        await self._run_and_store(scope, body, send, engine, key_scope, key)

    async def _run_and_store(
        self, scope: Scope, body: bytes, send: Send, engine: Any, key_scope: str, key: str
    ) -> None:
        status = 500
        media_type: str | None = None
        chunks: list[bytes] = []
        sent_body = False
        stored = False

        async def replay_receive() -> Message:
            nonlocal sent_body
            if sent_body:
                return {"type": "http.disconnect"}
            sent_body = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def capture(message: MutableMapping[str, Any]) -> None:
            nonlocal status, media_type, stored
            if message["type"] == "http.response.start":
                status = int(message["status"])
                for name, value in message.get("headers", []):
                    if name.lower() == b"content-type":
                        media_type = value.decode("latin-1")
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False) and status < 500:
                    # Stored before the client has the last byte: a retry sent the moment
                    # the answer arrives finds it, instead of "still running".
                    await anyio.to_thread.run_sync(
                        store.finish_idempotency,
                        engine,
                        key_scope,
                        key,
                        status,
                        media_type,
                        b"".join(chunks),
                    )
                    stored = True
            await send(message)

        try:
            await self.app(scope, replay_receive, capture)
        except BaseException:
            if not stored:
                await anyio.to_thread.run_sync(store.release_idempotency, engine, key_scope, key)
            raise
        if not stored:
            # A server error (or an answer that never finished): forget the claim so that a
            # retry runs again.
            await anyio.to_thread.run_sync(store.release_idempotency, engine, key_scope, key)


def _without_boundary(content_type: bytes, body: bytes) -> tuple[bytes, bytes]:
    """A multipart request as fingerprinted: without its boundary, which a client draws anew
    for every attempt (a phone's retry of the same photos must replay, not mismatch)."""
    kind, _, params = content_type.partition(b";")
    if kind.strip().lower() != b"multipart/form-data":
        return content_type, body
    for param in params.split(b";"):
        name, _, value = param.strip().partition(b"=")
        if name.lower() == b"boundary" and value:
            return kind, body.replace(value.strip(b'"'), b"")
    return content_type, body


async def _read_body(receive: Receive) -> bytes:
    parts = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(parts)


async def _send(
    send: Callable[[Message], Awaitable[None]],
    status: int,
    body: bytes,
    media_type: str | None,
    *,
    replayed: bool = False,
    retry_after: bool = False,
) -> None:
    headers = [(b"content-length", str(len(body)).encode())]
    if media_type:
        headers.append((b"content-type", media_type.encode("latin-1")))
    if replayed:
        headers.append((REPLAYED.encode(), b"true"))
    if retry_after:
        headers.append((b"retry-after", b"1"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
