"""The routing layer of gridgov.network, checked against an independent networkx computation."""

from __future__ import annotations

import json
import math
import pickle
from concurrent.futures import ThreadPoolExecutor

import geopandas as gpd
import networkx as nx
import numpy as np
import pandas as pd
import pytest
import shapely
from pyproj import Geod

from gridgov import modegraph, network
from gridgov.errors import DataFileError, InputError, NotFoundError
from gridgov.model import TravelMode
from gridgov.network import RoadNetwork, build_network, read_network
from gridgov.reference import read_reference_district
from gridgov.roads import SPEEDS_KMH
from gridgov.settings import get_settings
from gridgov.straight_line import StraightLine
from gridgov.travel_model import Snapped

MODES = [m.value for m in TravelMode]
GEOD = Geod(ellps="WGS84")


@pytest.fixture(scope="module")
def ref():
    return read_reference_district()


@pytest.fixture(scope="module")
def net(ref) -> RoadNetwork:
    return build_network(ref.gdf_nodes, ref.gdf_links)


@pytest.fixture(scope="module")
def single_join_net(ref) -> RoadNetwork:
    """The network with ``snap_tolerance_m = 0``: each point joins its nearest road only.

    The networkx model below inserts a point into one road (and its exact twin), as gridgov did
    before points joined every road within the tolerance; with the tolerance at 0 the engine must
    still agree with it exactly. Joining every road within the tolerance is checked against an
    independent model in test_dispatch_bruteforce.py and by hand in test_snapping.py.
    """
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRIDGOV_SNAP_TOLERANCE_M", "0")
        get_settings.cache_clear()
        try:
            return build_network(ref.gdf_nodes, ref.gdf_links)
        finally:
            mp.undo()
            get_settings.cache_clear()


