"""The user-level entry: boundary and road files in any declared CRS, checked, and the area
hierarchy generated from them in a metric CRS and returned in EPSG:4326."""

from __future__ import annotations

import logging
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pyproj import CRS, Transformer
from shapely.geometry import Point, Polygon

from gridgov.errors import CRSError, DataFileError, InputError
from gridgov.io import frame_to_wgs84, read_vector_wgs84, reject_geometry_errors
from gridgov.model import Level
from gridgov.roads import read_link_table
from gridgov.settings import get_settings
from gridgov.tessellate.area_plans import (
    _MAX_SERIAL,
    HierarchyPlan,
    _raise_problems,
    plan_problems,
    transform_anchors,
)
from gridgov.tessellate.block_tiling import ProgressCallback, _polygons_of, generate_hierarchy

logger = logging.getLogger(__name__)

#: Boundary edges are split to this length (degrees, about 100 m) in EPSG:4326 before they are
#: projected, so the generated district follows the user's straight lon/lat edges, not the
#: projected chords between their corners (which bow metres away on a long edge).
BOUNDARY_SEGMENT_DEG = 1e-3
#: Smallest mean micro-grid area (m²) :func:`generate_areas` accepts; a micro-grid is 30-100
#: households, so anything smaller is a wrong count or a boundary in the wrong CRS.
MIN_MICROGRID_AREA_M2 = 1000.0
#: Inputs of :func:`generate_areas` are snapped to this WGS84 grid (about 1 cm, the generator's
#: own precision): the generator is chaotic (k-means, rejection sampling), so without it the
#: 1e-14 degree noise of a GCJ-02 round trip could change which piece goes where.
INPUT_PRECISION_DEG = 1e-7
#: Files of a Chengdu-style link table, in a folder given as roads.
LINK_TABLE_FILES = ("roads_nodes.csv", "roads_links.csv")


# --------------------------------------------------------------------------------------------
# the user-level entry: boundary and roads files in any declared CRS


def _read_layers(
    path: Path, what: str, crs: str | int | None, layer: str | int | None, kind: str
) -> gpd.GeoDataFrame:
    gdf = read_vector_wgs84(path, crs, layer=layer, geometry_kind=kind, what=what)
    # The generator would silently work on the repaired shape; the user should fix the file.
    reject_geometry_errors(gdf, f"{what} file {path}")
    return gdf


def read_boundary(
    path: str | Path, crs: str | int | None = None, *, layer: str | int | None = None
) -> gpd.GeoDataFrame:
    """Read a boundary file (GeoJSON, GeoPackage, GeoParquet, Shapefile, ...) into EPSG:4326.

    Parameters
    ----------
    path
        The file.
    crs
        What its coordinates really are (``wgs84``, ``gcj02``, ``bd09`` or an EPSG code); it
        overrides the file's own CRS label, because GCJ-02 data is routinely labelled EPSG:4326.
        ``None`` trusts the label (an error asks for one when the file has none).
    layer
        Layer of a multi-layer file. By default every polygon layer is read (a single-layer file
        is read whatever its type, so :func:`generate_areas` can say what is wrong with it).

    Returns
    -------
    geopandas.GeoDataFrame
        The features as read, geometry in EPSG:4326; :func:`generate_areas` checks them.
        ``attrs["layers"]`` names the layer(s) read (a ``layer`` column tells several apart).

    Raises
    ------
    DataFileError
        The file is missing or unreadable, holds a geometry that cannot be parsed (an unclosed
        ring), or has several layers and none of polygons (the message names the file and lists
        its layers).
    CRSError
        The declared CRS is unknown, missing, or gives impossible coordinates (the message names
        the file and the CRS its coordinates were read in).
    """
    return _read_layers(Path(path), "boundary", crs, layer, "Polygon")


