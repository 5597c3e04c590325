"""Coverage and hot spots for GIS analysts (pure: frames in, new objects out).

Coverage
--------
:func:`coverage_times` gives, per area of one level, the travel time from the nearest unit of
a force kind to the area's representative point, the way dispatch measures it (unit → point,
over the unit's own travel mode, access legs included). :func:`relocate_units` moves units to
new positions in a copy of the units frame, and :func:`compare_coverage` compares two coverage
tables: "what happens if this fire station moves there".

Hot spots
---------
:func:`hot_spots` counts incidents per area and computes the Getis-Ord Gi* statistic over
contiguity weights (areas sharing a border, see :func:`build_contiguity_weights`), flagging
hot and cold spots at a significance level.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import scipy.sparse as sp
import shapely
from pyproj import Transformer

from gridgov.analysis import forward_search
from gridgov.areas import street_adjacency
from gridgov.dispatch import rules
from gridgov.errors import InputError
from gridgov.model import ForceKind, Level, TravelMode
from gridgov.network import RoadNetwork
from gridgov.periods import Period
from gridgov.travel_model import Snapped, TravelModel

#: Default travel-time bands (upper bounds, minutes) of :func:`compare_coverage`.
DEFAULT_BANDS_MIN: tuple[float, ...] = (5.0, 10.0, 15.0, 20.0, 30.0)
_REL_SLACK = forward_search.REL_SLACK
_ABS_SLACK_S = forward_search.ABS_SLACK_S
#: Spot labels of :func:`hot_spots`.
HOT, COLD, NOT_SIGNIFICANT = "hot", "cold", "not significant"


# --------------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------------


def _require(df: Any, columns: Iterable[str], what: str, *, geometry: bool = True) -> None:
    if not isinstance(df, pd.DataFrame):
        msg = f"{what} must be a (Geo)DataFrame, got {type(df).__name__}"
        raise InputError(msg)
    problems = []
    missing = [c for c in columns if c not in df.columns]
    if missing:
        problems.append(f"missing column(s) {', '.join(missing)}")
    if geometry and not isinstance(df, gpd.GeoDataFrame):
        problems.append("no geometry (expected a GeoDataFrame)")
    elif geometry and isinstance(df, gpd.GeoDataFrame) and df.crs is None and len(df):
        problems.append("no CRS (expected EPSG:4326)")
    if problems:
        msg = f"{what}: {'; '.join(problems)}"
        raise InputError(msg)


def _wgs84(gdf: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    if gdf.crs is not None and not gdf.crs.equals("EPSG:4326"):
        return gdf.to_crs("EPSG:4326")
    return gdf


def _level_name(level: Level | str) -> str:
    try:
        return Level(level).value
    except ValueError as exc:
        msg = f"unknown level {level!r}; expected one of {', '.join(lv.value for lv in Level)}"
        raise InputError(msg) from exc


def _kind_name(kind: ForceKind | str) -> str:
    try:
        return ForceKind(kind).value
    except ValueError as exc:
        msg = (
            f"unknown force kind {kind!r}; expected one of {', '.join(k.value for k in ForceKind)}"
        )
        raise InputError(msg) from exc


def _point_xy(gdf: gpd.GeoDataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """lon, lat and a mask of rows with a usable point."""
    geoms = gdf.geometry.to_numpy()
    ok = ~(shapely.is_missing(geoms) | shapely.is_empty(geoms))
    x = np.full(len(gdf), np.nan)
    y = np.full(len(gdf), np.nan)
    if ok.any():
        x[ok] = shapely.get_x(geoms[ok])
        y[ok] = shapely.get_y(geoms[ok])
    ok &= np.isfinite(x) & np.isfinite(y)
    return x, y, ok


def _level_areas(gdf_areas: gpd.GeoDataFrame, level: str) -> gpd.GeoDataFrame:
    areas = gdf_areas[gdf_areas["level"].astype(str) == level]
    codes = areas["code"].astype(str)
    dup = sorted(set(codes[codes.duplicated()]))
    if dup:
        msg = f"areas: duplicate {level} code(s) {', '.join(dup[:10])}"
        raise InputError(msg)
    return areas


# --------------------------------------------------------------------------------------------
# coverage
# --------------------------------------------------------------------------------------------


def _forward_bounds(
    travel: RoadNetwork, sources: Snapped, targets: Snapped, limit_s: float
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest-source time to every target from one forward multi-source Dijkstra.

    One virtual node joins every source (:func:`gridgov.analysis.forward_search.seeded_graph`);
    the targets are reached the way ``RoadNetwork.field_to`` seeds them. This is the same set
    of ways the exact reverse search considers, except the "direct" way along a shared edge, so
    the result is the exact minimum up to rounding, or larger where a source shares the
    target's road (flagged in the second array).

    Returns
    -------
    tuple
        Seconds per target (inf beyond ``limit_s`` plus slack) and a mask of targets whose
        road (or its twin) holds a source.
    """
    arrays = forward_search.mode_arrays(travel, sources.mode)
    one_group = np.zeros(len(sources), dtype=np.int64)
    dist = forward_search.node_times(arrays, sources, one_group, limit_s)
    times = forward_search.times_at(arrays, dist, targets)[0]
    bound = forward_search.search_bound(limit_s)
    times = np.where(times <= bound, times, np.inf)
    return times, forward_search.shared_road(arrays, sources, targets)


