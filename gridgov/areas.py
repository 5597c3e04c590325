"""The area hierarchy: load it, validate it, locate points in it, and find neighbours.

An areas GeoDataFrame holds every level (district, street, community, grid, micro-grid) in one
frame with the columns ``code``, ``name``, ``level``, ``parent_code``, ``generated``,
``name_source`` and a Polygon/MultiPolygon ``geometry`` in EPSG:4326.

Locating is the hot path of the whole system (every incident, every unit position). A
:class:`Locator` is cheap to build: a level answers its first points exactly through an STRtree
and a closed-polygon test, and only once it has answered enough points to pay for it
(``RASTER_AFTER_POINTS``) does it build a raster of area labels, which then answers most points
by lookup and sends those in cells crossed by a boundary to the exact test. Every path applies
the same boundary rule: a point on a shared edge belongs to the area with the smallest code among
those whose closure contains it.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import numpy.typing as npt
import pandas as pd
import shapely
from pyproj import Transformer
from shapely.geometry import mapping

from gridgov.crs import normalize_crs, to_wgs84
from gridgov.errors import (
    AreaValidationError,
    DataFileError,
    OutsideDistrictError,
    Problem,
)
from gridgov.io import (
    ambiguous_layers,
    frame_to_wgs84,
    is_missing,
    normalize_code,
    read_vector,
    to_bool,
)
from gridgov.model import LEVELS, Level
from gridgov.settings import get_settings

__all__ = [
    "DEFAULT_COLUMN_ALIASES",
    "Locator",
    "areas_geojson",
    "build_locator",
    "check_areas",
    "read_areas",
    "street_adjacency",
    "tolerance_for_zoom",
    "validate_areas",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: Header names recognised without a ``columns`` mapping (compared case-insensitively).
DEFAULT_COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    "code": ("code", "area_code", "adcode", "编码", "代码", "区划代码", "行政区划代码", "网格编码"),
    "name": ("name", "area_name", "名称", "名字", "区划名称", "网格名称"),
    "level": ("level", "area_level", "层级", "级别"),
    "parent_code": (
        "parent_code",
        "parent",
        "parentcode",
        "parent_id",
        "上级编码",
        "上级代码",
        "父级编码",
        "父编码",
    ),
    "generated": ("generated", "是否生成"),
}
REQUIRED_COLUMNS = ("code", "name", "level")

# Level names as Chinese data writes them; English names are matched after lower-casing.
_LEVEL_ALIASES: dict[str, str] = {
    "区": "district",
    "区县": "district",
    "县": "district",
    "街道": "street",
    "镇": "street",
    "乡": "street",
    "社区": "community",
    "村": "community",
    "网格": "grid",
    "微网格": "microgrid",
    "微网实格": "microgrid",
    "micro-grid": "microgrid",
    "micro_grid": "microgrid",
}
_POLYGONAL = ("Polygon", "MultiPolygon")
_REASON_POINT = re.compile(r"\[\s*([-+0-9.eE]+)\s+([-+0-9.eE]+)")


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def read_areas(
    paths: str | Path | Iterable[str | Path],
    crs: str | int | None = None,
    *,
    layer: str | int | None = None,
    columns: Mapping[str, str] | None = None,
) -> gpd.GeoDataFrame:
    """Read an area hierarchy from one or many files into one areas GeoDataFrame.

    Parameters
    ----------
    paths
        One path or several; GeoJSON, GeoPackage, Shapefile, GeoParquet (``.parquet``) or any
        other format GDAL reads. The files are concatenated in order.
    crs
        ``None`` (default) trusts each file's own CRS label (GeoJSON is WGS84 by definition); a
        file without one is an error asking to declare it. A declared CRS (``wgs84``,
        ``gcj02``, ``bd09`` or an EPSG code) overrides every file's label, because GCJ-02 data
        is routinely labelled EPSG:4326.
    layer
        The layer to read from a multi-layer source (name or position). ``None`` picks by
        :func:`choose_area_layers`: a layer named ``areas``, else the one polygon layer with
        the area columns, else several polygon layers that each hold their own levels (one
        hierarchy split by level); anything else is refused with the layers listed. A
        single-layer file is read whatever its type, so validation can say what is wrong.
    columns
        Renames applied before anything else, from the file's header to gridgov's, as in
        ``{"CODE": "code", "NAME": "name", "TYPE": "level", "UP": "parent_code"}``. Headers not
        named here are matched against :data:`DEFAULT_COLUMN_ALIASES` (``code``/``编码``,
        ``name``/``名称``, ``level``/``层级``, ``parent_code``/``parent``/``上级编码`` ...).

    Returns
    -------
    A new GeoDataFrame with :data:`gridgov.model.AREA_COLUMNS` and geometry in EPSG:4326. Codes
    are strings (integer codes become their exact digits, also when a column has nulls or a
    Shapefile field is wider than 18 digits), levels are lower-cased (Chinese level names map
    to the English ones), ``generated`` defaults to False. A code stored as a floating-point
    number that cannot hold it exactly is kept as written, with a ``code_error`` column that
    :func:`validate_areas` reports as ``bad_code``; digits are never guessed.

    Raises
    ------
    DataFileError
        A file is missing or unreadable (the message names it), lacks required columns
        (``code``, ``name``, ``level``; the message names those missing), has no layer
        ``layer``, or has several layers none of which can be told to be the areas (the
        message lists them).
    CRSError
        The CRS is unknown, missing (no label and none declared), or gives impossible
        longitudes/latitudes; the message names the file and the CRS used.
    """
    if isinstance(paths, str | Path):
        paths = [paths]
    path_list = [Path(p) for p in paths]
    if not path_list:
        msg = "no area files given"
        raise DataFileError(msg)
    frames = []
    for path in path_list:
        layers = read_vector(path, layer=layer, geometry_kind="Polygon", what="area")
        if layer is None and len(layers) > 1:
            layers = choose_area_layers(path, layers, columns or {})
        for name, raw in layers:
            frame = _normalize_columns(raw, path, columns or {})
            where = f"{path} (layer {name!r})" if len(layers) > 1 else str(path)
            frames.append(frame_to_wgs84(frame, crs, where))
    out = pd.concat(frames, ignore_index=True)
    return gpd.GeoDataFrame(out, geometry="geometry", crs="EPSG:4326")


#: The layer name read from a multi-layer area file without asking (what `gridgov export` writes).
AREA_LAYER = "areas"


def choose_area_layers(
    path: Path,
    layers: list[tuple[str, gpd.GeoDataFrame]],
    columns: Mapping[str, str] | None = None,
) -> list[tuple[str, gpd.GeoDataFrame]]:
    """Pick the area layer(s) of a file whose polygon layers are ``layers`` (several).

    The rule, in order: the layer named :data:`AREA_LAYER`; else the one layer that has the
    required columns (``code``, ``name``, ``level``, or their aliases); else all of them when
    every one has those columns and no level appears in two layers (a hierarchy stored one
    group of levels per layer, e.g. streets and communities in one, grids in another).

    Raises
    ------
    DataFileError
        Anything else (two layers of the same level, layers without the columns): the file is
        ambiguous and the message lists its layers.
    """
    named = [(n, f) for n, f in layers if n == AREA_LAYER]
    if named:
        return named
    renamed = [(n, _renamed(f, columns or {})) for n, f in layers]
    has_columns = [all(c in r.columns for c in REQUIRED_COLUMNS) for _, r in renamed]
    complete = [pair for pair, ok in zip(layers, has_columns, strict=True) if ok]
    if len(complete) == 1:
        return complete
    if len(complete) < len(layers):
        lacking = ", ".join(n for (n, _), ok in zip(layers, has_columns, strict=True) if not ok)
        why = f"{len(complete)} of its polygon layers have the columns code, name and level"
        raise ambiguous_layers(path, "area", f"{why} ({lacking} lack some)")
    seen: dict[str, str] = {}
    for name, frame in renamed:
        for level in sorted({_normalize_level(v) for v in frame["level"]}):
            if level in seen:
                why = f"layers {seen[level]} and {name} both hold {level} areas"
                raise ambiguous_layers(path, "area", why)
            seen[level] = name
    return layers


def _renamed(raw: gpd.GeoDataFrame, columns: Mapping[str, str]) -> gpd.GeoDataFrame:
    """``raw`` with its headers mapped to gridgov's: ``columns`` first, then the aliases."""
    frame = raw.rename(columns=dict(columns))
    lowered = {str(c).strip().lower(): c for c in frame.columns}
    renames: dict[Any, str] = {}
    for target, aliases in DEFAULT_COLUMN_ALIASES.items():
        if target in frame.columns:
            continue
        for alias in aliases:
            if alias.lower() in lowered and lowered[alias.lower()] not in renames:
                renames[lowered[alias.lower()]] = target
                break
    return frame.rename(columns=renames)


