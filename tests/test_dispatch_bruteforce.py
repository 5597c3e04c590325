"""The dispatcher against an independent brute force, on the reference district.

Everything the dispatcher decides is recomputed here without its code: the largest strongly
connected part per mode (networkx), snapping (shapely distances to every kept road), the incident's
street, community and grid (shapely containment), the street neighbours (shared borders measured in
metres), every candidate's travel time (networkx Dijkstra on a graph whose roads are split at each
unit and at the incident), and the tier rules of DESIGN.md "Dispatch semantics" as gridgov reads
them (own grid worker for grid-level matters, street, touching streets, district, then the best
over the maximum travel time). 2,000 random incidents, with about a third of the units busy or off
duty so that every tier is reached.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import geopandas as gpd
import networkx as nx
import numpy as np
import pandas as pd
import pytest
import shapely
from pyproj import Transformer

from gridgov import dispatch
from gridgov.catalog import load_catalog
from gridgov.errors import InputError
from gridgov.model import EscalationLevel, ForceKind
from gridgov.network import build_network
from gridgov.reference import read_reference_district
from gridgov.settings import get_settings

N_INCIDENTS = 2_000
SEED = 20261127
TOL_S = 1e-6
MODES = ("drive", "bike", "walk")
_LEVEL_RANK = {lv: i for i, lv in enumerate(EscalationLevel)}


# --------------------------------------------------------------------------------------------
# the independent model
# --------------------------------------------------------------------------------------------


@dataclass
class _ModeGraph:
    """One mode's routable roads: a networkx graph and the kept road geometries (metres)."""

    G: nx.DiGraph
    # undirected roads: (a, b) with a < b -> directed weights and the metric line from a to b
    roads: list[tuple[int, int]]
    lines: np.ndarray
    weight: dict[tuple[int, int], float]
    # virtual points already inserted per road: (a, b) -> sorted [(frac from a, node)]
    on_road: dict[tuple[int, int], list[tuple[float, Any]]] = field(default_factory=dict)
    # directed edges currently standing for each road that has virtual points
    pieces: dict[tuple[int, int], list[tuple[Any, Any]]] = field(default_factory=dict)


def _mode_graph(gdf_links_m: gpd.GeoDataFrame, node_xy: dict[int, Any], mode: str) -> _ModeGraph:
    speed = gdf_links_m[f"speed_{mode}_kmh"].to_numpy(float)
    weight: dict[tuple[int, int], float] = {}
    for u, v, length, kmh in zip(
        gdf_links_m["u"].tolist(),
        gdf_links_m["v"].tolist(),
        gdf_links_m["length_m"].tolist(),
        speed.tolist(),
        strict=True,
    ):
        if kmh > 0:
            weight[(u, v)] = length / (kmh / 3.6)
    if mode == "walk":
        # Pedestrians are not bound by one-way rules.
        for (u, v), w in list(weight.items()):
            weight.setdefault((v, u), w)
    G = nx.DiGraph()
    G.add_weighted_edges_from((u, v, w) for (u, v), w in weight.items())
    keep = max(nx.strongly_connected_components(G), key=len)
    G = G.subgraph(keep).copy()
    weight = {(u, v): w for (u, v), w in weight.items() if u in keep and v in keep}
    roads = sorted({(min(u, v), max(u, v)) for u, v in weight})
    lines = np.array([shapely.LineString([node_xy[a], node_xy[b]]) for a, b in roads], dtype=object)
    return _ModeGraph(G=G, roads=roads, lines=lines, weight=weight)


def _snap(mg: _ModeGraph, x: float, y: float) -> tuple[int, float, float]:
    """(road index, fraction from its smaller node id, distance in metres) by brute force."""
    point = shapely.Point(x, y)
    dist = shapely.distance(mg.lines, point)
    i = int(np.argmin(dist))
    line = mg.lines[i]
    frac = float(shapely.line_locate_point(line, point, normalized=True))
    return i, frac, float(dist[i])


