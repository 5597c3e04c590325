"""Road network from link tables: reading, road-class inference, speeds, margin selection.

The Chengdu link table (Guo et al. 2019) is a directed graph of straight links between
intersections, with lengths but no names or classes. This module turns it into two GeoDataFrames
(nodes and links, EPSG:4326) with a road class, a one-way flag and a speed per travel mode.
:func:`read_osm` gives the same frames from an OpenStreetMap extract of any city.

Routing
-------
:func:`build_network` turns such frames into a :class:`RoadNetwork`: per travel mode a directed
graph in seconds over its largest strongly connected part, points snapped onto its roads with
access legs, and exact travel times from one bounded reverse Dijkstra per target
(:meth:`RoadNetwork.field_to`). :class:`StraightLine` is the fallback without roads. Both follow
the :class:`TravelModel` protocol that dispatch uses.

Road-class rule
---------------
Chengdu's main roads are organised as concentric rings around Tianfu Square. A ring is found as the
cheapest closed walk that winds once around the centre, using only links whose both ends lie inside
the ring's radius band, where a link costs its length times ``1 + 3 |cos a|`` (``a`` is the angle
between the link and the radial direction, so tangential links are cheap and radial links dear).
The walk is accepted as that ring only if its length is within 10 % of the ring's published length;
its links (both directions) then get the ring's class with ``class_source = "inferred"``. On the
Chengdu table the four walks measure 19.3, 28.0, 50.5 and 84.0 km against published 19.4, 28.3, 51
and 85 km. Every other link is ``arterial`` with ``class_source = "default"``: the data holds only
main roads, so nothing else can be told apart honestly. A link is one-way when the table has no link
in the opposite direction.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import geopandas as gpd
import numpy as np
import osmium
import pandas as pd
import pyogrio
import scipy.sparse as sp
import shapely
from numpy.typing import ArrayLike
from pyproj import CRS, Geod, Transformer
from scipy.sparse.csgraph import connected_components, dijkstra
from shapely.geometry import LineString
from shapely.ops import substring

from gridgov.errors import DataFileError, InputError, NotFoundError
from gridgov.model import TravelMode
from gridgov.settings import get_settings

#: Tianfu Square, the centre of Chengdu's ring roads (WGS84 lon, lat).
CHENGDU_CENTRE = (104.0657, 30.6595)


@dataclass(frozen=True)
class RingSpec:
    """A ring road to look for: radius band (m), published length (km) and what to label it."""

    name: str
    road_class: str
    r_min_m: float
    r_max_m: float
    published_km: float


#: Chengdu's rings, innermost first. Bands were read off the radius histogram of tangential links;
#: published lengths are the commonly quoted figures for each ring.
CHENGDU_RINGS: tuple[RingSpec, ...] = (
    RingSpec("一环路", "arterial", 2_500, 4_000, 19.4),
    RingSpec("二环路", "urban_expressway", 3_000, 6_000, 28.3),
    RingSpec("三环路", "urban_expressway", 6_000, 10_000, 51.0),
    RingSpec("绕城高速", "expressway", 9_500, 20_000, 85.0),
)

#: Speeds (km/h) per road class and travel mode. Drive speeds are typical congested-hour speeds of
#: Chengdu's roads (the source dataset's median link speed is in the 20s-30s km/h); 0 means the mode
#: may not use the road (no bikes or pedestrians on the ring expressway); the routing layer must
#: drop such links for that mode. The 2nd and 3rd rings have ground-level / side roads, so bikes and
#: pedestrians may follow them.
SPEEDS_KMH: dict[str, dict[str, float]] = {
    "expressway": {"drive": 70.0, "bike": 0.0, "walk": 0.0},
    "urban_expressway": {"drive": 45.0, "bike": 15.0, "walk": 5.0},
    "arterial": {"drive": 30.0, "bike": 15.0, "walk": 5.0},
}

NODE_COLUMNS = ("Node", "Longitude", "Latitude")
LINK_COLUMNS = ("Node_Start", "Node_End", "Length")
_WINDING_WEIGHT = 3.0
_LENGTH_TOLERANCE = 0.10


def _read_csv(path: Path, required: Sequence[str]) -> pd.DataFrame:
    try:
        df = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        msg = f"cannot read {path}: {exc}"
        raise DataFileError(msg) from exc
    missing = [c for c in required if c not in df.columns]
    if missing:
        msg = f"{path}: missing column(s) {', '.join(missing)}; found {', '.join(df.columns)}"
        raise DataFileError(msg)
    return df


def read_link_table(
    nodes_csv: Path | str, links_csv: Path | str
) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    """Read a Chengdu-format link table into node and link GeoDataFrames.

    Parameters
    ----------
    nodes_csv
        CSV with ``Node,Longitude,Latitude`` (WGS84) and optionally ``in_jinniu``.
    links_csv
        CSV with ``Node_Start,Node_End,Length`` (metres), one row per directed link.

    Returns
    -------
    tuple
        ``(gdf_nodes, gdf_links)`` in EPSG:4326. Nodes: ``node_id``, ``in_district`` (from
        ``in_jinniu`` when present, else False), Point geometry. Links: ``link_id``, ``u``, ``v``,
        ``length_m``, ``road_class``, ``road_name``, ``class_source``, ``oneway``,
        ``speed_drive_kmh``, ``speed_bike_kmh``, ``speed_walk_kmh``, straight LineString geometry.

    Raises
    ------
    DataFileError
        A file is unreadable, lacks columns, has bad values, or links name unknown nodes (all of
        them are listed).
    """
    nodes = _read_csv(Path(nodes_csv), NODE_COLUMNS)
    links = _read_csv(Path(links_csv), LINK_COLUMNS)
    problems: list[str] = []
    for df, cols, name in ((nodes, NODE_COLUMNS, "nodes"), (links, LINK_COLUMNS, "links")):
        for col in cols:
            values = pd.to_numeric(df[col], errors="coerce")
            bad = df.index[values.isna()].tolist()
            if bad:
                problems.append(f"{name}: non-numeric or empty {col} in row(s) {bad[:20]}")
    if problems:
        msg = "; ".join(problems)
        raise DataFileError(msg)
    node_ids = nodes["Node"].astype(np.int64)
    dup = node_ids[node_ids.duplicated()].unique().tolist()
    if dup:
        msg = f"nodes: duplicate Node id(s) {sorted(dup)}"
        raise DataFileError(msg)
    known = set(node_ids.tolist())
    u = links["Node_Start"].astype(np.int64)
    v = links["Node_End"].astype(np.int64)
    unknown = sorted((set(u.tolist()) | set(v.tolist())) - known)
    if unknown:
        msg = f"links name {len(unknown)} unknown node id(s): {unknown}"
        raise DataFileError(msg)
    lengths = links["Length"].astype(float)
    if (lengths <= 0).any():
        msg = f"links: non-positive Length in row(s) {links.index[lengths <= 0].tolist()}"
        raise DataFileError(msg)

    in_district = (
        nodes["in_jinniu"].fillna(0).astype(int).eq(1)
        if "in_jinniu" in nodes.columns
        else pd.Series(False, index=nodes.index)
    )
    gdf_nodes = gpd.GeoDataFrame(
        {"node_id": node_ids.to_numpy(), "in_district": in_district.to_numpy()},
        geometry=gpd.points_from_xy(nodes["Longitude"], nodes["Latitude"]),
        crs="EPSG:4326",
    )
    xy = pd.DataFrame(
        {"x": nodes["Longitude"].to_numpy(float), "y": nodes["Latitude"].to_numpy(float)},
        index=node_ids.to_numpy(),
    )
    start = xy.loc[u.to_numpy()].to_numpy()
    end = xy.loc[v.to_numpy()].to_numpy()
    coords = np.stack([start, end], axis=1)
    gdf_links = gpd.GeoDataFrame(
        {
            "link_id": np.arange(len(links), dtype=np.int64),
            "u": u.to_numpy(),
            "v": v.to_numpy(),
            "length_m": lengths.to_numpy(),
        },
        geometry=shapely.linestrings(coords),
        crs="EPSG:4326",
    )
    return gdf_nodes, classify_links(gdf_nodes, gdf_links)


def _metric_xy(gdf: gpd.GeoDataFrame) -> tuple[np.ndarray, np.ndarray]:
    metric = gdf.to_crs(get_settings().metric_crs)
    return np.asarray(metric.geometry.x), np.asarray(metric.geometry.y)


def find_ring(
    gdf_nodes: gpd.GeoDataFrame,
    gdf_links: gpd.GeoDataFrame,
    centre: tuple[float, float],
    r_min_m: float,
    r_max_m: float,
) -> tuple[list[int], float]:
    """Find the cheapest closed walk winding once around ``centre`` inside a radius band.

    Parameters
    ----------
    gdf_nodes, gdf_links
        As returned by :func:`read_link_table`.
    centre
        WGS84 ``(lon, lat)`` of the rings' centre.
    r_min_m, r_max_m
        Radius band (metres); only links with both ends inside it are used.

    Returns
    -------
    tuple
        ``(node_ids, length_m)``: the walk as node ids (first == last) and its length from the
        table's ``length_m``; ``([], inf)`` when the band holds no closed walk.
    """
    x, y = _metric_xy(gdf_nodes)
    transformer = Transformer.from_crs("EPSG:4326", get_settings().metric_crs, always_xy=True)
    cx, cy = transformer.transform(*centre)
    pos = pd.Series(np.arange(len(gdf_nodes)), index=gdf_nodes["node_id"].to_numpy())
    u = pos.loc[gdf_links["u"].to_numpy()].to_numpy()
    v = pos.loc[gdf_links["v"].to_numpy()].to_numpy()
    radius = np.hypot(x - cx, y - cy)
    theta = np.arctan2(y - cy, x - cx)
    dx, dy = x[v] - x[u], y[v] - y[u]
    mx, my = (x[u] + x[v]) / 2 - cx, (y[u] + y[v]) / 2 - cy
    norm = np.hypot(dx, dy) * np.hypot(mx, my)
    cos = np.abs(dx * mx + dy * my) / np.where(norm > 0, norm, 1.0)
    in_band = (radius >= r_min_m) & (radius <= r_max_m)
    keep = in_band[u] & in_band[v]
    # A link crosses the cut ray (angle pi) when walking its short angular way leaves (-pi, pi].
    dtheta = np.angle(np.exp(1j * (theta[v] - theta[u])))
    crosses = np.abs(theta[u] + dtheta) > np.pi
    cost = gdf_links["length_m"].to_numpy(float) * (1.0 + _WINDING_WEIGHT * cos)
    n = len(x)
    ku, kv, kc, kw = u[keep], v[keep], crosses[keep], cost[keep]
    if len(ku) == 0 or not kc.any():
        return [], float("inf")
    # Two sheets of the plane cut along the ray: a walk from sheet 0 back to the same node on sheet
    # 1 has crossed the ray an odd number of times, i.e. it encircles the centre.
    rows, cols = [], []
    for sheet in (0, 1):
        other = np.where(kc, 1 - sheet, sheet)
        rows += [ku + sheet * n, kv + other * n]
        cols += [kv + other * n, ku + sheet * n]
    graph = sp.csr_matrix(
        (np.concatenate([kw, kw, kw, kw]), (np.concatenate(rows), np.concatenate(cols))),
        shape=(2 * n, 2 * n),
    )
    sources = np.unique(np.concatenate([ku[kc], kv[kc]]))
    dist, pred = dijkstra(graph, directed=True, indices=sources, return_predecessors=True)
    closing = dist[np.arange(len(sources)), sources + n]
    best = int(np.argmin(closing))
    if not np.isfinite(closing[best]):
        return [], float("inf")
    src = int(sources[best])
    walk = [src + n]
    while walk[-1] != src:
        walk.append(int(pred[best, walk[-1]]))
    order = [w % n for w in reversed(walk)]
    # The walk may use a link against its direction (rings are two-way); take the reverse length.
    lengths: dict[tuple[int, int], float] = {}
    table = gdf_links["length_m"].to_numpy(float)
    for a, b, length in zip(u.tolist(), v.tolist(), table.tolist(), strict=True):
        lengths[(a, b)] = length
        lengths.setdefault((b, a), length)
    total = float(sum(lengths[(a, b)] for a, b in itertools.pairwise(order)))
    ids = gdf_nodes["node_id"].to_numpy()
    return [int(ids[i]) for i in order], total


def classify_links(
    gdf_nodes: gpd.GeoDataFrame,
    gdf_links: gpd.GeoDataFrame,
    rings: Sequence[RingSpec] = CHENGDU_RINGS,
    centre: tuple[float, float] = CHENGDU_CENTRE,
) -> gpd.GeoDataFrame:
    """Return a copy of ``gdf_links`` with road class, one-way flag and speeds.

    Parameters
    ----------
    gdf_nodes, gdf_links
        Nodes (``node_id``) and links (``u``, ``v``, ``length_m``).
    rings
        Ring roads to look for (see the module docstring); later rings win where bands overlap.
    centre
        WGS84 centre of the rings.

    Returns
    -------
    geopandas.GeoDataFrame
        The links with ``road_class``, ``road_name``, ``class_source``, ``oneway`` and the three
        ``speed_*_kmh`` columns.
    """
    out = gdf_links.copy()
    out["road_class"] = "arterial"
    out["road_name"] = ""
    out["class_source"] = "default"
    pairs = pd.MultiIndex.from_arrays([out["u"], out["v"]])
    for ring in rings:
        walk, length = find_ring(gdf_nodes, gdf_links, centre, ring.r_min_m, ring.r_max_m)
        if not walk or abs(length / 1000.0 - ring.published_km) > (
            _LENGTH_TOLERANCE * ring.published_km
        ):
            continue
        steps = list(itertools.pairwise(walk))
        both = steps + [(b, a) for a, b in steps]
        hit = pairs.isin(pd.MultiIndex.from_tuples(both))
        out.loc[hit, "road_class"] = ring.road_class
        out.loc[hit, "road_name"] = ring.name
        out.loc[hit, "class_source"] = "inferred"
    reverse = pd.MultiIndex.from_arrays([out["v"], out["u"]])
    out["oneway"] = ~reverse.isin(pairs)
    for mode in ("drive", "bike", "walk"):
        table = {cls: speeds[mode] for cls, speeds in SPEEDS_KMH.items()}
        out[f"speed_{mode}_kmh"] = out["road_class"].map(table).astype(float)
    columns = [c for c in out.columns if c != "geometry"] + ["geometry"]
    return gpd.GeoDataFrame(out[columns], geometry="geometry", crs=gdf_links.crs)


def select_with_margin(
    gdf_nodes: gpd.GeoDataFrame,
    gdf_links: gpd.GeoDataFrame,
    inside_mask: pd.Series | np.ndarray,
    margin_m: float,
) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    """Keep the inside nodes, every node within ``margin_m`` of one, and the links among them.

    Parameters
    ----------
    gdf_nodes, gdf_links
        Nodes (``node_id``) and links (``u``, ``v``).
    inside_mask
        Boolean per node (aligned with ``gdf_nodes`` by position): the nodes of the area itself.
    margin_m
        Distance in metres (metric CRS) around the inside nodes whose nodes are kept too, so that
        units near the border can route over roads just outside it.

    Returns
    -------
    tuple
        New ``(gdf_nodes, gdf_links)`` with the original indexes of the kept rows.
    """
    inside = np.asarray(inside_mask, dtype=bool)
    if len(inside) != len(gdf_nodes):
        msg = f"inside_mask has {len(inside)} values for {len(gdf_nodes)} nodes"
        raise ValueError(msg)
    if margin_m < 0:
        msg = f"margin_m must be >= 0, got {margin_m}"
        raise ValueError(msg)
    metric = gdf_nodes.geometry.to_crs(get_settings().metric_crs).to_numpy()
    kept = inside.copy()
    if inside.any() and margin_m > 0:
        tree = shapely.STRtree(metric[inside])
        near, _ = tree.query(metric, predicate="dwithin", distance=margin_m)
        kept[np.unique(near)] = True
    ids = set(gdf_nodes["node_id"].to_numpy()[kept].tolist())
    link_kept = gdf_links["u"].isin(ids) & gdf_links["v"].isin(ids)
    return gdf_nodes[kept].copy(), gdf_links[link_kept.to_numpy()].copy()


# ---- routing layer ------------------------------------------------------------------------------
# Everything below turns node/link frames into per-mode travel graphs and answers travel-time
# queries. Cost unit: seconds.

_MODES: tuple[TravelMode, ...] = (TravelMode.DRIVE, TravelMode.BIKE, TravelMode.WALK)
#: Road class whose speeds the straight-line fallback uses (DESIGN: distance × detour / speed).
STRAIGHT_LINE_CLASS = "arterial"
_GEOD = Geod(ellps="WGS84")


def _as_mode(mode: TravelMode | str) -> TravelMode:
    try:
        return TravelMode(mode)
    except ValueError as exc:
        msg = f"unknown travel mode {mode!r}; expected one of {', '.join(m.value for m in _MODES)}"
        raise InputError(msg) from exc


@dataclass(frozen=True)
class Snapped:
    """Points snapped to one travel mode's road graph (vectorised; arrays of equal length).

    A point snaps to the nearest position on a usable edge of the mode's largest strongly
    connected part (never onto a dropped component). ``edge`` indexes the model's edge arrays,
    ``frac`` is the position along that edge's geometry from its ``u`` end (0..1), and
    ``access_m`` the straight distance (metres) from the point to that position, travelled at the
    mode's access speed. ``far`` marks points more than ``settings.max_snap_m`` from any usable
    road. The straight-line model leaves ``edge`` at -1 and ``frac``/``access_m`` at 0.
    """

    mode: TravelMode
    lon: np.ndarray
    lat: np.ndarray
    edge: np.ndarray
    frac: np.ndarray
    access_m: np.ndarray
    far: np.ndarray

    def __len__(self) -> int:
        return len(self.lon)

    def take(self, index: np.ndarray | list[int] | int) -> Snapped:
        """Return the points at ``index`` (an int gives a length-1 ``Snapped``)."""
        idx = np.atleast_1d(np.asarray(index))
        return Snapped(
            mode=self.mode,
            lon=self.lon[idx],
            lat=self.lat[idx],
            edge=self.edge[idx],
            frac=self.frac[idx],
            access_m=self.access_m[idx],
            far=self.far[idx],
        )


@dataclass(frozen=True)
class Route:
    """A unit's way to an incident: time, length and the line drawn on the map (WGS84)."""

    mode: TravelMode
    time_s: float
    length_m: float
    #: From the source point, over its access leg and the roads, to the target point.
    geometry: LineString
    #: Road nodes passed, in order (empty for the straight-line model).
    node_ids: tuple[int, ...]