def _random_points(ref, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    inside = ref.gdf_nodes[ref.gdf_nodes["in_district"]]
    x0, y0, x1, y1 = inside.total_bounds
    rng = np.random.default_rng(seed)
    return rng.uniform(x0, x1, n), rng.uniform(y0, y1, n)


def _nx_graph(gdf_links: gpd.GeoDataFrame, mode: str) -> nx.DiGraph:
    """The mode's road graph, built straight from the links (seconds per link)."""
    G = nx.DiGraph()
    links = gdf_links[gdf_links[f"speed_{mode}_kmh"] > 0]
    weights = links["length_m"] / (links[f"speed_{mode}_kmh"] / 3.6)
    for u, v, w in zip(links["u"], links["v"], weights, strict=True):
        if not G.has_edge(u, v) or G[u][v]["weight"] > w:
            G.add_edge(u, v, weight=w)
    if mode == "walk":
        # Pedestrians may walk a one-way link backwards.
        for u, v, w in zip(links["u"], links["v"], weights, strict=True):
            if not G.has_edge(v, u):
                G.add_edge(v, u, weight=w)
    return G


def _nx_times(
    G: nx.DiGraph, net: RoadNetwork, sources: Snapped, target: Snapped, mode: str
) -> np.ndarray:
    """Seconds from each source to the target: points inserted into a copy of G by splitting."""
    edges = net.edges(mode)
    access_ms = get_settings().access_speed_kmh[mode] / 3.6
    H = G.copy()
    tu, tv = (int(x) for x in edges.loc[int(target.edge[0]), ["u", "v"]])
    t = float(target.frac[0])
    acc_t = float(target.access_m[0]) / access_ms
    H.add_edge(tu, "T", weight=t * G[tu][tv]["weight"] + acc_t)
    if G.has_edge(tv, tu):
        H.add_edge(tv, "T", weight=(1 - t) * G[tv][tu]["weight"] + acc_t)
    elif t == 1.0:
        H.add_edge(tv, "T", weight=acc_t)  # at the end node, whatever the one-way rule
    for i in range(len(sources)):
        su, sv = (int(x) for x in edges.loc[int(sources.edge[i]), ["u", "v"]])
        s = float(sources.frac[i])
        acc_s = float(sources.access_m[i]) / access_ms
        p = ("P", i)
        H.add_edge(p, sv, weight=acc_s + (1 - s) * G[su][sv]["weight"])
        if G.has_edge(sv, su):
            H.add_edge(p, su, weight=acc_s + s * G[sv][su]["weight"])
        elif s == 0.0:
            H.add_edge(p, su, weight=acc_s)  # at the start node, whatever the one-way rule
        # Same road as the target: the direct way along it.
        if (su, sv) == (tv, tu):
            su, sv, s = tu, tv, 1 - s
        if (su, sv) == (tu, tv):
            direct = []
            if s <= t:
                direct.append((t - s) * G[tu][tv]["weight"])
            if s >= t and G.has_edge(tv, tu):
                direct.append((s - t) * G[tv][tu]["weight"])
            if direct:
                H.add_edge(p, "T", weight=acc_s + min(direct) + acc_t)
    dist = nx.single_source_dijkstra_path_length(H.reverse(copy=False), "T")
    return np.array([dist.get(("P", i), math.inf) for i in range(len(sources))])


@pytest.mark.parametrize("mode", MODES)
def test_times_match_networkx(ref, single_join_net: RoadNetwork, mode: str) -> None:
    net = single_join_net
    G = _nx_graph(ref.gdf_links, mode)
    lon, lat = _random_points(ref, 420, seed=hash(mode) % 1000)
    points = net.snap(lon, lat, mode)
    sources = points.take(np.arange(20, 420))
    checked = 0
    for k in range(20):
        target = points.take(k)
        chunk = sources.take(np.arange(20 * k, 20 * k + 20))
        got = net.field_to(target).times_from(chunk)
        want = _nx_times(G, net, chunk, target, mode)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
        checked += len(chunk)
    assert checked == 400


@pytest.mark.parametrize("mode", MODES)
def test_limit_is_exact_below_and_inf_above(ref, net: RoadNetwork, mode: str) -> None:
    lon, lat = _random_points(ref, 200, seed=7)
    points = net.snap(lon, lat, mode)
    for k in range(5):
        target = points.take(k)
        full = net.field_to(target).times_from(points)
        for limit in (0.0, float(np.median(full)), float(np.quantile(full, 0.1)), math.inf):
            field = net.field_to(target, limit)
            assert field.limit_s == limit
            got = field.times_from(points)
            below = full <= limit
            np.testing.assert_array_equal(got[below], full[below])
            assert np.isinf(got[~below]).all()
            assert not (np.isfinite(got) & (got > limit)).any()


def test_limit_must_be_non_negative(net: RoadNetwork) -> None:
    target = net.snap(104.04, 30.70, "drive")
    with pytest.raises(InputError):
        net.field_to(target, -1.0)
    with pytest.raises(InputError):
        net.field_to(target, math.nan)


def _metric(net: RoadNetwork, gdf: gpd.GeoDataFrame) -> np.ndarray:
    return gdf.geometry.to_crs(net.metric_crs).to_numpy()


@pytest.mark.parametrize("mode", MODES)
def test_snap_is_nearest_kept_road(ref, net: RoadNetwork, mode: str) -> None:
    lon, lat = _random_points(ref, 150, seed=3)
    snapped = net.snap(lon, lat, mode)
    kept = net.gdf_links[net.gdf_links[f"kept_{mode}"]]
    roads = _metric(net, kept)
    pts = gpd.GeoSeries(gpd.points_from_xy(lon, lat), crs="EPSG:4326").to_crs(net.metric_crs)
    brute = shapely.distance(pts.to_numpy()[:, None], roads[None, :]).min(axis=1)
    np.testing.assert_allclose(snapped.access_m, brute, atol=1e-6)
    # The snapped position lies on the snapped edge's link at access_m from the point.
    edges = net.edges(mode)
    link_geom = dict(zip(net.gdf_links["link_id"], _metric(net, net.gdf_links), strict=True))
    for i in range(len(snapped)):
        row = edges.loc[int(snapped.edge[i])]
        line = link_geom[int(row["link_id"])]
        frac = float(snapped.frac[i])
        at = shapely.line_interpolate_point(
            line, 1 - frac if row["reversed"] else frac, normalized=True
        )
        assert shapely.distance(at, pts.iloc[i]) == pytest.approx(snapped.access_m[i], abs=1e-6)
    np.testing.assert_array_equal(snapped.far, snapped.access_m > get_settings().max_snap_m)
    assert ((snapped.frac >= 0) & (snapped.frac <= 1)).all()


def test_snap_flags_far_points_and_checks_input(net: RoadNetwork) -> None:
    x0, y0, x1, y1 = net.gdf_nodes.total_bounds
    far = net.snap([x1 + 0.05, x0 - 0.5], [y1, y0], "drive")
    assert far.far.all()
    assert (far.access_m > get_settings().max_snap_m).all()
    node = net.gdf_nodes.geometry.iloc[0]
    on_road = net.snap(node.x, node.y, "walk")
    assert len(on_road) == 1
    assert not on_road.far[0]
    assert on_road.access_m[0] < 1e-6
    with pytest.raises(InputError, match="non-finite"):
        net.snap([104.0, math.nan], [30.7, 30.7], "drive")
    with pytest.raises(InputError, match="travel mode"):
        net.snap(104.0, 30.7, "boat")
    assert len(net.snap([], [], "bike")) == 0


def test_snapped_take(net: RoadNetwork) -> None:
    pts = net.snap([104.01, 104.02, 104.03], [30.70, 30.71, 30.72], "bike")
    one = pts.take(1)
    assert len(one) == 1
    assert one.edge[0] == pts.edge[1]
    two = pts.take([2, 0])
    assert list(two.lon) == [104.03, 104.01]
    assert two.mode is TravelMode.BIKE


def _points_on_link(link: pd.Series, fracs: list[float]) -> tuple[list[float], list[float]]:
    pts = shapely.line_interpolate_point(link.geometry, fracs, normalized=True)
    return [p.x for p in pts], [p.y for p in pts]


def test_walking_ignores_one_way_and_driving_does_not(net: RoadNetwork) -> None:
    links = net.gdf_links
    oneway = links[links["oneway"] & links["kept_drive"]].iloc[0]
    lon, lat = _points_on_link(oneway, [0.3, 0.7])
    for mode, speed in (("drive", oneway["speed_drive_kmh"]), ("walk", oneway["speed_walk_kmh"])):
        p = net.snap(lon, lat, mode)
        assert p.access_m.max() < 0.01
        assert p.edge[0] == p.edge[1]
        along = (p.frac[1] - p.frac[0]) * oneway["length_m"] / (speed / 3.6)
        access = p.access_m.sum() / (get_settings().access_speed_kmh[mode] / 3.6)
        forward = float(net.field_to(p.take(1)).times_from(p.take(0))[0])
        backward = float(net.field_to(p.take(0)).times_from(p.take(1))[0])
        assert forward == pytest.approx(along + access, abs=1e-6)
        if mode == "walk":
            assert backward == pytest.approx(along + access, abs=1e-6)
        else:
            assert backward > along + 1.0  # must drive round the block
    # Every kept one-way link gets a walking edge against it.
    walk_back = net.edges("walk")["reversed"].sum()
    assert walk_back == (net.gdf_links["oneway"] & net.gdf_links["kept_walk"]).sum() > 0


def test_points_at_the_ends_of_a_one_way_edge_are_at_its_nodes(ref, net: RoadNetwork) -> None:
    G = _nx_graph(ref.gdf_links, "drive")
    edges = net.edges("drive")
    one = edges[edges["reverse_edge"] < 0].index[:5]
    assert len(one) == 5
    lon, lat = _random_points(ref, 10, seed=19)
    others = net.snap(lon, lat, "drive")

    def at(e: int, frac: float) -> Snapped:
        return Snapped(
            TravelMode.DRIVE,
            np.array([0.0]),
            np.array([0.0]),
            np.array([e]),
            np.array([frac]),
            np.zeros(1),
            np.zeros(1, dtype=bool),
        )

    for e in one:
        u, v = int(edges.loc[e, "u"]), int(edges.loc[e, "v"])
        start, end = at(e, 0.0), at(e, 1.0)
        # From the start node: exactly the node's times, not "drive the whole edge first".
        for k in range(len(others)):
            target = others.take(k)
            want = _nx_times(G, net, start, target, "drive")[0]
            assert net.field_to(target).times_from(start)[0] == pytest.approx(want, abs=1e-6)
            via_node = _nx_times(G, net, end, target, "drive")[0]
            assert net.field_to(target).times_from(end)[0] == pytest.approx(via_node, abs=1e-6)
        # To the end node: reached by arriving at the node from any side.
        got = net.field_to(end).times_from(others)
        np.testing.assert_allclose(got, _nx_times(G, net, others, end, "drive"), atol=1e-6)
        assert net.field_to(end).times_from(start)[0] == pytest.approx(
            float(edges.loc[e, "time_s"]), abs=1e-6
        )
        # Routes through such points have the field's times and run through the nodes.
        for k in range(3):
            back = net.route(end, others.take(k))
            assert back.time_s == net.field_to(others.take(k)).times_from(end)[0]
            into = net.route(others.take(k), start)
            assert into.time_s == net.field_to(start).times_from(others.take(k))[0]
            assert into.node_ids[-1] == u or into.node_ids == ()
            assert back.node_ids[0] == v or back.node_ids == ()


def test_same_two_way_road_is_direct_both_ways(net: RoadNetwork) -> None:
    links = net.gdf_links
    road = links[~links["oneway"] & links["kept_drive"]].iloc[5]
    lon, lat = _points_on_link(road, [0.2, 0.6])
    p = net.snap(lon, lat, "drive")
    assert p.edge[0] == p.edge[1]
    access = p.access_m.sum() / (get_settings().access_speed_kmh["drive"] / 3.6)
    along = (p.frac[1] - p.frac[0]) * road["length_m"] / (road["speed_drive_kmh"] / 3.6)
    for a, b in ((0, 1), (1, 0)):
        got = float(net.field_to(p.take(b)).times_from(p.take(a))[0])
        assert got == pytest.approx(along + access, abs=1e-6)
        route = net.route(p.take(a), p.take(b))
        assert route.time_s == got
        assert route.node_ids == ()


def test_closed_roads_are_not_used(ref) -> None:
    speeds = {
        "arterial": dict(SPEEDS_KMH["arterial"]),
        "urban_expressway": {"drive": 45.0, "bike": 0.0, "walk": 0.0},
    }
    closed = build_network(ref.gdf_nodes, ref.gdf_links, speeds_kmh=speeds)
    express = set(ref.gdf_links.loc[ref.gdf_links["road_class"] == "urban_expressway", "link_id"])
    assert express
    assert express <= set(closed.edges("drive")["link_id"])
    for mode in ("bike", "walk"):
        assert not express & set(closed.edges(mode)["link_id"])
        assert not closed.gdf_links.loc[
            closed.gdf_links["link_id"].isin(express), f"kept_{mode}"
        ].any()
        assert closed.describe()["modes"][mode]["closed_links"] == len(express)
    # A point on the expressway snaps onto it when driving, elsewhere when walking.
    road = ref.gdf_links[ref.gdf_links["road_class"] == "urban_expressway"].iloc[0]
    lon, lat = _points_on_link(road, [0.5])
    assert closed.snap(lon, lat, "drive").access_m[0] < 0.01
    walk = closed.snap(lon, lat, "walk")
    assert int(closed.edges("walk").loc[int(walk.edge[0]), "link_id"]) not in express


def test_speeds_from_road_class_when_columns_are_missing(ref, net: RoadNetwork) -> None:
    bare = ref.gdf_links.drop(columns=[f"speed_{m}_kmh" for m in MODES])
    again = build_network(ref.gdf_nodes, bare)
    for mode in MODES:
        np.testing.assert_array_equal(again.edges(mode)["time_s"], net.edges(mode)["time_s"])


def test_island_is_dropped_and_never_snapped(ref) -> None:
    base = build_network(ref.gdf_nodes, ref.gdf_links)
    _, y0, x1, y1 = ref.gdf_nodes.total_bounds
    # An island of two nodes 0.01° east of the network (about 1 km), 150 m long.
    ix, iy = x1 + 0.01, (y0 + y1) / 2
    nodes = pd.concat(
        [
            ref.gdf_nodes,
            gpd.GeoDataFrame(
                {"node_id": [900001, 900002], "in_district": False},
                geometry=gpd.points_from_xy([ix, ix], [iy, iy + 0.0015]),
                crs="EPSG:4326",
            ),
        ],
        ignore_index=True,
    )
    line = shapely.LineString([(ix, iy), (ix, iy + 0.0015)])
    extra = ref.gdf_links.iloc[:2].copy()
    extra["link_id"] = [900001, 900002]
    extra["u"], extra["v"] = [900001, 900002], [900002, 900001]
    extra["oneway"] = False
    extra = extra.set_geometry([line, line.reverse()], crs="EPSG:4326")
    links = pd.concat([ref.gdf_links, extra], ignore_index=True)
    island = build_network(nodes, links)
    for mode in MODES:
        assert island.dropped[mode]["nodes"] == base.dropped[mode]["nodes"] + 2
        assert island.dropped[mode]["links"] == base.dropped[mode]["links"] + 2
        assert not island.gdf_links.loc[island.gdf_links["link_id"] >= 900001, f"kept_{mode}"].any()
        p = island.snap(ix + 0.0001, iy + 0.0007, mode)
        assert int(island.edges(mode).loc[int(p.edge[0]), "link_id"]) < 900001
        assert p.access_m[0] > 500  # the island is ~10 m away, the main roads much farther
        same = base.snap(ix + 0.0001, iy + 0.0007, mode)
        assert p.access_m[0] == pytest.approx(same.access_m[0])


@pytest.mark.parametrize("mode", MODES)
def test_route_matches_field_and_draws_the_way(
    ref, single_join_net: RoadNetwork, mode: str
) -> None:
    net = single_join_net
    lon, lat = _random_points(ref, 40, seed=11)
    points = net.snap(lon, lat, mode)
    edges = net.edges(mode)
    access_ms = get_settings().access_speed_kmh[mode] / 3.6
    fastest = edges.sort_values("time_s").drop_duplicates(["u", "v"]).set_index(["u", "v"])
    for k in range(20):
        source, target = points.take(k), points.take(20 + k)
        route = net.route(source, target)
        assert route.mode.value == mode
        assert route.time_s == net.field_to(target).times_from(source)[0]
        coords = np.asarray(route.geometry.coords)
        assert tuple(coords[0]) == (source.lon[0], source.lat[0])
        assert tuple(coords[-1]) == (target.lon[0], target.lat[0])
        geodesic = GEOD.geometry_length(route.geometry)
        assert geodesic == pytest.approx(route.length_m, rel=5e-3)
        # The node path uses real edges and adds up to the time.
        hops = list(zip(route.node_ids[:-1], route.node_ids[1:], strict=True))
        road_s = sum(float(fastest.loc[(a, b), "time_s"]) for a, b in hops)
        road_m = sum(float(fastest.loc[(a, b), "length_m"]) for a, b in hops)
        assert road_s <= route.time_s
        if route.node_ids:
            first = edges.loc[int(source.edge[0])]
            assert route.node_ids[0] in (first["u"], first["v"])
            last = edges.loc[int(target.edge[0])]
            assert route.node_ids[-1] in (last["u"], last["v"])
        access = (source.access_m[0] + target.access_m[0]) / access_ms
        assert route.time_s >= access + road_s - 1e-6
        assert route.length_m >= road_m - 1e-6


def test_route_to_itself(net: RoadNetwork) -> None:
    p = net.snap(104.03, 30.70, "drive")
    route = net.route(p, p)
    assert route.time_s == pytest.approx(2 * p.access_m[0] / (10 / 3.6))
    assert route.node_ids == ()


def test_route_and_field_check_their_input(net: RoadNetwork) -> None:
    drive = net.snap([104.03, 104.04], [30.70, 30.71], "drive")
    walk = net.snap(104.03, 30.70, "walk")
    with pytest.raises(InputError):
        net.route(drive, walk)
    with pytest.raises(InputError):
        net.route(drive.take(0), walk)
    with pytest.raises(InputError):
        net.field_to(drive)
    with pytest.raises(InputError):
        net.field_to(walk).times_from(drive)
    outsider = StraightLine().snap(104.03, 30.70, "drive")
    with pytest.raises(InputError, match="not snapped"):
        net.field_to(outsider)


@pytest.mark.parametrize("mode", MODES)
def test_lower_bound_is_admissible(ref, net: RoadNetwork, mode: str) -> None:
    lon, lat = _random_points(ref, 330, seed=5)
    points = net.snap(lon, lat, mode)
    sources = points.take(np.arange(30, 330))
    tight = []
    for k in range(30):
        target = points.take(k)
        exact = net.field_to(target).times_from(sources)
        bound = net.lower_bound_s(sources, target)
        assert (bound <= exact).all()
        assert (bound > 0).all()
        tight.append(np.median(bound / exact))
    assert np.median(tight) > 0.3  # useful, not just admissible


def test_describe_is_json(net: RoadNetwork) -> None:
    info = net.describe()
    json.dumps(info)
    assert info["kind"] == "network"
    assert set(info["modes"]) == set(MODES)
    for mode in MODES:
        assert info["modes"][mode]["nodes"] > 600
        assert info["modes"][mode]["dropped_nodes"] == net.dropped[mode]["nodes"]
    assert info["speeds_kmh"]["arterial"]["drive"] == SPEEDS_KMH["arterial"]["drive"]
    assert net.modes == tuple(TravelMode)


def test_concurrent_searches_agree(ref, net: RoadNetwork) -> None:
    lon, lat = _random_points(ref, 60, seed=13)
    points = net.snap(lon, lat, "drive")

    def times(k: int) -> np.ndarray:
        return net.field_to(points.take(k)).times_from(points)

    sequential = [times(k) for k in range(60)]
    with ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(times, range(60)))
    for a, b in zip(sequential, parallel, strict=True):
        np.testing.assert_array_equal(a, b)