def _normalize_columns(
    raw: gpd.GeoDataFrame, path: Path, columns: Mapping[str, str]
) -> gpd.GeoDataFrame:
    frame = _renamed(raw, columns)
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        found = ", ".join(str(c) for c in raw.columns if c != raw.geometry.name)
        msg = (
            f"{path}: missing required column(s) {', '.join(missing)} (found: {found}); "
            "rename those columns in the file, or map them (columns= in Python)"
        )
        raise DataFileError(msg)
    geoms = np.asarray(frame.geometry.values)
    has_z = shapely.has_z(geoms)
    if has_z.any():
        geoms = np.where(has_z, shapely.force_2d(geoms), geoms)
    parent = frame["parent_code"] if "parent_code" in frame.columns else None
    generated = (
        frame["generated"].map(to_bool)
        if "generated" in frame.columns
        else pd.Series(False, index=frame.index)
    )
    codes, code_errors = _exact_codes(frame["code"], "code", path)
    parents, parent_errors = (
        ([None] * len(frame), [None] * len(frame))
        if parent is None
        else _exact_codes(parent, "parent_code", path)
    )
    data = {
        "code": pd.Series(codes, dtype=object),
        "name": pd.Series(["" if is_missing(v) else str(v) for v in frame["name"]], dtype=object),
        "level": pd.Series([_normalize_level(v) for v in frame["level"]], dtype=object),
        "parent_code": pd.Series(parents, dtype=object),
        "generated": pd.Series(np.asarray(generated, dtype=bool)),
        "name_source": pd.Series(
            [None] * len(frame)
            if "name_source" not in frame.columns
            else [None if is_missing(v) else str(v) for v in frame["name_source"]],
            dtype=object,
        ),
    }
    if "geometry_error" in frame.columns:
        data["geometry_error"] = pd.Series(list(frame["geometry_error"]), dtype=object)
    errors = [a or b for a, b in zip(code_errors, parent_errors, strict=True)]
    if any(errors):
        data["code_error"] = pd.Series(errors, dtype=object)
    return gpd.GeoDataFrame(data, geometry=gpd.GeoSeries(geoms, crs=raw.crs), crs=raw.crs)