class TravelField(Protocol):
    """Travel times *to* one target from anywhere, known exactly up to ``limit_s``."""

    mode: TravelMode
    limit_s: float

    def times_from(self, sources: Snapped) -> np.ndarray:
        """Seconds from each source (same mode) to the target, access legs included.

        Exact for every value <= ``limit_s``; a source whose time exceeds ``limit_s``, or which
        cannot reach the target, gets inf. Never a finite value above ``limit_s``.
        """
        ...


class TravelModel(Protocol):
    """What dispatch needs from a road network (or the straight-line fallback)."""

    kind: str
    modes: tuple[TravelMode, ...]

    def snap(self, lon: ArrayLike, lat: ArrayLike, mode: TravelMode | str) -> Snapped:
        """Snap WGS84 points to the mode's graph."""
        ...

    def field_to(self, target: Snapped, limit_s: float = math.inf) -> TravelField:
        """Travel times to the single ``target`` from anywhere, exact up to ``limit_s``."""
        ...

    def route(self, source: Snapped, target: Snapped, *, limit_s: float | None = None) -> Route:
        """The fastest route from the single ``source`` to the single ``target``.

        ``limit_s``, when known, is a time the route does not exceed (say from a field): the
        search then goes that far at once.
        """
        ...

    def lower_bound_s(self, source: Snapped, target: Snapped) -> np.ndarray:
        """An admissible lower bound of the time from each source to the target.

        ``target`` holds one point, or one per source (then each source goes to its own).
        """
        ...

    def typical_ratio(self, mode: TravelMode | str) -> float:
        """The usual ratio (>= 1) of a travel time to its lower bound: a guess, never a bound.

        Searches start from it; results never depend on it.
        """
        ...

    def describe(self) -> dict[str, Any]:
        """JSON-able summary for explanations."""
        ...