def coverage_times(
    gdf_areas: gpd.GeoDataFrame,
    gdf_units: gpd.GeoDataFrame,
    travel: TravelModel,
    kind: ForceKind | str,
    *,
    level: Level | str = "grid",
    limit_s: float = 1800.0,
    on_duty_only: bool = True,
) -> pd.DataFrame:
    """Travel time from the nearest unit of ``kind`` to each area's representative point.

    The representative point is the area's ``point_on_surface``. Times run from the unit to the
    point over the unit's own travel mode (units of one kind may drive, bike or walk), access
    legs included, exactly as dispatch measures them; the nearest is chosen in dispatch's
    candidate order (:func:`gridgov.dispatch.rules.best_candidate`: ties go to the smaller unit
    id). An area no unit reaches within ``limit_s`` gets inf.

    On a :class:`~gridgov.network.RoadNetwork` one forward multi-source Dijkstra per mode, run
    from the units on the forward graph (so unit → area, as one-way roads require), gives each
    area its nearest-unit time up to rounding. Each area then gets one exact reverse search
    (:meth:`~gridgov.network.RoadNetwork.field_to`) bounded by that time instead of
    ``limit_s``: a small search that finds the exact time and every tied unit. An area the
    forward search finds beyond ``limit_s`` needs no search at all. The result is the same
    as one ``limit_s``-bounded search per area.

    Parameters
    ----------
    gdf_areas, gdf_units
        Areas and units (EPSG:4326); never changed.
    travel
        A :class:`~gridgov.network.RoadNetwork` or :class:`~gridgov.straight_line.StraightLine`.
    kind
        The force kind.
    level
        The areas' level.
    limit_s
        The search bound (seconds).
    on_duty_only
        Only units on duty count (busy ones do: coverage is about where the force is).

    Returns
    -------
    pandas.DataFrame
        ``code``, ``name``, ``time_s`` (inf beyond ``limit_s``) and ``unit_id`` (None then).

    Raises
    ------
    InputError
        Missing columns, no CRS, an unknown kind or level, or a non-positive ``limit_s``.
    """
    _require(gdf_areas, ("code", "name", "level"), "areas")
    _require(gdf_units, ("unit_id", "kind", "travel_mode", "on_duty"), "units")
    k = _kind_name(kind)
    lv = _level_name(level)
    if not limit_s > 0:
        msg = f"limit_s must be > 0, got {limit_s}"
        raise InputError(msg)
    areas = _wgs84(gdf_areas[gdf_areas["level"].astype(str) == lv])
    units = _wgs84(gdf_units[gdf_units["kind"].astype(str) == k])
    if on_duty_only:
        units = units[units["on_duty"].fillna(False).astype(bool)]
    ux, uy, uok = _point_xy(units)
    units = units[uok]
    ux, uy = ux[uok], uy[uok]
    points = shapely.point_on_surface(areas.geometry.to_numpy())
    px, py = shapely.get_x(points), shapely.get_y(points)
    ids = units["unit_id"].astype(str).to_numpy()
    ranks = rules.unit_rank(ids)
    modes = units["travel_mode"].astype(str).to_numpy()
    mode_list = sorted(set(modes))
    # Each mode's best unit per area (time, unit row; -1: none), then the best of the modes.
    mode_best = np.full((len(mode_list), len(areas)), np.inf)
    mode_who = np.full((len(mode_list), len(areas)), -1, dtype=np.int64)
    for m, mode in enumerate(mode_list):
        if TravelMode(mode) not in travel.modes:
            continue
        sel = np.flatnonzero(modes == mode)
        sources = travel.snap(ux[sel], uy[sel], mode)
        usable = ~np.asarray(sources.far)
        if not usable.any():
            continue
        sources = sources.take(np.flatnonzero(usable))
        sel = sel[usable]
        targets = travel.snap(px, py, mode)
        bounds: np.ndarray | None = None
        shared = np.zeros(len(areas), dtype=bool)
        if isinstance(travel, RoadNetwork) and len(areas):
            bounds, shared = _forward_bounds(travel, sources, targets, limit_s)
        for i in range(len(areas)):
            if targets.far[i]:
                continue
            limit = limit_s
            if bounds is not None:
                if math.isfinite(bounds[i]):
                    limit = min(limit_s, bounds[i] * (1.0 + _REL_SLACK) + _ABS_SLACK_S)
                elif not shared[i]:
                    continue  # no way within the limit (the forward search saw them all)
            target = targets.take(i)
            times = travel.field_to(target, limit).times_from(sources)
            if limit < limit_s and not np.isfinite(times).any():
                # Cannot happen if the forward search is exact; if it ever is not, the full
                # search keeps the result right.
                times = travel.field_to(target, limit_s).times_from(sources)
            j = rules.best_candidate(times, ranks[sel])
            if j is not None:
                mode_best[m, i], mode_who[m, i] = float(times[j]), sel[j]
    best = np.full(len(areas), np.inf)
    who = np.full(len(areas), None, dtype=object)
    for i in np.flatnonzero(np.isfinite(mode_best).any(axis=0)).tolist():
        # A mode without a unit has time inf, so the rank standing in for it never decides.
        b = rules.best_candidate(mode_best[:, i], ranks[np.maximum(mode_who[:, i], 0)])
        if b is not None:
            best[i], who[i] = float(mode_best[b, i]), ids[mode_who[b, i]]
    return pd.DataFrame(
        {
            "code": areas["code"].astype(str).to_numpy(),
            "name": areas["name"].to_numpy(),
            "time_s": best,
            "unit_id": who,
        }
    )


