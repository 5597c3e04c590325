"""Coordinate conversion at the edge: GCJ-02, BD-09 and EPSG codes to and from WGS84."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import numpy.typing as npt
import pytest
import shapely
from pyproj import Geod, Transformer
from shapely.geometry import LineString, Point, Polygon

from gridgov.crs import NAMED_CRS, from_wgs84, gdf_to_wgs84, normalize_crs, to_wgs84
from gridgov.errors import CRSError, InputError

FloatArray = npt.NDArray[np.float64]
GEOD = Geod(ellps="WGS84")

# Greater Chengdu, with the reference district (Jinniu, ~104.05E 30.70N) well inside.
_LON, _LAT = np.meshgrid(np.linspace(103.6, 104.6, 26), np.linspace(30.3, 31.1, 21))
CHENGDU_LON: FloatArray = _LON.ravel()
CHENGDU_LAT: FloatArray = _LAT.ravel()

# Places outside mainland China's box, where GCJ-02 is defined to equal WGS84.
ABROAD = np.array(
    [
        (24.9384, 60.1699),  # Helsinki
        (139.6917, 35.6895),  # Tokyo: east of the box
        (151.2093, -33.8688),  # Sydney
        (-74.0060, 40.7128),  # New York
        (103.8198, -1.0),  # Sumatra: south of the box
        (100.0, 56.5),  # north of the box
    ]
)


def _metres(lon1: FloatArray, lat1: FloatArray, lon2: FloatArray, lat2: FloatArray) -> FloatArray:
    _, _, dist = GEOD.inv(lon1, lat1, lon2, lat2)
    return np.asarray(dist, dtype=float)


# ---------------------------------------------------------------------------------------------
# Round trips and magnitudes


@pytest.mark.parametrize("crs", ["gcj02", "bd09"])
def test_round_trip_from_wgs84(crs: str) -> None:
    lon, lat = from_wgs84(CHENGDU_LON, CHENGDU_LAT, crs)
    back_lon, back_lat = to_wgs84(lon, lat, crs)
    assert np.abs(back_lon - CHENGDU_LON).max() < 1e-7
    assert np.abs(back_lat - CHENGDU_LAT).max() < 1e-7


@pytest.mark.parametrize("crs", ["gcj02", "bd09"])
def test_round_trip_to_wgs84(crs: str) -> None:
    # The other direction: a phone's GCJ-02 / BD-09 fix, stored as WGS84, shown again on its map.
    lon, lat = to_wgs84(CHENGDU_LON, CHENGDU_LAT, crs)
    again_lon, again_lat = from_wgs84(lon, lat, crs)
    assert np.abs(again_lon - CHENGDU_LON).max() < 1e-7
    assert np.abs(again_lat - CHENGDU_LAT).max() < 1e-7


def test_gcj02_offset_in_chengdu_is_a_few_hundred_metres() -> None:
    lon, lat = from_wgs84(CHENGDU_LON, CHENGDU_LAT, "gcj02")
    dist = _metres(CHENGDU_LON, CHENGDU_LAT, lon, lat)
    assert dist.min() > 200
    assert dist.max() < 800
    # The offset is smooth: neighbouring points a few km apart shift by nearly the same amount.
    assert np.ptp(dist) < 100


def test_gcj02_shifts_chengdu_east_and_south() -> None:
    lon, lat = from_wgs84(CHENGDU_LON, CHENGDU_LAT, "gcj02")
    # Around Chengdu the published offset puts GCJ-02 east and a little south of WGS84; a sign
    # error in the series (a common porting bug) would flip it.
    assert (lon > CHENGDU_LON).all()
    assert (lat < CHENGDU_LAT).all()


def test_bd09_adds_baidus_own_offset_on_top_of_gcj02() -> None:
    g_lon, g_lat = from_wgs84(CHENGDU_LON, CHENGDU_LAT, "gcj02")
    b_lon, b_lat = from_wgs84(CHENGDU_LON, CHENGDU_LAT, "bd09")
    dist = _metres(g_lon, g_lat, b_lon, b_lat)
    # Baidu shifts about 0.0065 deg east and 0.006 deg north of GCJ-02: roughly 0.6-1 km.
    assert dist.min() > 500 and dist.max() < 1200
    assert (b_lon > g_lon).all() and (b_lat > g_lat).all()


def test_matches_published_reference_values() -> None:
    # Widely published values of the standard GCJ-02 / BD-09 formulas for (116.404, 39.915),
    # Beijing; an independent check that the constants and series are right.
    lon, lat = from_wgs84(116.404, 39.915, "gcj02")
    assert lon[0] == pytest.approx(116.41024449916938, abs=1e-9)
    assert lat[0] == pytest.approx(39.91640428150164, abs=1e-9)
    lon, lat = from_wgs84(116.404, 39.915, "bd09")
    assert lon[0] == pytest.approx(116.41662724378733, abs=1e-8)
    assert lat[0] == pytest.approx(39.922699552216216, abs=1e-8)


def test_outside_china_gcj02_equals_wgs84() -> None:
    lon, lat = ABROAD[:, 0], ABROAD[:, 1]
    out_lon, out_lat = from_wgs84(lon, lat, "gcj02")
    np.testing.assert_array_equal(out_lon, lon)
    np.testing.assert_array_equal(out_lat, lat)
    in_lon, in_lat = to_wgs84(lon, lat, "gcj02")
    np.testing.assert_array_equal(in_lon, lon)
    np.testing.assert_array_equal(in_lat, lat)


def test_mixed_inside_and_outside_china() -> None:
    lon = np.array([104.06, 24.9384])
    lat = np.array([30.67, 60.1699])
    out_lon, out_lat = from_wgs84(lon, lat, "gcj02")
    assert out_lon[0] != lon[0]
    assert (out_lon[1], out_lat[1]) == (lon[1], lat[1])


def test_wgs84_is_the_identity_and_returns_new_arrays() -> None:
    lon, lat = CHENGDU_LON.copy(), CHENGDU_LAT.copy()
    out_lon, _ = to_wgs84(lon, lat, "wgs84")
    np.testing.assert_array_equal(out_lon, lon)
    out_lon[0] = 0.0
    assert lon[0] == CHENGDU_LON[0]


@pytest.mark.parametrize("crs", ["gcj02", "bd09", "EPSG:32648"])
def test_inputs_are_not_modified(crs: str) -> None:
    lon, lat = CHENGDU_LON.copy(), CHENGDU_LAT.copy()
    x, y = from_wgs84(lon, lat, crs)
    np.testing.assert_array_equal(lon, CHENGDU_LON)
    np.testing.assert_array_equal(lat, CHENGDU_LAT)
    x_before, y_before = x.copy(), y.copy()
    to_wgs84(x, y, crs)
    np.testing.assert_array_equal(x, x_before)
    np.testing.assert_array_equal(y, y_before)


def test_shapes_are_preserved() -> None:
    lon = CHENGDU_LON[:6].reshape(2, 3)
    lat = CHENGDU_LAT[:6].reshape(2, 3)
    for crs in ("gcj02", "bd09", "EPSG:32648"):
        x, y = from_wgs84(lon, lat, crs)
        assert x.shape == y.shape == (2, 3)
        back_x, _ = to_wgs84(x, y, crs)
        assert back_x.shape == (2, 3)
        assert back_x.dtype == np.float64
    x, y = to_wgs84(104.06, 30.67, "gcj02")
    assert x.shape == y.shape == (1,)


def test_empty_input() -> None:
    x, y = to_wgs84([], [], "gcj02")
    assert x.size == 0 and y.size == 0


# ---------------------------------------------------------------------------------------------
# EPSG codes


def test_utm48n_round_trip_matches_pyproj() -> None:
    x, y = from_wgs84(CHENGDU_LON, CHENGDU_LAT, "EPSG:32648")
    ref = Transformer.from_crs("EPSG:4326", "EPSG:32648", always_xy=True)
    ref_x, ref_y = ref.transform(CHENGDU_LON, CHENGDU_LAT)
    np.testing.assert_allclose(x, ref_x, atol=1e-6)
    np.testing.assert_allclose(y, ref_y, atol=1e-6)
    # Chengdu is west of UTM 48N's central meridian (105E) and ~3,400 km north of the equator.
    assert ((x > 300_000) & (x < 500_000)).all()
    assert ((y > 3_300_000) & (y < 3_500_000)).all()
    lon, lat = to_wgs84(x, y, "EPSG:32648")
    assert np.abs(lon - CHENGDU_LON).max() < 1e-9
    assert np.abs(lat - CHENGDU_LAT).max() < 1e-9


def test_utm_distances_are_metric() -> None:
    x, y = from_wgs84([104.06, 104.07], [30.67, 30.67], "EPSG:32648")
    planar = float(np.hypot(x[1] - x[0], y[1] - y[0]))
    geodesic = float(
        _metres(np.array([104.06]), np.array([30.67]), np.array([104.07]), np.array([30.67]))[0]
    )
    assert planar == pytest.approx(geodesic, rel=1e-3)


@pytest.mark.parametrize("crs", ["EPSG:4490", "epsg:4490", 4490, "CGCS2000"])
def test_cgcs2000_is_treated_as_wgs84_to_the_metre(crs: str | int) -> None:
    # China's official datum differs from WGS84 by centimetres; pyproj treats them as equal.
    lon, lat = to_wgs84(CHENGDU_LON, CHENGDU_LAT, crs)
    assert np.abs(lon - CHENGDU_LON).max() < 1e-6
    assert np.abs(lat - CHENGDU_LAT).max() < 1e-6
    assert normalize_crs(crs) == "EPSG:4490"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("wgs84", "wgs84"),
        ("WGS84", "wgs84"),
        ("WGS-84", "wgs84"),
        ("EPSG:4326", "wgs84"),
        (4326, "wgs84"),
        ("gcj02", "gcj02"),
        ("GCJ-02", "gcj02"),
        ("gcj_02", "gcj02"),
        ("bd09", "bd09"),
        ("BD-09", "bd09"),
        ("bd09ll", "bd09"),
        ("EPSG:32648", "EPSG:32648"),
        ("epsg:32648", "EPSG:32648"),
        (32648, "EPSG:32648"),
        ("EPSG:3857", "EPSG:3857"),
    ],
)
def test_normalize_crs(given: str | int, expected: str) -> None:
    assert normalize_crs(given) == expected


def test_named_crs_are_canonical() -> None:
    assert all(normalize_crs(name) == name for name in NAMED_CRS)


# ---------------------------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize("crs", ["foo", "gcj03", "bd10", "EPSG:999999", "", "  ", "utm48"])
def test_unknown_names_raise(crs: str) -> None:
    with pytest.raises(CRSError, match="unknown CRS"):
        to_wgs84([104.0], [30.0], crs)
    with pytest.raises(CRSError, match="unknown CRS"):
        from_wgs84([104.0], [30.0], crs)
    with pytest.raises(CRSError):
        normalize_crs(crs)


def test_crs_error_is_an_input_error() -> None:
    with pytest.raises(InputError):
        normalize_crs("nonsense")


@pytest.mark.parametrize(
    ("lon", "lat", "crs"),
    [
        ([104.0, 0.0], [30.0, 95.0], "wgs84"),
        ([104.0], [-90.5], "wgs84"),
        ([181.0], [30.0], "wgs84"),
        ([np.nan], [30.0], "wgs84"),
        ([104.0], [np.inf], "gcj02"),
        ([104.0], [91.0], "bd09"),
        ([1e30], [1e30], "EPSG:32648"),
    ],
)
def test_invalid_results_raise(lon: list[float], lat: list[float], crs: str) -> None:
    with pytest.raises(CRSError, match=r"not valid longitude/latitude|outside that CRS.s domain"):
        to_wgs84(lon, lat, crs)


def test_absurd_projected_input_is_rejected() -> None:
    # A UTM northing of 1e12 m still "projects" to a plausible-looking point unless checked.
    with pytest.raises(CRSError, match="outside that CRS's domain"):
        to_wgs84([0.0], [1e12], "EPSG:32648")


def test_invalid_result_message_names_count_and_first_index() -> None:
    with pytest.raises(CRSError, match=r"2 coordinate\(s\).*first: index 1"):
        to_wgs84([104.0, 104.0, 104.0], [30.0, 95.0, 99.0], "wgs84")


@pytest.mark.parametrize("crs", ["wgs84", "gcj02", "bd09", "EPSG:32648"])
def test_shape_mismatch_raises_in_to_wgs84(crs: str) -> None:
    with pytest.raises(CRSError, match="differ in shape"):
        to_wgs84([104.0, 104.1, 104.2], [30.0, 30.1], crs)
    with pytest.raises(CRSError, match="differ in shape"):
        # A length-1 array would broadcast silently if the check were missing.
        to_wgs84([104.0, 104.1, 104.2], [30.0], crs)


@pytest.mark.parametrize("crs", ["wgs84", "gcj02", "EPSG:32648"])
def test_shape_mismatch_raises_in_from_wgs84(crs: str) -> None:
    with pytest.raises(CRSError):
        from_wgs84([104.0, 104.1, 104.2], [30.0], crs)


@pytest.mark.parametrize("crs", ["gcj02", "EPSG:32648"])
def test_from_wgs84_rejects_impossible_latitudes(crs: str) -> None:
    with pytest.raises(CRSError):
        from_wgs84([104.0], [95.0], crs)


# ---------------------------------------------------------------------------------------------
# GeoDataFrames


def _gdf(crs: str | None = "EPSG:4326") -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(
        {"name": ["point", "line", "polygon", "missing"], "n": [1, 2, 3, 4]},
        geometry=[
            Point(104.06, 30.67),
            LineString([(104.0, 30.6), (104.05, 30.65)]),
            Polygon([(104.0, 30.6), (104.1, 30.6), (104.1, 30.7), (104.0, 30.7)]),
            None,
        ],
        index=[10, 20, 30, 40],
        crs=crs,
    )


@pytest.mark.parametrize("crs", ["gcj02", "bd09"])
def test_gdf_to_wgs84_returns_a_new_frame_and_leaves_input_alone(crs: str) -> None:
    gdf = _gdf()
    before = gdf.copy(deep=True)
    out = gdf_to_wgs84(gdf, crs)
    assert out is not gdf
    # The input: same geometries, same CRS label, same columns.
    assert gdf.geometry.geom_equals_exact(before.geometry, tolerance=0).iloc[:3].all()
    assert gdf.crs == before.crs
    assert gdf.columns.tolist() == before.columns.tolist()
    # The output: aligned to the input, other columns kept, WGS84 label, None kept.
    assert out.index.tolist() == gdf.index.tolist()
    assert out["name"].tolist() == gdf["name"].tolist()
    assert out.crs.to_epsg() == 4326
    assert out.geometry.iloc[3] is None
    out.loc[10, "n"] = 99
    assert gdf.loc[10, "n"] == 1


@pytest.mark.parametrize("crs", ["gcj02", "bd09"])
def test_gdf_to_wgs84_converts_every_vertex(crs: str) -> None:
    gdf = _gdf()
    out = gdf_to_wgs84(gdf, crs)
    for geom_in, geom_out in zip(gdf.geometry.iloc[:3], out.geometry.iloc[:3], strict=True):
        xy_in = shapely.get_coordinates(geom_in)
        xy_out = shapely.get_coordinates(geom_out)
        lon, lat = to_wgs84(xy_in[:, 0], xy_in[:, 1], crs)
        np.testing.assert_allclose(xy_out[:, 0], lon, atol=1e-12)
        np.testing.assert_allclose(xy_out[:, 1], lat, atol=1e-12)
        assert geom_out.geom_type == geom_in.geom_type
    shift = _metres(
        np.array([gdf.geometry.iloc[0].x]),
        np.array([gdf.geometry.iloc[0].y]),
        np.array([out.geometry.iloc[0].x]),
        np.array([out.geometry.iloc[0].y]),
    )
    assert 200 < shift[0] < 1500


def test_gdf_declared_crs_overrides_the_label() -> None:
    # GCJ-02 data is routinely written out labelled EPSG:4326; the declaration must win.
    gdf = _gdf("EPSG:4326")
    as_labelled = gdf_to_wgs84(gdf)
    as_declared = gdf_to_wgs84(gdf, "gcj02")
    assert as_labelled.geometry.iloc[0].equals_exact(gdf.geometry.iloc[0], tolerance=1e-12)
    assert not as_declared.geometry.iloc[0].equals_exact(gdf.geometry.iloc[0], tolerance=1e-6)


def test_gdf_in_utm_uses_its_own_crs() -> None:
    gdf = _gdf().to_crs("EPSG:32648")
    out = gdf_to_wgs84(gdf)
    assert out is not gdf
    assert out.crs.to_epsg() == 4326
    assert gdf.crs.to_epsg() == 32648
    assert out.geometry.iloc[0].distance(Point(104.06, 30.67)) < 1e-9


def test_gdf_wgs84_returns_a_copy() -> None:
    gdf = _gdf()
    out = gdf_to_wgs84(gdf, "wgs84")
    assert out is not gdf
    out.loc[10, "n"] = 99
    assert gdf.loc[10, "n"] == 1


def test_gdf_without_crs_needs_a_declaration() -> None:
    gdf = _gdf(None)
    with pytest.raises(CRSError, match="no CRS"):
        gdf_to_wgs84(gdf)
    out = gdf_to_wgs84(gdf, "gcj02")
    assert out.crs.to_epsg() == 4326
    assert gdf.crs is None


def test_gdf_unknown_crs_raises() -> None:
    with pytest.raises(CRSError, match="unknown CRS"):
        gdf_to_wgs84(_gdf(), "mars-grid")


def test_gdf_empty_frame() -> None:
    out = gdf_to_wgs84(_gdf().iloc[:0], "gcj02")
    assert len(out) == 0
    assert out.crs.to_epsg() == 4326


@pytest.mark.parametrize(
    ("geom", "crs"),
    [(Point(1e30, 1e30), "EPSG:32648"), (Point(104.0, 95.0), "EPSG:4326")],
)
def test_gdf_invalid_results_raise(geom: Point, crs: str) -> None:
    gdf = gpd.GeoDataFrame({"n": [1]}, geometry=[geom], crs=crs)
    with pytest.raises(CRSError):
        gdf_to_wgs84(gdf)