def _check_single(points: Snapped, what: str) -> None:
    if len(points) != 1:
        msg = f"{what} must hold exactly one point, got {len(points)}"
        raise InputError(msg)


def _check_targets(source: Snapped, target: Snapped) -> None:
    """One target for every source, or one each; same mode."""
    if len(target) != 1 and len(target) != len(source):
        msg = f"target must hold one point or one per source ({len(source)}), got {len(target)}"
        raise InputError(msg)
    _check_same_mode(source, target)


def _check_same_mode(a: Snapped, b: Snapped) -> None:
    if a.mode != b.mode:
        msg = f"points snapped for {a.mode.value} and {b.mode.value} cannot be combined"
        raise InputError(msg)


def _geodesic_m(lon1: ArrayLike, lat1: ArrayLike, lon2: ArrayLike, lat2: ArrayLike) -> np.ndarray:
    a, b, c, d = np.broadcast_arrays(
        *(np.asarray(x, dtype=float) for x in (lon1, lat1, lon2, lat2))
    )
    if a.size == 0:
        return np.zeros(a.shape)
    _, _, dist = _GEOD.inv(a, b, c, d)
    return np.asarray(dist, dtype=float)


def _check_field_mode(sources: Snapped, mode: TravelMode) -> None:
    """Times only make sense for points snapped to the field's own mode graph."""
    if sources.mode != mode:
        msg = f"sources snapped for {sources.mode.value}, field is for {mode.value}"
        raise InputError(msg)


@dataclass
class _StraightField:
    mode: TravelMode
    limit_s: float
    lon: float
    lat: float
    speed_ms: float
    detour: float

    def times_from(self, sources: Snapped) -> np.ndarray:
        _check_field_mode(sources, self.mode)
        metres = _geodesic_m(sources.lon, sources.lat, self.lon, self.lat)
        times = metres * self.detour / self.speed_ms
        return np.where(times <= self.limit_s, times, np.inf)