def relocate_units(
    gdf_units: gpd.GeoDataFrame, moves: Mapping[str, tuple[float, float]]
) -> gpd.GeoDataFrame:
    """A copy of the units with some moved to new positions.

    Only the geometry changes: command (``street_code``), office and ownership stay as they
    were, since moving a station does not change who commands it.

    Parameters
    ----------
    gdf_units
        Units with ``unit_id`` and Point geometry; never changed.
    moves
        ``{unit_id: (lon, lat)}`` in WGS84 (EPSG:4326), whatever the frame's CRS.

    Returns
    -------
    geopandas.GeoDataFrame
        The units, same index and columns, moved units at their new points.

    Raises
    ------
    InputError
        Unknown unit ids, duplicate ids among those moved, or positions that are not two
        finite numbers within lon [-180, 180] and lat [-90, 90] (all listed at once).
    """
    _require(gdf_units, ("unit_id",), "units")
    if not isinstance(moves, Mapping):
        msg = f"moves must map unit ids to (lon, lat), got {type(moves).__name__}"
        raise InputError(msg)
    ids = gdf_units["unit_id"].astype(str)
    problems = []
    unknown = sorted(str(u) for u in moves if str(u) not in set(ids))
    if unknown:
        problems.append(f"unknown unit id(s) {', '.join(unknown[:10])}")
    dup = sorted(set(ids[ids.duplicated()]) & {str(u) for u in moves})
    if dup:
        problems.append(f"duplicate unit id(s) in the units: {', '.join(dup[:10])}")
    points: dict[str, tuple[float, float]] = {}
    for unit, where in moves.items():
        try:
            lon, lat = (float(v) for v in where)
        except (TypeError, ValueError):
            problems.append(f"{unit}: position {where!r} is not (lon, lat)")
            continue
        if not (
            math.isfinite(lon) and math.isfinite(lat) and -180 <= lon <= 180 and -90 <= lat <= 90
        ):
            problems.append(f"{unit}: position ({lon}, {lat}) is not a WGS84 lon, lat")
            continue
        points[str(unit)] = (lon, lat)
    if problems:
        msg = "cannot relocate units: " + "; ".join(problems)
        raise InputError(msg)
    out = gdf_units.copy()
    if not points:
        return out
    xs = np.array([p[0] for p in points.values()])
    ys = np.array([p[1] for p in points.values()])
    if out.crs is not None and not out.crs.equals("EPSG:4326"):
        xs, ys = Transformer.from_crs("EPSG:4326", out.crs, always_xy=True).transform(xs, ys)
    new = dict(zip(points, shapely.points(xs, ys), strict=True))
    moved = ids.isin(list(points)).to_numpy()
    geoms = out.geometry.to_numpy().copy()
    geoms[moved] = [new[u] for u in ids[moved]]
    out = out.set_geometry(gpd.GeoSeries(geoms, index=out.index, crs=out.crs))
    return out


