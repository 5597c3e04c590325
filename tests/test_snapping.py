"""Snapping to every road within the tolerance: a near-twin pair, worked by hand.

A square block whose south side is drawn as two ways that are not exact reverses: A→B straight,
B→A through a vertex 0.5 m north of the line (metres, UTM 48N, near Chengdu). Points beside that
side must be able to leave and be reached in both directions, as on one two-way road.
"""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import shapely
from pyproj import Transformer

from gridgov.network import RoadNetwork, build_network
from gridgov.settings import get_settings

X0, Y0 = 404_000.0, 3_390_000.0
KMH = 30.0
METRIC = "EPSG:32648"
TO_WGS84 = Transformer.from_crs(METRIC, "EPSG:4326", always_xy=True)
TO_METRIC = Transformer.from_crs("EPSG:4326", METRIC, always_xy=True)


def _lonlat(x: float, y: float) -> tuple[float, float]:
    lon, lat = TO_WGS84.transform(X0 + x, Y0 + y)
    return float(lon), float(lat)


@pytest.fixture(scope="module")
def block() -> RoadNetwork:
    corners = {1: (0.0, 0.0), 2: (200.0, 0.0), 3: (200.0, 200.0), 4: (0.0, 200.0)}
    ways = [
        (1, 2, [(0.0, 0.0), (200.0, 0.0)]),
        (2, 1, [(200.0, 0.0), (100.0, 0.5), (0.0, 0.0)]),  # the near twin
    ]
    for a, b in ((2, 3), (3, 4), (4, 1)):
        ways += [(a, b, [corners[a], corners[b]]), (b, a, [corners[b], corners[a]])]
    nodes = gpd.GeoDataFrame(
        {"node_id": list(corners)},
        geometry=[shapely.Point(X0 + x, Y0 + y) for x, y in corners.values()],
        crs=METRIC,
    )
    lines = [shapely.LineString([(X0 + x, Y0 + y) for x, y in c]) for _, _, c in ways]
    links = gpd.GeoDataFrame(
        {
            "link_id": np.arange(len(ways)),
            "u": [a for a, _, _ in ways],
            "v": [b for _, b, _ in ways],
            "length_m": shapely.length(np.array(lines, dtype=object)),
            "speed_drive_kmh": KMH,
            "speed_bike_kmh": 15.0,
            "speed_walk_kmh": 5.0,
        },
        geometry=lines,
        crs=METRIC,
    )
    return build_network(nodes.to_crs("EPSG:4326"), links.to_crs("EPSG:4326"))


def test_a_point_beside_a_near_twin_pair_joins_both_ways(block: RoadNetwork) -> None:
    p = block.snap(*_lonlat(60.0, 3.0), "drive")
    # Nearest is the way back (2.7 m, under its vertex's slope); the way out is 3 m away.
    assert p.access_m[0] == pytest.approx(2.7, abs=1e-3)
    links = block.joined_links(p)
    assert {(link["from"], link["to"]) for link in links} == {(2, 1), (1, 2)}
    assert sorted(round(link["access_m"], 3) for link in links) == [2.7, 3.0]


def test_both_directions_are_direct_and_routes_follow_the_way_used(block: RoadNetwork) -> None:
    west = block.snap(*_lonlat(60.0, 3.0), "drive")
    east = block.snap(*_lonlat(150.0, -2.0), "drive")
    access_ms = get_settings().access_speed_kmh["drive"] / 3.6
    # Eastwards over A→B: 90 m of road; the point leaves over its second join (3 m away).
    out = block.route(west, east)
    assert out.time_s == pytest.approx((3.0 + 2.0) / access_ms + 90.0 / (KMH / 3.6), abs=1e-6)
    assert out.time_s == block.field_to(east).times_from(west)[0]
    assert out.node_ids == ()
    # Westwards over B→A, whose line bends through (100, 0.5): the route is drawn along it.
    back = block.route(east, west)
    assert back.time_s == block.field_to(west).times_from(east)[0]
    road = shapely.LineString([(200.0, 0.0), (100.0, 0.5), (0.0, 0.0)])
    along = road.project(shapely.Point(60.0, 0.3)) - road.project(shapely.Point(150.0, 0.25))
    leg_east = shapely.distance(shapely.Point(150.0, -2.0), road)
    want = (leg_east + 2.7) / access_ms + along / (KMH / 3.6)
    assert back.time_s == pytest.approx(want, abs=1e-3)
    x, y = TO_METRIC.transform(*np.asarray(back.geometry.coords).T)
    assert np.min(np.hypot(x - (X0 + 100.0), y - (Y0 + 0.5))) < 1e-3
    # Without the second join each way would go round the block (at least 400 m more).
    assert back.time_s < 200.0 / (KMH / 3.6)