def _rechain(mg: _ModeGraph, road: tuple[int, int]) -> None:
    """Rebuild one road's directed pieces through the virtual points on it."""
    a, b = road
    for u, v in mg.pieces.pop(road, [(a, b), (b, a)]):
        if mg.G.has_edge(u, v):
            mg.G.remove_edge(u, v)
    chain = [(0.0, a), *mg.on_road.get(road, []), (1.0, b)]
    added: list[tuple[Any, Any]] = []
    for (f1, n1), (f2, n2) in itertools.pairwise(chain):
        if (a, b) in mg.weight:
            mg.G.add_edge(n1, n2, weight=(f2 - f1) * mg.weight[(a, b)])
            added.append((n1, n2))
        if (b, a) in mg.weight:
            mg.G.add_edge(n2, n1, weight=(f2 - f1) * mg.weight[(b, a)])
            added.append((n2, n1))
    # A virtual point exactly on a node *is* at that node, whatever the one-way rules say.
    for f, n in chain[1:-1]:
        end = a if f == 0.0 else b if f == 1.0 else None
        if end is not None:
            mg.G.add_edge(n, end, weight=0.0)
            mg.G.add_edge(end, n, weight=0.0)
            added += [(n, end), (end, n)]
    mg.pieces[road] = added


def _insert(mg: _ModeGraph, name: Any, road_index: int, frac: float) -> None:
    road = mg.roads[road_index]
    mg.on_road.setdefault(road, [])
    mg.on_road[road].append((frac, name))
    mg.on_road[road].sort(key=lambda item: (item[0], str(item[1])))
    _rechain(mg, road)


def _remove(mg: _ModeGraph, name: Any, road_index: int) -> None:
    road = mg.roads[road_index]
    mg.on_road[road] = [item for item in mg.on_road[road] if item[1] != name]
    _rechain(mg, road)
    mg.G.remove_node(name)


@dataclass
class _World:
    graphs: dict[str, _ModeGraph]
    units: pd.DataFrame  # unit_id, kind, street_code, grid_code, mode, access_s (own mode)
    gdf_grids: gpd.GeoDataFrame
    neighbours: dict[str, set[str]]
    access_kmh: dict[str, float]
    grid_tree: shapely.STRtree
    to_metric: Transformer
    all_modes: dict[str, set[str]]  # kind -> modes of all its positioned units, any status
    by_kind: dict[str, list[tuple[str, str, str | None]]]  # usable (unit_id, street, grid)


def _neighbours(gdf_areas: gpd.GeoDataFrame) -> dict[str, set[str]]:
    streets = gdf_areas[gdf_areas["level"] == "street"].to_crs(get_settings().metric_crs)
    codes = streets["code"].tolist()
    geoms = streets.geometry.tolist()
    out: dict[str, set[str]] = {c: set() for c in codes}
    for i, j in itertools.combinations(range(len(codes)), 2):
        shared = geoms[i].boundary.intersection(geoms[j].buffer(0.05)).length
        if shared > 1.0:
            out[codes[i]].add(codes[j])
            out[codes[j]].add(codes[i])
    return out


# --------------------------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ref() -> Any:
    return read_reference_district()


@pytest.fixture(scope="module")
def units_state(ref: Any) -> gpd.GeoDataFrame:
    """The reference units with about a third busy or off duty, so every tier gets used."""
    rng = np.random.default_rng(SEED)
    gdf = ref.gdf_units.copy()
    draw = rng.random(len(gdf))
    gdf["status"] = np.where(draw < 0.25, "busy", "available")
    gdf["on_duty"] = ~((draw >= 0.25) & (draw < 0.33))
    return gdf


@pytest.fixture(scope="module")
def world(ref: Any, units_state: gpd.GeoDataFrame) -> _World:
    metric = get_settings().metric_crs
    nodes_m = ref.gdf_nodes.to_crs(metric)
    node_xy = {
        int(n): (float(g.x), float(g.y))
        for n, g in zip(nodes_m["node_id"], nodes_m.geometry, strict=True)
    }
    links_m = ref.gdf_links.to_crs(metric)
    graphs = {mode: _mode_graph(links_m, node_xy, mode) for mode in MODES}
    access_kmh = dict(get_settings().access_speed_kmh)
    usable = units_state[(units_state["status"] == "available") & units_state["on_duty"]]
    usable_m = usable.to_crs(metric)
    rows = []
    for unit_id, kind, street, grid, mode, geom in zip(
        usable_m["unit_id"],
        usable_m["kind"],
        usable_m["street_code"],
        usable_m["grid_code"],
        usable_m["travel_mode"],
        usable_m.geometry,
        strict=True,
    ):
        mg = graphs[mode]
        road, frac, dist = _snap(mg, geom.x, geom.y)
        if dist > get_settings().max_snap_m:
            continue  # the dispatcher leaves such a unit out (and says so)
        name = f"unit:{unit_id}"
        _insert(mg, name, road, frac)
        rows.append(
            {
                "unit_id": unit_id,
                "kind": kind,
                "street_code": street,
                "grid_code": grid if isinstance(grid, str) else None,
                "mode": mode,
                "access_s": dist / (access_kmh[mode] / 3.6),
                "node": name,
            }
        )
    grids = ref.gdf_areas[ref.gdf_areas["level"] == "grid"].reset_index(drop=True)
    return _World(
        graphs=graphs,
        units=pd.DataFrame(rows),
        gdf_grids=grids,
        neighbours=_neighbours(ref.gdf_areas),
        access_kmh=access_kmh,
        grid_tree=shapely.STRtree(grids.geometry.to_numpy()),
        to_metric=Transformer.from_crs("EPSG:4326", metric, always_xy=True),
        by_kind={
            str(k): list(zip(g["unit_id"], g["street_code"], g["grid_code"], strict=True))
            for k, g in pd.DataFrame(rows).groupby("kind")
        },
        all_modes={str(k): set(g["travel_mode"]) for k, g in units_state.groupby("kind")},
    )


