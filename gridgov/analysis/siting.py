"""Where to put a station: location-allocation over the road network (pure).

Demand is a set of weighted points (the representative points of the areas of a level, weighted
by their micro-grids, an attribute, or a period's incidents); sites are candidate points (road
nodes, or a user's file) and the existing stations of a force kind. The cost of serving a demand
point from a site is the network travel time from the site to the point over the kind's travel
mode (one forward Dijkstra per site, :mod:`gridgov.analysis.forward_search`), the direction a
unit travels.

Two models, built with spopt (PySAL) and solved through PuLP by HiGHS (CBC when highspy is
missing; both exact, no optimality gap):

- **p-median** (:func:`p_median`): choose sites minimising the demand-weighted travel time, each
  demand point served by its nearest chosen site;
- **maximal covering** (:func:`max_cover`, MCLP): choose sites maximising the demand within a
  standard time (fire 240 s, NFPA 1710's first-engine travel time; others from the catalogue).

Existing stations are either kept (``keep_existing``: spopt's predefined facilities, ``add``
more are chosen) or free (all ``n_existing + add`` sites are chosen anew among existing and
candidate sites). :func:`brute_force` enumerates every choice on a small instance and is the
check that the solver's answer is optimal.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from gridgov.analysis import forward_search
from gridgov.catalog import Catalog
from gridgov.errors import InputError
from gridgov.model import ForceKind, TravelMode
from gridgov.network import RoadNetwork
from gridgov.travel_model import TravelModel

#: NFPA 1710's travel time for the first engine company (seconds).
FIRE_STANDARD_S = 240.0
#: Default number of candidate road nodes kept (spread over the district).
DEFAULT_MAX_CANDIDATES = 60
#: The cost that stands for "unreachable within the search bound" in the solver's matrix.
_UNREACHABLE_FACTOR = 10.0
#: The objectives :func:`brute_force` knows.
OBJECTIVES = ("p-median", "max-cover")


@dataclass(frozen=True)
class SitingProblem:
    """A location-allocation instance.

    ``cost`` is demand × sites seconds (inf where unreachable within the bound); ``weights``
    the demand weights; ``sites`` a GeoDataFrame with ``site_id``, ``existing`` (a station
    already there) and points; ``demand`` a GeoDataFrame with ``code``, ``weight`` and points.
    """

    cost: np.ndarray
    weights: np.ndarray
    sites: gpd.GeoDataFrame
    demand: gpd.GeoDataFrame

    @property
    def existing(self) -> np.ndarray:
        return np.flatnonzero(self.sites["existing"].to_numpy(dtype=bool))


@dataclass(frozen=True)
class SitingResult:
    """The sites chosen and the figures before (existing stations) and after.

    ``chosen`` indexes :attr:`SitingProblem.sites`; ``added`` are those not existing.
    ``summary`` holds ``covered_share_before/after`` (demand within the standard, when one is
    given), ``weighted_mean_s_before/after`` and the objective value.
    """

    model: str
    chosen: np.ndarray
    added: np.ndarray
    summary: dict[str, float]
    sites: gpd.GeoDataFrame


def demand_points(areas: gpd.GeoDataFrame, weights: pd.Series | None = None) -> gpd.GeoDataFrame:
    """Weighted demand points: each area's ``point_on_surface`` with a weight.

    Parameters
    ----------
    areas
        Areas of one level (``code``); never changed.
    weights
        Weight per area code (e.g. :func:`gridgov.coverage.count_microgrids`, incident counts);
        default 1 each. Areas of weight 0 are left out.
    """
    codes = areas["code"].astype(str)
    w = (
        pd.Series(1.0, index=codes.to_numpy())
        if weights is None
        else pd.Series(weights, dtype=float).reindex(codes.to_numpy()).fillna(0.0)
    )
    if (w < 0).any():
        msg = "demand weights must be >= 0"
        raise InputError(msg)
    points = shapely.point_on_surface(areas.to_crs("EPSG:4326").geometry.to_numpy())
    out = gpd.GeoDataFrame(
        {"code": codes.to_numpy(), "weight": w.to_numpy()}, geometry=points, crs="EPSG:4326"
    )
    return out[out["weight"] > 0].reset_index(drop=True)


def demand_weights(gdf_areas: gpd.GeoDataFrame, level: str, column: str) -> pd.Series:
    """A numeric attribute of the areas of ``level`` as demand weights (by code).

    Raises
    ------
    InputError
        No such column, or values that are not numbers >= 0 (missing counts as 0).
    """
    areas = gdf_areas[gdf_areas["level"].astype(str) == level]
    if column not in areas.columns:
        msg = f"the areas have no column {column!r}"
        raise InputError(msg)
    values = pd.to_numeric(areas[column], errors="coerce")
    bad = values.isna() & areas[column].notna()
    if bad.any() or (values < 0).any():
        msg = f"{column} must hold numbers >= 0"
        raise InputError(msg)
    return pd.Series(values.fillna(0.0).to_numpy(), index=areas["code"].astype(str).to_numpy())


def spread_nodes(
    gdf_nodes: gpd.GeoDataFrame, k: int, *, within: shapely.Geometry | None = None
) -> gpd.GeoDataFrame:
    """Up to ``k`` road nodes spread over an area (farthest-point order from the first node).

    Candidate sites: a station stands on a road, and ``k`` well-spread nodes keep the
    solver's instance small.
    """
    nodes = gdf_nodes.to_crs("EPSG:4326")
    if within is not None:
        nodes = nodes[nodes.geometry.within(within)]
    nodes = nodes.sort_values("node_id").reset_index(drop=True)
    if len(nodes) <= k:
        return nodes
    xy = np.column_stack([nodes.geometry.x, nodes.geometry.y * 1.0])
    xy[:, 0] *= math.cos(math.radians(float(np.mean(xy[:, 1]))))
    picked = [0]
    dmin = np.hypot(*(xy - xy[0]).T)
    while len(picked) < k:
        nxt = int(np.argmax(dmin))
        picked.append(nxt)
        dmin = np.minimum(dmin, np.hypot(*(xy - xy[nxt]).T))
    return nodes.iloc[sorted(picked)].reset_index(drop=True)


def build_problem(
    travel: TravelModel,
    demand: gpd.GeoDataFrame,
    candidates: gpd.GeoDataFrame,
    existing: gpd.GeoDataFrame,
    *,
    mode: TravelMode | str = TravelMode.DRIVE,
    limit_s: float = 3600.0,
) -> SitingProblem:
    """The travel-time matrix from every site (existing first) to every demand point.

    Parameters
    ----------
    travel
        The road network.
    demand
        :func:`demand_points` (``code``, ``weight``, points).
    candidates, existing
        Points with an id column (``site_id``, else ``node_id``, ``office_id`` or ``unit_id``).
    mode
        The travel mode of the force's units.
    limit_s
        Search bound; beyond it a pair is unreachable (inf).

    Raises
    ------
    InputError
        No demand, no sites, a site too far from the roads, or no road network.
    """
    if not isinstance(travel, RoadNetwork):
        msg = "siting needs a road network (no roads are stored)"
        raise InputError(msg)
    if len(demand) == 0:
        msg = "no demand to serve (every weight is 0)"
        raise InputError(msg)
    frames = []
    for frame, is_existing in ((existing, True), (candidates, False)):
        if len(frame) == 0:
            continue
        idcol = next(
            (c for c in ("site_id", "node_id", "office_id", "unit_id") if c in frame.columns), None
        )
        ids = frame[idcol].astype(str) if idcol else pd.Series(range(len(frame))).astype(str)
        frames.append(
            gpd.GeoDataFrame(
                {"site_id": ids.to_numpy(), "existing": is_existing},
                geometry=frame.to_crs("EPSG:4326").geometry.to_numpy(),
                crs="EPSG:4326",
            )
        )
    if not frames:
        msg = "no candidate or existing sites"
        raise InputError(msg)
    sites = pd.concat(frames, ignore_index=True)
    sites = sites.drop_duplicates("site_id").reset_index(drop=True)
    m = TravelMode(mode)
    snapped = travel.snap(sites.geometry.x.to_numpy(), sites.geometry.y.to_numpy(), m)
    far = np.asarray(snapped.far)
    if far.any():
        msg = f"site(s) too far from any {m.value} road: {', '.join(sites['site_id'][far][:10])}"
        raise InputError(msg)
    targets = travel.snap(demand.geometry.x.to_numpy(), demand.geometry.y.to_numpy(), m)
    arrays = forward_search.mode_arrays(travel, m)
    dist = forward_search.node_times(arrays, snapped, np.arange(len(sites)), limit_s)
    cost = forward_search.times_at(arrays, dist, targets).T
    cost[np.asarray(targets.far)] = np.inf
    cost = np.where(cost <= forward_search.search_bound(limit_s), cost, np.inf)
    return SitingProblem(
        cost=cost,
        weights=demand["weight"].to_numpy(dtype=float),
        sites=gpd.GeoDataFrame(sites, geometry="geometry", crs="EPSG:4326"),
        demand=demand,
    )


def _finite_cost(problem: SitingProblem) -> np.ndarray:
    finite = problem.cost[np.isfinite(problem.cost)]
    big = (float(finite.max()) if len(finite) else 1.0) * _UNREACHABLE_FACTOR
    return np.where(np.isfinite(problem.cost), problem.cost, big)


def _figures(
    problem: SitingProblem, chosen: Sequence[int], standard_s: float | None
) -> dict[str, float]:
    """Nearest chosen site per demand point: weighted mean and the share within the standard."""
    w = problem.weights
    if len(chosen) == 0:
        best = np.full(len(w), np.inf)
    else:
        best = problem.cost[:, list(chosen)].min(axis=1)
    reached = np.isfinite(best)
    out = {
        "weighted_mean_s": float(np.average(best[reached], weights=w[reached]))
        if reached.any() and w[reached].sum() > 0
        else math.nan,
        "unreached_weight": float(w[~reached].sum()),
    }
    if standard_s is not None:
        out["covered_share"] = float(w[best <= standard_s].sum() / w.sum())
    return out


def _check_add(problem: SitingProblem, add: int) -> int:
    # Kept or free, the existing stations stay in number: ``add`` more sites are opened.
    n_existing = len(problem.existing)
    total = add + n_existing
    if add < 1 or total > len(problem.sites):
        msg = f"add must be between 1 and {len(problem.sites) - n_existing}, got {add}"
        raise InputError(msg)
    return total


def _result(
    problem: SitingProblem,
    model: str,
    chosen: Sequence[int],
    objective: float,
    standard_s: float | None,
) -> SitingResult:
    chosen_arr = np.array(sorted(int(c) for c in chosen), dtype=np.int64)
    existing = problem.existing
    before = _figures(problem, existing.tolist(), standard_s)
    after = _figures(problem, chosen_arr.tolist(), standard_s)
    summary = {f"{k}_before": v for k, v in before.items()} | {
        f"{k}_after": v for k, v in after.items()
    }
    summary["objective"] = objective
    if standard_s is not None:
        summary["standard_s"] = standard_s
    sites = problem.sites.assign(
        chosen=np.isin(np.arange(len(problem.sites)), chosen_arr),
    )
    sites["added"] = sites["chosen"] & ~sites["existing"]
    served = problem.cost[:, chosen_arr].argmin(axis=1) if len(chosen_arr) else np.zeros(0)
    load = np.bincount(chosen_arr[served], weights=problem.weights, minlength=len(sites))
    sites["demand_served"] = np.where(sites["chosen"], load, 0.0)
    return SitingResult(
        model=model,
        chosen=chosen_arr,
        added=np.setdiff1d(chosen_arr, existing),
        summary=summary,
        sites=sites,
    )


@contextlib.contextmanager
def _no_banner() -> Iterator[None]:
    """Silence the process's standard output at the descriptor level for a moment: HiGHS prints
    its copyright banner from C++ when a model is created, whatever the options say, and it
    would land in the middle of a command's or a notebook's output."""
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no descriptor 1 (some embedded interpreters): nothing to silence
        yield
        return
    try:
        with open(os.devnull, "w") as sink:
            os.dup2(sink.fileno(), 1)
            yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def _solve(model: Any) -> Any:
    with _no_banner():
        return model.solve(_solver())


def _solver() -> Any:
    """HiGHS (through highspy) with no optimality gap: on the p-median instances here it is an
    order of magnitude faster than CBC; CBC, which PuLP ships, when highspy is missing."""
    import pulp

    highs = pulp.HiGHS(msg=False, gapRel=0.0)
    return highs if highs.available() else pulp.PULP_CBC_CMD(msg=False)


def p_median(
    problem: SitingProblem,
    add: int,
    *,
    keep_existing: bool = True,
    standard_s: float | None = None,
) -> SitingResult:
    """Choose sites minimising the demand-weighted travel time (spopt ``PMedian``).

    ``standard_s`` only adds the covered shares to the summary.
    """
    import pulp
    from spopt.locate import PMedian

    total = _check_add(problem, add)
    predefined = np.isin(np.arange(len(problem.sites)), problem.existing) if keep_existing else None
    model = PMedian.from_cost_matrix(
        _finite_cost(problem),
        problem.weights,
        p_facilities=total,
        predefined_facilities_arr=predefined,
    )
    model = _solve(model)
    chosen = [j for j, clients in enumerate(model.fac2cli) if len(clients)]
    chosen = _with_idle_sites(model, chosen, total)
    objective = float(pulp.value(model.problem.objective))
    return _result(problem, "p-median", chosen, objective, standard_s)


def _with_idle_sites(model: object, chosen: list[int], total: int) -> list[int]:
    """The opened sites, including one that serves nobody (a tie or a predefined one)."""
    opened = [
        j
        for j, var in enumerate(model.fac_vars)  # type: ignore[attr-defined]
        if (var.value() or 0) > 0.5
    ]
    return opened if len(opened) == total else chosen


def max_cover(
    problem: SitingProblem,
    add: int,
    *,
    standard_s: float,
    keep_existing: bool = True,
) -> SitingResult:
    """Choose sites maximising the demand within ``standard_s`` (spopt ``MCLP``)."""
    import pulp
    from spopt.locate import MCLP

    if not (math.isfinite(standard_s) and standard_s > 0):
        msg = f"the standard must be a positive number of seconds, got {standard_s}"
        raise InputError(msg)
    total = _check_add(problem, add)
    predefined = np.isin(np.arange(len(problem.sites)), problem.existing) if keep_existing else None
    model = MCLP.from_cost_matrix(
        _finite_cost(problem),
        problem.weights,
        service_radius=standard_s,
        p_facilities=total,
        predefined_facilities_arr=predefined,
    )
    model = _solve(model)
    chosen = _with_idle_sites(model, [], total)
    objective = float(pulp.value(model.problem.objective))
    return _result(problem, "max-cover", chosen, objective, standard_s)


def standard_for_kind(kind: ForceKind | str, catalog: Catalog | None) -> float:
    """The coverage standard (seconds) of a force kind.

    Fire: :data:`FIRE_STANDARD_S` (NFPA 1710). Other kinds: the strictest maximum travel time
    of the catalogue's matters the kind leads (or assists in, when it leads none).
    """
    k = ForceKind(kind)
    if k is ForceKind.FIRE:
        return FIRE_STANDARD_S
    matters = () if catalog is None else catalog.for_kind(k, lead_only=True)
    if not matters and catalog is not None:
        matters = catalog.for_kind(k)
    if not matters:
        msg = f"no matter of the catalogue needs {k.value}: give the standard (--standard)"
        raise InputError(msg)
    return min(m.max_travel_min for m in matters) * 60.0


def existing_stations(gdf_units: gpd.GeoDataFrame, kind: ForceKind | str) -> gpd.GeoDataFrame:
    """One site per office of a kind: where its first on-duty unit (by id) stands."""
    k = ForceKind(kind).value
    units = gdf_units[(gdf_units["kind"].astype(str) == k) & gdf_units["on_duty"].astype(bool)]
    units = units[~units.geometry.is_empty & units.geometry.notna()].sort_values("unit_id")
    key = units["office_id"].fillna(units["unit_id"]).astype(str)
    first = units.assign(site_id=key).drop_duplicates("site_id")
    return first[["site_id", first.geometry.name]].reset_index(drop=True)


def kind_mode(gdf_units: gpd.GeoDataFrame, kind: ForceKind | str) -> TravelMode:
    """The travel mode most of a kind's units use (drive when the kind has none)."""
    modes = gdf_units.loc[gdf_units["kind"].astype(str) == ForceKind(kind).value, "travel_mode"]
    return TravelMode(str(modes.mode().sort_values().iloc[0])) if len(modes) else TravelMode.DRIVE


