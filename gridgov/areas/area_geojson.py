"""Serve areas to maps: GeoJSON of a level, simplified for the zoom."""

from __future__ import annotations

import math
from typing import Any

import geopandas as gpd
import numpy as np
import shapely
from shapely.geometry import mapping

from gridgov.areas.locator import FloatArray
from gridgov.crs import normalize_crs
from gridgov.io import (
    is_missing,
)
from gridgov.model import Level
from gridgov.settings import get_settings

#: Metres per pixel at zoom 0 on the equator in Web Mercator (256-pixel tiles).
_M_PER_PX_Z0 = 156_543.034


def tolerance_for_zoom(zoom: float, lat: float) -> float:
    """Simplification tolerance (metres) invisible at a zoom level: half a screen pixel."""
    return 0.5 * _M_PER_PX_Z0 * math.cos(math.radians(lat)) / 2.0 ** float(zoom)


def areas_geojson(
    gdf_areas: gpd.GeoDataFrame,
    level: Level | str,
    *,
    bbox: tuple[float, float, float, float] | None = None,
    zoom: float | None = None,
    crs: str = "wgs84",
    limit: int | None = None,
) -> dict[str, Any]:
    """One level's areas as a GeoJSON FeatureCollection, for a map viewport.

    Parameters
    ----------
    gdf_areas
        The hierarchy (EPSG:4326).
    level
        The level to return.
    bbox
        ``(west, south, east, north)`` in WGS84: only areas that intersect it.
    zoom
        The map's zoom: geometry is simplified by :func:`tolerance_for_zoom` (topology kept,
        never emptied); None keeps every vertex.
    crs
        Output coordinates: ``wgs84``, or ``gcj02`` / ``bd09`` for Chinese base maps.
    limit
        At most this many features (``truncated`` says when more matched).

    Returns
    -------
    dict
        A FeatureCollection; each feature's ``id`` is the area code and its properties hold
        code, name, level, parent_code and generated.
    """
    lv = Level(str(level))
    gdf = gdf_areas[gdf_areas["level"].astype(str) == lv.value]
    if bbox is not None:
        west, south, east, north = bbox
        hits = gdf.sindex.query(shapely.box(west, south, east, north), predicate="intersects")
        gdf = gdf.iloc[np.sort(hits)]
    matched = len(gdf)
    if limit is not None:
        gdf = gdf.iloc[:limit]
    geoms = gdf.geometry.to_numpy()
    if zoom is not None and len(gdf):
        lat = float(np.mean(gdf.total_bounds[[1, 3]]))
        metric_crs = get_settings().metric_crs
        metric = gpd.GeoSeries(geoms, crs="EPSG:4326").to_crs(metric_crs).to_numpy()
        simple = shapely.simplify(metric, tolerance_for_zoom(zoom, lat), preserve_topology=True)
        simple = np.where(shapely.is_empty(simple), metric, simple)
        geoms = gpd.GeoSeries(simple, crs=metric_crs).to_crs("EPSG:4326").to_numpy()
    name = normalize_crs(crs)
    if name != "wgs84":
        from gridgov.crs import from_wgs84

        def convert(coords: FloatArray) -> FloatArray:
            x, y = from_wgs84(coords[:, 0], coords[:, 1], name)
            return np.column_stack([x, y])

        geoms = shapely.transform(geoms, convert)
    # Six decimals is about 0.1 m: finer digits only make the answer bigger.
    geoms = shapely.transform(geoms, lambda coords: np.round(coords, 6))
    features = []
    for row, geom in zip(gdf.itertuples(index=False), geoms, strict=True):
        features.append(
            {
                "type": "Feature",
                "id": row.code,
                "geometry": mapping(geom),
                "properties": {
                    "code": row.code,
                    "name": row.name,
                    "level": lv.value,
                    "parent_code": _none_if_missing(getattr(row, "parent_code", None)),
                    "generated": bool(getattr(row, "generated", False)),
                },
            }
        )
    return {
        "type": "FeatureCollection",
        "features": features,
        "matched": matched,
        "truncated": matched > len(features),
        "crs": name,
    }


def _none_if_missing(value: Any) -> Any:
    return None if is_missing(value) else value
