"""Neighbouring areas of one level: which share a boundary."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import shapely

from gridgov.areas.area_checks import _Metric
from gridgov.areas.locator import _METRES_PER_DEGREE
from gridgov.model import Level
from gridgov.settings import get_settings


def street_adjacency(
    gdf_areas: gpd.GeoDataFrame,
    level: Level | str = Level.STREET,
    *,
    tolerance_m: float = 0.01,
    min_shared_m: float = 1.0,
) -> dict[str, list[str]]:
    """Neighbours of every area of one level: codes of same-level areas sharing a border.

    Two areas are neighbours when their boundaries run together (within ``tolerance_m``) for
    more than ``min_shared_m`` metres, i.e. they share a border of positive length. Areas
    touching at a single point are not neighbours: nobody crosses between them there. The
    tolerance absorbs the floating-point T-junctions of real data, where one area's border
    has a vertex the neighbour's straight edge passes only approximately through, so an exact
    DE-9IM test would see the borders cross at points instead of sharing a line.

    Returns
    -------
    ``{code: sorted neighbour codes}`` with every area of the level as a key, keys sorted.
    """
    lv = Level(level)
    part = gdf_areas[gdf_areas["level"] == lv.value]
    if part.crs is not None and part.crs.to_epsg() != 4326:
        part = part.to_crs("EPSG:4326")
    codes = part["code"].astype(str).to_numpy(dtype=object)
    geoms = np.asarray(part.geometry.values, dtype=object)
    ok = ~(shapely.is_missing(geoms) | shapely.is_empty(geoms))
    out: dict[str, set[str]] = {str(c): set() for c in sorted(codes)}
    geoms, codes = geoms[ok], codes[ok]
    if len(geoms) >= 2:
        tol = tolerance_m / _METRES_PER_DEGREE
        tree = shapely.STRtree(geoms)
        left, right = tree.query(geoms, predicate="dwithin", distance=tol)
        keep = left < right
        left, right = left[keep], right[keep]
        rings = shapely.boundary(geoms)
        bands = shapely.buffer(rings, tol, quad_segs=1)
        shared = shapely.intersection(rings[left], bands[right])
        metres = _Metric(get_settings().metric_crs).length(shared)
        for i in np.flatnonzero(metres > min_shared_m):
            a, b = str(codes[left[i]]), str(codes[right[i]])
            if a != b:
                out[a].add(b)
                out[b].add(a)
    return {k: sorted(v) for k, v in out.items()}