def test_network_survives_pickling(ref, net: RoadNetwork) -> None:
    lon, lat = _random_points(ref, 30, seed=17)
    copy = pickle.loads(pickle.dumps(net))
    for mode in MODES:
        a, b = net.snap(lon, lat, mode), copy.snap(lon, lat, mode)
        np.testing.assert_array_equal(a.edge, b.edge)
        np.testing.assert_array_equal(
            net.field_to(a.take(0)).times_from(a), copy.field_to(b.take(0)).times_from(b)
        )


def test_straight_line_formula() -> None:
    model = StraightLine()
    settings = get_settings()
    lon = np.array([104.00, 104.02, 104.05])
    lat = np.array([30.70, 30.71, 30.69])
    for mode in MODES:
        pts = model.snap(lon, lat, mode)
        assert (pts.edge == -1).all()
        assert (pts.access_m == 0).all()
        assert not pts.far.any()
        target = pts.take(0)
        _, _, metres = GEOD.inv(lon, lat, np.full(3, lon[0]), np.full(3, lat[0]))
        want = metres * settings.detour_factor / (SPEEDS_KMH["arterial"][mode] / 3.6)
        np.testing.assert_allclose(model.field_to(target).times_from(pts), want, rtol=1e-12)
        limited = model.field_to(target, want[1]).times_from(pts)
        assert limited[1] == pytest.approx(want[1])
        assert math.isinf(limited[2]) == (want[2] > want[1])
        np.testing.assert_allclose(model.lower_bound_s(pts, target), want, rtol=1e-12)
        route = model.route(pts.take(2), target)
        assert route.time_s == pytest.approx(want[2])
        assert route.length_m == pytest.approx(metres[2] * settings.detour_factor)
        assert list(route.geometry.coords) == [(lon[2], lat[2]), (lon[0], lat[0])]
        assert route.node_ids == ()
    assert model.kind == "straight_line"
    with pytest.raises(InputError, match="non-finite"):
        model.snap([math.inf], [30.0], "drive")
    json.dumps(model.describe())
    assert StraightLine(detour_factor=2.0).field_to(target).times_from(pts)[1] == pytest.approx(
        want[1] / settings.detour_factor * 2.0
    )