def read_roads(
    path: str | Path, crs: str | int | None = None, *, layer: str | int | None = None
) -> gpd.GeoDataFrame:
    """Read road lines from a vector file, or from a folder holding a Chengdu-style link table.

    Parameters
    ----------
    path
        A vector file of LineStrings/MultiLineStrings (e.g. the ``links`` layer of
        ``jinniu_roads.gpkg``), or a folder with ``roads_nodes.csv`` and ``roads_links.csv``
        (read by :func:`gridgov.roads.read_link_table`; a two-way road is kept once).
    crs
        What the coordinates really are; it overrides the file's own CRS label. ``None`` trusts
        the label (an error asks for one when the file has none); a link table is WGS84.
    layer
        Layer of a multi-layer file. By default every line layer is read (a single-layer file is
        read whatever its type, so :func:`generate_areas` can say what is wrong with it).

    Returns
    -------
    geopandas.GeoDataFrame
        Geometry in EPSG:4326 (link tables keep their link columns). ``attrs["layers"]`` names
        the layer(s) read (a ``layer`` column tells several apart); the choice is also logged.

    Raises
    ------
    DataFileError
        The file or folder is missing or unreadable, holds a geometry that cannot be parsed,
        or has several layers and none of lines (the message names the file and lists its
        layers).
    CRSError
        The declared CRS is unknown, missing, or gives impossible coordinates (the message names
        the file and the CRS its coordinates were read in).
    """
    path = Path(path)
    if path.is_dir():
        nodes, links = path / LINK_TABLE_FILES[0], path / LINK_TABLE_FILES[1]
        absent = [p.name for p in (nodes, links) if not p.is_file()]
        if absent:
            msg = (
                f"road folder {path} lacks {', '.join(absent)}; give a vector file of road "
                f"lines, or a folder with {' and '.join(LINK_TABLE_FILES)}"
            )
            raise DataFileError(msg)
        _, gdf_links = read_link_table(nodes, links)
        pair = np.sort(gdf_links[["u", "v"]].to_numpy(), axis=1)
        gdf_links = gdf_links[~pd.DataFrame(pair).duplicated().to_numpy()]
        return frame_to_wgs84(gdf_links.reset_index(drop=True), crs or "wgs84", str(path))
    return _read_layers(path, "roads", crs, layer, "LineString")


def _as_frame(data: gpd.GeoDataFrame | gpd.GeoSeries, what: str) -> gpd.GeoDataFrame:
    if isinstance(data, gpd.GeoSeries):
        return gpd.GeoDataFrame(geometry=data)
    if isinstance(data, gpd.GeoDataFrame):
        return data
    msg = f"the {what} must be a GeoDataFrame or GeoSeries, got {type(data).__name__}"
    raise InputError(msg)


def _rows(mask: np.ndarray, limit: int = 10) -> str:
    rows = np.flatnonzero(mask)
    shown = ", ".join(str(int(r)) for r in rows[:limit])
    return f"{shown}, ..." if len(rows) > limit else shown


def _boundary_problems(geoms: np.ndarray) -> list[str]:
    problems: list[str] = []
    missing = shapely.is_missing(geoms) | shapely.is_empty(geoms)
    if missing.any():
        problems.append(f"feature(s) {_rows(missing)} have no geometry")
    types = shapely.get_type_id(geoms)
    polygonal = np.isin(types, (3, 6))  # Polygon, MultiPolygon
    wrong = ~missing & ~polygonal
    kinds = np.array([g.geom_type if w else "" for g, w in zip(geoms, wrong, strict=True)])
    for name in sorted(set(kinds[wrong].tolist())):
        of_type = kinds == name
        problems.append(
            f"feature(s) {_rows(of_type)} are {name}s; a boundary must be Polygons or MultiPolygons"
        )
    check = ~missing & polygonal
    invalid = check.copy()
    invalid[check] = ~shapely.is_valid(geoms[check])
    for row in np.flatnonzero(invalid)[:10]:
        reason = shapely.is_valid_reason(geoms[row])
        problems.append(
            f"feature {int(row)} is not a valid polygon ({reason}); repair it first, e.g. "
            "with shapely.make_valid or QGIS 'Fix geometries'"
        )
    if invalid.sum() > 10:
        problems.append(f"... and {int(invalid.sum()) - 10} more invalid feature(s)")
    return problems


def _snapped(gdf: gpd.GeoDataFrame, max_segment_deg: float | None = None) -> gpd.GeoDataFrame:
    out = gdf.copy()
    geoms = gdf.geometry.to_numpy()
    if max_segment_deg is not None:
        geoms = shapely.segmentize(geoms, max_segment_deg)
    geoms = shapely.set_precision(geoms, INPUT_PRECISION_DEG)
    out[gdf.geometry.name] = gpd.GeoSeries(geoms, index=gdf.index, crs=gdf.crs)
    return out


def _metric_crs(metric_crs: str) -> CRS:
    try:
        metric = CRS.from_user_input(metric_crs)
    except Exception as exc:  # pyproj raises its own CRSError, and TypeError for odd input
        msg = f"unknown metric CRS {metric_crs!r}: {exc}"
        raise CRSError(msg) from exc
    units = {axis.unit_name for axis in metric.axis_info}
    if not metric.is_projected or not units <= {"metre", "meter"}:
        msg = f"metric CRS {metric_crs!r} must be projected in metres (e.g. a UTM zone)"
        raise CRSError(msg)
    return metric