def _exact_codes(
    values: Iterable[object], column: str, path: Path
) -> tuple[list[str | None], list[str | None]]:
    """Codes as strings, and per row why a code cannot be trusted (or None)."""
    codes: list[str | None] = []
    errors: list[str | None] = []
    for value in values:
        code, error = normalize_code(value)
        codes.append(code)
        errors.append(None if error is None else f"{path}: column {column!r}: {error}")
    return codes, errors


def _normalize_level(value: object) -> str:
    if is_missing(value):
        return ""
    text = str(value).strip()
    return _LEVEL_ALIASES.get(text, _LEVEL_ALIASES.get(text.lower(), text.lower()))


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Locating
# --------------------------------------------------------------------------------------------

_OUT = -1
_MIXED = -2
_METRES_PER_DEGREE = 111_320.0
#: Cells per level raster at most. 16M int32 labels are 64 MB; the build's temporaries are
#: bounded by the chunk sizes below, so a level of any size builds in a few hundred MB.
_MAX_CELLS = 16_000_000
# Crossings, cells or edge samples per numpy pass: arrays this small are recycled by the
# allocator instead of being mapped and page-faulted afresh, which dominated the build time.
_CHUNK = 1 << 20
#: Points one level answers exactly before its raster pays for itself. A raster build costs
#: about what the exact test costs for this many points (measured: see bench/README.md), so
#: building once this many points have been seen in total never costs more than twice the
#: cheaper choice in hindsight, whether a locator answers one point or millions.
RASTER_AFTER_POINTS = 250_000