class StraightLine:
    """DESIGN fallback: straight-line metres × ``detour_factor`` / mode speed.

    The speed of a mode is its speed on an ``arterial`` road in :data:`SPEEDS_KMH` (the common
    class of the reference roads). Distances are geodesic (WGS84 ellipsoid), so the model works
    anywhere. Every point is usable: nothing is snapped, no point is ``far``.

    Parameters
    ----------
    detour_factor
        Road distance / straight distance; ``settings.detour_factor`` when None.
    speeds_kmh
        Speed per mode; the arterial speeds of :data:`SPEEDS_KMH` when None.
    """

    kind = "straight_line"

    def __init__(
        self,
        detour_factor: float | None = None,
        speeds_kmh: Mapping[str, float] | None = None,
    ) -> None:
        self.detour_factor = float(
            get_settings().detour_factor if detour_factor is None else detour_factor
        )
        table = (
            dict(speeds_kmh) if speeds_kmh is not None else dict(SPEEDS_KMH[STRAIGHT_LINE_CLASS])
        )
        self.speeds_kmh: dict[str, float] = {
            m.value: float(table[m.value]) for m in _MODES if table.get(m.value, 0) > 0
        }
        self.modes: tuple[TravelMode, ...] = tuple(TravelMode(m) for m in self.speeds_kmh)

    def _speed_ms(self, mode: TravelMode) -> float:
        if mode.value not in self.speeds_kmh:
            msg = f"the straight-line model has no speed for {mode.value}"
            raise InputError(msg)
        return self.speeds_kmh[mode.value] / 3.6

    def snap(self, lon: ArrayLike, lat: ArrayLike, mode: TravelMode | str) -> Snapped:
        """Wrap WGS84 points (nothing to snap to); ``edge`` -1, ``access_m`` 0, never ``far``."""
        m = _as_mode(mode)
        self._speed_ms(m)
        x, y = np.broadcast_arrays(
            np.atleast_1d(np.asarray(lon, dtype=float)), np.atleast_1d(np.asarray(lat, dtype=float))
        )
        bad = ~(np.isfinite(x) & np.isfinite(y))
        if bad.any():
            msg = f"non-finite coordinates at position(s) {np.flatnonzero(bad)[:20].tolist()}"
            raise InputError(msg)
        n = len(x)
        return Snapped(
            mode=m,
            lon=x.copy(),
            lat=y.copy(),
            edge=np.full(n, -1, dtype=np.int64),
            frac=np.zeros(n),
            access_m=np.zeros(n),
            far=np.zeros(n, dtype=bool),
        )

    def field_to(self, target: Snapped, limit_s: float = math.inf) -> TravelField:
        """Straight-line times to ``target``; inf above ``limit_s``."""
        _check_single(target, "target")
        return _StraightField(
            mode=target.mode,
            limit_s=float(limit_s),
            lon=float(target.lon[0]),
            lat=float(target.lat[0]),
            speed_ms=self._speed_ms(target.mode),
            detour=self.detour_factor,
        )

    def route(self, source: Snapped, target: Snapped, *, limit_s: float | None = None) -> Route:
        """The straight segment; ``length_m`` is the estimated road length (straight × detour).

        ``limit_s`` is accepted for the protocol and not needed.
        """
        _check_single(source, "source")
        _check_single(target, "target")
        _check_same_mode(source, target)
        metres = float(_geodesic_m(source.lon, source.lat, target.lon, target.lat)[0])
        length = metres * self.detour_factor
        return Route(
            mode=source.mode,
            time_s=length / self._speed_ms(source.mode),
            length_m=length,
            geometry=LineString([(source.lon[0], source.lat[0]), (target.lon[0], target.lat[0])]),
            node_ids=(),
        )

    def lower_bound_s(self, source: Snapped, target: Snapped) -> np.ndarray:
        """The straight-line time itself (the model is exact about its own estimate).

        ``target`` holds one point, or one per source.
        """
        _check_targets(source, target)
        metres = _geodesic_m(source.lon, source.lat, target.lon, target.lat)
        return metres * self.detour_factor / self._speed_ms(source.mode)

    def typical_ratio(self, mode: TravelMode | str) -> float:
        """1: the lower bound is the time itself."""
        self._speed_ms(_as_mode(mode))
        return 1.0

    def describe(self) -> dict[str, Any]:
        """Kind, detour factor and speeds."""
        return {
            "kind": self.kind,
            "detour_factor": self.detour_factor,
            "speeds_kmh": dict(self.speeds_kmh),
        }


#: Speeds (km/h) per OpenStreetMap ``highway=*`` value and travel mode; 0 means the mode may not
#: use the road. Drive speeds are typical urban speeds (a ``maxspeed`` tag caps them); footways and
#: pedestrian streets take bikes at walking pace (the rider pushes); steps are slow on foot and
#: closed to bikes. Tags refine this per way (see :func:`read_osm`). Other highway values
#: (construction, proposed, platform, corridor, elevator, ...) are not roads and are skipped.
OSM_SPEEDS_KMH: dict[str, dict[str, float]] = {
    "motorway": {"drive": 90.0, "bike": 0.0, "walk": 0.0},
    "motorway_link": {"drive": 50.0, "bike": 0.0, "walk": 0.0},
    "trunk": {"drive": 60.0, "bike": 15.0, "walk": 5.0},
    "trunk_link": {"drive": 40.0, "bike": 15.0, "walk": 5.0},
    "primary": {"drive": 45.0, "bike": 15.0, "walk": 5.0},
    "primary_link": {"drive": 35.0, "bike": 15.0, "walk": 5.0},
    "secondary": {"drive": 40.0, "bike": 15.0, "walk": 5.0},
    "secondary_link": {"drive": 30.0, "bike": 15.0, "walk": 5.0},
    "tertiary": {"drive": 35.0, "bike": 15.0, "walk": 5.0},
    "tertiary_link": {"drive": 30.0, "bike": 15.0, "walk": 5.0},
    "unclassified": {"drive": 30.0, "bike": 15.0, "walk": 5.0},
    "road": {"drive": 30.0, "bike": 15.0, "walk": 5.0},
    "residential": {"drive": 25.0, "bike": 15.0, "walk": 5.0},
    "living_street": {"drive": 10.0, "bike": 10.0, "walk": 5.0},
    "service": {"drive": 15.0, "bike": 12.0, "walk": 5.0},
    "track": {"drive": 15.0, "bike": 12.0, "walk": 5.0},
    "busway": {"drive": 30.0, "bike": 0.0, "walk": 0.0},
    "pedestrian": {"drive": 0.0, "bike": 5.0, "walk": 5.0},
    "footway": {"drive": 0.0, "bike": 5.0, "walk": 5.0},
    "bridleway": {"drive": 0.0, "bike": 5.0, "walk": 5.0},
    "path": {"drive": 0.0, "bike": 12.0, "walk": 5.0},
    "cycleway": {"drive": 0.0, "bike": 15.0, "walk": 5.0},
    "steps": {"drive": 0.0, "bike": 0.0, "walk": 2.0},
}
#: Bike speed (km/h) on a path that an explicit ``bicycle=yes|designated`` opens to riding.
OSM_BIKE_ALLOWED_KMH = 12.0
#: Walking speed (km/h) on a road that an explicit ``foot=yes|designated`` opens to pedestrians.
OSM_FOOT_ALLOWED_KMH = 5.0
_OSM_YES = frozenset({"yes", "designated", "permissive", "official"})
_OSM_ONEWAY_FORWARD = frozenset({"yes", "1", "true"})
_OSM_ONEWAY_BACKWARD = frozenset({"-1", "reverse"})
_OSM_SUFFIXES = (".osm.pbf", ".pbf", ".osm", ".osm.bz2", ".osm.gz")
#: First search bound (s) of :meth:`RoadNetwork.route` when the lower bound is tiny.
_ROUTE_FIRST_LIMIT_S = 60.0

# ---- regional searches ----
# scipy's Dijkstra sets up every node of the graph on each call (about 2.5 ns a node: 0.6 ms on
# a 262k-node city), whatever the limit, and dispatch makes many short searches. A mode graph
# this large is therefore also cut into overlapping square regions, each with its own small
# reversed graph, and a bounded search runs on the region around its target when that region
# can be certified to hold every answer (see :meth:`_ModeGraph.search`).

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


#: :meth:`_ModeGraph.typical_ratio`: sampled targets, their search limit, and the fewest pairs
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
    exit_rows: np.ndarray
    exit_s: np.ndarray


