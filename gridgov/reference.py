"""The Jinniu (金牛区) reference district: real roads and names, generated polygons and units.

Build it with :func:`build_reference_district` (about a minute) and save it with
:func:`write_reference_district`; everything else reads the committed files with
:func:`read_reference_district`.

Progress: pass ``progress=callback`` to :func:`build_reference_district`; it is called as
``callback(stage: str, done: int, total: int)`` where ``stage`` is one of ``roads``, ``boundary``,
``streets``, ``communities``, ``grids``, ``micro-grids``, ``exact tiling``, ``done``, ``units``.
``done``/``total`` count work within the stage, so a CLI can show one bar per stage, e.g.
``lambda s, d, t: bars[s].update(completed=d, total=t)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import shapely
from pyproj import Transformer
from shapely.geometry import Point, Polygon

from gridgov.errors import DataFileError
from gridgov.model import OFFICE_COLUMNS, UNIT_COLUMNS, ForceKind, Level, TravelMode, UnitStatus
from gridgov.roads import read_link_table, select_with_margin
from gridgov.settings import get_settings
from gridgov.tessellate import (
    DEFAULT_GENERATED_COMMUNITIES,
    HierarchyPlan,
    ProgressCallback,
    generate_hierarchy,
    kmeans_centres,
    plan_from_admin_table,
    read_admin_table,
    sample_points,
    transform_anchors,
)

DISTRICT_CODE = "510106000000"
DISTRICT_NAME = "金牛区"
ROADS_FILE = "jinniu_roads.gpkg"
AREAS_FILE = "jinniu_areas.parquet"
OFFICES_FILE = "jinniu_offices.parquet"
UNITS_FILE = "jinniu_units.parquet"

#: Rough WGS84 locations of the real streets, used only to seed where each street grows.
STREET_ANCHORS: dict[str, tuple[float, float]] = {
    "西安路街道": (104.045, 30.680),
    "抚琴街道": (104.035, 30.690),
    "营门口街道": (104.020, 30.690),
    "茶店子街道": (104.005, 30.700),
    "金泉街道": (103.990, 30.715),
    "西华街道": (104.020, 30.720),
    "沙河源街道": (104.040, 30.730),
    "九里堤街道": (104.050, 30.705),
    "五块石街道": (104.070, 30.710),
    "荷花池街道": (104.075, 30.690),
    "驷马桥街道": (104.095, 30.700),
    "凤凰山街道": (104.075, 30.745),
    "天回镇街道": (104.100, 30.770),
}
#: Communities generated for a street the code table lists none for (驷马桥街道).
GENERATED_COMMUNITIES = DEFAULT_GENERATED_COMMUNITIES
#: Road network kept around the district so units near the border route correctly (metres).
ROAD_MARGIN_M = 1500.0
N_GRIDS = 1000
N_MICROGRIDS = 10000
N_FIRE_STATIONS = 4
#: ``position_source`` of a unit on a road link (or at most :data:`ROAD_EDGE_CLEARANCE_M` off one,
#: inside its grid, where the link is the grid's edge).
POSITION_ROAD = "road"
#: ``position_source`` of a grid worker whose grid no usable road reaches: its point_on_surface.
POSITION_GRID_INTERIOR = "grid_interior"
#: How far a grid worker stands inside their grid from a road that forms the grid's edge (metres).
ROAD_EDGE_CLEARANCE_M = 1.0
STREET_OFFICE_DEPARTMENT = "街道办事处"

#: Per street: kind → (department, number of units, travel mode). Fire stations are placed
#: separately (a few per district), and grid workers one per grid.
STREET_FORCES: dict[ForceKind, tuple[str, int, TravelMode]] = {
    ForceKind.JUDICIAL: ("司法局", 1, TravelMode.BIKE),
    ForceKind.MARKET: ("市场监管局", 2, TravelMode.DRIVE),
    ForceKind.ENFORCEMENT: ("综合行政执法局", 4, TravelMode.DRIVE),
    ForceKind.POLICE: ("公安分局", 5, TravelMode.DRIVE),
    ForceKind.HRSS: ("人社局", 1, TravelMode.BIKE),
    ForceKind.HEALTH: ("卫健局", 1, TravelMode.DRIVE),
    ForceKind.EMERGENCY: ("应急管理局", 2, TravelMode.DRIVE),
}
FIRE_DEPARTMENT = "消防救援大队"
FIRE_ENGINES = 2


@dataclass(frozen=True)
class ReferenceDistrict:
    """The reference district; every frame is in EPSG:4326."""

    gdf_nodes: gpd.GeoDataFrame
    gdf_links: gpd.GeoDataFrame
    gdf_areas: gpd.GeoDataFrame
    gdf_offices: gpd.GeoDataFrame
    gdf_units: gpd.GeoDataFrame


def reference_plan(admin: pd.DataFrame, to_metric: Transformer) -> HierarchyPlan:
    """The Jinniu plan: real streets and communities, generated ones where the table has none.

    Street anchors come from :data:`STREET_ANCHORS` (WGS84) and are returned in the metric CRS
    of ``to_metric``, as :func:`generate_hierarchy` expects.
    """
    table = admin.copy()
    anchors = [STREET_ANCHORS.get(str(name)) for name in table["name"]]
    is_street = (table["level"] == "street").to_numpy()
    table["lon"] = [a[0] if a and s else np.nan for a, s in zip(anchors, is_street, strict=True)]
    table["lat"] = [a[1] if a and s else np.nan for a, s in zip(anchors, is_street, strict=True)]
    plan = plan_from_admin_table(
        table, N_GRIDS, N_MICROGRIDS, generated_communities=GENERATED_COMMUNITIES
    )
    return transform_anchors(plan, to_metric.transform)


def district_boundary(gdf_nodes_metric: gpd.GeoDataFrame, inside: np.ndarray) -> Polygon:
    """A generated district outline: the union of the Voronoi cells of the district's road nodes.

    Cells are clipped to the district nodes' convex hull grown by 300 m (so border cells do not
    run off to infinity), small gaps closed with a 200 m closing, holes filled, and the outline
    simplified to 20 m.
    """
    points = gdf_nodes_metric.geometry.to_numpy()
    hull = shapely.convex_hull(shapely.multipoints(points[inside])).buffer(300.0)
    cells = shapely.get_parts(
        shapely.voronoi_polygons(shapely.multipoints(points), extend_to=hull, ordered=True)
    )
    region = shapely.intersection(shapely.union_all(cells[inside]), hull)
    region = region.buffer(200.0).buffer(-200.0)
    parts = [p for p in shapely.get_parts(region) if isinstance(p, Polygon)]
    outline = Polygon(max(parts, key=lambda p: p.area).exterior)
    simple = outline.simplify(20.0)
    return simple if isinstance(simple, Polygon) and simple.is_valid else outline


def _road_points(
    gdf_links_metric: gpd.GeoDataFrame, spacing_m: float = 50.0
) -> tuple[np.ndarray, np.ndarray]:
    """Candidate unit positions every ``spacing_m`` along usable links (no expressway)."""
    usable = gdf_links_metric[gdf_links_metric["speed_walk_kmh"] > 0]
    # A two-way road is two links over one line; keep it once so that no two offices drawn from
    # distinct candidates end up at the same spot.
    pair = np.sort(usable[["u", "v"]].to_numpy(), axis=1)
    usable = usable[~pd.DataFrame(pair).duplicated().to_numpy()]
    lines = shapely.line_merge(usable.geometry.to_numpy())
    xy, owner = [], []
    for i, line in enumerate(lines):
        n = max(int(line.length // spacing_m), 1)
        pts = shapely.line_interpolate_point(line, np.linspace(0, line.length, n + 1))
        xy.append(shapely.get_coordinates(pts))
        owner.append(np.full(n + 1, i))
    points = np.concatenate(xy)
    _, first = np.unique(np.round(points, 3), axis=0, return_index=True)
    keep = np.sort(first)
    return points[keep], np.concatenate(owner)[keep]


def _owning_area(points: np.ndarray, gdf: gpd.GeoDataFrame) -> np.ndarray:
    """Index (into ``gdf``) of the area covering each point; smallest code wins on edges."""
    geoms = gdf.geometry.to_numpy()
    tree = shapely.STRtree(geoms)
    pt_idx, area_idx = tree.query(shapely.points(points), predicate="covered_by")
    codes = gdf["code"].to_numpy()
    out = np.full(len(points), -1)
    best: dict[int, str] = {}
    for p, a in zip(pt_idx.tolist(), area_idx.tolist(), strict=True):
        if p not in best or codes[a] < best[p]:
            best[p] = codes[a]
            out[p] = a
    return out


def _place_units(
    areas_metric: gpd.GeoDataFrame,
    links_metric: gpd.GeoDataFrame,
    rng: np.random.Generator,
) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    streets = areas_metric[areas_metric["level"] == Level.STREET.value].reset_index(drop=True)
    grids = areas_metric[areas_metric["level"] == Level.GRID.value].reset_index(drop=True)
    xy, _ = _road_points(links_metric)
    street_of = _owning_area(xy, streets)
    # Interior points only, so an office is unambiguously in its street.
    depth = shapely.distance(
        shapely.points(xy), shapely.boundary(streets.geometry.to_numpy()[np.maximum(street_of, 0)])
    )
    offices: list[dict[str, object]] = []
    units: list[dict[str, object]] = []

    def add_office(oid: str, name: str, kind: ForceKind, dept: str, street: str, p: Point) -> None:
        offices.append(
            {
                "office_id": oid,
                "name": name,
                "kind": kind.value,
                "department": dept,
                "street_code": street,
                "generated": True,
                "geometry": p,
            }
        )

    def add_unit(
        uid: str,
        name: str,
        kind: ForceKind,
        oid: str,
        dept: str,
        street: str,
        mode: TravelMode,
        p: Point,
        grid_code: str | None = None,
        position_source: str = POSITION_ROAD,
    ) -> None:
        units.append(
            {
                "unit_id": uid,
                "name": name,
                "kind": kind.value,
                "office_id": oid,
                "department": dept,
                "street_code": street,
                "travel_mode": mode.value,
                "status": UnitStatus.AVAILABLE.value,
                "on_duty": True,
                "grid_code": grid_code,
                "generated": True,
                "position_source": position_source,
                "geometry": p,
            }
        )

    for si, street in streets.iterrows():
        code, short = str(street["code"]), str(street["name"]).removesuffix("街道")
        mine = np.flatnonzero((street_of == si) & (depth > 20.0))
        if len(mine) == 0:
            mine = np.flatnonzero(street_of == si)
        centre = np.asarray(street.geometry.representative_point().coords[0])
        near = mine[np.argsort(np.hypot(*(xy[mine] - centre).T), kind="stable")]
        pool = near[: max(len(near) // 3, len(STREET_FORCES) + 1)]
        spots = rng.choice(pool, size=min(len(pool), len(STREET_FORCES) + 1), replace=False)
        gw_office = f"{code}-grid_worker"
        add_office(
            gw_office,
            f"{short}网格化服务管理中心",
            ForceKind.GRID_WORKER,
            STREET_OFFICE_DEPARTMENT,
            code,
            Point(xy[spots[0]]),
        )
        for k, (kind, (dept, count, mode)) in enumerate(STREET_FORCES.items(), start=1):
            oid = f"{code}-{kind.value}"
            office_pt = Point(xy[spots[k % len(spots)]])
            add_office(oid, f"{short}{kind.zh}", kind, dept, code, office_pt)
            for i in range(1, count + 1):
                # Police patrols are out on the street; everyone else waits at the office.
                p = Point(xy[rng.choice(mine)]) if kind is ForceKind.POLICE else office_pt
                add_unit(f"{oid}-{i:02d}", f"{short}{kind.zh}{i}号", kind, oid, dept, code, mode, p)
    fire_pts = _fire_station_points(areas_metric, xy, street_of, depth, rng)
    for p_idx in fire_pts:
        street = streets.iloc[int(street_of[p_idx])]
        code, short = str(street["code"]), str(street["name"]).removesuffix("街道")
        oid = f"{code}-fire"
        p = Point(xy[p_idx])
        add_office(oid, f"{short}{ForceKind.FIRE.zh}", ForceKind.FIRE, FIRE_DEPARTMENT, code, p)
        for i in range(1, FIRE_ENGINES + 1):
            add_unit(
                f"{oid}-{i:02d}",
                f"{short}消防车{i}号",
                ForceKind.FIRE,
                oid,
                FIRE_DEPARTMENT,
                code,
                TravelMode.DRIVE,
                p,
            )
    # Grid workers stand inside their own grid (so inside the street commanding them).
    worker_pts, worker_source = grid_worker_positions(grids, links_metric)
    modes = rng.random(len(grids)) < 0.6
    for gi, grid in grids.iterrows():
        gcode = str(grid["code"])
        scode = gcode[:9] + "000"
        add_unit(
            f"{gcode}-grid_worker-01",
            f"{grid['name']}网格员",
            ForceKind.GRID_WORKER,
            f"{scode}-grid_worker",
            STREET_OFFICE_DEPARTMENT,
            scode,
            TravelMode.BIKE if modes[gi] else TravelMode.WALK,
            worker_pts[gi],
            gcode,
            worker_source[gi],
        )
    return offices, units


def grid_worker_positions(
    gdf_grids_metric: gpd.GeoDataFrame, gdf_links_metric: gpd.GeoDataFrame
) -> tuple[np.ndarray, np.ndarray]:
    """Where each grid's worker stands: inside the grid, on a road where one reaches it.

    Parameters
    ----------
    gdf_grids_metric
        Grid polygons (metric CRS).
    gdf_links_metric
        Road links (metric CRS) with ``speed_walk_kmh``; links closed to walking are ignored.

    Returns
    -------
    tuple
        ``(points, sources)`` aligned with the grids: shapely Points and
        :data:`POSITION_ROAD` / :data:`POSITION_GRID_INTERIOR`. Where a usable link runs through
        the grid or along its edge, the point is the link point closest to the grid's
        ``point_on_surface``, moved :data:`ROAD_EDGE_CLEARANCE_M` into the grid when the link is
        the grid's edge (a point on a shared edge would belong to the neighbour with the smaller
        code). Elsewhere it is the grid's ``point_on_surface``; dispatch adds the access leg to
        the network at the unit's own speed.
    """
    grids = gdf_grids_metric.geometry.to_numpy()
    usable = gdf_links_metric[gdf_links_metric["speed_walk_kmh"] > 0].geometry.to_numpy()
    reps = shapely.point_on_surface(grids)
    inner = shapely.buffer(grids, -ROAD_EDGE_CLEARANCE_M)
    near = shapely.buffer(grids, ROAD_EDGE_CLEARANCE_M)
    tree = shapely.STRtree(usable)
    grid_idx, link_idx = tree.query(near, predicate="intersects")
    points = reps.copy()
    sources = np.full(len(grids), POSITION_GRID_INTERIOR, dtype=object)
    for g in np.unique(grid_idx):
        if shapely.is_empty(inner[g]):
            continue
        reach = shapely.intersection(shapely.union_all(usable[link_idx[grid_idx == g]]), near[g])
        if shapely.is_empty(reach) or shapely.length(reach) == 0:
            continue
        on_road = shapely.get_point(shapely.shortest_line(reach, reps[g]), 0)
        if not shapely.contains_properly(inner[g], on_road):
            on_road = shapely.get_point(shapely.shortest_line(inner[g], on_road), 0)
        points[g] = on_road
        sources[g] = POSITION_ROAD
    return points, sources


def _fire_station_points(
    areas_metric: gpd.GeoDataFrame,
    xy: np.ndarray,
    street_of: np.ndarray,
    depth: np.ndarray,
    rng: np.random.Generator,
) -> list[int]:
    """Road points for the fire stations: near k-means centres of the district, one per street."""
    district = areas_metric[areas_metric["level"] == Level.DISTRICT.value].geometry.iloc[0]
    centres = kmeans_centres(sample_points(district, 2000, rng), N_FIRE_STATIONS, rng)
    chosen: list[int] = []
    used: set[int] = set()
    ok = np.flatnonzero((street_of >= 0) & (depth > 20.0))
    for c in centres[np.lexsort((centres[:, 0], -centres[:, 1]))]:
        order = ok[np.argsort(np.hypot(*(xy[ok] - c).T), kind="stable")]
        for idx in order:
            if int(street_of[idx]) not in used:
                chosen.append(int(idx))
                used.add(int(street_of[idx]))
                break
    return chosen


def build_reference_district(
    data_dir: Path, seed: int, progress: ProgressCallback | None = None
) -> ReferenceDistrict:
    """Build the reference district from the real Chengdu roads and Jinniu code table.

    Parameters
    ----------
    data_dir
        Folder holding ``chengdu/roads_nodes.csv``, ``chengdu/roads_links.csv`` and
        ``chengdu/jinniu_admin_units.csv``.
    seed
        Seed of every random choice; the same seed gives the same district.
    progress
        Optional ``progress(stage, done, total)`` callback (see the module docstring).

    Returns
    -------
    ReferenceDistrict
        Nodes, links, areas, offices and units, all in EPSG:4326.
    """
    report = progress or (lambda stage, done, total: None)
    settings = get_settings()
    metric = settings.metric_crs
    report("roads", 0, 1)
    gdf_nodes, gdf_links = read_link_table(
        data_dir / "chengdu" / "roads_nodes.csv", data_dir / "chengdu" / "roads_links.csv"
    )
    admin = read_admin_table(data_dir / "chengdu" / "jinniu_admin_units.csv")
    report("roads", 1, 1)
    report("boundary", 0, 1)
    nodes_m = gdf_nodes.to_crs(metric)
    boundary = district_boundary(nodes_m, gdf_nodes["in_district"].to_numpy(bool))
    to_metric = Transformer.from_crs("EPSG:4326", metric, always_xy=True)
    plan = reference_plan(admin, to_metric)
    report("boundary", 1, 1)
    links_m = gdf_links.to_crs(metric)
    undirected = links_m[links_m["u"] < links_m["v"]]
    one_way = ~links_m.set_index(["v", "u"]).index.isin(links_m.set_index(["u", "v"]).index)
    roads = pd.concat([undirected.geometry, links_m[one_way].geometry])
    areas_m = generate_hierarchy(boundary, roads, plan, seed=seed, crs=metric, progress=report)

    inside = shapely.covers(boundary, nodes_m.geometry.to_numpy())
    nodes_kept, links_kept = select_with_margin(gdf_nodes, gdf_links, inside, ROAD_MARGIN_M)
    nodes_kept["in_district"] = inside[nodes_kept.index.to_numpy()]
    report("units", 0, 1)
    rng = np.random.default_rng(seed + 1)
    offices, units = _place_units(areas_m, links_kept.to_crs(metric), rng)
    report("units", 1, 1)
    gdf_offices = gpd.GeoDataFrame(offices, geometry="geometry", crs=metric).to_crs("EPSG:4326")
    gdf_units = gpd.GeoDataFrame(units, geometry="geometry", crs=metric).to_crs("EPSG:4326")
    return ReferenceDistrict(
        gdf_nodes=nodes_kept.reset_index(drop=True),
        gdf_links=links_kept.reset_index(drop=True),
        gdf_areas=areas_m.to_crs("EPSG:4326"),
        gdf_offices=gdf_offices[[*OFFICE_COLUMNS, "geometry"]],
        gdf_units=gdf_units[[*UNIT_COLUMNS, "position_source", "geometry"]],
    )


def write_reference_district(ref: ReferenceDistrict, out_dir: Path) -> list[Path]:
    """Write the district's files into ``out_dir``; returns the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    roads = out_dir / ROADS_FILE
    roads.unlink(missing_ok=True)
    # Links first: a reader that takes a file's first layer gets the road lines.
    ref.gdf_links.to_file(roads, layer="links", driver="GPKG")
    ref.gdf_nodes.to_file(roads, layer="nodes", driver="GPKG")
    paths = [roads]
    for frame, name in (
        (ref.gdf_areas, AREAS_FILE),
        (ref.gdf_offices, OFFICES_FILE),
        (ref.gdf_units, UNITS_FILE),
    ):
        frame.to_parquet(out_dir / name, index=False, compression="zstd")
        paths.append(out_dir / name)
    return paths


def read_reference_district(data_dir: Path | None = None) -> ReferenceDistrict:
    """Read the committed reference district (no rebuild)."""
    data_dir = data_dir or get_settings().data_dir
    missing = [
        n for n in (ROADS_FILE, AREAS_FILE, OFFICES_FILE, UNITS_FILE) if not (data_dir / n).exists()
    ]
    if missing:
        msg = f"{data_dir}: missing {', '.join(missing)}; run `gridgov build-reference`"
        raise DataFileError(msg)
    layers = {name for name, _ in pyogrio.list_layers(data_dir / ROADS_FILE)}
    if not {"nodes", "links"} <= layers:
        msg = f"{data_dir / ROADS_FILE}: needs layers 'nodes' and 'links', has {sorted(layers)}"
        raise DataFileError(msg)
    return ReferenceDistrict(
        gdf_nodes=gpd.read_file(data_dir / ROADS_FILE, layer="nodes"),
        gdf_links=gpd.read_file(data_dir / ROADS_FILE, layer="links"),
        gdf_areas=gpd.read_parquet(data_dir / AREAS_FILE),
        gdf_offices=gpd.read_parquet(data_dir / OFFICES_FILE),
        gdf_units=gpd.read_parquet(data_dir / UNITS_FILE),
    )
