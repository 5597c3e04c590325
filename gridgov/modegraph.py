"""One travel mode's road graph: its construction and its bounded reverse searches.

:func:`build_mode_graph` turns links into a directed graph in seconds over the mode's largest
strongly connected part, with a reversed CSR copy whose extra, virtual row stands for a search's
target. :meth:`ModeGraph.search` runs one bounded reverse Dijkstra from that row; on a large graph
it first tries a small region around the target and keeps the answer only when it is certified
exact. :func:`target_joins` seeds a search from every edge a target point is joined to, and
:func:`legs_to` costs the ways from sources' joins to it. :mod:`gridgov.network` snaps points
onto these graphs and turns searches into travel times.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import shapely
from scipy.sparse.csgraph import connected_components, dijkstra

from gridgov import forking
from gridgov.model import TravelMode
from gridgov.settings import get_settings

# ---- regional searches ----
# scipy's Dijkstra sets up every node of the graph on each call (about 2.5 ns a node: 0.6 ms on
# a 262k-node city), whatever the limit, and dispatch makes many short searches. A mode graph
# this large is therefore also cut into overlapping square regions, each with its own small
# reversed graph, and a bounded search runs on the region around its target when that region
# can be certified to hold every answer (see :meth:`ModeGraph.search`).

#: Graphs with fewer nodes are always searched whole: the set-up cost is small there.
_REGION_MIN_NODES = 50_000
#: Region levels, as the node counts their regions aim at (from the graph's mean density). A
#: region is a square: a core cell plus a margin of a quarter of the region's side all round.
#: Below ~15k nodes scipy's set-up is near its floor (~0.05 ms); the larger levels serve the
#: longer searches (driving reaches far on fast roads). A level whose regions would hold most
#: of the graph is not built. Measured on the megacity benchmark (search work of a batch):
#: whole graph only 1.9 s, (12k, 48k) 1.07 s, (12k, 48k, 110k) 0.96 s; regions then hold
#: ~290 MB (the graph's geometries take several times that).
_REGION_NODES: tuple[int, ...] = (12_000, 48_000, 110_000)
#: A level is tried when the target lies at least this share of "limit × the mode's top speed"
#: inside its region. Any value is exact, since every regional search is certified and otherwise
#: repeated on the next level or the whole graph; a smaller one tries more and fails more
#: (0.5-0.8 measured within 10 % of each other on the megacity).
_REGION_REACH = 0.8
#: Entries of a region's virtual row: searches seeded at more nodes run on the whole graph.
_REGION_SLOTS = 8


#: :meth:`ModeGraph.typical_ratio`: sampled targets, their search limit, and the fewest pairs
#: to trust.
_RATIO_SAMPLES = 16
_RATIO_LIMIT_S = 600.0
_RATIO_MIN_PAIRS = 50


@dataclass(frozen=True)
class _Tiling:
    """One level of regions: square core cells over the graph's extent, each grown by a margin.

    Tile ``j * nx + i`` has the core cell ``[x0 + i cell, x0 + (i + 1) cell) x [y0 + j cell,
    ...)``; its region holds every node within ``margin`` of that cell (a square box).
    """

    x0: float
    y0: float
    x1: float
    y1: float
    cell: float
    margin: float
    nx: int
    ny: int

    def box(self, tile: int) -> tuple[float, float, float, float]:
        """The region's box ``(xmin, ymin, xmax, ymax)`` of ``tile``."""
        j, i = divmod(tile, self.nx)
        return (
            self.x0 + i * self.cell - self.margin,
            self.y0 + j * self.cell - self.margin,
            self.x0 + (i + 1) * self.cell + self.margin,
            self.y0 + (j + 1) * self.cell + self.margin,
        )

    def locate(self, x: float, y: float) -> tuple[int, float]:
        """The tile whose core holds ``(x, y)``, and the distance from it to its region's edge.

        A side of the box that lies beyond the graph's extent has no node behind it, so it does
        not count (all four beyond: inf).
        """
        i = min(max(int((x - self.x0) // self.cell), 0), self.nx - 1)
        j = min(max(int((y - self.y0) // self.cell), 0), self.ny - 1)
        tile = j * self.nx + i
        bx0, by0, bx1, by1 = self.box(tile)
        gaps = [math.inf]
        if bx0 > self.x0:
            gaps.append(x - bx0)
        if by0 > self.y0:
            gaps.append(y - by0)
        if bx1 < self.x1:
            gaps.append(bx1 - x)
        if by1 < self.y1:
            gaps.append(by1 - y)
        return tile, min(gaps)


def _tilings(node_xy: np.ndarray) -> tuple[_Tiling, ...]:
    """Region levels for a graph with these node positions (none for a small graph)."""
    n = len(node_xy)
    if n < _REGION_MIN_NODES or not np.isfinite(node_xy).any():
        return ()
    x0, y0 = (float(v) for v in np.nanmin(node_xy, axis=0))
    x1, y1 = (float(v) for v in np.nanmax(node_xy, axis=0))
    area_per_node = max((x1 - x0) * (y1 - y0), 1.0) / n
    out: list[_Tiling] = []
    for target in _REGION_NODES:
        if 2 * target > n:
            break
        side = math.sqrt(target * area_per_node)
        cell = side / 2.0
        nx = max(1, math.ceil((x1 - x0) / cell))
        ny = max(1, math.ceil((y1 - y0) / cell))
        out.append(_Tiling(x0, y0, x1, y1, cell, side / 4.0, nx, ny))
    return tuple(out)


@dataclass(frozen=True)
class _Region:
    """A regional subgraph: the reversed graph among ``nodes`` plus a virtual row.

    ``exit_rows`` are the (local) nodes from which the reversed graph leads out of the region,
    ``exit_s`` the cheapest such step from each: a search that reaches no exit row within
    ``limit - exit_s`` never needed anything outside the region.
    """

    nodes: np.ndarray
    transposed: sp.csr_matrix
    slot: int
    slots: int
    exit_rows: np.ndarray
    exit_s: np.ndarray


@dataclass(frozen=True)
class Search:
    """One bounded reverse search: seconds from the graph's nodes to the target.

    ``dist`` (and ``pred``) are indexed by the searched graph's rows: the mode graph's nodes, or
    a region's, whose mode-graph numbers ``nodes`` lists in order; the last row is the virtual
    target. A node outside the region is, by the region's certificate, beyond the limit.
    """

    dist: np.ndarray
    pred: np.ndarray | None
    nodes: np.ndarray | None

    def at(self, x: np.ndarray) -> np.ndarray:
        """Seconds from the mode-graph nodes ``x`` (inf beyond the limit)."""
        if self.nodes is None:
            return self.dist[x]
        if len(x) == 0:
            return np.zeros(0)
        pos = np.minimum(np.searchsorted(self.nodes, x), len(self.nodes) - 1)
        return np.where(self.nodes[pos] == x, self.dist[pos], np.inf)

    def path(self, x: int) -> list[int]:
        """Mode-graph nodes from ``x`` along the search tree to the node the target seeded.

        Needs predecessors and a finite time at ``x``.
        """
        assert self.pred is not None
        virtual = len(self.dist) - 1
        i = x if self.nodes is None else int(np.searchsorted(self.nodes, x))
        out = [i]
        while int(self.pred[i]) != virtual:
            i = int(self.pred[i])
            out.append(i)
        return out if self.nodes is None else [int(v) for v in self.nodes[out]]


def _seeded_dijkstra(
    graph: sp.csr_matrix,
    slot: int,
    slots: int,
    cols: np.ndarray,
    seeds: np.ndarray,
    limit_s: float,
    predecessors: bool,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Dijkstra from the virtual last row of ``graph`` after pointing its ``slots`` entries.

    The entries get the ``cols`` and ``seeds`` (at most ``slots``); the ones left over repeat
    the first seed, which Dijkstra relaxes harmlessly. The caller holds the graph's lock: the
    virtual row is shared state.
    """
    k = len(cols)
    graph.indices[slot : slot + k] = cols
    graph.data[slot : slot + k] = seeds
    graph.indices[slot + k : slot + slots] = cols[0]
    graph.data[slot + k : slot + slots] = seeds[0]
    virtual = graph.shape[0] - 1
    if predecessors:
        dist, pred = dijkstra(
            graph, directed=True, indices=virtual, limit=limit_s, return_predecessors=True
        )
        return dist, pred
    return dijkstra(graph, directed=True, indices=virtual, limit=limit_s), None


@dataclass
class ModeGraph:
    """One mode's graph over its largest strongly connected part (local node numbering).

    Edges are directed. ``rev[e]`` is the edge running the other way over the same geometry (a
    two-way road), or -1, and ``rev_time[e]`` its time (inf without one). ``geoms[e]`` is the
    edge's metric LineString oriented from ``src`` to ``dst``. ``transposed`` is the reversed
    graph in CSR with one extra, virtual node (row ``n``) whose ``slots`` entries (from
    ``slot``) are overwritten by every search (more are added when a search needs them).
    ``node_xy`` holds the nodes' metric positions; ``tilings`` the region levels of a large
    graph, whose regions are built on first use into ``regions``; ``ratio`` caches
    :meth:`typical_ratio`.
    """

    mode: TravelMode
    node_pos: np.ndarray
    node_ids: np.ndarray
    node_xy: np.ndarray
    src: np.ndarray
    dst: np.ndarray
    time_s: np.ndarray
    length_m: np.ndarray
    link_pos: np.ndarray
    flipped: np.ndarray
    rev: np.ndarray
    geoms: np.ndarray
    snap_edges: np.ndarray
    tree: shapely.STRtree
    transposed: sp.csr_matrix
    slot: int
    slots: int
    hop_keys: np.ndarray
    hop_edges: np.ndarray
    access_ms: float
    top_ms: float
    mean_ms: float
    total_s: float
    rev_time: np.ndarray
    lock: threading.Lock
    tilings: tuple[_Tiling, ...] = ()
    regions: dict[tuple[int, int], _Region] = field(default_factory=dict)
    ratio: float | None = None

    @property
    def n(self) -> int:
        return len(self.node_pos)

    def __getstate__(self) -> dict[str, Any]:
        # A lock cannot be pickled; each process gets its own (process pools, caches on disk).
        # Regions are rebuilt on demand rather than stored.
        state = dict(self.__dict__)
        del state["lock"]
        state["regions"] = {}
        return state

    def __post_init__(self) -> None:
        # A search in another thread holds the lock; a forked child must not copy it held.
        forking.renew_in_child(self, "lock")

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.lock = threading.Lock()
        forking.renew_in_child(self, "lock")

    def search(
        self,
        cols: np.ndarray,
        seeds: np.ndarray,
        limit_s: float,
        *,
        predecessors: bool,
        regional: bool = True,
    ) -> Search:
        """Bounded reverse Dijkstra: seconds from every node to a target seeded at ``cols``.

        The virtual node stands for the target: it is reached from each node ``cols[i]`` at the
        cost ``seeds[i]`` (the rest of the way from that node to the target, access leg
        included). :mod:`gridgov.network` seeds a point's joined links this way.

        On a large graph a bounded search first runs on a region around the target (the
        smallest level that :data:`_REGION_REACH` deems wide enough, then the next). It is
        kept only when certified exact: when no step out of the region starts within the limit
        (``dist[exit] + exit_s > limit`` for every exit row). Then every way to the target that
        leaves the region costs more than the limit (its last step into the region is such a
        step, reversed), so the region's times equal the whole graph's up to the limit, bit for
        bit (the same sums over the same paths), and every node outside is beyond it. Otherwise
        the whole graph is searched. ``regional=False`` searches the whole graph directly.
        """
        cols = np.asarray(cols, dtype=np.int64)
        seeds = np.asarray(seeds, dtype=float)
        # The virtual rows are shared state: searches on one graph must not interleave.
        with self.lock:
            self._make_room(len(cols))
            if regional and math.isfinite(limit_s):
                for region in self._regions_for(int(cols[0]), limit_s):
                    found = self._search_region(region, cols, seeds, limit_s, predecessors)
                    if found is not None:
                        return found
            dist, pred = _seeded_dijkstra(
                self.transposed, self.slot, self.slots, cols, seeds, limit_s, predecessors
            )
        return Search(dist, pred, None)

    def _make_room(self, k: int) -> None:
        """Give the virtual row at least ``k`` entries (the caller holds the lock)."""
        if k <= self.slots:
            return
        t, extra = self.transposed, k - self.slots
        indptr = t.indptr.copy()
        indptr[-1] += extra
        self.transposed = sp.csr_matrix(
            (
                np.concatenate([t.data, np.zeros(extra)]),
                np.concatenate([t.indices, np.full(extra, self.n, dtype=t.indices.dtype)]),
                indptr,
            ),
            shape=t.shape,
        )
        self.slots = k

    def typical_ratio(self) -> float:
        """Median of (time / straight-line lower bound) over sampled node pairs (computed once).

        Targets are :data:`_RATIO_SAMPLES` nodes spread over the numbering; from each, one
        search of :data:`_RATIO_LIMIT_S` seconds times every node whose bound lies between an
        eighth and a quarter of the limit (unreached ones count with limit / bound, which
        their ratio exceeds). A graph too small for that falls back on ``detour_factor × top
        speed / mean speed`` (``settings.detour_factor``; mean: total length / total time).
        """
        if self.ratio is not None:
            return self.ratio
        samples: list[np.ndarray] = []
        targets = np.unique(np.linspace(0, self.n - 1, _RATIO_SAMPLES).astype(np.int64))
        with self.lock:
            for a in targets.tolist():
                dist, _ = _seeded_dijkstra(
                    self.transposed,
                    self.slot,
                    self.slots,
                    np.array([a]),
                    np.zeros(1),
                    _RATIO_LIMIT_S,
                    False,
                )
                bound = np.hypot(*(self.node_xy - self.node_xy[a]).T) / self.top_ms
                ring = (bound >= _RATIO_LIMIT_S / 8) & (bound <= _RATIO_LIMIT_S / 4)
                time_s = np.minimum(dist[: self.n][ring], _RATIO_LIMIT_S)
                samples.append(time_s / bound[ring])
        found = np.concatenate(samples)
        ratio = float(np.median(found)) if len(found) >= _RATIO_MIN_PAIRS else math.nan
        if not math.isfinite(ratio):
            ratio = get_settings().detour_factor * self.top_ms / self.mean_ms
        self.ratio = max(1.0, ratio)
        return self.ratio

    def _regions_for(self, node: int, limit_s: float) -> Iterator[_Region]:
        """The regions worth trying for a search from ``node``, smallest first (built lazily)."""
        x, y = (float(v) for v in self.node_xy[node])
        if not (math.isfinite(x) and math.isfinite(y)):
            return
        reach = _REGION_REACH * limit_s * self.top_ms
        for level, tiling in enumerate(self.tilings):
            tile, gap = tiling.locate(x, y)
            if gap < reach:
                continue
            region = self.regions.get((level, tile))
            if region is None:
                region = self._build_region(tiling.box(tile))
                self.regions[(level, tile)] = region
            yield region

    def _search_region(
        self,
        region: _Region,
        cols: np.ndarray,
        seeds: np.ndarray,
        limit_s: float,
        predecessors: bool,
    ) -> Search | None:
        """The search on ``region``, or None when it cannot be certified exact."""
        if len(cols) > region.slots:
            return None  # more seeds than the region's virtual row holds: search the whole
        pos = np.minimum(np.searchsorted(region.nodes, cols), len(region.nodes) - 1)
        if not np.array_equal(region.nodes[pos], cols):
            return None
        dist, pred = _seeded_dijkstra(
            region.transposed,
            region.slot,
            region.slots,
            pos,
            seeds,
            limit_s,
            predecessors,
        )
        if np.any(dist[region.exit_rows] + region.exit_s <= limit_s):
            return None
        return Search(dist, pred, region.nodes)

    def _build_region(self, box: tuple[float, float, float, float]) -> _Region:
        """The reversed graph among the nodes inside ``box``, with its exits and a virtual row."""
        x, y = self.node_xy[:, 0], self.node_xy[:, 1]
        nodes = np.flatnonzero((x >= box[0]) & (y >= box[1]) & (x <= box[2]) & (y <= box[3]))
        m = len(nodes)
        local = np.full(self.n, -1, dtype=np.int64)
        local[nodes] = np.arange(m)
        t = self.transposed
        starts = t.indptr[nodes].astype(np.int64)
        counts = t.indptr[nodes + 1].astype(np.int64) - starts
        row = np.repeat(np.arange(m), counts)
        entry = np.arange(int(counts.sum())) + np.repeat(
            starts - (np.cumsum(counts) - counts), counts
        )
        col = local[t.indices[entry]]
        weight = t.data[entry]
        inner = col >= 0
        exit_s = np.full(m, np.inf)
        np.minimum.at(exit_s, row[~inner], weight[~inner])
        exit_rows = np.flatnonzero(np.isfinite(exit_s))
        row, col, weight = row[inner], col[inner], weight[inner]
        indptr = np.zeros(m + 2, dtype=np.int64)
        indptr[1 : m + 1] = np.cumsum(np.bincount(row, minlength=m))
        slots = max(self.slots, _REGION_SLOTS)
        indptr[m + 1] = indptr[m] + slots
        transposed = sp.csr_matrix(
            (
                np.concatenate([weight, np.zeros(slots)]),
                np.concatenate([col, np.full(slots, m)]).astype(np.int32),
                indptr.astype(np.int32),
            ),
            shape=(m + 1, m + 1),
        )
        return _Region(
            nodes=nodes,
            transposed=transposed,
            slot=int(indptr[m]),
            slots=slots,
            exit_rows=exit_rows,
            exit_s=exit_s[exit_rows],
        )

    def hops(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """The fastest edge from each local node ``x`` to the matching ``y``."""
        keys = x.astype(np.int64) * (self.n + 1) + y
        return self.hop_edges[np.searchsorted(self.hop_keys, keys)]


def pair_twins(u: np.ndarray, v: np.ndarray, geoms: np.ndarray) -> np.ndarray:
    """For each link, the link running v→u over the same (reversed) geometry, or -1."""
    n = len(u)
    twin = np.full(n, -1, dtype=np.int64)
    if n == 0:
        return twin
    fwd = pd.DataFrame({"a": u, "b": v, "i": np.arange(n)})
    back = pd.DataFrame({"a": v, "b": u, "j": np.arange(n)})
    cand = fwd.merge(back, on=["a", "b"])
    cand = cand[cand["i"] < cand["j"]]
    if cand.empty:
        return twin
    i = cand["i"].to_numpy()
    j = cand["j"].to_numpy()
    same = shapely.equals_exact(geoms[i], shapely.reverse(geoms[j]), tolerance=1e-9)
    i, j = i[same], j[same]
    # Parallel duplicates could offer one link several twins: take each link at most once.
    pairs = pd.DataFrame({"i": i, "j": j}).drop_duplicates("i").drop_duplicates("j")
    pairs = pairs[~pairs["j"].isin(pairs["i"]) & ~pairs["i"].isin(pairs["j"])]
    twin[pairs["i"].to_numpy()] = pairs["j"].to_numpy()
    twin[pairs["j"].to_numpy()] = pairs["i"].to_numpy()
    return twin


def build_mode_graph(
    mode: TravelMode,
    speed_kmh: np.ndarray,
    u_pos: np.ndarray,
    v_pos: np.ndarray,
    length_m: np.ndarray,
    twin: np.ndarray,
    link_geoms: np.ndarray,
    node_ids: np.ndarray,
    node_xy: np.ndarray,
    access_kmh: float,
) -> tuple[ModeGraph | None, np.ndarray, dict[str, int]]:
    """One mode's graph, the links it keeps and what it dropped."""
    n_links, n_all = len(u_pos), len(node_ids)
    kept_links = np.zeros(n_links, dtype=bool)
    open_ = speed_kmh > 0
    link = np.flatnonzero(open_)
    if len(link) == 0:
        return None, kept_links, {"nodes": 0, "links": 0}
    edge_of_link = np.full(n_links, -1, dtype=np.int64)
    edge_of_link[link] = np.arange(len(link))
    partner = twin[link]
    rev = np.where((partner >= 0) & open_[np.maximum(partner, 0)], edge_of_link[partner], -1)
    src, dst = u_pos[link], v_pos[link]
    flipped = np.zeros(len(link), dtype=bool)
    if mode is TravelMode.WALK:
        # Pedestrians ignore one-way rules: every link without an open twin gets one.
        lonely = np.flatnonzero(rev < 0)
        extra = len(link) + np.arange(len(lonely))
        rev = np.concatenate([rev, lonely])
        rev[lonely] = extra
        src, dst = np.concatenate([src, dst[lonely]]), np.concatenate([dst, src[lonely]])
        link = np.concatenate([link, link[lonely]])
        flipped = np.concatenate([flipped, np.ones(len(lonely), dtype=bool)])
    time_s = length_m[link] / (speed_kmh[link] / 3.6)

    adjacency = sp.csr_matrix(
        (np.ones(len(src)), (src, dst)), shape=(n_all, n_all), dtype=np.float64
    )
    _, labels = connected_components(adjacency, directed=True, connection="strong")
    touched = np.zeros(n_all, dtype=bool)
    touched[src] = touched[dst] = True
    sizes = np.bincount(labels[touched], minlength=labels.max() + 1)
    keep_node = touched & (labels == int(np.argmax(sizes)))
    keep_edge = keep_node[src] & keep_node[dst]
    kept_links[link[keep_edge & ~flipped]] = True
    dropped = {
        "nodes": int((touched & ~keep_node).sum()),
        "links": int((open_ & ~kept_links).sum()),
    }

    local = np.full(n_all, -1, dtype=np.int64)
    node_pos = np.flatnonzero(keep_node)
    n = len(node_pos)
    local[node_pos] = np.arange(n)
    edge_local = np.full(len(src), -1, dtype=np.int64)
    edge_local[keep_edge] = np.arange(int(keep_edge.sum()))
    src, dst = local[src[keep_edge]], local[dst[keep_edge]]
    rev = np.where(rev[keep_edge] >= 0, edge_local[np.maximum(rev[keep_edge], 0)], -1)
    link, flipped, time_s = link[keep_edge], flipped[keep_edge], time_s[keep_edge]
    geoms = link_geoms[link].copy()
    geoms[flipped] = shapely.reverse(geoms[flipped])
    snap_edges = np.flatnonzero((rev < 0) | (np.arange(len(src)) < rev))

    # Reversed graph with one virtual node (row n) for the target; parallel edges keep the
    # fastest and loops go, since neither changes a shortest path.
    proper = src != dst
    order = np.lexsort((time_s[proper], src[proper], dst[proper]))
    rows, cols = dst[proper][order], src[proper][order]
    weights = time_s[proper][order]
    first = np.ones(len(rows), dtype=bool)
    first[1:] = (np.diff(rows) != 0) | (np.diff(cols) != 0)
    rows, cols, weights = rows[first], cols[first], weights[first]
    indptr = np.zeros(n + 2, dtype=np.int64)
    indptr[1 : n + 1] = np.cumsum(np.bincount(rows, minlength=n))
    indptr[n + 1] = indptr[n] + 2
    index_type = np.int32 if len(cols) + 2 < np.iinfo(np.int32).max else np.int64
    transposed = sp.csr_matrix(
        (
            np.concatenate([weights, [0.0, 0.0]]),
            np.concatenate([cols, [n, n]]).astype(index_type),
            indptr.astype(index_type),
        ),
        shape=(n + 1, n + 1),
    )
    fwd_keys = src[proper] * (n + 1) + dst[proper]
    hop_order = np.lexsort((time_s[proper], fwd_keys))
    keys = fwd_keys[hop_order]
    unique = np.ones(len(keys), dtype=bool)
    unique[1:] = np.diff(keys) != 0
    lengths = shapely.length(geoms)
    moving = time_s > 0
    top_ms = float(np.max(lengths[moving] / time_s[moving])) if moving.any() else 1.0
    mean_ms = float(lengths[moving].sum() / time_s[moving].sum()) if moving.any() else 1.0
    graph = ModeGraph(
        mode=mode,
        node_pos=node_pos,
        node_ids=node_ids[node_pos],
        node_xy=node_xy[node_pos],
        src=src,
        dst=dst,
        time_s=time_s,
        length_m=length_m[link],
        link_pos=link,
        flipped=flipped,
        rev=rev,
        geoms=geoms,
        snap_edges=snap_edges,
        tree=shapely.STRtree(geoms[snap_edges]),
        transposed=transposed,
        slot=int(indptr[n]),
        slots=2,
        hop_keys=keys[unique],
        hop_edges=np.flatnonzero(proper)[hop_order][unique],
        access_ms=access_kmh / 3.6,
        top_ms=max(top_ms, 1e-9),
        mean_ms=max(mean_ms, 1e-9),
        rev_time=np.where(rev >= 0, time_s[np.maximum(rev, 0)], np.inf),
        total_s=float(time_s.sum()),
        lock=threading.Lock(),
        tilings=_tilings(node_xy[node_pos]),
    )
    return graph, kept_links, dropped


# ---- a target's joins and the legs towards it ----
# A point joins one or more edges (gridgov.travel_model.Snapped); a target's joins seed its search,
# and a source's joins are costed against them.


@dataclass(frozen=True)
class TargetJoins:
    """A target's joins (edges, positions, access legs in seconds) and the seeds of its search.

    Each join gives two seeds (``cols``/``seeds``; ``join`` and ``side`` say whose and which):
    side 0 reaches the position from the edge's start, side 1 from its end over the reverse twin
    (or, at the very end of a one-way edge, at its end node; otherwise it repeats side 0).
    """

    edge: np.ndarray
    frac: np.ndarray
    access_s: np.ndarray
    cols: np.ndarray
    seeds: np.ndarray
    join: np.ndarray
    side: np.ndarray


def target_joins(
    g: ModeGraph, edge: np.ndarray, frac: np.ndarray, access_m: np.ndarray
) -> TargetJoins:
    """The joins of one target point (its edges, positions and access legs in metres)."""
    if len(edge) == 1:
        return _one_join(g, int(edge[0]), float(frac[0]), float(access_m[0]))
    e = np.asarray(edge, dtype=np.int64)
    f = np.asarray(frac, dtype=float)
    a = np.asarray(access_m, dtype=float)
    f = np.asarray(f, dtype=float)
    access_s = np.asarray(a, dtype=float) / g.access_ms
    r = g.rev[e]
    seed_a = access_s + f * g.time_s[e]
    twin = r >= 0
    # A point at the very end of a one-way edge is at its end node; elsewhere a one-way road
    # is entered only from its start, and the second seed repeats the first.
    at_end = ~twin & (f >= 1.0)
    col_b = np.where(twin | at_end, g.dst[e], g.src[e])
    seed_b = np.where(
        twin,
        access_s + (1.0 - f) * g.time_s[np.maximum(r, 0)],
        np.where(at_end, access_s, seed_a),
    )
    k = len(e)
    return TargetJoins(
        edge=e,
        frac=f,
        access_s=access_s,
        cols=np.column_stack([g.src[e], col_b]).reshape(-1),
        seeds=np.column_stack([seed_a, seed_b]).reshape(-1),
        join=np.repeat(np.arange(k), 2),
        side=np.tile(np.array([0, 1]), k),
    )


def _one_join(g: ModeGraph, edge: int, frac: float, access_m: float) -> TargetJoins:
    """:func:`target_joins` of a target with a single join, in scalars (the common case)."""
    access_s = access_m / g.access_ms
    r = int(g.rev[edge])
    seed_a = access_s + frac * float(g.time_s[edge])
    if r >= 0:
        col_b, seed_b = int(g.dst[edge]), access_s + (1.0 - frac) * float(g.time_s[r])
    elif frac >= 1.0:
        col_b, seed_b = int(g.dst[edge]), access_s
    else:
        col_b, seed_b = int(g.src[edge]), seed_a
    return TargetJoins(
        edge=np.array([edge]),
        frac=np.array([frac]),
        access_s=np.array([access_s]),
        cols=np.array([int(g.src[edge]), col_b]),
        seeds=np.array([seed_a, seed_b]),
        join=np.zeros(2, dtype=np.int64),
        side=np.array([0, 1]),
    )


def _onto(g: ModeGraph, es: np.ndarray, s: np.ndarray, edge: int) -> tuple[np.ndarray, np.ndarray]:
    """Source positions on the reverse twin of ``edge`` expressed on ``edge`` (the same road)."""
    r_t = int(g.rev[edge])
    if r_t >= 0:
        on_rev = es == r_t
        if on_rev.any():
            return np.where(on_rev, edge, es), np.where(on_rev, 1.0 - s, s)
    return es, s


@dataclass
class Legs:
    """Candidate costs (seconds, access of the source excluded) of source joins to one target.

    ``costs`` has two rows per target join (direct forward, direct backward along its road, for
    sources on that road) and then two more (via the end of the source's edge, via its start).
    ``moved[j]`` holds the source edges and positions, moved onto target join ``j``'s edge
    when on its reverse twin; the last two rows were computed on ``moved[0]``.
    """

    moved: list[tuple[np.ndarray, np.ndarray]]
    costs: np.ndarray


def legs_to(
    g: ModeGraph, search: Search, es: np.ndarray, s: np.ndarray, target: TargetJoins
) -> Legs:
    """Costs from source joins (edges ``es`` at positions ``s``) to a searched target."""
    n = len(es)
    moved = [_onto(g, es, s, int(edge)) for edge in target.edge.tolist()]
    rows: list[np.ndarray] = []
    for (me, ms), edge, frac, access_s in zip(
        moved, target.edge.tolist(), target.frac.tolist(), target.access_s.tolist(), strict=True
    ):
        direct_fwd = np.full(n, np.inf)
        direct_bwd = np.full(n, np.inf)
        same = me == edge
        if same.any():
            r_t = int(g.rev[edge])
            t_here = float(g.time_s[edge])
            direct_fwd = np.where(same & (ms <= frac), (frac - ms) * t_here + access_s, np.inf)
            if r_t >= 0:
                t_back = float(g.time_s[r_t])
                direct_bwd = np.where(same & (ms >= frac), (ms - frac) * t_back + access_s, np.inf)
        rows += [direct_fwd, direct_bwd]
    es, s = moved[0]
    ends = search.at(np.concatenate([g.dst[es], g.src[es]]))
    via_end = (1.0 - s) * g.time_s[es] + ends[:n]
    # Backwards needs the twin (``rev_time`` is inf without one), except from the very start of
    # the edge: that point is the node.
    back = np.multiply(s, g.rev_time[es], out=np.zeros(n), where=s > 0.0)
    via_start = back + ends[n:]
    return Legs(moved, np.stack([*rows, via_end, via_start]))