def _district_polygon(gdf_boundary: gpd.GeoDataFrame, metric: CRS, notes: list[str]) -> Polygon:
    geoms = gdf_boundary.to_crs(metric).geometry.to_numpy()
    union = shapely.union_all(geoms)
    parts = _polygons_of(union)
    if not parts:
        msg = "the boundary has zero area"
        raise InputError(msg)
    if len(parts) > 1:
        sizes = sorted((p.area / 1e6 for p in parts), reverse=True)
        listed = ", ".join(f"{s:.4g}" for s in sizes[:5])
        msg = (
            f"the boundary is {len(parts)} separate pieces (km²: {listed}"
            f"{', ...' if len(parts) > 5 else ''}); give one connected area, or generate each "
            "piece on its own"
        )
        raise InputError(msg)
    polygon = parts[0]
    if polygon.interiors:
        holes = sum(Polygon(ring).area for ring in polygon.interiors)
        notes.append(
            f"the boundary has {len(polygon.interiors)} hole(s) ({holes / 1e6:.4g} km²); they were "
            "filled, so the areas cover them"
        )
        polygon = Polygon(polygon.exterior)
    return polygon


def _road_lines(
    gdf_roads: gpd.GeoDataFrame | gpd.GeoSeries | None,
    crs: str | int | None,
    district: Polygon,
    metric: CRS,
    notes: list[str],
) -> np.ndarray | None:
    if gdf_roads is None:
        notes.append("no roads given: areas are k-means Voronoi cells, not road blocks")
        return None
    frame = _as_frame(gdf_roads, "roads")
    geoms = frame.geometry.to_numpy()
    missing = shapely.is_missing(geoms) | shapely.is_empty(geoms)
    lines = np.isin(shapely.get_type_id(geoms), (1, 2, 5))  # LineString, LinearRing, Multi
    wrong = ~missing & ~lines
    if wrong.any():
        kinds = sorted({g.geom_type for g in geoms[wrong]})
        msg = (
            f"the roads hold {int(wrong.sum())} feature(s) that are not lines "
            f"({', '.join(kinds)}; rows {_rows(wrong)}); give LineStrings or MultiLineStrings"
        )
        raise InputError(msg)
    frame = frame[~missing]
    if len(frame) == 0:
        notes.append("the roads hold no geometry: areas are k-means Voronoi cells")
        return None
    frame = _snapped(frame_to_wgs84(frame, crs, "the roads frame"))
    projected = frame.to_crs(metric).geometry.to_numpy()
    touching = shapely.intersects(projected, district)
    if not touching.any():
        notes.append(
            f"none of the {len(projected)} road line(s) reaches the boundary (check that both "
            "are in the declared CRS): areas are k-means Voronoi cells, not road blocks"
        )
        return None
    return np.asarray(projected[touching], dtype=object)