def test_build_network_lists_every_problem(ref) -> None:
    links = ref.gdf_links.drop(columns=["length_m"])
    with pytest.raises(InputError, match="length_m"):
        build_network(ref.gdf_nodes, links)
    bad = ref.gdf_links.copy()
    bad.loc[0, "u"] = 123456789
    bad.loc[1, "length_m"] = -5.0
    with pytest.raises(InputError) as info:
        build_network(ref.gdf_nodes, bad)
    assert "unknown node" in str(info.value)
    assert "negative length_m" in str(info.value)
    bare = ref.gdf_links.drop(columns=[f"speed_{m}_kmh" for m in MODES] + ["road_class"])
    with pytest.raises(InputError, match="road_class"):
        build_network(ref.gdf_nodes, bare)
    odd = ref.gdf_links.copy()
    odd.loc[0, "road_class"] = "canal"
    odd.loc[1, "road_class"] = None
    with pytest.raises(InputError, match="canal") as info:
        build_network(ref.gdf_nodes, odd.drop(columns=[f"speed_{m}_kmh" for m in MODES]))
    assert "missing road_class in 1 row" in str(info.value)


def test_read_network_formats(tmp_path, net: RoadNetwork) -> None:
    settings = get_settings()
    gpkg = read_network(settings.data_dir / "jinniu_roads.gpkg")
    assert gpkg.describe() == net.describe()
    with pytest.raises(DataFileError, match="no such"):
        read_network(tmp_path / "missing.gpkg")
    other = tmp_path / "roads.shp.zip"
    other.write_bytes(b"nothing")
    with pytest.raises(DataFileError, match="unknown road network format"):
        read_network(other)
    only_links = tmp_path / "links.gpkg"
    net.gdf_links.drop(columns=[f"kept_{m}" for m in MODES]).to_file(only_links, layer="links")
    with pytest.raises(DataFileError, match="layers"):
        read_network(only_links)
    broken = tmp_path / "broken.gpkg"
    net.gdf_nodes.to_file(broken, layer="nodes")
    net.gdf_links[["link_id", "u", "geometry"]].to_file(broken, layer="links")
    with pytest.raises(DataFileError, match="missing column"):
        read_network(broken)
    folder = tmp_path / "table"
    folder.mkdir()
    with pytest.raises(DataFileError, match="nodes"):
        read_network(folder)


