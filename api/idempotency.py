"""``Idempotency-Key`` on every POST: a phone that retries gets the first answer back.

The first request with a key claims it in the store (an INSERT on the key, so exactly one of two
racing requests wins, whichever worker each reaches), runs, and its answer is stored. A retry
with the same key and the same request gets that answer again, marked ``Idempotent-Replayed:
true``, and changes nothing. The same key with a different request is refused (422), and a retry
that arrives while the first is still running is told to wait (409 with ``Retry-After``).

A report (:data:`_CLAIMED_WITH_THE_RECORD`) makes no claim before it runs: its key is inserted
in the transaction that stores the report, which saves a transaction a report. A run whose
INSERT of the key loses stores nothing and takes the way above; so does one that stored nothing
(a refused report) when its answer cannot be kept because another run holds the key.

A claim is a lease (``settings.idempotency_lease_s``): a retry after a crashed run takes the key
over and runs again; a report the crashed run stored is resumed, not stored twice (see
:mod:`gridgov.store.idempotency_rows` and :func:`gridgov.service.intake.holding_key`). Answers
of 5xx are not kept: the claim is given up so that a retry runs again at once.

Keys are namespaced by the caller's credential (a bearer token, or an Open311 app's
``api_key``) and the path, so two callers never share a key. A credential that no longer
resolves (revoked, expired, unknown) gets no stored answer: its request goes on to the route,
which refuses it. The request fingerprint covers the method, path, query, content type and body.

When the store cannot be reached the answer is 503 with ``Retry-After`` (never a 500), and each
process purges expired keys on a schedule (``settings.idempotency_purge_every_s``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from functools import partial
from typing import Any
from urllib.parse import parse_qsl

import anyio
from sqlalchemy.exc import SQLAlchemyError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.auth import remember_resolved
from api.error_answers import STORE_UNAVAILABLE
from gridgov import store
from gridgov.errors import StoreError
from gridgov.service import intake
from gridgov.settings import get_settings

__all__ = ["HEADER", "IdempotencyMiddleware"]

log = logging.getLogger("gridgov.api")

HEADER = "idempotency-key"
REPLAYED = "idempotent-replayed"
_MAX_KEY = 255
#: Namespace of requests that present no credential (the route decides whether they may).
_ANONYMOUS = "anonymous"
#: POSTs that store one report and nothing before it (:func:`gridgov.service.intake.report`):
#: their key is claimed in the report's own transaction instead of one of its own before.
_CLAIMED_WITH_THE_RECORD = frozenset(
    {"/api/v1/incidents", "/open311/v2/requests.json", "/open311/v2/requests.xml"}
)


def _error(status: int, code: str, message: str, path: str) -> tuple[int, bytes, str]:
    if path.startswith("/open311/"):
        body: Any = [{"code": status, "description": message}]
    else:
        fields = [{"field": "Idempotency-Key", "in": "header", "message": message}]
        body = {"error": code, "message": message}
        if status != 503:
            body["fields"] = fields
    return status, json.dumps(body).encode(), "application/json"


class IdempotencyMiddleware:
    """Pure ASGI middleware (no per-request task switching beyond the store calls)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._next_purge = 0.0

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
        engine = scope["app"].state.engine
        # One worker thread for both lookups (the caller's namespace, then the claim): a hop
        # costs as much as a small query.
        claiming: Callable[[], store.Replay | None] = partial(
            _claim, engine, headers, scope, body, key
        )
        if path in _CLAIMED_WITH_THE_RECORD:
            try:
                fresh = await anyio.to_thread.run_sync(
                    _fresh_claim, engine, headers, scope, body, key
                )
            except (StoreError, SQLAlchemyError) as exc:
                await _store_unavailable_answer(send, path, exc)
                return
            if fresh is None:  # a credential that does not resolve: the route refuses it
                await self.app(scope, _replay_body(body), send)
                return
            with intake.holding_key(fresh):
                answered = await self._run_with_record(scope, body, send, engine, fresh)
            if answered:
                await self._purge_when_due(engine)
                return
            # Another run holds the key: nothing was stored; the way of every other POST,
            # under the namespace and fingerprint found already.
            assert fresh.fingerprint is not None  # a claim made with the record carries it
            claiming = partial(store.claim_idempotency, engine, fresh.scope, key, fresh.fingerprint)
        try:
            claim = await anyio.to_thread.run_sync(claiming)
        except (StoreError, SQLAlchemyError) as exc:
            await _store_unavailable_answer(send, path, exc)
            return
        if claim is None:
            # A credential that does not resolve (revoked, expired, unknown) is never
            # answered from the store: the route refuses it.
            await self.app(scope, _replay_body(body), send)
            return
        if claim.outcome == "replay":
            assert claim.status is not None
            await _send(send, claim.status, claim.body or b"", claim.media_type, replayed=True)
        elif claim.outcome == "mismatch":
            await _send(
                send,
                *_error(
                    422,
                    "idempotency_key_reused",
                    "this Idempotency-Key was used for a different request",
                    path,
                ),
            )
        elif claim.outcome == "in_flight":
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
        else:
            assert claim.claim is not None
            with intake.holding_key(claim.claim, claim.incident_id):
                await self._run_and_store(scope, body, send, engine, claim.claim)
        await self._purge_when_due(engine)

    async def _run_and_store(
        self, scope: Scope, body: bytes, send: Send, engine: Any, claim: store.KeyClaim
    ) -> None:
        status = 500
        media_type: str | None = None
        chunks: list[bytes] = []
        stored = False

        async def capture(message: MutableMapping[str, Any]) -> None:
            nonlocal status, media_type, stored
            if message["type"] == "http.response.start":
                status, media_type = int(message["status"]), _media_type(message)
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False) and status < 500:
                    # Stored before the client has the last byte: a retry sent the moment
                    # the answer arrives finds it, instead of "still running". Should the
                    # store fail here, the answer still goes out; the key's lease ends, and
                    # a retry resumes the stored incident.
                    try:
                        await anyio.to_thread.run_sync(
                            store.finish_idempotency,
                            engine,
                            claim,
                            status,
                            media_type,
                            b"".join(chunks),
                        )
                        stored = True
                    except (StoreError, SQLAlchemyError) as exc:
                        log.warning("the answer for an Idempotency-Key was not kept: %s", exc)
            await send(message)

        try:
            await self.app(scope, _replay_body(body), capture)
        finally:
            if not stored:
                # A server error (or an answer that never finished): give the claim up so that
                # a retry runs again at once (and after its lease if even this fails). Shielded:
                # a client that hung up cancels the request, not this.
                with anyio.CancelScope(shield=True):
                    await _release_quietly(engine, claim)

    async def _run_with_record(
        self, scope: Scope, body: bytes, send: Send, engine: Any, claim: store.KeyClaim
    ) -> bool:
        """Run a request whose key is claimed with its record; False, with nothing sent, when
        another run holds the key: the record's INSERT of the key lost
        (:class:`gridgov.store.KeyHeld`: nothing was stored), or the answer could not be kept
        under this run's claim (the key's holder has the answer to give, or a retry took the
        stored record over).

        The answer is held back until it is complete and its key kept: by an UPDATE when the
        record was stored with the key, else inserted with the answer.
        """
        messages: list[MutableMapping[str, Any]] = []
        try:
            await self.app(scope, _replay_body(body), _append_to(messages))
        except store.KeyHeld:
            return False
        except BaseException:
            with anyio.CancelScope(shield=True):
                await _release_quietly(engine, claim)
            raise
        status, media_type, answer = _answer_of(messages)
        stored = False
        if status < 500:
            try:
                stored = await anyio.to_thread.run_sync(
                    store.finish_idempotency, engine, claim, status, media_type, answer
                )
            except (StoreError, SQLAlchemyError) as exc:
                log.warning("the answer for an Idempotency-Key was not kept: %s", exc)
            else:
                if not stored:
                    return False
        if not stored:
            # A stored record keeps its key until the lease ends, then a retry resumes it.
            with anyio.CancelScope(shield=True):
                await _release_quietly(engine, claim)
        for message in messages:
            await send(message)
        return True

    async def _purge_when_due(self, engine: Any) -> None:
        """Purge expired keys at most every ``settings.idempotency_purge_every_s`` per process
        (after the answer has gone out, so no client waits for it)."""
        now = time.monotonic()
        if now < self._next_purge:
            return
        self._next_purge = now + get_settings().idempotency_purge_every_s
        try:
            await anyio.to_thread.run_sync(store.purge_idempotency, engine)
        except (StoreError, SQLAlchemyError) as exc:
            log.warning("expired Idempotency-Keys were not purged: %s", exc)


