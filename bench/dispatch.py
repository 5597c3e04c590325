"""Benchmark: one dispatch decision and a batch, on the reference district and a megacity.

    python bench/dispatch.py [--quick] [--seed 7] [--skip-megacity] [--json out.json]
                             [--nx-sample 200] [--nx-full-sample 10] [--no-pandana]
                             [--profile PREFIX]

Two graphs, measured side by side in one run:

- the reference district (``gridgov.reference.read_reference_district``: its road links, 1,211
  units, the whole catalogue), with ``--incidents`` (10,000) random incidents inside it;
- a generated megacity (``bench/megacity.py``: 262,144-node street lattice, 256 streets,
  2,112 units of 5 kinds, 10,000 incidents).

For each graph it times ``gridgov.dispatch.dispatch_incident`` over every incident, warm (the
context built and one untimed pass made first, so every unit snap a decision needs is cached),
with ``routes=False`` and, separately, ``routes=True``. The baselines, on a sample of
``--nx-sample`` incidents (the ratio compares each baseline with the dispatcher's own times on
the same incidents):

``networkx, cut off``
    What a straightforward implementation does: per incident and per travel mode its units use,
    find the incident's nearest node of that mode's graph (a ``cKDTree`` built beforehand),
    run ``nx.single_source_dijkstra_path_length`` on the *reversed* mode graph (so distances are
    unit → incident) with ``cutoff`` = the matter's maximum travel time (node to node seconds),
    then take, per required kind, the minimum over every unit of the kind of distance to the
    unit's nearest node plus both access legs (straight line at the mode's access speed). Graphs
    are the largest strongly connected part of each mode, as the dispatcher's, built from the
    same links and speeds. It covers the district tier only (the dispatcher's street and
    neighbour tiers read the same search). Incidents with no unit within the cut-off would need a
    second, unbounded search; the count is printed.
``networkx, no cut-off``
    The same with ``cutoff=None`` (a full search), on ``--nx-full-sample`` incidents.
``networkx, early exit``
    networkx's own Dijkstra loop (heapq over ``G._adj``, as ``nx._dijkstra_multisource``) on
    the same reversed graphs, stopped as soon as no unsettled node can beat the best unit found
    for every kind of the mode: the nearest unit of each kind, exactly, with no cut-off needed.
    The DESIGN.md performance anchor ("networkx early-exit Dijkstra per incident") is this one.
``pandana``
    Contraction hierarchies (pandana 0.8) on the reversed drive graph (the same largest drive
    part), built with ``twoway=False``. No ``precompute``: it serves aggregations only, and its
    range tables for a 30-minute horizon would take hours at this size. The search horizon is
    the largest maximum travel time of the matters. Two uses are timed. ``nearest_pois``: one
    category per kind, with that kind's *drive* units as POIs; one call answers "nearest unit of
    this kind from every node", so its cost per incident is amortised over the incidents, and
    one call is also printed as the latency of a single fresh answer. ``shortest_path_lengths``:
    per sampled incident, the CH distances between the incident's node and every drive unit of
    its required kinds (asked incident -> unit on the reversed graph, i.e. unit -> incident),
    then the minimum per kind: the closest pandana gets to a per-incident query. pandana knows
    one graph here, so bike and walk units are not in its answers; it knows nothing of streets,
    tiers, access legs or explanations. ``--no-pandana`` skips it (its build takes a minute or
    two on the megacity).

Batch: ``dispatch_batch`` and ``dispatch_greedy`` on the first ``--batch`` (1,000) incidents
with every unit (warm, median of ``--repeat`` runs), and the gain of batch over greedy
(``BatchResult.gain_over``: reduction of the priority-weighted travel time, plus the cost of open
slots).

Targets (issue 3), printed PASS/FAIL: on the megacity, one decision (``routes=False``) has
p99 <= 20 ms and is >= 10x faster than the networkx baseline at p50 and p99; the batch takes
<= 2 s. See bench/README.md for measured figures.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import heapq
import json
import math
import os
import platform
import pstats
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import geopandas as gpd
import networkx as nx
import numpy as np
import pandas as pd
import scipy
import scipy.sparse as sp
import shapely
from pyproj import Transformer
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

sys.path.insert(0, str(Path(__file__).resolve().parent))

import megacity

from gridgov import dispatch
from gridgov.catalog import Catalog, load_catalog
from gridgov.errors import GridgovError
from gridgov.model import ForceKind, Level, TravelMode
from gridgov.network import RoadNetwork, build_network
from gridgov.reference import read_reference_district
from gridgov.settings import get_settings

MODES = ("drive", "bike", "walk")
TARGET_P99_MS = 20.0
TARGET_SPEEDUP = 10.0
TARGET_BATCH_S = 2.0


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------


def pct(values: Sequence[float] | np.ndarray, q: float) -> float:
    arr = np.asarray(values, dtype=float)
    return float(np.percentile(arr, q)) if len(arr) else math.nan


def summary_ms(values: Sequence[float] | np.ndarray) -> dict[str, float]:
    arr = np.asarray(values, dtype=float)
    return {
        "n": len(arr),
        "p50_ms": pct(arr, 50),
        "p99_ms": pct(arr, 99),
        "mean_ms": float(arr.mean()) if len(arr) else math.nan,
        "max_ms": float(arr.max()) if len(arr) else math.nan,
    }


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "pandas": pd.__version__,
        "networkx": nx.__version__,
        "shapely": shapely.__version__,
        "geopandas": gpd.__version__,
    }
    try:
        import pandana  # type: ignore[import-untyped]

        versions["pandana"] = str(pandana.__version__)
    except ImportError:
        versions["pandana"] = "not installed"
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": platform.machine(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load_avg": [round(x, 2) for x in os.getloadavg()],
        "versions": versions,
    }


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def ratio(base: float, mine: float) -> float:
    return base / mine if mine > 0 else math.inf


def fmt_ratio(x: float) -> str:
    if not math.isfinite(x):
        return "n/a"
    return f"{x:.1f}x" if x >= 1 else f"{x:.2f}x"


@contextlib.contextmanager
def _quiet_stdout() -> Iterator[None]:
    """Silence writes to file descriptor 1 (C++ libraries print there directly)."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w", encoding="utf-8") as null:
            os.dup2(null.fileno(), 1)
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


