"""The dispatcher against an independent brute force, on the reference district and on generated
networks full of near-twin roads.

Everything the dispatcher decides is recomputed here without its code: the largest strongly
connected part per mode (networkx), snapping (shapely distances to every kept directed link: a
point joins each link within 1 m of the nearest, DESIGN.md "Dispatch semantics" 4), the incident's
street, community and grid (shapely containment), the street neighbours (shared borders measured in
metres), every candidate's travel time (networkx Dijkstra on a graph whose links are split at each
point joined to them), and the tier rules of DESIGN.md "Dispatch semantics" as gridgov reads them
(own grid worker for grid-level matters, street, touching streets, district, then the best over
the maximum travel time). With about a third of the units busy or off duty so that every tier is
reached: 2,000 random incidents on the reference roads, and 3 x 700 on street lattices whose roads
are drawn as OpenStreetMap often draws them (the two directions as two ways that are not exact
reverses: an extra vertex on one, or one ending at a junction a few metres off).
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
# DESIGN.md "Dispatch semantics" 4: a point joins every link within about 1 m of the nearest (the
# default of settings.snap_tolerance_m).
SNAP_TOL_M = 1.0
# The generated networks: seeds, incidents on each, lattice spacing (m).
NEAR_TWIN_SEEDS = (101, 202, 303)
NEAR_TWIN_INCIDENTS = 700
NEAR_TWIN_SPACING_M = 450.0
MODES = ("drive", "bike", "walk")
_LEVEL_RANK = {lv: i for i, lv in enumerate(EscalationLevel)}


# --------------------------------------------------------------------------------------------
# the independent model
# --------------------------------------------------------------------------------------------


@dataclass
class _ModeGraph:
    """One mode's routable links: a networkx graph and each kept directed link's metric line."""

    G: nx.DiGraph
    ends: list[tuple[int, int]]  # (u, v) per kept directed link
    lines: np.ndarray  # metric LineString per kept link, drawn from u to v
    weight: list[float]  # seconds per kept link
    tree: shapely.STRtree  # over ``lines``
    # virtual points already inserted per link: link -> sorted [(frac from u, node)]
    on_link: dict[int, list[tuple[float, Any]]] = field(default_factory=dict)
    # the edges currently standing for each link that has virtual points
    pieces: dict[int, list[tuple[Any, Any]]] = field(default_factory=dict)


def _mode_graph(gdf_links_m: gpd.GeoDataFrame, mode: str) -> _ModeGraph:
    rows: list[tuple[int, int, Any, float]] = []
    for u, v, length, kmh, line in zip(
        gdf_links_m["u"].tolist(),
        gdf_links_m["v"].tolist(),
        gdf_links_m["length_m"].tolist(),
        gdf_links_m[f"speed_{mode}_kmh"].to_numpy(float).tolist(),
        gdf_links_m.geometry,
        strict=True,
    ):
        if kmh > 0:
            rows.append((u, v, line, length / (kmh / 3.6)))
    if mode == "walk":
        # Pedestrians are not bound by one-way rules: a link with no link running back over the
        # same line gets one.
        drawn = {(u, v, tuple(line.coords)) for u, v, line, _ in rows}
        for u, v, line, w in list(rows):
            if (v, u, tuple(line.coords)[::-1]) not in drawn:
                rows.append((v, u, shapely.reverse(line), w))
    G = nx.DiGraph()
    for u, v, _, w in rows:
        if not G.has_edge(u, v) or G[u][v]["weight"] > w:
            G.add_edge(u, v, weight=w)
    keep = max(nx.strongly_connected_components(G), key=len)
    G = G.subgraph(keep).copy()
    kept = [r for r in rows if r[0] in keep and r[1] in keep]
    return _ModeGraph(
        G=G,
        ends=[(u, v) for u, v, _, _ in kept],
        lines=np.array([line for _, _, line, _ in kept], dtype=object),
        weight=[w for _, _, _, w in kept],
        tree=shapely.STRtree([line for _, _, line, _ in kept]),
    )


def _snap(mg: _ModeGraph, x: float, y: float) -> list[tuple[int, float, float]]:
    """Every link within the tolerance of the nearest: (link, fraction from u, metres)."""
    point = shapely.Point(x, y)
    first = int(mg.tree.query_nearest(point)[0])
    nearest = float(shapely.distance(mg.lines[first], point))
    near = mg.tree.query(point, predicate="dwithin", distance=nearest + SNAP_TOL_M + 1.0)
    dist = shapely.distance(mg.lines[near], point)
    nearest = min(nearest, float(dist.min()))
    out = []
    for i, d in zip(near.tolist(), dist.tolist(), strict=True):
        if d <= nearest + SNAP_TOL_M:
            frac = float(shapely.line_locate_point(mg.lines[i], point, normalized=True))
            out.append((i, frac, d))
    return sorted(out)


def _rechain(mg: _ModeGraph, link: int) -> None:
    """Rebuild one link's pieces through the virtual points on it."""
    for a, b in mg.pieces.pop(link, []):
        if mg.G.has_edge(a, b):
            mg.G.remove_edge(a, b)
    u, v = mg.ends[link]
    chain = [(0.0, u), *mg.on_link.get(link, []), (1.0, v)]
    added: list[tuple[Any, Any]] = []
    if len(chain) > 2:
        for (f1, n1), (f2, n2) in itertools.pairwise(chain):
            mg.G.add_edge(n1, n2, weight=(f2 - f1) * mg.weight[link])
            added.append((n1, n2))
            if f1 == f2:  # two points at one place are at each other
                mg.G.add_edge(n2, n1, weight=0.0)
                added.append((n2, n1))
    # A virtual point exactly on a node *is* at that node, whatever the one-way rules say.
    for f, n in chain[1:-1]:
        end = u if f == 0.0 else v if f == 1.0 else None
        if end is not None:
            mg.G.add_edge(n, end, weight=0.0)
            mg.G.add_edge(end, n, weight=0.0)
            added += [(n, end), (end, n)]
    mg.pieces[link] = added


