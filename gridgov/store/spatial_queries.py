"""Spatial questions on the stored district: locating points in its areas, units near a point,
and the road lines in a map's box.

Answered in SQL on PostGIS and in process on SQLite, with the same results.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pyproj import Geod
from sqlalchemy import Connection, Engine, func, select, text

from gridgov.areas import build_locator
from gridgov.errors import InputError, OutsideDistrictError, StoreError
from gridgov.model import UnitStatus
from gridgov.roads import one_line_per_segment
from gridgov.store.district_read import (
    LEVEL_NAMES,
    UNIT_OUT_COLUMNS,
    WGS84,
    read_stored_areas,
    unit_frame,
    unit_select,
)
from gridgov.store.engine import detect_backend, translate_errors
from gridgov.store.models import (
    AREAS,
    DATASETS,
    ROAD_LINKS,
    SRID,
    UNITS,
)

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

_GEOD = Geod(ellps="WGS84")


# --------------------------------------------------------------------------------------------
# locating points
# --------------------------------------------------------------------------------------------

_LOCATOR_CACHE: weakref.WeakKeyDictionary[Engine, tuple[Any, Any]] = weakref.WeakKeyDictionary()


def _areas_version(connection: Connection) -> Any:
    table = DATASETS
    stmt = select(func.max(table.c.id)).where(table.c.kind.in_(["areas", "files"]))
    return connection.execute(stmt).scalar()


def _sqlite_locator(engine: Engine) -> Any:
    with translate_errors(engine), engine.connect() as connection:
        version = _areas_version(connection)
    cached = _LOCATOR_CACHE.get(engine)
    if cached is not None and cached[0] == version:
        return cached[1]
    locator = build_locator(read_stored_areas(engine))
    _LOCATOR_CACHE[engine] = (version, locator)
    return locator


# Above this many points, a temporary point table with its own GIST index, scanned once per
# polygon, beats one index probe per point by 5-10x (measured on 10k points, 11k areas).
_PG_TEMP_TABLE_POINTS = 1000

_PG_POINTS_CTE = """
WITH pts AS (
    SELECT t.i, ST_SetSRID(ST_MakePoint(t.x, t.y), 4326) AS g
    FROM unnest(CAST(:xs AS float8[]), CAST(:ys AS float8[])) WITH ORDINALITY AS t(x, y, i)
), hit AS (
    -- closure semantics (boundary included); the smallest code wins on a shared edge
    SELECT DISTINCT ON (p.i) p.i, a.code
    FROM pts p JOIN areas a ON a.level = :finest AND ST_Intersects(a.geometry, p.g)
    ORDER BY p.i, a.code
)
"""
_PG_POINTS_TABLE = """
CREATE TEMPORARY TABLE gridgov_points ON COMMIT DROP AS
SELECT t.i, ST_SetSRID(ST_MakePoint(t.x, t.y), 4326) AS g
FROM unnest(CAST(:xs AS float8[]), CAST(:ys AS float8[])) WITH ORDINALITY AS t(x, y, i)
"""
_PG_TABLE_CTE = """
WITH hit AS (
    -- LATERAL pins the plan to "each polygon probes the point index"; left to itself the
    -- planner probes the area index once per point, which is several times slower.
    SELECT DISTINCT ON (p.i) p.i, a.code
    FROM areas a
    CROSS JOIN LATERAL (
        SELECT q.i FROM gridgov_points q WHERE ST_Intersects(a.geometry, q.g)
    ) p
    WHERE a.level = :finest
    ORDER BY p.i, a.code
)
"""
_PG_PARENTS = """
SELECT h.i, a0.code, a0.level, a1.code, a1.level, a2.code, a2.level,
       a3.code, a3.level, a4.code, a4.level
