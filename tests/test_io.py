"""The one vector reader: exact attributes, kept bad geometries, layer picking, CRS convention."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from shapely.geometry import LineString, Point

from gridgov.crs import to_wgs84
from gridgov.errors import CRSError, DataFileError
from gridgov.io import frame_to_wgs84, read_vector, read_vector_wgs84, reject_geometry_errors
from gridgov.tessellate import read_boundary
from gridgov.units import read_offices, read_units

# 18 digits: beyond float64's 15-16 exact digits, so a float on the way loses the last ones.
MICROGRID = 510106024010001001
SQUARE = [[104.0, 30.6], [104.01, 30.6], [104.01, 30.61], [104.0, 30.61], [104.0, 30.6]]


def _write_geojson(path: Path, features: list[dict]) -> Path:
    # Written by hand so the numbers are JSON integers, exactly as a user's file holds them.
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


def _feature(properties: dict, ring: list[list[float]] = SQUARE) -> dict:
    return {
        "type": "Feature",
        "properties": properties,
        "geometry": {"type": "Polygon", "coordinates": [ring]},
    }


def _codes_frame() -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(
        {
            "code": pd.array([MICROGRID, None, MICROGRID + 1], dtype="Int64"),
            "name": ["a", "b", "c"],
        },
        geometry=[shapely.box(104.0, 30.6, 104.01, 30.61)] * 3,
        crs="EPSG:4326",
    )


# --------------------------------------------------------------------------------------------
# exact attributes


@pytest.mark.parametrize("suffix", [".geojson", ".gpkg", ".parquet"])
def test_18_digit_integer_codes_with_nulls_stay_exact(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"codes{suffix}"
    if suffix == ".geojson":
        codes = [MICROGRID, None, MICROGRID + 1]
        _write_geojson(path, [_feature({"code": c, "name": "x"}) for c in codes])
    elif suffix == ".gpkg":
        _codes_frame().to_file(path)
    else:
        _codes_frame().to_parquet(path)
    [(name, gdf)] = read_vector(path, what="area")
    assert name == "codes"
    assert isinstance(gdf["code"].dtype, pd.Int64Dtype)
    assert gdf["code"].iloc[0] == MICROGRID and gdf["code"].iloc[2] == MICROGRID + 1
    assert gdf["code"].isna().tolist() == [False, True, False]
    assert gdf.crs.to_epsg() == 4326


def test_units_with_numeric_18_digit_grid_codes_and_nulls(tmp_path: Path) -> None:
    units = gpd.GeoDataFrame(
        {
            "unit_id": pd.array([510106024000001, 510106024000002, 510106024000003], "Int64"),
            "name": ["巡逻一组", "巡逻二组", "网格员"],
            "kind": ["police", "police", "grid_worker"],
            "department": ["派出所", "派出所", "社区"],
            "street_code": pd.array([510106024000] * 3, dtype="Int64"),
            "travel_mode": ["drive", "drive", "walk"],
            "grid_code": pd.array([MICROGRID, None, MICROGRID + 998], dtype="Int64"),
        },
        geometry=[Point(104.05, 30.7), Point(104.06, 30.7), None],
        crs="EPSG:4326",
    )
    for suffix in (".gpkg", ".parquet", ".geojson"):
        path = tmp_path / f"units{suffix}"
        if suffix == ".parquet":
            units.to_parquet(path)
        else:
            units.to_file(path)
        gdf = read_units(path)
        assert gdf["grid_code"].tolist() == [str(MICROGRID), None, str(MICROGRID + 998)], suffix
        assert gdf["unit_id"].tolist() == ["510106024000001", "510106024000002", "510106024000003"]
        assert gdf["street_code"].tolist() == ["510106024000"] * 3
        assert gdf.crs.to_epsg() == 4326 and gdf.geometry.iloc[2] is None


def test_an_export_with_offices_and_units_layers_reads_the_named_one(tmp_path: Path) -> None:
    path = tmp_path / "district.gpkg"
    common = {"department": ["派出所"], "street_code": ["510106024000"], "generated": [False]}
    offices = {"office_id": ["o1"], "name": ["所"], "kind": ["police"], **common}
    gpd.GeoDataFrame(offices, geometry=[Point(104.05, 30.7)], crs=4326).to_file(
        path, layer="offices"
    )
    units = {"unit_id": ["u1"], "name": ["组"], "kind": ["police"], "travel_mode": ["drive"]}
    gpd.GeoDataFrame(
        {**units, "office_id": ["o1"], **common}, geometry=[Point(104.06, 30.7)], crs=4326
    ).to_file(path, layer="units")
    assert read_units(path)["unit_id"].tolist() == ["u1"]
    assert read_offices(path)["office_id"].tolist() == ["o1"]


def test_units_in_a_file_of_several_point_layers_are_read_from_the_one_asked_for(
    tmp_path: Path,
) -> None:
    path = tmp_path / "teams.gpkg"
    common = {"department": ["派出所"], "street_code": ["510106024000"], "travel_mode": ["drive"]}
    for layer, unit in (("day", "u1"), ("night", "u2")):
        frame = {"unit_id": [unit], "name": ["组"], "kind": ["police"], **common}
        gpd.GeoDataFrame(frame, geometry=[Point(104.06, 30.7)], crs=4326).to_file(path, layer=layer)
    with pytest.raises(DataFileError, match=r"several layers .*layers: day \(Point\), night"):
        read_units(path)
    assert read_units(path, layer="night")["unit_id"].tolist() == ["u2"]
    assert read_units(path, layer=0)["unit_id"].tolist() == ["u1"]
    with pytest.raises(DataFileError, match=r"has no layer 'evening' \(layers: day"):
        read_units(path, layer="evening")
    # A point layer without the unit columns does not make the file ambiguous.
    gpd.GeoDataFrame({"label": ["cam"]}, geometry=[Point(104.0, 30.6)], crs=4326).to_file(
        path, layer="cameras"
    )
    with pytest.raises(DataFileError, match=r"several layers"):
        read_units(path)  # still two candidates
    only = tmp_path / "only.gpkg"
    frame = {"unit_id": ["u3"], "name": ["组"], "kind": ["police"], **common}
    gpd.GeoDataFrame(frame, geometry=[Point(104.06, 30.7)], crs=4326).to_file(only, layer="mine")
    gpd.GeoDataFrame({"label": ["cam"]}, geometry=[Point(104.0, 30.6)], crs=4326).to_file(
        only, layer="cameras"
    )
    assert read_units(only)["unit_id"].tolist() == ["u3"]


# --------------------------------------------------------------------------------------------
# geometries GEOS cannot parse


def test_an_unclosed_ring_is_kept_and_explained(tmp_path: Path) -> None:
    unclosed = SQUARE[:-1]
    path = _write_geojson(
        tmp_path / "rings.geojson",
        [_feature({"code": "1"}), _feature({"code": "2"}, unclosed), _feature({"code": "3"})],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # GDAL's own warning about the ring is logged, not shown
        [(_, gdf)] = read_vector(path)
    assert gdf["code"].tolist() == ["1", "2", "3"]
    errors = gdf["geometry_error"].tolist()
    assert errors[0] is None and errors[2] is None
    assert "does not close" in errors[1]
    # repaired so it can still be located and drawn
    assert gdf.geometry.iloc[1].is_valid and gdf.geometry.iloc[1].area > 0
    with pytest.raises(DataFileError, match=r"rings\.geojson: 1 feature\(s\).*rows 1\).*close"):
        reject_geometry_errors(gdf, str(path))
    reject_geometry_errors(gdf.drop(columns="geometry_error"), str(path))  # nothing to reject
    with pytest.raises(DataFileError, match=r"boundary file .*rings\.geojson.*cannot be parsed"):
        read_boundary(path)


# --------------------------------------------------------------------------------------------
# layers


def _layered(path: Path) -> Path:
    line = LineString([(104.0, 30.6), (104.1, 30.7)])
    gpd.GeoDataFrame(geometry=[Point(104.0, 30.6)], crs=4326).to_file(path, layer="points")
    gpd.GeoDataFrame(geometry=[line], crs=4326).to_file(path, layer="main")
    gpd.GeoDataFrame(geometry=[shapely.box(104, 30.6, 104.1, 30.7)], crs=4326).to_file(
        path, layer="blocks"
    )
    gpd.GeoDataFrame(geometry=[line, line], crs=4326).to_file(path, layer="minor")
    return path


def test_layers_are_picked_by_geometry_kind(tmp_path: Path) -> None:
    path = _layered(tmp_path / "layers.gpkg")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # several layers: no warning leaks from the libraries
        lines = read_vector(path, geometry_kind="LineString")
    assert [name for name, _ in lines] == ["main", "minor"]
    assert [len(gdf) for _, gdf in lines] == [1, 2]
    assert [name for name, _ in read_vector(path, geometry_kind="Polygon")] == ["blocks"]
    assert [name for name, _ in read_vector(path)] == ["points", "main", "blocks", "minor"]
    assert [name for name, _ in read_vector(path, layer="points", geometry_kind="Polygon")] == [
        "points"
    ]
    assert [name for name, _ in read_vector(path, layer=2)] == ["blocks"]
    with pytest.raises(DataFileError, match=r"roads file .*layers\.gpkg has no layer 'nope'"):
        read_vector(path, layer="nope", what="roads")
    both = read_vector_wgs84(path, geometry_kind="LineString")
    assert both.attrs["layers"] == ["main", "minor"]
    assert both["layer"].tolist() == ["main", "minor", "minor"]
    roads = tmp_path / "roads.gpkg"
    gpd.GeoDataFrame(geometry=[Point(104.0, 30.6)], crs=4326).to_file(roads, layer="nodes")
    gpd.GeoDataFrame(geometry=[LineString([(104, 30), (105, 31)])], crs=4326).to_file(
        roads, layer="links"
    )
    with pytest.raises(DataFileError, match=r"no Polygon layer \(layers: nodes \(Point\)"):
        read_vector(roads, geometry_kind="Polygon", what="boundary")
    # a single-layer file is read whatever its type, so the caller can say what is wrong
    single = tmp_path / "points.geojson"
    gpd.GeoDataFrame(geometry=[Point(104.0, 30.6)], crs=4326).to_file(single)
    [(_, gdf)] = read_vector(single, geometry_kind="Polygon")
    assert gdf.geom_type.tolist() == ["Point"]


def test_missing_and_unreadable_files_name_the_path_and_what(tmp_path: Path) -> None:
    with pytest.raises(DataFileError, match=r"units file not found: .*nowhere\.gpkg"):
        read_vector(tmp_path / "nowhere.gpkg", what="units")
    garbage = tmp_path / "garbage.geojson"
    garbage.write_text("{ not json")
    with pytest.raises(DataFileError, match=r"cannot read area file .*garbage\.geojson"):
        read_vector(garbage, what="area")
    fake = tmp_path / "fake.parquet"
    fake.write_bytes(b"PAR1 not really")
    with pytest.raises(DataFileError, match=r"cannot read file .*fake\.parquet"):
        read_vector(fake)


# --------------------------------------------------------------------------------------------
# the CRS convention


def test_no_label_is_an_error_asking_to_declare(tmp_path: Path) -> None:
    path = tmp_path / "bare.gpkg"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # GDAL warns that the file will have no CRS: the point
        gpd.GeoDataFrame(geometry=[shapely.box(104.0, 30.6, 104.1, 30.7)]).to_file(path)
    [(_, gdf)] = read_vector(path)
    assert gdf.crs is None
    with pytest.raises(CRSError, match=r"bare\.gpkg has no CRS label; declare .*gcj02"):
        read_vector_wgs84(path)
    assert read_vector_wgs84(path, "wgs84").total_bounds.tolist() == [104.0, 30.6, 104.1, 30.7]


def test_geojson_without_a_crs_member_is_wgs84(tmp_path: Path) -> None:
    path = _write_geojson(tmp_path / "plain.geojson", [_feature({"code": "1"})])
    assert read_vector_wgs84(path).total_bounds.tolist() == [104.0, 30.6, 104.01, 30.61]


def test_the_label_is_trusted_and_a_declared_crs_overrides_it(tmp_path: Path) -> None:
    ref = gpd.GeoDataFrame(geometry=[shapely.box(104.0, 30.6, 104.1, 30.7)], crs=4326)
    metric = tmp_path / "metric.gpkg"
    ref.to_crs(32648).to_file(metric)
    back = read_vector_wgs84(metric)
    assert back.crs.to_epsg() == 4326
    assert shapely.hausdorff_distance(back.geometry.iloc[0], ref.geometry.iloc[0]) < 1e-7
    # GCJ-02 coordinates labelled EPSG:4326: the declared CRS wins over the label
    gcj = tmp_path / "gcj.geojson"
    ref.to_file(gcj)
    shifted = read_vector_wgs84(gcj, "gcj02")
    corners = np.asarray(ref.geometry.iloc[0].exterior.coords)
    lon, lat = to_wgs84(corners[:, 0], corners[:, 1], "gcj02")
    got = np.asarray(shifted.geometry.iloc[0].exterior.coords)
    assert np.allclose(got, np.column_stack([lon, lat]), atol=1e-9, rtol=0)
    assert np.abs(got - corners).max() > 1e-3  # GCJ-02 moves Chengdu by hundreds of metres
    # a declared CRS that is unknown, or that leaves coordinates off the globe, names the file
    with pytest.raises(CRSError, match=r"gcj\.geojson: unknown CRS 'mars-ish'"):
        read_vector_wgs84(gcj, "mars-ish")
    with pytest.raises(CRSError, match=r"metric\.gpkg.*longitude/latitude.*declared, wgs84"):
        read_vector_wgs84(metric, "wgs84")


def test_frame_to_wgs84_messages_say_what_was_trusted() -> None:
    metres = gpd.GeoDataFrame(geometry=[shapely.box(400_000, 3_390_000, 401_000, 3_391_000)])
    with pytest.raises(CRSError, match=r"the roads frame has no CRS label"):
        frame_to_wgs84(metres, None, "the roads frame")
    mislabelled = metres.set_crs(4326)
    with pytest.raises(CRSError, match=r"own label declares, EPSG:4326; bounds \[400000"):
        frame_to_wgs84(mislabelled, None, "x")
    with pytest.raises(CRSError, match=r"declared, bd09 \(its own label says EPSG:4326\)"):
        frame_to_wgs84(mislabelled, "bd09", "x")
    out = frame_to_wgs84(mislabelled, 32648, "x")
    assert out.crs.to_epsg() == 4326 and mislabelled.crs.to_epsg() == 4326  # input untouched
    assert np.all(np.abs(out.total_bounds - [103.96, 30.63, 103.97, 30.64]) < 0.01)


def test_degrees_declared_as_utm_metres_are_caught() -> None:
    """Reading lon/lat degrees as UTM metres still yields valid-looking lon/lat (near the
    equator): coordinates that small cannot be metres (the message names EPSG:4326), and
    the area of use of the declared CRS exposes a larger mistake."""
    degrees = gpd.GeoDataFrame(geometry=[shapely.box(104.0, 30.6, 104.1, 30.7)], crs=4326)
    with pytest.raises(CRSError, match=r"too small to be metres of EPSG:32648.*EPSG:4326"):
        frame_to_wgs84(degrees, "EPSG:32648", "areas.geojson")
    offset = degrees.set_geometry(degrees.scale(100, 100, origin=(0, 0)))  # 10 km, 3 km
    with pytest.raises(CRSError, match=r"outside where EPSG:32648 is used"):
        frame_to_wgs84(offset, "EPSG:32648", "areas.geojson")
    with pytest.raises(CRSError, match=r"outside where gcj02 is used"):
        frame_to_wgs84(degrees.set_geometry(degrees.translate(-180)), "gcj02", "x")
    # Right declarations pass, near a zone's edge too.
    utm = degrees.to_crs(32648)
    assert frame_to_wgs84(utm, None, "x").total_bounds[0] == pytest.approx(104.0)
    assert len(frame_to_wgs84(degrees, "gcj02", "x")) == 1