def count_microgrids(gdf_areas: gpd.GeoDataFrame, level: Level | str = "grid") -> pd.Series:
    """Micro-grids per area of ``level``: the population proxy (30-100 households each).

    Returns
    -------
    pandas.Series
        Indexed by the level's codes (every area of the level, 0 where it has none).
    """
    _require(gdf_areas, ("code", "level"), "areas", geometry=False)
    lv = Level(_level_name(level))
    codes = _level_areas(gdf_areas, lv.value)["code"].astype(str)
    micro = gdf_areas.loc[gdf_areas["level"].astype(str) == Level.MICROGRID.value, "code"]
    # A child's code starts with its parent's leading digits (grids extend the 12-digit codes).
    prefixes = micro.astype(str).str[: lv.prefix_length]
    counts = prefixes.value_counts()
    keys = codes.str[: lv.prefix_length]
    return pd.Series(
        keys.map(counts).fillna(0).astype(int).to_numpy(),
        index=pd.Index(codes.to_numpy(), name="code"),
        name="microgrids",
    )


@dataclass(frozen=True)
class CoverageComparison:
    """Coverage before and after a change (see :func:`compare_coverage`).

    Attributes
    ----------
    areas
        One row per area: ``code``, ``name``, ``time_before_s``, ``time_after_s``, ``delta_s``
        (after - before; inf/-inf/NaN where a side is beyond the limit), ``unit_before``,
        ``unit_after``, ``population`` (when given) and ``change`` (``better``, ``worse``,
        ``same``).
    bands
        One row per band (``within 5 min``..., then ``beyond <last> min``): ``areas_before``,
        ``areas_after`` and, with a population, ``population_before``/``population_after``.
        Bands are cumulative: an area within 5 minutes is also within 10.
    worst
        The ``n_worst`` areas with the longest time after the change (then before), slowest first.
    summary
        Totals: areas better, worse and the same; mean, median and max time before and after
        (over areas reached); population-weighted mean time when a population is given.
    """

    areas: pd.DataFrame
    bands: pd.DataFrame
    worst: pd.DataFrame
    summary: dict[str, float]


def _check_table(df: Any, what: str) -> pd.DataFrame:
    _require(df, ("code", "time_s", "unit_id"), what, geometry=False)
    codes = df["code"].astype(str)
    dup = sorted(set(codes[codes.duplicated()]))
    if dup:
        msg = f"{what}: duplicate code(s) {', '.join(dup[:10])}"
        raise InputError(msg)
    times = pd.to_numeric(df["time_s"], errors="coerce")
    bad = times.isna() | (times < 0)
    if bad.any():
        msg = f"{what}: time_s must be >= 0 or inf, not for {', '.join(codes[bad].tolist()[:10])}"
        raise InputError(msg)
    return df