def _insert(
    mg: _ModeGraph, name: Any, joins: list[tuple[int, float, float]], access_ms: float, out: bool
) -> None:
    """Join the point ``name`` to its links: leaving over them (``out``) or arriving."""
    for link, frac, dist in joins:
        at = (name, link)
        mg.on_link.setdefault(link, []).append((frac, at))
        mg.on_link[link].sort(key=lambda item: (item[0], str(item[1])))
        _rechain(mg, link)
        if out:
            mg.G.add_edge(name, at, weight=dist / access_ms)
        else:
            mg.G.add_edge(at, name, weight=dist / access_ms)


def _remove(mg: _ModeGraph, name: Any, joins: list[tuple[int, float, float]]) -> None:
    for link, _, _ in joins:
        at = (name, link)
        mg.on_link[link] = [item for item in mg.on_link[link] if item[1] != at]
        _rechain(mg, link)
        mg.G.remove_node(at)
    mg.G.remove_node(name)


@dataclass
class _World:
    graphs: dict[str, _ModeGraph]
    units: pd.DataFrame  # unit_id, kind, street_code, grid_code, mode, node
    gdf_grids: gpd.GeoDataFrame
    neighbours: dict[str, set[str]]
    access_kmh: dict[str, float]
    grid_tree: shapely.STRtree
    to_metric: Transformer
    all_modes: dict[str, set[str]]  # kind -> modes of all its positioned units, any status
    by_kind: dict[str, list[tuple[str, str, str | None]]]  # usable (unit_id, street, grid)
    units_of_mode: dict[str, list[tuple[str, str]]]  # usable (unit_id, graph node) per mode
    usable_modes: dict[str, set[str]]  # kind -> modes of its usable units


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