# --------------------------------------------------------------------------------------------
# scenarios
# --------------------------------------------------------------------------------------------


@dataclass
class Scenario:
    name: str
    gdf_nodes: gpd.GeoDataFrame
    gdf_links: gpd.GeoDataFrame
    gdf_areas: gpd.GeoDataFrame
    gdf_offices: gpd.GeoDataFrame
    gdf_units: gpd.GeoDataFrame
    incidents: pd.DataFrame
    setup: dict[str, float] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)


def reference_scenario(n_incidents: int, seed: int, catalog: Catalog) -> Scenario:
    t, ref = timed(read_reference_district)
    district = ref.gdf_areas.loc[ref.gdf_areas["level"] == Level.DISTRICT.value].geometry.iloc[0]
    incidents = megacity.random_incidents(
        np.random.default_rng(seed), district, list(catalog.codes), n_incidents, prefix="RF"
    )
    return Scenario(
        name="reference",
        gdf_nodes=ref.gdf_nodes,
        gdf_links=ref.gdf_links,
        gdf_areas=ref.gdf_areas,
        gdf_offices=ref.gdf_offices,
        gdf_units=ref.gdf_units,
        incidents=incidents,
        setup={"read_s": t},
        facts={"matters": len(catalog)},
    )


def megacity_scenario(seed: int, n_incidents: int, quick: bool, catalog: Catalog) -> Scenario:
    size = {"side_nodes": 128, "streets_side": 4} if quick else {}
    t, city = timed(
        lambda: megacity.generate_megacity(seed, n_incidents=n_incidents, catalog=catalog, **size)
    )
    return Scenario(
        name="megacity",
        gdf_nodes=city.gdf_nodes,
        gdf_links=city.gdf_links,
        gdf_areas=city.gdf_areas,
        gdf_offices=city.gdf_offices,
        gdf_units=city.gdf_units,
        incidents=city.incidents,
        setup={"generate_s": t},
        facts={k: v for k, v in city.facts.items() if k != "matters"}
        | {"matters": len(city.facts["matters"])},
    )


def to_incidents(frame: pd.DataFrame) -> list[dispatch.Incident]:
    reported = pd.to_datetime(frame["reported_at"], utc=True)
    return [
        dispatch.Incident(
            incident_id=str(i), matter_code=str(m), lon=x, lat=y, reported_at=t.to_pydatetime()
        )
        for i, m, x, y, t in zip(
            frame["incident_id"].tolist(),
            frame["matter_code"].tolist(),
            frame["lon"].to_numpy(float).tolist(),
            frame["lat"].to_numpy(float).tolist(),
            reported,
            strict=True,
        )
    ]


# --------------------------------------------------------------------------------------------
# the dispatcher
# --------------------------------------------------------------------------------------------


@dataclass
class PassResult:
    latency_ms: np.ndarray  # per incident, nan where the call raised
    decisions: list[dispatch.Decision | None]
    errors: dict[str, int]


def dispatch_pass(
    incidents: list[dispatch.Incident],
    units: gpd.GeoDataFrame,
    ctx: dispatch.DispatchContext,
    *,
    routes: bool,
    profile: cProfile.Profile | None = None,
) -> PassResult:
    lat = np.full(len(incidents), np.nan)
    decisions: list[dispatch.Decision | None] = [None] * len(incidents)
    errors: dict[str, int] = {}
    clock = time.perf_counter
    if profile is not None:
        profile.enable()
    for i, inc in enumerate(incidents):
        t = clock()
        try:
            d = dispatch.dispatch_incident(inc, units, ctx, routes=routes)
        except GridgovError as exc:
            errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
            continue
        lat[i] = (clock() - t) * 1000.0
        decisions[i] = d
    if profile is not None:
        profile.disable()
    return PassResult(lat, decisions, errors)


def decision_stats(decisions: Sequence[dispatch.Decision | None]) -> dict[str, Any]:
    done = [d for d in decisions if d is not None]
    levels: dict[str, int] = {}
    rules: dict[str, int] = {}
    for d in done:
        key = d.level.value if d.level is not None else "none"
        levels[key] = levels.get(key, 0) + 1
        for a in d.assignments:
            rules[a.rule] = rules.get(a.rule, 0) + 1
    return {
        "decisions": len(done),
        "status": pd.Series([d.status for d in done]).value_counts().to_dict(),
        "levels": levels,
        "rules": rules,
        "assignments": sum(len(d.assignments) for d in done),
        "unfilled": sum(len(d.unfilled) for d in done),
    }