def _claim(
    engine: Any, headers: dict[bytes, bytes], scope: Scope, body: bytes, key: str
) -> store.Replay | None:
    """Claim ``key`` in the caller's namespace; None for a credential that does not resolve."""
    key_scope = _key_scope(engine, headers, scope, body)
    if key_scope is None:
        return None
    return store.claim_idempotency(engine, key_scope, key, _fingerprint(scope, headers, body))


def _fresh_claim(
    engine: Any, headers: dict[bytes, bytes], scope: Scope, body: bytes, key: str
) -> store.KeyClaim | None:
    """A claim of ``key`` to be stored with the request's record; None for a credential that
    does not resolve."""
    key_scope = _key_scope(engine, headers, scope, body)
    if key_scope is None:
        return None
    return store.claim_with_record(key_scope, key, _fingerprint(scope, headers, body))


def _key_scope(engine: Any, headers: dict[bytes, bytes], scope: Scope, body: bytes) -> str | None:
    """Where the caller's keys for this path live: its namespace and the path, hashed; None
    for a credential that does not resolve."""
    namespace = _credential_namespace(engine, headers, scope, body)
    if namespace is None:
        return None
    return hashlib.sha256(f"{namespace}|{scope['path']}".encode()).hexdigest()


def _append_to(messages: list[MutableMapping[str, Any]]) -> Send:
    async def append(message: MutableMapping[str, Any]) -> None:
        messages.append(message)

    return append