# --------------------------------------------------------------------------------------------
# regional searches, typical ratio, pairwise bounds, route hints
# --------------------------------------------------------------------------------------------


def _lattice_frames(side: int, seed: int) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    """A jittered street lattice near Chengdu: gaps, one-way streets, fast roads, a motorway.

    Every 10th line is fast (60 km/h driving), line 5 a motorway closed to bikes and walkers.
    """
    rng = np.random.default_rng(seed)
    spacing = 80.0
    rows, cols = np.divmod(np.arange(side * side), side)
    x = 404_000.0 + cols * spacing + rng.uniform(-15, 15, side * side)
    y = 3_390_000.0 + rows * spacing + rng.uniform(-15, 15, side * side)
    idx = np.arange(side * side).reshape(side, side)
    a = np.concatenate([idx[:, :-1].ravel(), idx[:-1, :].ravel()])
    b = np.concatenate([idx[:, 1:].ravel(), idx[1:, :].ravel()])
    line = np.concatenate(
        [np.divmod(a[: side * (side - 1)], side)[0], a[side * (side - 1) :] % side]
    )
    fast = line % 10 == 0
    motorway = line == 5
    keep = fast | motorway | (rng.random(len(a)) > 0.12)
    a, b, fast, motorway = a[keep], b[keep], fast[keep], motorway[keep]
    oneway = ~fast & ~motorway & (rng.random(len(a)) < 0.2)
    u = np.concatenate([a, b[~oneway]])
    v = np.concatenate([b, a[~oneway]])
    fast2 = np.concatenate([fast, fast[~oneway]])
    motor2 = np.concatenate([motorway, motorway[~oneway]])
    metric = "EPSG:32648"
    nodes = gpd.GeoDataFrame(
        {"node_id": np.arange(side * side, dtype=np.int64) + 1_000},
        geometry=gpd.points_from_xy(x, y),
        crs=metric,
    ).to_crs("EPSG:4326")
    lines = shapely.linestrings(
        np.stack([np.column_stack([x[u], y[u]]), np.column_stack([x[v], y[v]])], axis=1)
    )
    links = gpd.GeoDataFrame(
        {
            "link_id": np.arange(len(u)),
            "u": u + 1_000,
            "v": v + 1_000,
            "length_m": np.hypot(x[u] - x[v], y[u] - y[v]),
            "speed_drive_kmh": np.where(motor2, 80.0, np.where(fast2, 60.0, 20.0)),
            "speed_bike_kmh": np.where(motor2, 0.0, np.where(fast2, 15.0, 12.0)),
            "speed_walk_kmh": np.where(motor2, 0.0, 5.0),
        },
        geometry=lines,
        crs=metric,
    ).to_crs("EPSG:4326")
    return nodes, links