# --------------------------------------------------------------------------------------------
# networkx baselines
# --------------------------------------------------------------------------------------------


@dataclass
class ModeGraph:
    G: nx.DiGraph  # reversed: an edge v -> u per link u -> v, weight "t" in seconds
    nodes: np.ndarray  # node ids in the largest strongly connected part
    tree: cKDTree  # over their metric coordinates


class NxBaseline:
    """Per-incident Dijkstra on networkx graphs (see the module docstring)."""

    def __init__(
        self,
        gdf_nodes: gpd.GeoDataFrame,
        gdf_links: gpd.GeoDataFrame,
        gdf_units: gpd.GeoDataFrame,
        catalog: Catalog,
    ) -> None:
        settings = get_settings()
        self.catalog = catalog
        self.access_kmh = dict(settings.access_speed_kmh)
        to_metric = Transformer.from_crs("EPSG:4326", settings.metric_crs, always_xy=True)
        ids = gdf_nodes["node_id"].to_numpy(np.int64)
        x, y = to_metric.transform(gdf_nodes.geometry.x.to_numpy(), gdf_nodes.geometry.y.to_numpy())
        self._to_metric = to_metric
        pos = pd.Index(ids)
        u_all = pos.get_indexer(gdf_links["u"].to_numpy(np.int64))
        v_all = pos.get_indexer(gdf_links["v"].to_numpy(np.int64))
        length = gdf_links["length_m"].to_numpy(float)
        oneway = gdf_links["oneway"].to_numpy(bool)
        self.graphs: dict[str, ModeGraph] = {}
        self.sizes: dict[str, dict[str, int]] = {}
        n = len(ids)
        for mode in MODES:
            speed = gdf_links[f"speed_{mode}_kmh"].to_numpy(float)
            ok = speed > 0
            u, v, t = u_all[ok], v_all[ok], length[ok] / (speed[ok] / 3.6)
            if mode == "walk":  # pedestrians walk one-way streets both ways
                back = oneway[ok]
                u, v, t = np.r_[u, v[back]], np.r_[v, u[back]], np.r_[t, t[back]]
            if len(u) == 0:
                continue
            graph = sp.csr_matrix((np.ones(len(u)), (u, v)), shape=(n, n))
            _, label = connected_components(graph, directed=True, connection="strong")
            big = np.bincount(label[np.unique(np.r_[u, v])]).argmax()
            keep = (label[u] == big) & (label[v] == big)
            G = nx.DiGraph()
            # Reversed: searching from the incident gives unit -> incident times. Parallel
            # links keep their fastest.
            order = np.argsort(-t[keep])
            G.add_weighted_edges_from(
                zip(
                    ids[v[keep][order]].tolist(),
                    ids[u[keep][order]].tolist(),
                    t[keep][order].tolist(),
                    strict=True,
                ),
                weight="t",
            )
            members = np.flatnonzero(label == big)
            self.graphs[mode] = ModeGraph(
                G, ids[members], cKDTree(np.column_stack([x[members], y[members]]))
            )
            self.sizes[mode] = {"nodes": G.number_of_nodes(), "edges": G.number_of_edges()}
        # Units: nearest node of their mode's graph, and the access time to it.
        ux, uy = to_metric.transform(
            gdf_units.geometry.x.to_numpy(), gdf_units.geometry.y.to_numpy()
        )
        # kind -> mode -> (unit ids, nearest node ids, access seconds), as Python lists: the
        # per-incident loop reads them one by one.
        self.units: dict[str, dict[str, tuple[list[str], list[int], list[float]]]] = {}
        kinds = gdf_units["kind"].to_numpy(str)
        modes = gdf_units["travel_mode"].to_numpy(str)
        uids = gdf_units["unit_id"].to_numpy(str)
        available = (gdf_units["status"] == "available").to_numpy() & gdf_units["on_duty"].to_numpy(
            bool
        )
        for kind in np.unique(kinds):
            self.units[kind] = {}
            for mode in self.graphs:
                sel = np.flatnonzero((kinds == kind) & (modes == mode) & available)
                if len(sel) == 0:
                    continue
                g = self.graphs[mode]
                dist, idx = g.tree.query(np.column_stack([ux[sel], uy[sel]]))
                access = dist / (self.access_kmh[mode] / 3.6)
                self.units[kind][mode] = (
                    uids[sel].tolist(),
                    g.nodes[idx].tolist(),
                    access.tolist(),
                )
        # node id -> list of (kind, unit id, access) per mode, for the early-exit search
        self.at_node: dict[str, dict[int, list[tuple[str, str, float]]]] = {}
        for mode in self.graphs:
            table: dict[int, list[tuple[str, str, float]]] = {}
            for kind, per_mode in self.units.items():
                if mode not in per_mode:
                    continue
                for uid, node, acc in zip(*per_mode[mode], strict=True):
                    table.setdefault(node, []).append((kind, uid, acc))
            self.at_node[mode] = table

    def _incident_node(self, lon: float, lat: float, mode: str) -> tuple[int, float]:
        x, y = self._to_metric.transform(lon, lat)
        g = self.graphs[mode]
        d, i = g.tree.query((x, y))
        return int(g.nodes[i]), float(d) / (self.access_kmh[mode] / 3.6)

    def query(
        self, inc: dispatch.Incident, *, cutoff: bool
    ) -> tuple[dict[str, tuple[str, float] | None], dict[str, dict[int, float]]]:
        """Nearest unit of each required kind; the per-mode distance dicts too."""
        matter = self.catalog.get(inc.matter_code)
        kinds = [k.value for k in matter.required_kinds]
        limit = matter.max_travel_min * 60.0 if cutoff else None
        best: dict[str, tuple[str, float] | None] = dict.fromkeys(kinds)
        dists: dict[str, dict[int, float]] = {}
        modes = sorted({m for k in kinds for m in self.units.get(k, {})})
        for mode in modes:
            src, acc_i = self._incident_node(inc.lon, inc.lat, mode)
            dist = nx.single_source_dijkstra_path_length(
                self.graphs[mode].G, src, cutoff=limit, weight="t"
            )
            dists[mode] = dist
            for kind in kinds:
                if mode not in self.units.get(kind, {}):
                    continue
                uids, nodes, access = self.units[kind][mode]
                cur = best[kind]
                for uid, node, acc in zip(uids, nodes, access, strict=True):
                    d = dist.get(node)
                    if d is None:
                        continue
                    total = d + acc + acc_i
                    if cur is None or total < cur[1] or (total == cur[1] and uid < cur[0]):
                        cur = (uid, total)
                best[kind] = cur
        return best, dists

    def query_early_exit(self, inc: dispatch.Incident) -> dict[str, tuple[str, float] | None]:
        """The nearest unit of each required kind, by a search that stops once it is known."""
        matter = self.catalog.get(inc.matter_code)
        kinds = [k.value for k in matter.required_kinds]
        best: dict[str, tuple[str, float] | None] = dict.fromkeys(kinds)
        modes = sorted({m for k in kinds for m in self.units.get(k, {})})
        for mode in modes:
            src, acc_i = self._incident_node(inc.lon, inc.lat, mode)
            wanted = {k for k in kinds if mode in self.units.get(k, {})}
            at_node = self.at_node[mode]
            found: dict[str, float] = {}
            adj = self.graphs[mode].G._adj
            dist: dict[int, float] = {}
            seen = {src: 0.0}
            heap = [(0.0, src)]
            while heap:
                d, node = heapq.heappop(heap)
                if node in dist:
                    continue
                # Access legs are >= 0: once every kind has a unit no farther than d, nothing
                # reached later can beat it.
                if len(found) == len(wanted) and d >= max(found.values()):
                    break
                dist[node] = d
                for kind, uid, acc in at_node.get(node, ()):
                    if kind not in wanted:
                        continue
                    total = d + acc + acc_i
                    cur = best[kind]
                    if cur is None or total < cur[1] or (total == cur[1] and uid < cur[0]):
                        best[kind] = (uid, total)
                    found[kind] = min(found.get(kind, math.inf), total - acc_i)
                for nbr, attrs in adj[node].items():
                    nd = d + attrs["t"]
                    if nbr not in dist and nd < seen.get(nbr, math.inf):
                        seen[nbr] = nd
                        heapq.heappush(heap, (nd, nbr))
        return best

    def unit_time(
        self, dists: dict[str, dict[int, float]], inc: dispatch.Incident, unit_id: str
    ) -> float | None:
        """The baseline's time for one given unit, from a finished search (for consistency)."""
        for kind_units in self.units.values():
            for mode, (uids, nodes, access) in kind_units.items():
                if unit_id in uids and mode in dists:
                    k = uids.index(unit_id)
                    d = dists[mode].get(nodes[k])
                    if d is None:
                        return None
                    _, acc_i = self._incident_node(inc.lon, inc.lat, mode)
                    return float(d + access[k] + acc_i)
        return None