def _build_world(
    gdf_links: gpd.GeoDataFrame, gdf_areas: gpd.GeoDataFrame, units_state: gpd.GeoDataFrame
) -> _World:
    metric = get_settings().metric_crs
    links_m = gdf_links.to_crs(metric)
    graphs = {mode: _mode_graph(links_m, mode) for mode in MODES}
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
        joins = _snap(mg, geom.x, geom.y)
        if min(d for _, _, d in joins) > get_settings().max_snap_m:
            continue  # the dispatcher leaves such a unit out (and says so)
        name = f"unit:{unit_id}"
        _insert(mg, name, joins, access_kmh[mode] / 3.6, out=True)
        rows.append(
            {
                "unit_id": unit_id,
                "kind": kind,
                "street_code": street,
                "grid_code": grid if isinstance(grid, str) else None,
                "mode": mode,
                "node": name,
            }
        )
    grids = gdf_areas[gdf_areas["level"] == "grid"].reset_index(drop=True)
    return _World(
        graphs=graphs,
        units=pd.DataFrame(rows),
        gdf_grids=grids,
        neighbours=_neighbours(gdf_areas),
        access_kmh=access_kmh,
        grid_tree=shapely.STRtree(grids.geometry.to_numpy()),
        to_metric=Transformer.from_crs("EPSG:4326", metric, always_xy=True),
        by_kind={
            str(k): list(zip(g["unit_id"], g["street_code"], g["grid_code"], strict=True))
            for k, g in pd.DataFrame(rows).groupby("kind")
        },
        all_modes={str(k): set(g["travel_mode"]) for k, g in units_state.groupby("kind")},
        usable_modes={str(k): set(g["mode"]) for k, g in pd.DataFrame(rows).groupby("kind")},
        units_of_mode={
            str(m): list(zip(g["unit_id"], g["node"], strict=True))
            for m, g in pd.DataFrame(rows).groupby("mode")
        },
    )


@pytest.fixture(scope="module")
def world(ref: Any, units_state: gpd.GeoDataFrame) -> _World:
    return _build_world(ref.gdf_links, ref.gdf_areas, units_state)


def _random_incidents(ref: Any, n: int, seed: int) -> list[dispatch.Incident]:
    rng = np.random.default_rng(seed)
    streets = ref.gdf_areas[ref.gdf_areas["level"] == "street"]
    district = shapely.union_all(streets.geometry.to_numpy())
    minx, miny, maxx, maxy = district.bounds
    codes = load_catalog().codes
    out: list[dispatch.Incident] = []
    t0 = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)
    while len(out) < n:
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


@pytest.fixture(scope="module")
def incidents(ref: Any) -> list[dispatch.Incident]:
    return _random_incidents(ref, N_INCIDENTS, SEED + 1)


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
        joins = _snap(mg, x, y)
        worst_snap = max(worst_snap, min(d for _, _, d in joins))
        mine = world.units_of_mode.get(mode, [])
        if not mine:
            continue
        _insert(mg, "incident", joins, world.access_kmh[mode] / 3.6, out=False)
        try:
            reach = nx.single_source_dijkstra_path_length(
                mg.G.reverse(copy=False), "incident", cutoff=cutoff
            )
        finally:
            _remove(mg, "incident", joins)
        for unit_id, node in mine:
            t = reach.get(node)
            times[unit_id] = math.inf if t is None else t
    return times, worst_snap


def _snap_distance(world: _World, lon: float, lat: float, modes: set[str]) -> float:
    """The point's distance to the nearest road of the farthest of ``modes``."""
    x, y = world.to_metric.transform(lon, lat)
    return max((min(d for _, _, d in _snap(world.graphs[m], x, y)) for m in modes), default=0.0)


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


@dataclass
class _Tally:
    checked: int = 0
    refused: int = 0
    levels: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    mismatches: list[str] = field(default_factory=list)