class _Raster:
    """A uniform raster over one level's bounding box, labelling each cell.

    A cell holds the index of the one polygon containing it whole, ``_OUT`` when no polygon
    touches it, or ``_MIXED`` when a polygon edge touches its closure. Points in pure cells are
    answered by one array read; the others need the exact test.
    """

    def __init__(self, geoms: npt.NDArray[np.object_], cell_m: float | None) -> None:
        self.dtype: type[np.signedinteger[Any]] = np.int16 if len(geoms) < 32_000 else np.int32
        xmin, ymin, xmax, ymax = shapely.total_bounds(geoms)
        lat0 = math.radians((ymin + ymax) / 2)
        if cell_m is None:
            cell_m = _auto_cell_m(geoms, lat0, xmax - xmin, ymax - ymin)
        self.cell_m = cell_m
        self.h = cell_m / _METRES_PER_DEGREE
        self.w = cell_m / (_METRES_PER_DEGREE * max(math.cos(lat0), 0.01))
        # A margin of one cell keeps every vertex strictly inside the raster.
        self.x0, self.y0 = xmin - self.w, ymin - self.h
        self.ncols = math.ceil((xmax - self.x0) / self.w) + 2
        self.nrows = math.ceil((ymax - self.y0) / self.h) + 2
        ax, ay, bx, by, owner = _edges(geoms)
        self.labels = self._fill(ax, ay, bx, by, owner)
        self._mark_edges(ax, ay, bx, by)

    # The one formula mapping coordinates to cells, shared by building and querying, so a
    # point and a boundary sample at the same coordinates always land in the same cell.
    def _cells(self, x: FloatArray, y: FloatArray) -> tuple[FloatArray, FloatArray]:
        return np.floor((x - self.x0) / self.w), np.floor((y - self.y0) / self.h)

    def _fill(
        self, ax: FloatArray, ay: FloatArray, bx: FloatArray, by: FloatArray, owner: IntArray
    ) -> npt.NDArray[np.signedinteger[Any]]:
        """Label every cell by its centre with an even-odd scanline fill of all polygons."""

        # Row r's centre is y0 + (r + 0.5) h; an edge spans the rows whose centre lies in
        # [ylow, yhigh). Computing the bound from each vertex alone keeps the two edges meeting
        # at a vertex consistent, so every polygon row has an even number of crossings.
        def first_row(y: FloatArray) -> IntArray:
            r = np.ceil((y - self.y0) / self.h - 0.5)
            return np.clip(r, 0, self.nrows).astype(np.int64)

        ra, rb = first_row(ay), first_row(by)
        lo, hi = np.minimum(ra, rb), np.maximum(ra, rb)
        count = hi - lo
        sentinel = np.iinfo(self.dtype).max
        labels = np.full(self.nrows * self.ncols, sentinel, dtype=self.dtype)
        # Whole polygons per chunk (edges come grouped by owner), so that each polygon's
        # crossings can be paired within the chunk while the temporaries stay bounded.
        crossings = np.cumsum(count)
        cuts = np.searchsorted(crossings, np.arange(_CHUNK, crossings[-1], _CHUNK))
        ends = np.unique(np.r_[np.searchsorted(owner, owner[cuts], side="right"), len(owner)])
        start = 0
        for end in ends:
            part = slice(start, int(end))
            start = int(end)
            self._paint(
                labels, ax[part], ay[part], bx[part], by[part], owner[part], lo[part], count[part]
            )
        labels[labels == sentinel] = _OUT
        return labels.reshape(self.nrows, self.ncols)

    def _paint(
        self,
        labels: npt.NDArray[np.signedinteger[Any]],
        ax: FloatArray,
        ay: FloatArray,
        bx: FloatArray,
        by: FloatArray,
        owner: IntArray,
        lo: IntArray,
        count: IntArray,
    ) -> None:
        keep = count > 0
        ax, ay, bx, by, owner, lo, count = (
            ax[keep],
            ay[keep],
            bx[keep],
            by[keep],
            owner[keep],
            lo[keep],
            count[keep],
        )
        if len(count) == 0:
            return
        edge = np.repeat(np.arange(len(count)), count)
        starts = np.cumsum(count) - count
        row = lo[edge] + (np.arange(len(edge)) - starts[edge])
        yc = self.y0 + (row + 0.5) * self.h
        x = ax[edge] + (yc - ay[edge]) * (bx[edge] - ax[edge]) / (by[edge] - ay[edge])
        who = owner[edge]
        del edge, yc
        order = self._pair_order(x, row, who)
        x, row, who = x[order], row[order], who[order]
        xa, xb, row, who = x[0::2], x[1::2], row[0::2], who[0::2]
        ca = np.ceil((xa - self.x0) / self.w - 0.5).astype(np.int64)
        cb = np.floor((xb - self.x0) / self.w - 0.5).astype(np.int64)
        ca, cb = np.clip(ca, 0, self.ncols - 1), np.clip(cb, 0, self.ncols - 1)
        ok = cb >= ca
        ca, cb, row, who = ca[ok], cb[ok], row[ok], who[ok]
        lengths = cb - ca + 1
        # Fill in chunks of spans to bound the temporary index arrays.
        bounds = np.searchsorted(np.cumsum(lengths), np.arange(0, lengths.sum(), _CHUNK))
        bounds = np.unique(np.append(bounds, len(lengths)))
        for s, e in zip(np.r_[0, bounds[:-1]], bounds, strict=True):
            if e <= s:
                continue
            ln = lengths[s:e]
            base = row[s:e] * self.ncols + ca[s:e]
            offs = np.arange(ln.sum()) - np.repeat(np.cumsum(ln) - ln, ln)
            flat = np.repeat(base, ln) + offs
            vals = np.repeat(who[s:e], ln).astype(self.dtype)
            # Where polygons overlap, the smallest index (code) must win, as in the exact path.
            np.minimum.at(labels, flat, vals)

    def _pair_order(self, x: FloatArray, row: IntArray, who: IntArray) -> IntArray:
        """Order crossings by polygon, then row, then x, so that they pair up even-odd.

        One integer sort key (polygon, row, x in fixed point) sorts several times faster than
        ``np.lexsort`` on three keys. Quantizing x can only swap crossings less than 2**-bits
        of a cell apart; the cells whose centre lies between such crossings are crossed by an
        edge, hence marked mixed and answered exactly, so their painted label never matters.
        """
        who = who - who.min()
        key = who * self.nrows + row
        used = int(key.max()).bit_length()
        span = max(self.ncols, 1).bit_length()
        bits = 62 - used - span  # sub-cell bits of x that still fit in int64
        if bits < 8:
            return np.lexsort((x, row, who))
        xq = np.clip((x - self.x0) / self.w * (1 << bits), 0, (1 << (bits + span)) - 1)
        return np.argsort((key << (bits + span)) | xq.astype(np.int64))

    def _mark_edges(self, ax: FloatArray, ay: FloatArray, bx: FloatArray, by: FloatArray) -> None:
        """Mark as mixed every cell whose closure any polygon edge touches."""
        # Each undirected edge once: neighbouring polygons share theirs.
        seg = np.column_stack([ax, ay, bx, by])
        swap = (ax > bx) | ((ax == bx) & (ay > by))
        seg[swap] = seg[swap][:, [2, 3, 0, 1]]
        seg = seg[~pd.DataFrame(seg).duplicated().to_numpy()]  # hashing beats np.unique here
        # Samples at most a quarter cell apart; the square of half that step around each sample
        # covers the segment between samples, and its four corners hit every cell the square
        # touches (the square is smaller than a cell).
        step = 0.25
        du = np.abs(seg[:, 2] - seg[:, 0]) / self.w
        dv = np.abs(seg[:, 3] - seg[:, 1]) / self.h
        n = np.ceil(np.maximum(du, dv) / step).astype(np.int64) + 1
        total = np.cumsum(n)
        cuts = np.searchsorted(total, np.arange(_CHUNK, total[-1], _CHUNK))
        for part in np.split(np.arange(len(n)), np.unique(cuts)):
            if len(part):
                self._mark_samples(seg[part], n[part], step)

    def _mark_samples(self, seg: FloatArray, n: IntArray, step: float) -> None:
        ax, ay, bx, by = seg.T
        rep = np.repeat(np.arange(len(n)), n)
        t = (np.arange(len(rep)) - np.repeat(np.cumsum(n) - n, n)) / np.maximum(n[rep] - 1, 1)
        sx = ax[rep] + t * (bx[rep] - ax[rep])
        sy = ay[rep] + t * (by[rep] - ay[rep])
        del rep, t
        rx, ry = 0.51 * step * self.w, 0.51 * step * self.h
        flat = self.labels.reshape(-1)
        for ox in (-rx, rx):
            for oy in (-ry, ry):
                col, row = self._cells(sx + ox, sy + oy)
                col = np.clip(col, 0, self.ncols - 1).astype(np.int64)
                row = np.clip(row, 0, self.nrows - 1).astype(np.int64)
                flat[row * self.ncols + col] = _MIXED

    def lookup(self, x: FloatArray, y: FloatArray) -> IntArray:
        """The cell label of each point (``_OUT`` off the raster, ``_MIXED`` to test exactly)."""
        col, row = self._cells(x, y)
        inside = (col >= 0) & (col < self.ncols) & (row >= 0) & (row < self.nrows)
        out = np.full(len(x), _OUT, dtype=np.int64)
        ii = np.flatnonzero(inside)
        out[ii] = self.labels[row[ii].astype(np.int64), col[ii].astype(np.int64)]
        return out


