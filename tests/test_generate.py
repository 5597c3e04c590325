"""The area generator as a user runs it: their own boundary and roads, not the reference district.

The user-like input is a block of Chengdu south-east of Jinniu: the convex hull of the road nodes
outside Jinniu in 104.08-104.14 E, 30.60-30.66 N (about 36 km²), with the whole city's roads, so
most road lines run beyond the boundary.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from pyproj import Transformer
from shapely.geometry import LineString, Point, Polygon

from gridgov.areas import read_areas, validate_areas
from gridgov.crs import from_wgs84, to_wgs84
from gridgov.errors import CRSError, DataFileError, InputError
from gridgov.settings import get_settings
from gridgov.tessellate import (
    CommunitySpec,
    HierarchyPlan,
    StreetSpec,
    generate_areas,
    plan_from_admin_table,
    plan_from_counts,
    plan_problems,
    read_admin_table,
    read_boundary,
    read_roads,
)

CHENGDU = get_settings().data_dir / "chengdu"
METRIC = "EPSG:32648"
LEVELS = ["district", "street", "community", "grid", "microgrid"]
PREFIX = {"street": 6, "community": 9, "grid": 12, "microgrid": 15}
CODE_LENGTH = {"district": 12, "street": 12, "community": 12, "grid": 15, "microgrid": 18}
SEED = 11


# --------------------------------------------------------------------------------------------
# inputs


@pytest.fixture(scope="module")
def roads() -> gpd.GeoDataFrame:
    return read_roads(CHENGDU)


@pytest.fixture(scope="module")
def boundary() -> gpd.GeoDataFrame:
    nodes = pd.read_csv(CHENGDU / "roads_nodes.csv")
    block = nodes[
        nodes["Longitude"].between(104.08, 104.14)
        & nodes["Latitude"].between(30.60, 30.66)
        & nodes["in_jinniu"].eq(0)
    ]
    assert len(block) > 200
    hull = shapely.convex_hull(shapely.multipoints(block[["Longitude", "Latitude"]].to_numpy()))
    return gpd.GeoDataFrame({"name": ["测试区"]}, geometry=[hull], crs="EPSG:4326")


@pytest.fixture(scope="module")
def plan() -> HierarchyPlan:
    return plan_from_counts("510199000000", "测试区", 3, 3, 60, 400)


@pytest.fixture(scope="module")
def areas(
    boundary: gpd.GeoDataFrame, roads: gpd.GeoDataFrame, plan: HierarchyPlan
) -> gpd.GeoDataFrame:
    return generate_areas(boundary, roads, plan, seed=SEED)


def _to_gcj02(gdf: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """What AMap would hand out for these WGS84 features (still labelled EPSG:4326)."""

    def convert(xy: np.ndarray) -> np.ndarray:
        return np.column_stack(from_wgs84(xy[:, 0], xy[:, 1], "gcj02"))

    out = gdf.copy()
    out["geometry"] = gpd.GeoSeries(
        shapely.transform(gdf.geometry.to_numpy(), convert), index=gdf.index, crs=gdf.crs
    )
    return out


def _assert_exact_hierarchy(
    frame: gpd.GeoDataFrame, district_area_m2: float, rel: float = 1e-6
) -> None:
    """No overlaps, no gaps, every child within its parent, single Polygons, nested codes."""
    assert frame.crs.to_epsg() == 4326
    assert (frame.geom_type == "Polygon").all()
    assert shapely.is_valid(frame.geometry.to_numpy()).all()
    assert frame["code"].is_unique
    assert (frame["code"].str.len() == frame["level"].map(CODE_LENGTH)).all()
    kids = frame[frame["level"] != "district"]
    for code, level, parent in zip(kids["code"], kids["level"], kids["parent_code"], strict=True):
        assert code[: PREFIX[level]] == parent[: PREFIX[level]], code
    assert set(kids["parent_code"]) <= set(frame["code"])
    metric = frame.to_crs(METRIC)
    district = metric[metric["level"] == "district"].geometry.iloc[0]
    assert district.area == pytest.approx(district_area_m2, rel=rel)
    by_code = metric.set_index("code").geometry
    for level in LEVELS[1:]:
        rows = frame[frame["level"] == level]
        geoms = rows.geometry.to_numpy()
        tree = shapely.STRtree(geoms)
        left, right = tree.query(geoms, predicate="intersects")
        keep = left < right
        overlap = shapely.area(shapely.intersection(geoms[left[keep]], geoms[right[keep]]))
        assert overlap.max(initial=0.0) == 0.0, level
        parents = frame.set_index("code").geometry.loc[rows["parent_code"]].to_numpy()
        assert shapely.within(geoms, parents).all(), level
        # Each parent is exactly the union of its children.
        for parent_code, group in metric[metric["level"] == level].groupby("parent_code"):
            union = shapely.union_all(group.geometry.to_numpy())
            assert union.area == pytest.approx(by_code[parent_code].area, rel=1e-9), parent_code
            assert by_code[parent_code].difference(union).area < 1e-3, parent_code


# --------------------------------------------------------------------------------------------
# the generator on a user's own input


def test_generates_the_planned_hierarchy(areas: gpd.GeoDataFrame, boundary: gpd.GeoDataFrame):
    counts = areas["level"].value_counts()
    assert counts.to_dict() == {
        "district": 1,
        "street": 3,
        "community": 9,
        "grid": 60,
        "microgrid": 400,
    }
    assert list(areas.columns) == [
        "code",
        "name",
        "level",
        "parent_code",
        "generated",
        "name_source",
        "geometry",
    ]
    assert areas.attrs["warnings"] == []
    assert areas["generated"].all()
    streets = areas[areas["level"] == "street"]
    assert streets["code"].tolist() == ["510199001000", "510199002000", "510199003000"]
    assert (areas.loc[areas["level"] != "district", "name_source"] == "generated").all()
    _assert_exact_hierarchy(areas, boundary.to_crs(METRIC).area.iloc[0])
    assert validate_areas(areas, overlap_tolerance_m2=0, gap_tolerance_m2=0.01) == []


@pytest.mark.parametrize("suffix", [".gpkg", ".geojson"])
def test_written_areas_read_back_exactly(
    areas: gpd.GeoDataFrame, boundary: gpd.GeoDataFrame, tmp_path: Path, suffix: str
) -> None:
    path = tmp_path / f"areas{suffix}"
    areas.to_file(path)
    back = read_areas(path)
    assert back["code"].tolist() == areas["code"].tolist()
    assert back["parent_code"].tolist() == areas["parent_code"].tolist()
    assert back["name"].tolist() == areas["name"].tolist()
    _assert_exact_hierarchy(back, boundary.to_crs(METRIC).area.iloc[0])
    assert validate_areas(back) == []


def test_gcj02_input_gives_the_wgs84_result(
    areas: gpd.GeoDataFrame,
    boundary: gpd.GeoDataFrame,
    roads: gpd.GeoDataFrame,
    plan: HierarchyPlan,
) -> None:
    gcj = generate_areas(_to_gcj02(boundary), _to_gcj02(roads), plan, seed=SEED, crs="gcj02")
    assert gcj["code"].tolist() == areas["code"].tolist()
    gaps = shapely.hausdorff_distance(gcj.geometry.to_numpy(), areas.geometry.to_numpy())
    assert gaps.max() < 1e-6
    # Not declaring it leaves the few-hundred-metre GCJ-02 offset in the result.
    raw = generate_areas(_to_gcj02(boundary), _to_gcj02(roads), plan, seed=SEED)
    district = raw[raw["level"] == "district"].geometry.iloc[0]
    assert shapely.hausdorff_distance(district, areas.geometry.iloc[0]) > 1e-3


def test_same_seed_same_areas(
    areas: gpd.GeoDataFrame,
    boundary: gpd.GeoDataFrame,
    roads: gpd.GeoDataFrame,
    plan: HierarchyPlan,
) -> None:
    again = generate_areas(boundary, roads, plan, seed=SEED)
    assert again["code"].tolist() == areas["code"].tolist()
    assert shapely.equals_exact(again.geometry.to_numpy(), areas.geometry.to_numpy(), 0).all()
    other = generate_areas(boundary, roads, plan, seed=SEED + 1)
    micro = (other["level"] == "microgrid").to_numpy()
    same = shapely.equals_exact(
        other.geometry.to_numpy()[micro], areas.geometry.to_numpy()[micro], 0
    )
    assert not same.all()


def test_street_edges_follow_roads(areas: gpd.GeoDataFrame, roads: gpd.GeoDataFrame) -> None:
    metric = areas.to_crs(METRIC)
    district = metric[metric["level"] == "district"].geometry.iloc[0]
    streets = metric[metric["level"] == "street"].geometry.to_numpy()
    inner = shapely.union_all(shapely.boundary(streets)).difference(district.boundary.buffer(0.5))
    lines = roads.to_crs(METRIC).geometry.to_numpy()
    near = shapely.union_all(lines[shapely.intersects(lines, district)]).buffer(0.5)
    assert inner.length > 1000
    assert inner.difference(near).length < 0.05 * inner.length


def test_without_usable_roads_falls_back_and_says_so(
    boundary: gpd.GeoDataFrame, caplog: pytest.LogCaptureFixture
) -> None:
    small = plan_from_counts("510199000000", "测试区", 2, 2, 8, 24)
    far = gpd.GeoDataFrame(geometry=[LineString([(100.0, 20.0), (100.1, 20.1)])], crs="EPSG:4326")
    # Two adjacent features are dissolved into one district.
    hull = boundary.geometry.iloc[0]
    x_mid = hull.centroid.x
    halves = [
        hull.intersection(shapely.box(0, 0, x_mid, 90)),
        hull.intersection(shapely.box(x_mid, 0, 180, 90)),
    ]
    two = gpd.GeoDataFrame(geometry=halves, crs="EPSG:4326")
    with caplog.at_level("WARNING", logger="gridgov.tessellate"):
        frame = generate_areas(two, far, small, seed=1)
    assert any("reaches the boundary" in w for w in frame.attrs["warnings"])
    assert any("reaches the boundary" in r.message for r in caplog.records)
    # The cut adds vertices that the input snapping (1e-7 degrees) moves by millimetres.
    _assert_exact_hierarchy(frame, boundary.to_crs(METRIC).area.iloc[0], rel=1e-5)
    assert (frame["level"] == "microgrid").sum() == 24
    no_roads = generate_areas(boundary, None, small, seed=1)
    assert any("no roads" in w for w in no_roads.attrs["warnings"])


def test_holes_are_filled_with_a_warning() -> None:
    outer = shapely.box(400_000, 3_390_000, 402_000, 3_392_000)
    ring = Polygon(outer.exterior, [shapely.box(400_900, 3_390_900, 401_100, 3_391_100).exterior])
    gdf = gpd.GeoDataFrame(geometry=[ring], crs=METRIC)
    frame = generate_areas(gdf, None, plan_from_counts("510199000000", "区", 1, 2, 4, 8))
    assert any("hole" in w for w in frame.attrs["warnings"])
    district = frame[frame["level"] == "district"].to_crs(METRIC).geometry.iloc[0]
    assert district.area == pytest.approx(outer.area, rel=1e-6)


# --------------------------------------------------------------------------------------------
# clear errors for bad input


def _metric_gdf(*geoms: shapely.Geometry) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(geometry=list(geoms), crs=METRIC)


SQUARE = shapely.box(400_000, 3_390_000, 402_000, 3_392_000)
SMALL_PLAN = plan_from_counts("510199000000", "区", 1, 2, 4, 8)


@pytest.mark.parametrize(
    ("gdf", "message"),
    [
        (_metric_gdf(), "no features"),
        (
            _metric_gdf(
                Polygon(
                    [
                        (400_000, 3_390_000),
                        (401_000, 3_391_000),
                        (401_000, 3_390_000),
                        (400_000, 3_391_000),
                    ]
                )
            ),
            "not a valid polygon .*Self-intersection",
        ),
        (_metric_gdf(Point(400_000, 3_390_000)), "are Points"),
        (_metric_gdf(SQUARE, None), "have no geometry"),
        (
            _metric_gdf(SQUARE, shapely.box(405_000, 3_390_000, 406_000, 3_391_000)),
            "2 separate pieces",
        ),
        (_metric_gdf(shapely.box(400_000, 3_390_000, 400_050, 3_390_050)), "micro-grids would"),
    ],
)
def test_bad_boundaries_are_explained(gdf: gpd.GeoDataFrame, message: str) -> None:
    with pytest.raises(InputError, match=message):
        generate_areas(gdf, None, SMALL_PLAN)


def test_other_input_errors() -> None:
    with pytest.raises(InputError, match="not lines"):
        generate_areas(_metric_gdf(SQUARE), _metric_gdf(SQUARE.buffer(-10)), SMALL_PLAN)
    with pytest.raises(CRSError, match="no CRS"):
        generate_areas(gpd.GeoDataFrame(geometry=[SQUARE]), None, SMALL_PLAN)
    with pytest.raises(CRSError, match="projected in metres"):
        generate_areas(_metric_gdf(SQUARE), None, SMALL_PLAN, metric_crs="EPSG:4326")
    bad = HierarchyPlan(
        "510199000000",
        "区",
        (StreetSpec("510199001000", "街", (CommunitySpec("510188001001", "社区"),)),),
        4,
        8,
    )
    assert plan_problems(bad) == ["community code '510188001001' does not fit street 510199001000"]
    with pytest.raises(InputError, match="does not fit street"):
        generate_areas(_metric_gdf(SQUARE), None, bad)


# --------------------------------------------------------------------------------------------
# plans


def test_plan_from_counts_codes_and_names() -> None:
    plan = plan_from_counts("510106000000", "金牛区", 3, [2, 3, 1], 60, 400)
    assert plan_problems(plan) == []
    assert [s.code for s in plan.streets] == ["510106001000", "510106002000", "510106003000"]
    assert [c.code for c in plan.streets[1].communities] == [
        "510106002001",
        "510106002002",
        "510106002003",
    ]
    assert plan.streets[1].communities[2].name == "第2街道第3社区"
    assert not any(s.official or any(c.official for c in s.communities) for s in plan.streets)
    assert (plan.n_grids, plan.n_microgrids) == (60, 400)


def test_plan_from_counts_lists_every_problem() -> None:
    with pytest.raises(InputError) as info:
        plan_from_counts("51010600000", " ", 0, 3, 10, 5)
    text = str(info.value)
    assert "3 problem(s)" in text
    assert "not 12 digits" in text and "name is empty" in text and "n_streets" in text
    cases = [
        (("510106024000", "区", 2, 2, 8, 20), "must end in 000000"),
        (("510106000000", "区", 1000, 1, 1000, 1000), "exceeds 999"),
        (("510106000000", "区", 3, [1, 2], 10, 20), "2 numbers for 3 streets"),
        (("510106000000", "区", 2, [1, 0], 10, 20), "street 2: communities"),
        (("510106000000", "区", 3, 3, 8, 100), "at least the number of communities"),
        (("510106000000", "区", 3, 3, 60, 59), "at least n_grids"),
        (("510106000000", "区", 1, 1, 1, 1000), "exceeds 999 per grid"),
    ]
    for args, message in cases:
        with pytest.raises(InputError, match=message):
            plan_from_counts(*args)  # type: ignore[arg-type]


def test_plan_from_the_jinniu_table() -> None:
    plan = plan_from_admin_table(read_admin_table(CHENGDU / "jinniu_admin_units.csv"), 1000, 10000)
    assert plan_problems(plan) == []
    assert (plan.district_code, plan.district_name) == ("510106000000", "金牛区")
    assert len(plan.streets) == 13
    assert all(s.anchor is None for s in plan.streets)
    simaqiao = next(s for s in plan.streets if s.code == "510106030000")
    assert [c.code for c in simaqiao.communities] == [f"510106030{n}" for n in range(901, 907)]
    assert simaqiao.communities[0].name == "驷马桥第1社区（生成）"
    assert not any(c.official for c in simaqiao.communities)
    xian = plan.streets[0]
    assert (xian.code, xian.name, xian.communities[0].name) == (
        "510106024000",
        "西安路街道",
        "青羊北路社区",
    )
    three = plan_from_admin_table(
        read_admin_table(CHENGDU / "jinniu_admin_units.csv"), 1000, 10000, generated_communities=3
    )
    assert len(next(s for s in three.streets if s.code == "510106030000").communities) == 3


def test_admin_table_anchors_are_converted_to_wgs84() -> None:
    table = pd.DataFrame(
        {
            "level": ["district", "street", "street", "community"],
            "code": ["510199000000", "510199001000", "510199002000", "510199001001"],
            "name": ["区", "甲街道", "乙街道", "甲社区"],
            "parent_code": ["510100000000", "510199000000", "510199000000", "510199001000"],
            "lon": [None, "104.10", "104.12", None],
            "lat": [None, "30.62", "30.64", None],
        }
    )
    plan = plan_from_admin_table(table, 20, 100, crs="gcj02")
    lon, lat = to_wgs84([104.10, 104.12], [30.62, 30.64], "gcj02")
    assert plan.streets[0].anchor == pytest.approx((lon[0], lat[0]), abs=1e-12)
    assert plan.streets[1].anchor == pytest.approx((lon[1], lat[1]), abs=1e-12)
    assert len(plan.streets[1].communities) == 6


def test_admin_table_anchors_steer_the_streets(
    boundary: gpd.GeoDataFrame, roads: gpd.GeoDataFrame
) -> None:
    centre = boundary.to_crs(METRIC).geometry.iloc[0].centroid
    to_wgs = Transformer.from_crs(METRIC, "EPSG:4326", always_xy=True)
    west = to_wgs.transform(centre.x - 1500, centre.y)
    east = to_wgs.transform(centre.x + 1500, centre.y)
    table = pd.DataFrame(
        {
            "level": ["district", "street", "street"],
            "code": ["510199000000", "510199001000", "510199002000"],
            "name": ["区", "东街道", "西街道"],
            "parent_code": ["", "510199000000", "510199000000"],
            "lon": [np.nan, east[0], west[0]],
            "lat": [np.nan, east[1], west[1]],
        }
    )
    plan = plan_from_admin_table(table, 20, 60, generated_communities=2)
    frame = generate_areas(boundary, roads, plan, seed=2).to_crs(METRIC)
    streets = frame[frame["level"] == "street"].set_index("name").geometry
    assert streets["东街道"].centroid.x > streets["西街道"].centroid.x


def test_admin_table_problems_are_listed_at_once() -> None:
    table = pd.DataFrame(
        {
            "level": ["street", "town", "community", "community", "community"],
            "code": ["510199001000", "510199002000", "510199001001", "510199001001", "51019"],
            "name": ["甲街道", "乙镇", "甲社区", "甲社区二", "丙社区"],
            "parent_code": ["510199000000", "510199000000", "510199001000", "510199001000", "x"],
        }
    )
    with pytest.raises(DataFileError) as info:
        plan_from_admin_table(table, 1, 100, source="my.csv")
    text = str(info.value)
    assert text.startswith("6 problem(s) in the my.csv")
    for part in (
        "row 2: unknown level 'town'",
        "row 5: code '51019' is not 12 digits",
        "duplicate code 510199001001 in rows [3, 4]",
        "no district row",
        "row 5: community 51019 has unknown parent street 'x'",
        "n_grids",
    ):
        assert part in text, part
    with pytest.raises(DataFileError, match="missing column"):
        plan_from_admin_table(table.drop(columns="parent_code"), 20, 100)


# --------------------------------------------------------------------------------------------
# reading files


def test_read_roads_from_a_link_table_folder(roads: gpd.GeoDataFrame) -> None:
    links = pd.read_csv(CHENGDU / "roads_links.csv")
    pairs = {frozenset(p) for p in zip(links["Node_Start"], links["Node_End"], strict=True)}
    assert len(roads) == len(pairs)
    assert roads.crs.to_epsg() == 4326
    assert set(roads.geom_type) == {"LineString"}


def test_read_files_and_their_errors(boundary: gpd.GeoDataFrame, tmp_path: Path) -> None:
    gcj_file = tmp_path / "boundary_gcj.geojson"
    _to_gcj02(boundary).to_file(gcj_file)
    back = read_boundary(gcj_file, "gcj02")
    assert shapely.hausdorff_distance(back.geometry.iloc[0], boundary.geometry.iloc[0]) < 1e-9
    parquet = tmp_path / "boundary.parquet"
    boundary.to_crs(METRIC).to_parquet(parquet)
    assert read_boundary(parquet).crs.to_epsg() == 4326
    lines = tmp_path / "roads.gpkg"
    gpd.GeoDataFrame(geometry=[LineString([(104.1, 30.6), (104.2, 30.7)])], crs=4326).to_file(lines)
    assert len(read_roads(lines, "wgs84")) == 1

    missing = tmp_path / "nope.geojson"
    with pytest.raises(DataFileError, match=r"boundary file not found: .*nope.geojson"):
        read_boundary(missing)
    garbage = tmp_path / "garbage.geojson"
    garbage.write_text("this is not geojson")
    with pytest.raises(DataFileError, match=r"cannot read roads file .*garbage.geojson"):
        read_roads(garbage)
    with pytest.raises(DataFileError, match=f"road folder {tmp_path} lacks roads_nodes.csv"):
        read_roads(tmp_path)
    with pytest.raises(CRSError, match="unknown CRS"):
        read_boundary(gcj_file, "mars-ish")
    with pytest.raises(DataFileError, match=r"cannot read .*nope.csv"):
        read_admin_table(tmp_path / "nope.csv")


def test_read_roads_picks_the_line_layer_without_warnings(tmp_path: Path) -> None:
    gpkg = get_settings().data_dir / "jinniu_roads.gpkg"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        links = read_roads(gpkg)
    assert links.attrs["layers"] == ["links"]
    assert set(links.geom_type) == {"LineString"} and links.crs.to_epsg() == 4326
    assert len(read_roads(gpkg, layer="nodes")) > 0  # an explicit layer is read as asked
    with pytest.raises(DataFileError, match=r"no Polygon layer \(layers: .*nodes \(Point\)"):
        read_boundary(gpkg)
    two = tmp_path / "two.gpkg"
    line = LineString([(104.1, 30.6), (104.2, 30.7)])
    gpd.GeoDataFrame(geometry=[Point(104.1, 30.6)], crs=4326).to_file(two, layer="points")
    gpd.GeoDataFrame(geometry=[line], crs=4326).to_file(two, layer="main")
    gpd.GeoDataFrame(geometry=[line, line], crs=4326).to_file(two, layer="minor")
    both = read_roads(two)
    assert both.attrs["layers"] == ["main", "minor"]
    assert both["layer"].tolist() == ["main", "minor", "minor"]


def test_crs_errors_name_the_file_and_its_crs(tmp_path: Path) -> None:
    utm = shapely.box(400_000, 3_390_000, 401_000, 3_391_000)
    mislabelled = tmp_path / "mislabelled.geojson"
    gpd.GeoDataFrame(geometry=[utm], crs=4326).to_file(mislabelled)
    with pytest.raises(CRSError, match=r"mislabelled\.geojson.*longitude/latitude.*EPSG:4326"):
        read_boundary(mislabelled)
    with pytest.raises(CRSError, match=r"mislabelled\.geojson.*declared, gcj02"):
        read_boundary(mislabelled, "gcj02")
    # An explicit CRS overrides the label.
    assert read_boundary(mislabelled, METRIC).total_bounds[0] == pytest.approx(103.956, abs=0.01)
    unlabelled = tmp_path / "unlabelled.gpkg"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # GDAL warns that the file will have no CRS: the point
        gpd.GeoDataFrame(geometry=[shapely.box(104.0, 30.6, 104.1, 30.7)]).to_file(unlabelled)
    with pytest.raises(CRSError, match=r"unlabelled\.gpkg has no CRS label; declare"):
        read_roads(unlabelled)
    assert read_boundary(unlabelled, "wgs84").crs.to_epsg() == 4326


# --------------------------------------------------------------------------------------------
# large user boundaries: long straight edges must survive the way back to EPSG:4326


@pytest.fixture(scope="module")
def jinniu_links() -> gpd.GeoDataFrame:
    return read_roads(get_settings().data_dir / "jinniu_roads.gpkg")


def _assert_valid_in_wgs84(frame: gpd.GeoDataFrame, boundary: gpd.GeoDataFrame) -> None:
    assert validate_areas(frame) == []
    assert (frame.geom_type == "Polygon").all()
    assert shapely.is_valid(frame.geometry.to_numpy()).all()
    # The district follows the user's straight lon/lat edges, not chords between projected corners.
    district = frame[frame["level"] == "district"].geometry.iloc[0]
    drift = shapely.hausdorff_distance(district.boundary, boundary.geometry.iloc[0].boundary)
    assert drift < 1e-6  # degrees, about 10 cm


@pytest.mark.slow
def test_a_20_km_box_gives_a_valid_hierarchy(jinniu_links: gpd.GeoDataFrame) -> None:
    box = gpd.GeoDataFrame(geometry=[shapely.box(103.98, 30.62, 104.18, 30.80)], crs=4326)
    plan = plan_from_counts("510199000000", "测试区", 3, 2, 30, 300)
    frame = generate_areas(box, jinniu_links, plan, seed=0)
    assert (frame["level"] == "microgrid").sum() == 300
    _assert_valid_in_wgs84(frame, box)


@pytest.mark.slow
def test_the_buffered_jinniu_boundary_gives_a_valid_hierarchy(
    jinniu_links: gpd.GeoDataFrame,
) -> None:
    areas = gpd.read_parquet(get_settings().data_dir / "jinniu_areas.parquet")
    grown = areas[areas["level"] == "district"].to_crs(METRIC).buffer(3000).to_crs(4326)
    boundary = gpd.GeoDataFrame(geometry=grown.to_numpy(), crs=4326)
    plan = plan_from_counts("510199000000", "测试区", 3, 2, 30, 300)
    frame = generate_areas(boundary, jinniu_links, plan, seed=0)
    _assert_valid_in_wgs84(frame, boundary)