def _compare(
    world: _World,
    ctx: dispatch.DispatchContext,
    gdf_units: gpd.GeoDataFrame,
    incidents: list[dispatch.Incident],
) -> _Tally:
    """Dispatch every incident and compare each decision with the brute force."""
    catalog = ctx.catalog
    max_snap = get_settings().max_snap_m
    tally = _Tally()
    for incident in incidents:
        matter = catalog.get(incident.matter_code)
        street, community, grid = _placement(world, incident.lon, incident.lat)
        kinds = [k.value for k in matter.required_kinds]
        far_modes = set().union(*(world.all_modes.get(k, set()) for k in kinds))
        snap_m = _snap_distance(world, incident.lon, incident.lat, far_modes)
        if snap_m > max_snap:
            with pytest.raises(InputError):
                dispatch.dispatch_incident(incident, gdf_units, ctx, routes=False)
            tally.refused += 1
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
        modes = set().union(*(world.usable_modes.get(k, set()) for k in kinds))
        times, _ = _times_to_incident(world, incident.lon, incident.lat, modes, cutoff)
        expected = _expected(world, matter, street, community, grid, times)
        got = {a.kind.value: a for a in decision.assignments}
        if set(got) != {e.kind for e in expected}:
            tally.mismatches.append(
                f"{incident.incident_id}: kinds {sorted(got)}, expected "
                f"{sorted(e.kind for e in expected)}"
            )
            continue
        for exp in expected:
            a = got[exp.kind]
            best_t = min(exp.times.values())
            tied = sorted(u for u, t in exp.times.items() if abs(t - best_t) <= TOL_S)
            if abs(a.time_s - best_t) > TOL_S or a.unit_id != tied[0]:
                tally.mismatches.append(
                    f"{incident.incident_id} {exp.kind}: got {a.unit_id} {a.time_s:.6f}s, "
                    f"expected {tied[0]} {best_t:.6f}s"
                )
            if a.level is not exp.level or a.over_max_travel is not exp.over_max:
                tally.mismatches.append(
                    f"{incident.incident_id} {exp.kind}: level {a.level}/{a.over_max_travel}, "
                    f"expected {exp.level}/{exp.over_max}"
                )
            tally.levels[exp.level.value + ("+over" if exp.over_max else "")] += 1
        widest = max((e.level for e in expected), key=_LEVEL_RANK.__getitem__, default=None)
        if decision.level != widest:
            tally.mismatches.append(
                f"{incident.incident_id}: level {decision.level}, expected {widest}"
            )
        tally.checked += 1
    return tally


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
    tally = _compare(world, ctx, gdf_units, incidents)
    mismatches, levels, checked = tally.mismatches, tally.levels, tally.checked
    assert not mismatches, f"{len(mismatches)} mismatches, first: {mismatches[:10]}"
    assert checked + tally.refused == N_INCIDENTS
    # The sample must exercise every rule, or the comparison proves little.
    for level in ("community", "street", "neighbour", "district"):
        assert levels[level] > 0, dict(levels)
    assert checked > 0.9 * N_INCIDENTS


# --------------------------------------------------------------------------------------------
# generated networks with near-twin pairs
# --------------------------------------------------------------------------------------------