def compare_coverage(
    before: pd.DataFrame,
    after: pd.DataFrame,
    *,
    bands_min: Sequence[float] = DEFAULT_BANDS_MIN,
    population: Mapping[str, float] | pd.Series | None = None,
    n_worst: int = 10,
) -> CoverageComparison:
    """Compare two coverage tables of the same areas (from :func:`coverage_times`).

    Parameters
    ----------
    before, after
        Tables with ``code``, ``time_s`` and ``unit_id`` (``name`` optional), e.g. coverage
        before and after :func:`relocate_units`; never changed.
    bands_min
        Upper bounds (minutes, strictly increasing) of the cumulative bands.
    population
        A weight per area code, e.g. :func:`count_microgrids`; codes not named weigh 0.
    n_worst
        How many of the slowest areas :attr:`CoverageComparison.worst` lists.

    Raises
    ------
    InputError
        Missing columns, duplicate codes, negative or non-numeric times, tables of different
        areas, bad bands, or negative population.
    """
    _check_table(before, "before")
    _check_table(after, "after")
    bands = [float(b) for b in bands_min]
    if not bands or any(not b > 0 for b in bands) or bands != sorted(set(bands)):
        msg = f"bands_min must be positive and strictly increasing, got {list(bands_min)}"
        raise InputError(msg)
    if n_worst < 0:
        msg = f"n_worst must be >= 0, got {n_worst}"
        raise InputError(msg)
    a = before.assign(code=before["code"].astype(str)).set_index("code")
    b = after.assign(code=after["code"].astype(str)).set_index("code")
    only_a = sorted(set(a.index) - set(b.index))
    only_b = sorted(set(b.index) - set(a.index))
    if only_a or only_b:
        msg = (
            "before and after cover different areas: "
            f"only before {only_a[:10]}, only after {only_b[:10]}"
        )
        raise InputError(msg)
    b = b.loc[a.index]
    t0 = pd.to_numeric(a["time_s"]).to_numpy(dtype=float)
    t1 = pd.to_numeric(b["time_s"]).to_numpy(dtype=float)
    with np.errstate(invalid="ignore"):
        delta = t1 - t0  # inf - inf is NaN: still beyond the limit, change unknown
    change = np.where(t1 < t0, "better", np.where(t1 > t0, "worse", "same"))
    names = a["name"] if "name" in a.columns else b.get("name", pd.Series(None, index=a.index))
    table = pd.DataFrame(
        {
            "code": a.index.to_numpy(),
            "name": names.to_numpy(),
            "time_before_s": t0,
            "time_after_s": t1,
            "delta_s": delta,
            "unit_before": a["unit_id"].to_numpy(),
            "unit_after": b["unit_id"].to_numpy(),
            "change": change,
        }
    )
    weights: np.ndarray | None = None
    if population is not None:
        pop = pd.Series(population, dtype=float)
        pop.index = pop.index.astype(str)
        if (pop < 0).any() or pop.isna().any():
            msg = "population must be >= 0 for every code"
            raise InputError(msg)
        weights = pop.reindex(table["code"]).fillna(0.0).to_numpy()
        table["population"] = weights

    labels = [f"within {x:g} min" for x in bands] + [f"beyond {bands[-1]:g} min"]
    rows: dict[str, list[float]] = {"areas_before": [], "areas_after": []}
    if weights is not None:
        rows |= {"population_before": [], "population_after": []}
    for i in range(len(bands) + 1):
        for side, t in (("before", t0), ("after", t1)):
            sel = t <= bands[i] * 60.0 if i < len(bands) else ~(t <= bands[-1] * 60.0)
            rows[f"areas_{side}"].append(int(sel.sum()))
            if weights is not None:
                rows[f"population_{side}"].append(float(weights[sel].sum()))
    band_table = pd.DataFrame(rows, index=pd.Index(labels, name="band"))

    order = np.lexsort((table["code"].to_numpy(), -t0, -t1))
    worst = table.iloc[order[:n_worst]].reset_index(drop=True)

    def stats(t: np.ndarray, side: str) -> dict[str, float]:
        ok = np.isfinite(t)
        out = {
            f"mean_{side}_s": float(t[ok].mean()) if ok.any() else math.nan,
            f"median_{side}_s": float(np.median(t[ok])) if ok.any() else math.nan,
            f"max_{side}_s": float(t.max()) if len(t) else math.nan,
            f"unreached_{side}": float((~ok).sum()),
        }
        if weights is not None:
            w = weights[ok]
            out[f"weighted_mean_{side}_s"] = (
                float(np.average(t[ok], weights=w)) if w.sum() > 0 else math.nan
            )
        return out

    summary: dict[str, float] = {
        "areas": float(len(table)),
        "better": float((change == "better").sum()),
        "worse": float((change == "worse").sum()),
        "same": float((change == "same").sum()),
        **stats(t0, "before"),
        **stats(t1, "after"),
    }
    return CoverageComparison(table, band_table, worst, summary)