@pytest.fixture(scope="module")
def incidents(ref: Any) -> list[dispatch.Incident]:
    rng = np.random.default_rng(SEED + 1)
    streets = ref.gdf_areas[ref.gdf_areas["level"] == "street"]
    district = shapely.union_all(streets.geometry.to_numpy())
    minx, miny, maxx, maxy = district.bounds
    codes = load_catalog().codes
    out: list[dispatch.Incident] = []
    t0 = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)
    while len(out) < N_INCIDENTS:
        lon, lat = rng.uniform(minx, maxx), rng.uniform(miny, maxy)
        if not district.contains(shapely.Point(lon, lat)):
            continue
        out.append(
            dispatch.Incident(
                incident_id=f"bf-{len(out):04d}",
                matter_code=str(codes[int(rng.integers(len(codes)))]),
                lon=float(lon),
                lat=float(lat),
                reported_at=t0,
            )
        )
    return out


# --------------------------------------------------------------------------------------------
# the expected decision
# --------------------------------------------------------------------------------------------


def _placement(world: _World, lon: float, lat: float) -> tuple[str, str, str]:
    hits = world.grid_tree.query(shapely.Point(lon, lat), predicate="covered_by")
    grid = min(str(world.gdf_grids["code"].iat[int(i)]) for i in hits)  # smallest code wins
    return grid[:9] + "000", grid[:12], grid


def _times_to_incident(
    world: _World, lon: float, lat: float, modes: set[str], cutoff: float | None
) -> tuple[dict[str, float], float]:
    """Travel seconds of the usable units of ``modes`` to the point, and its worst snap distance.

    Units farther than ``cutoff`` seconds get inf (the caller chooses a cutoff above every time
    that can matter); ``None`` searches the whole graph.
    """
    x, y = world.to_metric.transform(lon, lat)
    times: dict[str, float] = {}
    worst_snap = 0.0
    for mode in sorted(modes):
        mg = world.graphs[mode]
        road, frac, dist = _snap(mg, x, y)
        worst_snap = max(worst_snap, dist)
        mine = world.units[world.units["mode"] == mode]
        if mine.empty:
            continue
        _insert(mg, "incident", road, frac)
        try:
            reach = nx.single_source_dijkstra_path_length(
                mg.G.reverse(copy=False), "incident", cutoff=cutoff
            )
        finally:
            _remove(mg, "incident", road)
        leg = dist / (world.access_kmh[mode] / 3.6)
        for unit_id, node, access in zip(
            mine["unit_id"], mine["node"], mine["access_s"], strict=True
        ):
            t = reach.get(node)
            times[unit_id] = math.inf if t is None else access + t + leg
    return times, worst_snap


@dataclass(frozen=True)
class _Expected:
    kind: str
    times: dict[str, float]  # the winning tier's candidates
    level: EscalationLevel
    over_max: bool