def _near_twin_roads(
    gdf_areas: gpd.GeoDataFrame, seed: int
) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame, dict[str, int]]:
    """A jittered street lattice over the district whose roads are drawn as OSM often draws them.

    Each road between two lattice nodes is, at random: exact twins (one line, both ways); one
    way only; a near-twin pair whose way back has an extra vertex 0.2-2.5 m off the line; or a
    near-twin pair whose way back ends at a junction 2-6 m from the other's end (joined to it by
    a short two-way connector). Returns nodes, links (EPSG:4326) and the count of each kind.
    """
    rng = np.random.default_rng(seed)
    metric = get_settings().metric_crs
    streets = gdf_areas[gdf_areas["level"] == "street"].to_crs(metric)
    x0, y0, x1, y1 = streets.total_bounds
    sp = NEAR_TWIN_SPACING_M
    cols = math.ceil((x1 - x0 + 600.0) / sp) + 1
    rows = math.ceil((y1 - y0 + 600.0) / sp) + 1
    ii, jj = np.meshgrid(np.arange(cols), np.arange(rows))
    xy = np.column_stack(
        [
            x0 - 300.0 + ii.ravel() * sp + rng.uniform(-0.2, 0.2, ii.size) * sp,
            y0 - 300.0 + jj.ravel() * sp + rng.uniform(-0.2, 0.2, ii.size) * sp,
        ]
    )
    points: list[tuple[float, float]] = [tuple(p) for p in xy.tolist()]
    links: list[tuple[int, int, list[tuple[float, float]], bool]] = []
    counts = {"twin": 0, "one_way": 0, "extra_vertex": 0, "offset_junction": 0}
    pairs = [
        (j * cols + i, j * cols + i + 1, j % 4 == 0) for j in range(rows) for i in range(cols - 1)
    ]
    pairs += [
        (j * cols + i, (j + 1) * cols + i, i % 4 == 0) for j in range(rows - 1) for i in range(cols)
    ]
    for a, b, main in pairs:
        if rng.random() < 0.08:
            continue
        pa, pb = points[a], points[b]
        kind = str(rng.choice(list(counts), p=[0.25, 0.1, 0.35, 0.3]))
        counts[kind] += 1
        if kind == "twin":
            links += [(a, b, [pa, pb], main), (b, a, [pb, pa], main)]
        elif kind == "one_way":
            links.append((a, b, [pa, pb], main) if rng.random() < 0.5 else (b, a, [pb, pa], main))
        elif kind == "extra_vertex":
            dx, dy = pb[0] - pa[0], pb[1] - pa[1]
            norm = math.hypot(dx, dy)
            off = rng.uniform(0.2, 2.5) * rng.choice([-1.0, 1.0])
            at = rng.uniform(0.2, 0.8)
            mid = (pa[0] + at * dx - off * dy / norm, pa[1] + at * dy + off * dx / norm)
            links += [(a, b, [pa, pb], main), (b, a, [pb, mid, pa], main)]
        else:
            # The way back ends at its own junction a few metres from the other's end.
            end, other = (a, b) if rng.random() < 0.5 else (b, a)
            angle = rng.uniform(0.0, 2.0 * math.pi)
            dist = rng.uniform(2.0, 6.0)
            pe = points[end]
            points.append((pe[0] + dist * math.cos(angle), pe[1] + dist * math.sin(angle)))
            near = len(points) - 1
            po, pn = points[other], points[near]
            links += [
                (end, other, [pe, po], main),
                (other, near, [po, pn], main),
                (near, end, [pn, pe], False),
                (end, near, [pe, pn], False),
            ]
    nodes = gpd.GeoDataFrame(
        {"node_id": np.arange(len(points), dtype=np.int64)},
        geometry=gpd.points_from_xy([p[0] for p in points], [p[1] for p in points]),
        crs=metric,
    ).to_crs("EPSG:4326")
    lines = [shapely.LineString(c) for _, _, c, _ in links]
    main_road = np.array([m for _, _, _, m in links])
    gdf_links = gpd.GeoDataFrame(
        {
            "link_id": np.arange(len(links), dtype=np.int64),
            "u": np.array([u for u, _, _, _ in links], dtype=np.int64),
            "v": np.array([v for _, v, _, _ in links], dtype=np.int64),
            "length_m": shapely.length(np.array(lines, dtype=object)),
            "speed_drive_kmh": np.where(main_road, 45.0, 25.0),
            "speed_bike_kmh": np.where(main_road, 15.0, 12.0),
            "speed_walk_kmh": 5.0,
        },
        geometry=lines,
        crs=metric,
    ).to_crs("EPSG:4326")
    return nodes, gdf_links, counts


@pytest.mark.slow
def test_dispatch_matches_brute_force_on_near_twin_networks(
    ref: Any, units_state: gpd.GeoDataFrame
) -> None:
    """Generated networks full of near-twin pairs: 0 mismatches over 2,100 incidents."""
    catalog = load_catalog()
    now = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)
    gdf_units = dispatch.prepare_units(units_state, ref.gdf_offices, now=now)
    total = _Tally()
    near_twins = 0
    for seed in NEAR_TWIN_SEEDS:
        gdf_nodes, gdf_links, counts = _near_twin_roads(ref.gdf_areas, seed)
        near_twins += counts["extra_vertex"] + counts["offset_junction"]
        world = _build_world(gdf_links, ref.gdf_areas, units_state)
        ctx = dispatch.build_context(ref.gdf_areas, catalog, build_network(gdf_nodes, gdf_links))
        tally = _compare(world, ctx, gdf_units, _random_incidents(ref, NEAR_TWIN_INCIDENTS, seed))
        total.checked += tally.checked
        total.refused += tally.refused
        total.mismatches += tally.mismatches
        for level, n in tally.levels.items():
            total.levels[level] += n
    print(
        f"near-twin networks {NEAR_TWIN_SEEDS}: {near_twins} near-twin pairs, "
        f"{total.checked} incidents compared ({total.refused} refused), "
        f"{len(total.mismatches)} mismatches, levels {dict(total.levels)}"
    )
    assert not total.mismatches, (
        f"{len(total.mismatches)} mismatches, first: {total.mismatches[:10]}"
    )
    assert total.checked + total.refused == len(NEAR_TWIN_SEEDS) * NEAR_TWIN_INCIDENTS
    assert total.checked >= 2_000
    assert near_twins > 1_000
    for level in ("community", "street", "neighbour", "district"):
        assert total.levels[level] > 0, dict(total.levels)