# --------------------------------------------------------------------------------------------
# hot spots
# --------------------------------------------------------------------------------------------


def build_contiguity_weights(
    gdf_areas: gpd.GeoDataFrame, *, min_shared_m: float = 1.0
) -> sp.csr_matrix:
    """Binary contiguity weights: 1 where two areas share a border, else 0.

    Two areas are neighbours when their borders run together for more than ``min_shared_m``
    metres (as :func:`gridgov.areas.street_adjacency` decides, with an STRtree; touching at a
    corner does not count). The areas are taken as given, whatever their ``level``.

    Parameters
    ----------
    gdf_areas
        Polygons with a unique ``code``, any CRS (EPSG:4326 preferred); never changed.

    Returns
    -------
    scipy.sparse.csr_matrix
        n × n, symmetric, zero diagonal, rows and columns in the frame's row order.
    """
    _require(gdf_areas, ("code",), "areas")
    codes = gdf_areas["code"].astype(str)
    dup = sorted(set(codes[codes.duplicated()]))
    if dup:
        msg = f"areas: duplicate code(s) {', '.join(dup[:10])}"
        raise InputError(msg)
    n = len(gdf_areas)
    if n == 0:
        return sp.csr_matrix((0, 0))
    # street_adjacency works on any one level; label the frame as a single level for it.
    one = gdf_areas[["code", gdf_areas.geometry.name]].assign(level=Level.GRID.value)
    neighbours = street_adjacency(one, Level.GRID, min_shared_m=min_shared_m)
    pos = {c: i for i, c in enumerate(codes)}
    rows = [pos[c] for c, ns in neighbours.items() for _ in ns]
    cols = [pos[m] for ns in neighbours.values() for m in ns]
    data = np.ones(len(rows))
    return sp.csr_matrix((data, (rows, cols)), shape=(n, n))


def _time_window(
    period: Period | str | None, since: datetime | None, until: datetime | None
) -> tuple[datetime | None, datetime | None]:
    if period is not None and (since is not None or until is not None):
        msg = "give either a period or since/until, not both"
        raise InputError(msg)
    if period is not None:
        span = period if isinstance(period, Period) else Period.parse(period)
        return span.start, span.end
    for name, value in (("since", since), ("until", until)):
        if value is not None and (not isinstance(value, datetime) or value.tzinfo is None):
            msg = f"{name} must be a timezone-aware datetime, got {value!r}"
            raise InputError(msg)
    if since is not None and until is not None and not since < until:
        msg = f"since {since} is not before until {until}"
        raise InputError(msg)
    return since, until


