"""Routing over road networks: per-mode travel graphs, snapping, travel times and routes.

:func:`build_network` turns node and link frames (:mod:`gridgov.roads` reads them from files) into
a :class:`RoadNetwork`: per travel mode a directed graph in seconds over its largest strongly
connected part (:mod:`gridgov.modegraph`), points snapped onto its roads with access legs, and
exact travel times from one bounded reverse Dijkstra per target (:meth:`RoadNetwork.field_to`).
It follows the :class:`~gridgov.travel_model.TravelModel` protocol that dispatch uses, as the
fallback without roads (:class:`gridgov.straight_line.StraightLine`) does.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from numpy.typing import ArrayLike
from pyproj import CRS, Transformer
from shapely.geometry import LineString
from shapely.ops import substring

from gridgov.errors import DataFileError, InputError, NotFoundError
from gridgov.modegraph import (
    ModeGraph,
    Search,
    TargetJoins,
    build_mode_graph,
    legs_to,
    pair_twins,
    target_joins,
)
from gridgov.model import TravelMode
from gridgov.roads import (
    frame_problems,
    link_speeds,
    read_road_frames,
    same_id_type,
    speeds_by_class,
)
from gridgov.settings import get_settings
from gridgov.travel_model import (
    MODES,
    Route,
    Snapped,
    TravelField,
    as_mode,
    check_field_mode,
    check_same_mode,
    check_single,
    check_targets,
)

__all__ = ["RoadNetwork", "build_network", "read_network"]


def _plain(value: Any) -> Any:
    """A numpy scalar as the plain Python value (node and link ids may be numbers or text)."""
    return value.item() if isinstance(value, np.generic) else value


#: First search bound (s) of :meth:`RoadNetwork.route` when the lower bound is tiny.
_ROUTE_FIRST_LIMIT_S = 60.0


@dataclass
class _NetworkField:
    """Times to one target, from one bounded reverse search (see :meth:`RoadNetwork.field_to`)."""

    mode: TravelMode
    limit_s: float
    graph: ModeGraph
    search: Search
    target: TargetJoins
    point: Snapped
    to_wgs84: Transformer

    def route_from(self, source: Snapped) -> Route:
        """The fastest route from the single ``source``, read from this field's search (as
        :meth:`RoadNetwork.route` finds it).

        Raises
        ------
        NotFoundError
            The route takes longer than ``limit_s``, or there is none.
        """
        check_single(source, "source")
        check_field_mode(source, self.mode)
        _check_edges(self.graph, source.joins()[1])
        route = _route_over(
            self.graph, self.search, self.target, self.limit_s, source, self.point, self.to_wgs84
        )
        if route is None:
            raise _no_route(self.mode, source, self.point)
        return route

    def times_from(self, sources: Snapped) -> np.ndarray:
        """Seconds from each source to the target; inf beyond ``limit_s`` or unreachable.

        A source with several joins takes the fastest of them.
        """
        check_field_mode(sources, self.mode)
        n = len(sources)
        if n == 0:
            return np.zeros(0)
        point, es, s, access_m = sources.joins()
        _check_edges(self.graph, es)
        legs = legs_to(self.graph, self.search, es.astype(np.int64), s, self.target)
        total = access_m / self.graph.access_ms + legs.costs.min(axis=0)
        if len(total) > n:
            best = np.full(n, np.inf)
            np.minimum.at(best, point, total)
            total = best
        return np.where(total <= self.limit_s, total, np.inf)


def _route_over(
    g: ModeGraph,
    found: Search,
    joins: TargetJoins,
    limit_s: float,
    source: Snapped,
    target: Snapped,
    to_wgs84: Transformer,
) -> Route | None:
    """The fastest route from ``source`` to ``target`` over a reverse search to the target that
    kept its predecessors and went ``limit_s`` far; None when the route takes longer (or the
    target cannot be reached)."""
    _, all_es, all_s, all_access = source.joins()
    legs = legs_to(g, found, all_es.astype(np.int64), all_s, joins)
    # The join of the source and the way that give the time: the minimum, which is the field's
    # time bit for bit (adding a join's access leg keeps the order of its ways' costs).
    total = all_access / g.access_ms + legs.costs
    best = int(np.argmin(total))
    time_s = float(total.flat[best])
    if not (math.isfinite(time_s) and time_s <= limit_s):  # unreachable, or beyond the search
        return None
    way, i = (int(v) for v in np.unravel_index(best, total.shape))
    n_direct = 2 * len(joins.edge)
    pieces: list[np.ndarray] = []
    road_m = 0.0
    node_path: list[int] = []
    if way < n_direct:  # along the road of target join ``way // 2``
        j = way // 2
        edge, frac = int(joins.edge[j]), float(joins.frac[j])
        es, s = int(legs.moved[j][0][i]), float(legs.moved[j][1][i])
        if way % 2 == 0:  # forwards
            pieces.append(_substring_coords(g.geoms[edge], s, frac))
            road_m += (frac - s) * float(g.length_m[edge])
        else:  # over its twin, i.e. backwards over the same road
            r_t = int(g.rev[edge])
            pieces.append(_substring_coords(g.geoms[r_t], 1.0 - s, 1.0 - frac))
            road_m += (s - frac) * float(g.length_m[r_t])
    else:
        es, s = int(legs.moved[0][0][i]), float(legs.moved[0][1][i])
        if way == n_direct:
            first, start, stop, x = es, s, 1.0, int(g.dst[es])
        elif g.rev[es] >= 0:
            first, start, stop, x = int(g.rev[es]), 1.0 - s, 1.0, int(g.src[es])
        else:  # at the start node of a one-way edge
            first, start, stop, x = es, 0.0, 0.0, int(g.src[es])
        pieces.append(_substring_coords(g.geoms[first], start, stop))
        road_m += (stop - start) * float(g.length_m[first])
        node_path = found.path(x)
        x = node_path[-1]
        hops = g.hops(np.asarray(node_path[:-1]), np.asarray(node_path[1:]))
        pieces.append(np.asarray(shapely.get_coordinates(g.geoms[hops])))
        road_m += float(g.length_m[hops].sum())
        # The search reached the target from the virtual node through ``x``: by a seed at
        # ``x`` of exactly its time (the start of a join's edge, the start of its twin, or,
        # at the very end of a one-way edge, the end node itself).
        at_x = float(found.at(np.array([x]))[0])
        gap = np.where(joins.cols == x, np.abs(joins.seeds - at_x), np.inf)
        slot = int(np.argmin(gap))
        j, side = int(joins.join[slot]), int(joins.side[slot])
        edge, frac = int(joins.edge[j]), float(joins.frac[j])
        r_t = int(g.rev[edge])
        if side == 0 or (r_t < 0 and frac < 1.0):
            pieces.append(_substring_coords(g.geoms[edge], 0.0, frac))
            road_m += frac * float(g.length_m[edge])
        elif r_t >= 0:
            pieces.append(_substring_coords(g.geoms[r_t], 0.0, 1.0 - frac))
            road_m += (1.0 - frac) * float(g.length_m[r_t])
        else:
            pieces.append(_substring_coords(g.geoms[edge], 1.0, 1.0))
    source_m = float(all_access[i])
    target_m = float(target.joins()[3][j])
    metric = np.concatenate(pieces)
    lon, lat = to_wgs84.transform(metric[:, 0], metric[:, 1])
    coords = np.concatenate(
        [
            [[source.lon[0], source.lat[0]]],
            np.column_stack([lon, lat]),
            [[target.lon[0], target.lat[0]]],
        ]
    )
    keep = np.ones(len(coords), dtype=bool)
    keep[1:] = np.any(np.diff(coords, axis=0) != 0, axis=1)
    coords = coords[keep]
    if len(coords) == 1:
        coords = np.concatenate([coords, coords])
    length = source_m + road_m + target_m
    return Route(
        mode=g.mode,
        time_s=time_s,
        length_m=length,
        geometry=LineString(coords),
        node_ids=tuple(_plain(i) for i in g.node_ids[node_path]),
    )


def _no_route(mode: TravelMode, source: Snapped, target: Snapped) -> NotFoundError:
    return NotFoundError(
        f"no {mode.value} route from ({source.lon[0]:.6f}, {source.lat[0]:.6f}) "
        f"to ({target.lon[0]:.6f}, {target.lat[0]:.6f})"
    )


def _check_edges(g: ModeGraph, edges: np.ndarray) -> None:
    bad = (edges < 0) | (edges >= len(g.src))
    if bad.any():
        msg = (
            f"{int(bad.sum())} point(s) were not snapped to this network's {g.mode.value} graph "
            "(snap them with RoadNetwork.snap)"
        )
        raise InputError(msg)


def _substring_coords(geom: LineString, start: float, end: float) -> np.ndarray:
    """Coordinates of ``geom`` between two normalised positions (start <= end)."""
    part = substring(geom, start, end, normalized=True)
    return np.asarray(shapely.get_coordinates(part))


class RoadNetwork:
    """Per-mode directed graphs (CSR, seconds) over the largest strongly connected part.

    Build it with :func:`build_network` or :func:`read_network`.

    Representation
    --------------
    Each mode has its own directed edges, numbered 0..E-1 (see :meth:`edges`): one per link open
    to the mode inside the mode's largest strongly connected part, plus, for walking, the reverse
    of every link that has no reverse twin (pedestrians ignore one-way rules). Two edges are
    *twins* when they join the same nodes in opposite directions over the same geometry: the two
    directions of one two-way road. Points snap to one edge per road (the lower-numbered twin);
    ``Snapped.frac`` is measured from that edge's start, and the twin (``reverse_edge`` in
    :meth:`edges`) lets the point leave or be reached in the other direction too. A point joins
    the nearest road and every other road within ``snap_tolerance_m`` of it (each with its own
    access leg; see :class:`Snapped`), so two ways drawn for the two directions of one road
    serve the point in both directions even when they are not exact twins. A point at
    ``frac`` 0 or 1 is at that node: it leaves and is reached through the node, whatever the
    one-way rules of the edge it snapped to (a node is shared by several edges). Geometry is
    handled in a metric CRS: ``settings.metric_crs`` when the roads lie within its area of use,
    else the local UTM zone. A large graph is also cut into overlapping square regions, each
    with its own small reversed graph, built on first use (see :meth:`field_to`).

    Attributes
    ----------
    gdf_nodes, gdf_links
        The frames given (links get ``kept_<mode>`` booleans: open to the mode and in its kept
        part).
    dropped
        Per mode, ``{"nodes": n, "links": m}``: nodes touched by a link open to the mode and links
        open to it that lie outside the largest strongly connected part.
    """

    kind = "network"

    def __init__(
        self,
        *,
        gdf_nodes: gpd.GeoDataFrame,
        gdf_links: gpd.GeoDataFrame,
        graphs: dict[TravelMode, ModeGraph],
        dropped: dict[str, dict[str, int]],
        closed: dict[str, int],
        metric_crs: str,
        speeds_kmh: dict[str, dict[str, float]],
        access_speed_kmh: dict[str, float],
        max_snap_m: float,
        snap_tolerance_m: float,
    ) -> None:
        self.gdf_nodes = gdf_nodes
        self.gdf_links = gdf_links
        self.dropped = dropped
        self.modes: tuple[TravelMode, ...] = tuple(m for m in MODES if m in graphs)
        self.metric_crs = metric_crs
        self.speeds_kmh = speeds_kmh
        self.access_speed_kmh = access_speed_kmh
        self.max_snap_m = max_snap_m
        self.snap_tolerance_m = snap_tolerance_m
        self._link_ids = (
            gdf_links["link_id"].to_numpy()
            if "link_id" in gdf_links.columns
            else np.arange(len(gdf_links))
        )
        self._graphs = graphs
        self._closed = closed
        self._to_metric = Transformer.from_crs("EPSG:4326", metric_crs, always_xy=True)
        self._to_wgs84 = Transformer.from_crs(metric_crs, "EPSG:4326", always_xy=True)

    def _graph(self, mode: TravelMode | str) -> ModeGraph:
        m = as_mode(mode)
        if m not in self._graphs:
            msg = f"the road network has no road open to {m.value}"
            raise InputError(msg)
        return self._graphs[m]

    def edges(self, mode: TravelMode | str) -> pd.DataFrame:
        """The mode's directed edges (the numbering ``Snapped.edge`` uses).

        Returns
        -------
        pandas.DataFrame
            One row per edge: ``u``, ``v`` (node ids, direction of travel), ``link_id``,
            ``reversed`` (the edge runs against its link: walking against a one-way link),
            ``length_m``, ``time_s`` and ``reverse_edge`` (the twin edge, or -1).
        """
        g = self._graph(mode)
        link_ids = self.gdf_links["link_id"].to_numpy()[g.link_pos]
        return pd.DataFrame(
            {
                "u": g.node_ids[g.src],
                "v": g.node_ids[g.dst],
                "link_id": link_ids,
                "reversed": g.flipped,
                "length_m": g.length_m,
                "time_s": g.time_s,
                "reverse_edge": g.rev,
            }
        )

    def snap(self, lon: ArrayLike, lat: ArrayLike, mode: TravelMode | str) -> Snapped:
        """Snap WGS84 points to the nearest usable road of ``mode``.

        Parameters
        ----------
        lon, lat
            WGS84 coordinates (scalars or arrays of equal length).
        mode
            Travel mode whose graph the points join.

        Returns
        -------
        Snapped
            The nearest position on a kept edge of the mode (never on a dropped component);
            ``far`` where it is more than ``max_snap_m`` away; and the further joins: every
            other road within ``snap_tolerance_m`` of the nearest distance.
        """
        g = self._graph(mode)
        x, y = np.broadcast_arrays(
            np.atleast_1d(np.asarray(lon, dtype=float)), np.atleast_1d(np.asarray(lat, dtype=float))
        )
        if x.ndim != 1:
            msg = "lon and lat must be scalars or 1-d arrays"
            raise InputError(msg)
        bad = ~(np.isfinite(x) & np.isfinite(y))
        if bad.any():
            msg = f"non-finite coordinates at position(s) {np.flatnonzero(bad)[:20].tolist()}"
            raise InputError(msg)
        n = len(x)
        if n == 0:
            empty = np.zeros(0)
            return Snapped(
                g.mode, empty, empty, np.zeros(0, np.int64), empty, empty, np.zeros(0, bool)
            )
        mx, my = self._to_metric.transform(x, y)
        points = shapely.points(mx, my)
        which, hit = g.tree.query_nearest(points, all_matches=False)
        nearest = np.empty(n, dtype=np.int64)
        nearest[which] = hit
        edge = g.snap_edges[nearest]
        geoms = g.geoms[edge]
        frac = np.nan_to_num(shapely.line_locate_point(geoms, points, normalized=True))
        access = shapely.distance(points, geoms)
        far = access > self.max_snap_m
        more = self._more_joins(g, points, edge, access, far)
        return Snapped(
            mode=g.mode,
            lon=x.copy(),
            lat=y.copy(),
            edge=edge,
            frac=np.clip(frac, 0.0, 1.0),
            access_m=access,
            far=far,
            **more,
        )

    def _more_joins(
        self,
        g: ModeGraph,
        points: np.ndarray,
        edge: np.ndarray,
        access: np.ndarray,
        far: np.ndarray,
    ) -> dict[str, np.ndarray]:
        """The roads other than the nearest within the tolerance of each (usable) point."""
        near = np.flatnonzero(~far)
        if self.snap_tolerance_m <= 0 or len(near) == 0:
            return {}
        # The tree holds one edge per road: a twin comes with its edge, as for the nearest.
        which, hit = g.tree.query(
            points[near], predicate="dwithin", distance=access[near] + self.snap_tolerance_m
        )
        point = near[which]
        other = g.snap_edges[hit]
        keep = other != edge[point]
        point, other = point[keep], other[keep]
        if len(point) == 0:
            return {}
        dist = shapely.distance(points[point], g.geoms[other])
        keep = dist <= access[point] + self.snap_tolerance_m
        point, other, dist = point[keep], other[keep], dist[keep]
        order = np.lexsort((other, point))
        point, other, dist = point[order], other[order], dist[order]
        frac = shapely.line_locate_point(g.geoms[other], points[point], normalized=True)
        return {
            "more_point": point.astype(np.int64),
            "more_edge": other.astype(np.int64),
            "more_frac": np.clip(np.nan_to_num(frac), 0.0, 1.0),
            "more_access_m": dist,
        }

    def field_to(self, target: Snapped, limit_s: float = math.inf) -> TravelField:
        """Travel times to ``target`` from anywhere: one bounded reverse Dijkstra.

        On a graph of 50,000 nodes or more a bounded search runs on a region around the target
        when the region provably holds every way within the limit (else on the whole graph):
        same times, at a fraction of the cost (see ``ModeGraph.search``).

        Parameters
        ----------
        target
            One point snapped by :meth:`snap`.
        limit_s
            Search bound (seconds); times above it come back as inf.
        """
        check_single(target, "target")
        if not limit_s >= 0:
            msg = f"limit_s must be >= 0, got {limit_s}"
            raise InputError(msg)
        g = self._graph(target.mode)
        _check_edges(g, target.joins()[1])
        joins = target_joins(g, *target.joins()[1:])
        # Predecessors kept (they cost next to nothing): the route of the unit chosen from this
        # field's times is read from the same search (:meth:`_NetworkField.route_from`).
        found = g.search(joins.cols, joins.seeds, float(limit_s), predecessors=True)
        return _NetworkField(g.mode, float(limit_s), g, found, joins, target, self._to_wgs84)

    def route(self, source: Snapped, target: Snapped, *, limit_s: float | None = None) -> Route:
        """The fastest route from ``source`` to ``target`` (one point each), with its geometry.

        ``time_s`` equals ``field_to(target).times_from(source)``. The geometry (WGS84) runs from
        the source point over its access leg, the roads and the target's access leg to the target
        point; ``length_m`` is the access legs plus the road lengths (links' ``length_m``).
        ``limit_s``, when known, is a time the route does not exceed (a field's time, as dispatch
        has it): the search goes that far at once instead of growing from the lower bound (a
        wrong hint costs only speed).

        Raises
        ------
        NotFoundError
            The target cannot be reached from the source.
        """
        check_single(source, "source")
        check_single(target, "target")
        check_same_mode(source, target)
        g = self._graph(target.mode)
        _check_edges(g, source.joins()[1])
        _check_edges(g, target.joins()[1])
        joins = target_joins(g, *target.joins()[1:])
        # Grow the search bound from the lower bound instead of searching the whole graph: the
        # distances within a bound do not depend on it, so the time equals the field's exactly.
        if limit_s is not None and limit_s >= 0:
            # A route found within its own time: a hair more covers float rounding.
            limit = float(limit_s) * (1.0 + 1e-9) + 1e-6
        else:
            lb = float(self.lower_bound_s(source, target)[0])
            limit = max(2.0 * lb, _ROUTE_FIRST_LIMIT_S)
        while True:
            if limit > g.total_s:
                limit = math.inf
            found = g.search(joins.cols, joins.seeds, limit, predecessors=True)
            route = _route_over(g, found, joins, limit, source, target, self._to_wgs84)
            if route is not None:
                return route
            if math.isinf(limit):
                raise _no_route(g.mode, source, target)
            limit *= 2.0

    def lower_bound_s(self, source: Snapped, target: Snapped) -> np.ndarray:
        """Admissible lower bound of the time from each source to the single target.

        Both access legs are at least the nearest road's distance; the roads between the snapped
        positions cover at least the straight distance that is left after the longest joined
        access legs, at no more than the mode's top speed (the largest metric-length / time
        ratio over the kept edges, so the bound holds whatever the links' stated lengths).
        ``target`` holds one point, or one per source.
        """
        check_targets(source, target)
        g = self._graph(target.mode)
        if len(source) == 0:
            return np.zeros(0)
        sx, sy = self._to_metric.transform(source.lon, source.lat)
        tx, ty = self._to_metric.transform(target.lon, target.lat)
        straight = np.hypot(np.asarray(sx) - np.asarray(tx), np.asarray(sy) - np.asarray(ty))
        access = source.access_m + target.access_m
        widest = source.widest_access_m() + target.widest_access_m()
        bound = access / g.access_ms + np.maximum(straight - widest, 0.0) / g.top_ms
        # Shave off rounding so the bound never exceeds an exact time computed another way.
        return bound * (1.0 - 1e-9)

    def joined_links(self, point: Snapped) -> list[dict[str, Any]]:
        """Every directed link the single ``point`` is joined to, nearest first.

        Each is ``{"from": node id, "to": node id, "link_id": ..., "access_m": metres,
        "frac": position from "from"}``; a road with an exact twin lists both directions.
        """
        check_single(point, "point")
        g = self._graph(point.mode)
        _, edges, fracs, access = point.joins()
        # Each join, then its twin (the same road the other way) where it has one.
        twin = g.rev[edges]
        edge = np.column_stack([edges, twin]).reshape(-1)
        frac = np.column_stack([fracs, 1.0 - fracs]).reshape(-1)
        metres = np.repeat(access, 2)
        keep = edge >= 0
        edge, frac, metres = edge[keep], frac[keep], metres[keep]
        columns = zip(
            g.node_ids[g.src[edge]].tolist(),
            g.node_ids[g.dst[edge]].tolist(),
            self._link_ids[g.link_pos[edge]].tolist(),
            metres.tolist(),
            frac.tolist(),
            strict=True,
        )
        out: list[dict[str, Any]] = [
            {"from": u, "to": v, "link_id": link, "access_m": m, "frac": f}
            for u, v, link, m, f in columns
        ]
        return out

    def typical_ratio(self, mode: TravelMode | str) -> float:
        """The usual ratio of a travel time to :meth:`lower_bound_s`: a guess, never a bound.

        Measured once per mode (see :meth:`ModeGraph.typical_ratio`): the median ratio over
        node pairs a few minutes apart. On the megacity benchmark it is 2.9 / 1.5 / 1.3 for
        drive / bike / walk (the top speeds are 70 / 15 / 5 km/h, typical ways run at 20-30 /
        12-15 / 5 km/h and are ~1.3 times the straight line).
        """
        return self._graph(mode).typical_ratio()

    def describe(self) -> dict[str, Any]:
        """JSON-able summary: kind, metric CRS, per mode kept/dropped/closed counts, speeds."""
        modes: dict[str, Any] = {}
        for m in MODES:
            g = self._graphs.get(m)
            modes[m.value] = {
                "nodes": 0 if g is None else g.n,
                "edges": 0 if g is None else len(g.src),
                "dropped_nodes": self.dropped[m.value]["nodes"],
                "dropped_links": self.dropped[m.value]["links"],
                "closed_links": self._closed[m.value],
                "access_speed_kmh": self.access_speed_kmh[m.value],
            }
        return {
            "kind": self.kind,
            "metric_crs": self.metric_crs,
            "snap_tolerance_m": self.snap_tolerance_m,
            "nodes": len(self.gdf_nodes),
            "links": len(self.gdf_links),
            "modes": modes,
            "speeds_kmh": self.speeds_kmh,
        }


def _pick_metric_crs(gdf_nodes: gpd.GeoDataFrame) -> str:
    """The configured metric CRS when the nodes lie in its area of use, else their UTM zone."""
    configured = get_settings().metric_crs
    if len(gdf_nodes) == 0:
        return configured
    west, south, east, north = gdf_nodes.total_bounds
    area = CRS(configured).area_of_use
    if area is None or (
        area.west <= west and east <= area.east and area.south <= south and north <= area.north
    ):
        return configured
    return str(gdf_nodes.estimate_utm_crs().to_string())


def build_network(
    gdf_nodes: gpd.GeoDataFrame,
    gdf_links: gpd.GeoDataFrame,
    *,
    speeds_kmh: Mapping[str, Mapping[str, float]] | None = None,
    access_speed_kmh: Mapping[str, float] | None = None,
) -> RoadNetwork:
    """Build the per-mode travel graphs of a road network.

    Parameters
    ----------
    gdf_nodes
        ``node_id`` and Point geometry.
    gdf_links
        Directed links: ``u``, ``v`` (node ids), ``length_m``, LineString geometry from ``u`` to
        ``v``, and either ``speed_<mode>_kmh`` columns or ``road_class``. A two-way road is two
        links (u→v and v→u over the same line). Speed 0 closes a link to that mode.
    speeds_kmh
        Road class → mode → km/h; when given it overrides the speed columns (default: the
        columns, else :data:`SPEEDS_KMH`).
    access_speed_kmh
        Mode → km/h on the access legs between a point and its road (default
        ``settings.access_speed_kmh``).

    Returns
    -------
    RoadNetwork
        Per mode, the largest strongly connected part; edge cost = length / speed (seconds).
        Walking also gets the reverse of every one-way link.

    Raises
    ------
    InputError
        Missing columns, unknown nodes, bad lengths or geometries, unknown road classes (all
        listed at once).
    """
    problems = frame_problems(gdf_nodes, gdf_links, speeds_kmh)
    if problems:
        msg = "cannot build a road network: " + "; ".join(problems)
        raise InputError(msg)
    settings = get_settings()
    access = {**settings.access_speed_kmh, **dict(access_speed_kmh or {})}
    nodes_wgs = gdf_nodes.to_crs("EPSG:4326")
    links_wgs = gdf_links.to_crs("EPSG:4326")
    speeds = link_speeds(links_wgs, speeds_kmh)
    bad_speed = [m.value for m in MODES if not (speeds[m] >= 0).all()]
    if bad_speed:
        msg = f"cannot build a road network: missing or negative speeds for {bad_speed}"
        raise InputError(msg)
    metric_crs = _pick_metric_crs(nodes_wgs)
    link_geoms = links_wgs.geometry.to_crs(metric_crs).to_numpy()
    node_points = nodes_wgs.geometry.to_crs(metric_crs).to_numpy()
    # NaN for a node without a point: it then lies in no region (regions only cost speed).
    node_xy = np.column_stack([shapely.get_x(node_points), shapely.get_y(node_points)])
    # Node ids may be numbers or text; the graphs number the nodes by position.
    node_ids, u_ids, v_ids = same_id_type(nodes_wgs["node_id"], links_wgs["u"], links_wgs["v"])
    index = pd.Index(node_ids)
    u_pos = index.get_indexer(u_ids)
    v_pos = index.get_indexer(v_ids)
    length_m = links_wgs["length_m"].to_numpy(dtype=float)
    twin = pair_twins(u_pos, v_pos, links_wgs.geometry.to_numpy())
    graphs: dict[TravelMode, ModeGraph] = {}
    dropped: dict[str, dict[str, int]] = {}
    closed: dict[str, int] = {}
    out_links = gdf_links.copy()
    for m in MODES:
        graph, kept, lost = build_mode_graph(
            m,
            speeds[m],
            u_pos,
            v_pos,
            length_m,
            twin,
            link_geoms,
            node_ids,
            node_xy,
            access[m.value],
        )
        if graph is not None:
            graphs[m] = graph
        dropped[m.value] = lost
        closed[m.value] = int((speeds[m] <= 0).sum())
        out_links[f"kept_{m.value}"] = kept
    return RoadNetwork(
        gdf_nodes=gdf_nodes,
        gdf_links=out_links,
        graphs=graphs,
        dropped=dropped,
        closed=closed,
        metric_crs=metric_crs,
        speeds_kmh=speeds_by_class(links_wgs, speeds),
        access_speed_kmh={m.value: float(access[m.value]) for m in MODES},
        max_snap_m=float(settings.max_snap_m),
        snap_tolerance_m=float(settings.snap_tolerance_m),
    )


def read_network(path: Path | str) -> RoadNetwork:
    """Read a road network file (:func:`gridgov.roads.read_road_frames`) and build its graphs.

    Raises
    ------
    DataFileError
        The path is missing, of an unknown kind, or its content cannot make a network.
    """
    gdf_nodes, gdf_links = read_road_frames(path)
    try:
        return build_network(gdf_nodes, gdf_links)
    except DataFileError:
        raise
    except InputError as exc:
        msg = f"{path}: {exc}"
        raise DataFileError(msg) from exc