@dataclass(frozen=True)
class _Search:
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
    cols: tuple[int, int],
    seeds: tuple[float, float],
    limit_s: float,
    predecessors: bool,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Dijkstra from the virtual last row of ``graph`` after pointing its two entries.

    The caller holds the graph's lock: the virtual row is shared state.
    """
    graph.indices[slot] = cols[0]
    graph.data[slot] = seeds[0]
    graph.indices[slot + 1] = cols[1]
    graph.data[slot + 1] = seeds[1]
    virtual = graph.shape[0] - 1
    if predecessors:
        dist, pred = dijkstra(
            graph, directed=True, indices=virtual, limit=limit_s, return_predecessors=True
        )
        return dist, pred
    return dijkstra(graph, directed=True, indices=virtual, limit=limit_s), None


@dataclass
class _ModeGraph:
    """One mode's graph over its largest strongly connected part (local node numbering).

    Edges are directed. ``rev[e]`` is the edge running the other way over the same geometry (a
    two-way road), or -1, and ``rev_time[e]`` its time (inf without one). ``geoms[e]`` is the
    edge's metric LineString oriented from ``src`` to ``dst``. ``transposed`` is the reversed
    graph in CSR with one extra, virtual node (row ``n``) whose two entries (``slot``,
    ``slot + 1``) are overwritten by every search. ``node_xy`` holds the nodes' metric
    positions; ``tilings`` the region levels of a large graph, whose regions are built on first
    use into ``regions``; ``ratio`` caches :meth:`typical_ratio`.
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

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.lock = threading.Lock()

    def search(
        self,
        edge: int,
        frac: float,
        access_s: float,
        limit_s: float,
        *,
        predecessors: bool,
        regional: bool = True,
    ) -> _Search:
        """Bounded reverse Dijkstra: seconds from every node to a point on ``edge`` at ``frac``.

        The virtual node stands for the target; it is reached from the edge's ``src`` after
        ``frac`` of the edge and from its ``dst`` over the reverse edge (when the road is
        two-way), each plus the target's access leg.

        On a large graph a bounded search first runs on a region around the target (the
        smallest level that :data:`_REGION_REACH` deems wide enough, then the next). It is
        kept only when certified exact: when no step out of the region starts within the limit
        (``dist[exit] + exit_s > limit`` for every exit row). Then every way to the target that
        leaves the region costs more than the limit (its last step into the region is such a
        step, reversed), so the region's times equal the whole graph's up to the limit, bit for
        bit (the same sums over the same paths), and every node outside is beyond it. Otherwise
        the whole graph is searched. ``regional=False`` searches the whole graph directly.
        """
        a, b, r = int(self.src[edge]), int(self.dst[edge]), int(self.rev[edge])
        seed_a = access_s + frac * float(self.time_s[edge])
        if r >= 0:
            col_b, seed_b = b, access_s + (1.0 - frac) * float(self.time_s[r])
        elif frac >= 1.0:
            # A point at the very end of a one-way edge is at its end node.
            col_b, seed_b = b, access_s
        else:
            # A one-way road is entered only from its start; the second slot repeats the first,
            # which Dijkstra relaxes harmlessly.
            col_b, seed_b = a, seed_a
        # The virtual rows are shared state: searches on one graph must not interleave.
        with self.lock:
            if regional and math.isfinite(limit_s):
                for region in self._regions_for(a, limit_s):
                    found = self._search_region(
                        region, (a, col_b), (seed_a, seed_b), limit_s, predecessors
                    )
                    if found is not None:
                        return found
            dist, pred = _seeded_dijkstra(
                self.transposed, self.slot, (a, col_b), (seed_a, seed_b), limit_s, predecessors
            )
        return _Search(dist, pred, None)

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
                    self.transposed, self.slot, (a, a), (0.0, 0.0), _RATIO_LIMIT_S, False
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
        cols: tuple[int, int],
        seeds: tuple[float, float],
        limit_s: float,
        predecessors: bool,
    ) -> _Search | None:
        """The search on ``region``, or None when it cannot be certified exact."""
        want = np.asarray(cols)
        pos = np.minimum(np.searchsorted(region.nodes, want), len(region.nodes) - 1)
        if not np.array_equal(region.nodes[pos], want):
            return None
        dist, pred = _seeded_dijkstra(
            region.transposed,
            region.slot,
            (int(pos[0]), int(pos[1])),
            seeds,
            limit_s,
            predecessors,
        )
        if np.any(dist[region.exit_rows] + region.exit_s <= limit_s):
            return None
        return _Search(dist, pred, region.nodes)

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
        indptr[m + 1] = indptr[m] + 2
        transposed = sp.csr_matrix(
            (
                np.concatenate([weight, [0.0, 0.0]]),
                np.concatenate([col, [m, m]]).astype(np.int32),
                indptr.astype(np.int32),
            ),
            shape=(m + 1, m + 1),
        )
        return _Region(
            nodes=nodes,
            transposed=transposed,
            slot=int(indptr[m]),
            exit_rows=exit_rows,
            exit_s=exit_s[exit_rows],
        )

    def hops(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """The fastest edge from each local node ``x`` to the matching ``y``."""
        keys = x.astype(np.int64) * (self.n + 1) + y
        return self.hop_edges[np.searchsorted(self.hop_keys, keys)]


@dataclass
class _Legs:
    """Candidate costs (seconds, access of the source excluded) of sources towards one target."""

    edge: np.ndarray  # source edges, moved onto the target's edge when on its reverse
    frac: np.ndarray
    costs: np.ndarray  # (4, n): direct forward, direct backward, via edge end, via edge start


def _legs_to(
    g: _ModeGraph, search: _Search, sources: Snapped, edge: int, frac: float, access_s: float
) -> _Legs:
    es = np.asarray(sources.edge, dtype=np.int64)
    s = np.asarray(sources.frac, dtype=float)
    n = len(es)
    r_t = int(g.rev[edge])
    if r_t >= 0:
        # A source on the reverse twin of the target's edge is the same road: express it on the
        # target's edge so the same-road shortcut applies.
        on_rev = es == r_t
        if on_rev.any():
            es = np.where(on_rev, edge, es)
            s = np.where(on_rev, 1.0 - s, s)
    ends = search.at(np.concatenate([g.dst[es], g.src[es]]))
    via_end = (1.0 - s) * g.time_s[es] + ends[:n]
    # Backwards needs the twin (``rev_time`` is inf without one), except from the very start of
    # the edge: that point is the node.
    back = np.multiply(s, g.rev_time[es], out=np.zeros(n), where=s > 0.0)
    via_start = back + ends[n:]
    direct_fwd = np.full(n, np.inf)
    direct_bwd = np.full(n, np.inf)
    same = es == edge
    if same.any():
        t_here = float(g.time_s[edge])
        direct_fwd = np.where(same & (s <= frac), (frac - s) * t_here + access_s, np.inf)
        if r_t >= 0:
            t_back = float(g.time_s[r_t])
            direct_bwd = np.where(same & (s >= frac), (s - frac) * t_back + access_s, np.inf)
    return _Legs(es, s, np.stack([direct_fwd, direct_bwd, via_end, via_start]))


@dataclass
class _NetworkField:
    """Times to one target, from one bounded reverse search (see :meth:`RoadNetwork.field_to`)."""

    mode: TravelMode
    limit_s: float
    graph: _ModeGraph
    search: _Search
    edge: int
    frac: float
    access_s: float

    def times_from(self, sources: Snapped) -> np.ndarray:
        """Seconds from each source to the target; inf beyond ``limit_s`` or unreachable."""
        _check_field_mode(sources, self.mode)
        if len(sources) == 0:
            return np.zeros(0)
        _check_edges(self.graph, sources)
        legs = _legs_to(self.graph, self.search, sources, self.edge, self.frac, self.access_s)
        total = sources.access_m / self.graph.access_ms + legs.costs.min(axis=0)
        return np.where(total <= self.limit_s, total, np.inf)


def _check_edges(g: _ModeGraph, points: Snapped) -> None:
    bad = (points.edge < 0) | (points.edge >= len(g.src))
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
    :meth:`edges`) lets the point leave or be reached in the other direction too. A point at
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
        graphs: dict[TravelMode, _ModeGraph],
        dropped: dict[str, dict[str, int]],
        closed: dict[str, int],
        metric_crs: str,
        speeds_kmh: dict[str, dict[str, float]],
        access_speed_kmh: dict[str, float],
        max_snap_m: float,
    ) -> None:
        self.gdf_nodes = gdf_nodes
        self.gdf_links = gdf_links
        self.dropped = dropped
        self.modes: tuple[TravelMode, ...] = tuple(m for m in _MODES if m in graphs)
        self.metric_crs = metric_crs
        self.speeds_kmh = speeds_kmh
        self.access_speed_kmh = access_speed_kmh
        self.max_snap_m = max_snap_m
        self._graphs = graphs
        self._closed = closed
        self._to_metric = Transformer.from_crs("EPSG:4326", metric_crs, always_xy=True)
        self._to_wgs84 = Transformer.from_crs(metric_crs, "EPSG:4326", always_xy=True)

    def _graph(self, mode: TravelMode | str) -> _ModeGraph:
        m = _as_mode(mode)
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
            ``far`` where it is more than ``max_snap_m`` away.
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
        return Snapped(
            mode=g.mode,
            lon=x.copy(),
            lat=y.copy(),
            edge=edge,
            frac=np.clip(frac, 0.0, 1.0),
            access_m=access,
            far=access > self.max_snap_m,
        )

    def field_to(self, target: Snapped, limit_s: float = math.inf) -> TravelField:
        """Travel times to ``target`` from anywhere: one bounded reverse Dijkstra.

        On a graph of 50,000 nodes or more a bounded search runs on a region around the target
        when the region provably holds every way within the limit (else on the whole graph):
        same times, at a fraction of the cost (see ``_ModeGraph.search``).

        Parameters
        ----------
        target
            One point snapped by :meth:`snap`.
        limit_s
            Search bound (seconds); times above it come back as inf.
        """
        _check_single(target, "target")
        if not limit_s >= 0:
            msg = f"limit_s must be >= 0, got {limit_s}"
            raise InputError(msg)
        g = self._graph(target.mode)
        _check_edges(g, target)
        edge, frac = int(target.edge[0]), float(target.frac[0])
        access_s = float(target.access_m[0]) / g.access_ms
        found = g.search(edge, frac, access_s, float(limit_s), predecessors=False)
        return _NetworkField(g.mode, float(limit_s), g, found, edge, frac, access_s)

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
        _check_single(source, "source")
        _check_single(target, "target")
        _check_same_mode(source, target)
        g = self._graph(target.mode)
        _check_edges(g, source)
        _check_edges(g, target)
        edge, frac = int(target.edge[0]), float(target.frac[0])
        access_t = float(target.access_m[0]) / g.access_ms
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
            found = g.search(edge, frac, access_t, limit, predecessors=True)
            times = _NetworkField(g.mode, limit, g, found, edge, frac, access_t).times_from(source)
            time_s = float(times[0])
            if math.isfinite(time_s) or math.isinf(limit):
                break
            limit *= 2.0
        if not math.isfinite(time_s):
            msg = (
                f"no {g.mode.value} route from ({source.lon[0]:.6f}, {source.lat[0]:.6f}) "
                f"to ({target.lon[0]:.6f}, {target.lat[0]:.6f})"
            )
            raise NotFoundError(msg)
        legs = _legs_to(g, found, source, edge, frac, access_t)
        way = int(np.argmin(legs.costs[:, 0]))
        es, s = int(legs.edge[0]), float(legs.frac[0])
        pieces: list[np.ndarray] = []
        road_m = 0.0
        node_path: list[int] = []
        r_t = int(g.rev[edge])
        if way == 0:  # along the target's edge, forwards
            pieces.append(_substring_coords(g.geoms[edge], s, frac))
            road_m += (frac - s) * float(g.length_m[edge])
        elif way == 1:  # along its twin, i.e. backwards over the same road
            pieces.append(_substring_coords(g.geoms[r_t], 1.0 - s, 1.0 - frac))
            road_m += (s - frac) * float(g.length_m[r_t])
        else:
            if way == 2:
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
            # The search reached the target from the virtual node through ``x``: the start of
            # the target's edge, the start of its twin, or (at the very end of a one-way edge)
            # the end node itself.
            seed_a = access_t + frac * float(g.time_s[edge])
            if x == int(g.src[edge]) and float(found.at(np.array([x]))[0]) == seed_a:
                pieces.append(_substring_coords(g.geoms[edge], 0.0, frac))
                road_m += frac * float(g.length_m[edge])
            elif r_t >= 0:
                pieces.append(_substring_coords(g.geoms[r_t], 0.0, 1.0 - frac))
                road_m += (1.0 - frac) * float(g.length_m[r_t])
            else:
                pieces.append(_substring_coords(g.geoms[edge], 1.0, 1.0))
        metric = np.concatenate(pieces)
        lon, lat = self._to_wgs84.transform(metric[:, 0], metric[:, 1])
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
        length = float(source.access_m[0]) + road_m + float(target.access_m[0])
        return Route(
            mode=g.mode,
            time_s=time_s,
            length_m=length,
            geometry=LineString(coords),
            node_ids=tuple(int(i) for i in g.node_ids[node_path]),
        )

    def lower_bound_s(self, source: Snapped, target: Snapped) -> np.ndarray:
        """Admissible lower bound of the time from each source to the single target.

        Both access legs are known exactly; the roads between the snapped positions cover at
        least the straight distance that is left, at no more than the mode's top speed (the
        largest metric-length / time ratio over the kept edges, so the bound holds whatever the
        links' stated lengths). ``target`` holds one point, or one per source.
        """
        _check_targets(source, target)
        g = self._graph(target.mode)
        if len(source) == 0:
            return np.zeros(0)
        sx, sy = self._to_metric.transform(source.lon, source.lat)
        tx, ty = self._to_metric.transform(target.lon, target.lat)
        straight = np.hypot(np.asarray(sx) - np.asarray(tx), np.asarray(sy) - np.asarray(ty))
        access = source.access_m + target.access_m
        bound = access / g.access_ms + np.maximum(straight - access, 0.0) / g.top_ms
        # Shave off rounding so the bound never exceeds an exact time computed another way.
        return bound * (1.0 - 1e-9)

    def typical_ratio(self, mode: TravelMode | str) -> float:
        """The usual ratio of a travel time to :meth:`lower_bound_s`: a guess, never a bound.

        Measured once per mode (see :meth:`_ModeGraph.typical_ratio`): the median ratio over
        node pairs a few minutes apart. On the megacity benchmark it is 2.9 / 1.5 / 1.3 for
        drive / bike / walk (the top speeds are 70 / 15 / 5 km/h, typical ways run at 20-30 /
        12-15 / 5 km/h and are ~1.3 times the straight line).
        """
        return self._graph(mode).typical_ratio()

    def describe(self) -> dict[str, Any]:
        """JSON-able summary: kind, metric CRS, per mode kept/dropped/closed counts, speeds."""
        modes: dict[str, Any] = {}
        for m in _MODES:
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
            "nodes": len(self.gdf_nodes),
            "links": len(self.gdf_links),
            "modes": modes,
            "speeds_kmh": self.speeds_kmh,
        }