def _incident_codes(gdf_incidents: pd.DataFrame, areas: gpd.GeoDataFrame, level: str) -> pd.Series:
    """The ``level`` code of each incident: its ``<level>_code``, else the area it lies in."""
    column = f"{level}_code"
    # Positional work: an incidents frame may carry a duplicated index (concatenated sources).
    out = np.full(len(gdf_incidents), None, dtype=object)
    if column in gdf_incidents.columns:
        values = gdf_incidents[column].to_numpy(dtype=object)
        known = pd.notna(values)
        out[known] = [str(v) for v in values[known]]
    todo = np.flatnonzero(pd.isna(out))
    if len(todo):
        if not isinstance(gdf_incidents, gpd.GeoDataFrame):
            msg = f"incidents: {len(todo)} without {column} and no geometry to locate them"
            raise InputError(msg)
        if gdf_incidents.crs is None:
            msg = "incidents: no CRS (expected EPSG:4326)"
            raise InputError(msg)
        pts = _wgs84(gdf_incidents.iloc[todo])
        _, _, ok = _point_xy(pts)
        polys = _wgs84(areas)
        tree = shapely.STRtree(polys.geometry.to_numpy())
        which, hit = tree.query(pts.geometry.to_numpy()[ok], predicate="intersects")
        # A point on a shared edge belongs to the smaller code (the project's rule).
        pairs = pd.DataFrame({"i": which, "code": polys["code"].astype(str).to_numpy()[hit]})
        first = pairs.sort_values(["i", "code"]).drop_duplicates("i")
        out[todo[np.flatnonzero(ok)][first["i"].to_numpy()]] = first["code"].to_numpy()
    return pd.Series(out, dtype=object)


def gi_star(values: np.ndarray, weights: sp.spmatrix) -> np.ndarray:
    """Getis-Ord Gi* z-scores of ``values`` under ``weights`` (self added with weight 1).

    See :func:`hot_spots` for the formula. NaN where it is undefined (fewer than two areas,
    or all values equal).
    """
    x = np.asarray(values, dtype=float)
    n = len(x)
    if n < 2:
        return np.full(n, np.nan)
    w = sp.csr_matrix(weights, dtype=float)
    w.setdiag(1.0)
    mean = x.mean()
    s = math.sqrt(max(float((x**2).mean() - mean**2), 0.0))
    sum_w = np.asarray(w.sum(axis=1)).ravel()
    sum_w2 = np.asarray(w.multiply(w).sum(axis=1)).ravel()
    numerator = w @ x - mean * sum_w
    denominator = s * np.sqrt((n * sum_w2 - sum_w**2) / (n - 1))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = numerator / denominator
    return np.where((s > 0) & (denominator > 0), z, np.nan)