def run_nx(
    base: NxBaseline,
    incidents: list[dispatch.Incident],
    sample: np.ndarray,
    full_sample: np.ndarray,
    decisions: list[dispatch.Decision | None],
) -> dict[str, Any]:
    cut_ms, missing, diffs = [], 0, []
    for i in sample:
        inc = incidents[i]
        t = time.perf_counter()
        best, dists = base.query(inc, cutoff=True)
        cut_ms.append((time.perf_counter() - t) * 1000.0)
        if any(v is None for v in best.values()):
            missing += 1
        d = decisions[i]
        if d is not None and d.assignments:
            lead = d.assignments[0]
            mine = base.unit_time(dists, inc, lead.unit_id)
            if mine is not None:
                diffs.append(abs(mine - lead.time_s))
    early_ms = []
    for i in sample:
        t = time.perf_counter()
        base.query_early_exit(incidents[i])
        early_ms.append((time.perf_counter() - t) * 1000.0)
    full_ms = []
    for i in full_sample:
        t = time.perf_counter()
        base.query(incidents[i], cutoff=False)
        full_ms.append((time.perf_counter() - t) * 1000.0)
    return {
        "cutoff": summary_ms(cut_ms) | {"no_unit_within_cutoff": missing},
        "early_exit": summary_ms(early_ms),
        "no_cutoff": summary_ms(full_ms),
        "lead_time_diff_s": {
            "n": len(diffs),
            "median": pct(diffs, 50),
            "p99": pct(diffs, 99),
        },
    }


