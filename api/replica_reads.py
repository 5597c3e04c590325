"""Reads a replica may answer: which engine a request's reads use, and the notes of writes.

The rule is :meth:`gridgov.store.read_routing.ReadRouting.engine_for`; this module only tells
it who the caller is (the credential the bearer token resolved to) and, after each write that
succeeded, that the caller wrote (:class:`WriteNotes`).
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from sqlalchemy.engine import Engine
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gridgov.store.read_routing import ReadRouting

__all__ = ["CALLER", "WriteNotes", "read_engine"]

#: The request state key under which authentication leaves the caller's credential id.
CALLER = "caller"
_READS = frozenset({"GET", "HEAD", "OPTIONS"})


def read_engine(request: Request) -> Engine:
    """The engine for this request's replica-tolerant reads (call after authentication)."""
    routing: ReadRouting = request.app.state.reads
    return routing.engine_for(getattr(request.state, CALLER, None))


class WriteNotes:
    """ASGI middleware: after a caller's write answered below 400, note it for the rule."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in _READS:
            await self.app(scope, receive, send)
            return
        # Shared with the request the routes see, so that authentication's note reaches here.
        state: dict[str, Any] = scope.setdefault("state", {})
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        await self.app(scope, receive, sending)
        caller = state.get(CALLER)
        routing: ReadRouting | None = getattr(scope["app"].state, "reads", None)
        # Without a replica there is nothing to note: no worker thread for it.
        if (
            routing is not None
            and routing.replica is not None
            and caller is not None
            and status < 400
        ):
            await run_in_threadpool(routing.wrote, str(caller))
