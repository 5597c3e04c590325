"""What a dispatcher reads, in headless Chromium: no popup, tooltip or legend of the command
centre, street, coverage and assessment maps, or of the live wall, shows a raw identifier; count
legends are whole numbers that do not overlap; every page has a title and ``<html lang>``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
import shapely
from browser import watch
from live_server import free_port, serve
from sqlalchemy import Engine
from test_live import live_app
from test_map_labels import assert_disjoint_ascending, class_ranges, raw_identifiers
from test_maps import command_centre, make_activity

from gridgov import maps, store
from gridgov.network import build_network
from gridgov.reference import ReferenceDistrict, read_reference_district

pytestmark = pytest.mark.browser

#: The text of the popups of up to ``n`` units and every incident (built as on a click), and of
#: the tooltips of up to ``n`` areas per level, as the browser lays them out.
TEXTS_JS = """(n) => {
  const e = Object.values(GG.maps)[0];
  const box = document.createElement('div');
  box.className = 'leaflet-popup-content';
  document.body.appendChild(box);
  function text(html) { box.innerHTML = html; return box.innerText; }
  const out = {units: [], incidents: [], areas: []};
  const counts = {units: n, incidents: 100000};
  for (const name of ['units', 'incidents']) {
    const group = e.layers[name];
    if (!group) continue;
    for (const m of group.getLayers().slice(0, counts[name])) {
      const c = m.getPopup().getContent();
      out[name].push(text(typeof c === 'function' ? c(m) : c));
    }
  }
  for (const group of Object.values(e.areas)) {
    for (const l of group.getLayers().slice(0, n)) {
      if (l.getTooltip()) out.areas.push(text(l.getTooltip().getContent()));
    }
  }
  box.remove();
  return out;
}"""
PAGE_JS = "() => ({lang: document.documentElement.lang, title: document.title})"


@pytest.fixture(scope="module")
def ref() -> ReferenceDistrict:
    return read_reference_district()


@pytest.fixture(scope="module")
def activity(ref: ReferenceDistrict) -> dict[str, pd.DataFrame]:
    return make_activity(ref)


def _open(page: Any, m: Any, path: Path) -> Any:
    path.write_text(maps.render_html(m, assets="inline"), encoding="utf-8")
    log = watch(page)
    page.goto(path.as_uri())
    page.wait_for_function("window.GG && GG.ready === true", timeout=30_000)
    return log


def _check_page(page: Any, log: Any, *, popups: bool = True) -> dict[str, list[str]]:
    """Everything a person reads on the page carries no raw identifier; returns the texts."""
    head = page.evaluate(PAGE_JS)
    assert head["lang"] == "zh-CN"
    assert head["title"].strip() and raw_identifiers(head["title"]) == []
    legend = page.locator(".gg-legend").inner_text()
    assert raw_identifiers(legend) == [], legend
    texts = page.evaluate(TEXTS_JS, 30)
    if popups:
        assert texts["units"] and texts["areas"]
    for kind, items in texts.items():
        for text in items:
            assert raw_identifiers(text) == [], (kind, text)
    assert log.errors == [] and log.external_requests() == []
    return texts


def test_command_centre_reads_in_both_languages(
    page: Any, ref: ReferenceDistrict, activity: dict, tmp_path: Path
) -> None:
    log = _open(page, command_centre(ref, activity), tmp_path / "cc.html")
    texts = _check_page(page, log)
    assert texts["incidents"]
    joined = "\n".join(texts["incidents"])
    # States, actions, assignment roles, rules and reach read in Chinese and English.
    for words in (
        "已派遣 dispatched",
        "上报 report",
        "主办 lead",
        "街道内最近 nearest in the street",
    ):
        assert words in joined, words
    assert "火情火险 Fire or imminent fire hazard" in joined
    # The class legend of the level on screen: whole numbers, no overlap.
    shown = page.locator(".gg-level-legend:visible").inner_text().strip().splitlines()
    assert_disjoint_ascending(class_ranges(shown[1:]))


def test_street_map_popup_opened_by_a_click(
    page: Any, ref: ReferenceDistrict, activity: dict, tmp_path: Path
) -> None:
    code = activity["incidents"]["street_code"].iloc[0]
    m = maps.street_map(
        code,
        ref.gdf_areas,
        ref.gdf_units,
        activity["incidents"],
        activity["assignments"],
        activity["events"],
    )
    log = _open(page, m, tmp_path / "street.html")
    _check_page(page, log)
    # A real click on an incident and on a unit (markers are not clustered here).
    for cls in ("gg-incident", "gg-unit"):
        page.locator(f".{cls}").first.click(force=True)
        text = page.wait_for_selector(".leaflet-popup-content").inner_text()
        assert raw_identifiers(text) == [], text
        assert "状态 status" in text
        page.keyboard.press("Escape")
    assert log.errors == [] and log.external_requests() == []


def test_coverage_map_reads_in_both_languages(
    page: Any, ref: ReferenceDistrict, tmp_path: Path
) -> None:
    net = build_network(ref.gdf_nodes, ref.gdf_links)
    log = _open(
        page, maps.coverage_map(ref.gdf_areas, ref.gdf_units, net, "police"), tmp_path / "c.html"
    )
    _check_page(page, log)


def test_assessment_map_reads_in_both_languages(
    page: Any, ref: ReferenceDistrict, tmp_path: Path
) -> None:
    streets = ref.gdf_areas.loc[ref.gdf_areas["level"] == "street", "code"].tolist()
    kpi = pd.DataFrame(
        {"street_code": streets, "resolution_rate": [0.997 + 0.00025 * i for i in range(13)]}
    )
    m = maps.assessment_map(ref.gdf_areas, kpi, value="resolution_rate")
    log = _open(page, m, tmp_path / "a.html")
    _check_page(page, log, popups=False)
    legend = page.locator(".gg-legend").inner_text().strip().splitlines()
    assert legend[0] == "考核 assessment: 结案率 resolution rate"
    classes = [line for line in legend[1:] if "%" in line]
    assert 1 <= len(classes) <= 6 and len(set(classes)) == len(classes)
    assert "结案率 resolution rate" in page.evaluate(PAGE_JS)["title"]


@pytest.mark.parametrize("reference_store_url", ["sqlite"], indirect=True)
def test_live_wall_reads_in_both_languages(
    page: Any, reference_engine: Engine, reference_store_url: str
) -> None:
    engine = reference_engine
    streets = store.read_stored_areas(engine, "street").sort_values("code")
    row = streets.iloc[len(streets) // 2]
    p = shapely.point_on_surface(row.geometry)
    street = str(row["code"])
    _, secret = store.issue_credential(
        engine, "dispatcher", street_code=street, label="test_map_labels_browser wall"
    )
    with serve(live_app(engine, reference_store_url), port=free_port()) as base:
        log = watch(page)
        page.goto(f"{base}/#token={secret}")
        page.wait_for_function(
            "() => window.GG && GG.ready === true && GG.liveState && GG.liveState.updates >= 1",
            timeout=30_000,
        )
        r = httpx.post(
            f"{base}/api/v1/incidents",
            headers={"Authorization": f"Bearer {secret}"},
            json={"matter_code": "FS-01", "lon": p.x, "lat": p.y, "description": "labels"},
            timeout=30,
        )
        assert r.status_code == 201, r.text
        page.wait_for_function(
            """(id) => Object.values(GG.maps)[0].layers.incidents.getLayers()
                .some((m) => m.ggRow[3] === id)""",
            arg=r.json()["incident_id"],
            timeout=5000,
        )
        texts = _check_page(page, log)
        assert any("火情火险" in t for t in texts["incidents"])
        status = page.locator(".gg-live-status").inner_text()
        assert "调度员 dispatcher" in status and raw_identifiers(status) == []
