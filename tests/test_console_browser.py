"""The dispatcher's workspace (/console) in headless Chromium, against a real uvicorn server.

Each test watches the page: no console error, no request off localhost. What the issue asks:
a call taken through the form is confirmed and its unit turns busy with its route on the map
within 2 s; an override needs a reason and is stored with both choices; two pages racing for
one unit get one success and one conflict with a fresh recommendation; a row turns red at the
exact instant its stage falls due (the browser's clock driven by the test); a street's
dispatcher never receives another street's incidents or units on the wire; in confirm mode a
report waits while a priority-1 one is dispatched at once.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import shapely
from browser import watch
from live_server import serve
from sqlalchemy import Engine, select
from test_live import live_app

from gridgov import store
from gridgov.service import intake
from gridgov.store.models import DISPATCHES

pytestmark = pytest.mark.browser

SCREENSHOTS = Path(__file__).resolve().parents[1] / "maps" / "screenshots"
STREET_A = "510106024000"
STREET_B = "510106025000"
MATTER = "UM-04"  # street vending: one enforcement unit, priority 3
URGENT = "PS-01"  # priority 1
READY = "() => window.GGC && GGC.ready === true"
#: The workspace must be usable on a 1366x768 screen.
SMALL = {"width": 1366, "height": 768}


@pytest.fixture(scope="module")
def engine(reference_engine: Engine) -> Engine:
    return reference_engine


@pytest.fixture
def server(engine: Engine, reference_store_url: str) -> Iterator[str]:
    with serve(live_app(engine, reference_store_url)) as base:
        yield base


def token(engine: Engine, role: str, **scope: str) -> str:
    _, secret = store.issue_credential(engine, role, label=f"console browser {role}", **scope)
    return secret


def points(engine: Engine, street: str, n: int) -> list[tuple[float, float]]:
    gdf = store.read_stored_areas(engine, "grid").sort_values("code")
    gdf = gdf[gdf["code"].astype(str).str.startswith(street[:9])].iloc[::5].iloc[:n]
    return [(float(p.x), float(p.y)) for p in shapely.point_on_surface(gdf.geometry.to_numpy())]


def queued(engine: Engine, point: tuple[float, float], matter: str = MATTER, **kw: Any) -> str:
    report = intake.report(
        engine,
        store.context_from_store(engine),
        matter_code=matter,
        lon=point[0],
        lat=point[1],
        check_duplicates=False,
        id_prefix="BRW",
        **kw,
    )
    return report.incident_id


def cancel(engine: Engine, *ids: str) -> None:
    for incident_id in ids:
        status = store.query_incidents(engine, incident_ids=[incident_id])[0]["status"].iloc[0]
        if status in ("registered", "dispatched", "acknowledged", "on_scene", "resolved"):
            store.apply_action(
                engine,
                incident_id,
                "cancel",
                at=datetime.now(UTC),
                actor="test",
                role="dispatcher",
                reason="browser test over",
            )


def open_console(page: Any, base: str, secret: str) -> Any:
    log = watch(page)
    page.goto(f"{base}/console#token={secret}")
    page.wait_for_function(READY, timeout=30_000)
    assert "token" not in page.url
    return log


def row(page: Any, incident_id: str) -> Any:
    return page.locator(f'#gg-queue .gg-row[data-id="{incident_id}"]')


@pytest.mark.parametrize("reference_store_url", ["sqlite"], indirect=True)
def test_a_call_is_taken_confirmed_and_shown_busy_with_its_route(
    page: Any, engine: Engine, server: str
) -> None:
    page.set_viewport_size(SMALL)
    secret = token(engine, "dispatcher", street_code=STREET_A)
    log = open_console(page, server, secret)
    (lon, lat), _ = points(engine, STREET_A, 2)
    page.keyboard.press("n")  # the new-call shortcut
    page.fill("#gg-matter-search", "vending")
    page.click('#gg-matter-results li[data-code="UM-04"]')
    # The place by a click on the map, then corrected by typing.
    page.click("#gg-map", position={"x": 200, "y": 200})
    assert page.input_value("#gg-lon") != ""
    page.fill("#gg-lon", f"{lon:.6f}")
    page.fill("#gg-lat", f"{lat:.6f}")
    page.fill("#gg-desc", "vendor blocking the pavement")
    page.fill("#gg-contact", "138 0000 0000")
    page.click("#gg-submit")
    page.wait_for_function("() => GGC.recommendation !== null")
    incident_id = page.evaluate("() => GGC.selected")
    try:
        assert row(page, incident_id).count() == 1
        group = row(page, incident_id).evaluate("r => r.parentElement.dataset.group")
        assert group == "dispatch"
        unit = page.evaluate("() => GGC.recommendation.recommended.enforcement")
        assert page.locator("#gg-picker select.gg-pick option").count() >= 2
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "console-detail.png"))
        # Nothing overflows the 1366x768 screen.
        assert page.evaluate("() => document.documentElement.scrollWidth") <= SMALL["width"]
        assert page.evaluate("() => document.documentElement.scrollHeight") <= SMALL["height"]

        start = time.monotonic()
        page.click("#gg-confirm")
        page.wait_for_function(
            """([id, unit]) => {
                const tr = document.querySelector(`#gg-units tr[data-unit="${unit}"]`);
                return tr !== null && tr.classList.contains('gg-unit-busy')
                    && (GGC.routes[id] || []).length >= 1;
            }""",
            arg=[incident_id, unit],
            timeout=2000,
        )
        assert time.monotonic() - start < 2.0
        assert page.evaluate("() => GGC.lastChoice.status") == 201
        assert page.evaluate("() => GGC.lastChoice.body.override") is False
        page.wait_for_function(
            '(id) => { const r = document.querySelector(`.gg-row[data-id="${id}"]`);'
            " return r !== null && r.parentElement.dataset.group === 'acknowledge'; }",
            arg=incident_id,
        )
        page.screenshot(path=str(SCREENSHOTS / "console-queue.png"))
        page.locator("#gg-board").screenshot(path=str(SCREENSHOTS / "console-board.png"))
        # Map and queue in step: a marker click selects the row, a row click centres the map.
        page.evaluate("(id) => GGC.markers[id].fire('click')", incident_id)
        assert page.evaluate("() => GGC.selected") == incident_id
        row(page, incident_id).click()
        centre = page.evaluate("() => GGC.map.getCenter()")
        item = page.evaluate("(id) => GGC.queue.find(i => i.incident_id === id)", incident_id)
        assert abs(centre["lat"] - item["lat"]) < 1e-6 and abs(centre["lng"] - item["lon"]) < 1e-6
        # The language switch (L) and the row shortcuts (j / k).
        page.keyboard.press("l")
        assert page.inner_text(".gg-header h1") == "Dispatcher's workspace"
        page.keyboard.press("l")
        assert page.inner_text(".gg-header h1") == "调度工作台"
        page.keyboard.press("j")
        assert page.evaluate("() => GGC.selected") is not None
        assert log.errors == []
        assert log.external_requests() == []
        # The caller's contact stays on the incident, out of the log.
        events = store.read_events(engine, incident_id=incident_id)
        assert "138 0000 0000" not in str(events.to_dict("records"))
    finally:
        cancel(engine, incident_id)


@pytest.mark.parametrize("reference_store_url", ["sqlite"], indirect=True)
def test_an_override_needs_a_reason_and_stores_both_choices(
    page: Any, engine: Engine, server: str
) -> None:
    secret = token(engine, "dispatcher", street_code=STREET_A)
    (point,) = points(engine, STREET_A, 1)
    incident_id = queued(engine, point, dispatch_now=False)
    try:
        log = open_console(page, server, secret)
        row(page, incident_id).click()
        page.wait_for_function("() => GGC.recommendation !== null")
        best = page.evaluate("() => GGC.recommendation.recommended.enforcement")
        other = page.evaluate(
            "(best) => Array.from(document.querySelectorAll('#gg-picker select.gg-pick option'))"
            ".find(o => !o.disabled && o.value !== best).value",
            best,
        )
        page.select_option("#gg-picker select.gg-pick", other)
        page.click("#gg-assign")
        page.wait_for_function("() => GGC.lastChoice !== null")
        assert page.evaluate("() => GGC.lastChoice.status") == 422
        assert "reason" in page.inner_text("#gg-message")
        assert store.read_assignments(engine, incident_id=incident_id).empty
        page.fill("#gg-reason", "the recommended team is at a school event")
        page.select_option("#gg-picker select.gg-pick", other)
        page.click("#gg-assign")
        page.wait_for_function("() => GGC.lastChoice.status === 201")
        with engine.connect() as connection:
            stored = connection.execute(
                select(DISPATCHES).where(DISPATCHES.c.incident_id == incident_id)
            ).one()
        assert stored.override is True
        assert stored.recommended_units == [best]
        assert stored.override_reason == "the recommended team is at a school event"
        chosen = store.read_assignments(engine, incident_id=incident_id, active=True)
        assert list(chosen["unit_id"]) == [other]
        page.wait_for_selector("#gg-latest")
        assert other in page.inner_text("#gg-latest")
        assert stored.chosen_time_s == pytest.approx(float(chosen["time_s"].iloc[0]))
        # Found to repeat an earlier call: marked as its duplicate (cancelled, linked).
        master = queued(engine, point, dispatch_now=False)
        page.wait_for_function("(id) => GGC.queue.some(i => i.incident_id === id)", arg=master)
        row(page, incident_id).click()
        page.fill("#gg-duplicate-of", master)
        page.click("#gg-mark-duplicate")
        page.wait_for_function(
            "(id) => !GGC.queue.some(i => i.incident_id === id)", arg=incident_id
        )
        gone = store.query_incidents(engine, incident_ids=[incident_id])[0].iloc[0]
        assert gone["status"] == "cancelled" and gone["duplicate_of"] == master
        assert store.read_assignments(engine, incident_id=incident_id, active=True).empty
        cancel(engine, master)
        assert log.errors == [] or all("422" in e for e in log.errors), log.errors
        assert log.external_requests() == []
    finally:
        cancel(engine, incident_id)


@pytest.mark.parametrize("reference_store_url", ["sqlite"], indirect=True)
def test_two_pages_confirm_the_same_unit_at_once(
    page: Any, chromium: Any, engine: Engine, server: str
) -> None:
    (point,) = points(engine, STREET_A, 1)
    # Two calls at the same place: both recommend the same unit.
    first = queued(engine, point, dispatch_now=False)
    second = queued(engine, point, dispatch_now=False)
    other_context = chromium.new_context(viewport=SMALL)
    page_b = other_context.new_page()
    try:
        log_a = open_console(page, server, token(engine, "dispatcher", street_code=STREET_A))
        log_b = open_console(page_b, server, token(engine, "dispatcher", street_code=STREET_A))
        row(page, first).click()
        row(page_b, second).click()
        for p in (page, page_b):
            p.wait_for_function("() => GGC.recommendation !== null")
        unit = page.evaluate("() => GGC.recommendation.recommended.enforcement")
        assert page_b.evaluate("() => GGC.recommendation.recommended.enforcement") == unit
        # Both press Confirm: the two requests are in flight together.
        for p in (page, page_b):
            p.evaluate("() => document.getElementById('gg-confirm').click()")
        for p in (page, page_b):
            p.wait_for_function("() => GGC.lastChoice !== null", timeout=10_000)
        statuses = sorted(p.evaluate("() => GGC.lastChoice.status") for p in (page, page_b))
        assert statuses == [201, 409]
        loser = page if page.evaluate("() => GGC.lastChoice.status") == 409 else page_b
        fresh = loser.evaluate("() => GGC.recommendation.recommended.enforcement")
        assert fresh is not None and fresh != unit
        assert "taken" in loser.inner_text("#gg-message") or "changed" in loser.inner_text(
            "#gg-message"
        )
        assert len(store.read_assignments(engine, unit_id=unit, active=True)) == 1
        for log in (log_a, log_b):
            assert all("409" in e for e in log.errors), log.errors
            assert log.external_requests() == []
    finally:
        other_context.close()
        cancel(engine, first, second)


@pytest.mark.parametrize("reference_store_url", ["sqlite"], indirect=True)
def test_a_row_turns_red_exactly_at_its_deadline(page: Any, engine: Engine, server: str) -> None:
    (point,) = points(engine, STREET_A, 1)
    incident_id = queued(engine, point)  # dispatched: the acknowledge clock runs
    page.clock.install(time=datetime.now(UTC))
    try:
        log = open_console(page, server, token(engine, "dispatcher", street_code=STREET_A))
        page.wait_for_function("(id) => GGC.queue.some(i => i.incident_id === id)", arg=incident_id)
        deadline = page.evaluate(
            "(id) => Date.parse(GGC.queue.find(i => i.incident_id === id).deadline)", incident_id
        )
        assert not row(page, incident_id).evaluate("r => r.classList.contains('gg-overdue')")
        page.clock.pause_at(datetime.fromtimestamp((deadline - 1000) / 1000, UTC))
        page.clock.run_for(999)  # the deadline itself: still on time
        assert page.evaluate("() => Date.now()") == deadline - 1
        assert not row(page, incident_id).evaluate("r => r.classList.contains('gg-overdue')")
        page.clock.run_for(2)
        overdue = row(page, incident_id)
        assert overdue.evaluate("r => r.classList.contains('gg-overdue')")
        assert overdue.evaluate("r => r.parentElement.dataset.group") == "overdue"
        assert overdue.evaluate("r => getComputedStyle(r).backgroundColor") == "rgb(253, 236, 234)"
        assert log.errors == []
        assert log.external_requests() == []
    finally:
        cancel(engine, incident_id)


@pytest.mark.parametrize("reference_store_url", ["sqlite"], indirect=True)
def test_street_a_never_receives_street_b_data(page: Any, engine: Engine, server: str) -> None:
    (point_a,) = points(engine, STREET_A, 1)
    (point_b,) = points(engine, STREET_B, 1)
    units_b = set(store.read_units(engine, street_code=STREET_B)["unit_id"].astype(str))
    responses: list[Any] = []
    page.on("response", lambda r: responses.append(r) if "/api/" in r.url else None)
    log = open_console(page, server, token(engine, "dispatcher", street_code=STREET_A))
    mine = queued(engine, point_a)
    theirs = queued(engine, point_b)
    theirs_held = queued(engine, point_b, dispatch_now=False)
    try:
        page.wait_for_function("(id) => GGC.queue.some(i => i.incident_id === id)", arg=mine)
        polls = page.evaluate("() => GGC.polls")
        page.wait_for_function(f"() => GGC.polls >= {polls + 2}")
        bodies = [r.text() for r in responses if r.status == 200]
        assert any(mine in b for b in bodies)
        for body in bodies:
            assert theirs not in body and theirs_held not in body
            leaked = [u for u in units_b if f'"{u}"' in body]
            assert leaked == [], leaked[:5]
        shown = page.evaluate("() => GGC.queue.map(i => i.street_code)")
        assert set(shown) == {STREET_A}
        assert log.errors == []
        assert log.external_requests() == []
    finally:
        cancel(engine, mine, theirs, theirs_held)


@pytest.mark.parametrize("reference_store_url", ["sqlite"], indirect=True)
def test_confirm_mode_holds_a_report_but_not_priority_1(
    page: Any, engine: Engine, server: str
) -> None:
    commander = {"Authorization": f"Bearer {token(engine, 'commander', street_code=STREET_A)}"}
    dispatcher = {"Authorization": f"Bearer {token(engine, 'dispatcher', street_code=STREET_A)}"}
    mode_url = f"{server}/api/v1/streets/{STREET_A}/dispatch-mode"
    r = httpx.put(mode_url, json={"mode": "confirm"}, headers=commander, timeout=30)
    assert r.status_code == 200, r.text
    p1, p2 = points(engine, STREET_A, 2)
    opened: list[str] = []
    try:
        log = open_console(page, server, token(engine, "dispatcher", street_code=STREET_A))
        assert "confirm" in page.inner_text("#gg-mode")
        for matter, point in ((MATTER, p1), (URGENT, p2)):
            r = httpx.post(
                f"{server}/api/v1/incidents",
                json={"matter_code": matter, "lon": point[0], "lat": point[1]},
                headers=dispatcher,
                timeout=30,
            )
            assert r.status_code == 201, r.text
            assert r.json()["dispatch_mode"] == "confirm"
            opened.append(r.json()["incident_id"])
        held, urgent = opened
        for incident_id, group in ((held, "dispatch"), (urgent, "acknowledge")):
            page.wait_for_function(
                '([id, g]) => { const r = document.querySelector(`.gg-row[data-id="${id}"]`);'
                " return r !== null && r.parentElement.dataset.group === g; }",
                arg=[incident_id, group],
                timeout=5000,
            )
        assert store.read_assignments(engine, incident_id=held).empty
        assert not store.read_assignments(engine, incident_id=urgent).empty
        # Duty off and on again from the board.
        free = page.evaluate("() => GGC.units.find(u => u.status === 'available').unit_id")
        for status, on_duty in (("off_duty", False), ("available", True)):
            page.click(f'#gg-units tr[data-unit="{free}"] .gg-duty')
            page.wait_for_function(
                "([u, d]) => GGC.units.some(x => x.unit_id === u && x.on_duty === d)",
                arg=[free, on_duty],
            )
            assert store.read_units(engine, unit_id=free)["status"].iloc[0] == status
        assert log.errors == []
        assert log.external_requests() == []
    finally:
        httpx.put(mode_url, json={"mode": "auto"}, headers=commander, timeout=30)
        cancel(engine, *opened)
