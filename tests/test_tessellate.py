"""Tests of the road-block area generator on small synthetic boundaries and roads."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import shapely
from shapely.geometry import LineString, Polygon

from gridgov.errors import InputError
from gridgov.tessellate import (
    MAX_EDGE_M,
    CommunitySpec,
    HierarchyPlan,
    StreetSpec,
    generate_hierarchy,
    kmeans_centres,
    partition_polygon,
    road_blocks,
    sample_points,
    split_polygon,
)

LEVEL_ORDER = ["district", "street", "community", "grid", "microgrid"]
BOUNDARY = Polygon([(0, 0), (4000, 0), (4500, 3000), (1800, 3900), (1000, 3500), (-300, 1500)])


def _roads(seed: int = 1) -> list[LineString]:
    rng = np.random.default_rng(seed)
    vertical = [
        LineString([(x, -100), (x + 300 * rng.standard_normal(), 4000)])
        for x in range(300, 4400, 600)
    ]
    horizontal = [
        LineString([(-400, y), (4600, y + 200 * rng.standard_normal())])
        for y in range(250, 3900, 500)
    ]
    return vertical + horizontal


def _plan(n_grids: int = 60, n_micro: int = 400) -> HierarchyPlan:
    streets = []
    for i in range(4):
        code = f"510106{24 + i:03d}000"
        comms = tuple(
            CommunitySpec(f"{code[:9]}{10 + j:03d}", f"街{i}社区{j}", official=j != 0)
            for j in range(2 + i)
        )
        streets.append(StreetSpec(code, f"街{i}", comms, anchor=(800.0 + 900 * i, 1500.0)))
    return HierarchyPlan("510106000000", "测试区", tuple(streets), n_grids, n_micro)


@pytest.fixture(scope="module")
def areas() -> gpd.GeoDataFrame:
    return generate_hierarchy(BOUNDARY, _roads(), _plan(), seed=7)


def _assert_tiles(children: np.ndarray, parent: Polygon) -> None:
    union = shapely.union_all(children)
    assert union.area == pytest.approx(parent.area, rel=1e-6)
    tree = shapely.STRtree(children)
    left, right = tree.query(children, predicate="intersects")
    keep = left < right
    overlap = shapely.area(shapely.intersection(children[left[keep]], children[right[keep]]))
    assert overlap.max(initial=0.0) == 0.0


def test_counts_and_codes(areas: gpd.GeoDataFrame) -> None:
    counts = areas["level"].value_counts()
    assert counts["district"] == 1 and counts["street"] == 4 and counts["community"] == 14
    assert 55 <= counts["grid"] <= 60 and 380 <= counts["microgrid"] <= 400
    assert areas["code"].is_unique
    lengths = {"district": 12, "street": 12, "community": 12, "grid": 15, "microgrid": 18}
    assert (areas["code"].str.len() == areas["level"].map(lengths)).all()
    child = areas[areas["level"].isin(["grid", "microgrid"])]
    assert all(c.startswith(p) for c, p in zip(child["code"], child["parent_code"], strict=True))
    assert areas["generated"].all()
    community = areas[areas["level"] == "community"]
    assert set(community["name_source"]) == {"official", "generated"}
    grid = areas[areas["code"] == community["code"].iloc[0] + "001"].iloc[0]
    assert grid["name"] == community["name"].iloc[0] + "第1网格"


def test_every_level_tiles_exactly(areas: gpd.GeoDataFrame) -> None:
    assert (areas.geom_type == "Polygon").all()
    assert shapely.is_valid(areas.geometry.to_numpy()).all()
    district = areas[areas["level"] == "district"].geometry.iloc[0]
    assert district.area == pytest.approx(BOUNDARY.area, rel=1e-6)
    by_code = areas.set_index("code").geometry
    for level in LEVEL_ORDER[1:]:
        rows = areas[areas["level"] == level]
        _assert_tiles(rows.geometry.to_numpy(), district)
        for geom, parent_code in zip(rows.geometry, rows["parent_code"], strict=True):
            parent = by_code[parent_code]
            assert geom.within(parent) or geom.difference(parent).area < 1e-9 * parent.area
        for parent_code, group in rows.groupby("parent_code"):
            _assert_tiles(group.geometry.to_numpy(), by_code[parent_code])


def test_balanced_sizes(areas: gpd.GeoDataFrame) -> None:
    for level in ("grid", "microgrid"):
        area = areas.loc[areas["level"] == level].area
        assert area.max() / area.min() < 50, level


def test_streets_follow_roads_and_anchors(areas: gpd.GeoDataFrame) -> None:
    streets = areas[areas["level"] == "street"].reset_index(drop=True)
    for i, geom in enumerate(streets.geometry):
        anchor = shapely.Point(800.0 + 900 * i, 1500.0)
        assert geom.distance(anchor) < 600
    # Street edges inside the district lie along roads (they are unions of road blocks).
    roads = shapely.union_all(_roads()).buffer(0.5)
    district = areas[areas["level"] == "district"].geometry.iloc[0]
    inner = shapely.union_all(streets.boundary.to_numpy()).difference(district.boundary.buffer(0.5))
    assert inner.difference(roads).length < 0.02 * inner.length


def test_deterministic() -> None:
    plan = _plan(20, 80)
    one = generate_hierarchy(BOUNDARY, _roads(), plan, seed=3)
    two = generate_hierarchy(BOUNDARY, _roads(), plan, seed=3)
    other = generate_hierarchy(BOUNDARY, _roads(), plan, seed=4)
    assert one["code"].tolist() == two["code"].tolist()
    assert shapely.equals_exact(one.geometry.to_numpy(), two.geometry.to_numpy(), 0).all()
    assert not shapely.equals_exact(one.geometry.to_numpy(), other.geometry.to_numpy(), 0).all()


def test_without_roads_still_tiles() -> None:
    frame = generate_hierarchy(BOUNDARY, None, _plan(20, 60), seed=1)
    district = frame[frame["level"] == "district"].geometry.iloc[0]
    for level in LEVEL_ORDER[1:]:
        _assert_tiles(frame.loc[frame["level"] == level].geometry.to_numpy(), district)
    assert (frame.geom_type == "Polygon").all()


def test_road_blocks_and_partition_helpers() -> None:
    square = shapely.box(0, 0, 1000, 1000)
    cross = np.array([LineString([(500, -10), (500, 1010)]), LineString([(-10, 500), (1010, 500)])])
    blocks = road_blocks(square, cross)
    assert len(blocks) == 4
    assert sum(b.area for b in blocks) == pytest.approx(1e6)
    pieces = split_polygon(square, 7, np.random.default_rng(0))
    assert len(pieces) == 7 and all(isinstance(p, Polygon) for p in pieces)
    assert sum(p.area for p in pieces) == pytest.approx(1e6, rel=1e-6)
    assert max(p.area for p in pieces) / min(p.area for p in pieces) < 3
    parts = partition_polygon(square, 3, cross, seed=5)
    assert len(parts) == 3
    assert shapely.union_all(parts).area == pytest.approx(1e6, rel=1e-6)
    with pytest.raises(InputError, match="n must be"):
        partition_polygon(square, 0)


def test_rejects_an_impossible_plan() -> None:
    with pytest.raises(InputError, match="n_grids"):
        generate_hierarchy(BOUNDARY, None, _plan(3, 10), seed=1)


def test_no_edge_is_longer_than_max_edge(areas: gpd.GeoDataFrame) -> None:
    # Long edges bow when reprojected vertex by vertex and flip thin slivers beside them.
    rings = shapely.get_parts(shapely.boundary(areas.geometry.to_numpy()))
    longest = max(
        float(np.hypot(*np.diff(shapely.get_coordinates(ring), axis=0).T).max()) for ring in rings
    )
    assert longest <= MAX_EDGE_M * (1 + 1e-9)
    # The synthetic boundary's own edges are kilometres long, so this really was densified.
    assert max(np.hypot(*np.diff(BOUNDARY.exterior.coords, axis=0).T)) > 10 * MAX_EDGE_M


def test_sample_points_and_kmeans_centres() -> None:
    rng = np.random.default_rng(0)
    square = shapely.box(0, 0, 100, 100)
    points = sample_points(square, 500, rng)
    assert points.shape == (500, 2)
    assert shapely.contains_xy(square, points[:, 0], points[:, 1]).all()
    centres = kmeans_centres(np.vstack([points[:250] * 0.1, points[250:] * 0.1 + 80]), 2, rng)
    found = centres[np.argsort(centres[:, 0])]
    assert np.abs(found - [[5.0, 5.0], [85.0, 85.0]]).max() < 2.0