def _frame_problems(
    gdf_nodes: gpd.GeoDataFrame,
    gdf_links: gpd.GeoDataFrame,
    speeds_kmh: Mapping[str, Mapping[str, float]] | None,
) -> list[str]:
    """Every reason the frames cannot make a network (empty when they can)."""
    problems: list[str] = []
    for name, gdf, cols in (
        ("nodes", gdf_nodes, ("node_id",)),
        ("links", gdf_links, ("u", "v", "length_m")),
    ):
        missing = [c for c in cols if c not in gdf.columns]
        if missing:
            problems.append(f"{name}: missing column(s) {', '.join(missing)}")
        if not isinstance(gdf, gpd.GeoDataFrame) or gdf.crs is None:
            problems.append(f"{name}: needs a GeoDataFrame with a CRS")
    has_speeds = all(f"speed_{m.value}_kmh" in gdf_links.columns for m in _MODES)
    if (speeds_kmh is not None or not has_speeds) and "road_class" not in gdf_links.columns:
        problems.append("links: need speed_<mode>_kmh columns or a road_class column")
    if problems:
        return problems
    ids = pd.Series(gdf_nodes["node_id"])
    if ids.duplicated().any():
        problems.append(
            f"nodes: duplicate node_id(s) {ids[ids.duplicated()].unique()[:20].tolist()}"
        )
    known = pd.Index(ids)
    for end in ("u", "v"):
        unknown = ~pd.Index(gdf_links[end]).isin(known)
        if unknown.any():
            problems.append(
                f"links: {end} names {int(unknown.sum())} unknown node(s), e.g. "
                f"{pd.Series(gdf_links[end])[unknown].unique()[:10].tolist()}"
            )
    length = pd.to_numeric(gdf_links["length_m"], errors="coerce")
    bad = ~(length >= 0)
    if bad.any():
        problems.append(f"links: missing or negative length_m in {int(bad.sum())} row(s)")
    types = shapely.get_type_id(gdf_links.geometry.to_numpy())
    bad_geom = types != shapely.GeometryType.LINESTRING
    if bad_geom.any():
        problems.append(f"links: {int(bad_geom.sum())} geometry(ies) are not LineStrings")
    if "road_class" in gdf_links.columns and (speeds_kmh is not None or not has_speeds):
        table = SPEEDS_KMH if speeds_kmh is None else speeds_kmh
        codes, present = _factorize_classes(gdf_links)
        if (codes < 0).any():
            problems.append(f"links: missing road_class in {int((codes < 0).sum())} row(s)")
        unknown_classes = sorted(set(present) - set(table))
        if unknown_classes:
            problems.append(f"links: no speeds for road class(es) {unknown_classes}")
    return problems


