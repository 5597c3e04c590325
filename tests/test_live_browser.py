"""The live wall display in headless Chromium, against a real uvicorn server.

The page is opened as ``/#token=...`` like a wall display is; an incident posted to the API by
a dispatcher must appear on it within 2 s, with no console error and nothing loaded from
outside localhost. Then the server stops: the page must say the connection dropped, and say
so no longer once a server answers again.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import shapely
from browser import watch
from live_server import free_port, serve
from sqlalchemy import Engine
from test_live import live_app

from api import live_stream
from gridgov import store

pytestmark = pytest.mark.browser

SCREENSHOTS = Path(__file__).resolve().parents[1] / "maps" / "screenshots"
READY = "() => window.GG && GG.ready === true && GG.liveState && GG.liveState.updates >= 1"
COUNT = "() => Object.values(GG.maps)[0].layers.incidents.getLayers().length"
SHOWN = """(id) => Object.values(GG.maps)[0].layers.incidents.getLayers()
    .some((m) => m.ggRow[3] === id)"""
BANNER = """() => { const b = document.querySelector('.gg-live-banner');
    return b !== null && b.style.display !== 'none' ? b.textContent : null; }"""


@pytest.fixture(scope="module")
def engine(reference_engine: Engine) -> Engine:
    return reference_engine


def _street_point(engine: Engine) -> tuple[str, float, float]:
    streets = store.read_stored_areas(engine, "street").sort_values("code")
    row = streets.iloc[len(streets) // 2]
    p = shapely.point_on_surface(row.geometry)
    return str(row["code"]), float(p.x), float(p.y)


@contextmanager
def _wall(
    page: Any, engine: Engine, store_url: str, secret: str, port: int | None = None
) -> Iterator[tuple[str, Any]]:
    """The live page opened as a wall display opens it (``/#token=...``), once its first answer
    is on the map: the server's address and the browser's log."""
    with serve(live_app(engine, store_url), port=port) as base:
        log = watch(page)
        page.goto(f"{base}/#token={secret}")
        page.wait_for_function(READY, timeout=30_000)
        yield base, log


# One backend is enough here: the feed's semantics run on both in test_live.py.
@pytest.mark.parametrize("reference_store_url", ["sqlite"], indirect=True)
def test_new_incident_appears_live_and_a_drop_is_shown(
    page: Any, engine: Engine, reference_store_url: str, tmp_path: Path
) -> None:
    street, lon, lat = _street_point(engine)
    _, secret = store.issue_credential(
        engine, "dispatcher", street_code=street, label="test_live_browser wall display"
    )
    port = free_port()
    with _wall(page, engine, reference_store_url, secret, port) as (base, log):
        # The token left the address bar; the page keeps it for this tab only.
        assert "token" not in page.url
        assert page.evaluate("() => sessionStorage.getItem('gridgov.token')") == secret
        before = page.evaluate(COUNT)

        r = httpx.post(
            f"{base}/api/v1/incidents",
            headers={"Authorization": f"Bearer {secret}"},
            json={"matter_code": "FS-01", "lon": lon, "lat": lat, "description": "wall test"},
            timeout=30,
        )
        assert r.status_code == 201, r.text
        incident_id = r.json()["incident_id"]
        # The issue's requirement: on the open page within 2 s, without a reload.
        page.wait_for_function(SHOWN, arg=incident_id, timeout=2000)
        assert page.evaluate(COUNT) == before + 1
        assert page.evaluate("() => performance.getEntriesByType('navigation').length") == 1
        # Its grid and street are coloured by the open incidents in them now.
        for level in ("grid", "street"):
            code = r.json()[f"{level}_code"]
            open_here = page.evaluate(
                "([level, code]) => Object.values(GG.maps)[0].areas[level].getLayers()"
                ".find((l) => l.ggCode === code).ggOpen",
                [level, code],
            )
            assert open_here >= 1, level
        status = page.locator(".gg-live-status").inner_text()
        assert "last update" in status
        assert page.evaluate("() => GG.liveState.lastUpdateText") in status
        assert page.evaluate(BANNER) is None
        # A poll that finds nothing new is answered 304 (no body to parse).
        page.wait_for_function("() => GG.liveState.unchanged >= 1")
        assert log.errors == []
        assert log.external_requests() == []
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "live.png"))
        # Zoomed in, micro-grids come through the viewport hook from this server's area route.
        page.evaluate(
            "([lat, lon]) => { Object.values(GG.maps)[0].map.setView([lat, lon], 16, "
            "{animate: false}); }",
            [lat, lon],
        )
        page.wait_for_function(
            "() => { const a = Object.values(GG.maps)[0].areas.microgrid;"
            " return a !== undefined && a.ggCount > 0; }"
        )
        assert log.errors == []
        assert log.external_requests() == []
        assert any("/api/v1/areas/microgrid?bbox=" in u for u in log.requests)

    # The server is gone: the page says so (and keeps what it showed).
    text = page.wait_for_function(BANNER, timeout=15_000).json_value()
    assert "connection lost" in text
    assert "last update" in text
    assert page.evaluate("() => GG.liveState.connected") is False
    assert page.evaluate(COUNT) == before + 1
    page.screenshot(path=str(tmp_path / "live_disconnected.png"))

    # A server answers again on the same address: the banner goes.
    with serve(live_app(engine, reference_store_url), port=port):
        page.wait_for_function(f"() => ({BANNER})() === null", timeout=15_000)
        assert page.evaluate("() => GG.liveState.connected") is True


@pytest.mark.parametrize("reference_store_url", ["sqlite"], indirect=True)
def test_page_without_a_token_says_so(page: Any, engine: Engine, reference_store_url: str) -> None:
    with serve(live_app(engine, reference_store_url)) as base:
        log = watch(page)
        page.goto(f"{base}/")
        page.wait_for_function("() => window.GG && GG.ready === true", timeout=30_000)
        text = page.wait_for_function(BANNER).json_value()
        assert "no access token" in text
        assert page.evaluate("() => GG.liveState.polls") == 0
        assert not [u for u in log.requests if "/api/v1/live" in u]
        assert log.errors == []
        assert log.external_requests() == []


@pytest.mark.parametrize("reference_store_url", ["sqlite"], indirect=True)
def test_page_with_a_revoked_token_stops_and_says_so(
    page: Any, engine: Engine, reference_store_url: str
) -> None:
    street, _, _ = _street_point(engine)
    credential, secret = store.issue_credential(
        engine, "commander", street_code=street, label="test_live_browser revoked"
    )
    with _wall(page, engine, reference_store_url, secret) as (_, log):
        store.revoke_credential(engine, credential.credential_id)
        text = page.wait_for_function(BANNER).json_value()
        assert "revoked" in text
        polls = page.evaluate("() => GG.liveState.polls")
        assert page.evaluate("() => GG.liveState.stopped") is True
        # It stops polling: a revoked token is not retried every second.
        page.wait_for_timeout(2500)
        assert page.evaluate("() => GG.liveState.polls") == polls
        # The browser logs the refused request itself; nothing else went wrong.
        assert all("401" in e for e in log.errors), log.errors
        assert log.external_requests() == []


@pytest.mark.parametrize("reference_store_url", ["sqlite"], indirect=True)
def test_a_unit_fix_is_pushed_to_the_page(
    page: Any, engine: Engine, reference_store_url: str
) -> None:
    """The page listens to the stream: a position fix moves the unit's marker without a
    poll (while streaming, the page polls only every 10 s)."""
    street, lon, lat = _street_point(engine)
    _, secret = store.issue_credential(
        engine, "dispatcher", street_code=street, label="test_live_browser push"
    )
    unit_id = str(store.read_units(engine, street_code=street)["unit_id"].iloc[0])
    marker = """(id) => { const m = Object.values(GG.maps)[0].layers.units.getLayers()
        .find((m) => m.ggRow[4] === id); return m ? [m.getLatLng().lat, m.getLatLng().lng]
        : null; }"""
    with _wall(page, engine, reference_store_url, secret) as (base, log):
        page.wait_for_function("() => GG.liveState.streams >= 1", timeout=10_000)
        r = httpx.post(
            f"{base}/api/v1/units/{unit_id}/position",
            headers={"Authorization": f"Bearer {secret}"},
            json={"lon": lon, "lat": lat},
            timeout=30,
        )
        assert r.status_code == 200, r.text
        page.wait_for_function(
            f"([id, lat, lon]) => {{ const p = ({marker})(id); return p !== null"
            " && Math.abs(p[0] - lat) < 1e-5 && Math.abs(p[1] - lon) < 1e-5; }",
            arg=[unit_id, lat, lon],
            timeout=8000,
        )
        assert page.evaluate("() => GG.liveState.pushes") >= 1
        assert log.errors == []
        assert log.external_requests() == []


@pytest.mark.parametrize("reference_store_url", ["sqlite"], indirect=True)
def test_a_stream_that_falls_silent_is_reopened(
    page: Any, engine: Engine, reference_store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stream that stays open but says nothing (a proxy or a network dropped it without
    closing it) is given up after two and a half heartbeats, counted as a failure, and a new
    one is opened. Here every stream falls silent at once."""

    async def silent(*args: Any, **kwargs: Any) -> AsyncIterator[bytes]:
        await asyncio.sleep(3600)
        yield b""

    monkeypatch.setattr(live_stream, "HEARTBEAT_S", 0.4)
    monkeypatch.setattr(live_stream, "_events", silent)
    street, _, _ = _street_point(engine)
    _, secret = store.issue_credential(
        engine, "dispatcher", street_code=street, label="test_live_browser silent stream"
    )
    with _wall(page, engine, reference_store_url, secret) as (_, log):
        page.wait_for_function("() => GG.liveState.streams >= 1", timeout=10_000)
        # Silent for 2.5 x 0.4 s + 2 s: given up, then a new stream after the retry pause.
        page.wait_for_function("() => GG.liveState.streams >= 2", timeout=20_000)
        assert page.evaluate("() => GG.liveState.failures") >= 1
        assert log.external_requests() == []
