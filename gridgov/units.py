"""Offices and units from a user's files: reading, normalising, and checking them.

The reference district brings its own (``gridgov.reference``); this module is for a street
that loads its real stations. Checks run against the area hierarchy they will be loaded with,
and every problem is collected before one error is raised.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from gridgov.errors import DataFileError, Problem, UnitValidationError
from gridgov.io import (
    ambiguous_layers,
    frame_to_wgs84,
    is_missing,
    normalize_code,
    read_vector,
    reject_geometry_errors,
    to_bool,
)
from gridgov.model import (
    OFFICE_COLUMNS,
    UNIT_COLUMNS,
    ForceKind,
    Level,
    TravelMode,
    UnitStatus,
)

UNIT_REQUIRED_COLUMNS = ("unit_id", "name", "kind", "department", "street_code", "travel_mode")
OFFICE_REQUIRED_COLUMNS = ("office_id", "name", "kind", "department", "street_code")
_KINDS = {str(k) for k in ForceKind}
_MODES = {str(m) for m in TravelMode}
_STATUSES = {str(s) for s in UnitStatus}
_UNIT_DEFAULTS: dict[str, Any] = {
    "office_id": None,
    "status": str(UnitStatus.AVAILABLE),
    "on_duty": True,
    "grid_code": None,
    "generated": False,
}


def read_units(
    path: str | Path, crs: str | int | None = None, *, layer: str | int | None = None
) -> gpd.GeoDataFrame:
    """Read a units file (GeoJSON, GeoPackage, GeoParquet, Shapefile) into a units frame.

    Parameters
    ----------
    path
        The file. Point geometry; a unit without a known position may have none.
    crs
        What the coordinates really are (``wgs84``, ``gcj02``, ``bd09`` or EPSG). ``None``
        trusts the file's own label.
    layer
        The layer of a multi-layer file (name or position). ``None`` picks the layer named
        ``units``, else the one point layer, else the one point layer with the required
        columns; several candidates are refused with the layers listed.

    Returns
    -------
    A new GeoDataFrame with :data:`gridgov.model.UNIT_COLUMNS` (``position_time`` kept when
    present) in EPSG:4326. ``status`` defaults to available, ``on_duty`` to true. Codes are
    strings with the exact digits the file stores (integer columns with nulls included).

    Raises
    ------
    DataFileError
        The file is missing or unreadable, lacks a required column, holds a geometry that
        cannot be parsed, has no layer ``layer`` or several candidate layers (the message names
        the file and lists its layers).
    CRSError
        No CRS label and none declared, an unknown CRS, or impossible coordinates (the message
        names the file and the CRS used).
    """
    gdf = _read(path, crs, UNIT_REQUIRED_COLUMNS, "units", layer)
    for column, default in _UNIT_DEFAULTS.items():
        if column not in gdf.columns:
            gdf[column] = default
    keep = [*UNIT_COLUMNS, *(["position_time"] if "position_time" in gdf.columns else [])]
    out = gdf[[*keep, "geometry"]].copy()
    for column in ("unit_id", "office_id", "street_code", "grid_code"):
        out[column] = _codes(out[column], str(path), column)
    out["on_duty"] = [True if is_missing(v) else to_bool(v) for v in out["on_duty"]]
    out["generated"] = out["generated"].map(to_bool)
    return out


def read_offices(
    path: str | Path, crs: str | int | None = None, *, layer: str | int | None = None
) -> gpd.GeoDataFrame:
    """Read an offices file into an offices frame (see :func:`read_units`; of several point
    layers, the one named ``offices`` is the default)."""
    gdf = _read(path, crs, OFFICE_REQUIRED_COLUMNS, "offices", layer)
    if "generated" not in gdf.columns:
        gdf["generated"] = False
    out = gdf[[*OFFICE_COLUMNS, "geometry"]].copy()
    for column in ("office_id", "street_code"):
        out[column] = _codes(out[column], str(path), column)
    out["generated"] = out["generated"].map(to_bool)
    return out


def validate_units(
    gdf_units: gpd.GeoDataFrame | None,
    gdf_areas: gpd.GeoDataFrame,
    gdf_offices: gpd.GeoDataFrame | None = None,
) -> list[Problem]:
    """Check offices and units against each other and the area hierarchy they go with.

    Parameters
    ----------
    gdf_units
        Units to check, or None to check offices alone.
    gdf_areas
        The hierarchy they will be stored with.
    gdf_offices
        The offices stored with them. None means no offices, so a unit naming an office is a
        problem: the store would have nothing to link it to.

    Returns
    -------
    list of Problem
        Every problem found. Kinds: ``duplicate_id``, ``unknown_kind``,
        ``unknown_travel_mode``, ``unknown_status``, ``unknown_street`` (the commanding street
        is not a street of the areas), ``unknown_grid``, ``unknown_office``, ``not_a_point``,
        ``outside_district`` (a position outside every area: almost always a wrong CRS or a
        swapped lon/lat). A unit may stand outside its own street (a patrol crosses borders),
        so that is not a problem; a unit may have no position (it cannot be dispatched then).
    """
    streets = set(gdf_areas.loc[gdf_areas["level"] == str(Level.STREET), "code"])
    grids = set(gdf_areas.loc[gdf_areas["level"] == str(Level.GRID), "code"])
    district = shapely.union_all(
        np.asarray(gdf_areas.loc[gdf_areas["level"] == str(Level.DISTRICT)].geometry.values)
    )
    shapely.prepare(district)
    problems: list[Problem] = []
    office_ids: set[str] = set()
    if gdf_offices is not None:
        office_ids = {c for c in gdf_offices["office_id"] if c is not None}
        problems += _common_problems(gdf_offices, "office_id", streets, district)
    if gdf_units is None:
        return problems
    problems += _common_problems(gdf_units, "unit_id", streets, district)
    for row, geom in zip(gdf_units.itertuples(index=False), gdf_units.geometry, strict=True):
        where = _where(geom)
        if str(row.travel_mode) not in _MODES:
            msg = f"travel mode {row.travel_mode!r} is not one of {', '.join(TravelMode)}"
            problems.append(Problem("unknown_travel_mode", str(row.unit_id), msg, *where))
        if str(row.status) not in _STATUSES:
            msg = f"status {row.status!r} is not one of {', '.join(UnitStatus)}"
            problems.append(Problem("unknown_status", str(row.unit_id), msg, *where))
        grid_code = _code(row.grid_code)
        if grid_code is not None and grid_code not in grids:
            msg = f"grid {grid_code} is not a grid of the loaded areas"
            problems.append(Problem("unknown_grid", str(row.unit_id), msg, *where))
        office_id = _code(row.office_id)
        if office_id is not None and office_id not in office_ids:
            msg = f"office {office_id} is not among the offices loaded with it"
            problems.append(Problem("unknown_office", str(row.unit_id), msg, *where))
    return problems


def check_units(
    gdf_units: gpd.GeoDataFrame | None,
    gdf_areas: gpd.GeoDataFrame,
    gdf_offices: gpd.GeoDataFrame | None = None,
) -> None:
    """Raise :class:`UnitValidationError` listing every problem :func:`validate_units` finds."""
    problems = validate_units(gdf_units, gdf_areas, gdf_offices)
    if problems:
        raise UnitValidationError(problems)


def _common_problems(
    gdf: gpd.GeoDataFrame, id_column: str, streets: set[str], district: Any
) -> list[Problem]:
    problems: list[Problem] = []
    ids = gdf[id_column].astype(str)
    for ident in sorted(set(ids[ids.duplicated()])):
        problems.append(Problem("duplicate_id", ident, f"{id_column} {ident} appears twice"))
    geoms = np.asarray(gdf.geometry.values)
    placed = ~(shapely.is_missing(geoms) | shapely.is_empty(geoms))
    inside = np.zeros(len(geoms), dtype=bool)
    if placed.any() and district is not None and not shapely.is_empty(district):
        inside[placed] = shapely.intersects(district, geoms[placed])
    for i, (row, geom) in enumerate(zip(gdf.itertuples(index=False), geoms, strict=True)):
        ident = str(getattr(row, id_column))
        where = _where(geom)
        if str(row.kind) not in _KINDS:
            msg = f"kind {row.kind!r} is not one of {', '.join(ForceKind)}"
            problems.append(Problem("unknown_kind", ident, msg, *where))
        if _code(row.street_code) not in streets:
            msg = f"commanding street {row.street_code} is not a street of the loaded areas"
            problems.append(Problem("unknown_street", ident, msg, *where))
        if placed[i] and geom.geom_type != "Point":
            msg = f"a position must be a Point, not a {geom.geom_type}"
            problems.append(Problem("not_a_point", ident, msg, *where))
        elif placed[i] and not inside[i]:
            msg = "stands outside the district (a wrong CRS, or longitude and latitude swapped?)"
            problems.append(Problem("outside_district", ident, msg, *where))
    return problems


def _read(
    path: str | Path,
    crs: str | int | None,
    required: Sequence[str],
    what: str,
    layer: str | int | None,
) -> gpd.GeoDataFrame:
    source = Path(path)
    layers = read_vector(source, layer=layer, geometry_kind="Point", what=what)
    if layer is None and len(layers) > 1:
        # A district export holds offices and units as two point layers: take the one named so.
        named = [(name, frame) for name, frame in layers if name == what]
        complete = [(n, f) for n, f in layers if all(c in f.columns for c in required)]
        layers = named or complete
        if len(layers) != 1:
            why = (
                f"{len(layers)} of its point layers have the columns {', '.join(required)}"
                f" and none is named {what!r}"
            )
            raise ambiguous_layers(source, what, why)
    frames = []
    for name, frame in layers:
        where = f"{source} (layer {name!r})" if len(layers) > 1 else str(source)
        missing = [c for c in required if c not in frame.columns]
        if missing:
            msg = f"{where}: missing required column(s) {', '.join(missing)}"
            raise DataFileError(msg)
        reject_geometry_errors(frame, where)
        frames.append(frame_to_wgs84(frame, crs, where))
    gdf = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
    return gpd.GeoDataFrame(gdf, geometry="geometry", crs="EPSG:4326")


def _codes(values: pd.Series, where: str, column: str) -> pd.Series:
    """Codes as exact text; a code the file holds as an inexact float is an error, not a guess."""
    out, bad = [], []
    for value in values:
        code, error = normalize_code(value)
        out.append(code)
        if error:
            bad.append(error)
    if bad:
        msg = f"{where}: column {column!r} has {len(bad)} code(s) that lost digits: {bad[0]}"
        raise DataFileError(msg)
    # object dtype keeps a missing code None (an inferred string column would make it NaN)
    return pd.Series(out, index=values.index, dtype=object)


def _code(value: Any) -> str | None:
    return normalize_code(value)[0]


def _where(geom: Any) -> tuple[float | None, float | None]:
    if geom is None or shapely.is_empty(geom):
        return None, None
    point = shapely.point_on_surface(geom)
    return float(point.x), float(point.y)
