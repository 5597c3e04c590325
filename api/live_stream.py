"""The live feed pushed: Server-Sent Events woken by the database's own notifications.

``GET /api/v1/live/stream`` answers ``text/event-stream``: a ``change`` event carrying the
feed's answer (:mod:`api.wall_display`, the same JSON as a poll) whenever something in the
caller's scope changed, nothing while nothing does (a comment line every
:data:`HEARTBEAT_S` keeps proxies from closing it, and the page, told that interval by the
answer's ``X-Heartbeat-Interval``, gives up a stream silent for two and a half of them: a
connection dropped without being closed says nothing either). Who wakes the streams:

- the store's :func:`gridgov.store.change_signals.watch_changes`: LISTEN/NOTIFY on PostgreSQL
  (every worker of every host hears every change), the engine's commits on SQLite (the page's
  polling fallback covers writes from other processes).

A wake-up only says "look": each stream then reads what changed in its own scope since its
own cursor (:func:`gridgov.store.live_feed.read_live`), so nothing but the cursor is kept per
stream and a missed or duplicated notification costs at most one read. A stream ends after
``max_seconds`` and the page opens the next one from its cursor. It also ends when its token was
revoked or expired: each process checks the credentials of its open streams again at least
every :data:`HEARTBEAT_S` (one statement per credential, however many streams share it), so a
revoked wall display stops receiving within twice that.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import weakref
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse
from sqlalchemy.engine import Engine
from starlette.concurrency import run_in_threadpool

from api.auth import Principal, require
from api.deps import EngineDep
from api.wall_display import FEED_PATH, live_answer
from gridgov import forking, store
from gridgov.service.scope import READERS
from gridgov.store.change_signals import watch_changes
from gridgov.store.live_feed import LiveState, parse_cursor, read_live

__all__ = ["HEARTBEAT_HEADER", "STREAM_PATH", "Hub", "hub_for", "router"]

router = APIRouter()

STREAM_PATH = f"{FEED_PATH}/stream"
#: A comment line this often while nothing changes; the stream also reads its state then (a
#: lost listener connection, a write from another SQLite process).
HEARTBEAT_S = 15.0
#: The answer's header that tells the page :data:`HEARTBEAT_S` (seconds).
HEARTBEAT_HEADER = "X-Heartbeat-Interval"
#: Notifications this close together are answered with one read (a fix arrives every few
#: milliseconds at a district's rate; a wall needs a change within a second).
COALESCE_S = 0.25
Reader = Annotated[Principal, Depends(require(*READERS))]


class Hub:
    """One per engine and process: wakes every open stream when the database says so."""

    def __init__(self, engine: Engine) -> None:
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self._lock = threading.Lock()
        #: Wake-ups so far: streams of one scope at one cursor share a read per wake-up.
        self.generation = 0
        self._reads: dict[tuple[Any, ...], asyncio.Future[tuple[LiveState, bytes | None]]] = {}
        #: Per credential: when it was last found live, and the check under way or done.
        self._checks: dict[str, tuple[float, asyncio.Future[bool]]] = {}
        # The database side (LISTEN on PostgreSQL, commit hooks on SQLite) is the store's.
        watch_changes(engine, self.wake)

    def wake(self) -> None:
        with self._lock:
            self.generation += 1
            waiters = list(self._waiters)
        for loop, flag in waiters:
            with contextlib.suppress(RuntimeError):  # a loop already closed
                loop.call_soon_threadsafe(flag.set)

    def subscribe(self) -> tuple[asyncio.AbstractEventLoop, asyncio.Event]:
        entry = (asyncio.get_running_loop(), asyncio.Event())
        with self._lock:
            self._waiters.add(entry)
        return entry

    def unsubscribe(self, entry: tuple[asyncio.AbstractEventLoop, asyncio.Event]) -> None:
        with self._lock:
            self._waiters.discard(entry)

    async def read(
        self, engine: Engine, principal: Principal, since: LiveState | None
    ) -> tuple[LiveState, bytes | None]:
        """The state now and the event to send (None when nothing changed), read once per
        wake-up for all the streams of one scope at one cursor (fifty walls of the district
        cost one read, not fifty)."""
        scope = principal.scope
        key = (
            self.generation,
            scope.role,
            scope.street_code,
            scope.grid_code,
            scope.unit_id,
            scope.district_wide,
            None if since is None else since.cursor,
        )
        loop = asyncio.get_running_loop()
        shared = self._reads.get(key)
        if shared is None or shared.get_loop() is not loop:
            shared = asyncio.ensure_future(_read(engine, principal, since))
            # Only this wake-up's reads are worth keeping.
            self._reads = {k: f for k, f in self._reads.items() if k[0] == key[0]}
            self._reads[key] = shared
        return await asyncio.shield(shared)

    async def still_live(self, engine: Engine, credential_id: str) -> bool:
        """Whether the credential is still live, checked at most once every
        :data:`HEARTBEAT_S` per credential and process (fifty walls of one token, one check)."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        found = self._checks.get(credential_id)
        if found is None or now - found[0] >= HEARTBEAT_S or found[1].get_loop() is not loop:
            check = asyncio.ensure_future(
                run_in_threadpool(store.credential_live, engine, credential_id)
            )
            found = self._checks[credential_id] = (now, check)
            # Only the credentials checked lately are worth keeping.
            self._checks = {k: v for k, v in self._checks.items() if now - v[0] < 2 * HEARTBEAT_S}
        try:
            return await asyncio.shield(found[1])
        except Exception:
            # Not kept: the next stream's check asks the store again.
            if self._checks.get(credential_id) is found:
                del self._checks[credential_id]
            raise