def plan_sites(
    gdf_areas: gpd.GeoDataFrame,
    gdf_units: gpd.GeoDataFrame,
    travel: TravelModel,
    kind: ForceKind | str,
    add: int,
    *,
    model: str = "max-cover",
    standard_s: float | None = None,
    catalog: Catalog | None = None,
    candidates: gpd.GeoDataFrame | None = None,
    weights: pd.Series | None = None,
    level: str = "grid",
    max_candidates: int = DEFAULT_MAX_CANDIDATES,
    keep_existing: bool = True,
) -> SitingResult:
    """Where ``add`` more stations of ``kind`` should go, on a district's frames.

    Demand: the areas of ``level`` weighted by ``weights`` (default their micro-grids).
    Candidates: ``candidates`` (points), else ``max_candidates`` of the network's road nodes
    spread over the district. Existing stations: one per office of the kind. The standard:
    ``standard_s``, else :func:`standard_for_kind`.
    """
    from gridgov.coverage import count_microgrids

    if model not in OBJECTIVES:
        msg = f"unknown model {model!r}; expected one of {', '.join(OBJECTIVES)}"
        raise InputError(msg)
    if not isinstance(travel, RoadNetwork):
        msg = "siting needs a road network (no roads are stored)"
        raise InputError(msg)
    standard = standard_for_kind(kind, catalog) if standard_s is None else float(standard_s)
    areas = gdf_areas[gdf_areas["level"].astype(str) == level]
    if len(areas) == 0:
        msg = f"no {level} areas"
        raise InputError(msg)
    demand = demand_points(
        areas, count_microgrids(gdf_areas, level) if weights is None else weights
    )
    if candidates is None:
        district = gdf_areas[gdf_areas["level"].astype(str) == "district"]
        within = (
            shapely.union_all(district.to_crs("EPSG:4326").geometry.to_numpy())
            if len(district)
            else None
        )
        candidates = spread_nodes(travel.gdf_nodes, max_candidates, within=within)
    problem = build_problem(
        travel,
        demand,
        candidates,
        existing_stations(gdf_units, kind),
        mode=kind_mode(gdf_units, kind),
    )
    if model == "p-median":
        return p_median(problem, add, keep_existing=keep_existing, standard_s=standard)
    return max_cover(problem, add, standard_s=standard, keep_existing=keep_existing)