# --------------------------------------------------------------------------------------------
# pandana
# --------------------------------------------------------------------------------------------


def run_pandana(
    base: NxBaseline,
    gdf_units: gpd.GeoDataFrame,
    incidents: list[dispatch.Incident],
    sample: np.ndarray,
    catalog: Catalog,
) -> dict[str, Any]:
    try:
        import pandana
    except ImportError:
        return {"status": "pandana not installed"}
    g = base.graphs["drive"]
    to_metric = base._to_metric
    xy = g.tree.data
    # base's reversed graph: edge a -> b means a link b -> a; pandana gets the reversed edges.
    edges = np.array([(a, b, w) for a, b, w in g.G.edges(data="t")], dtype=float)
    horizon = max(m.max_travel_min for m in catalog) * 60.0
    out: dict[str, Any] = {"nodes": len(g.nodes), "edges": len(edges), "horizon_s": horizon}
    t = time.perf_counter()
    with _quiet_stdout():  # pandana's C++ prints a progress bar
        net = pandana.Network(
            pd.Series(xy[:, 0], index=g.nodes),
            pd.Series(xy[:, 1], index=g.nodes),
            pd.Series(edges[:, 0].astype(np.int64)),
            pd.Series(edges[:, 1].astype(np.int64)),
            pd.DataFrame({"t": edges[:, 2]}),
            twoway=False,
        )
    out["build_s"] = time.perf_counter() - t
    # No precompute(): it serves aggregations only, and with a 30-minute horizon on a 262k-node
    # lattice its range tables would take hours (100 s already at 16k nodes).
    drive = gdf_units[gdf_units["travel_mode"] == TravelMode.DRIVE.value]
    ux, uy = to_metric.transform(drive.geometry.x.to_numpy(), drive.geometry.y.to_numpy())
    kinds = sorted(set(drive["kind"]))
    calls: dict[str, float] = {}
    for kind in kinds:
        sel = (drive["kind"] == kind).to_numpy()
        net.set_pois(
            category=kind,
            maxdist=horizon,
            maxitems=1,
            x_col=pd.Series(ux[sel]),
            y_col=pd.Series(uy[sel]),
        )
        t = time.perf_counter()
        with _quiet_stdout():
            net.nearest_pois(horizon, kind, num_pois=1, include_poi_ids=True)
        calls[kind] = time.perf_counter() - t
    ix, iy = to_metric.transform(
        np.array([inc.lon for inc in incidents]), np.array([inc.lat for inc in incidents])
    )
    t = time.perf_counter()
    inc_nodes = net.get_node_ids(pd.Series(ix), pd.Series(iy)).to_numpy()
    node_ids_s = time.perf_counter() - t
    n = len(incidents)
    out["nearest_pois_s"] = calls
    out["get_node_ids_s"] = node_ids_s
    out["amortised_ms"] = (sum(calls.values()) + node_ids_s) / n * 1000.0
    out["fresh_answer_ms"] = statistics.median(calls.values()) * 1000.0 if calls else math.nan
    # Per incident: CH distances from every drive unit of the required kinds.
    unit_nodes = net.get_node_ids(pd.Series(ux), pd.Series(uy)).to_numpy()
    kind_arr = drive["kind"].to_numpy(str)
    spl_ms = []
    for i in sample:
        matter = catalog.get(incidents[i].matter_code)
        want = np.isin(kind_arr, [k.value for k in matter.required_kinds])
        if not want.any():
            continue
        t = time.perf_counter()
        dest = unit_nodes[want]
        # On the reversed graph, incident -> unit is the unit's way to the incident.
        lengths = np.asarray(net.shortest_path_lengths(np.full(len(dest), inc_nodes[i]), dest))
        for kind in np.unique(kind_arr[want]):
            lengths[kind_arr[want] == kind].min()
        spl_ms.append((time.perf_counter() - t) * 1000.0)
    out["shortest_path_lengths"] = summary_ms(spl_ms)
    out["drive_units_by_kind"] = drive["kind"].value_counts().sort_index().to_dict()
    return out


# --------------------------------------------------------------------------------------------
# one scenario
# --------------------------------------------------------------------------------------------