_HUBS: weakref.WeakKeyDictionary[Engine, Hub] = weakref.WeakKeyDictionary()
_HUBS_LOCK = threading.Lock()
# A hub listens on its own thread and connection: a forked child makes its own.
forking.renew_globals_in_child(__name__, _HUBS=weakref.WeakKeyDictionary, _HUBS_LOCK=threading.Lock)


def hub_for(engine: Engine) -> Hub:
    with _HUBS_LOCK:
        hub = _HUBS.get(engine)
        if hub is None:
            hub = _HUBS[engine] = Hub(engine)
        return hub


async def _read(
    engine: Engine, principal: Principal, since: LiveState | None
) -> tuple[LiveState, bytes | None]:
    changes = await run_in_threadpool(read_live, engine, principal.scope, since)
    if not changes.changed:
        return changes.state, None
    data = json.dumps(live_answer(principal, changes), separators=(",", ":"))
    event = f"event: change\nid: {changes.state.cursor}\ndata: {data}\n\n"
    return changes.state, event.encode()


async def _events(
    engine: Engine, principal: Principal, since: LiveState | None, max_seconds: float
) -> AsyncIterator[bytes]:
    hub = hub_for(engine)
    entry = hub.subscribe()
    loop = asyncio.get_running_loop()
    end = loop.time() + max_seconds
    # A heartbeat is owed HEARTBEAT_S after the stream last sent anything, not after a quiet
    # wait: wake-ups for changes outside this scope (another street's reports; another schema
    # on the same server, since the channel is the database's) can come more often than that
    # and send nothing, and a stream that says nothing is closed by proxies.
    sent = loop.time()
    try:
        state = since
        while True:
            if not await hub.still_live(engine, principal.credential.credential_id):
                return  # revoked or expired: the page's next stream is refused (401)
            state, event = await hub.read(engine, principal, state)
            if event is not None:
                yield event
                sent = loop.time()
            now = loop.time()
            left = end - now
            if left <= 0:
                return
            owed = sent + HEARTBEAT_S - now
            if owed > 0:
                try:
                    await asyncio.wait_for(entry[1].wait(), min(owed, left))
                except TimeoutError:
                    owed = 0.0
            if owed <= 0:
                yield b": still here\n\n"
                sent = loop.time()
                continue
            await asyncio.sleep(COALESCE_S)
            entry[1].clear()
    finally:
        hub.unsubscribe(entry)


@router.get(
    STREAM_PATH,
    tags=["live"],
    summary="What changes on the map, pushed (Server-Sent Events)",
    responses={
        200: {
            "content": {"text/event-stream": {}},
            "headers": {
                HEARTBEAT_HEADER: {
                    "description": "Seconds between two comment lines while nothing changes.",
                    "schema": {"type": "number"},
                }
            },
        }
    },
)
async def live_stream(
    principal: Reader,
    engine: EngineDep,
    since: Annotated[
        str | None, Query(max_length=100, description="A `cursor` of the feed to start from.")
    ] = None,
    max_seconds: Annotated[
        float, Query(ge=0, le=3600, description="Close the stream after this long.")
    ] = 300.0,
) -> StreamingResponse:
    """A `change` event (the feed's answer, as `GET /api/v1/live` gives it) first when
    anything changed since `since` (everything without it), then at every change in the
    caller's scope, within about a second, on any server process."""
    state = parse_cursor(since) if since is not None else None
    headers = {
        "Cache-Control": "no-cache, private",
        "X-Accel-Buffering": "no",
        # The page reopens a stream that stays silent much longer than this (a connection a
        # proxy or a network dropped without closing it says nothing either).
        HEARTBEAT_HEADER: f"{HEARTBEAT_S:g}",
    }
    return StreamingResponse(
        _events(engine, principal, state, max_seconds),
        media_type="text/event-stream",
        headers=headers,
    )