def _answer_of(messages: list[MutableMapping[str, Any]]) -> tuple[int, str | None, bytes]:
    """Status, content type and body of the ASGI messages of one answer (500 if it has none)."""
    status, media_type, chunks = 500, None, []
    for message in messages:
        if message["type"] == "http.response.start":
            status, media_type = int(message["status"]), _media_type(message)
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))
    return status, media_type, b"".join(chunks)


def _media_type(start: MutableMapping[str, Any]) -> str | None:
    """The content type an ``http.response.start`` message names, if any."""
    for name, value in start.get("headers", []):
        if name.lower() == b"content-type":
            return str(value.decode("latin-1"))
    return None


def _credential_namespace(
    engine: Any, headers: dict[bytes, bytes], scope: Scope, body: bytes
) -> str | None:
    """The namespace of the caller's keys: its credential id; ``anonymous`` without a
    credential; None for a credential that does not resolve."""
    presented: str | None = None
    bearer = False
    authorization = headers.get(b"authorization", b"").decode("latin-1").strip()
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        presented, bearer = token.strip(), True
    elif scope["path"].startswith("/open311/"):
        presented = _open311_api_key(headers, scope, body)
    if presented is None:
        return _ANONYMOUS
    credential = store.resolve_credential(engine, presented)
    if bearer:
        remember_resolved(scope, presented, credential)
    return None if credential is None else f"credential:{credential.credential_id}"


def _open311_api_key(headers: dict[bytes, bytes], scope: Scope, body: bytes) -> str | None:
    """An Open311 app's ``api_key``, from the form (GeoReport v2) or the query."""
    fields = parse_qsl(scope.get("query_string", b"").decode("latin-1"))
    content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
    if content_type == b"application/x-www-form-urlencoded":
        fields += parse_qsl(body.decode("utf-8", errors="replace"))
    keys = [value.strip() for name, value in fields if name == "api_key" and value.strip()]
    return keys[-1] if keys else None


def _fingerprint(scope: Scope, headers: dict[bytes, bytes], body: bytes) -> str:
    # A phone rebuilding a multipart retry picks a new boundary: the same report all the same.
    content_type, body_print = _without_boundary(headers.get(b"content-type", b""), body)
    return hashlib.sha256(
        b"\x00".join(
            [
                scope["method"].encode(),
                scope["path"].encode(),
                scope.get("query_string", b""),
                content_type,
                body_print,
            ]
        )
    ).hexdigest()


async def _store_unavailable_answer(send: Send, path: str, exc: Exception) -> None:
    """503 with Retry-After when the key cannot be claimed: the store is down or hung."""
    log.warning("store unavailable for an Idempotency-Key on POST %s: %s", path, exc)
    await _send(send, *_error(503, "store_unavailable", STORE_UNAVAILABLE, path), retry_after=True)


async def _release_quietly(engine: Any, claim: store.KeyClaim) -> None:
    try:
        await anyio.to_thread.run_sync(store.release_idempotency, engine, claim)
    except (StoreError, SQLAlchemyError) as exc:
        log.warning("an Idempotency-Key claim was left to its lease: %s", exc)


def _replay_body(body: bytes) -> Receive:
    """A ``receive`` that hands the app the body read already, then a disconnect."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


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
