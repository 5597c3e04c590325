"""A synthetic megacity for the dispatch benchmark: roads, areas, offices, units and incidents.

    python bench/megacity.py [--seed 7] [--side-nodes 512] [--out DIR]

Everything is generated from one seed (same seed, same city) in about six seconds for the full
size, around Chengdu (104.06 E, 30.66 N) so that the project's metric CRS (EPSG:32648) fits.

Roads
    A jittered street lattice, ``side_nodes`` × ``side_nodes`` intersections ``spacing_m`` apart
    (512 × 512 at 88 m: 262,144 nodes over 45 km × 45 km, about 130 intersections per km², the
    order of OpenStreetMap's drivable graph of central Chengdu). Every lattice line is a named road
    (``纬N路`` east-west, ``经N路`` north-south). Classes: ``local`` by default, ``arterial``
    every 8th line, ``urban_expressway`` every 40th line, and an ``expressway`` ring (closed to
    bikes and pedestrians) an eighth of the way in from the edge. Arterial and expressway nodes
    are jittered only along their road, so those roads stay straight. Speeds per class and mode
    are :data:`MEGACITY_SPEEDS_KMH` (congested-hour figures, as :data:`gridgov.roads.SPEEDS_KMH`
    for the classes both share).

    Irregularities, so that the graph is not a perfect lattice and the routing layer's
    strongly-connected-part filter has work to do:

    - ``removed_share`` (12 %) of local road segments are missing (blocks merged, dead ends,
      T-junctions);
    - one-way couplets: pairs of adjacent local lines, one each way (``oneway_share`` of the
      local lines);
    - a river between two rows, crossed only by bridges every ``bridge_every`` columns and by
      every arterial or expressway;
    - ``n_islands`` small gated blocks whose roads connect to nothing outside them.

    One-way segments next to removed ones leave a few nodes that can be entered but not left
    (or the reverse); they and the islands are what a largest-strongly-connected-part filter
    drops.

Areas
    A district (code ``510199000000``: ``5101`` is Chengdu and ``99`` is unassigned in GB/T 2260,
    so it cannot be mistaken for a real district), ``streets_side``² streets (16 × 16 = 256,
    about 8 km² each), each split into ``communities_side``² communities, each split into
    ``grids_side``² grids (one grid per community by default: coarse grids, so the grid-worker
    count stays near the size the issue asks for). Codes follow :class:`gridgov.model.Level`:
    12 digits down to the community (``510199`` + 3 street digits + 3 community digits), 15 for
    a grid. Polygons are quadrilaterals over one jittered corner lattice, so every level tiles
    its parent exactly and area borders run between roads, not along them. No micro-grids.

Forces (5 kinds, :data:`MEGACITY_KINDS`)
    Per street: a police station with 2 patrols (anywhere on the street's roads; 3 of 4 drive,
    1 of 4 ride a bike), an enforcement squad (1 unit, drive), a market-supervision office
    (1 unit; 4 of 5 drive, 1 bikes) and a grid-management centre. One grid worker per grid, on a
    road inside the grid (60 % bike, 40 % walk). A fire station with one engine (drive) in one
    street of every 2 × 2 block of streets. Offices sit on roads near their street's centre;
    units other than patrols and grid workers wait at their office. Every unit is available and
    on duty. 16 × 16 streets: 512 police, 256 enforcement, 256 market, 64 fire, 1,024 grid
    workers: 2,112 units.

Incidents
    ``n_incidents`` points uniform over the district, each with a matter drawn uniformly from the
    catalogue matters whose every required kind exists in the megacity (:func:`megacity_matters`:
    18 of the 34 matters; those needing judicial, hrss, health or emergency forces are left out
    rather than mapped to another kind). Reported one second apart, in id order.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pyproj import Transformer

from gridgov.catalog import Catalog, load_catalog
from gridgov.model import (
    OFFICE_COLUMNS,
    ROAD_LINK_COLUMNS,
    UNIT_COLUMNS,
    ForceKind,
    Level,
    TravelMode,
    UnitStatus,
)
from gridgov.settings import get_settings

#: Where the megacity's centre lies (WGS84): central Chengdu.
CENTRE = (104.06, 30.66)
DISTRICT_CODE = "510199000000"
DISTRICT_NAME = "合成特大城区"
MEGACITY_KINDS: tuple[ForceKind, ...] = (
    ForceKind.POLICE,
    ForceKind.ENFORCEMENT,
    ForceKind.MARKET,
    ForceKind.FIRE,
    ForceKind.GRID_WORKER,
)
#: Speeds (km/h) per road class and mode; 0 closes the road to the mode.
MEGACITY_SPEEDS_KMH: dict[str, dict[str, float]] = {
    "expressway": {"drive": 70.0, "bike": 0.0, "walk": 0.0},
    "urban_expressway": {"drive": 45.0, "bike": 15.0, "walk": 5.0},
    "arterial": {"drive": 30.0, "bike": 15.0, "walk": 5.0},
    "local": {"drive": 20.0, "bike": 12.0, "walk": 5.0},
}
#: Node columns (as :func:`gridgov.reference.read_reference_district` gives them).
NODE_COLUMNS = ("node_id", "in_district")
INCIDENT_COLUMNS = ("incident_id", "matter_code", "lon", "lat", "reported_at")
REPORTED_FROM = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)

_ARTERIAL_EVERY = 8
_EXPRESS_EVERY = 40
_POLICE_PER_STREET = 2
_GRID_DEPARTMENT = "街道办事处"
_DEPARTMENTS = {
    ForceKind.POLICE: "公安分局",
    ForceKind.ENFORCEMENT: "综合行政执法局",
    ForceKind.MARKET: "市场监管局",
    ForceKind.FIRE: "消防救援大队",
    ForceKind.GRID_WORKER: _GRID_DEPARTMENT,
}


@dataclass(frozen=True)
class Megacity:
    """A generated city; every frame is in EPSG:4326, in the reference district's formats."""

    gdf_nodes: gpd.GeoDataFrame
    gdf_links: gpd.GeoDataFrame
    gdf_areas: gpd.GeoDataFrame
    gdf_offices: gpd.GeoDataFrame
    gdf_units: gpd.GeoDataFrame
    incidents: pd.DataFrame
    facts: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _Lattice:
    """The road lattice in metric coordinates, before conversion to frames."""

    x: np.ndarray  # per node (row-major, node id = row * side + col)
    y: np.ndarray
    a: np.ndarray  # per undirected segment: end nodes
    b: np.ndarray
    road_class: np.ndarray
    road_name: np.ndarray
    direction: np.ndarray  # 0 two-way, +1 only a->b, -1 only b->a
    main: np.ndarray  # per segment: part of the connected city (not an island)
    facts: dict[str, Any]


