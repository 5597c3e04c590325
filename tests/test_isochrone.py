"""Isochrones on a small grid of roads whose times are known by hand."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import shapely
from pyproj import Transformer

from gridgov.analysis.isochrone import isochrones
from gridgov.errors import InputError
from gridgov.network import RoadNetwork, build_network
from gridgov.roads import SPEEDS_KMH

SPACING_M = 200.0
SIDE = 7
SPEED_MS = SPEEDS_KMH["arterial"]["drive"] / 3.6
BUFFER_M = 20.0
TO_WGS = Transformer.from_crs("EPSG:32648", "EPSG:4326", always_xy=True)
X0, Y0 = 400_000.0, 3_390_000.0  # UTM 48N, in Chengdu


def _xy(i: int, j: int) -> tuple[float, float]:
    return X0 + i * SPACING_M, Y0 + j * SPACING_M


@pytest.fixture(scope="module")
def grid() -> RoadNetwork:
    """A SIDE × SIDE grid of two-way arterials, except one one-way street (see below)."""
    ids = {(i, j): i * SIDE + j for i in range(SIDE) for j in range(SIDE)}
    nodes = gpd.GeoDataFrame(
        {"node_id": list(ids.values())},
        geometry=[shapely.Point(_xy(*k)) for k in ids],
        crs="EPSG:32648",
    ).to_crs("EPSG:4326")
    rows = []
    for (i, j), a in ids.items():
        for di, dj in ((1, 0), (0, 1)):
            if (i + di, j + dj) not in ids:
                continue
            b = ids[(i + di, j + dj)]
            line = shapely.LineString([_xy(i, j), _xy(i + di, j + dj)])
            rows.append((a, b, line))
            # The street from (0, 0) to (1, 0) is one-way eastbound.
            if not ((i, j) == (0, 0) and (di, dj) == (1, 0)):
                rows.append((b, a, shapely.reverse(line)))
    links = gpd.GeoDataFrame(
        {
            "link_id": range(len(rows)),
            "u": [r[0] for r in rows],
            "v": [r[1] for r in rows],
            "length_m": SPACING_M,
            "road_class": "arterial",
        },
        geometry=[r[2] for r in rows],
        crs="EPSG:32648",
    ).to_crs("EPSG:4326")
    return build_network(nodes, links)


def _lonlat(i: int, j: int) -> tuple[float, float]:
    lon, lat = TO_WGS.transform(*_xy(i, j))
    return float(lon), float(lat)


def _known_time_s(origin: tuple[int, int], i: int, j: int) -> float:
    hops = abs(i - origin[0]) + abs(j - origin[1])
    # Westbound from (1, 0) to (0, 0) is forbidden: the way round takes two more blocks.
    if (i, j) == (0, 0) and origin[1] == 0 and origin[0] >= 1:
        hops += 2
    return hops * SPACING_M / SPEED_MS


@pytest.mark.parametrize("origin", [(3, 3), (2, 0)])
def test_bands_hold_exactly_the_nodes_reached_in_time(
    grid: RoadNetwork, origin: tuple[int, int]
) -> None:
    minutes = [0.5, 1.0, 1.5]
    bands = isochrones(grid, *_lonlat(*origin), minutes=minutes, buffer_m=BUFFER_M)
    assert bands["minutes"].tolist() == minutes
    metric = bands.to_crs("EPSG:32648")
    for band, polygon, reached in zip(
        minutes, metric.geometry, bands["reached_nodes"], strict=True
    ):
        limit = band * 60.0
        inside_count = 0
        for i in range(SIDE):
            for j in range(SIDE):
                t = _known_time_s(origin, i, j)
                inside = polygon.covers(shapely.Point(_xy(i, j)))
                if t <= limit + 1e-6:
                    assert inside, (band, i, j, t)
                    inside_count += 1
                if inside:
                    # Within the stated buffer of a road position reached in time.
                    assert t <= limit + BUFFER_M / SPEED_MS + 1e-6, (band, i, j, t)
        assert reached == inside_count


def test_bands_are_nested_and_grow(grid: RoadNetwork) -> None:
    bands = isochrones(grid, *_lonlat(3, 3), minutes=[1.5, 0.5, 1.0], buffer_m=BUFFER_M)
    assert bands["minutes"].tolist() == [0.5, 1.0, 1.5]
    geoms = bands.to_crs("EPSG:32648").geometry.to_numpy()
    assert all(geoms[k + 1].covers(geoms[k].buffer(-0.01)) for k in range(len(geoms) - 1))
    assert np.all(np.diff(bands["area_km2"].to_numpy()) > 0)


def test_a_partly_reached_road_is_cut_where_time_runs_out(grid: RoadNetwork) -> None:
    # 0.3 min = 18 s = 150 m at 30 km/h: three quarters of the first block in each direction.
    band = isochrones(grid, *_lonlat(3, 3), minutes=[0.3], buffer_m=1.0).to_crs("EPSG:32648")
    polygon = band.geometry.iloc[0]
    x, y = _xy(3, 3)
    assert polygon.covers(shapely.Point(x + 149.0, y))
    assert not polygon.covers(shapely.Point(x + 152.0, y))
    assert not polygon.covers(shapely.Point(x + 100.0, y + 100.0))  # off the roads


def test_bad_input_is_refused_with_a_reason(grid: RoadNetwork) -> None:
    with pytest.raises(InputError, match="positive"):
        isochrones(grid, *_lonlat(3, 3), minutes=[0, 2])
    with pytest.raises(InputError, match="too far"):
        isochrones(grid, 104.5, 31.2, minutes=[2])
    with pytest.raises(InputError, match="buffer"):
        isochrones(grid, *_lonlat(3, 3), buffer_m=-1)