def _expected(
    world: _World, matter: Any, street: str, community: str, grid: str, times: dict[str, float]
) -> list[_Expected]:
    limit = matter.max_travel_min * 60.0
    near = world.neighbours[street] | {street}
    out = []
    for kind in matter.required_kinds:
        pool = world.by_kind.get(kind.value, [])
        if not pool:
            continue
        tiers: list[tuple[str, list[tuple[str, str, str | None]]]] = []
        if matter.level.value == "grid" and kind is ForceKind.GRID_WORKER:
            tiers.append(("own_grid", [u for u in pool if u[2] == grid]))
        tiers.append(("street", [u for u in pool if u[1] == street]))
        tiers.append(("neighbour", [u for u in pool if u[1] in near]))
        tiers.append(("district", pool))
        chosen: _Expected | None = None
        for name, part in tiers:
            cand = {u: times.get(u, math.inf) for u, _, _ in part}
            cand = {u: t for u, t in cand.items() if math.isfinite(t)}
            if not cand or min(cand.values()) > limit:
                continue
            best = min(cand, key=lambda u: (cand[u], u))
            if name == "own_grid":
                level = EscalationLevel.COMMUNITY
            elif name == "street":
                home = next(g for u, _, g in part if u == best)
                in_community = kind is ForceKind.GRID_WORKER and home and home[:12] == community
                level = EscalationLevel.COMMUNITY if in_community else EscalationLevel.STREET
            else:
                level = EscalationLevel(name)
            chosen = _Expected(kind.value, cand, level, over_max=False)
            break
        if chosen is None:
            cand = {u: times.get(u, math.inf) for u, _, _ in pool}
            cand = {u: t for u, t in cand.items() if math.isfinite(t)}
            if cand:
                chosen = _Expected(kind.value, cand, EscalationLevel.DISTRICT, over_max=True)
        if chosen is not None:
            out.append(chosen)
    return out


# --------------------------------------------------------------------------------------------
# the test
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_dispatch_matches_brute_force(
    ref: Any,
    world: _World,
    units_state: gpd.GeoDataFrame,
    incidents: list[dispatch.Incident],
) -> None:
    catalog = load_catalog()
    ctx = dispatch.build_context(
        ref.gdf_areas, catalog, build_network(ref.gdf_nodes, ref.gdf_links)
    )
    now = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)
    gdf_units = dispatch.prepare_units(units_state, ref.gdf_offices, now=now)
    max_snap = get_settings().max_snap_m
    checked = refused = 0
    levels: dict[str, int] = defaultdict(int)
    mismatches: list[str] = []
    for incident in incidents:
        matter = catalog.get(incident.matter_code)
        street, community, grid = _placement(world, incident.lon, incident.lat)
        kinds = [k.value for k in matter.required_kinds]
        far_modes = set().union(*(world.all_modes.get(k, set()) for k in kinds))
        _, snap_m = _times_to_incident(world, incident.lon, incident.lat, far_modes, cutoff=0.0)
        if snap_m > max_snap:
            with pytest.raises(InputError):
                dispatch.dispatch_incident(incident, gdf_units, ctx, routes=False)
            refused += 1
            continue
        decision = dispatch.dispatch_incident(incident, gdf_units, ctx, routes=False)
        assert decision.placement.street_code == street
        assert decision.placement.grid_code == grid
        # The brute force searches as far as any time that can matter: the maximum travel time
        # (tiers accept below it) and the dispatcher's own picks (a better unit would lie below
        # them). Only a kind the dispatcher left unfilled needs the whole graph.
        cutoff: float | None = (
            max([matter.max_travel_min * 60.0] + [a.time_s for a in decision.assignments]) + 1.0
        )
        if decision.unfilled:
            cutoff = None
        modes = {
            m for m, k in zip(world.units["mode"], world.units["kind"], strict=True) if k in kinds
        }
        times, _ = _times_to_incident(world, incident.lon, incident.lat, modes, cutoff)
        expected = _expected(world, matter, street, community, grid, times)
        got = {a.kind.value: a for a in decision.assignments}
        assert set(got) == {e.kind for e in expected}, incident
        for exp in expected:
            a = got[exp.kind]
            best_t = min(exp.times.values())
            tied = sorted(u for u, t in exp.times.items() if abs(t - best_t) <= TOL_S)
            if abs(a.time_s - best_t) > TOL_S or a.unit_id != tied[0]:
                mismatches.append(
                    f"{incident.incident_id} {exp.kind}: got {a.unit_id} {a.time_s:.6f}s, "
                    f"expected {tied[0]} {best_t:.6f}s"
                )
            if a.level is not exp.level or a.over_max_travel is not exp.over_max:
                mismatches.append(
                    f"{incident.incident_id} {exp.kind}: level {a.level}/{a.over_max_travel}, "
                    f"expected {exp.level}/{exp.over_max}"
                )
            levels[exp.level.value + ("+over" if exp.over_max else "")] += 1
        widest = max((e.level for e in expected), key=_LEVEL_RANK.__getitem__, default=None)
        assert decision.level == widest
        checked += 1
    assert not mismatches, f"{len(mismatches)} mismatches, first: {mismatches[:10]}"
    assert checked + refused == N_INCIDENTS
    # The sample must exercise every rule, or the comparison proves little.
    for level in ("community", "street", "neighbour", "district"):
        assert levels[level] > 0, dict(levels)
    assert checked > 0.9 * N_INCIDENTS