def megacity_matters(catalog: Catalog, kinds: tuple[ForceKind, ...] = MEGACITY_KINDS) -> list[str]:
    """Codes of the catalogue matters whose every required kind is among ``kinds``."""
    return [m.code for m in catalog if set(m.required_kinds) <= set(kinds)]


def _line_classes(side: int, ring: tuple[int, int]) -> np.ndarray:
    """Road class of each lattice line (rows and columns share the rule)."""
    k = np.arange(side)
    cls = np.full(side, "local", dtype=object)
    cls[k % _ARTERIAL_EVERY == _ARTERIAL_EVERY // 2] = "arterial"
    cls[k % _EXPRESS_EVERY == _EXPRESS_EVERY // 2] = "urban_expressway"
    cls[list(ring)] = "expressway"
    return cls


def _build_lattice(
    rng: np.random.Generator,
    origin: tuple[float, float],
    side: int,
    spacing_m: float,
    removed_share: float,
    oneway_share: float,
    bridge_every: int,
    n_islands: int,
) -> _Lattice:
    ring = (side // 8, side - 1 - side // 8)
    line_cls = _line_classes(side, ring)
    straight = line_cls != "local"
    rows, cols = np.divmod(np.arange(side * side), side)
    jitter = 0.2 * spacing_m
    # Nodes on an arterial row keep their y (the row stays straight), and so on.
    dx = np.where(straight[cols], 0.0, rng.uniform(-jitter, jitter, side * side))
    dy = np.where(straight[rows], 0.0, rng.uniform(-jitter, jitter, side * side))
    half = (side - 1) * spacing_m / 2
    x = origin[0] + cols * spacing_m - half + dx
    y = origin[1] + rows * spacing_m - half + dy

    # Undirected segments: horizontal (along row r, col c -> c+1), then vertical (col c, r -> r+1).
    hr, hc = np.divmod(np.arange(side * (side - 1)), side - 1)
    vr, vc = np.divmod(np.arange((side - 1) * side), side)
    a = np.concatenate([hr * side + hc, vr * side + vc])
    b = np.concatenate([hr * side + hc + 1, (vr + 1) * side + vc])
    horizontal = np.concatenate([np.ones(len(hr), bool), np.zeros(len(vr), bool)])
    line = np.concatenate([hr, vc])  # the row or column the segment runs along
    pos = np.concatenate([hc, vr])  # its position along that line
    cls = line_cls[line].copy()
    # The expressway ring is a square: only its stretch between the corners is expressway.
    off_ring = (cls == "expressway") & ((pos < ring[0]) | (pos >= ring[1]))
    cls[off_ring] = _line_classes(side, (-1, -1))[line[off_ring]]
    names = np.where(horizontal, "纬", "经").astype(object) + (line + 1).astype(str) + "路"
    names = np.where(cls == "expressway", "环城高速", names)
    n_seg = len(a)
    keep = np.ones(n_seg, bool)

    # One-way couplets: adjacent local lines of the same orientation, one each way.
    direction = np.zeros(n_seg, np.int8)
    couplets = 0
    for is_h in (True, False):
        starts = np.flatnonzero((line_cls[:-1] == "local") & (line_cls[1:] == "local"))
        chosen = starts[rng.random(len(starts)) < oneway_share / 2]
        if len(chosen):
            chosen = chosen[np.insert(np.diff(chosen) > 1, 0, True)]  # no line in two couplets
        for k in chosen:
            sel = (horizontal == is_h) & (line == k) & (cls == "local")
            direction[sel] = 1
            sel = (horizontal == is_h) & (line == k + 1) & (cls == "local")
            direction[sel] = -1
        couplets += len(chosen)

    # Missing local segments.
    local = cls == "local"
    removed = local & (rng.random(n_seg) < removed_share)
    keep &= ~removed

    # The river runs between two rows; vertical segments crossing it need a bridge.
    river_row = int(side * 0.42)
    crossing = ~horizontal & (pos == river_row)
    bridge = (line % bridge_every == 0) | (line_cls[line] != "local")
    keep &= ~(crossing & ~bridge)

    # Islands: square blocks between arterials whose every outward segment is cut.
    island = np.zeros(side * side, bool)
    lo, hi = ring[0] + 2, ring[1] - 8
    placed = 0
    for _ in range(50 * n_islands):
        if placed == n_islands or hi <= lo:
            break
        size = int(rng.integers(3, 6))
        r0 = int(rng.integers(lo, hi)) // _ARTERIAL_EVERY * _ARTERIAL_EVERY + 5
        c0 = int(rng.integers(lo, hi)) // _ARTERIAL_EVERY * _ARTERIAL_EVERY + 5
        block = (rows >= r0) & (rows < r0 + size) & (cols >= c0) & (cols < c0 + size)
        span = np.arange(size)
        if (
            island[block].any()
            or r0 <= river_row < r0 + size
            or r0 + size > side
            or c0 + size > side
            or straight[r0 + span].any()
            or straight[c0 + span].any()
        ):
            continue
        island |= block
        placed += 1
    cut = island[a] != island[b]
    keep &= ~cut
    inside_island = island[a] & island[b]
    direction[inside_island] = 0  # a gated compound's lanes are two-way
    keep[inside_island] = True

    facts = {
        "side_nodes": side,
        "spacing_m": spacing_m,
        "segments_in_lattice": n_seg,
        "segments_removed": int((removed & ~inside_island).sum()),
        "segments_cut_by_river": int((crossing & ~bridge).sum()),
        "segments_cut_around_islands": int(cut.sum()),
        "oneway_couplets": couplets,
        "islands": placed,
        "island_nodes": int(island.sum()),
        "river_row": river_row,
        "expressway_ring": list(ring),
    }
    return _Lattice(
        x=x,
        y=y,
        a=a[keep],
        b=b[keep],
        road_class=cls[keep],
        road_name=names[keep],
        direction=direction[keep],
        main=~inside_island[keep],
        facts=facts,
    )


def _links_frame(lat: _Lattice, lon: np.ndarray, latd: np.ndarray) -> gpd.GeoDataFrame:
    """Directed links (two per two-way segment), with speeds, lengths and geometry."""
    fwd = lat.direction >= 0
    back = lat.direction <= 0
    u = np.concatenate([lat.a[fwd], lat.b[back]])
    v = np.concatenate([lat.b[fwd], lat.a[back]])
    cls = np.concatenate([lat.road_class[fwd], lat.road_class[back]])
    name = np.concatenate([lat.road_name[fwd], lat.road_name[back]])
    oneway = np.concatenate([lat.direction[fwd] != 0, lat.direction[back] != 0])
    # Two-way pairs next to each other, like the reference table's rows.
    order = np.lexsort((v, u))
    u, v, cls, name, oneway = u[order], v[order], cls[order], name[order], oneway[order]
    length = np.hypot(lat.x[v] - lat.x[u], lat.y[v] - lat.y[u])
    coords = np.stack([np.column_stack([lon[u], latd[u]]), np.column_stack([lon[v], latd[v]])], 1)
    data: dict[str, Any] = {
        "link_id": np.arange(len(u), dtype=np.int64),
        "u": u.astype(np.int64),
        "v": v.astype(np.int64),
        "length_m": length,
        "road_class": cls.astype(str),
        "road_name": name.astype(str),
        "class_source": "generated",
        "oneway": oneway,
    }
    for mode in ("drive", "bike", "walk"):
        table = {c: s[mode] for c, s in MEGACITY_SPEEDS_KMH.items()}
        data[f"speed_{mode}_kmh"] = pd.Series(cls).map(table).to_numpy(float)
    return gpd.GeoDataFrame(data, geometry=shapely.linestrings(coords), crs="EPSG:4326")


def _area_frames(
    rng: np.random.Generator,
    bounds: tuple[float, float, float, float],
    streets_side: int,
    communities_side: int,
    grids_side: int,
    to_wgs84: Transformer,
) -> tuple[gpd.GeoDataFrame, list[np.ndarray]]:
    """District, streets, communities and grids over one jittered corner lattice.

    Returns the areas (WGS84) and, per level below the district, the metric polygons in frame
    order (streets, communities, grids) for placing units.
    """
    x0, y0, x1, y1 = bounds
    n = streets_side * communities_side * grids_side  # grid cells per side
    cx = np.linspace(x0, x1, n + 1)
    cy = np.linspace(y0, y1, n + 1)
    gx, gy = np.meshgrid(cx, cy)  # [row, col]
    cell = min(cx[1] - cx[0], cy[1] - cy[0])
    inner = (slice(1, n), slice(1, n))
    gx[inner] += rng.uniform(-0.2 * cell, 0.2 * cell, (n - 1, n - 1))
    gy[inner] += rng.uniform(-0.2 * cell, 0.2 * cell, (n - 1, n - 1))
    lon, latd = to_wgs84.transform(gx, gy)

    def ring_of(r0: int, c0: int, size: int, px: np.ndarray, py: np.ndarray) -> np.ndarray:
        """Counter-clockwise corner coordinates around cells [r0, r0+size) × [c0, c0+size)."""
        r1, c1 = r0 + size, c0 + size
        rr = np.concatenate(
            [np.full(size, r0), np.arange(r0, r1), np.full(size, r1), np.arange(r1, r0, -1)]
        )
        cc = np.concatenate(
            [np.arange(c0, c1), np.full(size, c1), np.arange(c1, c0, -1), np.full(size, c0)]
        )
        return np.column_stack([px[rr, cc], py[rr, cc]])

    rows: list[dict[str, Any]] = []
    metric: list[list[shapely.Polygon]] = [[], [], []]
    district = shapely.Polygon(ring_of(0, 0, n, lon, latd))
    rows.append(_area(DISTRICT_CODE, DISTRICT_NAME, Level.DISTRICT, None, district))
    per_street = communities_side * grids_side
    for s_r in range(streets_side):
        for s_c in range(streets_side):
            s_no = s_r * streets_side + s_c + 1
            s_code = f"{DISTRICT_CODE[:6]}{s_no:03d}000"
            s_name = f"第{s_no}街道"
            r0, c0 = s_r * per_street, s_c * per_street
            rows.append(
                _area(
                    s_code,
                    s_name,
                    Level.STREET,
                    DISTRICT_CODE,
                    shapely.Polygon(ring_of(r0, c0, per_street, lon, latd)),
                )
            )
            metric[0].append(shapely.Polygon(ring_of(r0, c0, per_street, gx, gy)))
            for k_r in range(communities_side):
                for k_c in range(communities_side):
                    k_no = k_r * communities_side + k_c + 1
                    k_code = f"{s_code[:9]}{k_no:03d}"
                    k_name = f"{s_name.removesuffix('街道')}第{k_no}社区"
                    kr0, kc0 = r0 + k_r * grids_side, c0 + k_c * grids_side
                    rows.append(
                        _area(
                            k_code,
                            k_name,
                            Level.COMMUNITY,
                            s_code,
                            shapely.Polygon(ring_of(kr0, kc0, grids_side, lon, latd)),
                        )
                    )
                    metric[1].append(shapely.Polygon(ring_of(kr0, kc0, grids_side, gx, gy)))
                    for g_r in range(grids_side):
                        for g_c in range(grids_side):
                            g_no = g_r * grids_side + g_c + 1
                            rows.append(
                                _area(
                                    f"{k_code}{g_no:03d}",
                                    f"{k_name}第{g_no}网格",
                                    Level.GRID,
                                    k_code,
                                    shapely.Polygon(ring_of(kr0 + g_r, kc0 + g_c, 1, lon, latd)),
                                )
                            )
                            metric[2].append(
                                shapely.Polygon(ring_of(kr0 + g_r, kc0 + g_c, 1, gx, gy))
                            )
    gdf = gpd.GeoDataFrame(rows, geometry="geometry", crs="EPSG:4326")
    return gdf, [np.asarray(m, dtype=object) for m in metric]


def _area(code: str, name: str, level: Level, parent: str | None, geom: Any) -> dict[str, Any]:
    return {
        "code": code,
        "name": name,
        "level": level.value,
        "parent_code": parent,
        "generated": True,
        "name_source": "generated",
        "geometry": geom,
    }


def _road_points(rng: np.random.Generator, lat: _Lattice, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random points on drivable two-way roads of the connected city (metric x, y)."""
    ok = np.flatnonzero(lat.main & (lat.direction == 0) & (lat.road_class != "expressway"))
    pick = rng.choice(ok, size=n)
    t = rng.uniform(0.25, 0.75, n)
    a, b = lat.a[pick], lat.b[pick]
    return lat.x[a] + t * (lat.x[b] - lat.x[a]), lat.y[a] + t * (lat.y[b] - lat.y[a])


def _place_forces(
    rng: np.random.Generator,
    lat: _Lattice,
    gdf_areas: gpd.GeoDataFrame,
    metric: list[np.ndarray],
    streets_side: int,
    to_wgs84: Transformer,
) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    streets = gdf_areas[gdf_areas["level"] == Level.STREET.value].reset_index(drop=True)
    grids = gdf_areas[gdf_areas["level"] == Level.GRID.value].reset_index(drop=True)
    street_geoms, grid_geoms = metric[0], metric[2]
    # Enough road points that every grid gets dozens; each is assigned to its grid and street.
    px, py = _road_points(rng, lat, max(60 * len(grid_geoms), 1000))
    pts = shapely.points(px, py)
    tree = shapely.STRtree(grid_geoms)
    p_idx, g_idx = tree.query(pts, predicate="within")
    grid_of = np.full(len(px), -1)
    grid_of[p_idx] = g_idx
    street_of = np.full(len(px), -1)
    s_tree = shapely.STRtree(street_geoms)
    p_idx, s_idx = s_tree.query(pts, predicate="within")
    street_of[p_idx] = s_idx
    # How deep inside its street each point is (offices keep off the border).
    depth = np.full(len(px), -1.0)
    has = street_of >= 0
    depth[has] = shapely.distance(pts[has], shapely.boundary(street_geoms[street_of[has]]))
    lon, latd = to_wgs84.transform(px, py)

    offices: list[dict[str, Any]] = []
    units: list[dict[str, Any]] = []

    def add_office(oid: str, name: str, kind: ForceKind, street: str, p: int) -> None:
        offices.append(
            {
                "office_id": oid,
                "name": name,
                "kind": kind.value,
                "department": _DEPARTMENTS[kind],
                "street_code": street,
                "generated": True,
                "geometry": shapely.Point(lon[p], latd[p]),
            }
        )

    def add_unit(
        uid: str,
        name: str,
        kind: ForceKind,
        oid: str,
        street: str,
        mode: TravelMode,
        p: int,
        grid_code: str | None = None,
    ) -> None:
        units.append(
            {
                "unit_id": uid,
                "name": name,
                "kind": kind.value,
                "office_id": oid,
                "department": _DEPARTMENTS[kind],
                "street_code": street,
                "travel_mode": mode.value,
                "status": UnitStatus.AVAILABLE.value,
                "on_duty": True,
                "grid_code": grid_code,
                "generated": True,
                "position_source": "road",
                "geometry": shapely.Point(lon[p], latd[p]),
            }
        )

    by_street = pd.Series(np.arange(len(px))[has]).groupby(street_of[has]).agg(list)
    by_grid = pd.Series(np.arange(len(px))[grid_of >= 0]).groupby(grid_of[grid_of >= 0]).agg(list)
    office_kinds = (
        ForceKind.GRID_WORKER,
        ForceKind.POLICE,
        ForceKind.ENFORCEMENT,
        ForceKind.MARKET,
    )
    for si, street in streets.iterrows():
        code, short = str(street["code"]), str(street["name"]).removesuffix("街道")
        mine = np.asarray(by_street.get(si, []), dtype=np.int64)
        if len(mine) == 0:
            msg = f"street {code} got no road point; raise the sample size"
            raise RuntimeError(msg)
        deep = mine[depth[mine] > 100.0]
        pool = deep if len(deep) >= len(office_kinds) else mine
        centre = np.asarray(street_geoms[si].centroid.coords[0])
        near = pool[np.argsort(np.hypot(px[pool] - centre[0], py[pool] - centre[1]))]
        spots = near[: max(len(office_kinds), len(near) // 4)]
        spots = rng.choice(spots, size=len(office_kinds), replace=len(spots) < len(office_kinds))
        spot = dict(zip(office_kinds, spots.tolist(), strict=True))
        for kind in office_kinds:
            label = "网格化服务管理中心" if kind is ForceKind.GRID_WORKER else kind.zh
            add_office(f"{code}-{kind.value}", f"{short}{label}", kind, code, spot[kind])
        oid = f"{code}-police"
        for i in range(1, _POLICE_PER_STREET + 1):
            mode = TravelMode.BIKE if rng.random() < 0.25 else TravelMode.DRIVE
            p = int(rng.choice(mine))
            add_unit(f"{oid}-{i:02d}", f"{short}巡警{i}号", ForceKind.POLICE, oid, code, mode, p)
        oid = f"{code}-enforcement"
        add_unit(
            f"{oid}-01",
            f"{short}执法1号",
            ForceKind.ENFORCEMENT,
            oid,
            code,
            TravelMode.DRIVE,
            spot[ForceKind.ENFORCEMENT],
        )
        oid = f"{code}-market"
        mode = TravelMode.BIKE if rng.random() < 0.2 else TravelMode.DRIVE
        add_unit(
            f"{oid}-01",
            f"{short}市场监管1号",
            ForceKind.MARKET,
            oid,
            code,
            mode,
            spot[ForceKind.MARKET],
        )
        s_r, s_c = divmod(int(si), streets_side)
        if s_r % 2 == 0 and s_c % 2 == 0:
            p = int(near[len(near) // 2])
            oid = f"{code}-fire"
            add_office(oid, f"{short}{ForceKind.FIRE.zh}", ForceKind.FIRE, code, p)
            add_unit(
                f"{oid}-01", f"{short}消防车1号", ForceKind.FIRE, oid, code, TravelMode.DRIVE, p
            )
    modes = rng.random(len(grids)) < 0.6
    for gi, grid in grids.iterrows():
        gcode = str(grid["code"])
        scode = gcode[:9] + "000"
        mine = np.asarray(by_grid.get(gi, []), dtype=np.int64)
        if len(mine) == 0:
            msg = f"grid {gcode} got no road point; raise the sample size"
            raise RuntimeError(msg)
        inner = mine[shapely.distance(pts[mine], shapely.boundary(grid_geoms[int(gi)])) > 20.0]
        p = int(rng.choice(inner if len(inner) else mine))
        add_unit(
            f"{gcode}-grid_worker-01",
            f"{grid['name']}网格员",
            ForceKind.GRID_WORKER,
            f"{scode}-grid_worker",
            scode,
            TravelMode.BIKE if modes[gi] else TravelMode.WALK,
            p,
            gcode,
        )
    gdf_offices = gpd.GeoDataFrame(offices, geometry="geometry", crs="EPSG:4326")
    gdf_units = gpd.GeoDataFrame(units, geometry="geometry", crs="EPSG:4326")
    return (
        gdf_offices[[*OFFICE_COLUMNS, "geometry"]],
        gdf_units[[*UNIT_COLUMNS, "position_source", "geometry"]],
    )


def random_incidents(
    rng: np.random.Generator,
    district: shapely.Polygon,
    matters: list[str],
    n: int,
    *,
    prefix: str = "MC",
    reported_from: datetime = REPORTED_FROM,
) -> pd.DataFrame:
    """``n`` incidents uniform over ``district`` (WGS84), matters drawn uniformly from ``matters``.

    Returns a frame with :data:`INCIDENT_COLUMNS`, reported one second apart in id order.
    """
    x0, y0, x1, y1 = district.bounds
    lon = np.empty(0)
    lat = np.empty(0)
    while len(lon) < n:
        tx = rng.uniform(x0, x1, 2 * n)
        ty = rng.uniform(y0, y1, 2 * n)
        ok = shapely.contains_xy(district, tx, ty)
        lon, lat = np.concatenate([lon, tx[ok]]), np.concatenate([lat, ty[ok]])
    codes = np.asarray(matters, dtype=object)[rng.integers(0, len(matters), n)]
    return pd.DataFrame(
        {
            "incident_id": [f"{prefix}{i:05d}" for i in range(n)],
            "matter_code": codes,
            "lon": lon[:n],
            "lat": lat[:n],
            "reported_at": [reported_from + timedelta(seconds=i) for i in range(n)],
        }
    )


def generate_megacity(
    seed: int = 7,
    *,
    side_nodes: int = 512,
    spacing_m: float = 88.0,
    streets_side: int = 16,
    communities_side: int = 2,
    grids_side: int = 1,
    n_incidents: int = 10_000,
    removed_share: float = 0.12,
    oneway_share: float = 0.10,
    bridge_every: int = 12,
    n_islands: int = 6,
    catalog: Catalog | None = None,
) -> Megacity:
    """Generate the megacity (see the module docstring). The same arguments give the same city.

    Parameters
    ----------
    seed
        Seed of every random choice.
    side_nodes, spacing_m
        The road lattice: intersections per side and their spacing (metres).
    streets_side, communities_side, grids_side
        Streets per side of the district, communities per side of a street, grids per side of a
        community.
    n_incidents
        Incidents to draw.
    removed_share, oneway_share, bridge_every, n_islands
        The lattice's irregularities (see the module docstring).
    catalog
        Matters for the incidents (default: :func:`gridgov.catalog.load_catalog`).

    Returns
    -------
    Megacity
        Nodes, links, areas, offices, units (the reference district's column formats), the
        incidents and a ``facts`` dict of sizes.
    """
    if side_nodes < 24:
        msg = f"side_nodes must be at least 24, got {side_nodes}"
        raise ValueError(msg)
    rng = np.random.default_rng(seed)
    metric_crs = get_settings().metric_crs
    to_metric = Transformer.from_crs("EPSG:4326", metric_crs, always_xy=True)
    to_wgs84 = Transformer.from_crs(metric_crs, "EPSG:4326", always_xy=True)
    ox, oy = to_metric.transform(*CENTRE)

    lat = _build_lattice(
        rng, (ox, oy), side_nodes, spacing_m, removed_share, oneway_share, bridge_every, n_islands
    )
    lon, latd = to_wgs84.transform(lat.x, lat.y)
    gdf_nodes = gpd.GeoDataFrame(
        {"node_id": np.arange(len(lon), dtype=np.int64), "in_district": True},
        geometry=shapely.points(lon, latd),
        crs="EPSG:4326",
    )
    gdf_links = _links_frame(lat, lon, latd)

    # The district reaches half a block beyond the outermost roads.
    half = (side_nodes - 1) * spacing_m / 2 + spacing_m / 2
    bounds = (ox - half, oy - half, ox + half, oy + half)
    gdf_areas, metric = _area_frames(
        rng, bounds, streets_side, communities_side, grids_side, to_wgs84
    )
    gdf_offices, gdf_units = _place_forces(rng, lat, gdf_areas, metric, streets_side, to_wgs84)

    catalog = catalog or load_catalog()
    matters = megacity_matters(catalog)
    district = gdf_areas.geometry.iloc[0]
    incidents = random_incidents(rng, district, matters, n_incidents)

    facts = {
        **lat.facts,
        "seed": seed,
        "nodes": len(gdf_nodes),
        "links": len(gdf_links),
        "links_by_class": gdf_links["road_class"].value_counts().sort_index().to_dict(),
        "oneway_links": int(gdf_links["oneway"].sum()),
        "area_km2": round((2 * half / 1000) ** 2, 1),
        "areas_by_level": gdf_areas["level"].value_counts().to_dict(),
        "units_by_kind": gdf_units["kind"].value_counts().sort_index().to_dict(),
        "units_by_mode": gdf_units["travel_mode"].value_counts().sort_index().to_dict(),
        "offices": len(gdf_offices),
        "matters": matters,
        "incidents": len(incidents),
    }
    return Megacity(
        gdf_nodes=gdf_nodes[[*NODE_COLUMNS, "geometry"]],
        gdf_links=gdf_links[[*ROAD_LINK_COLUMNS, "geometry"]],
        gdf_areas=gdf_areas,
        gdf_offices=gdf_offices,
        gdf_units=gdf_units,
        incidents=incidents,
        facts=facts,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--side-nodes", type=int, default=512)
    parser.add_argument("--streets-side", type=int, default=16)
    parser.add_argument("--incidents", type=int, default=10_000)
    parser.add_argument("--out", type=Path, help="write roads.gpkg, areas/units/... .parquet here")
    args = parser.parse_args(argv)
    t = time.perf_counter()
    city = generate_megacity(
        args.seed,
        side_nodes=args.side_nodes,
        streets_side=args.streets_side,
        n_incidents=args.incidents,
    )
    print(f"generated in {time.perf_counter() - t:.1f} s")
    for key, value in city.facts.items():
        print(f"  {key}: {value}")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        city.gdf_links.to_file(args.out / "roads.gpkg", layer="links", driver="GPKG")
        city.gdf_nodes.to_file(args.out / "roads.gpkg", layer="nodes", driver="GPKG")
        city.gdf_areas.to_parquet(args.out / "areas.parquet", index=False)
        city.gdf_offices.to_parquet(args.out / "offices.parquet", index=False)
        city.gdf_units.to_parquet(args.out / "units.parquet", index=False)
        city.incidents.to_parquet(args.out / "incidents.parquet", index=False)
        print(f"written to {args.out}")


if __name__ == "__main__":
    main()
