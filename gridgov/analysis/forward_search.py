"""Forward searches from snapped points over one mode's roads (pure; seconds).

Dispatch measures unit → incident times with one bounded *reverse* search per incident
(:meth:`gridgov.network.RoadNetwork.field_to`). The analyst's questions run the other way round,
from a few sources (a station, a candidate site, every unit of a kind) to many places, so here
each source group gets a virtual node joined to the roads its points are joined to, and one
forward Dijkstra per group reaches every road node; :func:`times_at` then reads the time of
any snapped target off the node times, the way ``RoadNetwork.field_to`` seeds a target.

The ways a point leaves its road and a target is reached are exactly those of the reverse search,
except the "direct" way along one shared edge (a source and a target on the same road), which
the callers that need exact times handle themselves (:func:`shared_road`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.sparse.csgraph import dijkstra

from gridgov.model import TravelMode
from gridgov.network import RoadNetwork
from gridgov.travel_model import Snapped

#: Relative and absolute slack (seconds) on a search bound: forward and reverse searches add
#: the same edge times in a different order, so they may differ in the last bits.
REL_SLACK = 1e-9
ABS_SLACK_S = 1e-6


@dataclass(frozen=True)
class ModeArrays:
    """One mode's directed edges as positional arrays (node numbers ``0..n-1``).

    ``src``/``dst`` number the nodes ``node_ids`` (sorted); ``rev`` is each edge's twin (or -1)
    and ``rev_time`` its time (inf without one); ``access_ms`` the mode's access speed (m/s).
    """

    mode: TravelMode
    edges: pd.DataFrame
    node_ids: np.ndarray
    src: np.ndarray
    dst: np.ndarray
    time_s: np.ndarray
    rev: np.ndarray
    rev_time: np.ndarray
    access_ms: float

    @property
    def n(self) -> int:
        return len(self.node_ids)


def mode_arrays(travel: RoadNetwork, mode: TravelMode | str) -> ModeArrays:
    """The edges of ``mode`` (:meth:`RoadNetwork.edges`) as arrays for forward searches."""
    m = TravelMode(mode)
    edges = travel.edges(m)
    node_ids, inverse = np.unique(
        np.concatenate([edges["u"].to_numpy(), edges["v"].to_numpy()]), return_inverse=True
    )
    n_edges = len(edges)
    time_s = edges["time_s"].to_numpy(dtype=float)
    rev = edges["reverse_edge"].to_numpy(dtype=np.int64)
    return ModeArrays(
        mode=m,
        edges=edges,
        node_ids=node_ids,
        src=inverse[:n_edges],
        dst=inverse[n_edges:],
        time_s=time_s,
        rev=rev,
        rev_time=np.where(rev >= 0, time_s[np.maximum(rev, 0)], np.inf),
        access_ms=travel.access_speed_kmh[m.value] / 3.6,
    )


def seeded_graph(arrays: ModeArrays, sources: Snapped, group: np.ndarray) -> sp.csr_matrix:
    """The mode's graph plus one virtual node per source group (node ``n + g``).

    A virtual node joins every source's departure nodes (the end of each road it is joined
    to, and the start when the road is two-way or the source sits on it), weighted by the
    source's access leg plus the part of its edge.

    Parameters
    ----------
    arrays
        :func:`mode_arrays` of the sources' mode.
    sources
        Snapped points (every join counts, see :meth:`Snapped.joins`).
    group
        The group (``0..k-1``) of each source point: one group for "the nearest of them", one
        per source for a time matrix.
    """
    n = arrays.n
    k = int(group.max()) + 1 if len(group) else 0
    point, es, s, access = sources.joins()
    es = np.asarray(es, dtype=np.int64)
    access = np.asarray(access, dtype=float) / arrays.access_ms
    time_s, src, dst = arrays.time_s, arrays.src, arrays.dst
    via_end = access + (1.0 - s) * time_s[es]
    # Leaving backwards needs the twin, except from the very start: that point is the node.
    back = np.multiply(s, arrays.rev_time[es], out=np.zeros(len(es)), where=s > 0.0)
    via_start = access + back
    virtual = n + np.asarray(group, dtype=np.int64)[point]
    rows = np.concatenate([src, virtual, virtual])
    cols = np.concatenate([dst, dst[es], src[es]])
    # scipy drops nothing but would *sum* duplicate entries: keep the fastest of parallel edges
    # and of several sources at one node. A zero weight would vanish from the sparse matrix.
    weights = np.maximum(np.concatenate([time_s, via_end, via_start]), 1e-12)
    keep = np.isfinite(weights)
    entries = pd.DataFrame({"r": rows[keep], "c": cols[keep], "w": weights[keep]})
    fastest = entries.groupby(["r", "c"], as_index=False)["w"].min()
    return sp.csr_matrix(
        (fastest["w"].to_numpy(), (fastest["r"].to_numpy(), fastest["c"].to_numpy())),
        shape=(n + k, n + k),
    )


def search_bound(limit_s: float) -> float:
    """``limit_s`` with the slack that keeps a bound exact up to rounding."""
    return limit_s * (1.0 + REL_SLACK) + ABS_SLACK_S


def node_times(
    arrays: ModeArrays, sources: Snapped, group: np.ndarray, limit_s: float
) -> np.ndarray:
    """Seconds from each source group to every road node (``k × n``; inf beyond the bound)."""
    graph = seeded_graph(arrays, sources, group)
    k = graph.shape[0] - arrays.n
    if k == 0:
        return np.zeros((0, arrays.n))
    dist = dijkstra(
        graph, directed=True, indices=arrays.n + np.arange(k), limit=search_bound(limit_s)
    )
    return np.atleast_2d(dist)[:, : arrays.n]


def times_at(arrays: ModeArrays, dist: np.ndarray, targets: Snapped) -> np.ndarray:
    """Seconds from each row of node times ``dist`` to each target (``k × targets``).

    A target is reached over any of its joined roads (the fastest counts): along its edge from
    the start, or over the twin from the end; on a one-way edge only at its very end.
    """
    point, et, f, access_t = targets.joins()
    et = np.asarray(et, dtype=np.int64)
    access_t = np.asarray(access_t, dtype=float) / arrays.access_ms
    time_s = arrays.time_s
    at_a = dist[:, arrays.src[et]] + f * time_s[et]
    r_t = arrays.rev[et]
    twin = r_t >= 0
    leg_b = np.where(f >= 1.0, 0.0, np.inf)
    leg_b[twin] = (1.0 - f[twin]) * arrays.rev_time[et[twin]]
    at_b = dist[:, arrays.dst[et]] + leg_b
    best = np.minimum(at_a, at_b) + access_t
    times = np.full((dist.shape[0], len(targets)), np.inf)
    for row in range(dist.shape[0]):
        np.minimum.at(times[row], point, best[row])
    return times


def shared_road(arrays: ModeArrays, sources: Snapped, targets: Snapped) -> np.ndarray:
    """A mask of targets whose road (or its twin) holds a source: the forward times of these
    may miss the direct way along that road and only bound the exact time from above."""
    _, es, _, _ = sources.joins()
    point, et, _, _ = targets.joins()
    et = np.asarray(et, dtype=np.int64)
    r_t = arrays.rev[et]
    source_roads = np.unique(es)
    on_source_road = np.isin(et, source_roads) | ((r_t >= 0) & np.isin(r_t, source_roads))
    shared = np.zeros(len(targets), dtype=bool)
    shared[point[on_source_road]] = True
    return shared


def direct_ways(arrays: ModeArrays, sources: Snapped, targets: Snapped) -> pd.DataFrame:
    """The ways along one shared road that a node-to-node search cannot see.

    For every source join and target join on the same edge: ahead along the edge, or back over
    its twin when the road is two-way. Returns a frame ``target``, ``source`` (point indices)
    and ``time_s`` (access legs included), one row per such way.
    """
    sp_, se, ss, sa = sources.joins()
    tp, te, tf, ta = targets.joins()
    left = pd.DataFrame({"source": sp_, "edge": se, "s": ss, "a_s": np.asarray(sa, dtype=float)})
    right = pd.DataFrame({"target": tp, "edge": te, "f": tf, "a_t": np.asarray(ta, dtype=float)})
    pairs = left.merge(right, on="edge")
    if pairs.empty:
        return pd.DataFrame({"target": [], "source": [], "time_s": []})
    e = pairs["edge"].to_numpy(dtype=np.int64)
    s, f = pairs["s"].to_numpy(), pairs["f"].to_numpy()
    legs = (pairs["a_s"].to_numpy() + pairs["a_t"].to_numpy()) / arrays.access_ms
    ahead = np.where(f >= s, (f - s) * arrays.time_s[e], np.inf)
    with np.errstate(invalid="ignore"):
        back = np.where(f < s, (s - f) * arrays.rev_time[e], np.inf)
    return pd.DataFrame(
        {
            "target": pairs["target"].to_numpy(),
            "source": pairs["source"].to_numpy(),
            "time_s": legs + np.minimum(ahead, back),
        }
    )


__all__ = [
    "ABS_SLACK_S",
    "REL_SLACK",
    "ModeArrays",
    "direct_ways",
    "mode_arrays",
    "node_times",
    "search_bound",
    "seeded_graph",
    "shared_road",
    "times_at",
]