def hot_spots(
    gdf_areas: gpd.GeoDataFrame,
    gdf_incidents: pd.DataFrame,
    *,
    level: Level | str = "grid",
    period: Period | str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    alpha: float = 0.05,
    time_column: str = "reported_at",
) -> gpd.GeoDataFrame:
    r"""Incident counts per area and their Getis-Ord Gi* hot and cold spots.

    Each area ``i`` of ``level`` counts the incidents ``x_i`` located in it (its
    ``<level>_code`` column, else its point in the polygon), reported in ``[since, until)``
    or in ``period``. With binary contiguity weights ``w_ij`` (1 when ``i`` and ``j`` share a
    border, :func:`build_contiguity_weights`) and ``w_ii = 1`` (the star: an area counts in
    its own neighbourhood), over the ``n`` areas:

    .. math::

        G_i^* = \frac{\sum_j w_{ij} x_j - \bar{x} \sum_j w_{ij}}
                     {S \sqrt{\left(n \sum_j w_{ij}^2 - (\sum_j w_{ij})^2\right) / (n - 1)}},
        \quad \bar{x} = \frac{1}{n} \sum_j x_j,
        \quad S = \sqrt{\frac{1}{n} \sum_j x_j^2 - \bar{x}^2}

    (Getis & Ord 1992; Ord & Getis 1995). ``G_i^*`` is already a z-score: under the null of no
    spatial association it is approximately standard normal, so the two-sided p-value is
    ``2 (1 - Φ(|G_i^*|))``. An area is a ``hot`` spot when ``p < alpha`` and ``G_i^* > 0``,
    ``cold`` when ``p < alpha`` and ``G_i^* < 0``. No correction for multiple testing is
    applied: with many areas, some flags at ``alpha`` are expected by chance alone. Where
    every count is equal the statistic is undefined (NaN, not significant).

    Parameters
    ----------
    gdf_areas
        The area hierarchy (EPSG:4326); never changed.
    gdf_incidents
        Incidents: a ``<level>_code`` column or Point geometry (or both), and ``time_column``
        when a window is given; never changed. Incidents outside every area are left out
        (their number is in ``attrs["unlocated"]``).
    level
        The areas' level.
    period
        A :class:`~gridgov.periods.Period` or its text (``2026-11``, ``2026-Q4``).
    since, until
        Timezone-aware bounds (instead of ``period``); either may be None.
    alpha
        Significance level, in (0, 1).
    time_column
        The report time (timezone-aware).

    Returns
    -------
    geopandas.GeoDataFrame
        The areas of ``level`` (their index, geometry, ``code``, ``name``) with ``count``,
        ``gi_star``, ``p_value`` and ``spot`` (``hot``, ``cold`` or ``not significant``).

    Raises
    ------
    InputError
        Bad level, alpha or window, missing columns, naive times, codes of no area.
    """
    _require(gdf_areas, ("code", "name", "level"), "areas")
    if not isinstance(gdf_incidents, pd.DataFrame):
        msg = f"incidents must be a (Geo)DataFrame, got {type(gdf_incidents).__name__}"
        raise InputError(msg)
    lv = _level_name(level)
    if not 0 < alpha < 1:
        msg = f"alpha must lie in (0, 1), got {alpha}"
        raise InputError(msg)
    start, end = _time_window(period, since, until)
    areas = _level_areas(gdf_areas, lv)
    if len(areas) == 0:
        msg = f"areas: no {lv} in the areas"
        raise InputError(msg)
    incidents = gdf_incidents
    if start is not None or end is not None:
        if time_column not in incidents.columns:
            msg = f"incidents: missing column {time_column} (needed for the time window)"
            raise InputError(msg)
        times = pd.to_datetime(incidents[time_column])
        if len(times) and times.dt.tz is None:
            msg = f"incidents: {time_column} must be timezone-aware"
            raise InputError(msg)
        keep = pd.Series(True, index=incidents.index)
        if start is not None:
            keep &= times >= pd.Timestamp(start)
        if end is not None:
            keep &= times < pd.Timestamp(end)
        incidents = incidents[keep.to_numpy()]
    codes = _incident_codes(incidents, areas, lv)
    known = set(areas["code"].astype(str))
    stray = sorted(set(codes.dropna()) - known)
    if stray:
        msg = f"incidents: {lv}_code of no {lv} in the areas: {', '.join(stray[:10])}"
        raise InputError(msg)
    counts = codes.value_counts()
    x = areas["code"].astype(str).map(counts).fillna(0).astype(int).to_numpy()
    z = gi_star(x, build_contiguity_weights(areas))
    # Imported here: scipy.stats takes most of a second to import, and the CLI and the map
    # builders import this module for coverage_times alone.
    from scipy.stats import norm

    with np.errstate(invalid="ignore"):
        p = 2.0 * norm.sf(np.abs(z))
    significant = np.isfinite(p) & (p < alpha)
    spot = np.where(
        significant & (z > 0), HOT, np.where(significant & (z < 0), COLD, NOT_SIGNIFICANT)
    )
    out = gpd.GeoDataFrame(
        {
            "code": areas["code"].astype(str).to_numpy(),
            "name": areas["name"].to_numpy(),
            "count": x,
            "gi_star": z,
            "p_value": p,
            "spot": spot,
        },
        geometry=areas.geometry.to_numpy(),
        crs=areas.crs,
        index=areas.index.copy(),
    )
    out.attrs["unlocated"] = int(codes.isna().sum())
    return out


__all__ = [
    "COLD",
    "DEFAULT_BANDS_MIN",
    "HOT",
    "NOT_SIGNIFICANT",
    "CoverageComparison",
    "build_contiguity_weights",
    "compare_coverage",
    "count_microgrids",
    "coverage_times",
    "gi_star",
    "hot_spots",
    "relocate_units",
]