@pytest.fixture(scope="module")
def lattice() -> RoadNetwork:
    """A 12,100-node lattice cut into small regions (the thresholds scaled down from a city's)."""
    nodes, links = _lattice_frames(110, seed=5)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(modegraph, "_REGION_MIN_NODES", 2_000)
        mp.setattr(modegraph, "_REGION_NODES", (700, 2_800))
        return build_network(nodes, links)


def _random_in(net: RoadNetwork, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    west, south, east, north = net.gdf_nodes.total_bounds
    return rng.uniform(west, east, n), rng.uniform(south, north, n)


@pytest.mark.parametrize("mode", MODES)
def test_regional_searches_equal_whole_graph_searches(lattice: RoadNetwork, mode: str) -> None:
    g = lattice._graphs[TravelMode(mode)]
    assert len(g.tilings) == 2
    rng = np.random.default_rng(17)
    targets = lattice.snap(*_random_in(lattice, rng, 80), mode)
    sources = lattice.snap(*_random_in(lattice, rng, 400), mode)
    every_node = np.arange(g.n)
    regional = 0
    for k in range(len(targets)):
        target = targets.take(k)
        limit = float(rng.choice([20.0, 60.0, 150.0, 400.0, 900.0, 2_500.0]))
        joins = modegraph.target_joins(g, *target.joins()[1:])
        part = g.search(joins.cols, joins.seeds, limit, predecessors=True)
        whole = g.search(joins.cols, joins.seeds, limit, predecessors=True, regional=False)
        regional += part.nodes is not None
        # Node times: the same bits up to the limit, nothing finite above it.
        mine, theirs = part.at(every_node), whole.at(every_node)
        assert np.array_equal(
            np.where(mine <= limit, mine, np.inf), np.where(theirs <= limit, theirs, np.inf)
        )
        # Unit times through the public field, against a field over the whole-graph search.
        field = lattice.field_to(target, limit)
        want = network._NetworkField(g.mode, limit, g, whole, joins, target, lattice._to_wgs84)
        got = field.times_from(sources)
        assert np.array_equal(got, want.times_from(sources))
        # Routes from the regional search follow a path of that very time.
        reached = np.flatnonzero(np.isfinite(got))
        if len(reached):
            source = sources.take(int(reached[-1]))
            route = lattice.route(source, target)
            assert route.time_s == pytest.approx(float(got[reached[-1]]), abs=1e-9)
            # And so do routes read from the regional field itself.
            assert field.route_from(source).time_s == float(got[reached[-1]])
    # Both ways were taken: regions for short searches, the whole graph for long ones.
    assert 0 < regional < len(targets)


def test_regions_are_built_only_for_large_graphs(net: RoadNetwork) -> None:
    assert all(not g.tilings for g in net._graphs.values())
    rng = np.random.default_rng(3)
    points = rng.uniform(0, 45_000, size=(262_144, 2))
    levels = modegraph._tilings(points)
    # A level is kept while its regions hold at most half the graph.
    assert len(levels) == sum(2 * t <= len(points) for t in modegraph._REGION_NODES) >= 2
    for tiling, target in zip(levels, modegraph._REGION_NODES, strict=False):
        x0, y0, x1, y1 = tiling.box(tiling.nx * tiling.ny - 1)
        assert x1 - x0 == pytest.approx(tiling.cell + 2 * tiling.margin)
        assert (x1, y1) >= (tiling.x1, tiling.y1)
        # A region away from the edges holds about the node count its level aims at.
        x0, y0, x1, y1 = tiling.box((tiling.ny // 2) * tiling.nx + tiling.nx // 2)
        x, y = points[:, 0], points[:, 1]
        inside = int(((x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)).sum())
        assert inside < 1.2 * target
        if x0 >= tiling.x0 and y0 >= tiling.y0 and x1 <= tiling.x1 and y1 <= tiling.y1:
            assert inside > 0.8 * target
        # A point in a core lies at least the margin inside its region.
        tile, gap = tiling.locate(x0 + tiling.margin + 1.0, y0 + tiling.margin + 1.0)
        assert tiling.box(tile) == (x0, y0, x1, y1)
        assert gap == pytest.approx(tiling.margin + 1.0)
    assert modegraph._tilings(points[: modegraph._REGION_MIN_NODES - 1]) == ()


def test_pickled_network_rebuilds_its_regions(lattice: RoadNetwork) -> None:
    target = lattice.snap(
        [float(lattice.gdf_nodes.geometry.x.mean())],
        [float(lattice.gdf_nodes.geometry.y.mean())],
        "bike",
    )
    before = lattice.field_to(target, 300.0)
    g = lattice._graphs[TravelMode.BIKE]
    assert g.regions
    copy = pickle.loads(pickle.dumps(lattice))
    assert not copy._graphs[TravelMode.BIKE].regions
    sources = lattice.snap(*_random_in(lattice, np.random.default_rng(1), 50), "bike")
    after = copy.field_to(target, 300.0)
    assert np.array_equal(before.times_from(sources), after.times_from(sources))
    assert copy._graphs[TravelMode.BIKE].regions


def test_typical_ratio(ref, net: RoadNetwork, lattice: RoadNetwork) -> None:
    for mode in MODES:
        ratio = net.typical_ratio(mode)
        assert 1.0 <= ratio < 10.0
        assert net.typical_ratio(mode) == ratio  # computed once
    # Driving: fast roads make the top speed far above the usual one; walking is uniform.
    assert lattice.typical_ratio("drive") > lattice.typical_ratio("bike") > 1.0
    assert lattice.typical_ratio("walk") == pytest.approx(1.3, abs=0.15)
    assert StraightLine().typical_ratio("drive") == 1.0
    with pytest.raises(InputError):
        net.typical_ratio("boat")


@pytest.mark.parametrize("model", ["network", "straight"])
def test_lower_bound_pairs(ref, net: RoadNetwork, model: str) -> None:
    travel = net if model == "network" else StraightLine()
    lon, lat = _random_points(ref, 30, seed=8)
    sources = travel.snap(lon[:15], lat[:15], "bike")
    targets = travel.snap(lon[15:], lat[15:], "bike")
    pairs = travel.lower_bound_s(sources, targets)
    one_by_one = [travel.lower_bound_s(sources.take(i), targets.take(i))[0] for i in range(15)]
    np.testing.assert_allclose(pairs, one_by_one, rtol=1e-12)
    with pytest.raises(InputError, match="one per source"):
        travel.lower_bound_s(sources, targets.take([0, 1]))


@pytest.mark.parametrize("mode", MODES)
def test_route_with_a_limit_hint(ref, net: RoadNetwork, mode: str) -> None:
    lon, lat = _random_points(ref, 20, seed=12)
    for i in range(10):
        source = net.snap([lon[i]], [lat[i]], mode)
        target = net.snap([lon[10 + i]], [lat[10 + i]], mode)
        plain = net.route(source, target)
        for hint in (plain.time_s, plain.time_s / 3.0, 10 * plain.time_s + 100.0):
            hinted = net.route(source, target, limit_s=hint)
            assert hinted.time_s == plain.time_s
            assert hinted.length_m == pytest.approx(plain.length_m)
            assert hinted.geometry.equals_exact(plain.geometry, 1e-9)


@pytest.mark.parametrize("mode", MODES)
def test_a_fields_route_is_the_routes_own(ref, net: RoadNetwork, mode: str) -> None:
    """Dispatch reads the chosen unit's route from the field that timed it: the same time to
    the bit and the same way as a route of its own, whatever the field's limit; a source the
    field did not reach within its limit has no route there."""
    lon, lat = _random_points(ref, 20, seed=13)
    for i in range(10):
        source = net.snap([lon[i]], [lat[i]], mode)
        target = net.snap([lon[10 + i]], [lat[10 + i]], mode)
        plain = net.route(source, target)
        for limit in (plain.time_s, 2.0 * plain.time_s + 60.0, math.inf):
            field = net.field_to(target, limit)
            read = field.route_from(source)
            assert read.time_s == plain.time_s == field.times_from(source)[0]
            assert read.length_m == pytest.approx(plain.length_m)
            assert read.geometry.equals_exact(plain.geometry, 1e-9)
            assert read.node_ids == plain.node_ids
        if plain.time_s > 1.0:
            with pytest.raises(NotFoundError, match=r"no \w+ route"):
                net.field_to(target, plain.time_s / 2.0).route_from(source)
    straight = StraightLine()
    source, target = straight.snap(104.03, 30.70, mode), straight.snap(104.06, 30.68, mode)
    own = straight.route(source, target)
    assert straight.field_to(target).route_from(source) == own
    with pytest.raises(NotFoundError):
        straight.field_to(target, own.time_s / 2.0).route_from(source)
