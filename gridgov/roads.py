"""Road networks from files: link tables, OpenStreetMap extracts, road classes, margins.

The Chengdu link table (Guo et al. 2019) is a directed graph of straight links between
intersections, with lengths but no names or classes. This module turns it into two GeoDataFrames
(nodes and links, EPSG:4326) with a road class, a one-way flag and a speed per travel mode.
:func:`read_osm` gives the same frames from an OpenStreetMap extract of any city;
:func:`read_road_frames` reads any supported file. :func:`frame_problems` and
:func:`link_speeds` check such frames and give each link its speeds, for
:mod:`gridgov.network`, which builds the travel graphs.

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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import osmium
import pandas as pd
import pyogrio
import scipy.sparse as sp
import shapely
from pyproj import Geod, Transformer
from scipy.sparse.csgraph import dijkstra

from gridgov.errors import DataFileError
from gridgov.model import TravelMode
from gridgov.settings import get_settings

#: Tianfu Square, the centre of Chengdu's ring roads (WGS84 lon, lat).
CHENGDU_CENTRE = (104.0657, 30.6595)

_MODES: tuple[TravelMode, ...] = (TravelMode.DRIVE, TravelMode.BIKE, TravelMode.WALK)
_GEOD = Geod(ellps="WGS84")


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


def same_id_type(*columns: pd.Series | np.ndarray) -> list[np.ndarray]:
    """Node id columns in one type: int64 when every id is a whole number, else text.

    Road tables from other tools name nodes with text (SUMO's ``J75`` or ``cluster_12_34``,
    prefixed OSM ids); whole numbers stay numbers so that ``12`` and ``12.0`` are one node.
    Missing ids stay missing (None) for the caller to report.
    """
    series = [pd.Series(np.asarray(c, dtype=object)) for c in columns]
    joined = pd.concat(series, ignore_index=True)
    numbers = pd.to_numeric(joined, errors="coerce")
    present = joined.notna()
    whole = numbers.notna() & np.isfinite(numbers) & (numbers == np.round(numbers))
    if bool((whole | ~present).all()) and bool(present.any()):
        return [
            pd.to_numeric(c, errors="coerce").fillna(-1).to_numpy(dtype=np.int64) for c in series
        ]
    return [
        np.array([None if _missing(x) else _id_text(x) for x in c.tolist()], dtype=object)
        for c in series
    ]


def _missing(value: object) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _id_text(value: object) -> str:
    # A whole float among text ids (12.0 next to "J75") is the node 12.
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


# ---- frames for the routing layer ----


def frame_problems(
    gdf_nodes: gpd.GeoDataFrame,
    gdf_links: gpd.GeoDataFrame,
    speeds_kmh: Mapping[str, Mapping[str, float]] | None,
) -> list[str]:
    """Every reason node and link frames cannot make a road network (empty when they can)."""
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


def link_speeds(
    gdf_links: gpd.GeoDataFrame, speeds_kmh: Mapping[str, Mapping[str, float]] | None
) -> dict[TravelMode, np.ndarray]:
    """Each link's speed (km/h) per mode: its speed columns, else its class's speeds."""
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


def speeds_by_class(
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
    numeric = (("nodes", nodes, NODE_COLUMNS[1:]), ("links", links, LINK_COLUMNS[2:]))
    for name, df, cols in numeric:
        for col in cols:
            values = pd.to_numeric(df[col], errors="coerce")
            bad = df.index[values.isna()].tolist()
            if bad:
                problems.append(f"{name}: non-numeric or empty {col} in row(s) {bad[:20]}")
    # Node ids may be numbers or text (see same_id_type); they must be there.
    ids, starts, ends = same_id_type(nodes["Node"], links["Node_Start"], links["Node_End"])
    for name, values, col in (
        ("nodes", nodes["Node"], "Node"),
        ("links", links["Node_Start"], "Node_Start"),
        ("links", links["Node_End"], "Node_End"),
    ):
        bad = values.index[values.isna()].tolist()
        if bad:
            problems.append(f"{name}: empty {col} in row(s) {bad[:20]}")
    if problems:
        msg = "; ".join(problems)
        raise DataFileError(msg)
    node_ids, u, v = pd.Series(ids), pd.Series(starts), pd.Series(ends)
    dup = node_ids[node_ids.duplicated()].unique().tolist()
    if dup:
        msg = f"nodes: duplicate Node id(s) {sorted(dup)}"
        raise DataFileError(msg)
    known = set(node_ids.tolist())
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
) -> tuple[list[Any], float]:
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
    return [ids[i].item() if isinstance(ids[i], np.generic) else ids[i] for i in order], total


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


def read_road_frames(path: Path | str) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    """Read the nodes and links of a road network file.

    Parameters
    ----------
    path
        A GeoPackage with layers ``nodes`` and ``links`` (the project's format, e.g.
        ``data/jinniu_roads.gpkg``), an OpenStreetMap extract (``.osm.pbf``, ``.osm``,
        ``.osm.bz2``, ``.osm.gz``), or a folder holding a Chengdu-format link table (one
        ``*nodes*.csv`` and one ``*links*.csv``).

    Returns
    -------
    tuple
        ``(gdf_nodes, gdf_links)`` as :func:`gridgov.network.build_network` takes them.

    Raises
    ------
    DataFileError
        The path is missing or of an unknown kind, or its content cannot be read.
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
    return gdf_nodes, gdf_links


def one_line_per_segment(gdf_links: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """The links with each two-way road once: what a map draws.

    A two-way road is two directed links over one line, with the same two end nodes and the same
    length; the first of them (in frame order) is kept. Links between the same nodes but of
    other lengths (two OSM ways) both stay.

    Parameters
    ----------
    gdf_links
        Links with ``u``, ``v`` and ``length_m``.

    Returns
    -------
    geopandas.GeoDataFrame
        The kept rows, index reset.
    """
    u = gdf_links["u"].to_numpy()
    v = gdf_links["v"].to_numpy()
    key = pd.DataFrame(
        {
            "a": np.minimum(u, v),
            "b": np.maximum(u, v),
            "m": np.round(gdf_links["length_m"].to_numpy(dtype=float), 1),
        }
    )
    return gdf_links[~key.duplicated().to_numpy()].reset_index(drop=True)