def run_scenario(scn: Scenario, catalog: Catalog, args: argparse.Namespace) -> dict[str, Any]:
    res: dict[str, Any] = {"name": scn.name}
    setup = dict(scn.setup)
    t, net = timed(lambda: build_network(scn.gdf_nodes, scn.gdf_links))
    setup["build_network_s"] = t
    t, ctx = timed(lambda: dispatch.build_context(scn.gdf_areas, catalog, net))
    setup["build_context_s"] = t
    now = pd.Timestamp(scn.incidents["reported_at"].iloc[0]).to_pydatetime()
    t, units = timed(lambda: dispatch.prepare_units(scn.gdf_units, scn.gdf_offices, now=now))
    setup["prepare_units_s"] = t
    incidents = to_incidents(scn.incidents)
    res["sizes"] = sizes(scn, net)
    res["facts"] = scn.facts

    print(f"\n== {scn.name} ==")
    print_sizes(res["sizes"], scn.facts)

    t, cold = timed(lambda: dispatch_pass(incidents, units, ctx, routes=False))
    setup["cold_pass_s"] = t
    warm = dispatch_pass(incidents, units, ctx, routes=False)
    routed = dispatch_pass(incidents, units, ctx, routes=True)
    res["setup"] = setup
    ok = ~np.isnan(warm.latency_ms)
    res["dispatcher"] = {
        "cold_routes_false": summary_ms(cold.latency_ms[~np.isnan(cold.latency_ms)]),
        "routes_false": summary_ms(warm.latency_ms[ok]),
        "routes_true": summary_ms(routed.latency_ms[~np.isnan(routed.latency_ms)]),
        "errors": warm.errors,
        "outcome": decision_stats(warm.decisions),
    }
    print(
        f"setup: build_network {setup['build_network_s']:.2f} s, build_context "
        f"{setup['build_context_s']:.2f} s, prepare_units {setup['prepare_units_s']:.2f} s; "
        f"cold pass {setup['cold_pass_s']:.1f} s"
    )
    if warm.errors:
        print(f"incidents refused (excluded from the figures): {warm.errors}")
    print(f"outcome: {res['dispatcher']['outcome']}")

    # The batch runs before the baselines are built, so that their memory (gigabytes of
    # networkx graphs, pandana's hierarchy) and threads cannot weigh on it.
    n_batch = min(args.batch, len(incidents))
    batch_inc = [incidents[i] for i in range(n_batch) if not np.isnan(warm.latency_ms[i])]
    res["batch"] = run_batch(batch_inc, units, ctx, args.repeat)

    rng = np.random.default_rng(args.seed + 11)
    good = np.flatnonzero(ok)
    sample = np.sort(rng.choice(good, size=min(args.nx_sample, len(good)), replace=False))
    full_sample = sample[: args.nx_full_sample]
    t, base = timed(lambda: NxBaseline(scn.gdf_nodes, scn.gdf_links, units, catalog))
    res["nx_build_s"] = t
    res["nx_graphs"] = base.sizes
    res["nx"] = run_nx(base, incidents, sample, full_sample, warm.decisions)
    mine_sample = warm.latency_ms[sample]
    mine_full = warm.latency_ms[full_sample]
    res["dispatcher"]["on_nx_sample"] = summary_ms(mine_sample)
    res["dispatcher"]["on_nx_full_sample"] = summary_ms(mine_full)

    if args.no_pandana:
        res["pandana"] = {"status": "skipped (--no-pandana)"}
    else:
        res["pandana"] = run_pandana(base, units, incidents, sample, catalog)

    print_scenario(res)
    if args.profile and scn.name == "megacity":
        # Extra, untimed runs: the profiler's overhead must not reach the figures above.
        single = cProfile.Profile()
        dispatch_pass(incidents[: args.batch * 2], units, ctx, routes=False, profile=single)
        single.dump_stats(f"{args.profile}-single.prof")
        batch = cProfile.Profile()
        batch.runcall(dispatch.dispatch_batch, batch_inc, units, ctx)
        batch.dump_stats(f"{args.profile}-batch.prof")
    return res


def sizes(scn: Scenario, net: RoadNetwork) -> dict[str, Any]:
    desc = net.describe()
    units = scn.gdf_units
    return {
        "nodes": len(scn.gdf_nodes),
        "links": len(scn.gdf_links),
        "modes": desc["modes"],
        "areas": scn.gdf_areas["level"].value_counts().to_dict(),
        "units": len(units),
        "units_by_kind": units["kind"].value_counts().sort_index().to_dict(),
        "units_by_mode": units["travel_mode"].value_counts().sort_index().to_dict(),
        "incidents": len(scn.incidents),
    }


def run_batch(
    incidents: list[dispatch.Incident],
    units: gpd.GeoDataFrame,
    ctx: dispatch.DispatchContext,
    repeat: int,
) -> dict[str, Any]:
    batch_t, greedy_t = [], []
    batch = greedy = None
    for _ in range(repeat):
        t, batch = timed(lambda: dispatch.dispatch_batch(incidents, units, ctx))
        batch_t.append(t)
        t, greedy = timed(lambda: dispatch.dispatch_greedy(incidents, units, ctx))
        greedy_t.append(t)
    assert batch is not None and greedy is not None
    return {
        "incidents": len(incidents),
        "units": len(units),
        "batch_s": statistics.median(batch_t),
        "greedy_s": statistics.median(greedy_t),
        "runs_batch_s": batch_t,
        "runs_greedy_s": greedy_t,
        "gain_over_greedy": batch.gain_over(greedy),
        "batch_weighted_cost_s": batch.weighted_cost_s,
        "greedy_weighted_cost_s": greedy.weighted_cost_s,
        "batch_objective_s": batch.objective_s,
        "greedy_objective_s": greedy.objective_s,
        "batch_assigned": batch.assigned,
        "batch_unassigned": batch.unassigned,
        "greedy_assigned": greedy.assigned,
        "greedy_unassigned": greedy.unassigned,
    }


# --------------------------------------------------------------------------------------------
# printing
# --------------------------------------------------------------------------------------------


