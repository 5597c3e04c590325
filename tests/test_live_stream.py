"""The pushed live feed: a change written anywhere reaches an open stream.

On PostgreSQL the write comes through another engine (as from another worker or host): only
the database's notification can wake the stream. On SQLite it comes through the app's own
engine (the in-process channel). The stream carries only what changed, in the caller's scope.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from live_server import serve
from sqlalchemy import Engine

from api.app import create_app
from gridgov import store
from gridgov.service import fleet
from gridgov.settings import Settings

STREET_A = "510106024000"
STREET_B = "510106025000"


def _events(response: httpx.Response, out: list[dict[str, Any]], stop: threading.Event) -> None:
    data: list[str] = []
    try:
        for line in response.iter_lines():
            if stop.is_set():
                return
            if line.startswith("data:"):
                data.append(line[5:].strip())
            elif line == "" and data:
                out.append(json.loads("\n".join(data)))
                data = []
    except httpx.HTTPError:
        return  # the test closed the stream


@contextmanager
def _stream_from_now(
    client: httpx.Client, headers: dict[str, str], max_seconds: float
) -> Iterator[httpx.Response]:
    """The pushed feed, from the cursor of a poll made now (the stream's answer is 200)."""
    first = client.get("/api/v1/live", headers=headers).json()
    with client.stream(
        "GET",
        "/api/v1/live/stream",
        params={"since": first["cursor"], "max_seconds": max_seconds},
        headers=headers,
    ) as response:
        assert response.status_code == 200
        yield response


def test_a_fix_written_elsewhere_is_pushed(
    reference_engine: Engine, reference_store_url: str
) -> None:
    pg = store.detect_backend(reference_engine) == "postgresql"
    writer = store.open_store(reference_store_url) if pg else reference_engine
    _, secret = store.issue_credential(
        reference_engine, "dispatcher", street_code=STREET_A, label="stream test"
    )
    mine = sorted(store.read_units(reference_engine, street_code=STREET_A)["unit_id"])[0]
    theirs = sorted(store.read_units(reference_engine, street_code=STREET_B)["unit_id"])[0]
    app = create_app(Settings(database_url=reference_store_url), engine=reference_engine)
    got: list[dict[str, Any]] = []
    stop = threading.Event()
    try:
        with serve(app) as base, httpx.Client(base_url=base, timeout=30) as client:
            headers = {"Authorization": f"Bearer {secret}"}
            with _stream_from_now(client, headers, 20) as response:
                assert response.headers["content-type"].startswith("text/event-stream")
                reader = threading.Thread(target=_events, args=(response, got, stop), daemon=True)
                reader.start()
                time.sleep(0.5)
                assert got == []  # nothing changed: nothing sent
                # Another street's unit moves: not this dispatcher's business.
                fleet.record_position(writer, theirs, 104.05, 30.69, now=datetime.now(UTC))
                time.sleep(0.5)
                fleet.record_position(writer, mine, 104.051, 30.691)
                sent = time.monotonic()
                # Generous: the machine is shared (bench/hot_paths.py measures the delay).
                while not got and time.monotonic() - sent < 10.0:
                    time.sleep(0.01)
                assert got, "the change was not pushed"
                stop.set()
        units = got[-1]["units"]
        ids = {row[4] for row in units["rows"]}
        assert mine in ids and theirs not in ids
        assert got[-1]["units_reset"] is False
    finally:
        stop.set()
        if writer is not reference_engine:
            writer.dispose()


def test_the_listener_of_a_service_engine_hears_a_fix(
    reference_engine: Engine, reference_store_url: str
) -> None:
    """The engine a service opens (statement timeout in its URL's ``options``) still LISTENs:
    a DSN rendered back from that URL once spelt the option's spaces as '+', the connection
    was refused and no stream was ever woken (only their heartbeat re-reads)."""
    from gridgov.store.change_signals import watch_changes

    if store.detect_backend(reference_engine) != "postgresql":
        return  # SQLite wakes from the committing thread: test_a_fix_written_elsewhere_is_pushed
    engine = store.open_store(reference_store_url)
    assert "statement_timeout" in str(engine.url.query)
    woke = threading.Event()
    watch_changes(engine, woke.set)
    assert woke.wait(10), "the listener never connected"
    time.sleep(1.5)  # its first probe of the units (what it wakes on is a change after it)
    woke.clear()
    unit = sorted(store.read_units(engine, street_code=STREET_A)["unit_id"])[0]
    fleet.record_position(engine, unit, 104.052, 30.692, now=datetime.now(UTC))
    assert woke.wait(10), "a unit's fix woke nobody"
    engine.dispose()


@pytest.mark.postgis
def test_a_unit_committed_below_a_larger_number_still_wakes_the_listener(
    postgis_schema_url: str,
) -> None:
    """A unit row takes its change number when written, not at commit: a transaction that took
    a smaller number than a committed one may commit after the listener probed. Probing the
    largest number missed it (the streams learnt of it only at some later change); the probe
    of the rows written since its last snapshot does not."""
    from sqlalchemy import update
    from test_store_dispatch import load_tiny

    from gridgov.model import UnitStatus
    from gridgov.store.change_signals import UNIT_PROBE_S, watch_changes
    from gridgov.store.models import UNITS

    store.init_db(postgis_schema_url)
    engine = store.create_engine_from_url(postgis_schema_url)
    late = None
    try:
        load_tiny(engine)
        woke = threading.Event()
        watch_changes(engine, woke.set)
        assert woke.wait(10), "the listener never connected"
        late = engine.connect()
        late.execute(update(UNITS).where(UNITS.c.unit_id == "E1").values(on_duty=False))
        store.set_unit_status(engine, "P2", UnitStatus.AVAILABLE, on_duty=False)
        assert woke.wait(10), "a committed fix woke nobody"
        # Two probes after P2's commit: the listener's state includes it; only E1 is news.
        time.sleep(3 * UNIT_PROBE_S)
        woke.clear()
        late.commit()
        assert woke.wait(10), "a unit committed late woke nobody"
    finally:
        if late is not None:
            late.close()
        engine.dispose()


@pytest.mark.postgis
def test_the_listener_connects_as_the_engine_does(postgis_url: str) -> None:
    """A service engine's URL carries the statement timeout in ``options``; the listener's own
    connection gets it too (rendered back to text, the URL was refused by the server)."""
    from gridgov.store.change_signals import listener_connection

    engine = store.open_store(postgis_url)
    try:
        with listener_connection(engine) as conn:
            (timeout,) = conn.execute("SHOW statement_timeout").fetchone()
        assert timeout != "0"
    finally:
        engine.dispose()


def test_a_stream_ends_once_its_token_is_revoked(
    reference_engine: Engine, reference_store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An open stream does not outlive its token: the process checks the credentials of its
    streams again every heartbeat (shortened here), and ends a revoked one's stream; the page's
    next stream is refused."""
    from api import live_stream

    monkeypatch.setattr(live_stream, "HEARTBEAT_S", 0.3)
    credential, secret = store.issue_credential(
        reference_engine, "dispatcher", street_code=STREET_A, label="revoked stream test"
    )
    app = create_app(Settings(database_url=reference_store_url), engine=reference_engine)
    headers = {"Authorization": f"Bearer {secret}"}
    with serve(app) as base, httpx.Client(base_url=base, timeout=30) as client:
        with _stream_from_now(client, headers, 60) as response:
            lines = response.iter_lines()
            assert next(lines).startswith(":")  # a heartbeat: the stream is open and quiet
            store.revoke_credential(reference_engine, credential.credential_id)
            revoked = time.monotonic()
            for _ in lines:  # heartbeats until the stream ends
                assert time.monotonic() - revoked < 10.0, "the stream outlived its token"
        assert time.monotonic() - revoked < 10.0
        refused = client.get("/api/v1/live/stream", headers=headers)
        assert refused.status_code == 401


def test_a_stream_woken_for_others_changes_still_sends_its_heartbeat(
    reference_engine: Engine, reference_store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Wake-ups that find nothing in the caller's scope (another street's reports, or another
    schema's on the same server: the notification channel is the database's) arrive more
    often than the heartbeat here. The stream still sends its heartbeat on time, or a proxy
    would close a wall that is only quiet."""
    from api import live_stream

    monkeypatch.setattr(live_stream, "HEARTBEAT_S", 0.3)
    _, secret = store.issue_credential(
        reference_engine, "dispatcher", street_code=STREET_A, label="busy neighbours test"
    )
    app = create_app(Settings(database_url=reference_store_url), engine=reference_engine)
    headers = {"Authorization": f"Bearer {secret}"}
    hub = live_stream.hub_for(reference_engine)
    stop = threading.Event()

    def others_changes() -> None:
        while not stop.wait(0.02):
            hub.wake()

    waker = threading.Thread(target=others_changes, daemon=True)
    with (
        serve(app) as base,
        httpx.Client(base_url=base, timeout=10) as client,
        _stream_from_now(client, headers, 60) as response,
    ):
        # The page gives up a stream silent for much longer than this (gridgov-live.js).
        assert response.headers["X-Heartbeat-Interval"] == "0.3"
        waker.start()
        try:
            started = time.monotonic()
            beats = 0
            for line in response.iter_lines():
                assert not line.startswith(("event:", "data:")), "nothing changed here"
                if line.startswith(":"):
                    beats += 1
                if beats == 4:
                    break
            took = time.monotonic() - started
        finally:
            stop.set()
            waker.join()
    # Four heartbeats 0.3 s apart, with room for a loaded machine (each wait is bounded).
    assert took < 6.0, f"four heartbeats took {took:.1f} s"
    assert hub.generation > 20  # the wake-ups did come