FROM hit h
JOIN areas a0 ON a0.code = h.code
LEFT JOIN areas a1 ON a1.code = a0.parent_code
LEFT JOIN areas a2 ON a2.code = a1.parent_code
LEFT JOIN areas a3 ON a3.code = a2.parent_code
LEFT JOIN areas a4 ON a4.code = a3.parent_code
"""


def _pg_locate_many(engine: Engine, lon: np.ndarray, lat: np.ndarray) -> pd.DataFrame:
    columns = {name: np.full(len(lon), None, dtype=object) for name in LEVEL_NAMES}
    finite = np.flatnonzero(np.isfinite(lon) & np.isfinite(lat))
    points = {"xs": lon[finite].tolist(), "ys": lat[finite].tolist()}
    rows: Sequence[Any] = []
    with translate_errors(engine), engine.begin() as connection:
        levels = {r[0] for r in connection.execute(select(AREAS.c.level).distinct())}
        if levels and finite.size:
            finest = max(levels, key=LEVEL_NAMES.index)
            # JIT compilation costs more than it saves on these short index-driven queries.
            connection.exec_driver_sql("SET LOCAL jit = off")
            if finite.size < _PG_TEMP_TABLE_POINTS:
                sql = _PG_POINTS_CTE + _PG_PARENTS
                rows = connection.execute(text(sql), {**points, "finest": finest}).all()
            else:
                connection.execute(text(_PG_POINTS_TABLE), points)
                connection.exec_driver_sql("CREATE INDEX ON gridgov_points USING gist (g)")
                connection.exec_driver_sql("ANALYZE gridgov_points")
                sql = _PG_TABLE_CTE + _PG_PARENTS
                rows = connection.execute(text(sql), {"finest": finest}).all()
    for row in rows:
        position = finite[int(row[0]) - 1]  # ORDINALITY counts from 1
        for code, level in zip(row[1::2], row[2::2], strict=True):
            if code is not None:
                columns[level][position] = code
    return pd.DataFrame({name: pd.Series(columns[name], dtype=object) for name in LEVEL_NAMES})


def locate_many(engine: Engine, lon: ArrayLike, lat: ArrayLike) -> pd.DataFrame:
    """Locate WGS84 points in the stored hierarchy.

    A point on an edge shared by several areas belongs to the one with the smallest code.

    Parameters
    ----------
    engine
        The store.
    lon, lat
        Coordinates in WGS84 degrees, equal lengths.

    Returns
    -------
    pandas.DataFrame
        One row per point (same order) and one column per level name holding a code, or None
        where the point lies outside that level.
    """
    lon_arr = np.atleast_1d(np.asarray(lon, dtype=float))
    lat_arr = np.atleast_1d(np.asarray(lat, dtype=float))
    if lon_arr.shape != lat_arr.shape or lon_arr.ndim != 1:
        msg = f"lon and lat must be 1-d and equally long, got {lon_arr.shape} and {lat_arr.shape}"
        raise InputError(msg)
    with translate_errors(engine), engine.connect() as connection:
        if connection.execute(select(AREAS.c.code).limit(1)).first() is None:
            msg = "the store holds no areas; load some first (`gridgov load`)"
            raise StoreError(msg)
    if detect_backend(engine) == "postgresql":
        return _pg_locate_many(engine, lon_arr, lat_arr)
    located = _sqlite_locator(engine).locate(lon_arr, lat_arr)
    result = pd.DataFrame(located).reset_index(drop=True).reindex(columns=LEVEL_NAMES)
    return result.astype(object).where(result.notna(), None)


def locate_point(engine: Engine, lon: float, lat: float) -> dict[str, dict[str, Any] | None]:
    """Locate one WGS84 point and name it, level by level.

    Returns
    -------
    dict
        Level name → ``{"code", "name", "generated", "name_source"}`` (None where the level
        is not loaded), so a user always sees what is real and what is generated.

    Raises
    ------
    OutsideDistrictError
        If the point lies outside every loaded area.
    """
    row = locate_many(engine, [lon], [lat]).iloc[0]
    codes: dict[str, str | None] = {name: row[name] for name in LEVEL_NAMES}
    found = [code for code in codes.values() if code is not None]
    if not found:
        raise OutsideDistrictError(lon, lat)
    with translate_errors(engine), engine.connect() as connection:
        stmt = select(AREAS.c.code, AREAS.c.name, AREAS.c.generated, AREAS.c.name_source)
        rows = connection.execute(stmt.where(AREAS.c.code.in_(found))).mappings().all()
        described = {row["code"]: dict(row) for row in rows}
    return {level: None if code is None else described[code] for level, code in codes.items()}


# --------------------------------------------------------------------------------------------
# units near a point
# --------------------------------------------------------------------------------------------


def _check_point(lon: float, lat: float) -> None:
    if not (math.isfinite(lon) and math.isfinite(lat) and -180 <= lon <= 180 and -90 <= lat <= 90):
        msg = f"({lon}, {lat}) is not a WGS84 longitude/latitude"
        raise InputError(msg)


def _geodesic_m(gdf: gpd.GeoDataFrame, lon: float, lat: float) -> np.ndarray:
    if len(gdf) == 0:
        return np.empty(0)
    xs = shapely.get_x(gdf.geometry.values)
    ys = shapely.get_y(gdf.geometry.values)
    # Geodesics on the WGS84 ellipsoid: the same distance PostGIS gives for geography.
    _, _, dist = _GEOD.inv(np.full(len(xs), lon), np.full(len(ys), lat), xs, ys)
    return np.asarray(dist, dtype=float)


def _sorted_by_distance(gdf: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    order = np.lexsort((gdf["unit_id"].to_numpy(), gdf["distance_m"].to_numpy()))
    return gdf.iloc[order].reset_index(drop=True)


def _pg_envelope(lon: float, lat: float, radius_m: float) -> tuple[float, ...] | None:
    """A lon/lat box surely containing every point within ``radius_m`` (None: no useful box)."""
    # A degree of latitude is at least 110,574 m and a degree of longitude at least
    # 111,320 m * cos(lat) on the ellipsoid; a 1 % margin absorbs the approximations.
    dlat = radius_m / 110_574.0 * 1.01 + 1e-9
    far_lat = abs(lat) + dlat
    if far_lat >= 89.0:
        return None
    dlon = radius_m / (111_320.0 * math.cos(math.radians(far_lat))) * 1.01 + 1e-9
    if dlon >= 180.0:
        return None
    return (lon - dlon, lat - dlat, lon + dlon, lat + dlat)


def _pg_units_within(
    connection: Connection,
    lon: float,
    lat: float,
    radius_m: float,
    kind: str | None,
    available_only: bool,
    limit: int | None,
) -> gpd.GeoDataFrame:
    table = UNITS
    point = func.ST_SetSRID(func.ST_MakePoint(lon, lat), SRID)
    geography = func.Geography
    distance = func.ST_Distance(geography(table.c.position), geography(point)).label("distance_m")
    stmt = (
        select(*[table.c[c] for c in UNIT_OUT_COLUMNS], distance, table.c.position)
        .where(table.c.position.is_not(None))
        .where(func.ST_DWithin(geography(table.c.position), geography(point), radius_m))
        .order_by(text("distance_m"), table.c.unit_id)
    )
    box = _pg_envelope(lon, lat, radius_m)
    if box is not None:
        # Lets the planner use the GIST index; the geography test then decides exactly.
        stmt = stmt.where(table.c.position.op("&&")(func.ST_MakeEnvelope(*box, SRID)))
    if kind is not None:
        stmt = stmt.where(table.c.kind == str(kind))
    if available_only:
        stmt = stmt.where(table.c.status == str(UnitStatus.AVAILABLE), table.c.on_duty.is_(True))
    if limit is not None:
        stmt = stmt.limit(limit)
    rows = connection.execute(stmt).all()
    return unit_frame(rows, extra=["distance_m"])


def units_within(
    engine: Engine,
    lon: float,
    lat: float,
    radius_m: float,
    kind: str | None = None,
    *,
    available_only: bool = False,
) -> gpd.GeoDataFrame:
    """Units whose position lies within ``radius_m`` metres (geodesic) of a WGS84 point.

    Returns
    -------
    geopandas.GeoDataFrame
        The units with a ``distance_m`` column, nearest first, ties by unit id.
    """
    _check_point(lon, lat)
    if not (math.isfinite(radius_m) and radius_m >= 0):
        msg = f"radius must be a non-negative number of metres, got {radius_m}"
        raise InputError(msg)
    if detect_backend(engine) == "postgresql":
        with translate_errors(engine), engine.connect() as connection:
            return _pg_units_within(connection, lon, lat, radius_m, kind, available_only, None)
    gdf = _read_positioned_units(engine, kind, available_only)
    gdf["distance_m"] = _geodesic_m(gdf, lon, lat)
    gdf = gdf[gdf["distance_m"] <= radius_m]
    return _sorted_by_distance(_reorder(gdf))


def _read_positioned_units(
    engine: Engine, kind: str | None, available_only: bool
) -> gpd.GeoDataFrame:
    stmt = unit_select(kind, None, available_only, with_position=True)
    with translate_errors(engine), engine.connect() as connection:
        rows = connection.execute(stmt).all()
    return unit_frame(rows)


def _reorder(gdf: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    return gdf[[*UNIT_OUT_COLUMNS, "distance_m", "geometry"]]


def nearest_units(
    engine: Engine,
    lon: float,
    lat: float,
    k: int = 5,
    kind: str | None = None,
    available_only: bool = False,
) -> gpd.GeoDataFrame:
    """The ``k`` units nearest to a WGS84 point by straight line (geodesic metres).

    Parameters
    ----------
    engine
        The store.
    lon, lat
        The point, WGS84 degrees.
    k
        How many units at most.
    kind
        Only units of this force kind.
    available_only
        Only units that are available and on duty.

    Returns
    -------
    geopandas.GeoDataFrame
        Up to ``k`` units with ``distance_m``, nearest first; equal distances by unit id.
    """
    _check_point(lon, lat)
    if k <= 0:
        msg = f"k must be positive, got {k}"
        raise InputError(msg)
    if detect_backend(engine) != "postgresql":
        gdf = _read_positioned_units(engine, kind, available_only)
        gdf["distance_m"] = _geodesic_m(gdf, lon, lat)
        return _sorted_by_distance(_reorder(gdf)).head(k).reset_index(drop=True)
    with translate_errors(engine), engine.connect() as connection:
        radius = _pg_knn_radius(connection, lon, lat, k, kind, available_only)
        if radius is None:
            radius = math.inf
        # The k planar-nearest units all lie within `radius`, so the true k nearest do too.
        return _pg_units_within(
            connection, lon, lat, min(radius * (1 + 1e-9) + 1e-6, 4.1e7), kind, available_only, k
        )


def _pg_knn_radius(
    connection: Connection,
    lon: float,
    lat: float,
    k: int,
    kind: str | None,
    available_only: bool,
) -> float | None:
    """The largest geodesic distance among the k nearest units by the index's planar KNN."""
    table = UNITS
    point = func.ST_SetSRID(func.ST_MakePoint(lon, lat), SRID)
    knn = (
        select(table.c.position)
        .where(table.c.position.is_not(None))
        .order_by(table.c.position.op("<->")(point))
        .limit(k)
    )
    if kind is not None:
        knn = knn.where(table.c.kind == str(kind))
    if available_only:
        knn = knn.where(table.c.status == str(UnitStatus.AVAILABLE), table.c.on_duty.is_(True))
    sub = knn.subquery()
    stmt = select(
        func.max(func.ST_Distance(func.Geography(sub.c.position), func.Geography(point))),
        func.count(),
    )
    radius, found = connection.execute(stmt).one()
    if found < k:
        return None
    return float(radius)


