"""Footprints of plans, projects and decisions, and which streets and communities they reach.

A footprint is a polygon, a line, or a point with a radius, given as WKT, GeoJSON text or a
vector file (GeoJSON, GeoPackage...), in any CRS gridgov accepts; it is kept in WGS84. Routing
asks every street (and community) the footprint touches, and with a buffer in metres also those
within that distance, measured in the metric CRS (``settings.metric_crs``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely
from pyproj import Transformer
from shapely.geometry.base import BaseGeometry

from gridgov.crs import normalize_crs, to_wgs84
from gridgov.errors import InputError
from gridgov.io import read_vector_wgs84
from gridgov.settings import get_settings

__all__ = ["Routed", "buffer_metres", "read_footprint", "route_footprint"]

_ALLOWED = ("Polygon", "MultiPolygon", "LineString", "MultiLineString", "Point")
_MAX_RADIUS_M = 20_000.0


@dataclass(frozen=True)
class Routed:
    """One street to ask: the communities of it the footprint reaches, and whether the
    footprint itself touches it (False: reached through the buffer only)."""

    street_code: str
    community_codes: tuple[str, ...]
    direct: bool


def read_footprint(
    source: str | Path,
    crs: str | int | None = None,
    radius_m: float | None = None,
    *,
    files: bool = True,
) -> BaseGeometry:
    """Read a footprint into a WGS84 geometry.

    Parameters
    ----------
    source
        WKT (``POLYGON ((...))``), GeoJSON text (a geometry, feature or collection), or the path
        of a vector file (all its features are merged).
    crs
        What the coordinates are (``wgs84``, ``gcj02``, ``bd09``, ``EPSG:n``); text defaults to
        WGS84, a file to its own label.
    radius_m
        Required for a point (the footprint becomes the disc around it); refused otherwise.
    files
        Whether ``source`` may name a file. The API passes False: a caller's text must never
        make the server read a file of its own disk.

    Raises
    ------
    InputError
        Unreadable text or file, an empty or invalid geometry, a point without a radius.
    """
    text = str(source).strip()
    # Without files the disk is not even looked at: a text is parsed as WKT or GeoJSON only.
    is_file = files and (
        isinstance(source, Path)
        or (not text.startswith("{") and bool(Path(text).suffix) and Path(text).exists())
    )
    if is_file:
        frame = read_vector_wgs84(Path(text), crs, what="footprint")
        geom = shapely.union_all(np.asarray(frame.geometry.values))
    else:
        geom = _parse_text(text)
        name = normalize_crs(crs or "wgs84")
        if name != "wgs84":
            geom = shapely.transform(
                geom, lambda xy: np.column_stack(to_wgs84(xy[:, 0], xy[:, 1], name))
            )
    if geom is None or geom.is_empty:
        msg = "the footprint is empty"
        raise InputError(msg)
    if geom.geom_type not in _ALLOWED:
        msg = f"a footprint is a polygon, a line or a point with a radius, not a {geom.geom_type}"
        raise InputError(msg)
    if not geom.is_valid:
        msg = f"the footprint is not a valid geometry: {shapely.is_valid_reason(geom)}"
        raise InputError(msg)
    if geom.geom_type == "Point":
        if radius_m is None:
            msg = "a point footprint needs a radius in metres"
            raise InputError(msg)
        if not 0 < radius_m <= _MAX_RADIUS_M:
            msg = f"the radius must lie in (0, {_MAX_RADIUS_M:g}] metres, not {radius_m:g}"
            raise InputError(msg)
        return buffer_metres(geom, radius_m)
    if radius_m is not None:
        msg = "a radius is for a point footprint; buffer a polygon or line with the buffer instead"
        raise InputError(msg)
    return geom


def _parse_text(text: str) -> BaseGeometry:
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            msg = f"the footprint is not valid GeoJSON: {exc}"
            raise InputError(msg) from exc
        if not isinstance(data, dict):
            msg = "the footprint GeoJSON must be an object"
            raise InputError(msg)
        try:
            if data.get("type") == "FeatureCollection":
                shapes = [shapely.geometry.shape(f["geometry"]) for f in data["features"]]
                return shapely.union_all(shapes) if shapes else shapely.Point()
            if data.get("type") == "Feature":
                data = data["geometry"]
            return shapely.geometry.shape(data)
        except (
            KeyError,
            TypeError,
            ValueError,
            AttributeError,
            shapely.errors.ShapelyError,
        ) as exc:
            msg = f"the footprint GeoJSON is not a geometry: {type(exc).__name__}: {exc}"
            raise InputError(msg) from exc
    try:
        return shapely.from_wkt(text)
    except shapely.errors.GEOSException as exc:
        msg = f"the footprint is neither WKT, GeoJSON nor a readable file: {exc}"
        raise InputError(msg) from exc


def buffer_metres(geom: BaseGeometry, metres: float) -> BaseGeometry:
    """``geom`` (WGS84) grown by ``metres`` in the metric CRS, back in WGS84; as PostGIS's
    ``ST_Transform(ST_Buffer(ST_Transform(g, metric), m), 4326)`` (8 segments a quarter)."""
    if metres <= 0:
        return geom
    metric = get_settings().metric_crs
    forward = Transformer.from_crs("EPSG:4326", metric, always_xy=True)
    back = Transformer.from_crs(metric, "EPSG:4326", always_xy=True)
    projected = shapely.transform(
        geom, lambda xy: np.column_stack(forward.transform(xy[:, 0], xy[:, 1]))
    )
    grown = shapely.buffer(projected, metres, quad_segs=8)
    return shapely.transform(grown, lambda xy: np.column_stack(back.transform(xy[:, 0], xy[:, 1])))


def route_footprint(
    footprint: BaseGeometry, areas: gpd.GeoDataFrame, buffer_m: float = 0.0
) -> list[Routed]:
    """The streets to ask about a footprint, each with the communities it reaches.

    Parameters
    ----------
    footprint
        WGS84.
    areas
        Streets and communities (``code``, ``level``, ``parent_code``, ``geometry``, WGS84).
    buffer_m
        Streets and communities within this distance are asked too.

    Returns
    -------
    list of Routed
        By street code. A street is asked when the (buffered) footprint intersects it.
    """
    if buffer_m < 0:
        msg = f"the buffer must not be negative ({buffer_m:g} m)"
        raise InputError(msg)
    reach = buffer_metres(footprint, buffer_m)
    geoms = np.asarray(areas.geometry.values)
    touched = shapely.intersects(geoms, reach)
    direct = shapely.intersects(geoms, footprint)
    levels = areas["level"].to_numpy()
    codes = areas["code"].astype(str).to_numpy()
    parents = areas["parent_code"].to_numpy()
    streets = {
        str(c): bool(d)
        for c, t, d, lv in zip(codes, touched, direct, levels, strict=True)
        if t and lv == "street"
    }
    communities: dict[str, list[str]] = {s: [] for s in streets}
    for code, hit, level, parent in zip(codes, touched, levels, parents, strict=True):
        if hit and level == "community" and parent in communities:
            communities[str(parent)].append(str(code))
    return [
        Routed(street_code=s, community_codes=tuple(sorted(communities[s])), direct=streets[s])
        for s in sorted(streets)
    ]
