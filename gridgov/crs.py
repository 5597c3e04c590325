"""Coordinate systems at the edge: WGS84 inside, GCJ-02 / BD-09 / any EPSG code outside.

Chinese phone SDKs and web maps (AMap, Tencent) report GCJ-02, Baidu reports BD-09; both are
published obfuscations of WGS84 with offsets of a few hundred metres. gridgov stores WGS84, so
every input names its CRS and is converted here, once, before anything else sees it.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import shapely
from pyproj import CRS, Transformer
from pyproj.exceptions import CRSError as _PyprojCRSError

from gridgov.errors import CRSError

if TYPE_CHECKING:
    import geopandas as gpd

FloatArray = npt.NDArray[np.float64]

#: Names accepted wherever a CRS is declared, besides ``EPSG:nnnn``.
NAMED_CRS = ("wgs84", "gcj02", "bd09")

# Krasovsky-1940 ellipsoid used by the GCJ-02 offset.
_A = 6378245.0
_EE = 0.00669342162296594323
_BD_K = np.pi * 3000.0 / 180.0
# The offset applies only inside mainland China; outside it GCJ-02 equals WGS84.
_CHINA_BOX = (72.004, 0.8293, 137.8347, 55.8271)
_ITER_TOL_DEG = 1e-10
_ITER_MAX = 30


def normalize_crs(crs: str | int) -> str:
    """Return the canonical name of a declared CRS: ``wgs84``, ``gcj02``, ``bd09`` or ``EPSG:n``.

    Raises
    ------
    CRSError
        If the name is neither one of the Chinese datums nor a CRS pyproj knows.
    """
    return _normalized(crs)


# Every report's duplicate check converts points: building a pyproj CRS each time cost more
# than the conversion. A name that fails raises each time (lru_cache keeps no exception).
@lru_cache(maxsize=64)
def _normalized(crs: str | int) -> str:
    text = str(crs).strip().lower().replace("-", "").replace("_", "")
    if text in ("wgs84", "epsg:4326", "4326", "wgs1984"):
        return "wgs84"
    if text in ("gcj02", "gcj", "mars"):
        return "gcj02"
    if text in ("bd09", "bd09ll", "baidu"):
        return "bd09"
    try:
        epsg = CRS.from_user_input(str(crs).strip()).to_epsg()
    except _PyprojCRSError:
        epsg = None
    if epsg is None:
        msg = f"unknown CRS {crs!r}; use wgs84, gcj02, bd09 or an EPSG code such as EPSG:32648"
        raise CRSError(msg)
    return "wgs84" if epsg == 4326 else f"EPSG:{epsg}"


def to_wgs84(
    lon: npt.ArrayLike, lat: npt.ArrayLike, crs: str | int = "wgs84"
) -> tuple[FloatArray, FloatArray]:
    """Convert coordinates declared in ``crs`` to WGS84 longitude and latitude.

    Parameters
    ----------
    lon, lat
        Scalars or arrays. For an EPSG code they are that CRS's x and y.
    crs
        ``wgs84``, ``gcj02``, ``bd09`` or any EPSG code.

    Returns
    -------
    Two new float arrays (the inputs are not modified).
    """
    name = normalize_crs(crs)
    x, y = _as_arrays(lon, lat)
    if name == "wgs84":
        out = (x, y)
    elif name == "gcj02":
        _check_lonlat(x, y, declared=name, stage="input")
        out = _gcj02_to_wgs84(x, y)
    elif name == "bd09":
        _check_lonlat(x, y, declared=name, stage="input")
        out = _gcj02_to_wgs84(*_bd09_to_gcj02(x, y))
    else:
        out = _project(x, y, name, "EPSG:4326")
    _check_lonlat(*out, declared=name, stage="result")
    return out


def from_wgs84(
    lon: npt.ArrayLike, lat: npt.ArrayLike, crs: str | int = "wgs84"
) -> tuple[FloatArray, FloatArray]:
    """Convert WGS84 coordinates to ``crs`` (the inverse of :func:`to_wgs84`)."""
    name = normalize_crs(crs)
    x, y = _as_arrays(lon, lat)
    _check_lonlat(x, y, declared="wgs84", stage="input")
    if name == "wgs84":
        return x, y
    if name == "gcj02":
        return _wgs84_to_gcj02(x, y)
    if name == "bd09":
        return _gcj02_to_bd09(*_wgs84_to_gcj02(x, y))
    return _project(x, y, "EPSG:4326", name)


def gdf_to_wgs84(gdf: gpd.GeoDataFrame, crs: str | int | None = None) -> gpd.GeoDataFrame:
    """Return a copy of ``gdf`` with geometries in EPSG:4326.

    ``crs`` declares what the coordinates really are. It overrides the file's own CRS, because
    GCJ-02 and BD-09 data are routinely written out labelled as EPSG:4326.
    """
    if crs is None:
        if gdf.crs is None:
            msg = "the data has no CRS; declare one (wgs84, gcj02, bd09 or an EPSG code)"
            raise CRSError(msg)
        name = normalize_crs(gdf.crs.to_string())
    else:
        name = normalize_crs(crs)
    import geopandas as gpd

    def _convert(coords: FloatArray) -> FloatArray:
        lon, lat = to_wgs84(coords[:, 0], coords[:, 1], name)
        return np.column_stack([lon, lat])

    # Every path goes through to_wgs84 so that every result is checked the same way.
    geoms = shapely.transform(np.asarray(gdf.geometry.values), _convert)
    out = gdf.copy()
    out[gdf.geometry.name] = gpd.GeoSeries(geoms, index=gdf.index)
    return out.set_crs("EPSG:4326", allow_override=True)


@lru_cache(maxsize=32)
def _transformer(src: str, dst: str) -> Transformer:
    return Transformer.from_crs(src, dst, always_xy=True)


@lru_cache(maxsize=32)
def _is_geographic(name: str) -> bool:
    return bool(CRS.from_user_input(name).is_geographic)


def _as_arrays(lon: npt.ArrayLike, lat: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    x = np.array(lon, dtype=float, ndmin=1)
    y = np.array(lat, dtype=float, ndmin=1)
    if x.shape != y.shape:
        msg = f"lon and lat differ in shape: {x.shape} vs {y.shape}"
        raise CRSError(msg)
    return x, y


def _project(x: FloatArray, y: FloatArray, src: str, dst: str) -> tuple[FloatArray, FloatArray]:
    bad = ~(np.isfinite(x) & np.isfinite(y))
    if bad.any():
        msg = f"{int(bad.sum())} coordinate(s) are not finite numbers (first: index {_first(bad)})"
        raise CRSError(msg)
    tx, ty = (np.asarray(v, dtype=float) for v in _transformer(src, dst).transform(x, y))
    # Projections happily return numbers for coordinates far outside their domain (a UTM y of
    # 1e12 still "converts"); going back and comparing exposes such input.
    bx, by = (np.asarray(v, dtype=float) for v in _transformer(dst, src).transform(tx, ty))
    scale = 1e-6 if _is_geographic(src) else 1e-2
    bad = ~(np.isfinite(tx) & np.isfinite(ty)) | (np.hypot(bx - x, by - y) > scale)
    if bad.any():
        msg = (
            f"{int(bad.sum())} coordinate(s) cannot be converted from {src} to {dst}; they lie "
            f"outside that CRS's domain (first: index {_first(bad)})"
        )
        raise CRSError(msg)
    return tx, ty


def _first(mask: npt.NDArray[np.bool_]) -> int:
    return int(np.argmax(mask))


def _check_lonlat(lon: FloatArray, lat: FloatArray, declared: str, stage: str) -> None:
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(lon) | ~np.isfinite(lat) | (np.abs(lat) > 90) | (np.abs(lon) > 180)
    if bad.any():
        what = "input" if stage == "input" else f"result of converting from {declared}"
        msg = (
            f"{int(bad.sum())} coordinate(s) are not valid longitude/latitude ({what}); "
            f"first: index {_first(bad)}"
        )
        raise CRSError(msg)


def _in_china(lon: FloatArray, lat: FloatArray) -> npt.NDArray[np.bool_]:
    x0, y0, x1, y1 = _CHINA_BOX
    return (lon >= x0) & (lon <= x1) & (lat >= y0) & (lat <= y1)


def _gcj_delta(lon: FloatArray, lat: FloatArray) -> tuple[FloatArray, FloatArray]:
    # The published GCJ-02 offset: a fixed polynomial + sine series in (lon-105, lat-35),
    # scaled from metres to degrees on the Krasovsky ellipsoid.
    x = lon - 105.0
    y = lat - 35.0
    sq = np.sqrt(np.abs(x))
    dlat = -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * sq
    dlon = 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * sq
    wave = (20.0 * np.sin(6.0 * x * np.pi) + 20.0 * np.sin(2.0 * x * np.pi)) * 2.0 / 3.0
    dlat += wave + (20.0 * np.sin(y * np.pi) + 40.0 * np.sin(y / 3.0 * np.pi)) * 2.0 / 3.0
    dlat += (160.0 * np.sin(y / 12.0 * np.pi) + 320.0 * np.sin(y * np.pi / 30.0)) * 2.0 / 3.0
    dlon += wave + (20.0 * np.sin(x * np.pi) + 40.0 * np.sin(x / 3.0 * np.pi)) * 2.0 / 3.0
    dlon += (150.0 * np.sin(x / 12.0 * np.pi) + 300.0 * np.sin(x / 30.0 * np.pi)) * 2.0 / 3.0
    rad = lat / 180.0 * np.pi
    magic = 1.0 - _EE * np.sin(rad) ** 2
    sqrt_magic = np.sqrt(magic)
    dlat = dlat * 180.0 / ((_A * (1.0 - _EE)) / (magic * sqrt_magic) * np.pi)
    dlon = dlon * 180.0 / (_A / sqrt_magic * np.cos(rad) * np.pi)
    inside = _in_china(lon, lat)
    return np.where(inside, dlon, 0.0), np.where(inside, dlat, 0.0)


def _wgs84_to_gcj02(lon: FloatArray, lat: FloatArray) -> tuple[FloatArray, FloatArray]:
    dlon, dlat = _gcj_delta(lon, lat)
    return lon + dlon, lat + dlat


def _invert(
    forward: Callable[[FloatArray, FloatArray], tuple[FloatArray, FloatArray]],
    lon: FloatArray,
    lat: FloatArray,
    start: tuple[FloatArray, FloatArray],
) -> tuple[FloatArray, FloatArray]:
    """Solve ``forward(x, y) == (lon, lat)`` by fixed-point iteration from ``start``.

    The datum offsets are smooth and tiny (< 0.01°), so each step removes nearly all of the
    remaining error and ~1e-10° (sub-millimetre) is reached in a handful of steps.
    """
    x, y = start[0].copy(), start[1].copy()
    for _ in range(_ITER_MAX):
        fx, fy = forward(x, y)
        ex, ey = fx - lon, fy - lat
        x -= ex
        y -= ey
        if max(np.abs(ex).max(initial=0.0), np.abs(ey).max(initial=0.0)) < _ITER_TOL_DEG:
            break
    return x, y


def _gcj02_to_wgs84(lon: FloatArray, lat: FloatArray) -> tuple[FloatArray, FloatArray]:
    # The published offset has no closed-form inverse.
    return _invert(_wgs84_to_gcj02, lon, lat, (lon, lat))


def _gcj02_to_bd09(lon: FloatArray, lat: FloatArray) -> tuple[FloatArray, FloatArray]:
    z = np.hypot(lon, lat) + 0.00002 * np.sin(lat * _BD_K)
    theta = np.arctan2(lat, lon) + 0.000003 * np.cos(lon * _BD_K)
    return z * np.cos(theta) + 0.0065, z * np.sin(theta) + 0.006


def _bd09_to_gcj02(lon: FloatArray, lat: FloatArray) -> tuple[FloatArray, FloatArray]:
    # Baidu's usual inverse is approximate (~1e-6°); use it as the start and refine it.
    x, y = lon - 0.0065, lat - 0.006
    z = np.hypot(x, y) - 0.00002 * np.sin(y * _BD_K)
    theta = np.arctan2(y, x) - 0.000003 * np.cos(x * _BD_K)
    return _invert(_gcj02_to_bd09, lon, lat, (z * np.cos(theta), z * np.sin(theta)))


# Projected coordinates (metres) within these of the false origin are degrees mislabelled:
# no real dataset lies within 180 m × 90 m of a projection's origin (open sea for Web
# Mercator, outside the zone for UTM).
_DEGREE_BOX = (-180.0, -90.0, 180.0, 90.0)
# UTM eastings and northings (metres).
_UTM_EASTING = (100_000.0, 900_000.0)
_UTM_NORTHING = (0.0, 10_000_000.0)
# Web Mercator's extent (metres).
_MERCATOR_MAX = 20_037_508.35


def likely_crs(bounds: tuple[float, float, float, float] | npt.ArrayLike) -> str:
    """What coordinates within ``bounds`` (minx, miny, maxx, maxy) most likely are, in words
    that name a CRS: for a message when the declared one cannot be right."""
    minx, miny, maxx, maxy = (float(v) for v in np.asarray(bounds, dtype=float))
    x0, y0, x1, y1 = _DEGREE_BOX
    if x0 <= minx and maxx <= x1 and y0 <= miny and maxy <= y1:
        cx0, cy0, cx1, cy1 = _CHINA_BOX
        china = cx0 <= minx and maxx <= cx1 and cy0 <= miny and maxy <= cy1
        also = "; GCJ-02 (gcj02) if they come from a Chinese map SDK" if china else ""
        return f"longitude/latitude degrees: EPSG:4326 (wgs84){also}"
    if (
        _UTM_EASTING[0] <= minx
        and maxx <= _UTM_EASTING[1]
        and _UTM_NORTHING[0] <= miny
        and maxy <= _UTM_NORTHING[1]
    ):
        return "metres of a UTM zone (EPSG:326NN north, 327NN south; Chengdu is EPSG:32648)"
    if max(abs(minx), abs(maxx), abs(miny), abs(maxy)) <= _MERCATOR_MAX:
        return "metres of Web Mercator (EPSG:3857)"
    return "metres of some projected CRS"


def mislabelled_degrees(
    bounds: tuple[float, float, float, float] | npt.ArrayLike, crs: str
) -> str | None:
    """Why coordinates labelled ``crs`` (a projected CRS, in metres) must be degrees, or None.

    Degrees read as metres make a district of a few square metres next to the projection's
    origin, far from anywhere; the caller refuses them with this message.
    """
    if crs in NAMED_CRS or not CRS.from_user_input(crs).is_projected:
        return None
    minx, miny, maxx, maxy = (float(v) for v in np.asarray(bounds, dtype=float))
    x0, y0, x1, y1 = _DEGREE_BOX
    if not (x0 <= minx and maxx <= x1 and y0 <= miny and maxy <= y1):
        return None
    return (
        f"the coordinates (bounds {np.round([minx, miny, maxx, maxy], 4).tolist()}) are too "
        f"small to be metres of {crs}: read so, the data would be a few square metres next to "
        f"the projection's origin, far from any plausible place; they are most likely "
        f"{likely_crs((minx, miny, maxx, maxy))}"
    )
