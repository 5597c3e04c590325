"""Tests of the committed Jinniu reference district (read from data/, not rebuilt)."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
import shapely

from gridgov.areas import Locator, build_locator
from gridgov.model import OFFICE_COLUMNS, UNIT_COLUMNS, ForceKind
from gridgov.reference import (
    POSITION_GRID_INTERIOR,
    POSITION_ROAD,
    ROAD_EDGE_CLEARANCE_M,
    STREET_FORCES,
    ReferenceDistrict,
    read_reference_district,
)
from gridgov.settings import get_settings

METRIC = get_settings().metric_crs


@pytest.fixture(scope="module")
def ref() -> ReferenceDistrict:
    return read_reference_district(get_settings().data_dir)


@pytest.fixture(scope="module")
def areas(ref: ReferenceDistrict) -> gpd.GeoDataFrame:
    return ref.gdf_areas


@pytest.fixture(scope="module")
def locator(areas: gpd.GeoDataFrame) -> Locator:
    return build_locator(areas)


def test_files_are_small() -> None:
    data = get_settings().data_dir
    for name in (
        "jinniu_roads.gpkg",
        "jinniu_areas.parquet",
        "jinniu_offices.parquet",
        "jinniu_units.parquet",
    ):
        assert (data / name).stat().st_size < 4 * 1024 * 1024, name


def test_frames_are_wgs84(ref: ReferenceDistrict) -> None:
    for frame in (ref.gdf_nodes, ref.gdf_links, ref.gdf_areas, ref.gdf_offices, ref.gdf_units):
        assert frame.crs.to_epsg() == 4326
    assert list(ref.gdf_units.columns) == [*UNIT_COLUMNS, "position_source", "geometry"]
    assert list(ref.gdf_offices.columns) == [*OFFICE_COLUMNS, "geometry"]


def test_counts(areas: gpd.GeoDataFrame) -> None:
    counts = areas["level"].value_counts()
    assert counts["district"] == 1 and counts["street"] == 13
    community = areas[areas["level"] == "community"]
    assert (community["name_source"] == "official").sum() >= 84
    assert 900 <= counts["grid"] <= 1100
    assert 9000 <= counts["microgrid"] <= 11000
    admin = pd.read_csv(get_settings().data_dir / "chengdu" / "jinniu_admin_units.csv", dtype=str)
    real = admin[admin["level"].isin(["street", "community"])]
    assert set(real["code"]) <= set(areas["code"])
    named = areas.set_index("code")["name"]
    assert all(named[c] == n for c, n in zip(real["code"], real["name"], strict=True))
    simaqiao = community[community["parent_code"] == "510106030000"]
    assert len(simaqiao) == 6 and (simaqiao["name_source"] == "generated").all()


def test_codes_nest(areas: gpd.GeoDataFrame) -> None:
    assert areas["code"].is_unique
    lengths = {"district": 12, "street": 12, "community": 12, "grid": 15, "microgrid": 18}
    assert (areas["code"].str.len() == areas["level"].map(lengths)).all()
    prefix = {"street": 6, "community": 9, "grid": 12, "microgrid": 15}
    kids = areas[areas["level"] != "district"]
    for code, level, parent in zip(kids["code"], kids["level"], kids["parent_code"], strict=True):
        assert code[: prefix[level]] == parent[: prefix[level]], code
    assert set(kids["parent_code"]) <= set(areas["code"])


def test_no_gaps_or_overlaps(areas: gpd.GeoDataFrame) -> None:
    assert (areas.geom_type == "Polygon").all()
    assert shapely.is_valid(areas.geometry.to_numpy()).all()
    district = areas[areas["level"] == "district"].geometry.iloc[0]
    by_code = areas.set_index("code").geometry
    for level in ("street", "community", "grid", "microgrid"):
        rows = areas[areas["level"] == level]
        geoms = rows.geometry.to_numpy()
        assert shapely.union_all(geoms).area == pytest.approx(district.area, rel=1e-9)
        tree = shapely.STRtree(geoms)
        left, right = tree.query(geoms, predicate="intersects")
        keep = left < right
        overlap = shapely.area(shapely.intersection(geoms[left[keep]], geoms[right[keep]]))
        assert overlap.max(initial=0.0) == 0.0, level
        parents = by_code.loc[rows["parent_code"]].to_numpy()
        assert shapely.within(geoms, parents).all(), level


def test_sizes_are_balanced(areas: gpd.GeoDataFrame) -> None:
    metric = areas.to_crs(METRIC)
    for level in ("grid", "microgrid"):
        area = metric.loc[metric["level"] == level].area
        assert area.max() / area.min() < 50, level


def test_sample_point_lands_in_a_real_community(areas: gpd.GeoDataFrame) -> None:
    hit = areas[areas.covers(shapely.Point(104.05, 30.69))]
    assert set(hit["level"]) == {"district", "street", "community", "grid", "microgrid"}
    assert (hit.loc[hit["level"] == "community", "name_source"] == "official").all()


def test_street_forces(ref: ReferenceDistrict, areas: gpd.GeoDataFrame) -> None:
    units, offices = ref.gdf_units, ref.gdf_offices
    assert units["unit_id"].is_unique and offices["office_id"].is_unique
    assert set(units["office_id"]) <= set(offices["office_id"])
    streets = areas.loc[areas["level"] == "street", "code"]
    for street in streets:
        mine = units[(units["street_code"] == street) & (units["kind"] != "grid_worker")]
        per_kind = mine["kind"].value_counts()
        for kind, (dept, count, _) in STREET_FORCES.items():
            assert per_kind.get(kind.value, 0) == count, (street, kind)
            assert set(mine.loc[mine["kind"] == kind.value, "department"]) == {dept}
            assert f"{street}-{kind.value}" in set(offices["office_id"])
    assert (units["status"] == "available").all() and units["on_duty"].all()
    drive = {"fire", "police", "enforcement", "market", "emergency"}
    assert (units.loc[units["kind"].isin(drive), "travel_mode"] == "drive").all()
    assert units["unit_id"].str.match(r"^\d{12,15}-[a-z_]+-\d{2}$").all()


def test_units_start_at_their_office(ref: ReferenceDistrict) -> None:
    units, offices = ref.gdf_units, ref.gdf_offices.set_index("office_id")
    fixed = units[~units["kind"].isin(["police", "grid_worker"])]
    office_pts = offices.geometry.loc[fixed["office_id"]].to_numpy()
    assert shapely.equals(fixed.geometry.to_numpy(), office_pts).all()


def test_one_grid_worker_per_grid(ref: ReferenceDistrict, areas: gpd.GeoDataFrame) -> None:
    workers = ref.gdf_units[ref.gdf_units["kind"] == ForceKind.GRID_WORKER.value]
    grids = areas[areas["level"] == "grid"]
    assert sorted(workers["grid_code"]) == sorted(grids["code"])
    assert set(workers["travel_mode"]) <= {"walk", "bike"}
    assert (workers["street_code"] == workers["grid_code"].str[:9] + "000").all()
    assert (workers["department"] == "街道办事处").all()


def test_fire_stations(ref: ReferenceDistrict, areas: gpd.GeoDataFrame) -> None:
    stations = ref.gdf_offices[ref.gdf_offices["kind"] == "fire"]
    assert 3 <= len(stations) <= 5
    engines = ref.gdf_units[ref.gdf_units["kind"] == "fire"]
    assert engines["office_id"].value_counts().eq(2).all()
    streets = areas[areas["level"] == "street"].set_index("code").geometry
    for code, point in zip(stations["street_code"], stations.geometry, strict=True):
        assert streets[code].covers(point)


def test_offices_lie_in_their_street(ref: ReferenceDistrict, areas: gpd.GeoDataFrame) -> None:
    streets = areas[areas["level"] == "street"].set_index("code").geometry
    offices = ref.gdf_offices
    inside = shapely.covers(streets.loc[offices["street_code"]].to_numpy(), offices.geometry)
    assert inside.all()


def test_units_are_on_the_road_network(ref: ReferenceDistrict) -> None:
    units = ref.gdf_units
    assert set(units["position_source"]) == {POSITION_ROAD, POSITION_GRID_INTERIOR}
    off_road = units[units["position_source"] == POSITION_GRID_INTERIOR]
    assert (off_road["kind"] == "grid_worker").all()
    links = ref.gdf_links.to_crs(METRIC).geometry.to_numpy()
    tree = shapely.STRtree(links)
    on_road = units[units["position_source"] == POSITION_ROAD]
    _, dist = tree.query_nearest(
        on_road.to_crs(METRIC).geometry.to_numpy(), return_distance=True, all_matches=False
    )
    assert len(dist) == len(on_road)
    # Grid workers stand on the link, or just inside their grid where the link is its edge (a
    # few metres in a sharp corner); everyone else is on a link.
    assert np.max(dist) < 5 * ROAD_EDGE_CLEARANCE_M
    assert np.max(dist[(on_road["kind"] != "grid_worker").to_numpy()]) < 0.01


def test_grid_workers_stand_in_their_own_grid(
    ref: ReferenceDistrict, locator: Locator, areas: gpd.GeoDataFrame
) -> None:
    workers = ref.gdf_units[ref.gdf_units["kind"] == "grid_worker"]
    found = locator.locate(workers.geometry.x.to_numpy(), workers.geometry.y.to_numpy())
    assert found["grid"].tolist() == workers["grid_code"].tolist()
    assert found["street"].tolist() == workers["street_code"].tolist()
    grids = areas[areas["level"] == "grid"].set_index("code").to_crs(METRIC).geometry
    inside = shapely.contains_properly(
        grids.loc[workers["grid_code"]].to_numpy(), workers.to_crs(METRIC).geometry.to_numpy()
    )
    assert inside.all()


def test_every_unit_and_office_is_in_its_street(ref: ReferenceDistrict, locator: Locator) -> None:
    for frame in (ref.gdf_units, ref.gdf_offices):
        found = locator.locate(frame.geometry.x.to_numpy(), frame.geometry.y.to_numpy())
        assert found["street"].tolist() == frame["street_code"].tolist()


def test_offices_stand_apart(ref: ReferenceDistrict) -> None:
    offices = ref.gdf_offices.to_crs(METRIC)
    xy = shapely.get_coordinates(offices.geometry.to_numpy())
    _, count = np.unique(np.round(xy, 1), axis=0, return_counts=True)
    assert count.max() == 1


def test_links_are_the_first_layer_of_the_roads_file() -> None:
    layers = pyogrio.list_layers(get_settings().data_dir / "jinniu_roads.gpkg")
    assert [str(name) for name, _ in layers] == ["links", "nodes"]


def test_network_covers_the_district_with_margin(ref: ReferenceDistrict) -> None:
    nodes, links = ref.gdf_nodes, ref.gdf_links
    assert nodes["in_district"].sum() >= 300
    assert len(nodes) > nodes["in_district"].sum()
    ids = set(nodes["node_id"])
    assert links["u"].isin(ids).all() and links["v"].isin(ids).all()
    expected = {
        "link_id",
        "u",
        "v",
        "length_m",
        "road_class",
        "class_source",
        "oneway",
        "speed_drive_kmh",
        "speed_bike_kmh",
        "speed_walk_kmh",
        "geometry",
    }
    assert expected <= set(links.columns)