def _link_speeds(
    gdf_links: gpd.GeoDataFrame, speeds_kmh: Mapping[str, Mapping[str, float]] | None
) -> dict[TravelMode, np.ndarray]:
    has_speeds = all(f"speed_{m.value}_kmh" in gdf_links.columns for m in _MODES)
    out: dict[TravelMode, np.ndarray] = {}
    for m in _MODES:
        if speeds_kmh is None and has_speeds:
            values = pd.to_numeric(gdf_links[f"speed_{m.value}_kmh"], errors="coerce")
        else:
            table = SPEEDS_KMH if speeds_kmh is None else speeds_kmh
            codes, classes = _factorize_classes(gdf_links)
            per_class = np.array([float(table[c].get(m.value, 0.0)) for c in classes])
            values = pd.Series(per_class[codes] if len(codes) else np.zeros(0))
        out[m] = values.to_numpy(dtype=float)
    return out


def _factorize_classes(gdf_links: gpd.GeoDataFrame) -> tuple[np.ndarray, list[str]]:
    """Road class of each link as codes into the list of distinct classes (fast on big frames)."""
    codes, uniques = pd.factorize(gdf_links["road_class"].to_numpy(dtype=object))
    return np.asarray(codes), [str(c) for c in uniques]


def _speeds_table(
    gdf_links: gpd.GeoDataFrame, speeds: dict[TravelMode, np.ndarray]
) -> dict[str, dict[str, float]]:
    """Road class → mode → highest speed applied (km/h), for explanations."""
    if "road_class" in gdf_links.columns:
        codes, classes = _factorize_classes(gdf_links)
    else:
        codes, classes = np.zeros(len(gdf_links), dtype=np.int64), ["all"]
    table: dict[str, dict[str, float]] = {}
    for i, cls in enumerate(classes):
        mine = codes == i
        table[cls] = {m.value: float(speeds[m][mine].max()) for m in _MODES}
    return table


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


def _pair_twins(u: np.ndarray, v: np.ndarray, geoms: np.ndarray) -> np.ndarray:
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