def print_sizes(s: dict[str, Any], facts: dict[str, Any]) -> None:
    print(f"graph: {s['nodes']:,} nodes, {s['links']:,} directed links")
    for mode, m in s["modes"].items():
        print(
            f"  {mode:5s}: kept {m['nodes']:,} nodes / {m['edges']:,} edges; dropped "
            f"{m['dropped_nodes']:,} nodes / {m['dropped_links']:,} links (not in the largest "
            f"strongly connected part); closed {m['closed_links']:,} links"
        )
    print(f"areas: {s['areas']}")
    print(f"units: {s['units']:,} by kind {s['units_by_kind']}, by mode {s['units_by_mode']}")
    print(f"incidents: {s['incidents']:,}")
    if facts:
        shown = {k: v for k, v in facts.items() if k not in {"units_by_kind", "units_by_mode"}}
        print(f"facts: {shown}")


def print_scenario(res: dict[str, Any]) -> None:
    d = res["dispatcher"]
    nxr = res["nx"]
    rows: list[tuple[str, str, str, str, str]] = []

    def row(label: str, s: dict[str, Any], ref: dict[str, Any] | None) -> None:
        if ref is None:
            r50 = r99 = ""
        else:
            r50 = fmt_ratio(ratio(s["p50_ms"], ref["p50_ms"]))
            r99 = fmt_ratio(ratio(s["p99_ms"], ref["p99_ms"]))
        rows.append((label, f"{s['p50_ms']:.3f}", f"{s['p99_ms']:.3f}", r50, r99))

    n_all = d["routes_false"]["n"]
    row(f"gridgov dispatch_incident, routes=False, warm ({n_all:,})", d["routes_false"], None)
    row(f"gridgov dispatch_incident, routes=True, warm ({n_all:,})", d["routes_true"], None)
    row(
        f"gridgov dispatch_incident, first pass (cold snaps) ({n_all:,})",
        d["cold_routes_false"],
        None,
    )
    ns = d["on_nx_sample"]["n"]
    row(f"gridgov routes=False on the baseline sample ({ns})", d["on_nx_sample"], None)
    miss = nxr["cutoff"]["no_unit_within_cutoff"]
    row(
        f"networkx Dijkstra, cut off at max travel ({ns}; {miss} without a unit)",
        nxr["cutoff"],
        d["on_nx_sample"],
    )
    row(f"networkx early-exit Dijkstra ({ns})", nxr["early_exit"], d["on_nx_sample"])
    nf = nxr["no_cutoff"]["n"]
    row(f"networkx Dijkstra, no cut-off ({nf})", nxr["no_cutoff"], d["on_nx_full_sample"])
    pdr = res.get("pandana", {})
    if "build_s" in pdr:
        spl = pdr["shortest_path_lengths"]
        row(f"pandana shortest_path_lengths per incident ({spl['n']})", spl, d["on_nx_sample"])
        amort = {"p50_ms": pdr["amortised_ms"], "p99_ms": pdr["amortised_ms"]}
        row("pandana nearest_pois, amortised per incident", amort, d["routes_false"])
        fresh = {"p50_ms": pdr["fresh_answer_ms"], "p99_ms": pdr["fresh_answer_ms"]}
        row("pandana nearest_pois, one call (one kind, all nodes)", fresh, d["routes_false"])
    width = max(len(r[0]) for r in rows)
    print(f"\n{'method':{width}s} | p50 ms  | p99 ms  | base/gridgov p50 | p99")
    for label, p50, p99, r50, r99 in rows:
        print(f"{label:{width}s} | {p50:>7s} | {p99:>7s} | {r50:>16s} | {r99}")
    diff = nxr["lead_time_diff_s"]
    print(
        f"consistency: the dispatcher's lead-unit time vs the baseline's time for the same unit "
        f"(node snapping vs edge snapping): median |diff| {diff['median']:.1f} s, p99 "
        f"{diff['p99']:.1f} s over {diff['n']} incidents"
    )
    print(f"networkx graphs built in {res['nx_build_s']:.1f} s: {res['nx_graphs']}")
    if "build_s" in pdr:
        print(
            f"pandana: CH build {pdr['build_s']:.1f} s (no precompute: nearest_pois and "
            f"shortest_path_lengths do not use it); nearest_pois({pdr['horizon_s']:.0f} s) per "
            "kind (s): "
            f"{ {k: round(v, 3) for k, v in pdr['nearest_pois_s'].items()} }; drive units "
            f"{pdr['drive_units_by_kind']}; get_node_ids for all incidents "
            f"{pdr['get_node_ids_s']:.3f} s"
        )
    else:
        print(f"pandana: {pdr.get('status')}")
    b = res["batch"]
    print(
        f"batch: {b['incidents']:,} incidents x {b['units']:,} units: dispatch_batch "
        f"{b['batch_s']:.2f} s (runs {', '.join(f'{x:.2f}' for x in b['runs_batch_s'])}), "
        f"dispatch_greedy {b['greedy_s']:.2f} s (runs "
        f"{', '.join(f'{x:.2f}' for x in b['runs_greedy_s'])}), gain over greedy "
        f"{b['gain_over_greedy'] * 100:.1f}% (weighted travel {b['batch_weighted_cost_s']:,.0f} "
        f"vs {b['greedy_weighted_cost_s']:,.0f} s; objective {b['batch_objective_s']:,.0f} vs "
        f"{b['greedy_objective_s']:,.0f} s; slots filled {b['batch_assigned']:,} vs "
        f"{b['greedy_assigned']:,}, open {b['batch_unassigned']:,} vs {b['greedy_unassigned']:,})"
    )