# --------------------------------------------------------------------------------------------
# road lines in a box (the maps' road layer)
# --------------------------------------------------------------------------------------------

#: Columns of :func:`read_road_lines` (besides geometry).
ROAD_LINE_COLUMNS = ("link_id", "road_class", "road_name")


def read_road_lines(
    engine: Engine, bbox: tuple[float, float, float, float] | None = None
) -> gpd.GeoDataFrame:
    """The stored roads as lines to draw: one row per road segment, optionally in a box.

    A two-way road is stored as two directed links over one line; it gives one row here (the
    link with the smaller id). On PostGIS the box is answered by the links' GIST index
    (``&&``); on SQLite the links are filtered in process.

    Parameters
    ----------
    engine
        The store.
    bbox
        ``(west, south, east, north)`` in WGS84: only links whose line meets the box.

    Returns
    -------
    geopandas.GeoDataFrame
        :data:`ROAD_LINE_COLUMNS` and LineString geometry (EPSG:4326), by link id; empty when
        no roads are stored.

    Raises
    ------
    InputError
        The box is not four finite numbers with west < east and south < north.
    """
    if bbox is not None and not (
        all(math.isfinite(c) for c in bbox) and bbox[0] < bbox[2] and bbox[1] < bbox[3]
    ):
        msg = f"bbox must be finite west < east and south < north, got {bbox}"
        raise InputError(msg)
    links = ROAD_LINKS
    stmt = select(
        links.c.link_id,
        links.c.u,
        links.c.v,
        links.c.length_m,
        links.c.road_class,
        links.c.road_name,
        links.c.geometry,
    ).order_by(links.c.link_id)
    postgis = detect_backend(engine) == "postgresql"
    if bbox is not None and postgis:
        west, south, east, north = bbox
        box = func.ST_MakeEnvelope(west, south, east, north, SRID)
        # && alone is the index test; ST_Intersects then drops lines only their box meets.
        stmt = stmt.where(links.c.geometry.op("&&")(box), func.ST_Intersects(links.c.geometry, box))
    with translate_errors(engine), engine.connect() as connection:
        rows = connection.execute(stmt).all()
    columns = ["link_id", "u", "v", "length_m", "road_class", "road_name"]
    frame = pd.DataFrame([tuple(r)[:-1] for r in rows], columns=columns)
    gdf = gpd.GeoDataFrame(
        frame, geometry=gpd.GeoSeries([r[-1] for r in rows], crs=WGS84), crs=WGS84
    )
    if bbox is not None and not postgis and len(gdf):
        gdf = gdf[shapely.intersects(gdf.geometry.to_numpy(), shapely.box(*bbox))]
    out = one_line_per_segment(gdf)[[*ROAD_LINE_COLUMNS, "geometry"]]
    out["link_id"] = out["link_id"].astype(np.int64)
    return out