def _edges(
    geoms: npt.NDArray[np.object_],
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, IntArray]:
    """Every ring edge of every polygon, grouped by owner (the polygon's index) in order."""
    parts, part_of = shapely.get_parts(geoms, return_index=True)
    poly = shapely.get_type_id(parts) == 3
    parts, part_of = parts[poly], part_of[poly]
    rings, ring_of = shapely.get_rings(parts, return_index=True)
    coords, coord_ring = shapely.get_coordinates(rings, return_index=True)
    same = coord_ring[1:] == coord_ring[:-1]
    a, b = coords[:-1][same], coords[1:][same]
    owner = part_of[ring_of[coord_ring[:-1][same]]]
    return a[:, 0], a[:, 1], b[:, 0], b[:, 1], owner.astype(np.int64)


def _auto_cell_m(geoms: npt.NDArray[np.object_], lat0: float, dx: float, dy: float) -> float:
    # Cells about 1/40 of a typical area's side keep the boundary cells (the slow path) to a
    # few per cent of the points; the cap on the cell count bounds memory and build time for
    # large extents, at the price of more boundary cells.
    kx = _METRES_PER_DEGREE * math.cos(lat0)
    sides = np.sqrt(shapely.area(geoms) * kx * _METRES_PER_DEGREE)
    cell = float(np.clip(np.median(sides) / 40.0, 2.0, 2000.0))
    area_m2 = dx * kx * dy * _METRES_PER_DEGREE
    return max(cell, math.sqrt(area_m2 / _MAX_CELLS))


