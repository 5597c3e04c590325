"""The road base layer: the stored roads drawn by class with no tile server (issue 19, item 3).

API and store tests run on SQLite and PostGIS over a small network planted for them; the
browser tests open a static map and the live wall over the reference district in headless
Chromium with the network blocked, and count the road paths Leaflet drew.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pytest
import shapely
from browser import watch
from fastapi.testclient import TestClient
from live_server import serve
from sqlalchemy import Engine
from typer.testing import CliRunner

from api.app import create_app
from gridgov import maps, store
from gridgov.errors import InputError
from gridgov.maps.road_layer import SERVED_ROAD_URL, RoadLayer
from gridgov.settings import Settings

ROADS = "/api/v1/roads"
#: Nodes of the planted network: a two-way expressway 1-2-3 (wiggly between 2 and 3), a
#: one-way unnamed arterial 2->4, and a named residential street 5-6 far to the north-east.
NODES = {
    1: (104.000, 30.700),
    2: (104.010, 30.700),
    3: (104.020, 30.700),
    4: (104.010, 30.710),
    5: (104.050, 30.750),
    6: (104.060, 30.750),
}
NEAR = "103.995,30.695,104.025,30.715"
ALL = "103.99,30.69,104.07,30.76"


def _wiggle(a: tuple[float, float], b: tuple[float, float]) -> shapely.LineString:
    t = np.linspace(0, 1, 201)
    x = a[0] + (b[0] - a[0]) * t
    # 2 m wiggles: invisible zoomed out, kept zoomed in.
    y = a[1] + (b[1] - a[1]) * t + 0.00002 * np.sin(t * 40 * np.pi)
    return shapely.LineString(np.column_stack([x, y]))


def _network() -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    nodes = gpd.GeoDataFrame(
        {"node_id": list(NODES)}, geometry=[shapely.Point(p) for p in NODES.values()], crs=4326
    )
    rows = []

    def link(u: int, v: int, cls: str, name: str | None, line: shapely.LineString | None = None):
        geom = line if line is not None else shapely.LineString([NODES[u], NODES[v]])
        rows.append((u, v, cls, name, geom))

    link(1, 2, "expressway", "绕城高速")
    link(2, 1, "expressway", "绕城高速")
    wiggly = _wiggle(NODES[2], NODES[3])
    link(2, 3, "expressway", "绕城高速", wiggly)
    link(3, 2, "expressway", "绕城高速", shapely.reverse(wiggly))
    link(2, 4, "arterial", None)
    link(5, 6, "residential", "小巷")
    link(6, 5, "residential", "小巷")
    links = gpd.GeoDataFrame(
        {
            "link_id": range(len(rows)),
            "u": [r[0] for r in rows],
            "v": [r[1] for r in rows],
            "road_class": [r[2] for r in rows],
            "road_name": [r[3] for r in rows],
            "speed_drive_kmh": 30.0,
            "speed_bike_kmh": 15.0,
            "speed_walk_kmh": 5.0,
        },
        geometry=[r[4] for r in rows],
        crs=4326,
    )
    links["length_m"] = links.geometry.to_crs(32648).length
    return nodes, links


@pytest.fixture
def road_engine(store_engine: Engine) -> Engine:
    nodes, links = _network()
    store.load_roads(store_engine, nodes, links, name="planted")
    return store_engine


@pytest.fixture
def client(road_engine: Engine, store_url: str) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(database_url=store_url), engine=road_engine)) as c:
        yield c


def _vertices(answer: dict[str, Any], class_id: str) -> int:
    index = [c["id"] for c in answer["classes"]].index(class_id)
    return sum(len(part) for f in answer["features"] if f[0] == index for part in f[2])


# --------------------------------------------------------------------------------------------
# store
# --------------------------------------------------------------------------------------------


def test_road_lines_one_per_segment_and_by_box(road_engine: Engine) -> None:
    lines = store.read_road_lines(road_engine)
    # Seven directed links, four segments: each two-way road once.
    assert len(lines) == 4
    assert list(lines.columns) == ["link_id", "road_class", "road_name", "geometry"]
    assert sorted(lines["road_class"]) == ["arterial", "expressway", "expressway", "residential"]
    near = store.read_road_lines(road_engine, (103.995, 30.695, 104.025, 30.715))
    assert sorted(near["road_class"]) == ["arterial", "expressway", "expressway"]
    assert len(store.read_road_lines(road_engine, (105.0, 31.0, 105.1, 31.1))) == 0


def test_no_stored_roads_reads_empty(store_engine: Engine) -> None:
    assert len(store.read_road_lines(store_engine, (103.0, 30.0, 105.0, 31.0))) == 0


# --------------------------------------------------------------------------------------------
# the road route
# --------------------------------------------------------------------------------------------


def test_road_route_by_box_and_class(client: TestClient) -> None:
    r = client.get(ROADS, params={"bbox": ALL, "format": "compact"})
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["segments"] == 4
    classes = {c["id"]: c for c in answer["classes"]}
    assert set(classes) == {"expressway", "arterial", "residential"}
    # Classes are drawn differently: colour and width.
    assert len({(c["colour"], c["weight"]) for c in classes.values()}) == 3
    assert classes["expressway"]["weight"] > classes["arterial"]["weight"]
    names = {(answer["classes"][f[0]]["id"], f[1]) for f in answer["features"]}
    assert names == {("expressway", "绕城高速"), ("arterial", ""), ("residential", "小巷")}
    # The expressway's two segments meet at node 2: merged into one line.
    expressway = next(f for f in answer["features"] if f[1] == "绕城高速")
    assert len(expressway[2]) == 1
    near = client.get(ROADS, params={"bbox": NEAR, "format": "compact"}).json()
    assert {c["id"] for c in near["classes"]} == {"expressway", "arterial"}
    assert near["segments"] == 3


def test_road_route_simplifies_per_zoom(client: TestClient) -> None:
    def at(zoom: float) -> dict[str, Any]:
        r = client.get(ROADS, params={"bbox": ALL, "zoom": zoom, "format": "compact"})
        assert r.status_code == 200, r.text
        return r.json()

    far, close = at(11), at(18)
    assert _vertices(far, "expressway") < 10 < _vertices(close, "expressway")
    # Minor classes are left out where they would not show.
    assert "residential" not in {c["id"] for c in far["classes"]}
    assert "residential" in {c["id"] for c in close["classes"]}


def test_road_route_geojson(client: TestClient) -> None:
    r = client.get(ROADS, params={"bbox": NEAR})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["type"] == "FeatureCollection" and body["segments"] == 3
    props = {f["properties"]["road_class"]: f["properties"] for f in body["features"]}
    assert props["expressway"]["road_name"] == "绕城高速"
    assert props["arterial"]["road_name"] is None
    assert all(f["geometry"]["type"] == "MultiLineString" for f in body["features"])


@pytest.mark.parametrize(
    "bbox",
    ["1,2,3", "104.1,30.7,104.0,30.8", "a,b,c,d", "104.0,30.8,104.1,30.7", "", "-inf,0,inf,1e999"],
)
def test_road_route_refuses_a_bad_box(client: TestClient, bbox: str) -> None:
    r = client.get(ROADS, params={"bbox": bbox})
    assert r.status_code == 422, r.text


def test_road_route_needs_a_box_and_a_sane_zoom(client: TestClient) -> None:
    assert client.get(ROADS).status_code == 422
    assert client.get(ROADS, params={"bbox": ALL, "zoom": 40}).status_code == 422


def test_road_route_readable_like_the_areas(client: TestClient, road_engine: Engine) -> None:
    """Roads are public like the areas: every caller, token or none, gets the same lines."""
    anonymous = client.get(ROADS, params={"bbox": ALL, "format": "compact"})
    assert anonymous.status_code == 200
    for role in ("analyst", "admin"):
        _, secret = store.issue_credential(road_engine, role, label=f"test_map_roads {role}")
        r = client.get(
            ROADS,
            params={"bbox": ALL, "format": "compact"},
            headers={"Authorization": f"Bearer {secret}"},
        )
        assert r.status_code == 200 and r.json() == anonymous.json(), role


def test_served_url_is_the_route() -> None:
    assert SERVED_ROAD_URL.startswith(ROADS + "?")


# --------------------------------------------------------------------------------------------
# the layer in built maps
# --------------------------------------------------------------------------------------------


def test_road_layer_follows_the_base(road_engine: Engine) -> None:
    import folium

    lines = store.read_road_lines(road_engine)
    m = maps.add_road_layer(folium.Map(), "roads", gdf_roads=lines)
    layer = next(c for c in m._children.values() if isinstance(c, RoadLayer))
    assert layer.show and layer.n_features == 3
    m = maps.add_road_layer(folium.Map(), "osm", gdf_roads=lines)
    layer = next(c for c in m._children.values() if isinstance(c, RoadLayer))
    assert not layer.show  # over tiles: an overlay to switch on
    m = maps.add_road_layer(folium.Map(), "none", gdf_roads=lines)
    assert not any(isinstance(c, RoadLayer) for c in m._children.values())
    m = maps.add_road_layer(folium.Map(), "roads", url=SERVED_ROAD_URL)
    layer = next(c for c in m._children.values() if isinstance(c, RoadLayer))
    assert layer.data is None and layer.options["url"] == SERVED_ROAD_URL
    with pytest.raises(InputError, match="one of the two"):
        maps.add_road_layer(folium.Map(), "roads")


# One backend is enough for what the page holds: the store reads run on both above.
@pytest.mark.parametrize("reference_store_url", ["sqlite"], indirect=True)
def test_cli_base_values(reference_store_url: str, tmp_path: Path) -> None:
    from gridgov.cli import app

    runner = CliRunner()
    pages = {}
    for base in ("roads", "none", "http://tiles.intra/{z}/{x}/{y}.png"):
        out = tmp_path / f"{len(pages)}.html"
        result = runner.invoke(
            app,
            [
                "map",
                "assessment",
                "--out",
                str(out),
                "--url",
                reference_store_url,
                "--kpi",
                str(_kpi(tmp_path, reference_store_url)),
                "--kpi-value",
                "value",
                "--base",
                base,
            ],
        )
        assert result.exit_code == 0, result.output
        pages[base] = out.read_text(encoding="utf-8")
    assert "GG.roads(" in pages["roads"] and "tiles.intra" not in pages["roads"]
    assert "GG.roads(" not in pages["none"]
    assert "GG.roads(" in pages["http://tiles.intra/{z}/{x}/{y}.png"]
    result = runner.invoke(app, ["map", "--help"])
    assert "roads" in result.output


def _kpi(tmp_path: Path, url: str) -> Path:
    streets = store.read_stored_areas(store.open_store(url), "street")
    path = tmp_path / "kpi.csv"
    path.write_text(
        "street_code,value\n" + "".join(f"{c},{i}\n" for i, c in enumerate(streets["code"])),
        encoding="utf-8",
    )
    return path


# --------------------------------------------------------------------------------------------
# in the browser, offline
# --------------------------------------------------------------------------------------------

READY = "() => window.GG && GG.ready === true"
ROADS_DRAWN = """() => { const e = Object.values(GG.maps)[0];
    return e.layers.roads !== undefined && e.layers.roads.ggCount > 0; }"""
PATHS = """() => {
  const paths = [...document.querySelectorAll('.leaflet-ggRoads-pane path.gg-road')];
  return {
    count: paths.length,
    styles: [...new Set(paths.map((p) => p.getAttribute('stroke') + ' '
      + p.getAttribute('stroke-width')))],
    layer: Object.values(GG.maps)[0].layers.roads.ggCount,
  };
}"""
# A point on the named road (in page pixels), to hover it.
ON_ROAD = """(name) => {
  const e = Object.values(GG.maps)[0];
  const line = e.layers.roads.getLayers().find((l) => l.ggName === name);
  const lls = line.getLatLngs()[0];
  const a = lls[Math.floor(lls.length / 2)], b = lls[Math.floor(lls.length / 2) + 1];
  const mid = L.latLng((a.lat + b.lat) / 2, (a.lng + b.lng) / 2);
  e.map.setView(mid, 15, {animate: false});
  const p = e.map.latLngToContainerPoint(mid);
  const box = e.map.getContainer().getBoundingClientRect();
  return [box.left + p.x, box.top + p.y];
}"""


def _assert_drawn_by_class(page: Any) -> dict[str, Any]:
    drawn = page.evaluate(PATHS)
    assert drawn["count"] > 0 and drawn["layer"] > 0, drawn
    # The reference district holds arterials and urban expressways: two styles at least.
    assert len(drawn["styles"]) >= 2, drawn
    return drawn


@pytest.mark.browser
@pytest.mark.parametrize("reference_store_url", ["sqlite"], indirect=True)
def test_static_map_draws_the_roads_offline(
    page: Any, reference_store_url: str, tmp_path: Path
) -> None:
    from gridgov.cli import app

    out = tmp_path / "command_centre.html"
    result = CliRunner().invoke(
        app, ["map", "command-centre", "--out", str(out), "--url", reference_store_url]
    )
    assert result.exit_code == 0, result.output
    log = watch(page)
    page.goto(out.as_uri())
    page.wait_for_function(READY, timeout=30_000)
    _assert_drawn_by_class(page)
    # A named road says its name on hover.
    x, y = page.evaluate(ON_ROAD, "二环路")
    page.mouse.move(x, y)
    page.wait_for_selector(".leaflet-tooltip:has-text('二环路')")
    assert "城市快速路" in page.locator(".leaflet-tooltip").first.inner_text()
    assert "道路 roads" in page.locator(".gg-road-legend").inner_text()
    assert log.errors == []
    assert log.external_requests() == []


@pytest.mark.browser
@pytest.mark.parametrize("reference_store_url", ["sqlite"], indirect=True)
def test_roads_are_an_overlay_over_tiles(
    page: Any, reference_store_url: str, tmp_path: Path
) -> None:
    from gridgov.cli import app

    out = tmp_path / "tiles.html"
    tiles = "http://localhost:8765/tiles/{z}/{x}/{y}.png"
    result = CliRunner().invoke(
        app,
        ["map", "command-centre", "--out", str(out), "--url", reference_store_url, "--base", tiles],
    )
    assert result.exit_code == 0, result.output
    page.route("http://localhost:8765/tiles/**", lambda r: r.fulfill(status=404, body=""))
    log = watch(page)
    page.goto(out.as_uri())
    page.wait_for_function(READY, timeout=30_000)
    # Over tiles the roads start switched off, and the layer control switches them on.
    assert page.evaluate(PATHS)["count"] == 0
    page.locator(".leaflet-control-layers").get_by_text("道路 roads").click()
    _assert_drawn_by_class(page)
    assert all("404" in e for e in log.console_errors)  # only the refused tiles
    assert log.page_errors == []
    assert log.external_requests() == []


@pytest.mark.browser
@pytest.mark.parametrize("reference_store_url", ["sqlite"], indirect=True)
def test_live_wall_draws_the_roads_per_viewport(
    page: Any, reference_store_url: str, reference_engine: Engine
) -> None:
    streets = store.read_stored_areas(reference_engine, "street").sort_values("code")
    row = streets.iloc[len(streets) // 2]
    _, secret = store.issue_credential(
        reference_engine, "dispatcher", street_code=str(row["code"]), label="test_map_roads wall"
    )
    app = create_app(Settings(database_url=reference_store_url), engine=reference_engine)
    with serve(app) as base:
        log = watch(page)
        page.goto(f"{base}/#token={secret}")
        page.wait_for_function(READY, timeout=30_000)
        page.wait_for_function(ROADS_DRAWN)
        whole = _assert_drawn_by_class(page)
        assert any(f"{ROADS}?bbox=" in u for u in log.requests)
        assert "城市快速路 urban expressway" in page.locator(".gg-road-legend").inner_text()
        # Zoomed in, the roads of the new box come from the server again.
        p = shapely.point_on_surface(row.geometry)
        asked = sum(f"{ROADS}?bbox=" in u for u in log.requests)
        page.evaluate(
            "([lat, lon]) => { Object.values(GG.maps)[0].map.setView([lat, lon], 16, "
            "{animate: false}); }",
            [p.y, p.x],
        )
        page.wait_for_function(
            "(n) => performance.getEntriesByType('resource')"
            ".filter((r) => r.name.includes('/api/v1/roads?')).length > n",
            arg=asked,
        )
        page.wait_for_function(ROADS_DRAWN)
        close = page.evaluate(PATHS)
        assert 0 < close["layer"] <= whole["layer"]
        assert log.errors == []
        assert log.external_requests() == []


@pytest.mark.postgis
@pytest.mark.parametrize("store_url", ["postgis"], indirect=True)
def test_road_box_uses_the_gist_index_on_postgis(road_engine: Engine) -> None:
    """On PostGIS the box is answered through the links' GIST index (SQLite filters in process,
    having no spatial index)."""
    from sqlalchemy import event

    assert road_engine.dialect.name == "postgresql"
    seen: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
        if "road_links" in statement:
            seen.append((statement, params))

    event.listen(road_engine, "before_cursor_execute", capture)
    try:
        store.read_road_lines(road_engine, (103.995, 30.695, 104.025, 30.715))
    finally:
        event.remove(road_engine, "before_cursor_execute", capture)
    statement, params = seen[-1]
    with road_engine.connect() as connection:
        # Seven rows make a sequential scan cheapest; forbid it to see that the index serves.
        connection.exec_driver_sql("SET enable_seqscan = off")
        plan = connection.exec_driver_sql("EXPLAIN " + statement, params).all()
    assert "ix_road_links_geometry_gist" in " ".join(row[0] for row in plan)