def _build_mode(
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
) -> tuple[_ModeGraph | None, np.ndarray, dict[str, int]]:
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
    graph = _ModeGraph(
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
    problems = _frame_problems(gdf_nodes, gdf_links, speeds_kmh)
    if problems:
        msg = "cannot build a road network: " + "; ".join(problems)
        raise InputError(msg)
    settings = get_settings()
    access = {**settings.access_speed_kmh, **dict(access_speed_kmh or {})}
    nodes_wgs = gdf_nodes.to_crs("EPSG:4326")
    links_wgs = gdf_links.to_crs("EPSG:4326")
    speeds = _link_speeds(links_wgs, speeds_kmh)
    bad_speed = [m.value for m in _MODES if not (speeds[m] >= 0).all()]
    if bad_speed:
        msg = f"cannot build a road network: missing or negative speeds for {bad_speed}"
        raise InputError(msg)
    metric_crs = _pick_metric_crs(nodes_wgs)
    link_geoms = links_wgs.geometry.to_crs(metric_crs).to_numpy()
    node_points = nodes_wgs.geometry.to_crs(metric_crs).to_numpy()
    # NaN for a node without a point: it then lies in no region (regions only cost speed).
    node_xy = np.column_stack([shapely.get_x(node_points), shapely.get_y(node_points)])
    node_ids = nodes_wgs["node_id"].to_numpy(dtype=np.int64)
    index = pd.Index(node_ids)
    u_pos = index.get_indexer(links_wgs["u"].to_numpy(dtype=np.int64))
    v_pos = index.get_indexer(links_wgs["v"].to_numpy(dtype=np.int64))
    length_m = links_wgs["length_m"].to_numpy(dtype=float)
    twin = _pair_twins(u_pos, v_pos, links_wgs.geometry.to_numpy())
    graphs: dict[TravelMode, _ModeGraph] = {}
    dropped: dict[str, dict[str, int]] = {}
    closed: dict[str, int] = {}
    out_links = gdf_links.copy()
    for m in _MODES:
        graph, kept, lost = _build_mode(
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
        speeds_kmh=_speeds_table(links_wgs, speeds),
        access_speed_kmh={m.value: float(access[m.value]) for m in _MODES},
        max_snap_m=float(settings.max_snap_m),
    )


def _parse_maxspeed(value: str | None) -> float | None:
    """km/h from an OSM ``maxspeed`` value ("50", "30 mph", "50;70"); None if not numeric."""
    if not value:
        return None
    head = value.split(";")[0].strip().lower()
    mph = head.endswith("mph")
    number = head.removesuffix("mph").removesuffix("km/h").strip()
    try:
        speed = float(number)
    except ValueError:
        return None
    speed = speed * 1.609344 if mph else speed
    return speed if speed > 0 else None


def _osm_way_rules(tags: Mapping[str, str | None]) -> tuple[dict[str, float], int, bool]:
    """Speeds per mode, direction (1 forward only, -1 backward only, 0 both) and bike contraflow.

    Rules: ``access=no`` closes the way unless a mode is explicitly allowed;
    ``motor_vehicle``/``motorcar=no`` close it to driving, ``motorroad=yes`` to bikes and
    pedestrians; ``foot``/``bicycle`` = no closes, = yes|designated|permissive opens; ``maxspeed``
    caps driving. One-way: ``oneway=yes|1|true`` (``-1`` reversed), ``junction=roundabout`` and
    ``highway=motorway`` imply it unless ``oneway=no``; ``oneway:bicycle=no`` or
    ``cycleway=opposite*`` let bikes ride against it.
    """
    highway = str(tags["highway"])
    speeds = dict(OSM_SPEEDS_KMH[highway])
    if tags.get("access") == "no":
        speeds = {"drive": 0.0, "bike": 0.0, "walk": 0.0}
    if tags.get("motor_vehicle") == "no" or tags.get("motorcar") == "no":
        speeds["drive"] = 0.0
    if tags.get("motorroad") == "yes":
        speeds["bike"] = speeds["walk"] = 0.0
    foot, bicycle = tags.get("foot"), tags.get("bicycle")
    if foot == "no":
        speeds["walk"] = 0.0
    elif foot in _OSM_YES:
        speeds["walk"] = speeds["walk"] or OSM_FOOT_ALLOWED_KMH
    if bicycle == "no":
        speeds["bike"] = 0.0
    elif bicycle in _OSM_YES:
        speeds["bike"] = max(speeds["bike"], OSM_BIKE_ALLOWED_KMH)
    cap = _parse_maxspeed(tags.get("maxspeed"))
    if cap is not None and speeds["drive"] > 0:
        speeds["drive"] = min(speeds["drive"], cap)
    oneway = (tags.get("oneway") or "").lower()
    if oneway in _OSM_ONEWAY_FORWARD:
        direction = 1
    elif oneway in _OSM_ONEWAY_BACKWARD:
        direction = -1
    elif oneway != "no" and (
        tags.get("junction") in ("roundabout", "circular") or highway == "motorway"
    ):
        direction = 1
    else:
        direction = 0
    contraflow = tags.get("oneway:bicycle") == "no" or str(tags.get("cycleway") or "").startswith(
        "opposite"
    )
    return speeds, direction, contraflow


_OSM_TAGS = (
    "highway",
    "name",
    "oneway",
    "junction",
    "maxspeed",
    "access",
    "motor_vehicle",
    "motorcar",
    "motorroad",
    "foot",
    "bicycle",
    "oneway:bicycle",
    "cycleway",
)


def _read_osm_ways(path: Path) -> list[tuple[dict[str, str | None], list[np.ndarray]]]:
    """Road ways as (tags, runs); a run is an (k, 3) array of node id, lon, lat.

    A way is cut where the extract lacks a node's location, so clipped extracts still load.
    """
    ways: list[tuple[dict[str, str | None], list[np.ndarray]]] = []
    processor = (
        osmium.FileProcessor(str(path), osmium.osm.NODE | osmium.osm.WAY)
        .with_locations()
        .with_filter(osmium.filter.EntityFilter(osmium.osm.WAY))
        .with_filter(osmium.filter.KeyFilter("highway"))
    )
    for way in processor:
        if not isinstance(way, osmium.osm.Way) or way.tags.get("highway") not in OSM_SPEEDS_KMH:
            continue
        tags = {key: way.tags.get(key) for key in _OSM_TAGS}
        runs: list[np.ndarray] = []
        run: list[tuple[float, float, float]] = []
        for node in way.nodes:
            location = node.location
            if not location.valid():
                if len(run) > 1:
                    runs.append(np.array(run))
                run = []
                continue
            if run and run[-1][0] == node.ref:
                continue
            run.append((node.ref, location.lon, location.lat))
        if len(run) > 1:
            runs.append(np.array(run))
        if runs:
            ways.append((tags, runs))
    return ways


def read_osm(
    path: Path | str, *, bbox: tuple[float, float, float, float] | None = None
) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    """Read the roads of an OpenStreetMap extract into node and link frames.

    Ways whose ``highway`` value is in :data:`OSM_SPEEDS_KMH` are split at every node shared
    with another way (or met twice) and at their ends, giving links between intersections that
    keep the way's full geometry. A two-way road gives a link each way; a one-way road only the
    allowed direction (walking adds the other in :func:`build_network`); a bike contraflow gives
    the opposite link with driving closed. Lengths are geodesic (WGS84 ellipsoid).

    Parameters
    ----------
    path
        ``.osm.pbf``, ``.osm``, ``.osm.bz2`` or ``.osm.gz``.
    bbox
        ``(min_lon, min_lat, max_lon, max_lat)``: keep only links with both ends inside.

    Returns
    -------
    tuple
        ``(gdf_nodes, gdf_links)`` in EPSG:4326 with the columns of :func:`read_link_table`;
        ``node_id`` is the OSM node id, ``road_class`` the highway value, ``road_name`` the
        ``name`` tag and ``class_source`` ``"osm"``.

    Raises
    ------
    DataFileError
        The file is missing or unreadable, or holds no roads (inside ``bbox``).
    """
    path = Path(path)
    if not path.is_file():
        msg = f"{path}: no such OpenStreetMap file"
        raise DataFileError(msg)
    try:
        ways = _read_osm_ways(path)
    except (RuntimeError, OSError, ValueError) as exc:
        msg = f"cannot read {path} as OpenStreetMap data: {exc}"
        raise DataFileError(msg) from exc
    uses: dict[int, int] = {}
    for _, runs in ways:
        for run in runs:
            for ref in run[:, 0].astype(np.int64).tolist():
                uses[ref] = uses.get(ref, 0) + 1
    rows: list[tuple[int, int, np.ndarray, dict[str, float], bool, str, str]] = []
    for tags, runs in ways:
        speeds, direction, contraflow = _osm_way_rules(tags)
        if not any(speeds.values()):
            continue
        highway, name = str(tags["highway"]), str(tags.get("name") or "")
        for run in runs:
            refs = run[:, 0].astype(np.int64)
            cuts = [0] + [i for i in range(1, len(refs) - 1) if uses[int(refs[i])] > 1]
            cuts.append(len(refs) - 1)
            for i0, i1 in itertools.pairwise(cuts):
                xy = run[i0 : i1 + 1, 1:]
                u, v = int(refs[i0]), int(refs[i1])
                if direction >= 0:
                    rows.append((u, v, xy, speeds, direction != 0, highway, name))
                if direction <= 0:
                    rows.append((v, u, xy[::-1], speeds, direction != 0, highway, name))
                elif contraflow:
                    back = {**speeds, "drive": 0.0}
                    rows.append((v, u, xy[::-1], back, True, highway, name))
    if bbox is not None:
        x0, y0, x1, y1 = bbox
        rows = [
            r
            for r in rows
            if x0 <= r[2][0, 0] <= x1
            and y0 <= r[2][0, 1] <= y1
            and x0 <= r[2][-1, 0] <= x1
            and y0 <= r[2][-1, 1] <= y1
        ]
    if not rows:
        msg = f"{path}: no roads found" + (f" inside {bbox}" if bbox is not None else "")
        raise DataFileError(msg)
    coords = np.concatenate([r[2] for r in rows])
    sizes = np.array([len(r[2]) for r in rows])
    owner = np.repeat(np.arange(len(rows)), sizes)
    _, _, seg = _GEOD.inv(coords[:-1, 0], coords[:-1, 1], coords[1:, 0], coords[1:, 1])
    seg = np.where(owner[1:] == owner[:-1], seg, 0.0)
    length = np.bincount(owner[1:], weights=seg, minlength=len(rows))
    gdf_links = gpd.GeoDataFrame(
        {
            "link_id": np.arange(len(rows), dtype=np.int64),
            "u": np.array([r[0] for r in rows], dtype=np.int64),
            "v": np.array([r[1] for r in rows], dtype=np.int64),
            "length_m": length,
            "road_class": [r[5] for r in rows],
            "road_name": [r[6] for r in rows],
            "class_source": "osm",
            "oneway": np.array([r[4] for r in rows], dtype=bool),
            **{
                f"speed_{m.value}_kmh": np.array([r[3][m.value] for r in rows], dtype=float)
                for m in _MODES
            },
        },
        geometry=shapely.linestrings(coords, indices=owner),
        crs="EPSG:4326",
    )
    ends = pd.DataFrame(
        {
            "node_id": np.concatenate([gdf_links["u"], gdf_links["v"]]),
            "x": np.concatenate([[r[2][0, 0] for r in rows], [r[2][-1, 0] for r in rows]]),
            "y": np.concatenate([[r[2][0, 1] for r in rows], [r[2][-1, 1] for r in rows]]),
        }
    ).drop_duplicates("node_id")
    ends = ends.sort_values("node_id", kind="stable").reset_index(drop=True)
    gdf_nodes = gpd.GeoDataFrame(
        {"node_id": ends["node_id"].to_numpy(np.int64), "in_district": False},
        geometry=gpd.points_from_xy(ends["x"], ends["y"]),
        crs="EPSG:4326",
    )
    return gdf_nodes, gdf_links


def read_network(path: Path | str) -> RoadNetwork:
    """Read a road network file and build its travel graphs.

    Parameters
    ----------
    path
        A GeoPackage with layers ``nodes`` and ``links`` (the project's format, e.g.
        ``data/jinniu_roads.gpkg``), an OpenStreetMap extract (``.osm.pbf``, ``.osm``,
        ``.osm.bz2``, ``.osm.gz``), or a folder holding a Chengdu-format link table (one
        ``*nodes*.csv`` and one ``*links*.csv``).

    Raises
    ------
    DataFileError
        The path is missing, of an unknown kind, or its content cannot make a network.
    """
    path = Path(path)
    name = path.name.lower()
    if not path.exists():
        msg = f"{path}: no such road network file"
        raise DataFileError(msg)
    if path.is_dir():
        nodes_csv = sorted(path.glob("*nodes*.csv"))
        links_csv = sorted(path.glob("*links*.csv"))
        if len(nodes_csv) != 1 or len(links_csv) != 1:
            msg = (
                f"{path}: a link-table folder needs exactly one *nodes*.csv and one *links*.csv, "
                f"found {[p.name for p in nodes_csv + links_csv]}"
            )
            raise DataFileError(msg)
        gdf_nodes, gdf_links = read_link_table(nodes_csv[0], links_csv[0])
    elif name.endswith(".gpkg"):
        try:
            layers = {layer for layer, _ in pyogrio.list_layers(path)}
        except (pyogrio.errors.DataSourceError, OSError) as exc:
            msg = f"cannot read {path}: {exc}"
            raise DataFileError(msg) from exc
        if not {"nodes", "links"} <= layers:
            msg = f"{path}: needs layers 'nodes' and 'links', has {sorted(layers)}"
            raise DataFileError(msg)
        gdf_nodes = gpd.read_file(path, layer="nodes")
        gdf_links = gpd.read_file(path, layer="links")
    elif name.endswith(_OSM_SUFFIXES):
        gdf_nodes, gdf_links = read_osm(path)
    else:
        msg = (
            f"{path}: unknown road network format; expected .gpkg (layers nodes, links), "
            f"{', '.join(_OSM_SUFFIXES)} or a link-table folder"
        )
        raise DataFileError(msg)
    try:
        return build_network(gdf_nodes, gdf_links)
    except DataFileError:
        raise
    except InputError as exc:
        msg = f"{path}: {exc}"
        raise DataFileError(msg) from exc
