"""Tests of gridgov.areas: loading, validation, the locator and adjacency."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
import shapely
from helpers import bowtie
from shapely.geometry import MultiPolygon, Point, Polygon, box

from gridgov.areas import (
    Locator,
    build_locator,
    check_areas,
    read_areas,
    street_adjacency,
    validate_areas,
)
from gridgov.crs import from_wgs84
from gridgov.errors import (
    AreaValidationError,
    CRSError,
    DataFileError,
    OutsideDistrictError,
)
from gridgov.model import AREA_COLUMNS, LEVELS
from gridgov.settings import get_settings

if TYPE_CHECKING:
    from helpers import Damage

DATA = Path(__file__).parent / "data"
SMALL_GEOJSON = DATA / "small_areas.geojson"  # Chinese headers and level names, WGS84
SMALL_SHP = DATA / "small_areas_int.shp"  # CODE/NAME/LEVEL/PARENT, integer and float codes


# --------------------------------------------------------------------------------------------
# A synthetic exact hierarchy: a hexagonal district split recursively into Voronoi cells.
# --------------------------------------------------------------------------------------------


def _seeds_inside(rng: np.random.Generator, poly: Polygon, n: int) -> np.ndarray:
    x0, y0, x1, y1 = poly.bounds
    found: list[tuple[float, float]] = []
    while len(found) < n:
        x, y = rng.uniform(x0, x1, 8 * n), rng.uniform(y0, y1, 8 * n)
        ok = shapely.contains_xy(poly, x, y)
        found.extend(zip(x[ok], y[ok], strict=True))
    return np.array(found[:n])


def _split(rng: np.random.Generator, poly: Polygon, n: int) -> list[Polygon]:
    seeds = shapely.multipoints(_seeds_inside(rng, poly, n))
    frame = shapely.box(*poly.buffer(0.01).bounds)
    cells = shapely.get_parts(shapely.voronoi_polygons(seeds, extend_to=frame))
    cells = shapely.intersection(cells, poly)
    cells = cells[shapely.area(cells) > 0]
    centre = shapely.centroid(cells)
    order = np.lexsort((shapely.get_x(centre), -np.round(shapely.get_y(centre), 4)))
    return list(cells[order])


def make_hierarchy(
    fanout: tuple[int, int, int, int] = (3, 3, 3, 4),
    seed: int = 7,
    centre: tuple[float, float] = (104.04, 30.70),
    radius: float = 0.03,
) -> gpd.GeoDataFrame:
    """District → streets → communities → grids → micro-grids, codes consistent, no gaps."""
    rng = np.random.default_rng(seed)
    angle = np.linspace(0, 2 * np.pi, 7)[:-1] + 0.3
    cx, cy = centre
    ring = np.column_stack(
        [
            cx + radius * np.cos(angle) / np.cos(np.radians(cy)),
            cy + radius * 0.8 * np.sin(angle),
        ]
    )
    district = Polygon(ring)
    rows: list[tuple[str, str, str, str | None, Polygon]] = [
        ("510106000000", "金牛区", "district", None, district)
    ]
    frontier = [("510106000000", district)]
    for depth, n in enumerate(fanout):
        level = LEVELS[depth + 1].value
        nxt = []
        for pcode, pgeom in frontier:
            for k, cell in enumerate(_split(rng, pgeom, n), start=1):
                if depth == 0:
                    code = f"{pcode[:6]}{k:03d}000"
                elif depth == 1:
                    code = f"{pcode[:9]}{k:03d}"
                else:
                    code = f"{pcode}{k:03d}"
                rows.append((code, f"{level} {code}", level, pcode, cell))
                nxt.append((code, cell))
        frontier = nxt
    return gpd.GeoDataFrame(
        {
            "code": [r[0] for r in rows],
            "name": [r[1] for r in rows],
            "level": [r[2] for r in rows],
            "parent_code": pd.Series([r[3] for r in rows], dtype=object),
            "generated": True,
        },
        geometry=[r[4] for r in rows],
        crs="EPSG:4326",
    )


@pytest.fixture(scope="module")
def gdf_synth() -> gpd.GeoDataFrame:
    return make_hierarchy()


@pytest.fixture(scope="module")
def gdf_reference() -> gpd.GeoDataFrame:
    path = get_settings().data_dir / "jinniu_areas.parquet"
    return read_areas(path)


def _same(a: np.ndarray, b: np.ndarray, tolerance: float) -> bool:
    """Same shapes up to ``tolerance`` degrees, whatever the ring orientation and start."""
    return bool(shapely.equals_exact(shapely.normalize(a), shapely.normalize(b), tolerance).all())


def _kinds(problems: list) -> set[str]:
    return {p.kind for p in problems}


def _mentions(problems: list, kind: str, code: str) -> bool:
    return any(p.kind == kind and (p.code == code or code in p.message) for p in problems)


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def test_read_geojson_with_chinese_headers() -> None:
    gdf = read_areas(SMALL_GEOJSON)
    assert list(gdf.columns) == [*AREA_COLUMNS, "geometry"]
    assert gdf.crs.to_epsg() == 4326
    assert len(gdf) == 31
    assert gdf["level"].value_counts().to_dict() == {
        "microgrid": 16,
        "grid": 8,
        "community": 4,
        "street": 2,
        "district": 1,
    }
    assert not gdf["generated"].any()
    assert gdf.loc[gdf["level"] == "district", "parent_code"].iloc[0] is None
    assert all(isinstance(c, str) for c in gdf["code"])
    assert validate_areas(gdf) == []


def test_read_shapefile_with_integer_codes_matches_geojson() -> None:
    raw = pyogrio.read_dataframe(SMALL_SHP)
    assert raw["CODE"].dtype == np.int64  # the file really stores numbers
    gdf = read_areas(SMALL_SHP)
    ref = read_areas(SMALL_GEOJSON)
    assert gdf["code"].tolist() == ref["code"].tolist()
    assert gdf["parent_code"].tolist() == ref["parent_code"].tolist()
    assert gdf["level"].tolist() == ref["level"].tolist()
    assert set(map(len, gdf.loc[gdf["level"] == "microgrid", "code"])) == {18}
    assert _same(gdf.geometry.values, ref.geometry.values, 1e-9)


def test_read_gcj02_file_gives_the_same_wgs84_geometry(tmp_path: Path) -> None:
    ref = read_areas(SMALL_GEOJSON)

    def to_gcj(coords: np.ndarray) -> np.ndarray:
        return np.column_stack(from_wgs84(coords[:, 0], coords[:, 1], "gcj02"))

    shifted = ref.copy()
    shifted["geometry"] = shapely.transform(ref.geometry.values, to_gcj)
    path = tmp_path / "gcj.geojson"
    shifted.to_file(path, driver="GeoJSON")  # labelled EPSG:4326, as such data usually is
    gdf = read_areas(path, crs="gcj02")
    # the GCJ offset here is hundreds of metres; the round trip is back to millimetres
    assert shapely.hausdorff_distance(shifted.geometry.values, ref.geometry.values).min() > 1e-3
    assert _same(gdf.geometry.values, ref.geometry.values, 1e-8)


def _for_shapefile(gdf: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """The columns read_areas needs, under names a DBF can hold (10 characters at most)."""
    cols = ["code", "name", "level", "parent_code", "geometry"]
    return gdf[cols].rename(columns={"parent_code": "parent"})


@pytest.mark.parametrize("epsg", [32648, 3857])
def test_read_projected_file_trusting_its_crs(tmp_path: Path, epsg: int) -> None:
    ref = read_areas(SMALL_GEOJSON)
    path = tmp_path / "metric.gpkg"
    ref.to_crs(epsg).to_file(path, layer="areas")
    gdf = read_areas(path)  # the default trusts the file's label
    assert gdf.crs.to_epsg() == 4326
    assert _same(gdf.geometry.values, ref.geometry.values, 1e-7)
    gdf = read_areas(path, crs=f"EPSG:{epsg}")
    assert _same(gdf.geometry.values, ref.geometry.values, 1e-7)
    shp = tmp_path / "metric.shp"  # the label comes from the .prj here
    _for_shapefile(ref).to_crs(epsg).to_file(shp)
    assert _same(read_areas(shp).geometry.values, ref.geometry.values, 1e-7)
    # a declared CRS overrides the label; metres read as degrees are not lon/lat
    with pytest.raises(CRSError) as info:
        read_areas(path, crs="wgs84")
    message = str(info.value)
    assert "metric.gpkg" in message and "longitude/latitude" in message
    assert "declared, wgs84" in message


def test_mislabelled_and_unlabelled_files_name_path_and_crs(tmp_path: Path) -> None:
    ref = read_areas(SMALL_GEOJSON)
    # metre coordinates labelled EPSG:4326
    wrong = ref.to_crs(32648).set_crs(4326, allow_override=True)
    path = tmp_path / "wrong.gpkg"
    wrong.to_file(path)
    with pytest.raises(CRSError) as info:
        read_areas(path)
    message = str(info.value)
    assert "wrong.gpkg" in message and "longitude/latitude" in message
    assert "its own label declares, EPSG:4326" in message
    assert _same(read_areas(path, crs=32648).geometry.values, ref.geometry.values, 1e-7)
    # no label at all: declare one
    bare = tmp_path / "bare.shp"
    with pytest.warns(UserWarning, match="crs"):
        _for_shapefile(ref).set_crs(None, allow_override=True).to_file(bare)
    assert not bare.with_suffix(".prj").exists()
    with pytest.raises(CRSError, match=r"bare\.shp has no CRS label; declare"):
        read_areas(bare)
    assert _same(read_areas(bare, crs="wgs84").geometry.values, ref.geometry.values, 1e-9)


def test_read_geopackage_layers_parquet_and_many_files(tmp_path: Path) -> None:
    ref = read_areas(SMALL_GEOJSON)
    gpkg = tmp_path / "areas.gpkg"
    upper = ref[ref["level"].isin(["district", "street", "community"])]
    lower = ref[ref["level"].isin(["grid", "microgrid"])]
    upper.to_file(gpkg, layer="upper")
    lower.to_file(gpkg, layer="lower")
    both = read_areas(gpkg)
    assert sorted(both["code"]) == sorted(ref["code"])
    only = read_areas(gpkg, layer="lower")
    assert sorted(only["code"]) == sorted(lower["code"])
    parquet = tmp_path / "areas.parquet"
    upper.to_parquet(parquet)
    many = read_areas([parquet, SMALL_SHP])
    assert len(many) == len(upper) + len(ref)
    assert many["code"].iloc[: len(upper)].tolist() == upper["code"].tolist()


def _feature_collection(rows: list[dict], raw_codes: dict[str, str] | None = None) -> str:
    """GeoJSON text of unit squares with ``rows`` as properties.

    ``raw_codes`` replaces quoted placeholders by unquoted number literals, so that a test can
    write numbers that Python's json module would round.
    """
    doc = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "properties": props,
                "geometry": shapely.geometry.mapping(
                    box(104 + k * 0.01, 30.6, 104.01 + k * 0.01, 30.61)
                ),
            }
            for k, props in enumerate(rows)
        ],
    }
    text = json.dumps(doc, ensure_ascii=False)
    for placeholder, literal in (raw_codes or {}).items():
        text = text.replace(f'"{placeholder}"', literal)
    return text


def test_eighteen_digit_integer_codes_with_a_null_parent_stay_exact(tmp_path: Path) -> None:
    grid = 510106024010001
    micro = [grid * 1000 + k for k in (1, 2, 3, 4)]  # 18 digits, beyond float64's 2**53
    rows: list[dict] = [{"code": grid, "name": "g", "level": "grid", "parent_code": None}]
    rows += [{"code": m, "name": str(m), "level": "microgrid", "parent_code": grid} for m in micro]
    path = tmp_path / "codes.geojson"
    path.write_text(_feature_collection(rows), encoding="utf-8")
    assert pyogrio.read_dataframe(path)["parent_code"].dtype == np.float64  # the trap
    gdf = read_areas(path)
    assert gdf["code"].tolist() == [str(grid), *map(str, micro)]
    assert gdf["parent_code"].tolist() == [None] + [str(grid)] * 4
    problems = validate_areas(gdf)
    assert "duplicate_code" not in _kinds(problems) and "bad_code" not in _kinds(problems)


def _write_dbf(path: Path, fields: list[tuple[str, str, int]], records: list[list[str]]) -> None:
    """A dBase III table; ``fields`` are (name, type C or N, width), numbers right-aligned."""
    record_len = 1 + sum(w for _, _, w in fields)
    header_len = 32 + 32 * len(fields) + 1
    out = bytearray(b"\x03\x7e\x0b\x1b")
    out += len(records).to_bytes(4, "little") + header_len.to_bytes(2, "little")
    out += record_len.to_bytes(2, "little") + bytes(20)
    for name, kind, width in fields:
        out += name.encode().ljust(11, b"\0") + kind.encode() + bytes(4)
        out += bytes([width, 0]) + bytes(14)
    out += b"\r"
    for rec in records:
        out += b" "
        for (_, kind, width), value in zip(fields, rec, strict=True):
            text = value.encode()
            out += text.rjust(width) if kind == "N" else text.ljust(width)
    out += b"\x1a"
    path.write_bytes(bytes(out))


def test_shapefile_numeric_field_wider_than_18_digits_stays_exact(tmp_path: Path) -> None:
    grid = "510106024010001"
    micro = [f"{grid}{k:03d}" for k in (1, 2, 3)]
    shapes = gpd.GeoDataFrame(
        {"dummy": [0] * 4},
        geometry=[box(104 + k * 0.01, 30.6, 104.01 + k * 0.01, 30.61) for k in range(4)],
        crs="EPSG:4326",
    )
    path = tmp_path / "wide.shp"
    shapes.to_file(path)
    fields = [("CODE", "N", 20), ("NAME", "C", 20), ("LEVEL", "C", 10), ("PARENT", "N", 20)]
    records = [[grid, "g", "grid", ""]] + [[m, m, "microgrid", grid] for m in micro]
    _write_dbf(path.with_suffix(".dbf"), fields, records)
    raw = pyogrio.read_dataframe(path)
    assert raw["CODE"].dtype == np.float64  # GDAL reads a 20-digit field as a float
    assert raw["CODE"].nunique() < 4  # ... and the codes collide there
    gdf = read_areas(path)
    assert gdf["code"].tolist() == [grid, *micro]
    assert gdf["parent_code"].tolist() == [None] + [grid] * 3
    assert not {"duplicate_code", "bad_code"} & _kinds(validate_areas(gdf))


def test_codes_stored_as_floats_are_reported_not_guessed(tmp_path: Path) -> None:
    rows = [
        {"code": "A", "name": "a", "level": "microgrid", "parent_code": None},
        {"code": "B", "name": "b", "level": "microgrid", "parent_code": None},
        {"code": 510106024000, "name": "s", "level": "street", "parent_code": None},
    ]
    # two distinct 18-digit codes written as floats: float64 cannot tell them apart
    literals = {"A": "510106024010001003.0", "B": "510106024010001004.0"}
    path = tmp_path / "floats.geojson"
    path.write_text(_feature_collection(rows, literals), encoding="utf-8")
    gdf = read_areas(path)
    assert len(gdf) == 3  # nothing dropped
    assert gdf["code"].iloc[2] == "510106024000"
    assert "510106024010001024" not in set(gdf["code"])  # no invented digits
    problems = validate_areas(gdf)
    bad = [p for p in problems if p.kind == "bad_code"]
    assert len(bad) == 2
    assert all("floats.geojson" in p.message and "as text" in p.message for p in bad)
    assert "duplicate_code" not in _kinds(problems)


def test_read_with_a_column_mapping(tmp_path: Path) -> None:
    ref = read_areas(SMALL_GEOJSON)
    odd = gpd.GeoDataFrame(
        {
            "区划": ref["code"].astype("int64"),
            "title": ref["name"],
            "kind": ref["level"].str.upper(),
            "up": ref["parent_code"],
            "generated": "yes",
        },
        geometry=ref.geometry.values,
        crs="EPSG:4326",
    )
    path = tmp_path / "odd.geojson"
    odd.to_file(path)
    with pytest.raises(DataFileError) as info:
        read_areas(path)
    assert "code" in str(info.value) and "name" in str(info.value) and "level" in str(info.value)
    gdf = read_areas(
        path, columns={"区划": "code", "title": "name", "kind": "level", "up": "parent"}
    )
    assert gdf["code"].tolist() == ref["code"].tolist()
    assert gdf["parent_code"].tolist() == ref["parent_code"].tolist()
    assert gdf["generated"].all()


def test_unreadable_and_missing_files_name_the_path(tmp_path: Path) -> None:
    bad = tmp_path / "broken.geojson"
    bad.write_text("{ this is not json")
    with pytest.raises(DataFileError, match=r"broken\.geojson"):
        read_areas(bad)
    with pytest.raises(DataFileError, match=r"nowhere\.gpkg"):
        read_areas(tmp_path / "nowhere.gpkg")
    with pytest.raises(CRSError):
        read_areas(SMALL_GEOJSON, crs="not-a-crs")


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def test_clean_synthetic_hierarchy_has_no_problems(gdf_synth: gpd.GeoDataFrame) -> None:
    before = gdf_synth.copy()
    assert validate_areas(gdf_synth) == []
    check_areas(gdf_synth)
    pd.testing.assert_frame_equal(gdf_synth, before)


def test_every_problem_kind_is_reported_at_once(gdf_synth: gpd.GeoDataFrame) -> None:
    gdf = gdf_synth.copy()
    micro = gdf.index[gdf["level"] == "microgrid"]
    grids = gdf.index[gdf["level"] == "grid"]
    code = gdf["code"]

    i_unknown, i_dup, i_bow, i_point, i_empty = micro[0], micro[5], micro[10], micro[15], micro[20]
    i_len, i_prefix, i_missing, i_plevel = micro[25], micro[30], micro[35], micro[40]
    gdf.loc[i_unknown, "level"] = "block"
    gdf.loc[i_dup, "code"] = code[micro[6]]
    gdf.loc[i_bow, "geometry"] = bowtie(gdf.geometry[i_bow])
    gdf.loc[i_point, "geometry"] = gdf.geometry[i_point].centroid
    gdf.loc[i_empty, "geometry"] = Polygon()
    gdf.loc[i_len, "code"] = code[i_len][:-1]
    gdf.loc[i_prefix, "code"] = code[i_prefix][:6] + "999" + code[i_prefix][9:]
    gdf.loc[i_missing, "parent_code"] = "510106999999999"
    gdf.loc[i_plevel, "parent_code"] = code[gdf.index[gdf["level"] == "community"][0]]
    # a grid pushed 150 m east: it overlaps its neighbour, leaves a gap, sticks out
    i_shift = grids[4]
    gdf.loc[i_shift, "geometry"] = shapely.affinity.translate(gdf.geometry[i_shift], xoff=0.0015)

    problems = validate_areas(gdf)
    assert _kinds(problems) == {
        "unknown_level",
        "duplicate_code",
        "invalid_geometry",
        "prefix_mismatch",
        "missing_parent",
        "parent_level",
        "overlap",
        "gap",
        "outside_parent",
    }
    assert _mentions(problems, "unknown_level", code[i_unknown])
    assert _mentions(problems, "duplicate_code", code[micro[6]])
    invalid = {p.code: p for p in problems if p.kind == "invalid_geometry"}
    assert set(invalid) == {code[i_bow], code[i_point], code[i_empty]}
    assert "Self-intersection" in invalid[code[i_bow]].message
    assert "not a polygon" in invalid[code[i_point]].message
    mismatched = {p.code for p in problems if p.kind == "prefix_mismatch"}
    assert mismatched == {code[i_len][:-1], code[i_prefix][:6] + "999" + code[i_prefix][9:]}
    assert _mentions(problems, "missing_parent", code[i_missing])
    assert _mentions(problems, "parent_level", code[i_plevel])
    assert _mentions(problems, "overlap", code[i_shift])
    assert _mentions(problems, "outside_parent", code[i_shift])
    assert _mentions(problems, "gap", gdf.loc[i_shift, "parent_code"])
    # every problem with a place has a WGS84 place near the district
    for p in problems:
        if p.lon is not None:
            assert 103.9 < p.lon < 104.2 and 30.6 < p.lat < 30.8, p
    with pytest.raises(AreaValidationError) as info:
        check_areas(gdf)
    assert info.value.problems == problems


def test_invalid_geometry_location_is_the_self_intersection(gdf_synth: gpd.GeoDataFrame) -> None:
    gdf = gdf_synth.copy()
    i = gdf.index[gdf["level"] == "microgrid"][3]
    bow = bowtie(gdf.geometry[i])
    gdf.loc[i, "geometry"] = bow
    (p,) = [p for p in validate_areas(gdf) if p.kind == "invalid_geometry"]
    assert p.lon is not None and p.lat is not None
    where = Point(p.lon, p.lat)
    # on the ring, yet not one of its vertices: the point where two edges cross
    assert shapely.distance(where, bow.exterior) < 1e-9
    vertices = shapely.points(np.asarray(bow.exterior.coords))
    assert shapely.distance(where, vertices).min() > 1e-7


def test_tolerances_are_square_metres(gdf_synth: gpd.GeoDataFrame) -> None:
    gdf = gdf_synth.copy()
    i = gdf.index[gdf["level"] == "microgrid"][7]
    # grow one micro-grid by about 0.5 m all round: a few tens of m² of overlap
    metric = gpd.GeoSeries([gdf.geometry[i]], crs=4326).to_crs(32648)
    grown = metric.buffer(0.5, join_style="mitre").to_crs(4326).iloc[0]
    gdf.loc[i, "geometry"] = grown
    loose = validate_areas(
        gdf, overlap_tolerance_m2=1e6, gap_tolerance_m2=1e6, outside_tolerance_m2=1e6
    )
    assert loose == []
    strict = validate_areas(gdf)
    assert _mentions(strict, "overlap", gdf["code"][i])
    area = max(
        float(p.message.split(" by ")[1].split(" ")[0]) for p in strict if p.kind == "overlap"
    )
    assert 1.0 < area < 200.0


def test_gaps_are_reported_once_at_the_coarsest_level(gdf_synth: gpd.GeoDataFrame) -> None:
    # Remove a whole street with everything in it: the hole is missing at four levels but is
    # one problem, reported where it first appears (the district's streets).
    gdf = gdf_synth.copy()
    street = gdf.loc[gdf["level"] == "street", "code"].iloc[1]
    gone_area = gdf.geometry[gdf["code"] == street].iloc[0]
    gdf = gdf[~gdf["code"].str.startswith(street[:9]) | (gdf["level"] == "district")]
    problems = validate_areas(gdf)
    assert [(p.kind, p.code) for p in problems] == [("gap", "510106000000")]
    assert gone_area.buffer(1e-9).contains(Point(problems[0].lon, problems[0].lat))


def test_level_not_covering_the_district_is_a_gap(gdf_synth: gpd.GeoDataFrame) -> None:
    # Only the district and the micro-grids loaded: no parent is there to notice a missing
    # micro-grid, so the level-wide check against the district must.
    gdf = gdf_synth[gdf_synth["level"].isin(["district", "microgrid"])]
    lost = gdf.index[gdf["level"] == "microgrid"][17]
    lost_area = gdf.geometry[lost]
    problems = validate_areas(gdf.drop(index=lost))
    assert {p.kind for p in problems} == {"missing_parent", "gap"}
    (gap,) = [p for p in problems if p.kind == "gap"]
    assert gap.code == "510106000000" and "microgrid" in gap.message
    assert lost_area.buffer(1e-9).contains(Point(gap.lon, gap.lat))


# The acceptance test, on the real-scale reference district.
def test_damaged_reference_reports_the_four_problems(
    gdf_reference: gpd.GeoDataFrame, damaged_reference: Damage
) -> None:
    assert len(gdf_reference) > 10_000
    assert validate_areas(gdf_reference) == []

    d = damaged_reference
    gdf = d.gdf
    shifted, deleted, hole, hole_parent = d.shifted, d.deleted, d.hole, d.hole_parent
    bow, wrong = d.bowtie, d.wrong_prefix
    problems = validate_areas(gdf)
    assert _mentions(problems, "overlap", shifted)
    hole_gaps = [p for p in problems if p.kind == "gap" and p.code == hole_parent]
    assert hole_gaps and all(hole.buffer(1e-7).contains(Point(p.lon, p.lat)) for p in hole_gaps)
    assert [p.code for p in problems if p.kind == "invalid_geometry"] == [bow]
    assert [p.code for p in problems if p.kind == "prefix_mismatch"] == [wrong]
    # nothing else is blamed on areas far from the damage
    touched = {shifted, deleted, bow, wrong, hole_parent}
    for p in problems:
        if p.kind == "gap" and hole.buffer(1e-7).contains(Point(p.lon, p.lat)):
            continue  # the hole, seen at the micro-grid level against the whole district
        involved = {p.code, *p.message.split()}
        assert any(c.startswith(t) or t.startswith(c) for c in involved for t in touched), p


# --------------------------------------------------------------------------------------------
# Locating
# --------------------------------------------------------------------------------------------


def _reference_answer(gdf: gpd.GeoDataFrame, level: str, x: np.ndarray, y: np.ndarray) -> list:
    """The plain STRtree answer with the smallest-code rule, for comparison."""
    part = gdf[gdf["level"] == level]
    codes = part["code"].to_numpy(dtype=object)
    tree = shapely.STRtree(part.geometry.values)
    pt, poly = tree.query(shapely.points(x, y), predicate="intersects")
    best: list = [None] * len(x)
    for i, j in zip(pt, poly, strict=True):
        if best[i] is None or codes[j] < best[i]:
            best[i] = codes[j]
    return best


def _boundary_points(gdf: gpd.GeoDataFrame, level: str, rng: np.random.Generator) -> np.ndarray:
    """Every vertex, and points at random fractions along every edge."""
    geoms = gdf.loc[gdf["level"] == level].geometry.values
    coords = shapely.get_coordinates(shapely.get_exterior_ring(geoms))
    a, b = coords[:-1], coords[1:]
    t = rng.uniform(0, 1, (len(a), 1))
    mids = a + t * (b - a)
    halves = (a + b) / 2
    return np.vstack([coords, mids, halves])


@pytest.mark.parametrize("cell_m", [None, 0.7, 40.0])
def test_locator_matches_strtree(gdf_synth: gpd.GeoDataFrame, cell_m: float | None) -> None:
    rng = np.random.default_rng(5)
    loc = build_locator(gdf_synth, cell_m=cell_m, raster_after=0)  # raster from the start
    x0, y0, x1, y1 = gdf_synth.total_bounds
    pts = np.vstack(
        [
            np.column_stack([rng.uniform(x0, x1, 40_000), rng.uniform(y0, y1, 40_000)]),
            _boundary_points(gdf_synth, "microgrid", rng),
        ]
    )
    got = loc.locate(pts[:, 0], pts[:, 1])
    want = _reference_answer(gdf_synth, "microgrid", pts[:, 0], pts[:, 1])
    assert got["microgrid"].tolist() == want
    assert got["microgrid"].isna().sum() > 1000  # some points were outside
    # the boundary points really hit the slow path and ties really happened
    index = loc.index(loc.finest)
    assert index.has_raster
    assert (index.raster.labels == -2).any()
    lazy = build_locator(gdf_synth, cell_m=cell_m, raster_after=10**9)
    pd.testing.assert_frame_equal(lazy.locate(pts[:, 0], pts[:, 1]), got)
    assert not lazy.index(lazy.finest).has_raster  # the exact path agreed


def test_locator_builds_rasters_only_for_large_batches(gdf_synth: gpd.GeoDataFrame) -> None:
    loc = build_locator(gdf_synth, raster_after=5000)
    assert not any(loc.index(lv).has_raster for lv in loc.levels)
    x0, y0, x1, y1 = gdf_synth.total_bounds
    rng = np.random.default_rng(3)
    x, y = rng.uniform(x0, x1, 6000), rng.uniform(y0, y1, 6000)
    first: list[dict | None] = []
    for a, b in zip(x[:50], y[:50], strict=True):
        try:
            first.append(loc.locate_one(a, b))
        except OutsideDistrictError:
            first.append(None)
    assert not loc.index(loc.finest).has_raster
    small = loc.locate(x[:4000], y[:4000])
    assert not loc.index(loc.finest).has_raster
    big = loc.locate(x, y)  # 50 + 4000 + 6000 points seen in total: build now
    assert loc.index(loc.finest).has_raster
    pd.testing.assert_frame_equal(big.iloc[:4000], small)
    assert any(first) and not all(first)
    for i, one in enumerate(first):
        assert one == (big.iloc[i].to_dict() if one is not None else one)
        assert (one is None) == big.iloc[i].isna().all()


def test_locator_matches_strtree_on_reference(gdf_reference: gpd.GeoDataFrame) -> None:
    rng = np.random.default_rng(11)
    loc = build_locator(gdf_reference, raster_after=0)  # the raster path, with 5 levels
    x0, y0, x1, y1 = gdf_reference.total_bounds
    n = 100_000
    x, y = rng.uniform(x0, x1, n), rng.uniform(y0, y1, n)
    edge = _boundary_points(gdf_reference, "microgrid", rng)[::7]
    x, y = np.r_[x, edge[:, 0]], np.r_[y, edge[:, 1]]
    got = loc.locate(x, y)
    assert got["microgrid"].tolist() == _reference_answer(gdf_reference, "microgrid", x, y)
    street = _reference_answer(gdf_reference, "street", x[:n], y[:n])
    assert got["street"].iloc[:n].tolist() == street


def test_smallest_code_wins_on_shared_edges_and_corners() -> None:
    # four unit squares around (1, 1) in a 2x2 block, codes deliberately not in spatial order
    squares = {
        "510106001000": box(1, 1, 2, 2),
        "510106002000": box(0, 0, 1, 1),
        "510106003000": box(1, 0, 2, 1),
        "510106004000": box(0, 1, 1, 2),
    }
    gdf = gpd.GeoDataFrame(
        {
            "code": list(squares),
            "name": ["a", "b", "c", "d"],
            "level": "street",
            "parent_code": "510106000000",
            "generated": True,
        },
        geometry=list(squares.values()),
        crs="EPSG:4326",
    )
    loc = build_locator(gdf)
    x = np.array([1.0, 0.5, 1.5, 1.0, 1.0, 0.0, 2.0, 0.5, 1.5])
    y = np.array([1.0, 1.0, 1.0, 0.5, 1.5, 0.0, 2.0, 0.5, 1.5])
    got = loc.locate(x, y)["street"].tolist()
    assert got == [
        "510106001000",  # the corner shared by all four
        "510106002000",  # edge between 002 and 004
        "510106001000",  # edge between 001 and 003
        "510106002000",  # edge between 002 and 003
        "510106001000",  # edge between 001 and 004
        "510106002000",  # outer corners belong to their square
        "510106001000",
        "510106002000",  # interiors
        "510106001000",
    ]
    assert got == _reference_answer(gdf, "street", x, y)


def test_locator_handles_holes_and_multipolygons() -> None:
    gdf = gpd.GeoDataFrame(
        {
            "code": ["510106001000", "510106002000"],
            "name": ["a", "b"],
            "level": "street",
            "parent_code": "510106000000",
            "generated": False,
        },
        geometry=[
            MultiPolygon([box(0, 0, 1, 1), box(2, 0, 3, 1)]),
            box(1, 0, 2, 1).difference(box(1.4, 0.4, 1.6, 0.6)),  # a hole in the middle
        ],
        crs="EPSG:4326",
    )
    loc = build_locator(gdf, cell_m=500.0)
    rng = np.random.default_rng(0)
    x, y = rng.uniform(-0.5, 3.5, 50_000), rng.uniform(-0.5, 1.5, 50_000)
    got = loc.locate(x, y)["street"].tolist()
    assert got == _reference_answer(gdf, "street", x, y)
    in_hole = (np.abs(x - 1.5) < 0.09) & (np.abs(y - 0.5) < 0.09)
    assert in_hole.sum() > 50 and all(got[i] is None for i in np.flatnonzero(in_hole))


def test_outside_points_parents_names_and_errors(gdf_synth: gpd.GeoDataFrame) -> None:
    loc = build_locator(gdf_synth)
    assert isinstance(loc, Locator)
    micro = gdf_synth[gdf_synth["level"] == "microgrid"]
    inner = shapely.point_on_surface(micro.geometry.values)
    x = np.r_[shapely.get_x(inner), 120.0, np.nan]
    y = np.r_[shapely.get_y(inner), 30.0, 30.7]
    index = pd.Index(np.arange(len(x)) * 10 + 3)
    got = loc.locate(pd.Series(x, index=index), pd.Series(y, index=index))
    assert list(got.columns) == [lv.value for lv in LEVELS]
    assert got.index.equals(index)
    assert got["microgrid"].iloc[:-2].tolist() == micro["code"].tolist()
    parent_of = dict(zip(gdf_synth["code"], gdf_synth["parent_code"], strict=True))
    for row in got.iloc[:-2].itertuples(index=False):
        assert row.grid == parent_of[row.microgrid]
        assert row.community == parent_of[row.grid]
        assert row.street == parent_of[row.community]
        assert row.district == parent_of[row.street] == "510106000000"
    assert got.iloc[-2:].isna().all().all()
    assert got.iloc[-1].tolist() == [None] * 5

    one = loc.locate_one(float(x[0]), float(y[0]))
    assert one == got.iloc[0].to_dict()
    assert loc.name_of(one["street"]) == f"street {one['street']}"
    assert loc.name_of("510106000000") == "金牛区"
    with pytest.raises(OutsideDistrictError, match=r"120\.000000"):
        loc.locate_one(120.0, 30.0)


def test_locate_converts_declared_crs(gdf_synth: gpd.GeoDataFrame) -> None:
    loc = build_locator(gdf_synth)
    rng = np.random.default_rng(2)
    x0, y0, x1, y1 = gdf_synth.total_bounds
    x, y = rng.uniform(x0, x1, 2000), rng.uniform(y0, y1, 2000)
    gx, gy = from_wgs84(x, y, "gcj02")
    pd.testing.assert_frame_equal(loc.locate(gx, gy, crs="gcj02"), loc.locate(x, y))


def test_locator_falls_back_to_a_coarser_level(gdf_synth: gpd.GeoDataFrame) -> None:
    grid = gdf_synth.loc[gdf_synth["level"] == "grid"].iloc[2]
    partial = gdf_synth[gdf_synth["parent_code"] != grid["code"]]
    loc = build_locator(partial)
    pt = grid.geometry.representative_point()
    got = loc.locate_one(pt.x, pt.y)
    assert got["microgrid"] is None
    assert got["grid"] == grid["code"]
    assert got["community"] == grid["parent_code"]
    # with only streets loaded, streets are the finest level
    streets = build_locator(gdf_synth[gdf_synth["level"].isin(["district", "street"])])
    assert streets.finest.value == "street"
    assert streets.locate_one(pt.x, pt.y)["street"] == got["street"]


# --------------------------------------------------------------------------------------------
# Adjacency
# --------------------------------------------------------------------------------------------


def test_adjacency_needs_a_shared_edge() -> None:
    # a 3x3 block of squares (codes row by row) and one square touching a corner only
    rows = []
    for r in range(3):
        for c in range(3):
            rows.append((f"510106{r * 3 + c + 1:03d}000", box(c, r, c + 1, r + 1)))
    rows.append(("510106010000", box(3, 3, 4, 4)))  # touches square 9 at the point (3, 3)
    rows.append(("510106011000", box(10, 10, 11, 11)))  # alone
    gdf = gpd.GeoDataFrame(
        {
            "code": [r[0] for r in rows],
            "name": "s",
            "level": "street",
            "parent_code": "510106000000",
            "generated": True,
        },
        geometry=[r[1] for r in rows],
        crs="EPSG:4326",
    )
    adj = street_adjacency(gdf)

    def s(n: int) -> str:
        return f"510106{n:03d}000"

    assert list(adj) == sorted(adj)
    assert adj[s(5)] == [s(2), s(4), s(6), s(8)]
    assert adj[s(1)] == [s(2), s(4)]
    assert adj[s(9)] == [s(6), s(8)]
    assert adj[s(10)] == []
    assert adj[s(11)] == []
    assert all(a in adj[b] for a, ns in adj.items() for b in ns)


def test_adjacency_of_any_level(gdf_synth: gpd.GeoDataFrame) -> None:
    # the three synthetic streets lie in a row: 003 between 001 and 002
    assert street_adjacency(gdf_synth) == {
        "510106001000": ["510106003000"],
        "510106002000": ["510106003000"],
        "510106003000": ["510106001000", "510106002000"],
    }
    part = gdf_synth[gdf_synth["level"] == "community"]
    comm = street_adjacency(gdf_synth, level="community")
    assert sorted(comm) == sorted(part["code"]) and all(comm.values())
    # cross-check by sampling one border every ~1 m and counting samples on the other border
    geom = dict(zip(part["code"], part.geometry, strict=True))
    for a in comm:
        ring = geom[a].exterior
        samples = shapely.line_interpolate_point(
            ring, np.linspace(0, 1, int(ring.length * 1e5)), normalized=True
        )
        for b in comm:
            if a != b:
                close = shapely.distance(samples, geom[b].exterior) < 1e-8
                assert (b in comm[a]) == (close.sum() > 3), (a, b)


def test_unreadable_rings_are_reported_and_the_good_records_kept(tmp_path: Path) -> None:
    """A ring that does not close fails GEOS; it becomes a problem, not a failed read."""
    ring = [[104.0, 30.6], [104.1, 30.6], [104.1, 30.7], [104.0, 30.7]]
    closed = [*ring, ring[0]]
    features = [
        ("510106000000", "district", None, closed),
        ("510106024000", "street", "510106000000", ring),  # not closed
        ("510106024001", "community", "510106024000", ring[:2]),  # two points only
    ]
    doc = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "properties": {"code": c, "name": c, "level": lv, "parent_code": p},
                "geometry": {"type": "Polygon", "coordinates": [coords]},
            }
            for c, lv, p, coords in features
        ],
    }
    path = tmp_path / "rings.geojson"
    path.write_text(json.dumps(doc), encoding="utf-8")

    gdf = read_areas(path)
    assert gdf["code"].tolist() == [f[0] for f in features]  # nothing dropped
    problems = validate_areas(gdf)
    unclosed = [p for p in problems if p.code == "510106024000" and p.kind == "invalid_geometry"]
    assert len(unclosed) == 1
    assert "does not close" in unclosed[0].message
    assert unclosed[0].lon is not None and 104.0 <= unclosed[0].lon <= 104.1
    short = [p for p in problems if p.code == "510106024001" and p.kind == "invalid_geometry"]
    assert short and "does not close" in short[0].message
    assert not [p for p in problems if p.code == "510106000000" and p.kind == "invalid_geometry"]