def generate_areas(
    gdf_boundary: gpd.GeoDataFrame | gpd.GeoSeries,
    gdf_roads: gpd.GeoDataFrame | gpd.GeoSeries | None,
    plan: HierarchyPlan,
    *,
    seed: int = 0,
    crs: str | int | None = None,
    metric_crs: str | None = None,
    progress: ProgressCallback | None = None,
) -> gpd.GeoDataFrame:
    """Generate the area hierarchy of a boundary from its roads, as a user would run it.

    Parameters
    ----------
    gdf_boundary
        The district: one polygon, or several that are dissolved into one connected area. Holes
        are filled (noted in the warnings).
    gdf_roads
        Road lines (LineString/MultiLineString); they may reach beyond the boundary. ``None``,
        or roads that miss the boundary, give k-means Voronoi cells instead of road blocks (noted
        in the warnings, never silently).
    plan
        What to generate (:func:`plan_from_counts`, :func:`plan_from_admin_table`). Street anchors
        are WGS84 (lon, lat); they are used only when every street has one.
    seed
        Seed of the random generator; the same inputs and seed give the same areas.
    crs
        What the coordinates of both frames really are: ``wgs84``, ``gcj02``, ``bd09`` or an EPSG
        code, converted by :func:`gridgov.io.frame_to_wgs84`. ``None`` trusts each frame's CRS.
    metric_crs
        Projected CRS (metres) the generator works in; default: the settings' ``metric_crs``
        (UTM 48N, which suits Chengdu). Pick the UTM zone
        of your area elsewhere (a warning says when the boundary lies outside its area of use).
    progress
        Optional ``progress(stage, done, total)`` callback (stages as in
        :func:`generate_hierarchy`).

    Returns
    -------
    geopandas.GeoDataFrame
        EPSG:4326; columns ``code``, ``name``, ``level``, ``parent_code``, ``generated`` (True),
        ``name_source`` (``official``/``generated``) and Polygon ``geometry``; every level tiles
        its parent exactly. ``attrs["warnings"]`` lists what the caller should know (fallbacks,
        filled holes, totals that fell short of the plan); each is also logged.

    Raises
    ------
    InputError
        An invalid plan (every problem listed), an empty, invalid, non-polygonal or disconnected
        boundary (saying what is wrong and where), non-line roads, or more micro-grids than the
        area allows (below :data:`MIN_MICROGRID_AREA_M2` each on average).
    CRSError
        An unknown CRS, a frame without one when ``crs`` is None, or impossible coordinates.
    """
    _raise_problems(plan_problems(plan), "plan")
    if metric_crs is None:
        metric_crs = get_settings().metric_crs
    metric = _metric_crs(metric_crs)
    notes: list[str] = []
    frame = _as_frame(gdf_boundary, "boundary")
    if len(frame) == 0:
        msg = "the boundary has no features"
        raise InputError(msg)
    _raise_problems(_boundary_problems(frame.geometry.to_numpy()), "boundary")
    boundary = _snapped(frame_to_wgs84(frame, crs, "the boundary frame"), BOUNDARY_SEGMENT_DEG)
    area_of_use = metric.area_of_use
    if area_of_use is not None:
        west, south, east, north = boundary.total_bounds
        inside = (
            area_of_use.west - 1 <= west
            and east <= area_of_use.east + 1
            and area_of_use.south - 1 <= south
            and north <= area_of_use.north + 1
        )
        if not inside:
            notes.append(
                f"the boundary lies outside the area of use of {metric_crs} "
                f"({area_of_use.name}); areas are generated in a distorted projection, pass "
                "the metric_crs of your region"
            )
    district = _district_polygon(boundary, metric, notes)
    mean_micro = district.area / plan.n_microgrids
    if mean_micro < MIN_MICROGRID_AREA_M2:
        most = int(district.area // MIN_MICROGRID_AREA_M2)
        msg = (
            f"the boundary covers {district.area / 1e6:.4g} km²: {plan.n_microgrids} micro-grids "
            f"would average {mean_micro:.0f} m², below {MIN_MICROGRID_AREA_M2:.0f} m²; ask for at "
            f"most {most} micro-grids (or check the boundary's CRS)"
        )
        raise InputError(msg)
    lines = _road_lines(gdf_roads, crs, district, metric, notes)

    to_metric = Transformer.from_crs("EPSG:4326", metric, always_xy=True)
    metric_plan = transform_anchors(plan, to_metric.transform)
    anchors = [s.anchor for s in metric_plan.streets]
    given = [a for a in anchors if a is not None]
    if given and len(given) < len(anchors):
        notes.append(
            f"{len(given)} of {len(anchors)} streets have an anchor; anchors are used only when "
            "every street has one, so streets grow from k-means centres"
        )
    elif given:
        far = [
            s.code
            for s, a in zip(metric_plan.streets, anchors, strict=True)
            if a is not None and district.distance(Point(a)) > 0
        ]
        if far:
            notes.append(f"anchor(s) of street(s) {', '.join(far)} lie outside the boundary")
    for note in notes:
        logger.warning(note)

    areas = generate_hierarchy(
        district, lines, metric_plan, seed=seed, crs=metric.to_string(), progress=progress
    )
    over = []
    for level in (Level.GRID, Level.MICROGRID):
        rows = areas["level"] == level.value
        too_long = rows & (areas["code"].str.len() != level.code_length)
        for parent, count in areas.loc[rows, "parent_code"].value_counts().items():
            if count > _MAX_SERIAL:
                over.append(f"{parent} received {count} {level.value}s")
        if too_long.any() and not over:
            over.append(f"{int(too_long.sum())} {level.value} code(s) have the wrong length")
    if over:
        msg = (
            f"{'; '.join(over)}, more than the {_MAX_SERIAL} a 3-digit number allows; "
            "ask for fewer grids/micro-grids or more communities"
        )
        raise InputError(msg)
    made = areas["level"].value_counts()
    for level, planned in ((Level.GRID, plan.n_grids), (Level.MICROGRID, plan.n_microgrids)):
        got = int(made.get(level.value, 0))
        if got < planned:
            note = (
                f"{got} {level.value}s made of {planned} planned: pieces were absorbed while "
                "making every area one connected polygon"
            )
            logger.warning(note)
            notes.append(note)
    out = areas.to_crs("EPSG:4326")
    # The contract says None (not NaN) for the district's parent.
    out["parent_code"] = pd.Series(
        [code if isinstance(code, str) else None for code in out["parent_code"]],
        index=out.index,
        dtype=object,
    )
    out.attrs["warnings"] = notes
    return out
