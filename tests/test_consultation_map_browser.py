"""The consultation map in headless Chromium: offline, error-free, drawing the streets asked,
their communities, the footprint and the residents' suggestions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import geopandas as gpd
import pandas as pd
import pytest
import shapely
from browser import watch

from gridgov import maps
from gridgov.maps.consultation_map import ANSWER_COLOURS, consultation_map

pytestmark = pytest.mark.browser

DATA = Path(__file__).resolve().parent.parent / "data"
CDZ, JQ, YMK = "510106031000", "510106040000", "510106038000"
COUNT_JS = """() => {
  const e = Object.values(GG.maps)[0];
  const out = {};
  for (const [k, v] of Object.entries(e.areas)) out[k] = v.getLayers().length;
  let circles = 0;
  e.map.eachLayer((layer) => { if (layer instanceof L.CircleMarker) circles += 1; });
  out.circles = circles;
  return out;
}"""


def test_the_consultation_map_draws_answers_and_suggestions(page: Any, tmp_path: Path) -> None:
    areas = gpd.read_parquet(DATA / "jinniu_areas.parquet")
    areas = areas[areas["level"].isin(["street", "community"])]
    requests = pd.DataFrame(
        {
            "street_code": [JQ, CDZ, YMK],
            "opinion": [None, "disagree", "agree"],
            "adoption": [None, "adopted", None],
            "suggestions": [0, 2, 0],
        }
    )
    suggestions = pd.DataFrame(
        {
            "text": ["保留篮球场", "<b>不要</b>下沉广场"],
            "community_code": ["510106031010", "510106031013"],
            "data": [{"lon": 104.0070, "lat": 30.7050}, {"lon": 104.0080, "lat": 30.7052}],
        }
    )
    consultation = {
        "consultation_id": 1,
        "title": "茶店子街道公共空间改造",
        "item_code": "P-DET-09",
        "department": "区住房和城乡建设局",
        "footprint": shapely.from_wkt(
            "LINESTRING (103.99 30.712, 104.0079 30.706, 104.020 30.702)"
        ),
        "buffer_m": 200.0,
    }
    m = consultation_map(consultation, requests, suggestions, areas, base="none")
    path = tmp_path / "consultation.html"
    path.write_text(maps.render_html(m, assets="inline"), encoding="utf-8")
    log = watch(page)
    page.goto(path.as_uri())
    page.wait_for_function("window.GG && GG.ready === true", timeout=30_000)
    got = page.evaluate(COUNT_JS)
    assert got["street"] == 3
    assert got["community"] == int(
        ((areas["level"] == "community") & areas["parent_code"].isin([JQ, CDZ, YMK])).sum()
    )
    assert got["circles"] == 2
    html = path.read_text(encoding="utf-8")
    assert ANSWER_COLOURS["disagree"][0] in html and ANSWER_COLOURS[None][0] in html
    assert "<b>不要</b>" not in html  # suggestion texts are escaped
    assert log.errors == [] and log.external_requests() == []