def targets(mega: dict[str, Any]) -> list[dict[str, Any]]:
    d = mega["dispatcher"]
    nxr = mega["nx"]
    p99 = d["routes_false"]["p99_ms"]
    cut50 = ratio(nxr["cutoff"]["p50_ms"], d["on_nx_sample"]["p50_ms"])
    cut99 = ratio(nxr["cutoff"]["p99_ms"], d["on_nx_sample"]["p99_ms"])
    ee50 = ratio(nxr["early_exit"]["p50_ms"], d["on_nx_sample"]["p50_ms"])
    ee99 = ratio(nxr["early_exit"]["p99_ms"], d["on_nx_sample"]["p99_ms"])
    batch_s = mega["batch"]["batch_s"]
    return [
        {
            "target": f"megacity one decision p99 <= {TARGET_P99_MS:.0f} ms (routes=False)",
            "value": f"{p99:.2f} ms",
            "pass": p99 <= TARGET_P99_MS,
        },
        {
            "target": f"megacity >= {TARGET_SPEEDUP:.0f}x faster than networkx cut-off Dijkstra",
            "value": f"p50 {cut50:.1f}x, p99 {cut99:.1f}x",
            "pass": min(cut50, cut99) >= TARGET_SPEEDUP,
        },
        {
            "target": f"(also) >= {TARGET_SPEEDUP:.0f}x faster than networkx early-exit Dijkstra",
            "value": f"p50 {ee50:.1f}x, p99 {ee99:.1f}x",
            "pass": min(ee50, ee99) >= TARGET_SPEEDUP,
        },
        {
            "target": f"megacity batch {mega['batch']['incidents']:,} incidents <= "
            f"{TARGET_BATCH_S:.0f} s",
            "value": f"{batch_s:.2f} s",
            "pass": batch_s <= TARGET_BATCH_S,
        },
    ]


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--skip-megacity", action="store_true")
    parser.add_argument("--json", type=Path, help="write every figure to this JSON file")
    parser.add_argument("--incidents", type=int, default=None, help="per graph (10,000)")
    parser.add_argument("--nx-sample", type=int, default=None, help="baseline sample (200)")
    parser.add_argument("--nx-full-sample", type=int, default=None, help="no cut-off (10)")
    parser.add_argument("--batch", type=int, default=None, help="batch incidents (1,000)")
    parser.add_argument("--repeat", type=int, default=None, help="batch runs (3)")
    parser.add_argument("--no-pandana", action="store_true")
    parser.add_argument(
        "--profile",
        help="PREFIX: cProfile extra megacity runs (2 x --batch single decisions, one batch) "
        "into PREFIX-single.prof and PREFIX-batch.prof",
    )
    args = parser.parse_args(argv)
    quick = args.quick
    args.incidents = args.incidents or (1_000 if quick else 10_000)
    args.nx_sample = args.nx_sample or (30 if quick else 200)
    args.nx_full_sample = args.nx_full_sample or (3 if quick else 10)
    args.batch = args.batch or (200 if quick else 1_000)
    args.repeat = args.repeat or (1 if quick else 3)

    info = machine_info()
    print(
        f"{info['date']} | {info['machine']} {info['cpu']} | {info['cores']} cores "
        f"({info['cores_usable']} usable) | load {info['load_avg']}"
    )
    print(" | ".join(f"{k} {v}" for k, v in info["versions"].items()))
    print(
        f"incidents {args.incidents:,} per graph; baseline sample {args.nx_sample}, no cut-off "
        f"{args.nx_full_sample}; batch {args.batch:,} x {args.repeat}; seed {args.seed}"
    )
    catalog = load_catalog()
    out: dict[str, Any] = {"machine": info, "args": {k: str(v) for k, v in vars(args).items()}}
    ref = reference_scenario(args.incidents, args.seed, catalog)
    out["reference"] = run_scenario(ref, catalog, args)
    del ref
    if not args.skip_megacity:
        mc = megacity_scenario(args.seed, args.incidents, quick, catalog)
        print(f"\nmegacity generated in {mc.setup['generate_s']:.1f} s")
        out["megacity"] = run_scenario(mc, catalog, args)
        out["targets"] = targets(out["megacity"])
        print("\n== targets (megacity) ==")
        for t in out["targets"]:
            print(f"{'PASS' if t['pass'] else 'FAIL'}  {t['target']}: {t['value']}")
    if args.profile and not args.skip_megacity:
        for part in ("single", "batch"):
            path = f"{args.profile}-{part}.prof"
            print(f"\nprofile of extra megacity {part} runs (not the timed ones): {path}")
            pstats.Stats(path).sort_stats("cumulative").print_stats(30)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, default=_json_default), encoding="utf-8")
        print(f"\nfigures written to {args.json}")
    return 0


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, ForceKind | TravelMode):
        return obj.value
    return str(obj)


if __name__ == "__main__":
    sys.exit(main())
