"""The field page on a phone: Debian's Chromium through Playwright, 360×740, touch, with the
geolocation and the network switched through the browser context, against a real server.

One story, as the issue tells it: a grid worker reports with a photo while offline; the
network returns and exactly one incident exists, with its photo and thumbnail, and sending
the queue again changes nothing. The unit acknowledges, arrives and resolves with a photo; the
grid worker verifies with a photo; the history shows the three photos in order; another
street's grid worker cannot fetch them (404). Every page: no console error, nothing loaded
from anywhere but this server.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import shapely
from browser import PageLog, watch
from live_server import serve
from PIL import Image
from sqlalchemy import Engine

from api.app import create_app
from gridgov import store
from gridgov.settings import Settings
from gridgov.store.task_rows import incidents_from_source

pytestmark = pytest.mark.browser

SCREENSHOTS = Path(__file__).resolve().parents[1] / "maps" / "screenshots"
STREET_A = "510106024000"
STREET_B = "510106025000"
MATTER = "UM-04"  # street vending: a unit is dispatched at once
PHONE = {"width": 360, "height": 740}
READY = "() => window.GGField && GGField.ready === true"
#: Every control a thumb presses, visible now: [tag, text, width, height] of those under 44 px.
SMALL_TARGETS = """() => Array.from(document.querySelectorAll(
    'button, input, textarea, select, a, label.file'))
  .filter((e) => e.offsetParent !== null && !e.closest('[hidden]'))
  .map((e) => { const r = e.getBoundingClientRect();
    return [e.tagName, (e.textContent || e.id || '').trim().slice(0, 20), r.width, r.height]; })
  .filter(([, , w, h]) => w < 44 || h < 44)"""


def photo(colour: tuple[int, int, int], size: tuple[int, int] = (3000, 2000)) -> bytes:
    """A camera-sized JPEG (the page resizes it before sending)."""
    image = Image.new("RGB", size, colour)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=70)
    return out.getvalue()


@pytest.fixture(scope="module")
def engine(reference_engine: Engine) -> Engine:
    return reference_engine


def _grid_point(engine: Engine, street: str) -> tuple[str, float, float]:
    areas = store.read_stored_areas(engine, "grid").sort_values("code")
    grid = areas[areas["code"].astype(str).str.startswith(street[:9])].iloc[0]
    p = shapely.point_on_surface(grid.geometry)
    return str(grid["code"]), float(p.x), float(p.y)


@pytest.fixture
def phone(chromium: Any) -> Iterator[Any]:
    """A new phone (browser context) per call: ``phone(lon, lat)``."""
    contexts = []

    def make(lon: float, lat: float) -> Any:
        context = chromium.new_context(
            viewport=PHONE,
            device_scale_factor=2,
            is_mobile=True,
            has_touch=True,
            locale="zh-CN",
            geolocation={"longitude": lon, "latitude": lat, "accuracy": 10},
            permissions=["geolocation"],
        )
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(20_000)
        return page

    yield make
    for context in contexts:
        context.close()


def _open(page: Any, base: str, secret: str) -> PageLog:
    log = watch(page)
    page.goto(f"{base}/field#token={secret}")
    page.wait_for_function(READY, timeout=30_000)
    assert "token" not in page.url
    return log


def _tab(page: Any, name: str) -> None:
    page.locator(f"nav .tab[data-tab={name}]").tap()


def _card_status(page: Any, box: str, incident_id: str, status: str) -> None:
    page.wait_for_selector(f"#{box} li[data-id='{incident_id}'][data-status='{status}']")


# One backend is enough for the page: the API's semantics run on both in test_media.py.
@pytest.mark.parametrize("reference_store_url", ["sqlite"], indirect=True)
def test_field_story(phone: Any, engine: Engine, reference_store_url: str, tmp_path: Path) -> None:
    grid, lon, lat = _grid_point(engine, STREET_A)
    grid_b, lon_b, lat_b = _grid_point(engine, STREET_B)
    worker, worker_secret = store.issue_credential(
        engine, "grid_worker", grid_code=grid, label="test_field_browser worker"
    )
    _, other_secret = store.issue_credential(
        engine, "grid_worker", grid_code=grid_b, label="test_field_browser other street"
    )
    keyword = store.context_from_store(engine).catalog.get(MATTER).keywords[0]
    settings = Settings(database_url=reference_store_url, media_root=tmp_path / "media")
    with serve(create_app(settings, engine=engine)) as base:
        # ---- a grid worker reports with a photo while offline ----------------------------
        page = phone(lon, lat)
        log = _open(page, base, worker_secret)
        assert page.evaluate("() => navigator.serviceWorker.ready.then((r) => !!r.active)")
        manifest = page.evaluate(
            "() => fetch(document.querySelector('link[rel=manifest]').href).then(r => r.json())"
        )
        assert manifest["display"] == "standalone" and manifest["start_url"] == "/field"
        assert page.evaluate("() => document.documentElement.scrollWidth") <= PHONE["width"]
        assert page.evaluate(SMALL_TARGETS) == []

        page.locator("#locate").tap()
        page.wait_for_function("() => GGField.position && GGField.position.how === 'gps'")
        assert page.evaluate("() => GGField.position.lon") == pytest.approx(lon)
        page.locator("#matter-search").fill(keyword)
        page.locator("#matter-list button").first.tap()
        assert MATTER in page.locator("#matter-chosen").inner_text()
        page.locator("#description").fill("占道经营 street stall blocking the pavement")
        page.set_input_files(
            "#photos",
            files=[{"name": "scene.jpg", "mimeType": "image/jpeg", "buffer": photo((190, 60, 40))}],
        )
        page.wait_for_selector("#photo-previews img")
        page.screenshot(path=str(SCREENSHOTS / "field-report.png"))

        page.context.set_offline(True)
        page.wait_for_function("() => navigator.onLine === false")
        assert "离线" in page.locator("#net").inner_text()
        page.locator("#send").tap()
        page.wait_for_function("() => document.getElementById('queue-count').textContent === '1'")
        [queued] = page.evaluate(
            """() => GGField.queued().then((q) => Promise.all(q.map(async (i) => ({
                key: i.key, url: i.url, fields: i.fields,
                photo: await new Promise((ok) => { const r = new FileReader();
                    r.onload = () => ok(r.result.split(',')[1]); r.readAsDataURL(i.photos[0]); }),
            }))))"""
        )
        incident_id = queued["fields"]["incident_id"]
        # The phone resized the 3000×2000 photo before it was queued.
        assert page.evaluate("() => GGField.resized[0]") == [3000, 2000, 1600, 1067]
        # Still offline, the page opens again from the service worker's cache, and the
        # report is still waiting (IndexedDB).
        page.reload()
        page.wait_for_function(READY, timeout=30_000)
        assert page.evaluate("() => navigator.serviceWorker.controller !== null")
        assert page.locator("#queue-count").inner_text() == "1"
        _tab(page, "queue")
        assert incident_id in page.locator("#queue li").inner_text()
        assert incidents_from_source(engine, f"field:{worker.credential_id}") == []

        # ---- the network returns: sent once; sending again changes nothing ----------------
        page.context.set_offline(False)
        page.wait_for_function(
            "() => GGField.sent === 1 && document.getElementById('queue-count').textContent === '0'"
        )
        page.evaluate("() => Promise.all([GGField.flush(), GGField.flush()])")
        again = httpx.post(
            f"{base}{queued['url']}",
            data=queued["fields"],
            files=[("photo", ("photo-1.jpg", base64.b64decode(queued["photo"]), "image/jpeg"))],
            headers={"Authorization": f"Bearer {worker_secret}", "Idempotency-Key": queued["key"]},
            timeout=30,
        )
        assert again.status_code == 201 and again.headers["idempotent-replayed"] == "true"
        assert incidents_from_source(engine, f"field:{worker.credential_id}") == [incident_id]
        headers = {"Authorization": f"Bearer {worker_secret}"}
        listed = httpx.get(f"{base}/api/v1/incidents/{incident_id}/media", headers=headers)
        [report_photo] = listed.json()["items"]
        assert report_photo["kind"] == "report" and report_photo["width"] == 1600
        for url in (report_photo["url"], report_photo["thumbnail_url"]):
            assert httpx.get(f"{base}{url}", headers=headers).status_code == 200

        # ---- the unit: acknowledge, arrive, resolve with a photo; its position ------------
        active = store.read_assignments(engine, incident_id=incident_id, active=True)
        unit_id = str(active["unit_id"].iloc[0])
        _, unit_secret = store.issue_credential(
            engine, "unit", unit_id=unit_id, label="test_field_browser unit"
        )
        unit_page = phone(lon + 0.001, lat)
        unit_log = _open(unit_page, base, unit_secret)
        _tab(unit_page, "tasks")
        _card_status(unit_page, "assigned", incident_id, "dispatched")
        unit_page.screenshot(path=str(SCREENSHOTS / "field-tasks.png"))
        assert unit_page.evaluate(SMALL_TARGETS) == []
        unit_page.locator(f"#assigned li[data-id='{incident_id}'] .do-acknowledge").tap()
        _card_status(unit_page, "assigned", incident_id, "acknowledged")
        unit_page.locator(f"#assigned li[data-id='{incident_id}'] .do-arrive").tap()
        _card_status(unit_page, "assigned", incident_id, "on_scene")
        unit_page.set_input_files(
            f"#assigned li[data-id='{incident_id}'] .action-photo",
            files=[{"name": "done.jpg", "mimeType": "image/jpeg", "buffer": photo((40, 160, 60))}],
        )
        unit_page.locator(f"#assigned li[data-id='{incident_id}'] .do-resolve").tap()
        unit_page.wait_for_function("() => GGField.sent === 3")
        unit_page.wait_for_selector(f"#assigned li[data-id='{incident_id}']", state="detached")

        # AVL: a fix goes at once, the next within 10 s does not; no fix for long is stale.
        unit_page.locator("#avl-on").check()
        unit_page.wait_for_function("() => GGField.avl.sent === 1")
        unit_page.context.set_geolocation({"longitude": lon + 0.002, "latitude": lat})
        unit_page.wait_for_function("() => GGField.avl.skipped >= 1")
        assert unit_page.evaluate("() => GGField.avl.sent") == 1
        assert "共享" in unit_page.locator("#avl-state").inner_text()
        unit_page.evaluate(
            "() => { GGField.avl.lastFix = Date.now() - 60000; GGField.checkStale(); }"
        )
        assert "过时" in unit_page.locator("#avl-state.stale").inner_text()
        unit_now = httpx.get(
            f"{base}/api/v1/units/{unit_id}", headers={"Authorization": f"Bearer {unit_secret}"}
        ).json()
        assert unit_now["position_source"] == "avl" and not unit_now["position_stale"]

        # ---- the grid worker verifies with a photo; the history shows the three ------------
        _tab(page, "tasks")
        _card_status(page, "to-verify", incident_id, "resolved")
        page.set_input_files(
            f"#to-verify li[data-id='{incident_id}'] .action-photo",
            files=[
                {"name": "checked.jpg", "mimeType": "image/jpeg", "buffer": photo((40, 60, 190))}
            ],
        )
        page.locator(f"#to-verify li[data-id='{incident_id}'] .do-verify").tap()
        page.wait_for_function("() => GGField.sent === 2")
        _card_status(page, "reported", incident_id, "verified")
        page.locator(f"#reported li[data-id='{incident_id}'] .do-history").tap()
        figures = page.locator(f"#reported li[data-id='{incident_id}'] .history figure")
        figures.nth(2).locator("img").wait_for()
        kinds = figures.evaluate_all("(fs) => fs.map((f) => f.dataset.kind)")
        assert kinds == ["report", "resolve", "verify"]
        seqs = figures.evaluate_all("(fs) => fs.map((f) => Number(f.dataset.seq))")
        assert seqs == sorted(seqs)

        # ---- another street's grid worker cannot fetch them -------------------------------
        other = phone(lon_b, lat_b)
        other_log = _open(other, base, other_secret)
        items = httpx.get(f"{base}/api/v1/incidents/{incident_id}/media", headers=headers)
        urls = [u for m in items.json()["items"] for u in (m["url"], m["thumbnail_url"])]
        assert len(urls) == 6
        for url in [*urls, f"/api/v1/incidents/{incident_id}/media"]:
            answer = other.request.get(
                f"{base}{url}", headers={"Authorization": f"Bearer {other_secret}"}
            )
            assert answer.status == 404, url

        for each in (log, unit_log, other_log):
            assert each.errors == []
            assert each.external_requests() == []
