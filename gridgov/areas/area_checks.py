"""Validate an area hierarchy: attributes, geometries, overlaps, children outside their parent
and gaps, each a located problem."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import geopandas as gpd
import numpy as np
import numpy.typing as npt
import pandas as pd
import shapely
from pyproj import Transformer

from gridgov.areas.locator import FloatArray, IntArray
from gridgov.errors import (
    AreaValidationError,
    Problem,
)
from gridgov.io import (
    is_missing,
)
from gridgov.model import LEVELS, Level
from gridgov.settings import get_settings

_POLYGONAL = ("Polygon", "MultiPolygon")
_REASON_POINT = re.compile(r"\[\s*([-+0-9.eE]+)\s+([-+0-9.eE]+)")


@dataclass
class _Checked:
    """Arrays shared by the validation passes (one entry per input row)."""

    codes: npt.NDArray[np.object_]
    levels: npt.NDArray[np.object_]
    parents: npt.NDArray[np.object_]
    geoms: npt.NDArray[np.object_]
    topo: npt.NDArray[np.object_]  # polygonal geometry for topology checks, or None
    read_errors: npt.NDArray[np.object_]  # why a file's geometry could not be parsed, or None
    code_errors: npt.NDArray[np.object_]  # why a file's code cannot be trusted, or None
    row_of: dict[str, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)


def validate_areas(
    gdf_areas: gpd.GeoDataFrame,
    *,
    overlap_tolerance_m2: float = 1.0,
    gap_tolerance_m2: float = 1.0,
    outside_tolerance_m2: float = 1.0,
) -> list[Problem]:
    """Check an area hierarchy and return every problem found (empty when it is sound).

    Kinds reported: ``unknown_level``, ``bad_code`` (a code the file stored as a float that
    cannot hold it exactly; see :func:`read_areas`), ``duplicate_code``, ``invalid_geometry``
    (empty, not a polygon, self-intersecting, too few points, ...), ``prefix_mismatch``
    (wrong code length for the level, or the code does not start with its parent's prefix),
    ``missing_parent``, ``parent_level`` (the parent is not at the level above), ``overlap``
    (two areas of one level share more than ``overlap_tolerance_m2``), ``gap`` (a parent not
    covered by its children, or the district not covered by a whole level, by more than
    ``gap_tolerance_m2``) and ``outside_parent`` (a child reaching more than
    ``outside_tolerance_m2`` out of its parent).

    Areas are measured in the metric CRS of the settings (EPSG:32648). Each problem carries a
    WGS84 point inside the offending region. Invalid geometries are repaired with
    ``shapely.make_valid`` for the topology checks only, so one broken polygon cannot hide the
    other problems. The input is not modified.
    """
    gdf = gdf_areas
    if gdf.crs is not None and gdf.crs.to_epsg() != 4326:
        gdf = gdf.to_crs("EPSG:4326")
    checked = _Checked(
        codes=np.array(["" if is_missing(c) else str(c) for c in gdf["code"]], dtype=object),
        levels=np.array([str(v) for v in gdf["level"]], dtype=object),
        parents=np.array(
            [None if is_missing(p) else str(p) for p in gdf["parent_code"]], dtype=object
        )
        if "parent_code" in gdf.columns
        else np.full(len(gdf), None, dtype=object),
        geoms=np.asarray(gdf.geometry.values, dtype=object),
        topo=np.full(len(gdf), None, dtype=object),
        read_errors=_optional_text(gdf, "geometry_error"),
        code_errors=_optional_text(gdf, "code_error"),
    )
    _check_attributes(checked)
    _check_geometries(checked)
    metric = _Metric(get_settings().metric_crs)
    _check_overlaps(checked, metric, overlap_tolerance_m2)
    _check_outside(checked, metric, outside_tolerance_m2)
    _check_gaps(checked, metric, gap_tolerance_m2)
    return checked.problems


def _optional_text(gdf: gpd.GeoDataFrame, column: str) -> npt.NDArray[np.object_]:
    if column not in gdf.columns:
        return np.full(len(gdf), None, dtype=object)
    return np.array([None if is_missing(v) else str(v) for v in gdf[column]], dtype=object)


def check_areas(gdf_areas: gpd.GeoDataFrame, **tolerances: float) -> None:
    """Raise :class:`AreaValidationError` listing every problem :func:`validate_areas` finds.

    ``tolerances`` are passed on to :func:`validate_areas`.
    """
    problems = validate_areas(gdf_areas, **tolerances)
    if problems:
        raise AreaValidationError(problems)


class _Metric:
    """Square-metre areas of degree geometries, measured in the metric CRS.

    Polygon edges are straight in WGS84 (as stored, and as PostGIS sees them), so topology
    runs in degrees. Projecting a piece vertex by vertex would bend its edges: a long rounding
    sliver (1e-7 m²) between two edges that are straight in degrees would swell to hundreds of
    m². Instead each degree area is scaled by the metric CRS's local area factor (the
    Jacobian determinant at the piece's centroid), which is exact to well under 0.1% over the
    few kilometres a piece can span.
    """

    _STEP_DEG = 1e-4

    def __init__(self, metric_crs: str) -> None:
        self._fwd = Transformer.from_crs("EPSG:4326", metric_crs, always_xy=True)

    def area(self, geoms: npt.NDArray[np.object_]) -> FloatArray:
        if len(geoms) == 0:
            return np.zeros(0)
        empty = shapely.is_empty(geoms) | shapely.is_missing(geoms)
        centre = shapely.centroid(np.where(empty, shapely.Point(0, 0), geoms))
        lon, lat = shapely.get_x(centre), shapely.get_y(centre)
        e = self._STEP_DEG
        xe, ye = self._fwd.transform(lon + e, lat)
        xw, yw = self._fwd.transform(lon - e, lat)
        xn, yn = self._fwd.transform(lon, lat + e)
        xs, ys = self._fwd.transform(lon, lat - e)
        det = ((xe - xw) * (yn - ys) - (xn - xs) * (ye - yw)) / (4 * e * e)
        area = np.where(empty, 0.0, shapely.area(geoms))
        return np.asarray(area * np.abs(det), dtype=float)

    def length(self, geoms: npt.NDArray[np.object_]) -> FloatArray:
        """Metre lengths of degree lines (projected vertex by vertex: lines do not bend)."""
        if len(geoms) == 0:
            return np.zeros(0)

        def fwd(coords: FloatArray) -> FloatArray:
            x, y = self._fwd.transform(coords[:, 0], coords[:, 1])
            return np.column_stack([x, y])

        return np.asarray(shapely.length(shapely.transform(geoms, fwd)), dtype=float)


def _where(geom: Any) -> tuple[float | None, float | None]:
    if geom is None or shapely.is_empty(geom):
        return None, None
    try:
        pt = shapely.point_on_surface(geom)
    except shapely.errors.GEOSException:  # broken geometry: any point near it will do
        pt = shapely.centroid(shapely.envelope(geom))
    return float(shapely.get_x(pt)), float(shapely.get_y(pt))


def _check_attributes(c: _Checked) -> None:
    known = {lv.value for lv in LEVELS}
    for i, (code, level) in enumerate(zip(c.codes, c.levels, strict=True)):
        if level not in known:
            lon, lat = _where(c.geoms[i])
            msg = f"unknown level {level!r}; expected one of {', '.join(sorted(known))}"
            c.problems.append(Problem("unknown_level", code, msg, lon, lat))
    bad = c.code_errors != None  # noqa: E711
    for k in np.flatnonzero(bad):
        c.problems.append(Problem("bad_code", c.codes[k], c.code_errors[k], *_where(c.geoms[k])))
    # Untrustworthy codes would only add phantom duplicates and prefix errors.
    counts = pd.Series(c.codes[~bad]).value_counts()
    for code, n in counts[counts > 1].items():
        first = int(np.flatnonzero(c.codes == code)[0])
        lon, lat = _where(c.geoms[first])
        c.problems.append(Problem("duplicate_code", str(code), f"code appears {n} times", lon, lat))
    for i, code in enumerate(c.codes):
        c.row_of.setdefault(code, i)
    for i, (code, level, parent) in enumerate(zip(c.codes, c.levels, c.parents, strict=True)):
        if level not in known or bad[i]:
            continue
        lv = Level(level)
        if not (code.isdigit() and len(code) == lv.code_length):
            msg = f"a {lv.value} code has {lv.code_length} digits; {code!r} has {len(code)}"
            c.problems.append(Problem("prefix_mismatch", code, msg, *_where(c.geoms[i])))
        if lv.parent is None:
            continue
        if parent is None or parent not in c.row_of:
            what = "no parent code" if parent is None else f"parent {parent} not found"
            c.problems.append(Problem("missing_parent", code, what, *_where(c.geoms[i])))
            continue
        parent_level = c.levels[c.row_of[parent]]
        if parent_level != lv.parent.value:
            msg = f"parent {parent} is a {parent_level}, not a {lv.parent.value}"
            c.problems.append(Problem("parent_level", code, msg, *_where(c.geoms[i])))
            continue
        n = lv.parent.prefix_length
        if code[:n] != parent[:n]:
            msg = f"code does not start with {parent[:n]}, the first {n} digits of parent {parent}"
            c.problems.append(Problem("prefix_mismatch", code, msg, *_where(c.geoms[i])))


def _check_geometries(c: _Checked) -> None:
    for i, geom in enumerate(c.geoms):
        code = c.codes[i]
        if c.read_errors[i] is not None:
            # The file's geometry could not be parsed as given (read_areas kept a repair, if
            # any, so that the other checks and a location are still available).
            c.problems.append(Problem("invalid_geometry", code, c.read_errors[i], *_where(geom)))
        if geom is None or shapely.is_empty(geom):
            c.problems.append(Problem("invalid_geometry", code, "empty geometry"))
            continue
        kind = geom.geom_type
        if kind not in _POLYGONAL:
            lon, lat = _where(geom)
            msg = f"not a polygon ({kind})"
            c.problems.append(Problem("invalid_geometry", code, msg, lon, lat))
            continue
        if shapely.is_valid(geom):
            c.topo[i] = geom
            continue
        reason = str(shapely.is_valid_reason(geom))
        match = _REASON_POINT.search(reason)
        if match:
            lon, lat = float(match.group(1)), float(match.group(2))
        else:
            lon, lat = _where(shapely.envelope(geom))
        c.problems.append(Problem("invalid_geometry", code, reason, lon, lat))
        try:
            fixed = shapely.make_valid(geom, method="structure", keep_collapsed=False)
        except shapely.errors.GEOSException:
            fixed = None
        if fixed is not None and not shapely.is_empty(fixed):
            c.topo[i] = fixed


def _level_rows(c: _Checked, level: Level) -> IntArray:
    return np.flatnonzero((c.levels == level.value) & (c.topo != None))  # noqa: E711


def _check_overlaps(c: _Checked, metric: _Metric, tolerance: float) -> None:
    for level in LEVELS:
        rows = _level_rows(c, level)
        if len(rows) < 2:
            continue
        geoms = c.topo[rows]
        # A valid coverage (edges matched vertex for vertex) cannot overlap: skip the pairs.
        if shapely.coverage_is_valid(geoms):
            continue
        tree = shapely.STRtree(geoms)
        left, right = tree.query(geoms, predicate="intersects")
        keep = left < right
        left, right = left[keep], right[keep]
        if len(left) == 0:
            continue
        inner = shapely.relate_pattern(geoms[left], geoms[right], "T********")
        left, right = left[inner], right[inner]
        pieces = shapely.intersection(geoms[left], geoms[right])
        areas = metric.area(pieces)
        for k in np.flatnonzero(areas > tolerance):
            a, b = c.codes[rows[left[k]]], c.codes[rows[right[k]]]
            lo, hi = sorted((a, b))
            lon, lat = _where(pieces[k])
            msg = f"overlaps {level.value} {hi} by {areas[k]:.1f} m²"
            c.problems.append(Problem("overlap", lo, msg, lon, lat))


def _parent_rows(c: _Checked, rows: IntArray) -> IntArray:
    """Row of each child's parent at the level above, or -1."""
    out = np.full(len(rows), -1, dtype=np.int64)
    for k, i in enumerate(rows):
        lv = Level(c.levels[i])
        p = c.row_of.get(c.parents[i]) if c.parents[i] is not None else None
        if (
            p is not None
            and lv.parent is not None
            and c.levels[p] == lv.parent.value
            and c.topo[p] is not None
        ):
            out[k] = p
    return out


def _check_outside(c: _Checked, metric: _Metric, tolerance: float) -> None:
    for level in LEVELS[1:]:
        rows = _level_rows(c, level)
        parents = _parent_rows(c, rows)
        has = parents >= 0
        rows, parents = rows[has], parents[has]
        if len(rows) == 0:
            continue
        child, parent = c.topo[rows], c.topo[parents]
        shapely.prepare(parent)
        inside = shapely.covers(parent, child)
        idx = np.flatnonzero(~inside)
        if len(idx) == 0:
            continue
        pieces = shapely.difference(child[idx], parent[idx])
        areas = metric.area(pieces)
        for k in np.flatnonzero(areas > tolerance):
            i = rows[idx[k]]
            lon, lat = _where(pieces[k])
            msg = f"{areas[k]:.1f} m² lies outside parent {c.parents[i]}"
            c.problems.append(Problem("outside_parent", c.codes[i], msg, lon, lat))


def _gap_pieces(
    container: Any, cover: Any, metric: _Metric, tolerance: float
) -> list[tuple[Any, float]]:
    missing = shapely.difference(container, cover) if cover is not None else container
    if shapely.is_empty(missing):
        return []
    parts = shapely.get_parts(missing)
    parts = parts[shapely.get_type_id(parts) == 3]  # polygons only; slivers of lines are nothing
    areas = metric.area(parts)
    return [(parts[k], float(areas[k])) for k in np.flatnonzero(areas > tolerance)]


def _union(geoms: npt.NDArray[np.object_]) -> Any:
    if len(geoms) == 0:
        return None
    if len(geoms) == 1:
        return geoms[0]
    # coverage_union is exact and much faster when the children tile without overlaps.
    if shapely.coverage_is_valid(geoms):
        return shapely.coverage_union_all(geoms)
    return shapely.union_all(geoms)


def _check_gaps(c: _Checked, metric: _Metric, tolerance: float) -> None:
    districts = _level_rows(c, Level.DISTRICT)
    # A region missing at one level is missing at every finer level too; report it once.
    found: list[Any] = []
    for level in LEVELS[1:]:
        rows = _level_rows(c, level)
        if len(rows) == 0:
            continue
        parent_level = level.parent
        assert parent_level is not None
        parents = _parent_rows(c, rows)
        groups: dict[int, list[int]] = {}
        for child, parent in zip(rows, parents, strict=True):
            groups.setdefault(int(parent), []).append(int(child))
        group_unions: list[Any] = []
        for p in _level_rows(c, parent_level):
            children = groups.get(int(p), [])
            cover = _union(c.topo[children])
            if cover is not None:
                group_unions.append(cover)
            for piece, area in _gap_pieces(c.topo[p], cover, metric, tolerance):
                found.append(piece)
                lon, lat = _where(piece)
                msg = f"{area:.1f} m² not covered by any of its {len(children)} {level.value}(s)"
                c.problems.append(Problem("gap", c.codes[p], msg, lon, lat))
        if parent_level is Level.DISTRICT or len(districts) == 0:
            continue  # the district's own children were just checked against it
        orphans = [c.topo[i] for i in groups.get(-1, [])]
        level_cover = shapely.union_all(np.array(group_unions + orphans, dtype=object))
        reported = shapely.union_all(np.array(found, dtype=object)) if found else None
        for d in districts:
            for piece, area in _gap_pieces(c.topo[d], level_cover, metric, tolerance):
                rest = shapely.difference(piece, reported) if reported is not None else piece
                if metric.area(np.array([rest], dtype=object))[0] <= tolerance:
                    continue  # already reported, inside a parent or at a coarser level
                found.append(rest)
                lon, lat = _where(rest)
                msg = f"{area:.1f} m² of the district is not covered by any {level.value}"
                c.problems.append(Problem("gap", c.codes[d], msg, lon, lat))
