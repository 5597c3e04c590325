"""Isochrones: the area a travel mode reaches from a point within each time band (pure).

Method: one forward Dijkstra from the point (:mod:`gridgov.analysis.forward_search`, access leg
included, one-way rules kept) gives every road node its time. For a band of ``T`` seconds, each
edge contributes the part of it reached within ``T`` — whole when its end node is reached in time,
else the stretch from its start up to where the time runs out (edges are travelled at constant
speed, so the stretch is proportional) — and the point's own road contributes the stretch around
the point. These reached lines are buffered by ``buffer_m`` and unioned.

Why the reached network rather than a convex or concave hull of reached nodes: a hull fills in
blocks behind a river, a rail line or an expressway without an exit, which a unit cannot reach
in time; the buffered network follows the roads. The buffer stands for the frontage a road
serves: a place within ``buffer_m`` of a reached road is in the band. So every road node reached
within ``T`` lies inside the band, and every point inside lies within ``buffer_m`` of a road
position reached within ``T``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import geopandas as gpd
import numpy as np
import shapely
from pyproj import Transformer
from shapely.ops import substring

from gridgov.analysis import forward_search
from gridgov.errors import InputError
from gridgov.model import TravelMode
from gridgov.network import RoadNetwork
from gridgov.travel_model import TravelModel

#: Default bands (minutes).
DEFAULT_MINUTES: tuple[float, ...] = (2.0, 4.0, 8.0)
#: Default half-width (metres) of the strip around the reached roads.
DEFAULT_BUFFER_M = 50.0


def _check_minutes(minutes: Sequence[float]) -> list[float]:
    try:
        values = [float(m) for m in minutes]
    except (TypeError, ValueError) as exc:
        msg = f"minutes must be numbers, got {list(minutes)!r}"
        raise InputError(msg) from exc
    if not values or any(not (math.isfinite(m) and m > 0) for m in values):
        msg = f"minutes must be positive numbers, got {values}"
        raise InputError(msg)
    return sorted(set(values))


def _edge_lines(travel: RoadNetwork, arrays: forward_search.ModeArrays) -> np.ndarray:
    """Each edge's metric LineString oriented in its direction of travel."""
    links = travel.gdf_links
    metric = links.geometry.to_crs(travel.metric_crs).to_numpy()
    pos = links.reset_index(drop=True).reset_index().set_index("link_id")["index"]
    lines = metric[pos.loc[arrays.edges["link_id"].to_numpy()].to_numpy()]
    flipped = arrays.edges["reversed"].to_numpy(dtype=bool)
    out = lines.copy()
    if flipped.any():
        out[flipped] = shapely.reverse(lines[flipped])
    return np.asarray(out)


def _piece(line: shapely.LineString, start: float, end: float) -> shapely.LineString | None:
    start, end = max(0.0, start), min(1.0, end)
    if end <= start:
        return None
    if start == 0.0 and end == 1.0:
        return line
    return substring(line, start, end, normalized=True)


def isochrones(
    travel: TravelModel,
    lon: float,
    lat: float,
    *,
    minutes: Sequence[float] = DEFAULT_MINUTES,
    mode: TravelMode | str = TravelMode.DRIVE,
    buffer_m: float = DEFAULT_BUFFER_M,
) -> gpd.GeoDataFrame:
    """Travel-time band polygons around a WGS84 point, from the point outwards.

    Parameters
    ----------
    travel
        The road network.
    lon, lat
        The point (a station, a unit, any place), WGS84.
    minutes
        Band limits; each band is cumulative (the 4-minute band holds the 2-minute one).
    mode
        The travel mode.
    buffer_m
        Half-width of the strip around the reached roads (see the module notes).

    Returns
    -------
    geopandas.GeoDataFrame
        One row per band, smallest first: ``minutes``, ``mode``, ``reached_nodes`` (road
        nodes reached within the band), ``area_km2`` and the polygon (EPSG:4326; empty when
        nothing is reached).

    Raises
    ------
    InputError
        Bad minutes or buffer, a mode the network lacks, or a point too far from its roads.
    """
    if not isinstance(travel, RoadNetwork):
        msg = "isochrones need a road network (no roads are stored)"
        raise InputError(msg)
    bands = _check_minutes(minutes)
    if not (math.isfinite(buffer_m) and buffer_m >= 0):
        msg = f"buffer_m must be a number >= 0, got {buffer_m}"
        raise InputError(msg)
    m = TravelMode(mode)
    snapped = travel.snap([lon], [lat], m)
    if bool(snapped.far[0]):
        msg = f"the point ({lon}, {lat}) is too far from any {m.value} road"
        raise InputError(msg)
    arrays = forward_search.mode_arrays(travel, m)
    limit = max(bands) * 60.0
    dist = forward_search.node_times(arrays, snapped, np.zeros(1, dtype=np.int64), limit)[0]
    lines = _edge_lines(travel, arrays)
    start_time = dist[arrays.src]
    _, es, fracs, access_m = snapped.joins()
    access_s = np.asarray(access_m, dtype=float) / arrays.access_ms
    x, y = Transformer.from_crs("EPSG:4326", travel.metric_crs, always_xy=True).transform(lon, lat)
    origin = shapely.Point(x, y)

    rows = []
    for band in bands:
        t = band * 60.0
        reach = np.where(arrays.time_s > 0, (t - start_time) / arrays.time_s, np.inf)
        pieces = [
            p
            for e in np.flatnonzero(reach > 0)
            if (p := _piece(lines[e], 0.0, float(reach[e]))) is not None
        ]
        # The point's own roads: ahead along each joined edge, and back over its twin.
        for e, s, a in zip(es.tolist(), fracs.tolist(), access_s.tolist(), strict=True):
            left = t - a
            if left <= 0:
                continue
            pieces.append(
                shapely.LineString([origin, lines[e].line_interpolate_point(s, normalized=True)])
            )
            ahead = _piece(lines[e], s, s + left / arrays.time_s[e])
            if ahead is not None:
                pieces.append(ahead)
            if arrays.rev[e] >= 0:
                behind = _piece(lines[e], s - left / arrays.rev_time[e], s)
                if behind is not None:
                    pieces.append(behind)
        reached = np.flatnonzero(dist <= forward_search.search_bound(t))
        if pieces:
            network = shapely.multilinestrings(pieces) if len(pieces) > 1 else pieces[0]
            polygon = shapely.union(shapely.buffer(network, buffer_m), origin.buffer(buffer_m))
        else:
            polygon = shapely.Polygon()
        rows.append(
            {
                "minutes": band,
                "mode": m.value,
                "reached_nodes": len(reached),
                "area_km2": float(polygon.area) / 1e6,
                "geometry": polygon,
            }
        )
    out = gpd.GeoDataFrame(rows, geometry="geometry", crs=travel.metric_crs)
    return out.to_crs("EPSG:4326")


__all__ = ["DEFAULT_BUFFER_M", "DEFAULT_MINUTES", "isochrones"]
