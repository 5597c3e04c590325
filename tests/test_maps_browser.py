"""Every map kind in headless Chromium: offline, error-free, and drawing what it should.

Each map is written with its assets inlined and opened from a file URL. Counts come from Leaflet
itself (the runtime registers each page's layers in ``window.GG``; a clustered layer is counted
through its MarkerCluster group) and, for unclustered markers, from the DOM as well.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from browser import watch
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError
from test_maps import command_centre, expected_counts, make_activity

from gridgov import maps
from gridgov.network import build_network
from gridgov.reference import ReferenceDistrict, read_reference_district

pytestmark = pytest.mark.browser

SCREENSHOTS = Path(__file__).resolve().parents[1] / "maps" / "screenshots"
COUNT_JS = """() => {
  const out = {};
  for (const e of Object.values(GG.maps)) {
    for (const [k, v] of Object.entries(e.areas)) out[k] = v.getLayers().length;
    for (const [k, v] of Object.entries(e.layers)) out[k] = v.getLayers().length;
    out.onMap = Object.keys(e.areas).filter((k) => e.map.hasLayer(e.areas[k]));
  }
  out.domUnits = document.querySelectorAll('.gg-unit').length;
  out.domIncidents = document.querySelectorAll('.gg-incident').length;
  return out;
}"""


@pytest.fixture(scope="module")
def ref() -> ReferenceDistrict:
    return read_reference_district()


@pytest.fixture(scope="module")
def activity(ref: ReferenceDistrict) -> dict[str, pd.DataFrame]:
    return make_activity(ref)


def _open(page: Any, path: Path) -> Any:
    log = watch(page)
    page.goto(path.as_uri())
    page.wait_for_function("window.GG && GG.ready === true", timeout=30_000)
    return log


def _write(m: Any, path: Path) -> Path:
    path.write_text(maps.render_html(m, assets="inline"), encoding="utf-8")
    return path


def _screenshot(page: Any, tmp_path: Path, name: str) -> None:
    page.screenshot(path=str(tmp_path / name))
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(tmp_path / name, SCREENSHOTS / name)


def test_command_centre(page: Any, ref: ReferenceDistrict, activity: dict, tmp_path: Path) -> None:
    path = _write(command_centre(ref, activity), tmp_path / "command_centre.html")
    log = _open(page, path)
    got = page.evaluate(COUNT_JS)
    want = expected_counts(ref, activity)
    assert {k: got[k] for k in ("street", "community", "grid")} == {
        k: want[k] for k in ("street", "community", "grid")
    }
    assert got["onMap"] == ["grid"]
    assert got["units"] == want["units"]
    assert got["incidents"] == want["incidents"]
    assert got["routes"] == want["routes"]
    _screenshot(page, tmp_path, "command_centre.png")
    # Switch level through the layer control: the community layer replaces the grid layer,
    # and the legend follows.
    legend = page.locator(".gg-legend")
    assert "网格 grid" in legend.inner_text() and "社区 community" not in legend.inner_text()
    page.locator(".leaflet-control-layers").get_by_text("社区 community").click()
    assert page.evaluate(COUNT_JS)["onMap"] == ["community"]
    assert "社区 community" in legend.inner_text() and "网格 grid" not in legend.inner_text()
    assert log.errors == []
    assert log.external_requests() == []


def test_command_centre_popup_and_search(
    page: Any, ref: ReferenceDistrict, activity: dict, tmp_path: Path
) -> None:
    path = _write(command_centre(ref, activity), tmp_path / "cc.html")
    log = _open(page, path)
    # Zoom in past the clustering zoom onto an incident and click it, as a dispatcher would:
    # its popup shows the history and the assignment.
    where = activity["incidents"].set_index("incident_id").geometry["T-001"]
    page.evaluate(
        """([lat, lon]) => {
          const e = Object.values(GG.maps)[0];
          window.__marker = e.layers.incidents.getLayers().find((m) => m.ggRow[3] === 'T-001');
          e.map.setView([lat, lon], 18, {animate: false});
        }""",
        [where.y, where.x],
    )
    # A real click on the marker's icon. Under load the incident layer may redraw its icons
    # just after the view moved (a click then lands on an icon already replaced), so the
    # click is tried again on the current icon, up to three times.
    popup = None
    for _ in range(3):
        page.wait_for_function(
            "window.__marker._icon !== undefined && window.__marker._icon !== null"
        )
        page.evaluate_handle("window.__marker._icon").as_element().click()
        try:
            popup = page.wait_for_selector(".leaflet-popup-content", timeout=5000)
            break
        except PlaywrightTimeoutError:
            continue
    assert popup is not None, "the incident's popup never opened"
    html = popup.inner_html()
    assert "T-001" in html and "history" in html and "assignment" in html
    assert "nearest_in_street" in html and "检查 &lt;b&gt;" in html  # escaped
    # Search by code.
    grid = ref.gdf_areas.loc[ref.gdf_areas["level"] == "grid", "code"].iloc[5]
    # leaflet-search reacts to key presses, so type as a user does.
    page.locator("input.search-input").press_sequentially(grid)
    # Units of the grid match too (their ids start with its code): pick the grid itself.
    name = ref.gdf_areas.set_index("code")["name"][grid]
    page.locator(".search-tip").get_by_text(f"{name} {grid}", exact=True).click()
    target = ref.gdf_areas.set_index("code").geometry[grid].representative_point()
    # The map pans to the grid after the click (it may animate): wait for the view to hold it
    # (the page's default timeout fails the test if it never does).
    page.wait_for_function(
        """([lat, lon]) => Object.values(GG.maps)[0].map.getBounds().contains([lat, lon])""",
        arg=[target.y, target.x],
    )
    bounds = page.evaluate("Object.values(GG.maps)[0].map.getBounds().toBBoxString()")
    west, south, east, north = (float(v) for v in bounds.split(","))
    assert west < target.x < east and south < target.y < north
    assert log.errors == [] and log.external_requests() == []


def test_street_map(page: Any, ref: ReferenceDistrict, activity: dict, tmp_path: Path) -> None:
    code = activity["incidents"]["street_code"].iloc[0]
    m = maps.street_map(
        code,
        ref.gdf_areas,
        ref.gdf_units,
        activity["incidents"],
        activity["assignments"],
        activity["events"],
    )
    info = maps.describe_map(m)["layers"]
    log = _open(page, _write(m, tmp_path / "street.html"))
    got = page.evaluate(COUNT_JS)
    by_level = {v["level"]: v["count"] for v in info.values() if v["kind"] == "areas"}
    assert {k: got[k] for k in by_level} == by_level
    units = next(v["count"] for v in info.values() if v["kind"] == "units")
    incidents = next(v["count"] for v in info.values() if v["kind"] == "incidents")
    assert units > 0 and incidents > 0
    assert got["units"] == got["domUnits"] == units  # unclustered: every marker in the DOM
    assert got["incidents"] == got["domIncidents"] == incidents
    # A unit's popup names it, its department and its street.
    unit_id = page.evaluate(
        "() => { const m = Object.values(GG.maps)[0].layers.units.getLayers()[0];"
        " m.openPopup(); return m.ggRow[4]; }"
    )
    unit = ref.gdf_units.set_index("unit_id").loc[unit_id]
    text = page.wait_for_selector(".leaflet-popup-content").inner_text()
    assert unit_id in text and unit["department"] in text and unit["street_code"] in text
    assert log.errors == [] and log.external_requests() == []


def test_coverage_map(page: Any, ref: ReferenceDistrict, tmp_path: Path) -> None:
    net = build_network(ref.gdf_nodes, ref.gdf_links)
    m = maps.coverage_map(ref.gdf_areas, ref.gdf_units, net, "police")
    log = _open(page, _write(m, tmp_path / "coverage.html"))
    got = page.evaluate(COUNT_JS)
    assert got["grid"] == (ref.gdf_areas["level"] == "grid").sum()
    police = (ref.gdf_units["kind"] == "police").sum()
    assert got["units"] == got["domUnits"] == police
    _screenshot(page, tmp_path, "coverage.png")
    assert log.errors == [] and log.external_requests() == []


def test_assessment_map(page: Any, ref: ReferenceDistrict, tmp_path: Path) -> None:
    streets = ref.gdf_areas.loc[ref.gdf_areas["level"] == "street", "code"].tolist()
    kpi = pd.DataFrame({"street_code": streets, "value": [i / len(streets) for i in range(13)]})
    log = _open(page, _write(maps.assessment_map(ref.gdf_areas, kpi), tmp_path / "a.html"))
    assert page.evaluate(COUNT_JS)["street"] == len(streets)
    assert page.locator(".gg-legend").inner_text().count("%") >= 5
    assert log.errors == [] and log.external_requests() == []


def test_viewport_hook_and_tile_fallback(
    page: Any, ref: ReferenceDistrict, activity: dict, tmp_path: Path
) -> None:
    """Micro-grids load per viewport from the API's URL; failing tiles leave the vectors."""
    micro = ref.gdf_areas[ref.gdf_areas["level"] == "microgrid"]
    asked: list[str] = []

    def areas(route: Any) -> None:
        asked.append(route.request.url)
        url = route.request.url
        bbox = [float(v) for v in url.split("bbox=")[1].split(",")]
        inside = micro.cx[bbox[0] : bbox[2], bbox[1] : bbox[3]]
        body = json.dumps(maps.area_layer_json(inside, "microgrid"))
        route.fulfill(status=200, content_type="application/json", body=body)

    page.route("http://localhost:8765/api/areas*", areas)
    page.route("http://localhost:8765/tiles/**", lambda r: r.fulfill(status=404, body=""))
    m = command_centre(
        ref,
        activity,
        area_url="http://localhost:8765/api/areas?level={level}&bbox={west},{south},{east},{north}",
        base="http://localhost:8765/tiles/{z}/{x}/{y}.png",
    )
    log = _open(page, _write(m, tmp_path / "viewport.html"))
    # Zoomed out: nothing fetched yet. Zoom in on a grid: its micro-grids arrive.
    assert asked == []
    assert page.evaluate("Object.values(GG.maps)[0].areas.microgrid === undefined")
    centre = micro.geometry.iloc[0].representative_point()
    page.evaluate(
        "([lat, lon]) => { Object.values(GG.maps)[0].map.setView([lat, lon], 16); }",
        [centre.y, centre.x],
    )
    page.wait_for_function(
        "(Object.values(GG.maps)[0].areas.microgrid || {getLayers: () => []}).getLayers().length"
    )
    assert asked and "level=microgrid" in asked[-1]
    page.wait_for_function("document.querySelector('.gg-notice').textContent.length > 0")
    assert "basemap unavailable" in page.locator(".gg-notice").inner_text()
    # The vector layers stayed.
    assert page.evaluate(COUNT_JS)["grid"] == (ref.gdf_areas["level"] == "grid").sum()
    assert log.external_requests() == []
    assert all("404" in e for e in log.console_errors)  # only the refused tiles


def test_screenshots_are_small() -> None:
    for name in ("command_centre.png", "coverage.png"):
        path = SCREENSHOTS / name
        if path.exists():
            assert path.stat().st_size < 400_000, name