def objective_value(
    problem: SitingProblem, chosen: Sequence[int], objective: str, standard_s: float | None = None
) -> float:
    """The objective of a choice: weighted travel time (p-median) or weight covered."""
    cost = _finite_cost(problem)[:, list(chosen)].min(axis=1)
    if objective == "p-median":
        return float((problem.weights * cost).sum())
    if objective == "max-cover":
        if standard_s is None:
            msg = "max-cover needs a standard"
            raise InputError(msg)
        return float(problem.weights[cost <= standard_s].sum())
    msg = f"unknown objective {objective!r}; expected one of {', '.join(OBJECTIVES)}"
    raise InputError(msg)


def brute_force(
    problem: SitingProblem,
    add: int,
    objective: str,
    *,
    standard_s: float | None = None,
    keep_existing: bool = True,
) -> tuple[tuple[int, ...], float]:
    """Every choice enumerated: the best sites and their objective (small instances only)."""
    total = _check_add(problem, add)
    existing = tuple(problem.existing.tolist()) if keep_existing else ()
    pool = [j for j in range(len(problem.sites)) if j not in existing]
    best: tuple[tuple[int, ...], float] | None = None
    for extra in itertools.combinations(pool, total - len(existing)):
        chosen = tuple(sorted(existing + extra))
        value = objective_value(problem, chosen, objective, standard_s)
        better = best is None or (value < best[1] if objective == "p-median" else value > best[1])
        if better:
            best = (chosen, value)
    assert best is not None
    return best


__all__ = [
    "DEFAULT_MAX_CANDIDATES",
    "FIRE_STANDARD_S",
    "OBJECTIVES",
    "SitingProblem",
    "SitingResult",
    "brute_force",
    "build_problem",
    "demand_points",
    "demand_weights",
    "existing_stations",
    "kind_mode",
    "max_cover",
    "objective_value",
    "p_median",
    "plan_sites",
    "spread_nodes",
    "standard_for_kind",
]