class _LevelIndex:
    """Exact point-in-polygon lookup for the areas of one level.

    Polygons are numbered in code order, so taking the minimum index of the containing
    polygons applies the smallest-code rule. Small batches go straight to the exact test (an
    STRtree for candidates, then a closed-polygon test on the candidates, prepared on first
    use). Once enough points have been seen, a :class:`_Raster` is built and answers most points
    by one array read, sending only those in boundary cells to the exact test. Both paths give
    the same answers.
    """

    def __init__(
        self,
        geoms: npt.NDArray[np.object_],
        cell_m: float | None = None,
        raster_after: int = RASTER_AFTER_POINTS,
    ) -> None:
        self.geoms = geoms
        self.cell_m = cell_m
        self.raster_after = raster_after
        self.seen = 0
        self._tree: shapely.STRtree | None = None
        self._raster: _Raster | None = None
        self._lock = threading.Lock()
        self._few_vertices: bool | None = None

    @property
    def tree(self) -> shapely.STRtree:
        """The STRtree over the level's polygons (built on first use)."""
        if self._tree is None:
            self._tree = shapely.STRtree(self.geoms)
        return self._tree

    @property
    def raster(self) -> _Raster:
        """The raster of cell labels (built on first use; building costs seconds)."""
        with self._lock:  # one build even when threads share a cached locator
            if self._raster is None:
                self._raster = _Raster(self.geoms, self.cell_m)
        return self._raster

    @property
    def has_raster(self) -> bool:
        """Whether the raster has been built."""
        return self._raster is not None

    def locate(self, x: FloatArray, y: FloatArray) -> IntArray:
        """Index of the containing polygon with the smallest code for each point, or -1."""
        self.seen += len(x)
        if self._raster is None and self.seen < self.raster_after:
            return self.exact(x, y)
        out = self.raster.lookup(x, y)
        mixed = np.flatnonzero(out == _MIXED)
        if len(mixed):
            out[mixed] = self.exact(x[mixed], y[mixed])
        return out

    def exact(self, x: FloatArray, y: FloatArray) -> IntArray:
        """The exact answer for any points: bounding-box candidates, then a closed-polygon test."""
        points = shapely.points(x, y)
        if self._few_vertices is None:
            self._few_vertices = bool(np.median(shapely.get_num_coordinates(self.geoms)) < 64)
        if self._few_vertices:
            # Testing a point against a polygon of a few dozen vertices is a short scan;
            # GEOS does it inside the tree query, faster than preparing every candidate.
            pt, poly = self.tree.query(points, predicate="intersects")
        else:
            pt, poly = self.tree.query(points)
            # Prepared polygons answer point-in-polygon from an edge index instead of a full
            # scan, which matters for big polygons (a district has thousands of vertices).
            # Preparing only the candidates keeps a single point's first query cheap.
            candidates = self.geoms[poly]
            shapely.prepare(candidates)
            hit = shapely.intersects_xy(candidates, x[pt], y[pt])
            pt, poly = pt[hit], poly[hit]
        best = np.full(len(x), np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(best, pt, poly)
        best[best == np.iinfo(np.int64).max] = _OUT
        return best


class Locator:
    """Find the areas containing points, at every level, in one vectorised call.

    Build it with :func:`build_locator`. Points are matched against the finest level loaded
    (micro-grids when present); the coarser levels are derived through ``parent_code``. Points
    that miss every area of the finest level fall back to the next coarser level, and so on.
    """

    def __init__(
        self,
        gdf_areas: gpd.GeoDataFrame,
        cell_m: float | None = None,
        raster_after: int = RASTER_AFTER_POINTS,
    ) -> None:
        gdf = gdf_areas
        if gdf.crs is not None and gdf.crs.to_epsg() != 4326:
            gdf = gdf.to_crs("EPSG:4326")
        geoms = np.asarray(gdf.geometry.values, dtype=object)
        known = {lv.value for lv in LEVELS}
        levels = gdf["level"].to_numpy(dtype=object)
        keep = np.isin(levels, list(known)) & ~(shapely.is_missing(geoms) | shapely.is_empty(geoms))
        codes = gdf["code"].astype(str).to_numpy(dtype=object)[keep]
        order = np.argsort(codes, kind="stable")
        self._codes = codes[order]
        names = gdf["name"].astype(str).to_numpy(dtype=object)[keep]
        self._names: dict[str, str] = dict(zip(codes, names, strict=True))
        levels = levels[keep][order]
        self._level_name: dict[str, str] = dict(zip(self._codes, levels, strict=True))
        parents = gdf["parent_code"].to_numpy(dtype=object)[keep][order]
        geoms = geoms[keep][order]
        self.levels: tuple[Level, ...] = tuple(lv for lv in LEVELS if (levels == lv.value).any())
        if not self.levels:
            msg = "no areas with a known level to locate in"
            raise DataFileError(msg)
        self._rows: dict[Level, IntArray] = {
            lv: np.flatnonzero(levels == lv.value) for lv in self.levels
        }
        # Nothing spatial is built here: each level's STRtree and raster come on first use, so
        # a locator that answers one point costs milliseconds, whatever the district's size.
        self._index: dict[Level, _LevelIndex] = {
            lv: _LevelIndex(geoms[rows], cell_m, raster_after) for lv, rows in self._rows.items()
        }
        self._ancestors = _ancestor_rows(self._codes, levels, parents)
        self.finest: Level = self.levels[-1]

    def index(self, level: Level) -> _LevelIndex:
        """The spatial index of one level (its STRtree and raster are built on first use)."""
        return self._index[level]

    def locate_rows(self, lon: FloatArray, lat: FloatArray) -> IntArray:
        """Row (in code order) of the finest area containing each WGS84 point, or -1."""
        found = np.full(len(lon), -1, dtype=np.int64)
        todo = np.flatnonzero(np.isfinite(lon) & np.isfinite(lat))
        for level in reversed(self.levels):
            if len(todo) == 0:
                break
            hit = self.index(level).locate(lon[todo], lat[todo])
            ok = hit >= 0
            found[todo[ok]] = self._rows[level][hit[ok]]
            todo = todo[~ok]
        return found

    def locate(
        self, lon: npt.ArrayLike, lat: npt.ArrayLike, crs: str | int = "wgs84"
    ) -> pd.DataFrame:
        """Codes of the containing areas at every level, one row per point, in input order.

        Parameters
        ----------
        lon, lat
            Coordinates (scalars or arrays) in ``crs``.
        crs
            ``wgs84`` (default), ``gcj02``, ``bd09`` or an EPSG code.

        Returns
        -------
        A DataFrame with columns ``district, street, community, grid, microgrid`` (object
        dtype: a code, or None where the point is outside every area of that level or that
        level is not loaded). The index is ``pandas.RangeIndex`` over the input, or the input's
        own index when ``lon`` is a pandas Series.
        """
        index = lon.index if isinstance(lon, pd.Series) else None
        x, y = _as_wgs84(lon, lat, crs)
        rows = self.locate_rows(x, y)
        columns: dict[str, npt.NDArray[np.object_]] = {}
        lookup = np.append(self._codes, np.array([None], dtype=object))  # -1 reads None
        for level in LEVELS:
            anc = np.where(rows >= 0, self._ancestors[np.maximum(rows, 0), level.rank], -1)
            columns[level.value] = lookup[anc]
        return pd.DataFrame(
            {k: pd.Series(v, dtype=object, copy=False) for k, v in columns.items()}
        ).set_axis(index if index is not None else pd.RangeIndex(len(x)))

    def locate_one(self, lon: float, lat: float, crs: str | int = "wgs84") -> dict[str, str | None]:
        """Codes at every level for one point.

        Raises
        ------
        OutsideDistrictError
            If the point lies outside every loaded area.
        """
        x, y = _as_wgs84(lon, lat, crs)
        row = int(self.locate_rows(x, y)[0])
        if row < 0:
            raise OutsideDistrictError(float(lon), float(lat), str(crs))
        out: dict[str, str | None] = {}
        for level in LEVELS:
            j = int(self._ancestors[row, level.rank])
            out[level.value] = str(self._codes[j]) if j >= 0 else None
        return out

    def name_of(self, code: str) -> str:
        """The name of a loaded area (KeyError for an unknown code)."""
        return self._names[code]

    def level_of(self, code: str) -> Level:
        """The level of a loaded area (KeyError for an unknown code)."""
        return Level(self._level_name[code])


def _ancestor_rows(
    codes: npt.NDArray[np.object_],
    levels: npt.NDArray[np.object_],
    parents: npt.NDArray[np.object_],
) -> IntArray:
    """``out[i, k]``: row of the level-``k`` ancestor of row ``i`` (or -1), via parent codes.

    A parent link counts only when it points to a coarser level, so the walk always ends.
    """
    n = len(codes)
    rank = np.array([Level(v).rank for v in levels], dtype=np.int64) if n else np.zeros(0, int)
    keys = [None if is_missing(p) else str(p) for p in parents]
    parent = pd.Index(codes).get_indexer(pd.Index(keys, dtype=object)).astype(np.int64)
    ok = parent >= 0
    ok[ok] = rank[parent[ok]] < rank[ok]
    parent[~ok] = -1
    out = np.full((n, len(LEVELS)), -1, dtype=np.int64)
    rows = np.arange(n)
    cur = rows.copy()
    for _ in LEVELS:
        live = np.flatnonzero(cur >= 0)
        if len(live) == 0:
            break
        slot = out[live, rank[cur[live]]]
        free = slot == -1
        out[live[free], rank[cur[live[free]]]] = cur[live[free]]
        cur[live] = parent[cur[live]]
    return out


def _as_wgs84(
    lon: npt.ArrayLike, lat: npt.ArrayLike, crs: str | int
) -> tuple[FloatArray, FloatArray]:
    x = np.asarray(lon, dtype=float).reshape(-1)
    y = np.asarray(lat, dtype=float).reshape(-1)
    if normalize_crs(crs) == "wgs84":
        return x, y
    finite = np.isfinite(x) & np.isfinite(y)
    ox, oy = np.full_like(x, np.nan), np.full_like(y, np.nan)
    ox[finite], oy[finite] = to_wgs84(x[finite], y[finite], crs)
    return ox, oy


def build_locator(
    gdf_areas: gpd.GeoDataFrame,
    *,
    cell_m: float | None = None,
    raster_after: int = RASTER_AFTER_POINTS,
) -> Locator:
    """Build a :class:`Locator` over an areas GeoDataFrame.

    Building is cheap (no spatial index yet): each level gets an STRtree on its first query and
    a raster index once it has answered ``raster_after`` points in total, so one-off lookups
    stay fast and large or repeated batches get the raster. The answers are the same either way.

    Parameters
    ----------
    gdf_areas
        Areas of one or more levels (validate them first; the locator trusts the hierarchy).
    cell_m
        Raster cell size in metres; by default about 1/40 of a typical area's side (~2.5 m for
        10,000 m² micro-grids), coarser where a level would need more than 16 million cells.
        Smaller cells send fewer points to the exact test but cost memory and build time.
    raster_after
        Points a level answers exactly before it builds its raster: 0 builds it on the first
        query, a huge number never builds it.
    """
    return Locator(gdf_areas, cell_m=cell_m, raster_after=raster_after)


# --------------------------------------------------------------------------------------------
# Adjacency
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# serving areas to maps
# --------------------------------------------------------------------------------------------

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
